//! RMS normalisation `y = x · r · w` with `r = 1 / √(mean(x²) + ε)` over the last dimension, in
//! one parallel pass with its own backward, for f32 on the CPU.
//!
//! candle's fused `rms_norm` records no gradient; composed from ops that do, the norm takes six
//! single-threaded passes forward (square, mean, add, sqrt, divide, multiply) and about twice as
//! many backward, for each of a block's two norms. The backward here, with `u = ∂L/∂y ⊙ w`:
//! `∂L/∂x = r · (u − x · r² · mean(u ⊙ x))` and `∂L/∂w = Σ_rows ∂L/∂y ⊙ x · r`. Sums of squares are
//! taken in f64.

use super::cpu::{f32_data, with_f32_tensors, Bwd2, Fwd};
use super::vmath;
use crate::engine::Result;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Tensor};
use rayon::prelude::*;

/// Rows per rayon task (at least; about 64k elements per task).
fn rows_per_task(width: usize) -> usize {
    ((1 << 16) / width.max(1)).max(1)
}

/// True when [`rms_norm`] takes these operands: f32 on the CPU, `w` as wide as `x`'s last dim.
pub fn applies(x: &Tensor, w: &Tensor) -> bool {
    super::enabled()
        && x.device().is_cpu()
        && x.dtype() == DType::F32
        && w.dtype() == DType::F32
        && x.rank() >= 1
        && w.dims() == [x.dims()[x.rank() - 1]]
}

/// `x / √(mean(x²) + eps) · w` over the last dimension; differentiable in `x` and `w`.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    if !applies(x, w) {
        let takes = "fused RMS norm takes an f32 CPU tensor and a weight as wide as its last dimension";
        return Err(super::refused(takes, &[x, w]));
    }
    Ok(x.contiguous()?.apply_op2(&w.contiguous()?, RmsNorm { eps })?)
}

struct RmsNorm {
    eps: f64,
}

/// `1 / √(mean(x²) + eps)` of one row.
fn inv_rms(x: &[f32], eps: f64) -> f32 {
    (1.0 / (vmath::sum_map(x, |v| v * v) / x.len() as f64 + eps).sqrt()) as f32
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "rms-norm"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Fwd {
        let (x, w) = (f32_data(s1, l1, "fused RMS norm")?, f32_data(s2, l2, "fused RMS norm")?);
        let n = w.len();
        let mut y = vec![0f32; x.len()];
        let per = rows_per_task(n) * n;
        let eps = self.eps;
        y.par_chunks_mut(per).zip(x.par_chunks(per)).for_each(|(y, x)| {
            vmath::with_wide_simd(
                #[inline(always)]
                || {
                    for (y, x) in y.chunks_mut(n).zip(x.chunks(n)) {
                        let r = inv_rms(x, eps);
                        for ((y, &x), &w) in y.iter_mut().zip(x).zip(w) {
                            *y = x * r * w;
                        }
                    }
                },
            )
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, grad: &Tensor) -> Bwd2 {
        let dy = grad.contiguous()?;
        let n = w.elem_count();
        let mut dx = vec![0f32; x.elem_count()];
        if dy.elem_count() != x.elem_count() {
            candle_core::bail!("fused RMS norm backward: {} gradients for {} elements", dy.elem_count(), x.elem_count())
        }
        let eps = self.eps;
        let dw: Vec<f64> = with_f32_tensors([x, w, &dy], "fused RMS norm", |[x, w, dy]| {
            let per = rows_per_task(n) * n;
            dx.par_chunks_mut(per)
                .zip(x.par_chunks(per).zip(dy.par_chunks(per)))
                .map(|(dx, (x, dy))| {
                    let mut dw = vec![0f64; n];
                    vmath::with_wide_simd(
                        #[inline(always)]
                        || {
                            let mut acc = vec![0f32; n];
                            for ((dx, x), dy) in dx.chunks_mut(n).zip(x.chunks(n)).zip(dy.chunks(n)) {
                                let r = inv_rms(x, eps);
                                let mean_ux = row_dot_uw(dy, w, x) / n as f32;
                                let k = r * r * mean_ux;
                                for (((dx, &x), &g), (&w, a)) in
                                    dx.iter_mut().zip(x).zip(dy).zip(w.iter().zip(acc.iter_mut()))
                                {
                                    *dx = r * (g * w - x * k);
                                    *a += g * x * r;
                                }
                            }
                            for (d, a) in dw.iter_mut().zip(&acc) {
                                *d += *a as f64;
                            }
                        },
                    );
                    dw
                })
                .reduce(
                    || vec![0f64; n],
                    |mut a, b| {
                        for (a, b) in a.iter_mut().zip(&b) {
                            *a += b;
                        }
                        a
                    },
                )
        })?;
        let dw: Vec<f32> = dw.into_iter().map(|v| v as f32).collect();
        Ok((
            Some(Tensor::from_vec(dx, x.shape().clone(), x.device())?),
            Some(Tensor::from_vec(dw, w.shape().clone(), w.device())?),
        ))
    }
}

/// `Σ_i dy_i · w_i · x_i` of one row, in f64.
fn row_dot_uw(dy: &[f32], w: &[f32], x: &[f32]) -> f32 {
    dy.iter().zip(w).zip(x).map(|((&g, &w), &x)| (g * w * x) as f64).sum::<f64>() as f32
}
