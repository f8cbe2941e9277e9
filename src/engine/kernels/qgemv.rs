//! One decoding step's product with a Q8_0, Q4_0 or Q4_1 weight: `x` (one row, or a few) rounded to
//! 8-bit blocks as llama.cpp and candle do, then per weight block an integer dot product scaled by
//! both blocks' f16 scales — four weight rows at a time, so that four independent sums hide the
//! multiply-add latency, and blocks of output rows split over the threads.
//!
//! candle's path computes the same sums one weight row at a time with one accumulator, and calls
//! out of line for each block's f16 scale: on SmolLM2-135M in q4_0 a decoded token took 20 ms,
//! four times what streaming its 90 MB of weights costs here. AVX2 (`vpmaddubsw`, the sign trick of
//! llama.cpp) when the CPU has it, else portable integer loops; both give the same integer sums.

use crate::engine::Result;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Tensor};
use half::f16;
use rayon::prelude::*;

/// Values per block (Q8_0, Q4_0, Q4_1).
const QK: usize = 32;
/// Output rows per task.
const ROWS: usize = 64;
/// Up to this many rows of `x` take this path.
pub const MAX_ROWS: usize = 4;
/// Weights smaller than this run on the calling thread: handing a product of a few microseconds to
/// the thread pool costs more than it saves (a tiny model's decode ran at half speed).
const PARALLEL_BYTES: usize = 128 << 10;

/// A weight block layout this kernel reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `[d: f16][32 × i8]`, 34 bytes.
    Q8_0,
    /// `[d: f16][16 bytes: value j in the low nibble of byte j, j + 16 in the high]`, minus 8; 18 bytes.
    Q4_0,
    /// `[d: f16][m: f16][16 bytes of nibbles as Q4_0's]`, value `d·q + m`; 20 bytes.
    Q4_1,
}

impl Kind {
    fn of(dtype: GgmlDType) -> Option<Self> {
        match dtype {
            GgmlDType::Q8_0 => Some(Self::Q8_0),
            GgmlDType::Q4_0 => Some(Self::Q4_0),
            GgmlDType::Q4_1 => Some(Self::Q4_1),
            _ => None,
        }
    }

    fn block_bytes(self) -> usize {
        match self {
            Self::Q8_0 => 34,
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
        }
    }
}

/// True when [`matmul`] takes `x` `[rows, in]` against `w` `[out, in]`: f32 on the CPU, at most
/// [`MAX_ROWS`] rows, nothing differentiating through `x`, a Q8_0, Q4_0 or Q4_1 weight.
pub fn applies(x: &Tensor, w: &QTensor) -> bool {
    let (Ok((m, k)), Ok((_, k2))) = (x.dims2(), w.shape().dims2()) else { return false };
    super::enabled()
        && (1..=MAX_ROWS).contains(&m)
        && k == k2
        && k % QK == 0
        && !x.track_op()
        && x.device().is_cpu()
        && w.device().is_cpu()
        && x.dtype() == DType::F32
        && Kind::of(w.dtype()).is_some()
}

/// One row of `x` in 8-bit blocks: values, each block's scale (f16-rounded, as stored by Q8_0)
/// and each block's sum of values.
struct Q8Row {
    q: Vec<i8>,
    d: Vec<f32>,
    sum: Vec<i32>,
}

/// llama.cpp's `quantize_row_q8_0`: scale max|x| / 127 per block, values rounded half away from 0.
fn quantize_row(x: &[f32]) -> Q8Row {
    let blocks = x.len() / QK;
    let mut out = Q8Row { q: vec![0; x.len()], d: Vec::with_capacity(blocks), sum: Vec::with_capacity(blocks) };
    for (xs, qs) in x.chunks_exact(QK).zip(out.q.chunks_exact_mut(QK)) {
        let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in qs.iter_mut().zip(xs) {
            *q = (v * id).round() as i8;
            sum += *q as i32;
        }
        out.d.push(f16::from_f32(d).to_f32());
        out.sum.push(sum);
    }
    out
}

/// `x · Wᵀ` for `x` `[m, k]` (m ≤ [`MAX_ROWS`]) and a Q8_0, Q4_0 or Q4_1 `W` `[n, k]`; see [`applies`].
pub fn matmul(x: &Tensor, w: &QTensor) -> Result<Tensor> {
    if !applies(x, w) {
        return Err(crate::engine::Error::Invalid(format!(
            "the quantized one-row product takes f32 CPU x [1..={MAX_ROWS}, in] and a Q8_0/Q4_0/Q4_1 weight [out, in]; got x {:?} and a {:?} weight {:?}",
            x.dims(),
            w.dtype(),
            w.shape().dims()
        )));
    }
    let ((m, k), (n, _)) = (x.dims2()?, w.shape().dims2()?);
    let kind = Kind::of(w.dtype()).expect("checked by applies");
    let row_bytes = k / QK * kind.block_bytes();
    let data = w.data()?;
    let xs = x.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    let rows: Vec<Q8Row> = xs.chunks_exact(k).map(quantize_row).collect();
    let simd = avx2();
    // Output transposed, [n, m]: each task owns whole weight rows.
    let mut yt = vec![0f32; n * m];
    let task = |(block, ys): (usize, &mut [f32])| {
        let first = block * ROWS;
        let count = ys.len() / m;
        let mut o = 0;
        while o < count {
            let take = (count - o).min(4);
            let w_rows: [&[u8]; 4] = std::array::from_fn(|j| {
                let r = first + o + j.min(take - 1);
                &data[r * row_bytes..(r + 1) * row_bytes]
            });
            for (i, x) in rows.iter().enumerate() {
                let sums = if simd {
                    // SAFETY: AVX2, FMA and F16C were detected on this CPU.
                    unsafe { x86::dot4(kind, w_rows, x) }
                } else {
                    dot4_portable(kind, w_rows, x)
                };
                for j in 0..take {
                    ys[(o + j) * m + i] = sums[j];
                }
            }
            o += take;
        }
    };
    if n * row_bytes >= PARALLEL_BYTES {
        yt.par_chunks_mut(ROWS * m).enumerate().for_each(task);
    } else {
        yt.chunks_mut(ROWS * m).enumerate().for_each(task);
    }
    let y = if m == 1 {
        yt
    } else {
        let mut y = vec![0f32; m * n];
        for (o, row) in yt.chunks_exact(m).enumerate() {
            for (i, &v) in row.iter().enumerate() {
                y[i * n + o] = v;
            }
        }
        y
    };
    Ok(Tensor::from_vec(y, (m, n), x.device())?)
}

fn avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVX2: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVX2.get_or_init(|| super::isa::has!("avx2") && super::isa::has!("fma") && super::isa::has!("f16c"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn scale(block: &[u8]) -> f32 {
    f16::from_bits(u16::from_le_bytes([block[0], block[1]])).to_f32()
}

/// The four rows' dot products with `x`, block by block in integers (the portable path, and the
/// reference the SIMD path is tested against).
fn dot4_portable(kind: Kind, w: [&[u8]; 4], x: &Q8Row) -> [f32; 4] {
    let bb = kind.block_bytes();
    std::array::from_fn(|j| {
        let mut acc = 0f32;
        for (b, blk) in w[j].chunks_exact(bb).enumerate() {
            let xq = &x.q[b * QK..(b + 1) * QK];
            // Nibble j of a Q4 block's 16 bytes is value j (low) and j + 16 (high).
            let nibbles = |bytes: &[u8]| -> i32 {
                bytes
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| (v & 0x0F) as i32 * xq[i] as i32 + (v >> 4) as i32 * xq[i + 16] as i32)
                    .sum()
            };
            let dot: i32 = match kind {
                Kind::Q8_0 => blk[2..].iter().zip(xq).map(|(&w, &x)| (w as i8) as i32 * x as i32).sum(),
                Kind::Q4_0 => nibbles(&blk[2..]) - 8 * x.sum[b],
                Kind::Q4_1 => {
                    // Σ (d·q + m)·x = d·Σ q·x + m·Σ x.
                    acc += scale(&blk[2..]) * x.d[b] * x.sum[b] as f32;
                    nibbles(&blk[4..])
                }
            };
            acc += scale(blk) * x.d[b] * dot as f32;
        }
        acc
    })
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Kind, Q8Row, QK};
    use std::arch::x86_64::*;

    /// Σ over the 32 bytes of `Σ a_u8 · b_i8` as 8 i32 lanes (no saturation: |a · b| ≤ 127 · 127 per
    /// pair for Q8_0 with the sign trick, ≤ 15 · 128 for Q4_0's nibbles).
    #[inline(always)]
    unsafe fn madd(a: __m256i, b: __m256i) -> __m256i {
        _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1))
    }

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    #[inline(always)]
    unsafe fn f16_scale(p: *const u8) -> f32 {
        let bits = u16::from_le_bytes([*p, *p.add(1)]);
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
    }

    /// [`super::dot4_portable`] with AVX2: per block, the integer sums of four weight rows against
    /// one load of `x`, each scaled into its own float accumulator.
    ///
    /// SAFETY: the CPU has AVX2, FMA and F16C; every row holds `x.q.len() / 32` blocks.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot4(kind: Kind, w: [&[u8]; 4], x: &Q8Row) -> [f32; 4] {
        let bb = kind.block_bytes();
        let blocks = x.q.len() / QK;
        let mut acc = [_mm256_setzero_ps(); 4];
        let low = _mm256_set1_epi8(0x0F);
        let mut correction = [0f32; 4];
        for b in 0..blocks {
            let xv = _mm256_loadu_si256(x.q.as_ptr().add(b * QK) as *const __m256i);
            let xd = x.d[b];
            for j in 0..4 {
                let blk = w[j].as_ptr().add(b * bb);
                let d = f16_scale(blk) * xd;
                let sums = match kind {
                    Kind::Q8_0 => {
                        let wv = _mm256_loadu_si256(blk.add(2) as *const __m256i);
                        // |w| as u8 times x with w's sign: the products of w and x.
                        madd(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv))
                    }
                    Kind::Q4_0 | Kind::Q4_1 => {
                        let at = if kind == Kind::Q4_0 { 2 } else { 4 };
                        let packed = _mm_loadu_si128(blk.add(at) as *const __m128i);
                        // Low nibbles are values 0..16, high nibbles 16..32: one 32-byte vector.
                        let both = _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed);
                        let nib = _mm256_and_si256(both, low);
                        correction[j] += match kind {
                            Kind::Q4_0 => d * (8 * x.sum[b]) as f32,
                            // Q4_1's minimum: − m·Σx (so that it is added).
                            _ => -(f16_scale(blk.add(2)) * xd * x.sum[b] as f32),
                        };
                        madd(nib, xv)
                    }
                };
                acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sums), acc[j]);
            }
        }
        std::array::from_fn(|j| hsum(acc[j]) - correction[j])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SIMD and portable paths give the same sums (up to float rounding), both kinds.
    #[test]
    fn simd_equals_portable() {
        if !avx2() {
            return;
        }
        let k = 96;
        let x: Vec<f32> = (0..k).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.3).collect();
        let row = quantize_row(&x);
        for kind in [Kind::Q8_0, Kind::Q4_0, Kind::Q4_1] {
            let bb = kind.block_bytes();
            let w: Vec<Vec<u8>> = (0..4)
                .map(|r| {
                    (0..k / QK * bb)
                        .map(|i| {
                            // f16 1.0 as d (and Q4_1's m): bytes 0x00, 0x3c.
                            if i % bb == 1 || (kind == Kind::Q4_1 && i % bb == 3) {
                                0x3c
                            } else if i % bb == 0 || (kind == Kind::Q4_1 && i % bb == 2) {
                                0
                            } else {
                                (i * 31 + r * 7) as u8
                            }
                        })
                        .collect()
                })
                .collect();
            let rows = [&w[0][..], &w[1][..], &w[2][..], &w[3][..]];
            // SAFETY: detected above.
            let simd = unsafe { x86::dot4(kind, rows, &row) };
            let portable = dot4_portable(kind, rows, &row);
            for (a, b) in simd.iter().zip(&portable) {
                assert!((a - b).abs() <= 1e-3 * b.abs().max(1.0), "{kind:?}: {a} vs {b}");
            }
        }
    }
}
