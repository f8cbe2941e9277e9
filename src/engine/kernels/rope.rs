//! Rotary position embedding ("rotate half", Hugging Face's layout) on `[b, t, heads, d]` in one
//! parallel pass, with its own backward, for f32 on the CPU.
//!
//! For each pair `(x_i, x_{i+d/2})` at position `p`: `y_i = x_i cos θ − x_{i+d/2} sin θ`,
//! `y_{i+d/2} = x_{i+d/2} cos θ + x_i sin θ`, `θ = p · inv_freq_i`. The map is a rotation, so its
//! backward is the rotation by `−θ`: the same op with `sin` negated. candle's `rope_thd` computes
//! the forward but records no gradient; composed from ops that do, rope takes seven passes
//! (two narrows, a negation, a concatenation, two products and a sum) and their backward.

use super::cpu::Fwd;
use super::vmath;
use crate::engine::Result;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Tensor, D};
use rayon::prelude::*;

/// True when [`rope_thd`] takes `x`: f32, rank 4, on the CPU.
pub fn applies(x: &Tensor) -> bool {
    super::enabled() && x.device().is_cpu() && x.dtype() == DType::F32 && x.rank() == 4
}

/// Rotates `x` `[b, t, heads, d]` by the tables `cos`, `sin` `[≥ t, d]` (the layers' tables,
/// whose two halves repeat); differentiable in `x`.
pub fn rope_thd(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let ok = applies(x) && cos.rank() == 2 && cos.dims() == sin.dims();
    let (t, d) = if ok { (x.dim(1)?, x.dim(3)?) } else { (0, 0) };
    if !ok || d % 2 != 0 || cos.dim(0)? < t || cos.dim(1)? != d {
        let takes = "fused rope takes f32 CPU x [b, t, heads, d] (d even) and cos, sin [t, d]";
        return Err(super::refused(takes, &[x, cos, sin]));
    }
    let half = |table: &Tensor| -> Result<Vec<f32>> {
        Ok(table.narrow(0, 0, t)?.narrow(D::Minus1, 0, d / 2)?.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?)
    };
    Ok(x.contiguous()?.apply_op1(Rope { cos: half(cos)?, sin: half(sin)? })?)
}

/// The rotation; `cos` and `sin` are `[t, d/2]`.
struct Rope {
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl CustomOp1 for Rope {
    fn name(&self) -> &'static str {
        "rope-thd"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Fwd {
        let (CpuStorage::F32(data), Some((start, end)), &[_, t, heads, d]) = (s, l.contiguous_offsets(), l.dims())
        else {
            candle_core::bail!("fused rope: contiguous f32 [b, t, heads, d] expected")
        };
        let x = &data[start..end];
        let half = d / 2;
        let mut y = vec![0f32; x.len()];
        // One task per position of a sequence: heads × d elements sharing one table row.
        y.par_chunks_mut(heads * d).zip(x.par_chunks(heads * d)).enumerate().for_each(|(row, (y, x))| {
            let p = row % t;
            let (cos, sin) = (&self.cos[p * half..(p + 1) * half], &self.sin[p * half..(p + 1) * half]);
            vmath::with_wide_simd(
                #[inline(always)]
                || {
                    for (y, x) in y.chunks_mut(d).zip(x.chunks(d)) {
                        let (y1, y2) = y.split_at_mut(half);
                        let (x1, x2) = x.split_at(half);
                        for i in 0..half {
                            y1[i] = x1[i] * cos[i] - x2[i] * sin[i];
                            y2[i] = x2[i] * cos[i] + x1[i] * sin[i];
                        }
                    }
                },
            )
        });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let back = Rope { cos: self.cos.clone(), sin: self.sin.iter().map(|s| -s).collect() };
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&back)?))
    }
}
