//! The own integer format twin of a GGML legacy block format packed into that format's blocks
//! (llama.cpp's `block_q4_0` … `block_q8_0`, little-endian), so that a tensor rounded by GPTQ in the
//! twin ([`super::format::int_twin`]) is stored, multiplied and exported as the GGML type.
//!
//! Per block of 32 codes `c` (the twin's codes, already offset as the type wants):
//! Q4_0 `d, qs[16]`; Q4_1 `d, m, qs[16]`; Q5_0 `d, qh[4], qs[16]`; Q5_1 `d, m, qh[4], qs[16]`;
//! Q8_0 `d, qs[32]` (signed: `c − 128`). `qs[j]` holds the low nibbles of `c[j]` and `c[j + 16]`;
//! bit `j` of `qh` the fifth bit of `c[j]`.

use super::format::int_twin;
use super::own::IntTensor;
use crate::engine::{Error, Result};
use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType, QTensor};
use candle_core::Device;
use half::f16;

/// Packs `t` (in `int_twin(d)`) into `d`'s blocks as a `[rows, cols]` QTensor.
pub fn pack(t: &IntTensor, d: GgmlDType) -> Result<QTensor> {
    let twin = int_twin(d).ok_or_else(|| Error::Invalid(format!("{d:?} has no own-format twin to pack from")))?;
    let (rows, cols) = t.shape;
    if t.format.bits != twin.bits || t.format.symmetric != twin.symmetric || t.format.group != Some(32) {
        return Err(Error::Invalid(format!("a tensor in {} cannot be packed as {d:?}", t.format.bits)));
    }
    let blocks = rows * cols / 32;
    let mut out = Vec::with_capacity(blocks * d.type_size());
    for b in 0..blocks {
        let c = &t.codes[b * 32..(b + 1) * 32];
        out.extend_from_slice(&f16::from_f32(t.scales[b]).to_le_bytes());
        if !twin.symmetric {
            out.extend_from_slice(&f16::from_f32(t.mins[b]).to_le_bytes());
        }
        match twin.bits {
            8 => out.extend(c.iter().map(|&q| (q as i16 - 128) as i8 as u8)),
            bits => {
                if bits == 5 {
                    let qh = c.iter().enumerate().fold(0u32, |h, (j, &q)| h | (((q as u32 >> 4) & 1) << j));
                    out.extend_from_slice(&qh.to_le_bytes());
                }
                out.extend((0..16).map(|j| (c[j] & 0x0f) | ((c[j + 16] & 0x0f) << 4)));
            }
        }
    }
    Ok(qtensor_from_ggml(d, &out, vec![rows, cols], &Device::Cpu)?)
}
