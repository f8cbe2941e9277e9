//! Forward or reverse KL against a top-k teacher ([`SparseTeacher`]'s k + 1 buckets) plus the
//! hard-label cross-entropy, fused into one candle op over a chunk of `[rows, vocab]` logits: the
//! cached-teacher counterpart of [`super::fused_loss`].
//!
//! Composed from candle ops ([`SoftLoss::sum_sparse`] and
//! [`hard_ce_sum`](super::losses::hard_ce_sum)), each row of the student's logits goes through two
//! log-softmaxes, a gather, exponentials and their backwards, every one a full-size tensor. Here
//! the forward pass reads a row twice (its maximum, then both log-sum-exps) and the backward once;
//! the k + 1 buckets are computed in f64 beside it.
//!
//! Per row, with u = s/T, q = softmax(u), S = Σ_top q_i and the rest bucket Q = 1 − S (floored at
//! 1e-30, as in the composed form; its gradient is 0 where the floor holds), let g_b = ∂L/∂log q_b
//! for each bucket (forward KL: −p_b; reverse KL: q_b (log q_b − log p_b + 1)). Then
//! ∂L/∂u_j = q_j · C + [j in top] (g_j − q_j g_rest / Q), with C = −Σ_top g_i + g_rest · S / Q,
//! and ∂/∂s = (1/T) ∂/∂u. `tests/engine/losses.rs` checks values and gradients against the
//! composed forms.

use super::fused_loss::{FusedOp, RowLoss, UNDERFLOW};
use super::losses::{SoftLoss, IGNORE};
use super::sparse::{SparseTeacher, MIN_TAIL};
use crate::engine::kernels::vmath::{self, exp};
use crate::engine::{Error, Result};
use candle_core::{DType, Tensor};
use rayon::prelude::*;

/// `[soft · T², hard]` summed over rows: the forward or reverse KL between the bucket
/// distributions of `student` (f32 `[rows, vocab]`) and `teacher` (rows aligned), and the
/// cross-entropy of `labels`, differentiable in `student`.
pub fn soft_and_hard(
    student: &Tensor,
    teacher: &SparseTeacher,
    labels: &Tensor,
    kind: SoftLoss,
    temperature: f64,
) -> Result<Tensor> {
    let (rows, vocab) = student.dims2()?;
    if !super::fused_loss::supports(kind) || temperature.is_nan() || temperature <= 0.0 || !student.device().is_cpu() {
        return Err(Error::Invalid(format!(
            "fused top-k loss: {kind:?} at T = {temperature} on this device is not fused"
        )));
    }
    if teacher.positions() != rows || teacher.vocab != vocab {
        return Err(Error::Invalid(format!(
            "fused top-k loss: a teacher of {} positions over vocab {} vs student logits {rows} x {vocab}",
            teacher.positions(),
            teacher.vocab
        )));
    }
    let labels: Vec<u32> = labels.to_dtype(DType::U32)?.to_vec1()?;
    if labels.len() != rows || labels.iter().any(|&y| y as usize >= vocab && y != IGNORE) {
        return Err(Error::Invalid(format!(
            "fused top-k loss: {} labels for {rows} rows of vocab {vocab}",
            labels.len()
        )));
    }
    let indices: Vec<u32> = teacher.indices.flatten_all()?.to_vec1()?;
    if indices.iter().any(|&i| i as usize >= vocab) {
        return Err(Error::Invalid(format!("fused top-k loss: a teacher token id beyond the vocabulary of {vocab}")));
    }
    let op = FusedSparseKd {
        k: teacher.k(),
        indices,
        logits: teacher.logits.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?,
        rest_logits: teacher.rest_logits(temperature)?,
        labels,
        reverse: kind == SoftLoss::ReverseKl,
        temperature: temperature as f32,
    };
    Ok(student.to_dtype(DType::F32)?.contiguous()?.apply_op1(FusedOp::new(
        op,
        "fused-topk-kd-ce",
        temperature as f32,
    ))?)
}

/// What the backward pass needs of each row: logsumexp(s), logsumexp(s/T), C, and per top-k
/// token its correction g_i − q_i g_rest / Q.
#[derive(Clone, Default)]
struct RowStats {
    lse: f32,
    lse_s: f32,
    c: f32,
    top: Vec<f32>,
}

struct FusedSparseKd {
    k: usize,
    /// `[rows · k]` token ids and logits at T = 1, and `[rows]` the rest bucket's logit at T
    /// (empty when the top k are the whole vocabulary).
    indices: Vec<u32>,
    logits: Vec<f32>,
    rest_logits: Vec<f64>,
    labels: Vec<u32>,
    reverse: bool,
    temperature: f32,
}

/// log Σ e^a over a few f64 values.
fn log_sum_exp(a: &[f64]) -> f64 {
    let m = a.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + a.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

impl FusedSparseKd {
    /// One row's statistics and `(soft, hard)` losses (soft unscaled).
    #[inline(always)]
    fn row(&self, s: &[f32], r: usize) -> (RowStats, f64, f64) {
        let (t, inv_t) = (self.temperature as f64, 1.0 / self.temperature);
        let ms = vmath::max(s);
        let lse = ms + vmath::sum_map(s, |x| exp(x - ms)).ln() as f32;
        let label = self.labels[r];
        let hard = if label == IGNORE { 0.0 } else { (lse - s[label as usize]) as f64 };
        let lse_s = if self.temperature == 1.0 {
            lse
        } else {
            ms * inv_t + vmath::sum_map(s, |x| exp((x - ms) * inv_t)).ln() as f32
        };
        let (idx, z) = (&self.indices[r * self.k..(r + 1) * self.k], &self.logits[r * self.k..(r + 1) * self.k]);
        // The teacher's buckets at T: the top k, then the rest.
        let has_tail = !self.rest_logits.is_empty();
        let mut a: Vec<f64> = z.iter().map(|&z| z as f64 / t).collect();
        if has_tail {
            a.push(self.rest_logits[r]);
        }
        let lse_a = log_sum_exp(&a);
        let log_p: Vec<f64> = a.iter().map(|x| x - lse_a).collect();
        // The student's: its full softmax at T gathered at the top ids, and 1 − their sum.
        let mut log_q: Vec<f64> = idx.iter().map(|&i| s[i as usize] as f64 / t - lse_s as f64).collect();
        let top_mass: f64 = log_q.iter().map(|l| l.exp()).sum();
        let rest = 1.0 - top_mass;
        let floored = rest < MIN_TAIL;
        if has_tail {
            log_q.push(rest.max(MIN_TAIL).ln());
        }
        // The divergence and g_b = ∂L/∂log q_b. A bucket whose weight is 0 adds nothing (0 · log 0).
        let mut kl = 0.0;
        let g: Vec<f64> = log_p
            .iter()
            .zip(&log_q)
            .map(|(&lp, &lq)| {
                if self.reverse {
                    let q = lq.exp();
                    if q == 0.0 || lq < UNDERFLOW as f64 {
                        return 0.0;
                    }
                    kl += q * (lq - lp);
                    q * (lq - lp + 1.0)
                } else {
                    let p = lp.exp();
                    if p == 0.0 || lp < UNDERFLOW as f64 {
                        return 0.0;
                    }
                    kl += p * (lp - lq);
                    -p
                }
            })
            .collect();
        let g_top = &g[..self.k];
        let g_rest = if has_tail && !floored { g[self.k] } else { 0.0 };
        let q_rest = rest.max(MIN_TAIL);
        let c = -g_top.iter().sum::<f64>() + g_rest * top_mass / q_rest;
        let top = g_top.iter().zip(&log_q).map(|(&gi, &lq)| (gi - lq.exp() * g_rest / q_rest) as f32).collect();
        (RowStats { lse, lse_s, c: c as f32, top }, kl, hard)
    }

    fn forward(&self, s: &[f32]) -> (Vec<RowStats>, f64, f64) {
        let vocab = s.len() / self.labels.len().max(1);
        let per_row: Vec<(RowStats, f64, f64)> = vmath::with_wide_simd(
            #[inline(always)]
            || (0..self.labels.len()).into_par_iter().map(|r| self.row(&s[r * vocab..(r + 1) * vocab], r)).collect(),
        );
        // Summed in row order whatever the thread count: the result is deterministic.
        let (soft, hard) = per_row.iter().fold((0.0, 0.0), |(a, b), (_, s, h)| (a + s, b + h));
        (per_row.into_iter().map(|(st, _, _)| st).collect(), soft, hard)
    }

    /// `∂(g_soft · soft · T² + g_hard · hard)/∂s` for every row.
    fn backward(&self, s: &[f32], stats: &[RowStats], g_soft: f32, g_hard: f32) -> Vec<f32> {
        let vocab = s.len() / self.labels.len().max(1);
        let inv_t = 1.0 / self.temperature;
        let soft_scale = g_soft * self.temperature; // T² · (1/T)
        let mut grad = vec![0f32; s.len()];
        vmath::with_wide_simd(
            #[inline(always)]
            || {
                grad.par_chunks_mut(vocab).enumerate().for_each(|(r, g)| {
                    let st = &stats[r];
                    let label = self.labels[r];
                    let g_hard = if label == IGNORE { 0.0 } else { g_hard };
                    let sr = &s[r * vocab..(r + 1) * vocab];
                    let soft_c = soft_scale * st.c;
                    for (g, &x) in g.iter_mut().zip(sr) {
                        *g = soft_c * exp(x * inv_t - st.lse_s) + g_hard * exp(x - st.lse);
                    }
                    for (&i, &d) in self.indices[r * self.k..(r + 1) * self.k].iter().zip(&st.top) {
                        g[i as usize] += soft_scale * d;
                    }
                    if label != IGNORE {
                        g[label as usize] -= g_hard;
                    }
                });
            },
        );
        grad
    }
}

impl RowLoss for FusedSparseKd {
    type Stats = Vec<RowStats>;

    fn forward_rows(&self, s: &[f32]) -> candle_core::Result<(Vec<RowStats>, f64, f64)> {
        Ok(self.forward(s))
    }

    fn backward_rows(
        &self,
        s: &[f32],
        stats: &Vec<RowStats>,
        g_soft: f32,
        g_hard: f32,
    ) -> candle_core::Result<Vec<f32>> {
        Ok(self.backward(s, stats, g_soft, g_hard))
    }
}
