//! The gated MLP's `silu(gate) ⊙ up` in one parallel pass, with its own backward, for f32 tensors
//! on the CPU.
//!
//! Composed from candle ops this is `silu` (one libm `exp` per element, single-threaded) and a
//! multiply forward, and in the backward about six more element-wise passes over `[rows, 1536]`
//! tensors per layer. Here, with `s = σ(g)`:
//!
//! - forward: `y = g · s · u`;
//! - backward: `∂L/∂u = ∂L/∂y · g · s` and `∂L/∂g = ∂L/∂y · u · s · (1 + g · (1 − s))`.
//!
//! `exp` is [`vmath::exp`] (within 2 ulp of libm's).

use super::cpu::{f32_data, with_f32_tensors, Bwd2, Fwd};
use super::vmath;
use crate::engine::Result;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Tensor};
use rayon::prelude::*;

/// Elements per rayon task.
const TASK: usize = 1 << 14;

/// True when [`swiglu`] takes these operands: f32 CPU tensors of one shape.
pub fn applies(gate: &Tensor, up: &Tensor) -> bool {
    super::enabled()
        && gate.device().is_cpu()
        && gate.dtype() == DType::F32
        && up.dtype() == DType::F32
        && gate.dims() == up.dims()
}

/// `silu(gate) ⊙ up`, differentiable in both.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if !applies(gate, up) {
        return Err(super::refused("fused SwiGLU takes two f32 CPU tensors of one shape", &[gate, up]));
    }
    Ok(gate.contiguous()?.apply_op2(&up.contiguous()?, SwiGlu)?)
}

struct SwiGlu;

fn sigmoid(g: f32) -> f32 {
    1.0 / (1.0 + vmath::exp(-g))
}

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "swiglu"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Fwd {
        let (g, u) = (f32_data(s1, l1, "fused SwiGLU")?, f32_data(s2, l2, "fused SwiGLU")?);
        let mut y = vec![0f32; g.len()];
        y.par_chunks_mut(TASK).zip(g.par_chunks(TASK).zip(u.par_chunks(TASK))).for_each(|(y, (g, u))| {
            vmath::with_wide_simd(
                #[inline(always)]
                || {
                    for ((y, &g), &u) in y.iter_mut().zip(g).zip(u) {
                        *y = g * sigmoid(g) * u;
                    }
                },
            )
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(&self, gate: &Tensor, up: &Tensor, _res: &Tensor, grad: &Tensor) -> Bwd2 {
        let dy = grad.contiguous()?;
        let n = gate.elem_count();
        if dy.elem_count() != n {
            candle_core::bail!("fused SwiGLU backward: {} gradients for {n} elements", dy.elem_count())
        }
        let (mut dg, mut du) = (vec![0f32; n], vec![0f32; n]);
        with_f32_tensors([gate, up, &dy], "fused SwiGLU", |[g, u, dy]| {
            dg.par_chunks_mut(TASK)
                .zip(du.par_chunks_mut(TASK))
                .zip(g.par_chunks(TASK).zip(u.par_chunks(TASK)).zip(dy.par_chunks(TASK)))
                .for_each(|((dg, du), ((g, u), dy))| {
                    vmath::with_wide_simd(
                        #[inline(always)]
                        || {
                            for (((dg, du), (&g, &u)), &d) in
                                dg.iter_mut().zip(du.iter_mut()).zip(g.iter().zip(u)).zip(dy)
                            {
                                let s = sigmoid(g);
                                *du = d * g * s;
                                *dg = d * u * s * (1.0 + g * (1.0 - s));
                            }
                        },
                    )
                })
        })?;
        let shape = gate.shape().clone();
        let device = gate.device();
        Ok((Some(Tensor::from_vec(dg, shape.clone(), device)?), Some(Tensor::from_vec(du, shape, device)?)))
    }
}
