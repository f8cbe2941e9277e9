//! GPTQ in blocks whose parameters are fitted before the codes are chosen: the K-quants'
//! super-blocks (Q2_K … Q6_K, 256 weights a block) and IQ4_NL's non-linear blocks of 32.
//!
//! A K-quant block stores, per sub-block of 16 or 32 weights, a scale and (Q2_K, Q4_K, Q5_K) a
//! minimum, themselves quantized against the block's f16 `d`/`dmin`; each weight is a small code
//! `c` and stands for `a·c + z` with its sub-block's `a` (scale) and `z` (offset: `−min`, or
//! `−4·scale` for Q3_K and `−32·scale` for Q6_K). An IQ4_NL block is one f16 `d` and 4-bit indices
//! into llama.cpp's 16-value grid: a weight stands for `d·kvalues[c]`. GPTQ keeps that structure:
//! the blocks' parameters are fitted first — by the same importance-weighted search as
//! `FORMAT+imatrix` (candle's port of llama.cpp's `make_qkx3_quants` & co.; our port of
//! `quantize_row_iq4_nl_impl`), with `H`'s diagonal as the importance: on the original weights
//! with act-order ("static groups"), on the error-updated weights when a block starts without —
//! and then every code is chosen column by column with GPTQ's error feedback
//! ([`super::gptq::error_feedback`]), instead of the fit's own codes.
//!
//! The K-quants' `a` and `z` are read from the fitted bytes through candle's own dequantization
//! (all codes 0 gives `z`, all codes 1 gives `a + z`), so the scale packing of every type is
//! candle's; only the placement of the codes ([`set_code`], llama.cpp's `block_q*_K` layouts) is
//! ours, and a test checks it against candle's dequantization.

use super::gptq::{error_feedback, Prepared};
use super::iq4nl::{self, Iq4NlTensor, KVALUES};
use crate::engine::{Error, Result};
use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rayon::prelude::*;

/// Weights per K-quant super-block.
pub const QK_K: usize = 256;

/// The largest code of a K-quant (codes run from 0), or `None` for the other types.
pub fn max_code(d: GgmlDType) -> Option<u8> {
    Some(match d {
        GgmlDType::Q2K => 3,
        GgmlDType::Q3K => 7,
        GgmlDType::Q4K => 15,
        GgmlDType::Q5K => 31,
        GgmlDType::Q6K => 63,
        _ => return None,
    })
}

/// Writes code `c` of weight `e` (0..256) into one block of `d` (llama.cpp's `block_q2_K` …
/// `block_q6_K`, the order their `dequantize_row_q*_K` reads):
/// Q2_K `scales[16] qs[64] d dmin`, 2-bit codes; Q3_K `hmask[32] qs[64] scales[12] d`, stored
/// `c − 4` with the high bit in `hmask`; Q4_K `d dmin scales[12] qs[128]`; Q5_K
/// `d dmin scales[12] qh[32] qs[128]`; Q6_K `ql[128] qh[64] scales[16] d`, stored `c − 32`.
pub fn set_code(d: GgmlDType, block: &mut [u8], e: usize, c: u8) {
    fn put(byte: &mut u8, shift: usize, bits: u8, v: u8) {
        let mask = ((1u16 << bits) - 1) as u8;
        *byte = (*byte & !(mask << shift)) | ((v & mask) << shift);
    }
    match d {
        GgmlDType::Q2K | GgmlDType::Q3K => {
            // 128-weight halves; in each, four 32-weight rows of 2-bit fields at shifts 0, 2, 4, 6,
            // the first 16 from bytes 0..16 and the next 16 from bytes 16..32 of the half's 32.
            let (n, r) = (e / 128, e % 128);
            let (j, l) = (r / 32, r % 32);
            let qs = if d == GgmlDType::Q2K { 16 } else { 32 };
            put(&mut block[qs + n * 32 + l], 2 * j, 2, c);
            if d == GgmlDType::Q3K {
                // hmask byte `l` (not advanced per half), bit `4n + j`: set means "no −4".
                put(&mut block[l], 4 * n + j, 1, c >> 2);
            }
        }
        GgmlDType::Q4K | GgmlDType::Q5K => {
            // 64-weight chunks: the first 32 in the low nibbles of the chunk's 32 bytes, the next
            // 32 in the high ones; Q5_K's fifth bit in qh[l], bit `2k + high`.
            let (k, r) = (e / 64, e % 64);
            let (hi, l) = (r / 32, r % 32);
            let qs = if d == GgmlDType::Q4K { 16 } else { 48 };
            put(&mut block[qs + k * 32 + l], 4 * hi, 4, c);
            if d == GgmlDType::Q5K {
                put(&mut block[16 + l], 2 * k + hi, 1, c >> 4);
            }
        }
        GgmlDType::Q6K => {
            // 128-weight halves of 4 quarters: quarter t's low nibble in ql[64n + 32(t&1) + l]
            // (low for t < 2, high otherwise), its top 2 bits in qh[32n + l] at shift 2t.
            let (n, r) = (e / 128, e % 128);
            let (t, l) = (r / 32, r % 32);
            put(&mut block[n * 64 + (t & 1) * 32 + l], 4 * (t >> 1), 4, c);
            put(&mut block[128 + n * 32 + l], 2 * t, 2, c >> 4);
        }
        other => unreachable!("{other:?} is not a K-quant"),
    }
}

/// Per weight of `blocks` (whole blocks of `d`), the `(a, z)` of `value = a·code + z`, read
/// through candle's dequantization.
pub fn affine(d: GgmlDType, blocks: &[u8]) -> Result<(Vec<f32>, Vec<f32>)> {
    let ts = d.type_size();
    let n = blocks.len() / ts * QK_K;
    let with_codes = |c: u8| -> Result<Vec<f32>> {
        let mut b = blocks.to_vec();
        for block in b.chunks_exact_mut(ts) {
            for e in 0..QK_K {
                set_code(d, block, e, c);
            }
        }
        let q = qtensor_from_ggml(d, &b, vec![n], &Device::Cpu)?;
        Ok(q.dequantize(&Device::Cpu)?.to_vec1()?)
    };
    let z = with_codes(0)?;
    let one = with_codes(1)?;
    Ok((one.iter().zip(&z).map(|(o, z)| o - z).collect(), z))
}

/// The block formats GPTQ rounds in with fitted parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blocks {
    /// A K-quant (Q2_K … Q6_K).
    KQuant(GgmlDType),
    /// IQ4_NL ([`super::iq4nl`]).
    Iq4Nl,
}

impl Blocks {
    /// Weights per block.
    pub fn block_len(self) -> usize {
        match self {
            Self::KQuant(_) => QK_K,
            Self::Iq4Nl => iq4nl::BLOCK,
        }
    }

    fn bytes(self) -> usize {
        match self {
            Self::KQuant(d) => d.type_size(),
            Self::Iq4Nl => iq4nl::BLOCK_BYTES,
        }
    }

    fn name(self) -> String {
        match self {
            Self::KQuant(d) => format!("{d:?}"),
            Self::Iq4Nl => "IQ4_NL".into(),
        }
    }

    /// Whole rows of `cols` fitted with per-column `importance`: the blocks' bytes.
    fn fit(self, values: &[f32], cols: usize, importance: &[f32]) -> Result<Vec<u8>> {
        let rows = values.len() / cols;
        Ok(match self {
            Self::KQuant(d) => {
                let t = Tensor::from_slice(values, (rows, cols), &Device::Cpu)?;
                QTensor::quantize_imatrix(&t, importance, d)?.data()?.into_owned()
            }
            Self::Iq4Nl => Iq4NlTensor::quantize(values, rows, cols, Some(importance))?.data,
        })
    }

    /// Per weight of `blocks`, the `(a, z)` of `value = a·level(code) + z`.
    fn affine(self, blocks: &[u8]) -> Result<(Vec<f32>, Vec<f32>)> {
        match self {
            Self::KQuant(d) => affine(d, blocks),
            Self::Iq4Nl => {
                let a = blocks
                    .chunks_exact(iq4nl::BLOCK_BYTES)
                    .flat_map(|b| std::iter::repeat_n(half::f16::from_le_bytes([b[0], b[1]]).to_f32(), iq4nl::BLOCK))
                    .collect::<Vec<_>>();
                let z = vec![0.0; a.len()];
                Ok((a, z))
            }
        }
    }

    /// The code of `x` given its weight's `(a, z)`, and the value it stands for.
    fn round(self, x: f32, a: f32, z: f32) -> (u8, f32) {
        if a == 0.0 || !a.is_finite() {
            return (0, z); // every code stands for z (IQ4_NL: 0)
        }
        match self {
            Self::KQuant(d) => {
                let max = max_code(d).unwrap_or(0) as f32;
                let c = ((x - z) / a).round().clamp(0.0, max);
                (c as u8, a * c + z)
            }
            Self::Iq4Nl => {
                let c = iq4nl::best_index(x / a);
                (c as u8, a * KVALUES[c] as f32)
            }
        }
    }

    fn set_code(self, block: &mut [u8], e: usize, c: u8) {
        match self {
            Self::KQuant(d) => set_code(d, block, e, c),
            Self::Iq4Nl => {
                // Byte 2 + j holds weight j in its low nibble and weight j + 16 in its high one.
                let (byte, shift) = (2 + e % 16, 4 * (e / 16));
                block[byte] = (block[byte] & !(0x0f << shift)) | ((c & 0x0f) << shift);
            }
        }
    }
}

/// One row's blocks and every weight's `(a, z)`.
struct Row {
    blocks: Vec<u8>,
    a: Vec<f32>,
    z: Vec<f32>,
}

/// GPTQ into `format`'s blocks: `w` row-major `[rows, cols]` (`cols` a multiple of the block),
/// `p` prepared from the Gram matrix of its inputs. Returns the blocks' bytes, row-major, as
/// candle (K-quants) and [`Iq4NlTensor`] hold them.
pub fn quantize(w: &[f32], rows: usize, cols: usize, format: Blocks, p: &Prepared) -> Result<Vec<u8>> {
    if let Blocks::KQuant(d) = format {
        if max_code(d).is_none() {
            return Err(Error::Invalid(format!("GPTQ in super-blocks: {d:?} is not a K-quant")));
        }
    }
    let (len, bytes) = (format.block_len(), format.bytes());
    if w.len() != rows * cols || cols == 0 || !cols.is_multiple_of(len) {
        return Err(Error::Invalid(format!(
            "GPTQ: cannot quantize a [{rows}, {cols}] weight ({} values) in {}'s blocks of {len}",
            w.len(),
            format.name()
        )));
    }
    let mut wp = p.permuted(w, cols)?;
    let (perm, importance) = (&p.perm, &p.importance);
    let mut states: Vec<Row> = if p.act_order {
        // Static groups: every block fitted on the original weights, in parallel over rows.
        w.par_chunks(cols)
            .map(|r| {
                let blocks = format.fit(r, cols, importance)?;
                let (a, z) = format.affine(&blocks)?;
                Ok(Row { blocks, a, z })
            })
            .collect::<Result<_>>()?
    } else {
        let row_bytes = cols / len * bytes;
        (0..rows).map(|_| Row { blocks: vec![0; row_bytes], a: vec![0.0; cols], z: vec![0.0; cols] }).collect()
    };
    let failure = std::sync::Mutex::new(None);
    error_feedback(&mut wp, cols, &p.u, &mut states, |st, j, row| {
        let c = perm[j];
        let (b, e) = (c / len, c % len);
        let block = b * bytes..(b + 1) * bytes;
        if !p.act_order && e == 0 {
            // The block starts here (processing order = column order): fit on the current values.
            let refit = format
                .fit(&row[j..j + len], len, &importance[c..c + len])
                .and_then(|blocks| format.affine(&blocks).map(|az| (blocks, az)));
            match refit {
                Ok((blocks, (a, z))) => {
                    st.blocks[block.clone()].copy_from_slice(&blocks);
                    st.a[c..c + len].copy_from_slice(&a);
                    st.z[c..c + len].copy_from_slice(&z);
                }
                Err(err) => {
                    failure.lock().unwrap().get_or_insert(err);
                }
            }
        }
        let (code, value) = format.round(row[j], st.a[c], st.z[c]);
        format.set_code(&mut st.blocks[block], e, code);
        value
    });
    if let Some(err) = failure.into_inner().unwrap() {
        return Err(err);
    }
    Ok(states.into_iter().flat_map(|st| st.blocks).collect())
}

/// GPTQ into the K-quant `d`: the `[rows, cols]` tensor in `d`.
pub fn quantize_kquant(w: &[f32], rows: usize, cols: usize, d: GgmlDType, p: &Prepared) -> Result<QTensor> {
    let bytes = quantize(w, rows, cols, Blocks::KQuant(d), p)?;
    Ok(qtensor_from_ggml(d, &bytes, vec![rows, cols], &Device::Cpu)?)
}

/// GPTQ into IQ4_NL.
pub fn quantize_iq4nl(w: &[f32], rows: usize, cols: usize, p: &Prepared) -> Result<Iq4NlTensor> {
    Iq4NlTensor::from_bytes(quantize(w, rows, cols, Blocks::Iq4Nl, p)?, rows, cols)
}
