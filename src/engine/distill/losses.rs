//! Distillation losses on `[n, vocab]` logits (positions flattened), summed over positions so that
//! chunks of positions can be added up and divided by the total count once.
//!
//! Conventions (checked against PyTorch in `tests/engine/losses.rs`):
//! - temperature `T` divides both teacher and student logits before the softmax;
//! - `forward_kl` = Σ_v p_t (log p_t − log p_s) (Hinton), `reverse_kl` = Σ_v p_s (log p_s − log p_t)
//!   (MiniLLM), `jsd` = β·KL(p_t‖m) + (1−β)·KL(p_s‖m) with m = β·p_t + (1−β)·p_s, and at the
//!   ends forward KL (β = 0) and reverse KL (β = 1), as TRL's GKD trainer;
//! - computed in f32 whatever the logits' dtype; a `-inf` logit (a masked token) gives finite losses;
//! - the divergences here are unscaled; [`SoftLoss::sum`] multiplies them by T² so the soft term's
//!   gradient keeps its size as T changes (Hinton et al. 2015); MSE on raw logits ignores T.

use crate::engine::{Error, Result};
use candle_core::{DType, Tensor, D};
use candle_nn::ops::log_softmax;
use serde::{Deserialize, Serialize};

/// Which divergence between teacher and student distributions.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SoftLoss {
    ForwardKl,
    ReverseKl,
    Jsd,
    MseLogits,
}

impl SoftLoss {
    pub const NAMES: &'static [&'static str] = &["forward_kl", "reverse_kl", "jsd", "mse_logits"];

    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "forward_kl" => Ok(Self::ForwardKl),
            "reverse_kl" => Ok(Self::ReverseKl),
            "jsd" => Ok(Self::Jsd),
            "mse_logits" => Ok(Self::MseLogits),
            other => Err(Error::Invalid(format!("unknown loss `{other}`; valid: {}", Self::NAMES.join(", ")))),
        }
    }

    /// The soft loss summed over positions, T²-scaled for the divergences. `beta` is JSD's mix.
    pub fn sum(self, student: &Tensor, teacher: &Tensor, temperature: f64, beta: f64) -> Result<Tensor> {
        let t2 = temperature * temperature;
        Ok(match self {
            Self::ForwardKl => (forward_kl_sum(student, teacher, temperature)? * t2)?,
            Self::ReverseKl => (reverse_kl_sum(student, teacher, temperature)? * t2)?,
            Self::Jsd => (jsd_sum(student, teacher, temperature, beta)? * t2)?,
            Self::MseLogits => mse_logits_sum(student, teacher)?,
        })
    }
}

fn scaled_log_probs(logits: &Tensor, temperature: f64) -> Result<Tensor> {
    let x = logits.to_dtype(DType::F32)?;
    let x = if temperature == 1.0 { x } else { (x / temperature)? };
    Ok(log_softmax(&x, D::Minus1)?)
}

/// Log-probabilities are floored here before they are subtracted: a `-inf` (a masked token) then
/// contributes `0 · (finite)` = 0 instead of `0 · (-inf)` = NaN.
const LOG_FLOOR: f64 = -1e30;

fn floored(log_p: &Tensor) -> Result<Tensor> {
    Ok(log_p.clamp(LOG_FLOOR, f64::from(f32::MAX))?)
}

/// Σ_rows Σ_i p_i (log p_i − log q_i) for log-probabilities over the last dimension.
pub fn kl_from_log_probs(log_p: &Tensor, log_q: &Tensor) -> Result<Tensor> {
    Ok((log_p.exp()? * (floored(log_p)? - floored(log_q)?)?)?.sum_all()?)
}

/// Σ_rows of β·KL(p‖m) + (1−β)·KL(q‖m), m = β·p + (1−β)·q, from log-probabilities; at the ends,
/// as TRL's `generalized_jsd_loss` defines them, β = 0 is KL(p‖q) and β = 1 is KL(q‖p) (the
/// divergences to the mixture both vanish there).
pub fn jsd_from_log_probs(log_p: &Tensor, log_q: &Tensor, beta: f64) -> Result<Tensor> {
    if beta == 0.0 {
        return kl_from_log_probs(log_p, log_q);
    }
    if beta == 1.0 {
        return kl_from_log_probs(log_q, log_p);
    }
    let (p, q) = (log_p.exp()?, log_q.exp()?);
    let (log_p, log_q) = (&floored(log_p)?, &floored(log_q)?);
    let m = ((&p * beta)? + (&q * (1.0 - beta))?)?;
    // Guard log(0) where both distributions underflow; those terms have zero weight anyway.
    let log_m = m.clamp(f32::MIN_POSITIVE, 1.0)?.log()?;
    let kl_p = (&p * (log_p - &log_m)?)?.sum_all()?;
    let kl_q = (&q * (log_q - &log_m)?)?.sum_all()?;
    Ok(((kl_p * beta)? + (kl_q * (1.0 - beta))?)?)
}

/// Σ_positions KL(p_t ‖ p_s) at temperature T, unscaled. The teacher side carries no gradient.
pub fn forward_kl_sum(student: &Tensor, teacher: &Tensor, temperature: f64) -> Result<Tensor> {
    let log_s = scaled_log_probs(student, temperature)?;
    let log_t = scaled_log_probs(&teacher.detach(), temperature)?;
    kl_from_log_probs(&log_t, &log_s)
}

/// Σ_positions KL(p_s ‖ p_t) at temperature T, unscaled.
pub fn reverse_kl_sum(student: &Tensor, teacher: &Tensor, temperature: f64) -> Result<Tensor> {
    let log_s = scaled_log_probs(student, temperature)?;
    let log_t = scaled_log_probs(&teacher.detach(), temperature)?;
    kl_from_log_probs(&log_s, &log_t)
}

/// Σ_positions generalised Jensen–Shannon divergence with mix `beta` (weight of the teacher), unscaled.
pub fn jsd_sum(student: &Tensor, teacher: &Tensor, temperature: f64, beta: f64) -> Result<Tensor> {
    let log_s = scaled_log_probs(student, temperature)?;
    let log_t = scaled_log_probs(&teacher.detach(), temperature)?;
    jsd_from_log_probs(&log_t, &log_s, beta)
}

/// Σ_positions mean_v (z_s − z_t)² on raw logits.
pub fn mse_logits_sum(student: &Tensor, teacher: &Tensor) -> Result<Tensor> {
    let v = student.dim(D::Minus1)? as f64;
    let diff = (student.to_dtype(DType::F32)? - teacher.detach().to_dtype(DType::F32)?)?;
    Ok((diff.sqr()?.sum_all()? / v)?)
}

/// A label that takes no part in the hard-label loss (a token the student sampled itself, in
/// on-policy distillation): PyTorch's `ignore_index`.
pub const IGNORE: u32 = u32::MAX;

/// Σ_positions cross-entropy of `labels` (`[n]`, u32) under `logits` (`[n, vocab]`), at T = 1;
/// positions labelled [`IGNORE`] add nothing.
pub fn hard_ce_sum(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let log_p = log_softmax(&logits.to_dtype(DType::F32)?, D::Minus1)?;
    let labels = labels.to_dtype(DType::U32)?;
    let values: Vec<u32> = labels.to_vec1()?;
    if !values.contains(&IGNORE) {
        return Ok(log_p.gather(&labels.unsqueeze(1)?, 1)?.sum_all()?.neg()?);
    }
    let keep: Vec<f32> = values.iter().map(|&y| if y == IGNORE { 0.0 } else { 1.0 }).collect();
    let safe: Vec<u32> = values.iter().map(|&y| if y == IGNORE { 0 } else { y }).collect();
    let n = values.len();
    let picked = log_p.gather(&Tensor::from_vec(safe, (n, 1), log_p.device())?, 1)?;
    let keep = Tensor::from_vec(keep, (n, 1), log_p.device())?;
    Ok((picked * keep)?.sum_all()?.neg()?)
}
