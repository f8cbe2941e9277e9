//! Attention's `softmax(scale · scores + mask)` over the last dimension in one pass per row, with
//! its own backward, for f32 tensors on the CPU.
//!
//! Composed from candle ops the same thing takes seven passes (scale, mask, max, subtract, exp,
//! sum, divide), each writing a fresh `[b, heads, t, t]` tensor, and its backward as many again;
//! on the SmolLM2 KD workload that was the largest cost after the matrix multiplies. Here the
//! forward reads the scores once and writes the probabilities once; the backward reads the
//! probabilities and their gradient once and writes the scores' gradient:
//! `∂L/∂x = scale · y ⊙ (∂L/∂y − Σ_j y_j ∂L/∂y_j)`. The mask gets no gradient.
//!
//! Masked entries (`-inf`) come out exactly 0, as in the composed form; a row that is masked
//! everywhere gives NaN, as there.

use super::cpu::{f32_data, Bwd2, Fwd};
use super::vmath;
use crate::engine::Result;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Tensor};
use rayon::prelude::*;

/// Scores per rayon task (rows are grouped so that a task has at least this many).
const TASK_ELEMENTS: usize = 1 << 15;

/// True when [`masked_softmax`] takes `scores` `[..., t, tk]` with this `mask`: f32 on the CPU,
/// the mask a 2-D `[t, tk]` additive table (a causal mask).
pub fn applies(scores: &Tensor, mask: &Tensor) -> bool {
    let dims = scores.dims();
    super::enabled()
        && scores.device().is_cpu()
        && scores.dtype() == DType::F32
        && mask.dtype() == DType::F32
        && dims.len() >= 2
        && mask.dims() == &dims[dims.len() - 2..]
}

/// `softmax(scale · scores + mask)` over the last dimension; differentiable in `scores`.
pub fn masked_softmax(scores: &Tensor, mask: &Tensor, scale: f64) -> Result<Tensor> {
    if !applies(scores, mask) {
        let takes = "fused softmax takes f32 CPU scores [..., t, tk] and a [t, tk] mask";
        return Err(super::refused(takes, &[scores, mask]));
    }
    Ok(scores.contiguous()?.apply_op2(&mask.contiguous()?, MaskedSoftmax { scale: scale as f32 })?)
}

struct MaskedSoftmax {
    scale: f32,
}

/// Rows per rayon task for rows of `width`.
fn rows_per_task(width: usize) -> usize {
    (TASK_ELEMENTS / width.max(1)).max(1)
}

fn forward_row(x: &[f32], mask: &[f32], out: &mut [f32], scale: f32) {
    for ((o, &v), &m) in out.iter_mut().zip(x).zip(mask) {
        *o = v * scale + m;
    }
    let max = vmath::max(out);
    for o in out.iter_mut() {
        let v = *o;
        *o = if v == f32::NEG_INFINITY { 0.0 } else { vmath::exp(v - max) };
    }
    let sum = vmath::sum_map(out, |v| v) as f32;
    for o in out.iter_mut() {
        *o /= sum;
    }
}

impl CustomOp2 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "masked-softmax"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Fwd {
        let (x, mask) = (f32_data(s1, l1, "fused softmax")?, f32_data(s2, l2, "fused softmax")?);
        let tk = l1.dims()[l1.dims().len() - 1];
        let t = l1.dims()[l1.dims().len() - 2];
        let mut out = vec![0f32; x.len()];
        let per = rows_per_task(tk);
        let scale = self.scale;
        out.par_chunks_mut(per * tk).zip(x.par_chunks(per * tk)).enumerate().for_each(|(task, (o, x))| {
            vmath::with_wide_simd(
                #[inline(always)]
                || {
                    for (r, (o, x)) in o.chunks_mut(tk).zip(x.chunks(tk)).enumerate() {
                        let i = (task * per + r) % t;
                        forward_row(x, &mask[i * tk..(i + 1) * tk], o, scale);
                    }
                },
            )
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(&self, _scores: &Tensor, _mask: &Tensor, res: &Tensor, grad: &Tensor) -> Bwd2 {
        let dx = res.contiguous()?.apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxBackward { scale: self.scale })?;
        Ok((Some(dx), None))
    }
}

/// `(y, ∂L/∂y) → ∂L/∂x` for [`MaskedSoftmax`].
struct SoftmaxBackward {
    scale: f32,
}

impl CustomOp2 for SoftmaxBackward {
    fn name(&self) -> &'static str {
        "masked-softmax-backward"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Fwd {
        let (y, dy) = (f32_data(s1, l1, "fused softmax")?, f32_data(s2, l2, "fused softmax")?);
        if y.len() != dy.len() {
            candle_core::bail!("fused softmax backward: {} probabilities, {} gradients", y.len(), dy.len())
        }
        let tk = l1.dims()[l1.dims().len() - 1];
        let mut dx = vec![0f32; y.len()];
        let per = rows_per_task(tk);
        let scale = self.scale;
        dx.par_chunks_mut(per * tk).zip(y.par_chunks(per * tk).zip(dy.par_chunks(per * tk))).for_each(
            |(dx, (y, dy))| {
                vmath::with_wide_simd(
                    #[inline(always)]
                    || {
                        for ((dx, y), dy) in dx.chunks_mut(tk).zip(y.chunks(tk)).zip(dy.chunks(tk)) {
                            let dot = vmath::sum_map2(y, dy, |a, b| a * b) as f32;
                            for ((d, &p), &g) in dx.iter_mut().zip(y).zip(dy) {
                                *d = scale * p * (g - dot);
                            }
                        }
                    },
                )
            },
        );
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}
