//! `C = A · B` with A and B rounded to bf16 and the products summed in f32, on AVX512_BF16.
//!
//! The layout follows the GotoBLAS/BLIS scheme. A is packed into panels of [`MR`] rows and B into
//! panels of [`NR`] columns, both as bf16 *pairs* along the reduction dimension (one `u32` holds
//! `k` and `k+1`), which is what `vdpbf16ps` consumes: each instruction multiplies 16 pairs and adds
//! both products into 16 f32 lanes. The micro-kernel keeps an `MR × NR` block of C in 24 zmm
//! registers, loads two zmm of B per pair and broadcasts one pair of A per row.
//!
//! Work is split into tiles of C (rows × column panels), each computed by one rayon task over the
//! whole reduction in a fixed order, so results do not depend on the thread count or scheduling.
//! A and B may be any strided 2-D views (a transposed weight, a transposed gradient): packing reads
//! them through their strides, with contiguous fast paths for the layouts training produces.
//!
//! Rounding is round-to-nearest-even, like PyTorch's `float → bfloat16`; NaN stays NaN; subnormal
//! inputs (|x| < 1.2e-38) count as zero, as in oneDNN's conversion.

use super::cpu::Shared;
use rayon::prelude::*;

/// Rows of A per packed panel (and of the register block of C).
pub const MR: usize = 12;
/// Columns of B per packed panel (two zmm of f32).
pub const NR: usize = 32;
/// Pairs of the reduction dimension per pass over a tile (keeps a B panel near L1).
const KC: usize = 256;
/// A-panels per tile (rows of C per tile = `MR * TILE_M`).
const TILE_M: usize = 8;
/// B-panels per tile.
const TILE_N: usize = 4;

/// A 2-D strided view of f32 data: element `(i, j)` is `data[offset + i * rs + j * cs]`.
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    pub data: &'a [f32],
    pub offset: usize,
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> View<'a> {
    /// A row-major `[rows, cols]` matrix.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self { data, offset: 0, rows, cols, rs: cols, cs: 1 }
    }

    /// The same data read as its transpose.
    pub fn t(self) -> Self {
        Self { rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs, ..self }
    }

    fn at(&self, i: usize, j: usize) -> f32 {
        self.data[self.offset + i * self.rs + j * self.cs]
    }

    /// The `len` elements from `(i, j)` along a row (`cs == 1`) or a column (`rs == 1`).
    fn run(&self, i: usize, j: usize, len: usize) -> &'a [f32] {
        let start = self.offset + i * self.rs + j * self.cs;
        &self.data[start..start + len]
    }
}

/// True when this CPU runs the bf16 kernel (AVX512F + AVX512_BF16), checked once.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE.get_or_init(|| super::isa::has!("avx512f") && super::isa::has!("avx512bf16"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// f32 → bf16 bits, round to nearest even (NaN kept quiet).
#[inline(always)]
pub fn to_bf16(x: f32) -> u32 {
    let b = x.to_bits();
    let rounded = b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16;
    if x.is_nan() {
        (b >> 16) | 0x40
    } else {
        rounded
    }
}

/// The f32 value of `x` rounded to bf16 (what the kernel multiplies).
pub fn round_bf16(x: f32) -> f32 {
    f32::from_bits(to_bf16(x) << 16)
}

#[inline(always)]
fn pair(lo: f32, hi: f32) -> u32 {
    to_bf16(lo) | (to_bf16(hi) << 16)
}

fn pairs(k: usize) -> usize {
    k.div_ceil(2)
}

/// `dst[q] = pair(src[2q], src[2q + 1])` (an odd tail pairs with zero), 32 floats per
/// `vcvtne2ps2bf16`. Like oneDNN's conversion it treats subnormal inputs as zero.
fn convert_pairs(src: &[f32], dst: &mut [u32]) {
    debug_assert_eq!(dst.len(), pairs(src.len()));
    let whole = src.len() / 32;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `matmul` runs only where `available()` holds; the loop reads 32 floats and writes
    // 16 u32 per block, inside `src` and `dst` (`whole * 32 <= src.len()`, `whole * 16 <= dst.len()`).
    unsafe {
        convert_blocks(src.as_ptr(), dst.as_mut_ptr(), whole);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let whole = 0;
    for (q, d) in dst.iter_mut().enumerate().skip(whole * 16) {
        *d = pair(src[2 * q], src.get(2 * q + 1).copied().unwrap_or(0.0));
    }
}

/// `dst[i] = pair(lo[i], hi[i])` (`hi` absent: zeros), 16 lanes per `vcvtne2ps2bf16` + `vpermw`.
fn interleave_pairs(lo: &[f32], hi: Option<&[f32]>, dst: &mut [u32]) {
    debug_assert!(lo.len() == dst.len() && hi.is_none_or(|h| h.len() == lo.len()));
    #[cfg(target_arch = "x86_64")]
    {
        let zeros = [0f32; 16];
        for start in (0..lo.len()).step_by(16) {
            let n = 16.min(lo.len() - start);
            let h = hi.map(|h| &h[start..start + n]).unwrap_or(&zeros[..n]);
            // SAFETY: `available()` holds inside `matmul`; masked loads and the masked store touch
            // only the first `n` (≤ 16) elements of each slice.
            unsafe { interleave16(lo[start..].as_ptr(), h.as_ptr(), dst[start..].as_mut_ptr(), n) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    for (i, d) in dst.iter_mut().enumerate() {
        *d = pair(lo[i], hi.map(|h| h[i]).unwrap_or(0.0));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn interleave16(lo: *const f32, hi: *const f32, dst: *mut u32, n: usize) {
    use std::arch::x86_64::*;
    let mask: __mmask16 = if n >= 16 { 0xffff } else { ((1u32 << n) - 1) as __mmask16 };
    let l = _mm512_maskz_loadu_ps(mask, lo);
    let h = _mm512_maskz_loadu_ps(mask, hi);
    // [bf(l0..l15), bf(h0..h15)] as 32 u16, then reordered to l0 h0 l1 h1 …
    let packed: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(h, l));
    let idx = _mm512_set_epi16(
        31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1,
        16, 0,
    );
    let out = _mm512_permutexvar_epi16(idx, packed);
    _mm512_mask_storeu_epi32(dst as *mut i32, mask, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn convert_blocks(src: *const f32, dst: *mut u32, blocks: usize) {
    use std::arch::x86_64::*;
    for i in 0..blocks {
        let lo = _mm512_loadu_ps(src.add(32 * i));
        let hi = _mm512_loadu_ps(src.add(32 * i + 16));
        // The result's low half converts the second operand: [lo … | hi …] in memory order.
        let bf: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
        _mm512_storeu_si512(dst.add(16 * i) as *mut __m512i, bf);
    }
}

/// Packs the rows of `a` (`[m, k]`) into `[panel][pair][width]`, zero-padded: A with `width = MR`,
/// and B (`[k, n]`) read as its transpose with `width = NR`.
fn pack(a: &View, width: usize) -> Vec<u32> {
    let (m, k) = (a.rows, a.cols);
    let kp = pairs(k);
    let mut out = vec![0u32; m.div_ceil(width) * kp * width];
    out.par_chunks_mut(kp * width).enumerate().for_each(|(p, dst)| {
        let r0 = p * width;
        let rows = width.min(m - r0);
        if a.cs == 1 {
            // Pairs lie next to each other in a row (A row-major, or B = Wᵀ with W row-major):
            // convert the row, then interleave the rows.
            let mut row = vec![0u32; kp];
            for r in 0..rows {
                convert_pairs(a.run(r0 + r, 0, k), &mut row);
                for (q, &v) in row.iter().enumerate() {
                    dst[q * width + r] = v;
                }
            }
        } else if a.rs == 1 {
            // The panel's rows are contiguous (A transposed, or B row-major), a pair spans two columns.
            for q in 0..kp {
                let hi = (2 * q + 1 < k).then(|| a.run(r0, 2 * q + 1, rows));
                interleave_pairs(a.run(r0, 2 * q, rows), hi, &mut dst[q * width..q * width + rows]);
            }
        } else {
            for r in 0..rows {
                for q in 0..kp {
                    let hi = if 2 * q + 1 < k { a.at(r0 + r, 2 * q + 1) } else { 0.0 };
                    dst[q * width + r] = pair(a.at(r0 + r, 2 * q), hi);
                }
            }
        }
    });
    out
}

/// `C[rows, cols] (+)= Apanel · Bpanel` over `kp` pairs; `c` is row-major with stride `ldc`.
///
/// # Safety
/// AVX512F and AVX512_BF16 must be present; `a` holds `kp * MR` and `b` `kp * NR` elements;
/// `c` is valid for `rows` rows of `cols` floats at stride `ldc`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn micro_kernel(
    kp: usize,
    a: *const u32,
    b: *const u32,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    accumulate: bool,
) {
    use std::arch::x86_64::*;
    let mask = |lanes: usize| -> __mmask16 {
        if lanes >= 16 {
            0xffff
        } else {
            ((1u32 << lanes) - 1) as __mmask16
        }
    };
    let (m0, m1) = (mask(cols), mask(cols.saturating_sub(16)));
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    if accumulate {
        for (i, row) in acc.iter_mut().enumerate().take(rows) {
            let p = c.add(i * ldc);
            row[0] = _mm512_maskz_loadu_ps(m0, p);
            row[1] = _mm512_maskz_loadu_ps(m1, p.add(16));
        }
    }
    let (mut a, mut b) = (a, b);
    for _ in 0..kp {
        let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b as *const __m512i));
        let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(16) as *const __m512i));
        for (i, row) in acc.iter_mut().enumerate() {
            let ai: __m512bh = std::mem::transmute(_mm512_set1_epi32(*a.add(i) as i32));
            row[0] = _mm512_dpbf16_ps(row[0], ai, b0);
            row[1] = _mm512_dpbf16_ps(row[1], ai, b1);
        }
        a = a.add(MR);
        b = b.add(NR);
    }
    for (i, row) in acc.iter().enumerate().take(rows) {
        let p = c.add(i * ldc);
        _mm512_mask_storeu_ps(p, m0, row[0]);
        _mm512_mask_storeu_ps(p.add(16), m1, row[1]);
    }
}

/// What [`matmul`] computes, on a CPU without AVX512_BF16: both operands rounded to bf16 (a copy of
/// the span each view covers, its strides kept), then the f32 GEMM of [`super::cpu::gemm_threads`]
/// — the same exact products, summed in another order. It costs the f32 product plus one pass over
/// each operand.
///
/// # Panics
/// When the inner dimensions differ.
pub fn emulated(a: &View, b: &View) -> Vec<f32> {
    assert_eq!(a.cols, b.rows, "inner dimensions differ");
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if m == 0 || n == 0 || k == 0 {
        return vec![0f32; m * n];
    }
    let rounded = |v: &View| -> Vec<f32> {
        let end = v.offset + (v.rows - 1) * v.rs + (v.cols - 1) * v.cs + 1;
        v.data[v.offset..end].par_iter().with_min_len(1 << 14).map(|&x| round_bf16(x)).collect()
    };
    let (ra, rb) = rayon::join(|| rounded(a), || rounded(b));
    let mut c: Vec<f32> = Vec::with_capacity(m * n);
    // SAFETY: the rounded copies hold every element the views address, at the same strides
    // relative to their start; `c` has room for the m × n result, which the product overwrites.
    unsafe {
        super::cpu::gemm_threads(
            (m, n, k),
            c.as_mut_ptr(),
            n,
            false,
            ra.as_ptr(),
            (a.rs, a.cs),
            rb.as_ptr(),
            (b.rs, b.cs),
        );
        c.set_len(m * n);
    }
    c
}

/// `A[m, k] · B[k, n]` as a row-major `[m, n]` f32 vector.
///
/// # Panics
/// When [`available`] is false, or the inner dimensions differ.
pub fn matmul(a: &View, b: &View) -> Vec<f32> {
    assert!(available(), "the bf16 kernel needs AVX512F and AVX512_BF16");
    assert_eq!(a.cols, b.rows, "inner dimensions differ");
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if m == 0 || n == 0 || k == 0 {
        return vec![0f32; m * n];
    }
    // Not zeroed: the first pass over the reduction (q0 = 0) stores every element of every tile.
    let mut c: Vec<f32> = Vec::with_capacity(m * n);
    let (pa, pb) = rayon::join(|| pack(a, MR), || pack(&b.t(), NR));
    let kp = pairs(k);
    let (m_panels, n_panels) = (m.div_ceil(MR), n.div_ceil(NR));
    let (tiles_m, tiles_n) = (m_panels.div_ceil(TILE_M), n_panels.div_ceil(TILE_N));
    let out = Shared(c.as_mut_ptr());
    (0..tiles_m * tiles_n).into_par_iter().for_each(|tile| {
        let out = out;
        let (tm, tn) = (tile / tiles_n, tile % tiles_n);
        let (i0, i1) = (tm * TILE_M, ((tm + 1) * TILE_M).min(m_panels));
        let (j0, j1) = (tn * TILE_N, ((tn + 1) * TILE_N).min(n_panels));
        let mut q0 = 0;
        while q0 < kp {
            let kc = KC.min(kp - q0);
            for j in j0..j1 {
                let cols = NR.min(n - j * NR);
                for i in i0..i1 {
                    let rows = MR.min(m - i * MR);
                    // SAFETY: `available()` was asserted; the panel offsets stay inside the packed
                    // buffers (q0 + kc <= kp) and this tile alone writes rows i*MR.. and
                    // columns j*NR.. of C, bounded by `rows` and `cols`.
                    #[cfg(target_arch = "x86_64")]
                    unsafe {
                        micro_kernel(
                            kc,
                            pa.as_ptr().add(i * kp * MR + q0 * MR),
                            pb.as_ptr().add(j * kp * NR + q0 * NR),
                            out.0.add(i * MR * n + j * NR),
                            n,
                            rows,
                            cols,
                            q0 > 0,
                        );
                    }
                }
            }
            q0 += kc;
        }
    });
    // SAFETY: the tiles cover every (row, column) of C and each stored it at q0 = 0.
    unsafe { c.set_len(m * n) };
    c
}
