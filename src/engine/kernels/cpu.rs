//! Access to the f32 data of CPU storages and tensors, shared by the kernels' forward and backward.

use candle_core::{CpuStorage, Layout, Shape, Storage, Tensor};

/// What a custom op's `cpu_fwd` returns.
pub type Fwd = candle_core::Result<(CpuStorage, Shape)>;
/// What a two-input custom op's `bwd` returns (a gradient per input).
pub type Bwd2 = candle_core::Result<(Option<Tensor>, Option<Tensor>)>;
/// What a three-input custom op's `bwd` returns.
pub type Bwd3 = candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)>;

/// The contiguous f32 data of a CPU storage; `kernel` names the caller in the error.
pub fn f32_data<'a>(s: &'a CpuStorage, l: &Layout, kernel: &str) -> candle_core::Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(x), Some((start, end))) => Ok(&x[start..end]),
        _ => candle_core::bail!("{kernel}: contiguous f32 CPU operands expected"),
    }
}

/// Runs `f` on the contiguous f32 data of `N` CPU tensors (a backward pass's inputs).
pub fn with_f32_tensors<const N: usize, R>(
    tensors: [&Tensor; N],
    kernel: &str,
    f: impl FnOnce([&[f32]; N]) -> R,
) -> candle_core::Result<R> {
    let guards: Vec<_> = tensors.iter().map(|t| t.storage_and_layout()).collect();
    let mut slices: [&[f32]; N] = [&[]; N];
    for (slot, (storage, layout)) in slices.iter_mut().zip(&guards) {
        let Storage::Cpu(s) = &**storage else { candle_core::bail!("{kernel}: CPU tensors expected") };
        *slot = f32_data(s, layout, kernel)?;
    }
    Ok(f(slices))
}

/// `dst (+)= lhs · rhs` for an `m × k` and a `k × n` strided matrix (each given by its row and
/// column strides), on this thread; `dst` is `m × n` with row stride `dst_rs` and column stride 1.
/// `accumulate` adds to `dst`, otherwise overwrites it.
///
/// # Safety
/// Every pointer must address all its matrix's elements at the given strides, and no other thread
/// may write `dst`'s elements meanwhile.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: *const f32,
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: *const f32,
    (rhs_rs, rhs_cs): (usize, usize),
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        accumulate,
        lhs,
        lhs_cs as isize,
        lhs_rs as isize,
        rhs,
        rhs_cs as isize,
        rhs_rs as isize,
        1.0f32,
        1.0f32,
        false,
        false,
        false,
        gemm::Parallelism::None,
    )
}

/// A pointer to one buffer handed to parallel tasks that each write their own disjoint elements of
/// it (rows of a head, blocks of a product). Whoever writes through it must keep the tasks' parts
/// disjoint.
#[derive(Clone, Copy)]
pub struct Shared(pub *mut f32);
// SAFETY: the pointer is only written through by tasks that own disjoint parts of the buffer.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

/// [`gemm()`] on candle's threads: the result's columns (its rows, when there are over four times as
/// many rows: the output layer's weight gradient) are split into one range per thread (multiples
/// of 16) and each thread runs a single-threaded product on its block, packing the whole of the
/// operand that is not split. On this project's 2-core CPU that measured 5-25% faster than the
/// `gemm` crate's own threading on the linear layers' shapes (the threads never wait for each
/// other), and columns faster than rows.
///
/// # Safety
/// As for [`gemm()`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_threads(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: *const f32,
    lhs_strides: (usize, usize),
    rhs: *const f32,
    rhs_strides: (usize, usize),
) {
    // Not candle's `get_num_threads`: it reads /proc/cpuinfo on every call (a syscall-heavy few
    // percent of a decoding step, which runs some 200 products).
    let threads = rayon::current_num_threads().max(1);
    let split_rows = m > 4 * n;
    let len = if split_rows { m } else { n };
    // A product of a few microseconds (a tiny model's decoding step) stays on this thread: the
    // hand-off to the pool would cost more than it saves.
    if threads == 1 || len < 32 || m * n * k < 1 << 17 {
        return gemm((m, n, k), dst, dst_rs, accumulate, lhs, lhs_strides, rhs, rhs_strides);
    }
    let per = len.div_ceil(threads).div_ceil(16) * 16;
    let (dst, lhs, rhs) = (Shared(dst), Shared(lhs as *mut f32), Shared(rhs as *mut f32));
    rayon::scope(|s| {
        for start in (0..len).step_by(per) {
            let size = per.min(len - start);
            s.spawn(move |_| {
                let (dst, lhs, rhs) = (dst, lhs, rhs);
                // SAFETY: rows (or columns) start..start + size of dst belong to this task alone;
                // the operands' blocks lie within them at their strides.
                unsafe {
                    if split_rows {
                        gemm(
                            (size, n, k),
                            dst.0.add(start * dst_rs),
                            dst_rs,
                            accumulate,
                            lhs.0.add(start * lhs_strides.0),
                            lhs_strides,
                            rhs.0,
                            rhs_strides,
                        )
                    } else {
                        gemm(
                            (m, size, k),
                            dst.0.add(start),
                            dst_rs,
                            accumulate,
                            lhs.0,
                            lhs_strides,
                            rhs.0.add(start * rhs_strides.1),
                            rhs_strides,
                        )
                    }
                }
            });
        }
    });
}
