//! The rows of x quantized to int8 as they arrive, in the layout of a weight's packing.

use super::*;

/// The rows of x quantized for a packing — `qx + 128` as bytes (quads) or `qx` as i16 (pairs),
/// each row padded with zeros (128 for bytes) to whole groups — and each row's scale.
pub(super) enum Rows {
    Bytes(Vec<u8>),
    Words(Vec<i16>),
}

pub(super) struct QuantizedRows {
    pub(super) data: Rows,
    pub(super) scale: Vec<f32>,
    pub(super) stride: usize,
}

pub(super) fn quantize_rows(
    x: &[f32],
    m: usize,
    k: usize,
    inv_smooth: &[f32],
    packing: Packing,
    simd: bool,
) -> QuantizedRows {
    let stride = packing.padded(k);
    let mut scale = vec![0f32; m];
    let data = match packing {
        Packing::Quads => {
            let mut bytes = vec![OFFSET as u8; m * stride];
            bytes.par_chunks_mut(stride).zip(scale.par_iter_mut()).enumerate().for_each(|(i, (dst, s))| {
                *s = quantize_row_bytes(&x[i * k..(i + 1) * k], inv_smooth, &mut dst[..k], simd);
            });
            Rows::Bytes(bytes)
        }
        Packing::Pairs => {
            let mut words = vec![0i16; m * stride];
            words.par_chunks_mut(stride).zip(scale.par_iter_mut()).enumerate().for_each(|(i, (dst, s))| {
                *s = quantize_row_words(&x[i * k..(i + 1) * k], inv_smooth, &mut dst[..k], simd);
            });
            Rows::Words(words)
        }
    };
    QuantizedRows { data, scale, stride }
}

/// The smoothed row `v = row ⊙ f`'s scale and inverse scale.
pub(super) fn row_range(row: &[f32], f: &[f32]) -> (f32, f32) {
    let absmax = row.iter().zip(f).fold(0f32, |m, (v, f)| m.max((v * f).abs()));
    row_scale(absmax, row.iter().zip(f).any(|(v, f)| !(v * f).is_finite()))
}

/// With `v = row ⊙ f` (the smoothed row): writes `round(v / s) + 128` into `dst` and returns
/// `s = max|v| / 127`.
pub(super) fn quantize_row_bytes(row: &[f32], f: &[f32], dst: &mut [u8], simd: bool) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if simd && Int8Kernel::detected() == Int8Kernel::Vnni {
        // SAFETY: the features were detected; `f` and `dst` have `row.len()` elements.
        return unsafe { x86::quantize_row_avx512(row, f, dst) };
    }
    let (s, inv) = row_range(row, f);
    for ((d, &v), &f) in dst.iter_mut().zip(row).zip(f) {
        *d = (quantize(v * f, inv) + OFFSET) as u8;
    }
    s
}

/// As [`quantize_row_bytes`], `round(v / s)` as i16 without the offset.
pub(super) fn quantize_row_words(row: &[f32], f: &[f32], dst: &mut [i16], simd: bool) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if simd && Int8Kernel::detected() != Int8Kernel::Portable {
        // SAFETY: AVX2 was detected (VNNI machines have it too); the lengths match.
        return unsafe { x86::quantize_row_avx2(row, f, dst) };
    }
    let (s, inv) = row_range(row, f);
    for ((d, &v), &f) in dst.iter_mut().zip(row).zip(f) {
        *d = quantize(v * f, inv) as i16;
    }
    s
}
