//! The teacher's distribution kept as its top-k logits plus the remaining probability mass.
//!
//! What is stored per position: the k largest logits and their token ids (ties broken by id, so
//! the choice is deterministic), and `tail_lse`, the log-sum-exp of the other V−k logits, all at
//! T = 1. From these the loss builds a (k+1)-bucket distribution — the k tokens plus one "rest"
//! bucket — for both models, renormalised so each sums to one:
//! - teacher at temperature T: a_i = z_i / T for the k tokens; the rest bucket assumes its mass is
//!   spread evenly over the V−k tokens, a_rest = ln(V−k) + (tail_lse − ln(V−k)) / T (exact at T = 1);
//!   log p = a − logsumexp(a);
//! - student at T: its full softmax, gathered at the k ids, and q_rest = 1 − Σ_k q_i.
//!
//! The divergences are then computed between these bucket distributions. At T = 1 this is the exact
//! KL between the coarse-grained distributions (a lower bound on the full KL, by the data-processing
//! inequality); with k = V it equals the full loss exactly (tested). MSE on logits compares the k
//! cached logits only. Runs use this representation whether the teacher was just computed or read
//! from the cache, so a cached run equals an uncached one bit for bit.

use super::losses::{jsd_from_log_probs, kl_from_log_probs, SoftLoss};
use crate::engine::Result;
use candle_core::{DType, Device, Tensor, D};
use candle_nn::ops::log_softmax;
use rayon::prelude::*;

/// Top-k teacher logits of `n` positions.
#[derive(Clone, Debug)]
pub struct SparseTeacher {
    /// `[n, k]` u32 token ids.
    pub indices: Tensor,
    /// `[n, k]` f32 logits at T = 1.
    pub logits: Tensor,
    /// `[n]` f32 log-sum-exp of the logits outside the top k (floored for an empty tail mass).
    pub tail_lse: Tensor,
    /// Vocabulary size of the teacher's logits.
    pub vocab: usize,
}

/// Floor of the rest bucket's probability (keeps logs finite when the top k hold all the mass).
pub(super) const MIN_TAIL: f64 = 1e-30;

impl SparseTeacher {
    /// Extracts the top `k` of each row of `logits` `[n, vocab]` (rows in parallel; each row's
    /// numbers do not depend on the others or on the thread count).
    pub fn from_logits(logits: &Tensor, k: usize) -> Result<Self> {
        let (n, vocab) = logits.dims2()?;
        let k = k.min(vocab);
        let data: Vec<f32> = logits.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let (mut idx, mut val, mut tail) = (vec![0u32; n * k], vec![0f32; n * k], vec![0f32; n]);
        data.par_chunks_exact(vocab.max(1))
            .zip(idx.par_chunks_mut(k.max(1)).zip(val.par_chunks_mut(k.max(1))).zip(tail.par_iter_mut()))
            .for_each_init(
                || Vec::with_capacity(vocab),
                |order: &mut Vec<u32>, (row, ((idx, val), tail))| {
                    order.clear();
                    order.extend(0..vocab as u32);
                    let by_value = |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b));
                    if k < vocab {
                        order.select_nth_unstable_by(k, by_value);
                    }
                    let top = &mut order[..k];
                    top.sort_unstable();
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
                    let all: f64 = row.iter().map(|&z| ((z as f64) - max).exp()).sum();
                    let topsum: f64 = top.iter().map(|&i| ((row[i as usize] as f64) - max).exp()).sum();
                    let rest = ((all - topsum) / all).max(MIN_TAIL);
                    // log Σ_tail e^z = log(all) + max + log(rest fraction)
                    *tail = (max + all.ln() + rest.ln()) as f32;
                    for ((slot, value), &i) in idx.iter_mut().zip(val.iter_mut()).zip(top.iter()) {
                        *slot = i;
                        *value = row[i as usize];
                    }
                },
            );
        let dev = logits.device();
        Ok(Self {
            indices: Tensor::from_vec(idx, (n, k), dev)?,
            logits: Tensor::from_vec(val, (n, k), dev)?,
            tail_lse: Tensor::from_vec(tail, n, dev)?,
            vocab,
        })
    }

    pub fn k(&self) -> usize {
        self.indices.dim(1).unwrap_or(0)
    }

    pub fn positions(&self) -> usize {
        self.indices.dim(0).unwrap_or(0)
    }

    fn tail_count(&self) -> usize {
        self.vocab - self.k()
    }

    /// Mean probability mass of the top k at T = 1 (how much of the teacher the cache keeps).
    pub fn mean_top_mass(&self) -> Result<f64> {
        let lse_top = self.logits.to_dtype(DType::F64)?.exp()?.sum(1)?.log()?;
        let lse_tail = self.tail_lse.to_dtype(DType::F64)?;
        // top mass = e^{lse_top} / (e^{lse_top} + e^{lse_tail})
        let frac = (lse_tail - &lse_top)?.exp()?.affine(1.0, 1.0)?.recip()?;
        Ok(frac.mean_all()?.to_scalar::<f64>()?)
    }

    /// Rows `start..start + len`.
    pub fn narrow(&self, start: usize, len: usize) -> Result<Self> {
        Ok(Self {
            indices: self.indices.narrow(0, start, len)?,
            logits: self.logits.narrow(0, start, len)?,
            tail_lse: self.tail_lse.narrow(0, start, len)?,
            vocab: self.vocab,
        })
    }

    pub fn to_device(&self, device: &Device) -> Result<Self> {
        Ok(Self {
            indices: self.indices.to_device(device)?,
            logits: self.logits.to_device(device)?,
            tail_lse: self.tail_lse.to_device(device)?,
            vocab: self.vocab,
        })
    }

    /// Stacks several position blocks (e.g. the windows of a batch) in order.
    pub fn cat(parts: &[SparseTeacher]) -> Result<Self> {
        let vocab = parts.first().map(|p| p.vocab).unwrap_or(0);
        let cat = |f: fn(&SparseTeacher) -> &Tensor| -> Result<Tensor> {
            Ok(Tensor::cat(&parts.iter().map(f).collect::<Vec<_>>(), 0)?)
        };
        Ok(Self { indices: cat(|p| &p.indices)?, logits: cat(|p| &p.logits)?, tail_lse: cat(|p| &p.tail_lse)?, vocab })
    }

    /// Teacher bucket log-probabilities `[n, k(+1)]` at temperature `t`.
    fn bucket_log_probs(&self, t: f64) -> Result<Tensor> {
        let a_top = (&self.logits / t)?;
        let a = match self.tail_count() {
            0 => a_top,
            m => {
                let ln_m = (m as f64).ln();
                let a_rest = ((&self.tail_lse - ln_m)? / t)?.affine(1.0, ln_m)?.unsqueeze(1)?;
                Tensor::cat(&[&a_top, &a_rest], 1)?
            }
        };
        Ok(log_softmax(&a, D::Minus1)?)
    }

    /// Student bucket log-probabilities `[n, k(+1)]` at temperature `t` from full logits `[n, V]`.
    fn student_bucket_log_probs(&self, student: &Tensor, t: f64) -> Result<Tensor> {
        let s = student.to_dtype(DType::F32)?;
        let s = if t == 1.0 { s } else { (s / t)? };
        let log_q = log_softmax(&s, D::Minus1)?;
        let log_top = log_q.gather(&self.indices, 1)?;
        if self.tail_count() == 0 {
            return Ok(log_top);
        }
        let rest = log_top.exp()?.sum_keepdim(1)?.affine(-1.0, 1.0)?.clamp(MIN_TAIL, 1.0)?.log()?;
        Ok(Tensor::cat(&[&log_top, &rest], 1)?)
    }
}

impl SoftLoss {
    /// The soft loss against a top-k teacher, summed over positions, T²-scaled like [`SoftLoss::sum`].
    pub fn sum_sparse(self, student: &Tensor, teacher: &SparseTeacher, temperature: f64, beta: f64) -> Result<Tensor> {
        let t2 = temperature * temperature;
        if self == SoftLoss::MseLogits {
            let picked = student.to_dtype(DType::F32)?.gather(&teacher.indices, 1)?;
            let k = teacher.k() as f64;
            return Ok(((picked - &teacher.logits)?.sqr()?.sum_all()? / k)?);
        }
        let log_p = teacher.bucket_log_probs(temperature)?;
        let log_q = teacher.student_bucket_log_probs(student, temperature)?;
        let raw = match self {
            SoftLoss::ForwardKl => kl_from_log_probs(&log_p, &log_q)?,
            SoftLoss::ReverseKl => kl_from_log_probs(&log_q, &log_p)?,
            SoftLoss::Jsd => jsd_from_log_probs(&log_p, &log_q, beta)?,
            SoftLoss::MseLogits => unreachable!("handled above"),
        };
        Ok((raw * t2)?)
    }
}
