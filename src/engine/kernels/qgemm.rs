//! Many-row products with a GGML-quantized weight (a prompt's prefill, an evaluation window):
//! blocks of the weight's rows dequantized to f32 and multiplied with the `gemm` crate, one block
//! of output columns per task.
//!
//! candle's CPU path quantizes the activations to 8 bits and runs one block dot product per
//! (row, column) pair, rows one after another: right for a single decoded token, but a 512-token
//! prefill of SmolLM2-135M in q4_0 ran at a seventh of the f32 model's speed. Dequantizing costs
//! one pass over the weight per call, against `rows` passes of arithmetic. The activations stay in
//! f32 here (weight-only quantization, as Hugging Face evaluates GPTQ/AWQ models), where
//! llama.cpp's dot products and candle's one-row path round them to 8 bits.

use super::cpu::{gemm, Shared};
use crate::engine::Result;
use candle_core::quantized::k_quants::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8K, BlockQ8_0,
};
use candle_core::quantized::{GgmlDType, GgmlType, QTensor};
use candle_core::{DType, Tensor};
use rayon::prelude::*;

/// From this many rows of `x` on, [`matmul`] is faster than candle's per-row dot products.
pub const MIN_ROWS: usize = 8;
/// Weight rows dequantized per task.
const ROWS: usize = 64;

/// Dequantizes whole rows of raw blocks (`bytes`, a multiple of a row's bytes) into `out`.
type Rows = fn(&[u8], &mut [f32]);

fn rows_of<T: GgmlType>(bytes: &[u8], out: &mut [f32]) {
    let n = bytes.len() / std::mem::size_of::<T>();
    // SAFETY: the bytes are a QTensor's CPU storage of `T` blocks (the caller matched the dtype),
    // which candle allocates as a `Vec<T>`, so they are aligned for `T`; `n` whole blocks.
    let blocks = unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const T, n) };
    T::to_float(blocks, out);
}

/// The dequantizer of a block type, and its block's values and bytes.
fn dequantizer(dtype: GgmlDType) -> Option<(Rows, usize, usize)> {
    fn of<T: GgmlType>() -> Option<(Rows, usize, usize)> {
        Some((rows_of::<T> as Rows, T::BLCK_SIZE, std::mem::size_of::<T>()))
    }
    match dtype {
        GgmlDType::Q4_0 => of::<BlockQ4_0>(),
        GgmlDType::Q4_1 => of::<BlockQ4_1>(),
        GgmlDType::Q5_0 => of::<BlockQ5_0>(),
        GgmlDType::Q5_1 => of::<BlockQ5_1>(),
        GgmlDType::Q8_0 => of::<BlockQ8_0>(),
        GgmlDType::Q2K => of::<BlockQ2K>(),
        GgmlDType::Q3K => of::<BlockQ3K>(),
        GgmlDType::Q4K => of::<BlockQ4K>(),
        GgmlDType::Q5K => of::<BlockQ5K>(),
        GgmlDType::Q6K => of::<BlockQ6K>(),
        GgmlDType::Q8K => of::<BlockQ8K>(),
        GgmlDType::F16 => of::<half::f16>(),
        GgmlDType::BF16 => of::<half::bf16>(),
        _ => None,
    }
}

/// Whether a matrix stored in `dtype` can stay in that format in a network: the rows of a
/// product dequantize here, a one-token product runs on candle's block dot products, an
/// embedding lookup dequantizes its rows here. Otherwise why not (the caller dequantizes it).
pub fn multiplies(dtype: GgmlDType) -> std::result::Result<(), String> {
    match dtype {
        GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => {
            Err("a float matrix; candle multiplies it only as a dense tensor".into())
        }
        d if dequantizer(d).is_some() => Ok(()),
        d => Err(format!("no dequantizing kernel for {d:?} blocks in this build")),
    }
}

/// Rows `ids` of a quantized `[rows, cols]` table, dequantized to f32 `[ids.len(), cols]` (a token
/// embedding lookup without an f32 copy of the table).
pub fn dequantize_rows(w: &QTensor, ids: &[u32]) -> Result<Tensor> {
    let (rows, cols) = w.shape().dims2()?;
    let (dequantize, values, bytes) = dequantizer(w.dtype())
        .ok_or_else(|| crate::engine::Error::Invalid(format!("cannot look up rows of a {:?} table", w.dtype())))?;
    let row_bytes = cols / values * bytes;
    let data = w.data()?;
    let mut out = vec![0f32; ids.len() * cols];
    for (dst, &id) in out.chunks_exact_mut(cols).zip(ids) {
        let id = id as usize;
        if id >= rows {
            return Err(crate::engine::Error::Invalid(format!("token id {id} is past the table's {rows} rows")));
        }
        dequantize(&data[id * row_bytes..(id + 1) * row_bytes], dst);
    }
    Ok(Tensor::from_vec(out, (ids.len(), cols), &w.device())?)
}

/// False when candle's block dot products reject a row of `w`: its Q4_1, Q5_0 and Q5_1 kernels
/// take an even number of blocks per row only (they assert, which would panic on a 32-wide row).
pub fn candle_multiplies(w: &QTensor) -> bool {
    let k = w.shape().dims().last().copied().unwrap_or(0);
    !matches!(w.dtype(), GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1) || (k / 32) % 2 == 0
}

/// True when [`matmul`] takes `x` `[rows, in]` against `w` `[out, in]`: f32 on the CPU, at least
/// [`MIN_ROWS`] rows (any number when candle's own path cannot take `w`), nothing differentiating
/// through `x`, a block type it dequantizes.
pub fn applies(x: &Tensor, w: &QTensor) -> bool {
    let (Ok((m, k)), Ok((_, k2))) = (x.dims2(), w.shape().dims2()) else { return false };
    super::enabled()
        && (m >= MIN_ROWS || (m >= 1 && !candle_multiplies(w)))
        && k == k2
        && !x.track_op()
        && x.device().is_cpu()
        && w.device().is_cpu()
        && x.dtype() == DType::F32
        && dequantizer(w.dtype()).is_some_and(|(_, values, _)| k % values == 0)
}

/// `x · Wᵀ` for `x` `[m, k]` and a quantized `W` `[n, k]`; see [`applies`].
pub fn matmul(x: &Tensor, w: &QTensor) -> Result<Tensor> {
    if !applies(x, w) {
        return Err(crate::engine::Error::Invalid(format!(
            "the dequantizing product takes f32 CPU x [≥ {MIN_ROWS}, in] and a GGML weight [out, in]; got x {:?} and a {:?} weight {:?}",
            x.dims(),
            w.dtype(),
            w.shape().dims()
        )));
    }
    let ((m, k), (n, _)) = (x.dims2()?, w.shape().dims2()?);
    let (rows, values, bytes) = dequantizer(w.dtype()).expect("checked by applies");
    let row_bytes = k / values * bytes;
    let data = w.data()?;
    let x = x.contiguous()?;
    let xs = x.flatten_all()?.to_vec1::<f32>()?;
    let mut dst = vec![0f32; m * n];
    let out = Shared(dst.as_mut_ptr());
    (0..n.div_ceil(ROWS)).into_par_iter().for_each(|block| {
        let out = out;
        let first = block * ROWS;
        let count = ROWS.min(n - first);
        let mut wf = vec![0f32; count * k];
        rows(&data[first * row_bytes..(first + count) * row_bytes], &mut wf);
        // SAFETY: columns first..first + count of dst (m × n, row-major) belong to this task;
        // x is m × k and wf count × k, both row-major (Wᵀ read through wf's strides).
        unsafe { gemm((m, count, k), out.0.add(first), n, false, xs.as_ptr(), (k, 1), wf.as_ptr(), (1, k)) };
    });
    Ok(Tensor::from_vec(dst, (m, n), x.device())?)
}
