//! A dense layer's product `y = x · Wᵀ` (`x` `[n, in]`, `W` `[out, in]`) as one op with its own
//! backward, for f32 on the CPU.
//!
//! Through candle the same layer is a transpose node on `W` and a matmul node, and candle's
//! autograd accumulates a gradient for each node by allocating a zero tensor and adding into it:
//! every layer's weight gradient was written, zero-filled and added twice more. Here one node
//! returns `∂L/∂x = g · W` and `∂L/∂W = gᵀ · x` directly, both from the `gemm` crate (the GEMM
//! candle uses, with the same threads).

use super::cpu::{f32_data, gemm_threads, with_f32_tensors, Bwd2, Fwd};
use crate::engine::Result;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};

/// True when [`linear`] takes these operands: 2-D f32 tensors on the CPU that chain.
pub fn applies(x: &Tensor, w: &Tensor) -> bool {
    super::enabled()
        && x.device().is_cpu()
        && w.device().is_cpu()
        && x.dtype() == DType::F32
        && w.dtype() == DType::F32
        && x.rank() == 2
        && w.rank() == 2
        && x.dims()[1] == w.dims()[1]
}

/// `x · Wᵀ`, differentiable in both.
pub fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if !applies(x, w) {
        return Err(super::refused("fused linear takes f32 CPU x [n, in] and W [out, in]", &[x, w]));
    }
    Ok(x.contiguous()?.apply_op2(&w.contiguous()?, Linear)?)
}

struct Linear;

/// `lhs · rhs` (`m × k` times `k × n`, each given by its row and column strides) into a new
/// row-major `m × n` buffer, on candle's threads.
///
/// SAFETY: the slices must hold every element their strides address.
unsafe fn product(
    (m, n, k): (usize, usize, usize),
    lhs: &[f32],
    lhs_strides: (usize, usize),
    rhs: &[f32],
    rhs_strides: (usize, usize),
) -> Vec<f32> {
    // Not zero-filled: the product overwrites every element without reading it.
    let mut dst = Vec::<f32>::with_capacity(m * n);
    gemm_threads((m, n, k), dst.as_mut_ptr(), n, false, lhs.as_ptr(), lhs_strides, rhs.as_ptr(), rhs_strides);
    // SAFETY: the m × n elements were written above.
    dst.set_len(m * n);
    dst
}

/// `a · b` for 2-D f32 CPU tensors, without a gradient (the products of hand-written backward
/// passes); `None` for other tensors.
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Option<Tensor>> {
    let (Ok((m, k)), Ok((k2, n))) = (a.dims2(), b.dims2()) else { return Ok(None) };
    let strides = |t: &Tensor| (t.stride()[0], t.stride()[1]);
    let ok = k == k2 && [a, b].iter().all(|t| t.device().is_cpu() && t.dtype() == DType::F32);
    if !ok {
        return Ok(None);
    }
    let (sa, sb) = (strides(a), strides(b));
    let y = with_strided_f32(a, |ad| {
        with_strided_f32(b, |bd| {
            // SAFETY: each slice starts at its tensor's first element and holds every element its
            // strides address (checked by `with_strided_f32`).
            unsafe { product((m, n, k), ad, sa, bd, sb) }
        })
    });
    match y {
        Some(Some(y)) => Ok(Some(Tensor::from_vec(y, (m, n), a.device())?)),
        _ => Ok(None),
    }
}

/// Runs `f` on an f32 CPU tensor's data from its first element, when the storage holds every
/// element its (non-negative) strides address.
fn with_strided_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(CpuStorage::F32(data)) = &*storage else { return None };
    let start = layout.start_offset();
    let span = 1 + layout.dims().iter().zip(layout.stride()).map(|(&d, &s)| d.saturating_sub(1) * s).sum::<usize>();
    (start + span <= data.len()).then(|| f(&data[start..start + span]))
}

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Fwd {
        let (x, w) = (f32_data(s1, l1, "fused linear")?, f32_data(s2, l2, "fused linear")?);
        let (&[n, k], &[out, k2]) = (l1.dims(), l2.dims()) else { candle_core::bail!("fused linear: 2-D operands") };
        if k != k2 {
            candle_core::bail!("fused linear: x [{n}, {k}] and W [{out}, {k2}] do not chain")
        }
        // SAFETY: x is [n, k] row-major, Wᵀ is read through W's [out, k] row-major strides.
        let y = unsafe { product((n, out, k), x, (k, 1), w, (1, k)) };
        Ok((CpuStorage::F32(y), Shape::from((n, out))))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, grad: &Tensor) -> Bwd2 {
        let g = grad.contiguous()?;
        let ((n, k), out) = (x.dims2()?, w.dim(0)?);
        if g.dims() != [n, out] {
            candle_core::bail!("fused linear backward: gradient {:?} for output [{n}, {out}]", g.dims())
        }
        let (dx, dw) = with_f32_tensors([x, w, &g], "fused linear", |[x, w, g]| {
            // SAFETY: g is [n, out], W [out, k] and x [n, k], all row-major; gᵀ is read through
            // g's strides.
            unsafe { (product((n, k, out), g, (out, 1), w, (k, 1)), product((out, k, n), g, (1, out), x, (k, 1))) }
        })?;
        Ok((Some(Tensor::from_vec(dx, (n, k), x.device())?), Some(Tensor::from_vec(dw, (out, k), w.device())?)))
    }
}
