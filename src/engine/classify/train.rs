//! Training a classifier: fine-tuning on labels, or distillation with
//! loss = alpha·KL(teacher ‖ student)·T² + (1 − alpha)·CE + cosine·(1 − cos(h_s, h_t)),
//! the last term DistilBERT's alignment of the last hidden states over real tokens.
//! Teacher logits of the training set are computed once; the teacher runs per batch only for the
//! cosine term. Batches are padded to their longest example and masked.

use super::data::LabelledSet;
use super::metrics::{class_metrics, ClassMetrics};
use super::recipe::TrainSection;
use crate::engine::distill::losses::{hard_ce_sum, SoftLoss};
use crate::engine::distill::optim::{grad_norm, lr_at, AdamW};
use crate::engine::loader::Built;
use crate::engine::models::Network;
use crate::engine::{Error, Result};
use crate::jobs::{EvalMetrics, JobContext, JobEvent, RunRole};
use candle_core::{DType, Device, Tensor, D};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::time::Instant;
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

/// How a model trained and how it ended up.
#[derive(Clone, Debug)]
pub struct Trained {
    pub metrics: ClassMetrics,
    pub train_seconds: f64,
    pub examples_seen: usize,
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

/// Evaluates `net` on `eval`, emitting an `Eval` event (perplexity = exp of the label CE).
pub fn evaluate(
    net: &Network,
    eval: &Encoded,
    teacher: Option<&[Vec<f32>]>,
    batch_size: usize,
    role: RunRole,
    step: usize,
    ctx: &JobContext,
) -> Result<ClassMetrics> {
    let logits = predict(net, eval, batch_size)?;
    let m = class_metrics(&logits, &eval.labels, teacher);
    ctx.emit(JobEvent::Eval {
        job: ctx.id,
        role,
        step,
        metrics: EvalMetrics {
            perplexity: m.cross_entropy.exp(),
            top1_accuracy: m.accuracy,
            kl_to_teacher: m.kl_to_teacher,
            agreement: m.agreement,
        },
    });
    ctx.log(format!("{role:?} step {step}: accuracy {:.4}, macro-F1 {:.4}", m.accuracy, m.macro_f1));
    Ok(m)
}

/// Trains `model` for `s.steps` steps; with a `teacher`, on the distillation loss.
pub fn train(
    model: &Built,
    data: &Encoded,
    eval: &Encoded,
    s: &TrainSection,
    teacher: Option<&Teacher>,
    role: RunRole,
    ctx: &JobContext,
) -> Result<Trained> {
    let mut opt = AdamW::new(&model.vars, s.weight_decay)?;
    let vars: Vec<candle_core::Var> = opt.vars().into_iter().cloned().collect();
    let n = data.ids.len();
    let (mut order, mut order_epoch): (Vec<usize>, Option<usize>) = (Vec::new(), None);
    let (alpha, t, cosine) = match teacher {
        Some(_) => (s.alpha(), s.temperature(), s.cosine()),
        None => (0.0, 1.0, 0.0),
    };
    let started = Instant::now();
    let (mut seen, mut tokens) = (0, 0);
    for step in 0..s.steps {
        ctx.check()?;
        let mut idx = Vec::with_capacity(s.batch_size);
        for p in step * s.batch_size..(step + 1) * s.batch_size {
            if order_epoch != Some(p / n) {
                // A seeded permutation per epoch: the example at any position is known up front.
                order = (0..n).collect();
                let key = s.seed.wrapping_mul(1_000_003).wrapping_add((p / n) as u64);
                order.shuffle(&mut ChaCha8Rng::seed_from_u64(key));
                order_epoch = Some(p / n);
            }
            idx.push(order[p % n]);
        }
        let (ids, mask) = batch(data, &idx, &Device::Cpu)?;
        let labels =
            Tensor::from_vec(idx.iter().map(|&i| data.labels[i] as u32).collect::<Vec<_>>(), idx.len(), &Device::Cpu)?;
        let (logits, hidden) = model.network.classify_with_hidden(&ids, Some(&mask))?;
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
        let grads = loss.backward()?;
        let g: Vec<Tensor> = vars
            .iter()
            .map(|v| grads.get(v.as_tensor()).cloned().map_or_else(|| v.as_tensor().zeros_like(), Ok))
            .collect::<std::result::Result<_, _>>()?;
        let (grad_norm, grad_scale) = grad_norm(&g, s.grad_clip)?;
        let lr = lr_at(step, s.steps, s.warmup_steps, s.lr, 0.1);
        opt.step_scaled(&g, lr, grad_scale)?;
        seen += idx.len();
        tokens += idx.iter().map(|&i| data.ids[i].len()).sum::<usize>();
        let elapsed = started.elapsed().as_secs_f64();
        ctx.emit(JobEvent::Step {
            job: ctx.id,
            role,
            step: step + 1,
            total_steps: s.steps,
            loss: scalar(&loss)?,
            soft_loss: soft_v,
            hard_loss: scalar(&hard)?,
            lr,
            grad_norm,
            tokens_per_second: tokens as f64 / elapsed.max(1e-9),
            elapsed_s: elapsed,
        });
        if s.eval_every > 0 && (step + 1) % s.eval_every == 0 && step + 1 < s.steps {
            evaluate(&model.network, eval, teacher.map(|t| t.eval_logits), 64, role, step + 1, ctx)?;
        }
    }
    let train_seconds = started.elapsed().as_secs_f64();
    let metrics = evaluate(&model.network, eval, teacher.map(|t| t.eval_logits), 64, role, s.steps, ctx)?;
    Ok(Trained { metrics, train_seconds, examples_seen: seen })
}
