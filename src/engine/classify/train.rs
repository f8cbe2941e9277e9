//! Sequence classification as a [`Task`] of the one training loop: fine-tuning on labels, or
//! distillation with loss = alpha·KL(teacher ‖ student)·T² + (1 − alpha)·CE + cosine·(1 − cos(h_s, h_t)),
//! the last term DistilBERT's alignment of the last hidden states over real tokens.
//! Teacher logits of the training set are computed once; the teacher runs per batch only for the
//! cosine term. Batches are padded to their longest example and masked.

use super::data::LabelledSet;
use super::metrics::{class_metrics, ClassMetrics};
use super::recipe::TrainSection;
use crate::engine::context::JobContext;
use crate::engine::distill::losses::{hard_ce_sum, SoftLoss};
use crate::engine::events::{ClassEval, EvalMetrics, Role};
use crate::engine::models::Network;
use crate::engine::train::{Grads, LossParts, Schedule, Task};
use crate::engine::{Error, Result};
use candle_core::{DType, Device, Tensor, D};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokenizers::Tokenizer;

/// A tokenised labelled set.
#[derive(Clone, Debug)]
pub struct Encoded {
    pub ids: Vec<Vec<u32>>,
    pub labels: Vec<usize>,
    pub classes: usize,
}

/// Tokenises with the tokenizer's special tokens (`[CLS] … [SEP]` for BERT) and cuts to `max_len`,
/// keeping the final special token.
pub fn encode(set: &LabelledSet, tok: &Tokenizer, max_len: usize) -> Result<Encoded> {
    let mut tok = tok.clone();
    tok.with_padding(None);
    tok.with_truncation(None).map_err(|e| Error::Invalid(format!("tokenizer: {e}")))?;
    let mut ids = Vec::with_capacity(set.examples.len());
    for e in &set.examples {
        let enc = tok.encode(e.text.as_str(), true).map_err(|e| Error::Invalid(format!("tokenizer: {e}")))?;
        let mut v = enc.get_ids().to_vec();
        if v.len() > max_len {
            let last = *v.last().unwrap_or(&0);
            let special_end = enc.get_special_tokens_mask().last() == Some(&1);
            v.truncate(max_len);
            if special_end {
                v[max_len - 1] = last;
            }
        }
        if v.is_empty() {
            return Err(Error::Invalid(format!("text `{}` has no tokens", e.text)));
        }
        ids.push(v);
    }
    Ok(Encoded { ids, labels: set.examples.iter().map(|e| e.label).collect(), classes: set.classes.len() })
}

/// Ids `[b, t]` and mask `[b, t]` for the examples `idx`, padded with 0 to the longest.
pub fn batch(enc: &Encoded, idx: &[usize], device: &Device) -> Result<(Tensor, Tensor)> {
    let t = idx.iter().map(|&i| enc.ids[i].len()).max().unwrap_or(1);
    let mut ids = vec![0u32; idx.len() * t];
    let mut mask = vec![0f32; idx.len() * t];
    for (row, &i) in idx.iter().enumerate() {
        for (j, &id) in enc.ids[i].iter().enumerate() {
            ids[row * t + j] = id;
            mask[row * t + j] = 1.0;
        }
    }
    Ok((Tensor::from_vec(ids, (idx.len(), t), device)?, Tensor::from_vec(mask, (idx.len(), t), device)?))
}

/// Class logits of every example, in order, `batch_size` at a time.
pub fn predict(net: &Network, enc: &Encoded, batch_size: usize) -> Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(enc.ids.len());
    let all: Vec<usize> = (0..enc.ids.len()).collect();
    for chunk in all.chunks(batch_size.max(1)) {
        let (ids, mask) = batch(enc, chunk, &Device::Cpu)?;
        out.extend(net.classify(&ids, Some(&mask))?.to_dtype(DType::F32)?.to_vec2::<f32>()?);
    }
    Ok(out)
}

/// What the student learns from besides the labels.
pub struct Teacher<'a> {
    pub network: &'a Network,
    /// Teacher logits of every training example.
    pub train_logits: &'a [Vec<f32>],
    /// Teacher logits of every eval example (for KL and agreement).
    pub eval_logits: &'a [Vec<f32>],
}

/// Masked mean over real tokens of 1 − cos(h_s, h_t) (`[b, t, h]` each, mask `[b, t]`).
pub fn cosine_loss(student: &Tensor, teacher: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let dot = (student * teacher)?.sum(D::Minus1)?;
    let norms = (student.sqr()?.sum(D::Minus1)?.sqrt()? * teacher.sqr()?.sum(D::Minus1)?.sqrt()?)?;
    let cos = (dot / (norms + 1e-8)?)?;
    let real = mask.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?.max(1.0);
    Ok((((1.0 - cos)? * mask)?.sum_all()? / real)?)
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// Metrics of `net` on `eval`, against the teacher's eval logits when given.
pub fn measure(net: &Network, eval: &Encoded, teacher: Option<&[Vec<f32>]>, batch_size: usize) -> Result<ClassMetrics> {
    Ok(class_metrics(&predict(net, eval, batch_size)?, &eval.labels, teacher))
}

/// The loop's settings of a `[finetune]` or `[distill]` section.
pub fn schedule(s: &TrainSection, section: &'static str) -> Schedule {
    Schedule {
        steps: s.steps,
        warmup_steps: s.warmup_steps,
        lr: s.lr,
        min_lr_ratio: 0.1,
        weight_decay: s.weight_decay,
        grad_clip: s.grad_clip,
        eval_every: s.eval_every,
        checkpoint_every: s.checkpoint_every,
        precision: s.precision,
        section,
    }
}

/// Classification as a task: seeded epochs of examples, micro-batches padded and masked.
pub struct ClassTask<'a> {
    pub data: &'a Encoded,
    pub eval: &'a Encoded,
    pub section: &'a TrainSection,
    /// The teacher the `Student` role learns from (other roles train on labels only).
    pub teacher: Option<&'a Teacher<'a>>,
    order: Vec<usize>,
    order_epoch: Option<usize>,
}

impl<'a> ClassTask<'a> {
    pub fn new(
        data: &'a Encoded,
        eval: &'a Encoded,
        section: &'a TrainSection,
        teacher: Option<&'a Teacher<'a>>,
    ) -> Self {
        Self { data, eval, section, teacher, order: Vec::new(), order_epoch: None }
    }

    /// The example at position `p` of the endless sequence of seeded epochs: a permutation per
    /// epoch, so the example at any position is known up front (and a resumed run sees the same).
    fn example_at(&mut self, p: usize) -> usize {
        let n = self.data.ids.len();
        if self.order_epoch != Some(p / n) {
            self.order = (0..n).collect();
            let key = self.section.seed.wrapping_mul(1_000_003).wrapping_add((p / n) as u64);
            self.order.shuffle(&mut ChaCha8Rng::seed_from_u64(key));
            self.order_epoch = Some(p / n);
        }
        self.order[p % n]
    }

    /// The teacher `role` learns from.
    fn teacher_of(&self, role: Role) -> Option<&'a Teacher<'a>> {
        self.teacher.filter(|_| role == Role::Student)
    }
}

impl Task for ClassTask<'_> {
    type Batch = Vec<usize>;
    type Metrics = ClassMetrics;

    fn batches(&mut self, step: usize) -> Result<Vec<Vec<usize>>> {
        let (b, accum) = (self.section.batch_size, self.section.grad_accum);
        let first = step * b * accum;
        let idx: Vec<usize> = (first..first + b * accum).map(|p| self.example_at(p)).collect();
        Ok(idx.chunks(b).map(<[usize]>::to_vec).collect())
    }

    fn tokens(&self, batches: &[Vec<usize>]) -> u64 {
        batches.iter().flatten().map(|&i| self.data.ids[i].len() as u64).sum()
    }

    fn accumulate(&mut self, role: Role, net: &Network, grads: &mut Grads, idx: &Vec<usize>) -> Result<LossParts> {
        let (data, s) = (self.data, self.section);
        let teacher = self.teacher_of(role);
        let (alpha, t, cosine) = match teacher {
            Some(_) => (s.alpha(), s.temperature(), s.cosine()),
            None => (0.0, 1.0, 0.0),
        };
        let (ids, mask) = batch(data, idx, &Device::Cpu)?;
        let labels =
            Tensor::from_vec(idx.iter().map(|&i| data.labels[i] as u32).collect::<Vec<_>>(), idx.len(), &Device::Cpu)?;
        let (logits, hidden) = net.classify_with_hidden(&ids, Some(&mask))?;
        let b = idx.len() as f64;
        let hard = (hard_ce_sum(&logits, &labels)? / b)?;
        let mut loss = (&hard * (1.0 - alpha))?;
        let mut soft_v = 0.0;
        if let Some(te) = teacher {
            let rows: Vec<f32> = idx.iter().flat_map(|&i| te.train_logits[i].iter().copied()).collect();
            let t_logits = Tensor::from_vec(rows, (idx.len(), data.classes), &Device::Cpu)?;
            let soft = (SoftLoss::ForwardKl.sum(&logits, &t_logits, t, 0.0)? / b)?;
            soft_v = scalar(&soft)?;
            loss = (loss + (soft * alpha)?)?;
            if cosine > 0.0 {
                let (_, t_hidden) = te.network.classify_with_hidden(&ids, Some(&mask))?;
                loss = (loss + (cosine_loss(&hidden, &t_hidden.detach(), &mask)? * cosine)?)?;
            }
        }
        let parts = LossParts { soft: soft_v, hard: scalar(&hard)?, total: scalar(&loss)? };
        let scaled = if grads.scale == 1.0 { loss } else { (loss * grads.scale)? };
        grads.add(&scaled.backward()?)?;
        Ok(parts)
    }

    fn evaluate(&mut self, role: Role, network: &Network, step: usize, ctx: &JobContext) -> Result<ClassMetrics> {
        let m = measure(network, self.eval, self.teacher_of(role).map(|t| t.eval_logits), 64)?;
        ctx.log(format!("{} step {step}: accuracy {:.4}, macro-F1 {:.4}", role.name(), m.accuracy, m.macro_f1));
        Ok(m)
    }

    fn event_metrics(&self, m: &ClassMetrics) -> EvalMetrics {
        EvalMetrics {
            perplexity: m.cross_entropy.exp(),
            top1_accuracy: m.accuracy,
            kl_to_teacher: m.kl_to_teacher,
            agreement: m.agreement,
            classification: Some(ClassEval {
                accuracy: m.accuracy,
                macro_f1: m.macro_f1,
                cross_entropy: m.cross_entropy,
            }),
        }
    }
}
