//! Gradients of one micro-batch, with the LM head and the loss computed in chunks of positions.
//!
//! The body runs once to the final hidden states `h`. Then, chunk by chunk, the head's logits and
//! the loss are built from a detached copy of `h` and back-propagated at once, so at most one
//! chunk of `[rows, vocab]` logits (student and teacher) exists at a time; the chunks' gradients
//! with respect to `h` are collected and pushed through the body in one more backward pass
//! (`Σ h ⊙ ∂L/∂h`). The vocabulary may be 150k: no full `[batch, seq, vocab]` tensor is kept.
//! A dense f32 head does its part of the backward by hand ([`super::head_grad`]): autograd then
//! only differentiates the loss with respect to the chunk's logits.

use super::head_grad::HeadGrad;
use super::losses::{hard_ce_sum, SoftLoss};
use super::sparse::SparseTeacher;
use super::{fused_loss, fused_sparse};
use crate::engine::kernels::autocast::{self, Precision};
use crate::engine::models::Network;
use crate::engine::{Error, Result};
use candle_core::{DType, Tensor, Var};

/// Logit rows per chunk: about 16M floats (64 MB) whatever the vocabulary.
pub fn chunk_rows(vocab: usize) -> usize {
    (16 << 20) / vocab.max(1)
}

/// What the soft loss compares the student with.
pub enum Targets<'a> {
    /// Hard labels only (the baseline, or pretraining).
    None,
    /// The teacher's full logits, computed chunk by chunk from its hidden states `[n, hidden]`,
    /// its head at `precision`.
    Dense { teacher: &'a Network, hidden: Tensor, precision: Precision },
    /// The teacher's top-k representation for each of the `n` positions.
    Sparse(SparseTeacher),
}

/// Loss settings of a step.
#[derive(Clone, Copy, Debug)]
pub struct LossConfig {
    pub kind: SoftLoss,
    pub temperature: f64,
    pub alpha: f64,
    pub beta: f64,
    /// Logit rows per chunk; `None` picks about 64 MB of logits ([`chunk_rows`]).
    pub chunk_rows: Option<usize>,
    /// Activation checkpointing per block ([`super::checkpoint`]): keep each block's input only
    /// and recompute the block in the backward pass.
    pub activation_checkpointing: bool,
}

pub use crate::engine::train::LossParts;
use crate::engine::train::{add_grads, add_into};

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// Adds `scale ×` the gradients of this micro-batch's loss to `acc` (aligned with `vars`) and
/// returns its losses. `ids` is `[b, t]`: positions 0..t-1 predict 1..t.
pub fn accumulate_grads(
    student: &Network,
    vars: &[&Var],
    acc: &mut [Option<Tensor>],
    ids: &Tensor,
    targets: &Targets,
    cfg: &LossConfig,
    scale: f64,
) -> Result<LossParts> {
    accumulate_grads_labelled(student, vars, acc, ids, None, targets, cfg, scale)
}

/// [`accumulate_grads`] with the hard labels of the `b · (t − 1)` positions given (`None`: the
/// next tokens of `ids`); a label [`super::losses::IGNORE`] leaves its position out of the hard
/// loss (the soft loss still covers it). The hard loss is still divided by every position.
#[allow(clippy::too_many_arguments)]
pub fn accumulate_grads_labelled(
    student: &Network,
    vars: &[&Var],
    acc: &mut [Option<Tensor>],
    ids: &Tensor,
    labels: Option<&Tensor>,
    targets: &Targets,
    cfg: &LossConfig,
    scale: f64,
) -> Result<LossParts> {
    let (b, t) = ids.dims2()?;
    let n = b * (t - 1);
    let inputs = ids.narrow(1, 0, t - 1)?;
    let (hidden, checkpointed) = if cfg.activation_checkpointing {
        let body = super::checkpoint::forward(student, &inputs)?;
        (body.hidden.clone(), Some(body))
    } else {
        (student.hidden_states(&inputs)?, None)
    };
    let h_dim = hidden.dim(2)?;
    let hidden = hidden.reshape((n, h_dim))?;
    let h_leaf = Var::from_tensor(&hidden.detach())?;
    let labels = match labels {
        Some(l) if l.elem_count() == n => l.flatten_all()?.to_dtype(DType::U32)?,
        Some(l) => return Err(Error::Invalid(format!("{} hard labels for {n} positions", l.elem_count()))),
        None => ids.narrow(1, 1, t - 1)?.flatten_all()?.to_dtype(DType::U32)?,
    };
    let use_soft = !matches!(targets, Targets::None) && cfg.alpha > 0.0;
    let (w_soft, w_hard) = if matches!(targets, Targets::None) { (0.0, 1.0) } else { (cfg.alpha, 1.0 - cfg.alpha) };
    let mut grad_h: Option<Tensor> = None;
    let mut parts = LossParts::default();
    let chunk = match cfg.chunk_rows {
        Some(c) => c.max(1),
        None => chunk_rows(student_vocab(student, &h_leaf)?),
    };
    // A dense f32 head takes its backward by hand (head_grad.rs); others go through autograd.
    let mut head = HeadGrad::new(student, vars)?;
    let mut grad_h_blocks = Vec::new();
    let mut start = 0;
    while start < n {
        let rows = chunk.min(n - start);
        let h_chunk = h_leaf.as_tensor().narrow(0, start, rows)?;
        let leaf = head.as_ref().map(|hg| hg.logits(&h_chunk)).transpose()?;
        let logits = match &leaf {
            Some(z) => z.as_tensor().clone(),
            None => student.lm_logits(&h_chunk)?,
        };
        let chunk_labels = labels.narrow(0, start, rows)?;
        let fused = |both: Tensor, soft: bool| -> Result<(Tensor, Option<Tensor>)> {
            Ok((both.get(1)?, soft.then(|| both.get(0)).transpose()?))
        };
        let (kind, temp) = (cfg.kind, cfg.temperature);
        let (hard, soft) = match fused_targets(&logits, targets, use_soft, cfg, start, rows)? {
            Some(Fused::HardOnly) => {
                fused(fused_loss::soft_and_hard(&logits, None, &chunk_labels, kind, temp)?, false)?
            }
            Some(Fused::Dense(t)) => {
                fused(fused_loss::soft_and_hard(&logits, Some(&t), &chunk_labels, kind, temp)?, true)?
            }
            Some(Fused::Sparse(sp)) => {
                fused(fused_sparse::soft_and_hard(&logits, &sp, &chunk_labels, kind, temp)?, true)?
            }
            None => composed(&logits, &chunk_labels, targets, use_soft, cfg, start, rows)?,
        };
        let mut loss = (&hard * (w_hard * scale / n as f64))?;
        parts.hard += scalar(&hard)? / n as f64;
        if let Some(s) = &soft {
            loss = (loss + (s * (w_soft * scale / n as f64))?)?;
            parts.soft += scalar(s)? / n as f64;
        }
        let store = loss.backward()?;
        match (head.as_mut(), &leaf) {
            (Some(hg), Some(z)) => {
                let g = store.get(z.as_tensor()).ok_or_else(|| Error::Invalid("the loss has no gradient".into()))?;
                grad_h_blocks.push(hg.backward(g, &h_chunk)?);
            }
            _ => {
                add_grads(acc, vars, &store)?;
                if let Some(g) = store.get(h_leaf.as_tensor()) {
                    add_into(&mut grad_h, g)?;
                }
            }
        }
        start += rows;
    }
    if !grad_h_blocks.is_empty() {
        grad_h = Some(Tensor::cat(&grad_h_blocks, 0)?);
    }
    parts.total = w_soft * parts.soft + w_hard * parts.hard;
    if !parts.total.is_finite() {
        return Err(Error::Invalid(format!("the loss is not finite (soft {}, hard {})", parts.soft, parts.hard)));
    }
    match (grad_h, checkpointed) {
        (Some(g), Some(body)) => body.backward(student, &g, vars, acc)?,
        (Some(g), None) => {
            let surrogate = (hidden * g.detach())?.sum_all()?;
            add_grads(acc, vars, &surrogate.backward()?)?;
        }
        (None, _) => {}
    }
    if let Some((i, gw)) = head.map(HeadGrad::finish).transpose()?.flatten() {
        add_into(&mut acc[i], &gw)?;
    }
    Ok(parts)
}

/// What a fused op computes a chunk's losses against.
enum Fused {
    /// The cross-entropy of the hard labels alone.
    HardOnly,
    /// Forward or reverse KL against the teacher's logits (the student's vocabulary).
    Dense(Tensor),
    /// Forward or reverse KL against the chunk's rows of a top-k teacher.
    Sparse(SparseTeacher),
}

/// `Some` when a fused op computes this chunk's losses ([`fused_loss`], [`fused_sparse`]): hard
/// labels alone, or forward/reverse KL against dense or top-k teacher logits of the student's
/// vocabulary. `None`: the composed candle forms (JSD, MSE, GPUs, other vocabularies).
fn fused_targets(
    logits: &Tensor,
    targets: &Targets,
    use_soft: bool,
    cfg: &LossConfig,
    start: usize,
    rows: usize,
) -> Result<Option<Fused>> {
    if !logits.device().is_cpu() || !crate::engine::kernels::enabled() {
        return Ok(None);
    }
    match targets {
        _ if !use_soft => Ok(Some(Fused::HardOnly)),
        Targets::Dense { teacher, hidden, precision } if fused_loss::supports(cfg.kind) => {
            let t_logits = teacher_logits(teacher, hidden, *precision, start, rows)?;
            Ok((t_logits.dims() == logits.dims()).then_some(Fused::Dense(t_logits)))
        }
        Targets::Sparse(sp) if fused_loss::supports(cfg.kind) && sp.vocab == logits.dim(1)? => {
            Ok(Some(Fused::Sparse(sp.narrow(start, rows)?)))
        }
        _ => Ok(None),
    }
}

/// The chunk's `(hard, soft)` losses composed from candle ops (JSD, MSE, GPUs, vocabularies that differ).
fn composed(
    logits: &Tensor,
    chunk_labels: &Tensor,
    targets: &Targets,
    use_soft: bool,
    cfg: &LossConfig,
    start: usize,
    rows: usize,
) -> Result<(Tensor, Option<Tensor>)> {
    let hard = hard_ce_sum(logits, chunk_labels)?;
    let soft = if use_soft {
        Some(match targets {
            Targets::Dense { teacher, hidden, precision } => {
                let t_logits = teacher_logits(teacher, hidden, *precision, start, rows)?;
                let v = logits.dim(1)?.min(t_logits.dim(1)?);
                cfg.kind.sum(&logits.narrow(1, 0, v)?, &t_logits.narrow(1, 0, v)?, cfg.temperature, cfg.beta)?
            }
            Targets::Sparse(sp) => cfg.kind.sum_sparse(logits, &sp.narrow(start, rows)?, cfg.temperature, cfg.beta)?,
            Targets::None => unreachable!("use_soft is false without targets"),
        })
    } else {
        None
    };
    Ok((hard, soft))
}

/// The teacher's logits for rows `start..start + rows` of its hidden states, its head at `precision`.
fn teacher_logits(
    teacher: &Network,
    hidden: &Tensor,
    precision: Precision,
    start: usize,
    rows: usize,
) -> Result<Tensor> {
    let _precision = autocast::enter(precision);
    Ok(teacher.lm_logits(&hidden.narrow(0, start, rows)?)?.detach())
}

fn student_vocab(student: &Network, h: &Var) -> Result<usize> {
    // One row through the head tells the vocabulary without a config lookup.
    Ok(student.lm_logits(&h.as_tensor().narrow(0, 0, 1)?.detach())?.dim(1)?)
}
