//! IQ4_NL: llama.cpp's non-linear 4-bit blocks (GGML type 20), the fallback llama.cpp gives rows
//! that Q2_K and Q3_K cannot take (widths not a multiple of 256).
//!
//! A block is 32 weights in 18 bytes, like Q4_0: an f16 scale `d` and 16 bytes of 4-bit indices
//! (byte `j` holds weight `j` in its low nibble and weight `j + 16` in its high one). Weight `i` is
//! `d · K[index_i]` with the fixed non-uniform grid `K` below — denser near zero, where most weights
//! are — instead of Q4_0's evenly spaced `d · (q − 8)`. candle has no such type, so these tensors
//! are held as their bytes, evaluated through their dequantized values, and written to and read
//! from GGUF by this project (`gguf_export`, `engine::gguf`) under type id 20.
//!
//! The quantizer is llama.cpp's (`quantize_row_iq4_nl_impl` with `ntry = 7`, what
//! `llama-quantize` runs) step for step in f32, so that the bytes are the ones llama.cpp writes: the
//! block's largest-magnitude weight sets a first scale; 15 candidate scales around it are tried,
//! each refitted by weighted least squares over the indices it picks; the best is stored as f16 and
//! the indices are picked once more against it. Weights are `x²` without an importance matrix and
//! `importance · sqrt(σ² + x²)` with one (σ² twice the block's mean square).

use crate::engine::{Error, Result};
use half::f16;
use rayon::prelude::*;

/// The 16 grid values (llama.cpp's `kvalues_iq4nl`).
pub const KVALUES: [i8; 16] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];
/// Weights per block.
pub const BLOCK: usize = 32;
/// Bytes per block: the f16 scale and 16 bytes of indices.
pub const BLOCK_BYTES: usize = 18;
/// GGML's type id of IQ4_NL in GGUF files.
pub const GGML_TYPE_ID: u32 = 20;
/// GGML's type id of Q4_0 (the same block size and bytes), what candle's reader is shown.
pub const GGML_Q4_0_ID: u32 = 2;
/// llama.cpp's `GROUP_MAX_EPS`: a block whose largest magnitude is below it is stored as zeros.
const GROUP_MAX_EPS: f32 = 1e-15;
/// Candidate scales on each side of the first (`ntry`).
const NTRY: i32 = 7;

/// A `[rows, cols]` matrix in IQ4_NL blocks, row-major, `cols` a multiple of [`BLOCK`].
#[derive(Clone, Debug, PartialEq)]
pub struct Iq4NlTensor {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<u8>,
}

impl Iq4NlTensor {
    /// Quantizes `values` (`[rows, cols]`), with per-column `importance` when given.
    pub fn quantize(values: &[f32], rows: usize, cols: usize, importance: Option<&[f32]>) -> Result<Self> {
        check_shape(rows, cols)?;
        if values.len() != rows * cols {
            return Err(Error::Invalid(format!("IQ4_NL: {} values for a {rows} x {cols} matrix", values.len())));
        }
        if let Some(imp) = importance.filter(|imp| imp.len() != cols) {
            return Err(Error::Invalid(format!("IQ4_NL: {} importance values for {cols} columns", imp.len())));
        }
        let row_bytes = cols / BLOCK * BLOCK_BYTES;
        let mut data = vec![0u8; rows * row_bytes];
        data.par_chunks_mut(row_bytes).zip(values.par_chunks(cols)).for_each(|(out, row)| {
            for (b, (x, o)) in row.chunks_exact(BLOCK).zip(out.chunks_exact_mut(BLOCK_BYTES)).enumerate() {
                let qw = importance.map(|imp| &imp[b * BLOCK..(b + 1) * BLOCK]);
                quantize_block(x, qw, o);
            }
        });
        Ok(Self { rows, cols, data })
    }

    /// Blocks read from a file: `data` must be exactly `rows × cols / 32` blocks.
    pub fn from_bytes(data: Vec<u8>, rows: usize, cols: usize) -> Result<Self> {
        check_shape(rows, cols)?;
        let want = rows * cols / BLOCK * BLOCK_BYTES;
        if data.len() != want {
            return Err(Error::Invalid(format!(
                "IQ4_NL: {} bytes for a {rows} x {cols} matrix, which takes {want}",
                data.len()
            )));
        }
        Ok(Self { rows, cols, data })
    }

    pub fn storage_bytes(&self) -> u64 {
        self.data.len() as u64
    }

    /// The same matrix in Q8_0 blocks, exactly: an IQ4_NL value is `d·kvalues[c]` with an f16 `d`
    /// per 32 weights and `kvalues` int8, which is a Q8_0 block with the same `d` and codes
    /// `kvalues[c]`. candle multiplies Q8_0 in its quantized kernels (it has no IQ4_NL type), so
    /// a model in IQ4_NL runs at 8.5 bits per weight instead of being expanded to f32.
    pub fn to_q8_0(&self) -> Result<candle_core::quantized::QTensor> {
        const Q8_0_BLOCK_BYTES: usize = 34;
        let mut raw = vec![0u8; self.data.len() / BLOCK_BYTES * Q8_0_BLOCK_BYTES];
        raw.par_chunks_mut(Q8_0_BLOCK_BYTES).zip(self.data.par_chunks(BLOCK_BYTES)).for_each(|(o, b)| {
            o[..2].copy_from_slice(&b[..2]);
            for j in 0..BLOCK / 2 {
                let q = b[2 + j];
                o[2 + j] = KVALUES[(q & 0xf) as usize] as u8;
                o[2 + j + BLOCK / 2] = KVALUES[(q >> 4) as usize] as u8;
            }
        });
        Ok(candle_core::quantized::ggml_file::qtensor_from_ggml(
            candle_core::quantized::GgmlDType::Q8_0,
            &raw,
            vec![self.rows, self.cols],
            &candle_core::Device::Cpu,
        )?)
    }

    /// The values the blocks stand for, row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        out.par_chunks_mut(BLOCK).zip(self.data.par_chunks(BLOCK_BYTES)).for_each(|(o, b)| dequantize_block(b, o));
        out
    }
}

fn check_shape(rows: usize, cols: usize) -> Result<()> {
    if cols == 0 || !cols.is_multiple_of(BLOCK) || rows == 0 {
        return Err(Error::Invalid(format!(
            "IQ4_NL needs rows a multiple of {BLOCK} wide; this matrix is {rows} x {cols}"
        )));
    }
    Ok(())
}

/// One block's 18 bytes → 32 values.
pub fn dequantize_block(b: &[u8], out: &mut [f32]) {
    let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
    for j in 0..BLOCK / 2 {
        let q = b[2 + j];
        out[j] = d * KVALUES[(q & 0xf) as usize] as f32;
        out[j + BLOCK / 2] = d * KVALUES[(q >> 4) as usize] as f32;
    }
}

/// llama.cpp's `best_index_int8`: the grid index nearest `x` (ties to the upper one's left
/// neighbour exactly as there).
pub fn best_index(x: f32) -> usize {
    let v = &KVALUES;
    if x <= v[0] as f32 {
        return 0;
    }
    if x >= v[15] as f32 {
        return 15;
    }
    let (mut ml, mut mu) = (0usize, 15usize);
    while mu - ml > 1 {
        let mav = (ml + mu) / 2;
        if x < v[mav] as f32 {
            mu = mav;
        } else {
            ml = mav;
        }
    }
    if x - (v[mu - 1] as f32) < (v[mu] as f32) - x {
        mu - 1
    } else {
        mu
    }
}

/// One block of 32 weights into 18 bytes (llama.cpp's `quantize_row_iq4_nl_impl` for one block
/// of 32 with `ntry = 7`).
pub fn quantize_block(x: &[f32], quant_weights: Option<&[f32]>, out: &mut [u8]) {
    let mut sigma2 = 0f32;
    for &v in x {
        sigma2 += v * v;
    }
    sigma2 *= 2.0 / BLOCK as f32;
    let mut weight = [0f32; BLOCK];
    match quant_weights {
        Some(qw) => {
            for j in 0..BLOCK {
                weight[j] = qw[j] * (sigma2 + x[j] * x[j]).sqrt();
            }
        }
        None => {
            for j in 0..BLOCK {
                weight[j] = x[j] * x[j];
            }
        }
    }
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    out[..BLOCK_BYTES].fill(0);
    if amax < GROUP_MAX_EPS {
        return;
    }
    let values = &KVALUES;
    let fit = |id: f32| -> (f32, f32) {
        let (mut sumqx, mut sumq2) = (0f32, 0f32);
        for j in 0..BLOCK {
            let q = values[best_index(id * x[j])] as f32;
            let w = weight[j];
            sumqx += w * q * x[j];
            sumq2 += w * q * q;
        }
        (sumqx, sumq2)
    };
    let d0 = -max / values[0] as f32;
    let (sumqx, sumq2) = fit(1.0 / d0);
    let mut d = sumqx / sumq2;
    let mut best = d * sumqx;
    for itry in -NTRY..=NTRY {
        let id = (itry as f32 + values[0] as f32) / max;
        let (sumqx, sumq2) = fit(id);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    out[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    for j in 0..BLOCK / 2 {
        let lo = best_index(id * x[j]) as u8;
        let hi = best_index(id * x[j + BLOCK / 2]) as u8;
        out[2 + j] = lo | (hi << 4);
    }
}
