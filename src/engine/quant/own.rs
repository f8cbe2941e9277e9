//! The project's own round-to-nearest integer formats: per-channel or group-wise, symmetric or
//! asymmetric, optionally importance-weighted.
//!
//! A `[rows, cols]` weight is cut into groups of `group` consecutive weights of a row (the whole
//! row per-channel). Each group stores f16 parameters and `bits`-bit codes `q`:
//!
//! * asymmetric: `w ≈ scale·q + min`, `q ∈ [0, 2^b − 1]`;
//! * symmetric: `w ≈ scale·(q − 2^(b−1))`, the scale chosen as `extreme / −2^(b−1)` like GGML's Q4_0,
//!   so the full negative range is used.
//!
//! Plain rounding takes the group's min/max (or signed extreme). With an importance vector (one
//! value per column: the mean square of the activations that multiply it) the scale is searched
//! (candidates around the plain one, each refitted by weighted least squares, as llama.cpp's
//! `make_qkx2_quants`) to minimise `Σ importance·(w − ŵ)²`, the expected output error of the layer.
//!
//! Parameters are rounded to f16 before the codes are computed, so codes and the stored
//! parameters agree exactly. Storage layout (what [`IntTensor::packed_codes`] writes): codes
//! row-major, packed LSB-first into a bit stream (3-bit codes straddle bytes); scales and minima
//! `[rows, cols/group]` f16.

use super::format::IntFormat;
use crate::engine::{Error, Result};
use half::f16;
use rayon::prelude::*;

/// A weight quantized to an own integer format.
#[derive(Clone, Debug)]
pub struct IntTensor {
    pub format: IntFormat,
    /// `(rows, cols)` of the row-major weight.
    pub shape: (usize, usize),
    /// One code per weight, row-major, each `< 2^bits`.
    pub codes: Vec<u8>,
    /// One per group, `[rows, groups_per_row]`, exactly representable in f16.
    pub scales: Vec<f32>,
    /// One per group for the asymmetric formats, empty for the symmetric ones.
    pub mins: Vec<f32>,
}

impl IntTensor {
    /// Quantizes a row-major `[rows, cols]` weight. `importance` has one non-negative value per
    /// column; `None` is plain round-to-nearest.
    pub fn quantize(
        w: &[f32],
        rows: usize,
        cols: usize,
        format: IntFormat,
        importance: Option<&[f32]>,
    ) -> Result<Self> {
        let group = format.group.unwrap_or(cols);
        if w.len() != rows * cols || cols == 0 || !cols.is_multiple_of(group) {
            return Err(Error::Invalid(format!(
                "cannot quantize a [{rows}, {cols}] weight ({} values) with groups of {group}; \
                 the row width must be a multiple of the group size",
                w.len()
            )));
        }
        if let Some(imp) = importance {
            if imp.len() != cols {
                return Err(Error::Invalid(format!(
                    "importance vector has {} values for a weight with {cols} columns; recalibrate on this model",
                    imp.len()
                )));
            }
        }
        let n_groups = rows * cols / group;
        let mut t = Self {
            format,
            shape: (rows, cols),
            codes: vec![0; w.len()],
            scales: Vec::with_capacity(n_groups),
            mins: Vec::with_capacity(if format.symmetric { 0 } else { n_groups }),
        };
        // Groups are independent: fitted in parallel, the same numbers in any order.
        let params: Vec<(f32, f32)> = w
            .par_chunks(group)
            .zip(t.codes.par_chunks_mut(group))
            .enumerate()
            .map(|(g, (xs, codes))| {
                let col0 = (g * group) % cols;
                let imp = importance.map(|imp| &imp[col0..col0 + group]);
                if format.symmetric {
                    (fit_symmetric(xs, format.bits, imp, codes), 0.0)
                } else {
                    fit_asymmetric(xs, format.bits, imp, codes)
                }
            })
            .collect();
        for (scale, min) in params {
            t.scales.push(scale);
            if !format.symmetric {
                t.mins.push(min);
            }
        }
        Ok(t)
    }

    fn group(&self) -> usize {
        self.format.group.unwrap_or(self.shape.1)
    }

    /// The dequantized weight, row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let group = self.group();
        let offset = if self.format.symmetric { (1i32 << (self.format.bits - 1)) as f32 } else { 0.0 };
        let mut out = Vec::with_capacity(self.codes.len());
        for (g, codes) in self.codes.chunks(group).enumerate() {
            let (s, m) = (self.scales[g], self.mins.get(g).copied().unwrap_or(0.0));
            out.extend(codes.iter().map(|&q| s * (q as f32 - offset) + m));
        }
        out
    }

    /// The codes packed LSB-first into a bit stream of `ceil(n·bits/8)` bytes.
    pub fn packed_codes(&self) -> Vec<u8> {
        let bits = self.format.bits as usize;
        let mut out = vec![0u8; (self.codes.len() * bits).div_ceil(8)];
        for (i, &q) in self.codes.iter().enumerate() {
            let (mut pos, mut value, mut left) = (i * bits, q as u16, bits);
            while left > 0 {
                let (byte, shift) = (pos / 8, pos % 8);
                let take = left.min(8 - shift);
                out[byte] |= ((value & ((1 << take) - 1)) as u8) << shift;
                value >>= take;
                pos += take;
                left -= take;
            }
        }
        out
    }

    /// Bytes as stored: packed codes plus f16 scales (and minima).
    pub fn storage_bytes(&self) -> u64 {
        (self.codes.len() * self.format.bits as usize).div_ceil(8) as u64
            + 2 * (self.scales.len() + self.mins.len()) as u64
    }
}

/// One group's parameters `(scale, min)` as stored (`min` 0 for the symmetric formats), fitted
/// like [`IntTensor::quantize`] does (importance-weighted search when `imp` is given).
pub(super) fn fit_group(xs: &[f32], format: IntFormat, imp: Option<&[f32]>) -> (f32, f32) {
    let mut codes = vec![0u8; xs.len()];
    if format.symmetric {
        (fit_symmetric(xs, format.bits, imp, &mut codes), 0.0)
    } else {
        fit_asymmetric(xs, format.bits, imp, &mut codes)
    }
}

/// `(offset, qmax)` of a format's codes.
fn code_range(format: IntFormat) -> (f32, f32) {
    let qmax = ((1u32 << format.bits) - 1) as f32;
    let offset = if format.symmetric { (1u32 << (format.bits - 1)) as f32 } else { 0.0 };
    (offset, qmax)
}

/// The nearest code of one value for fixed parameters (what [`IntTensor::quantize`] stores).
pub(super) fn encode_one(x: f32, scale: f32, min: f32, format: IntFormat) -> u8 {
    let (offset, qmax) = code_range(format);
    let mut code = [0u8];
    encode(&[x], scale, min, offset, qmax, &mut code);
    code[0]
}

/// The value a code stands for (what [`IntTensor::dequantize`] gives).
pub(super) fn decode_one(code: u8, scale: f32, min: f32, format: IntFormat) -> f32 {
    scale * (code as f32 - code_range(format).0) + min
}

fn to_f16(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

/// Asymmetric fit of one group; writes the codes, returns (scale, min) as stored.
fn fit_asymmetric(xs: &[f32], bits: u8, imp: Option<&[f32]>, codes: &mut [u8]) -> (f32, f32) {
    let qmax = ((1u32 << bits) - 1) as f32;
    let lo = xs.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let plain = |codes: &mut [u8]| {
        let (s, m) = (to_f16((hi - lo) / qmax), to_f16(lo));
        encode(xs, s, m, 0.0, qmax, codes);
        (s, m)
    };
    let (Some(imp), true) = (imp, hi > lo) else {
        return plain(codes);
    };
    let mut best = plain(codes);
    let mut best_err = weighted_error(xs, imp, best.0, best.1, 0.0, codes);
    let mut trial = vec![0u8; xs.len()];
    for step in 0..=20 {
        // Candidate inverse scales around the plain one, then a weighted least-squares refit of
        // scale and minimum for the codes that candidate rounds to.
        let iscale = (qmax + (step as f32 - 10.0) * 0.1) / (hi - lo);
        for (q, &x) in trial.iter_mut().zip(xs) {
            *q = (iscale * (x - lo)).round().clamp(0.0, qmax) as u8;
        }
        let Some((s, m)) = refit_affine(xs, imp, &trial) else { continue };
        let (s, m) = (to_f16(s), to_f16(m));
        encode(xs, s, m, 0.0, qmax, &mut trial);
        let err = weighted_error(xs, imp, s, m, 0.0, &trial);
        if err < best_err {
            best_err = err;
            best = (s, m);
            codes.copy_from_slice(&trial);
        }
    }
    best
}

/// Symmetric fit of one group; writes the codes (offset by `2^(b−1)`), returns the scale as stored.
fn fit_symmetric(xs: &[f32], bits: u8, imp: Option<&[f32]>, codes: &mut [u8]) -> f32 {
    let half = (1u32 << (bits - 1)) as f32;
    let qmax = 2.0 * half - 1.0;
    let extreme = xs.iter().copied().fold(0f32, |a, x| if x.abs() > a.abs() { x } else { a });
    let plain = |codes: &mut [u8]| {
        let s = to_f16(extreme / -half);
        encode(xs, s, 0.0, half, qmax, codes);
        s
    };
    let (Some(imp), true) = (imp, extreme != 0.0) else {
        return plain(codes);
    };
    let mut best = plain(codes);
    let mut best_err = weighted_error(xs, imp, best, 0.0, half, codes);
    let mut trial = vec![0u8; xs.len()];
    for step in 0..=20 {
        let iscale = -(half + (step as f32 - 10.0) * 0.1) / extreme;
        let (mut num, mut den) = (0f64, 0f64);
        for ((q, &x), &wi) in trial.iter_mut().zip(xs).zip(imp) {
            let l = (iscale * x).round().clamp(-half, half - 1.0);
            *q = (l + half) as u8;
            num += (wi * x * l) as f64;
            den += (wi * l * l) as f64;
        }
        if den <= 0.0 {
            continue;
        }
        let s = to_f16((num / den) as f32);
        encode(xs, s, 0.0, half, qmax, &mut trial);
        let err = weighted_error(xs, imp, s, 0.0, half, &trial);
        if err < best_err {
            best_err = err;
            best = s;
            codes.copy_from_slice(&trial);
        }
    }
    best
}

/// Nearest codes for fixed parameters: `q = round((x − min)/scale + offset)` clamped to `[0, qmax]`.
fn encode(xs: &[f32], scale: f32, min: f32, offset: f32, qmax: f32, codes: &mut [u8]) {
    let inv = if scale != 0.0 { 1.0 / scale } else { 0.0 };
    for (q, &x) in codes.iter_mut().zip(xs) {
        *q = ((x - min) * inv + offset).round().clamp(0.0, qmax) as u8;
    }
}

fn weighted_error(xs: &[f32], imp: &[f32], scale: f32, min: f32, offset: f32, codes: &[u8]) -> f64 {
    xs.iter()
        .zip(imp)
        .zip(codes)
        .map(|((&x, &wi), &q)| {
            let d = (scale * (q as f32 - offset) + min - x) as f64;
            wi as f64 * d * d
        })
        .sum()
}

/// Weighted least squares `min Σ wᵢ (s·qᵢ + m − xᵢ)²` for fixed codes; `None` when degenerate.
fn refit_affine(xs: &[f32], imp: &[f32], codes: &[u8]) -> Option<(f32, f32)> {
    let (mut sw, mut sq, mut sx, mut sqq, mut sqx) = (0f64, 0f64, 0f64, 0f64, 0f64);
    for ((&x, &wi), &q) in xs.iter().zip(imp).zip(codes) {
        let (w, q, x) = (wi as f64, q as f64, x as f64);
        sw += w;
        sq += w * q;
        sx += w * x;
        sqq += w * q * q;
        sqx += w * q * x;
    }
    let det = sw * sqq - sq * sq;
    if det <= 1e-20 * sw * sqq {
        return None;
    }
    let s = (sw * sqx - sq * sx) / det;
    let m = (sqq * sx - sq * sqx) / det;
    (s > 0.0).then_some((s as f32, m as f32))
}

impl IntTensor {
    /// Rebuilds a tensor from its stored layout (the inverse of [`IntTensor::packed_codes`] and
    /// the scale/minimum arrays); checks every length.
    pub fn from_packed(
        format: IntFormat,
        rows: usize,
        cols: usize,
        packed: &[u8],
        scales: Vec<f32>,
        mins: Vec<f32>,
    ) -> Result<Self> {
        let bits = format.bits as usize;
        let n = rows * cols;
        let groups = n / format.group.unwrap_or(cols.max(1));
        let want_mins = if format.symmetric { 0 } else { groups };
        if packed.len() != (n * bits).div_ceil(8) || scales.len() != groups || mins.len() != want_mins {
            return Err(Error::Invalid(format!(
                "stored {rows}x{cols} tensor has {} code bytes, {} scales, {} minima; expected {}, {groups}, {want_mins}",
                packed.len(),
                scales.len(),
                mins.len(),
                (n * bits).div_ceil(8)
            )));
        }
        let codes = (0..n)
            .map(|i| {
                let (mut value, mut got) = (0u16, 0);
                while got < bits {
                    let pos = i * bits + got;
                    let (byte, shift) = (pos / 8, pos % 8);
                    let take = (bits - got).min(8 - shift);
                    value |= (((packed[byte] >> shift) as u16) & ((1 << take) - 1)) << got;
                    got += take;
                }
                value as u8
            })
            .collect();
        Ok(Self { format, shape: (rows, cols), codes, scales, mins })
    }
}
