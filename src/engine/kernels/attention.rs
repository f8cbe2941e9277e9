//! Causal multi-head attention with grouped key/value heads as one op, for f32 on the CPU, with a
//! backward that recomputes the probabilities (as FlashAttention and PyTorch's SDPA do).
//!
//! Composed from candle ops, attention copies the key/value heads out to every query head, makes
//! `q`, `kᵀ` and `v` contiguous in `[b, heads, t, d]`, runs two batched products (one small GEMM
//! per head and sequence, each handed to the thread pool on its own), builds the full `t × t`
//! scores although half are masked, and transposes the result back; its backward adds as many
//! passes again. Here each (sequence, head) is one task on the thread pool, which reads `q`, `k`
//! and `v` in place in the `[b, t, heads, d]` layout the projections produce, computes only the
//! causal part of the scores (blocks of `BLOCK` (64) query rows against the keys they may see), and
//! writes its output rows straight into `[b, t, heads, d]`.
//!
//! Backward, per (sequence, key/value head) so that tasks own disjoint gradient rows, for each
//! query head `h` of the group: recompute `P = softmax(scale · Q Kᵀ + causal mask)`, then
//! `dV += Pᵀ dO`, `dP = dO Vᵀ`, `dS = scale · P ⊙ (dP − rowsum(P ⊙ dP))`, `dQ = dS K`,
//! `dK += dSᵀ Q`. The products run on the `gemm` crate (the one candle uses), single-threaded
//! inside a task.

use super::cpu::{f32_data, gemm, with_f32_tensors, Bwd3, Fwd, Shared};
use super::vmath;
use crate::engine::Result;
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Tensor};
use rayon::prelude::*;

/// Query rows per block of the causal score matrix.
const BLOCK: usize = 64;

/// True when [`causal_attention`] takes this query tensor: f32, rank 4, on the CPU.
pub fn applies(q: &Tensor) -> bool {
    super::enabled() && q.device().is_cpu() && q.dtype() == DType::F32 && q.rank() == 4
}

/// `softmax(scale · q kᵀ + causal mask) v` per head: `q` `[b, t, heads, d]`, `k` and `v`
/// `[b, t, kv_heads, d]` (`heads` a multiple of `kv_heads`; query head `h` reads key/value head
/// `h / (heads / kv_heads)`). Returns `[b, t, heads, d]`; differentiable in `q`, `k` and `v`.
pub fn causal_attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    let (b, t, heads, d) = q.dims4()?;
    let kv = k.dim(2).unwrap_or(0);
    let ok = applies(q)
        && k.dtype() == DType::F32
        && v.dtype() == DType::F32
        && k.dims() == [b, t, kv, d]
        && v.dims() == k.dims()
        && kv > 0
        && heads % kv == 0;
    if !ok {
        let takes = "fused attention takes f32 CPU q [b, t, heads, d] and k, v [b, t, kv_heads, d] with kv_heads \
                     dividing heads";
        return Err(super::refused(takes, &[q, k, v]));
    }
    Ok(q.contiguous()?.apply_op3(&k.contiguous()?, &v.contiguous()?, CausalAttention { scale: scale as f32 })?)
}

struct CausalAttention {
    scale: f32,
}

/// Sizes of one call: `b` sequences of `t` positions, `heads` query heads of width `d` sharing
/// `kv` key/value heads.
#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    t: usize,
    heads: usize,
    kv: usize,
    d: usize,
}

impl Dims {
    fn of(q: &Layout, k: &Layout) -> candle_core::Result<Self> {
        let (&[b, t, heads, d], &[_, _, kv, _]) = (q.dims(), k.dims()) else {
            candle_core::bail!("fused attention: 4-D operands expected")
        };
        Ok(Self { b, t, heads, kv, d })
    }

    /// Row stride of q (and dq, out) and of k/v (and dk, dv).
    fn strides(&self) -> (usize, usize) {
        (self.heads * self.d, self.kv * self.d)
    }

    /// Offsets of head `h`'s first row in sequence `s` of q, and of its key/value head in k/v.
    fn offsets(&self, s: usize, h: usize) -> (usize, usize) {
        let (qs, ks) = self.strides();
        (s * self.t * qs + h * self.d, s * self.t * ks + (h / (self.heads / self.kv)) * self.d)
    }
}

/// `P = softmax(scale · Q Kᵀ + causal mask)` of one head into `p` (`t × t`, row-major; zero above
/// the diagonal), block by block: rows `r0..r0 + rows` only against keys `0..r0 + rows`.
///
/// SAFETY: `q` and `k` address `t` rows of `d` floats at row strides `qs` and `ks`.
unsafe fn probabilities(q: *const f32, qs: usize, k: *const f32, ks: usize, dims: Dims, scale: f32, p: &mut [f32]) {
    let (t, d) = (dims.t, dims.d);
    for r0 in (0..t).step_by(BLOCK) {
        let rows = BLOCK.min(t - r0);
        let cols = r0 + rows;
        gemm((rows, cols, d), p.as_mut_ptr().add(r0 * t), t, false, q.add(r0 * qs), (qs, 1), k, (1, ks));
        vmath::with_wide_simd(
            #[inline(always)]
            || {
                for i in r0..r0 + rows {
                    let row = &mut p[i * t..(i + 1) * t];
                    let (seen, unseen) = row.split_at_mut(i + 1);
                    let max = vmath::max(seen) * scale;
                    for x in seen.iter_mut() {
                        *x = vmath::exp(*x * scale - max);
                    }
                    let inv = 1.0 / vmath::sum_map(seen, |x| x) as f32;
                    for x in seen.iter_mut() {
                        *x *= inv;
                    }
                    unseen.fill(0.0);
                }
            },
        )
    }
}

/// `dS = scale · P ⊙ (dP − rowsum(P ⊙ dP))` in place of `dP` (in `ds`) for the given rows of the
/// `t × t` matrices, zero above the diagonal.
fn softmax_backward_rows(p: &[f32], ds: &mut [f32], t: usize, rows: std::ops::Range<usize>, scale: f32) {
    vmath::with_wide_simd(
        #[inline(always)]
        || {
            for i in rows {
                let (pr, dr) = (&p[i * t..i * t + i + 1], &mut ds[i * t..(i + 1) * t]);
                let dot = vmath::sum_map2(pr, &dr[..i + 1], |a, b| a * b) as f32;
                for (x, &pij) in dr[..i + 1].iter_mut().zip(pr) {
                    *x = scale * pij * (*x - dot);
                }
                dr[i + 1..].fill(0.0);
            }
        },
    )
}

impl CustomOp3 for CausalAttention {
    fn name(&self) -> &'static str {
        "causal-attention"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Fwd {
        let dims = Dims::of(l1, l2)?;
        let data = |s, l| f32_data(s, l, "fused attention");
        let (q, k, v) = (data(s1, l1)?, data(s2, l2)?, data(s3, l3)?);
        let (qs, ks) = dims.strides();
        let (t, d) = (dims.t, dims.d);
        // Not zero-filled: every head writes all its output rows (below) without reading them.
        let mut out = Vec::<f32>::with_capacity(q.len());
        let dst = Shared(out.as_mut_ptr());
        let scale = self.scale;
        (0..dims.b * dims.heads).into_par_iter().for_each_init(
            || vec![0f32; t * t],
            |p, task| {
                let (s, h) = (task / dims.heads, task % dims.heads);
                let (qo, ko) = dims.offsets(s, h);
                let dst = dst;
                // SAFETY: q/k/v rows of this head lie at the offsets and strides of `dims`; the
                // task writes only this head's output rows.
                unsafe {
                    probabilities(q.as_ptr().add(qo), qs, k.as_ptr().add(ko), ks, dims, scale, p);
                    for r0 in (0..t).step_by(BLOCK) {
                        let rows = BLOCK.min(t - r0);
                        gemm(
                            (rows, d, r0 + rows),
                            dst.0.add(qo + r0 * qs),
                            qs,
                            false,
                            p.as_ptr().add(r0 * t),
                            (t, 1),
                            v.as_ptr().add(ko),
                            (ks, 1),
                        );
                    }
                }
            },
        );
        // SAFETY: the tasks wrote every (position, head) row of `out`.
        unsafe { out.set_len(q.len()) };
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(&self, q: &Tensor, k: &Tensor, v: &Tensor, _res: &Tensor, grad: &Tensor) -> Bwd3 {
        let grad = grad.contiguous()?;
        if grad.dims() != q.dims() {
            candle_core::bail!("fused attention backward: gradient {:?} for output {:?}", grad.dims(), q.dims())
        }
        let dims = Dims::of(q.layout(), k.layout())?;
        let (mut dq, mut dk, mut dv) =
            (vec![0f32; q.elem_count()], vec![0f32; k.elem_count()], vec![0f32; v.elem_count()]);
        let grads = Grads { dq: Shared(dq.as_mut_ptr()), dk: Shared(dk.as_mut_ptr()), dv: Shared(dv.as_mut_ptr()) };
        let t = dims.t;
        with_f32_tensors([q, k, v, &grad], "fused attention", |inputs| {
            (0..dims.b * dims.kv).into_par_iter().for_each_init(
                || (vec![0f32; t * t], vec![0f32; t * t]),
                |(p, ds), task| {
                    let (s, g) = (task / dims.kv, task % dims.kv);
                    // SAFETY: the slices hold the contiguous [b, t, heads|kv_heads, d] tensors of
                    // `dims`, and the gradient buffers are as large; each (sequence, key/value head)
                    // task writes only its own rows of them.
                    unsafe { backward_group(inputs, grads, dims, s, g, self.scale, p, ds) }
                },
            )
        })?;
        let dev = q.device();
        Ok((
            Some(Tensor::from_vec(dq, q.shape().clone(), dev)?),
            Some(Tensor::from_vec(dk, k.shape().clone(), dev)?),
            Some(Tensor::from_vec(dv, v.shape().clone(), dev)?),
        ))
    }
}

/// Where the backward writes `∂L/∂q`, `∂L/∂k` and `∂L/∂v`.
#[derive(Clone, Copy)]
struct Grads {
    dq: Shared,
    dk: Shared,
    dv: Shared,
}

/// The backward of sequence `s` and key/value head `g`: for each query head of the group,
/// recompute `P`, then `dP = dO Vᵀ`, `dS`, `dQ = dS K` (written), `dK += dSᵀ Q` and `dV += Pᵀ dO`.
/// `p` and `ds` are `t × t` scratch buffers.
///
/// SAFETY: `[q, k, v, dout]` and the buffers of `out` hold the tensors of `dims`; no other task
/// writes the rows of key/value head `g` or of its query heads in sequence `s`.
#[allow(clippy::too_many_arguments)]
unsafe fn backward_group(
    [q, k, v, dout]: [&[f32]; 4],
    out: Grads,
    dims: Dims,
    s: usize,
    g: usize,
    scale: f32,
    p: &mut [f32],
    ds: &mut [f32],
) {
    let (qs, ks) = dims.strides();
    let (t, d) = (dims.t, dims.d);
    let group = dims.heads / dims.kv;
    for h in g * group..(g + 1) * group {
        let (qo, ko) = dims.offsets(s, h);
        let (qh, kg, vg, doh) = (q.as_ptr().add(qo), k.as_ptr().add(ko), v.as_ptr().add(ko), dout.as_ptr().add(qo));
        probabilities(qh, qs, kg, ks, dims, scale, p);
        for r0 in (0..t).step_by(BLOCK) {
            let rows = BLOCK.min(t - r0);
            let cols = r0 + rows;
            // dP = dO Vᵀ over the causal block, then dS in its place, then dQ = dS K.
            gemm((rows, cols, d), ds.as_mut_ptr().add(r0 * t), t, false, doh.add(r0 * qs), (qs, 1), vg, (1, ks));
            softmax_backward_rows(p, ds, t, r0..r0 + rows, scale);
            gemm((rows, d, cols), out.dq.0.add(qo + r0 * qs), qs, false, ds.as_ptr().add(r0 * t), (t, 1), kg, (ks, 1));
        }
        // dK += dSᵀ Q and dV += Pᵀ dO: key rows j0.. are seen by query rows j0..t.
        for j0 in (0..t).step_by(BLOCK) {
            let rows = BLOCK.min(t - j0);
            let (m, kk) = ((rows, d, t - j0), j0 * t + j0);
            gemm(m, out.dk.0.add(ko + j0 * ks), ks, true, ds.as_ptr().add(kk), (1, t), qh.add(j0 * qs), (qs, 1));
            gemm(m, out.dv.0.add(ko + j0 * ks), ks, true, p.as_ptr().add(kk), (1, t), doh.add(j0 * qs), (qs, 1));
        }
    }
}
