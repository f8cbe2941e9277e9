//! The x86-64 SIMD parts of the int8 product: row quantization and the register-block kernels
//! for AVX512_VNNI and AVX2. Each computes what its portable twin in the parent module does.

use super::{quantize, row_scale, Block, Panels, Rows, OFFSET};
use std::arch::x86_64::*;

#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn quantize_row_avx512(row: &[f32], f: &[f32], dst: &mut [u8]) -> f32 {
    assert!(f.len() == row.len() && dst.len() == row.len());
    let whole = row.len() / 16;
    let mut max = _mm512_setzero_ps();
    let mut odd: u16 = 0;
    for b in 0..whole {
        let v = _mm512_mul_ps(_mm512_loadu_ps(row.as_ptr().add(16 * b)), _mm512_loadu_ps(f.as_ptr().add(16 * b)));
        max = _mm512_max_ps(max, _mm512_abs_ps(v));
        odd |= _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
    }
    let mut absmax = _mm512_reduce_max_ps(max);
    let mut non_finite = odd != 0;
    for (&v, &f) in row[16 * whole..].iter().zip(&f[16 * whole..]) {
        absmax = absmax.max((v * f).abs());
        non_finite |= !(v * f).is_finite();
    }
    let (s, inv) = row_scale(absmax, non_finite);
    let (vinv, lo, hi, off) =
        (_mm512_set1_ps(inv), _mm512_set1_epi32(-127), _mm512_set1_epi32(127), _mm512_set1_epi32(OFFSET));
    for b in 0..whole {
        // Round to nearest even (the default MXCSR mode), as `round_ties_even` does.
        let v = _mm512_mul_ps(_mm512_loadu_ps(row.as_ptr().add(16 * b)), _mm512_loadu_ps(f.as_ptr().add(16 * b)));
        let q = _mm512_cvtps_epi32(_mm512_mul_ps(v, vinv));
        let q = _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(q, lo), hi), off);
        _mm_storeu_si128(dst.as_mut_ptr().add(16 * b) as *mut __m128i, _mm512_cvtepi32_epi8(q));
    }
    for ((d, &v), &f) in dst[16 * whole..].iter_mut().zip(&row[16 * whole..]).zip(&f[16 * whole..]) {
        *d = (quantize(v * f, inv) + OFFSET) as u8;
    }
    s
}

#[target_feature(enable = "avx2")]
pub(super) unsafe fn quantize_row_avx2(row: &[f32], f: &[f32], dst: &mut [i16]) -> f32 {
    assert!(f.len() == row.len() && dst.len() == row.len());
    let whole = row.len() / 8;
    let sign = _mm256_set1_ps(-0.0);
    let mut max = _mm256_setzero_ps();
    let mut odd = _mm256_setzero_ps();
    for b in 0..whole {
        let v = _mm256_mul_ps(_mm256_loadu_ps(row.as_ptr().add(8 * b)), _mm256_loadu_ps(f.as_ptr().add(8 * b)));
        max = _mm256_max_ps(max, _mm256_andnot_ps(sign, v));
        odd = _mm256_or_ps(odd, _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
    }
    let mut lanes = [0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), max);
    let mut absmax = lanes.iter().fold(0f32, |m, &v| m.max(v));
    let mut non_finite = _mm256_movemask_ps(odd) != 0;
    for (&v, &f) in row[8 * whole..].iter().zip(&f[8 * whole..]) {
        absmax = absmax.max((v * f).abs());
        non_finite |= !(v * f).is_finite();
    }
    // NaN is caught by the unordered compare, ±∞ by `row_scale` through `absmax`.
    let (s, inv) = row_scale(absmax, non_finite);
    let (vinv, lo, hi) = (_mm256_set1_ps(inv), _mm256_set1_epi32(-127), _mm256_set1_epi32(127));
    for b in 0..whole {
        // Round to nearest even (the default MXCSR mode), as `round_ties_even` does.
        let v = _mm256_mul_ps(_mm256_loadu_ps(row.as_ptr().add(8 * b)), _mm256_loadu_ps(f.as_ptr().add(8 * b)));
        let q = _mm256_min_epi32(_mm256_max_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(v, vinv)), lo), hi);
        // Pack to i16 (per 128-bit lane), then gather the two lanes' low halves.
        let packed = _mm256_permute4x64_epi64::<0b1000>(_mm256_packs_epi32(q, q));
        _mm_storeu_si128(dst.as_mut_ptr().add(8 * b) as *mut __m128i, _mm256_castsi256_si128(packed));
    }
    for ((d, &v), &f) in dst[8 * whole..].iter_mut().zip(&row[8 * whole..]).zip(&f[8 * whole..]) {
        *d = quantize(v * f, inv) as i16;
    }
    s
}

impl Block<'_> {
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn vnni<const R: usize>(&self) {
        const NR: usize = 32;
        let (Panels::Quads(data), Rows::Bytes(bytes)) = (&self.w.data, &self.x.data) else {
            unreachable!("the VNNI kernel runs on quads")
        };
        let stride = self.x.stride;
        let g = stride / 4;
        let a = bytes.as_ptr().add(self.r0 * stride);
        let b = data.as_ptr().add(self.panel * stride * NR);
        let mut acc = [[_mm512_setzero_si512(); 2]; R];
        for q in 0..g {
            let b0 = _mm512_loadu_si512(b.add(q * NR * 4) as *const __m512i);
            let b1 = _mm512_loadu_si512(b.add(q * NR * 4 + 64) as *const __m512i);
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_epi32((a.add(r * stride + 4 * q) as *const i32).read_unaligned());
                acc[0] = _mm512_dpbusd_epi32(acc[0], x, b0);
                acc[1] = _mm512_dpbusd_epi32(acc[1], x, b1);
            }
        }
        let valid = |h: usize| -> u16 {
            let n = self.cols.saturating_sub(16 * h).min(16);
            ((1u32 << n) - 1) as u16
        };
        let (col_scale, comp) = (self.col_scale(), self.comp());
        for (r, acc) in acc.iter().enumerate() {
            let s = _mm512_set1_ps(self.x.scale[self.r0 + r]);
            for (h, &v) in acc.iter().enumerate() {
                let comp = _mm512_loadu_si512(comp.as_ptr().add(16 * h) as *const __m512i);
                let v = _mm512_cvtepi32_ps(_mm512_sub_epi32(v, comp));
                let y = _mm512_mul_ps(_mm512_mul_ps(v, _mm512_loadu_ps(col_scale.as_ptr().add(16 * h))), s);
                _mm512_mask_storeu_ps(self.out.add(r * self.ldc + 16 * h), valid(h), y);
            }
        }
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn avx2<const R: usize>(&self) {
        const NR: usize = 16;
        let (Panels::Pairs(data), Rows::Words(words)) = (&self.w.data, &self.x.data) else {
            unreachable!("the AVX2 kernel runs on pairs")
        };
        let stride = self.x.stride;
        let g = stride / 2;
        let a = words.as_ptr().add(self.r0 * stride);
        let b = data.as_ptr().add(self.panel * stride * NR);
        let mut acc = [[_mm256_setzero_si256(); 2]; R];
        for q in 0..g {
            let b0 = _mm256_loadu_si256(b.add(q * NR * 2) as *const __m256i);
            let b1 = _mm256_loadu_si256(b.add(q * NR * 2 + 16) as *const __m256i);
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = _mm256_set1_epi32((a.add(r * stride + 2 * q) as *const i32).read_unaligned());
                acc[0] = _mm256_add_epi32(acc[0], _mm256_madd_epi16(x, b0));
                acc[1] = _mm256_add_epi32(acc[1], _mm256_madd_epi16(x, b1));
            }
        }
        let col_scale = self.col_scale();
        let full = self.cols == NR;
        for (r, acc) in acc.iter().enumerate() {
            let s = _mm256_set1_ps(self.x.scale[self.r0 + r]);
            for (h, &v) in acc.iter().enumerate() {
                // No compensation: x is signed here.
                let y = _mm256_mul_ps(
                    _mm256_mul_ps(_mm256_cvtepi32_ps(v), _mm256_loadu_ps(col_scale.as_ptr().add(8 * h))),
                    s,
                );
                let dst = self.out.add(r * self.ldc + 8 * h);
                if full {
                    _mm256_storeu_ps(dst, y);
                } else {
                    let n = self.cols.saturating_sub(8 * h).min(8) as i32;
                    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
                    _mm256_maskstore_ps(dst, _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lanes), y);
                }
            }
        }
    }
}
