//! Forward or reverse KL at temperature T plus the hard-label cross-entropy, fused into one candle
//! op over a chunk of `[rows, vocab]` logits.
//!
//! Composed from candle ops, these losses take some forty passes over the logits (each softmax is
//! five, and every op has its own backward), each a separately allocated full-size tensor. Here the
//! forward pass reads each row three times and the backward once, with a vectorized `exp`
//! ([`crate::engine::kernels::vmath`]). Per row, with q = softmax(s/T), p = softmax(t/T):
//! - forward KL: Σ p (log p − log q), gradient w.r.t. s: (q − p)/T;
//! - reverse KL: R = Σ q (log q − log p), gradient: q ⊙ (log q − log p − R)/T;
//! - cross-entropy: logsumexp(s) − s_y, gradient: softmax(s) − onehot(y).
//!
//! The op's output is `[soft · T², hard]`, both summed over rows, like [`SoftLoss::sum`] and
//! [`hard_ce_sum`](super::losses::hard_ce_sum); `tests/engine/losses.rs` checks values and gradients
//! against those composed forms.

use super::losses::{SoftLoss, IGNORE};
use crate::engine::kernels::vmath::{self, exp};
use crate::engine::{Error, Result};
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Storage, Tensor};
use rayon::prelude::*;
use std::sync::Mutex;

/// Log-probabilities below this are 0 in f32 (`vmath::exp` floors at about 1e-38).
pub(super) const UNDERFLOW: f32 = -87.0;

/// True when the fused op computes this soft loss (MSE and JSD stay composed).
pub fn supports(kind: SoftLoss) -> bool {
    matches!(kind, SoftLoss::ForwardKl | SoftLoss::ReverseKl)
}

/// `[soft · T², hard]` summed over rows: the soft loss against `teacher` (when given) and the
/// cross-entropy of `labels`, differentiable in `student`. Logits are f32 `[rows, vocab]`.
pub fn soft_and_hard(
    student: &Tensor,
    teacher: Option<&Tensor>,
    labels: &Tensor,
    kind: SoftLoss,
    temperature: f64,
) -> Result<Tensor> {
    let (rows, vocab) = student.dims2()?;
    if let Some(t) = teacher {
        if t.dims() != student.dims() {
            return Err(Error::Invalid(format!("fused loss: teacher {:?} vs student {:?}", t.dims(), student.dims())));
        }
    }
    // Without a teacher only the cross-entropy is computed, whatever the recipe's soft loss (a
    // JSD or MSE recipe's hard-label baseline comes here).
    if (teacher.is_some() && !supports(kind)) || !(temperature > 0.0) || !student.device().is_cpu() {
        return Err(Error::Invalid(format!("fused loss: {kind:?} at T = {temperature} on this device is not fused")));
    }
    let labels: Vec<u32> = labels.to_dtype(DType::U32)?.to_vec1()?;
    if labels.len() != rows || labels.iter().any(|&y| y as usize >= vocab && y != IGNORE) {
        return Err(Error::Invalid(format!("fused loss: {} labels for {rows} rows of vocab {vocab}", labels.len())));
    }
    let op = FusedKd {
        teacher: teacher.map(|t| t.to_dtype(DType::F32)?.contiguous()).transpose()?.map(|t| t.detach()),
        labels,
        reverse: kind == SoftLoss::ReverseKl,
        temperature: temperature as f32,
    };
    Ok(student.to_dtype(DType::F32)?.contiguous()?.apply_op1(FusedOp::new(op, "fused-kd-ce", temperature as f32))?)
}

/// What the backward pass needs of each row.
#[derive(Clone, Copy, Default)]
struct RowStats {
    /// logsumexp(s), logsumexp(s/T), logsumexp(t/T).
    lse: f32,
    lse_s: f32,
    lse_t: f32,
    /// The row's divergence (reverse KL's gradient uses it).
    kl: f32,
}

struct FusedKd {
    teacher: Option<Tensor>,
    labels: Vec<u32>,
    reverse: bool,
    temperature: f32,
}

fn cpu_f32<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("fused loss: contiguous f32 logits expected"),
    }
}

/// Runs `f` on the teacher's logits as a slice.
fn with_teacher<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> candle_core::Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(s) => Ok(f(cpu_f32(s, layout)?)),
        _ => candle_core::bail!("fused loss: the teacher's logits are not on the CPU"),
    }
}

impl FusedKd {
    /// One row's statistics and `(soft, hard)` losses (soft unscaled).
    #[inline(always)]
    fn row(&self, s: &[f32], t: Option<&[f32]>, label: u32) -> (RowStats, f64, f64) {
        let inv_t = 1.0 / self.temperature;
        let ms = vmath::max(s);
        let lse = ms + vmath::sum_map(s, |x| exp(x - ms)).ln() as f32;
        let hard = if label == IGNORE { 0.0 } else { (lse - s[label as usize]) as f64 };
        let Some(t) = t else { return (RowStats { lse, ..Default::default() }, 0.0, hard) };
        let mt = vmath::max(t);
        let lse_s = ms * inv_t + vmath::sum_map(s, |x| exp((x - ms) * inv_t)).ln() as f32;
        let lse_t = mt * inv_t + vmath::sum_map(t, |x| exp((x - mt) * inv_t)).ln() as f32;
        // A term whose weight underflows f32 (log-probability below -87, e.g. a -inf logit of a
        // masked token) is 0: p log p → 0, where 0 · (-inf) would be NaN. NaN still passes (the
        // comparison is false for it), so a NaN logit still surfaces.
        let kl = if self.reverse {
            vmath::sum_map2(s, t, |x, y| {
                let lq = x * inv_t - lse_s;
                let term = exp(lq) * (lq - (y * inv_t - lse_t));
                if lq < UNDERFLOW {
                    0.0
                } else {
                    term
                }
            })
        } else {
            vmath::sum_map2(s, t, |x, y| {
                let lp = y * inv_t - lse_t;
                let term = exp(lp) * (lp - (x * inv_t - lse_s));
                if lp < UNDERFLOW {
                    0.0
                } else {
                    term
                }
            })
        };
        (RowStats { lse, lse_s, lse_t, kl: kl as f32 }, kl, hard)
    }

    fn forward(&self, s: &[f32], t: Option<&[f32]>) -> (Vec<RowStats>, f64, f64) {
        let vocab = s.len() / self.labels.len().max(1);
        let per_row: Vec<(RowStats, f64, f64)> = vmath::with_wide_simd(
            #[inline(always)]
            || {
                (0..self.labels.len())
                    .into_par_iter()
                    .map(|r| {
                        let span = r * vocab..(r + 1) * vocab;
                        self.row(&s[span.clone()], t.map(|t| &t[span]), self.labels[r])
                    })
                    .collect()
            },
        );
        // Summed in row order whatever the thread count: the result is deterministic.
        let (soft, hard) = per_row.iter().fold((0.0, 0.0), |(a, b), (_, s, h)| (a + s, b + h));
        (per_row.into_iter().map(|(st, _, _)| st).collect(), soft, hard)
    }

    /// `∂(g_soft · soft · T² + g_hard · hard)/∂s` for every row.
    fn backward(&self, s: &[f32], t: Option<&[f32]>, stats: &[RowStats], g_soft: f32, g_hard: f32) -> Vec<f32> {
        let vocab = s.len() / self.labels.len().max(1);
        let inv_t = 1.0 / self.temperature;
        let soft_scale = g_soft * self.temperature; // T² · (1/T)
        let mut grad = vec![0f32; s.len()];
        vmath::with_wide_simd(
            #[inline(always)]
            || {
                grad.par_chunks_mut(vocab).enumerate().for_each(|(r, g)| {
                    let st = stats[r];
                    let label = self.labels[r];
                    let g_hard = if label == IGNORE { 0.0 } else { g_hard };
                    let sr = &s[r * vocab..(r + 1) * vocab];
                    match t.map(|t| &t[r * vocab..(r + 1) * vocab]) {
                        Some(tr) if self.reverse => {
                            for ((g, &x), &y) in g.iter_mut().zip(sr).zip(tr) {
                                let lq = x * inv_t - st.lse_s;
                                let d = exp(lq) * (lq - (y * inv_t - st.lse_t) - st.kl);
                                let d = if lq < UNDERFLOW { 0.0 } else { d };
                                *g = soft_scale * d + g_hard * exp(x - st.lse);
                            }
                        }
                        Some(tr) => {
                            for ((g, &x), &y) in g.iter_mut().zip(sr).zip(tr) {
                                let d = exp(x * inv_t - st.lse_s) - exp(y * inv_t - st.lse_t);
                                *g = soft_scale * d + g_hard * exp(x - st.lse);
                            }
                        }
                        None => {
                            for (g, &x) in g.iter_mut().zip(sr) {
                                *g = g_hard * exp(x - st.lse);
                            }
                        }
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

impl RowLoss for FusedKd {
    type Stats = Vec<RowStats>;

    fn forward_rows(&self, s: &[f32]) -> candle_core::Result<(Vec<RowStats>, f64, f64)> {
        match &self.teacher {
            Some(t) => with_teacher(t, |t| self.forward(s, Some(t))),
            None => Ok(self.forward(s, None)),
        }
    }

    fn backward_rows(
        &self,
        s: &[f32],
        stats: &Vec<RowStats>,
        g_soft: f32,
        g_hard: f32,
    ) -> candle_core::Result<Vec<f32>> {
        match &self.teacher {
            Some(t) => with_teacher(t, |t| self.backward(s, Some(t), stats, g_soft, g_hard)),
            None => Ok(self.backward(s, None, stats, g_soft, g_hard)),
        }
    }
}

/// A loss over `[rows, vocab]` logits computed row by row, forward and backward, whose op output
/// is `[soft · T², hard]` ([`FusedOp`] makes it a candle op).
pub(super) trait RowLoss: Send + Sync {
    /// What the backward pass needs of the forward one.
    type Stats: Clone + Send + Sync;
    /// Per-row statistics and the summed `(soft, hard)` losses (soft unscaled).
    fn forward_rows(&self, s: &[f32]) -> candle_core::Result<(Self::Stats, f64, f64)>;
    /// `∂(g_soft · soft · T² + g_hard · hard)/∂s`.
    fn backward_rows(&self, s: &[f32], stats: &Self::Stats, g_soft: f32, g_hard: f32) -> candle_core::Result<Vec<f32>>;
}

/// The candle op of a [`RowLoss`]; the forward pass's statistics wait here for the backward.
pub(super) struct FusedOp<L: RowLoss> {
    loss: L,
    name: &'static str,
    temperature: f32,
    stats: Mutex<Option<L::Stats>>,
}

impl<L: RowLoss> FusedOp<L> {
    pub(super) fn new(loss: L, name: &'static str, temperature: f32) -> Self {
        Self { loss, name, temperature, stats: Mutex::new(None) }
    }
}

impl<L: RowLoss> CustomOp1 for FusedOp<L> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (stats, soft, hard) = self.loss.forward_rows(cpu_f32(storage, layout)?)?;
        *self.stats.lock().expect("fused loss stats poisoned") = Some(stats);
        let t2 = (self.temperature as f64).powi(2);
        Ok((CpuStorage::F32(vec![(soft * t2) as f32, hard as f32]), Shape::from(2)))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let g: Vec<f32> = grad_res.to_vec1()?;
        let Some(stats) = self.stats.lock().expect("fused loss stats poisoned").clone() else {
            candle_core::bail!("{}: backward before forward", self.name)
        };
        let (storage, layout) = arg.storage_and_layout();
        let s = match &*storage {
            Storage::Cpu(st) => cpu_f32(st, layout)?,
            _ => candle_core::bail!("{}: logits are not on the CPU", self.name),
        };
        let grad = self.loss.backward_rows(s, &stats, g[0], g[1])?;
        Ok(Some(Tensor::from_vec(grad, arg.dims(), arg.device())?))
    }
}
