//! `y = x · Wᵀ` in int8: W quantized once per output row, x quantized per row as it arrives
//! (dynamic, symmetric, round to nearest even), the products summed exactly in i32 and scaled back
//! to f32 — the W8A8 scheme of SmoothQuant and of PyTorch's dynamic quantization, without outlier
//! handling. For a frozen model's forward (the teacher's): it has no gradient.
//!
//! With `sx = max|x_i| / 127` and `sw = max|W_j| / 127`,
//! `y_ij = sx_i · sw_j · Σ_k qx_ik · qw_jk`, where `qx = round(x / sx)` and `qw = round(W / sw)`
//! lie in [-127, 127]. Before both are quantized, SmoothQuant's per-channel smoothing (Xiao et al.
//! 2023) may move part of each input channel's range from x into W: `x_k / s_k` and `W_jk · s_k`
//! leave the product unchanged but tame the few activation channels whose outliers would otherwise
//! set every row's scale. [`PackedWeight::calibrated`] takes `s_k = max|x_k|^α / max|W_k|^(1−α)`,
//! α = 1/2, from a calibration batch. AVX512_VNNI's `vpdpbusd` multiplies *unsigned* by signed bytes, so x is
//! stored as `qx + 128` and the kernel subtracts `128 · Σ_k qw_jk` (kept per column) from the
//! integer sum, which stays exact: `|Σ| ≤ k · 255 · 127` fits i32 for any `k` below 66 000.
//!
//! Layout: W is packed once into panels of [`NR`] columns, each as groups of four consecutive
//! reduction indices per column (64 bytes = one zmm per 16 columns), which is what `vpdpbusd`
//! consumes; the quantized rows of x are read in place, four bytes broadcast per row. The
//! micro-kernel keeps an `MR × NR` block of y in 24 zmm registers of i32. Work is split into tiles
//! (rows × column panels), each one rayon task over the whole reduction, so results do not depend
//! on the thread count. A portable path computes the same integers and the same f32 epilogue, so
//! both give identical results.

use super::cpu::Shared;
use crate::engine::{Error, Result};
use candle_core::{DType, Tensor};
use rayon::prelude::*;

/// Rows of x per register block.
pub const MR: usize = 12;
/// Columns of W per packed panel (two zmm of i32).
pub const NR: usize = 32;
/// Register blocks of rows per task.
const TILE_M: usize = 8;
/// Panels per task.
const TILE_N: usize = 4;
/// Added to the signed activations to make them the unsigned operand.
const OFFSET: i32 = 128;

/// True when this CPU runs the VNNI kernel (AVX512F, AVX512BW and AVX512_VNNI), checked once.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vnni")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A weight `[out, in]` quantized to int8 per output row and packed for the kernel.
pub struct PackedWeight {
    out_dim: usize,
    in_dim: usize,
    /// `[panel][in_dim / 4 rounded up][NR][4]`; padding columns and reduction indices are zero.
    data: Vec<i8>,
    /// Per output column (padded to whole panels): the weight row's scale.
    scale: Vec<f32>,
    /// Per output column: `128 · Σ_k qw_jk`.
    comp: Vec<i32>,
    /// Per input column: `1 / s_k` of the smoothing that moved `s_k` into W's column k (ones
    /// without smoothing); x is multiplied by it before it is quantized.
    inv_smooth: Vec<f32>,
}

/// SmoothQuant's migration strength: 1/2 splits each channel's range evenly between x and W.
pub const SMOOTHING_ALPHA: f32 = 0.5;

/// Per input channel `s_k = amax_k^α / wmax_k^(1−α)` (1 where either maximum is zero or not
/// finite), from the calibration activations' and the weight's largest magnitudes per channel.
pub fn smoothing_factors(act_absmax: &[f32], weight_absmax: &[f32], alpha: f32) -> Vec<f32> {
    act_absmax
        .iter()
        .zip(weight_absmax)
        .map(|(&a, &w)| {
            let s = a.powf(alpha) / w.powf(1.0 - alpha);
            if a > 0.0 && w > 0.0 && s.is_finite() && s > 0.0 {
                s
            } else {
                1.0
            }
        })
        .collect()
}

fn groups(k: usize) -> usize {
    k.div_ceil(4)
}

/// `(scale, 1 / scale)` for a row whose largest magnitude is `absmax`; a zero row gets `(0, 0)`.
/// A row holding NaN or ±∞ gets a NaN scale, so its products come out NaN instead of finite
/// nonsense.
fn row_scale(absmax: f32, non_finite: bool) -> (f32, f32) {
    if non_finite || !absmax.is_finite() {
        (f32::NAN, 0.0)
    } else if absmax == 0.0 {
        (0.0, 0.0)
    } else {
        (absmax / 127.0, 127.0 / absmax)
    }
}

/// `round(v · inv)` to nearest even, in [-127, 127] (the scale makes it so; clamped for safety).
#[inline(always)]
fn quantize(v: f32, inv: f32) -> i32 {
    ((v * inv).round_ties_even() as i32).clamp(-127, 127)
}

impl PackedWeight {
    /// Quantizes and packs `w`, row-major `[out_dim, in_dim]`, or `[in_dim, out_dim]` when
    /// `transposed` (GPT-2's `Conv1D`), its column k multiplied by `smooth[k]` when given (the
    /// inputs are then divided by it).
    pub fn new(w: &[f32], out_dim: usize, in_dim: usize, transposed: bool, smooth: Option<&[f32]>) -> Result<Self> {
        if w.len() != out_dim * in_dim || out_dim == 0 || in_dim == 0 || smooth.is_some_and(|s| s.len() != in_dim) {
            return Err(Error::Invalid(format!(
                "int8 weight: {} values for a [{out_dim}, {in_dim}] matrix ({} smoothing factors)",
                w.len(),
                smooth.map_or(0, |s| s.len())
            )));
        }
        let factor = |k: usize| smooth.map_or(1.0, |s| s[k]);
        let at = |j: usize, k: usize| factor(k) * if transposed { w[k * out_dim + j] } else { w[j * in_dim + k] };
        let panels = out_dim.div_ceil(NR);
        let g = groups(in_dim);
        let mut data = vec![0i8; panels * g * NR * 4];
        let mut scale = vec![0f32; panels * NR];
        let mut comp = vec![0i32; panels * NR];
        data.par_chunks_mut(g * NR * 4)
            .zip(scale.par_chunks_mut(NR).zip(comp.par_chunks_mut(NR)))
            .enumerate()
            .for_each(|(p, (panel, (scale, comp)))| {
                for c in 0..NR.min(out_dim - p * NR) {
                    let j = p * NR + c;
                    let absmax = (0..in_dim).map(|k| at(j, k).abs()).fold(0f32, f32::max);
                    let non_finite = (0..in_dim).any(|k| !at(j, k).is_finite());
                    let (s, inv) = row_scale(absmax, non_finite);
                    let mut sum = 0i32;
                    for k in 0..in_dim {
                        let q = quantize(at(j, k), inv);
                        panel[(k / 4) * NR * 4 + c * 4 + k % 4] = q as i8;
                        sum += q;
                    }
                    scale[c] = s;
                    comp[c] = OFFSET * sum;
                }
            });
        let inv_smooth = (0..in_dim).map(|k| 1.0 / factor(k)).collect();
        Ok(Self { out_dim, in_dim, data, scale, comp, inv_smooth })
    }

    /// The weight of a dense layer as a tensor, `[out, in]` (or `[in, out]` when `transposed`),
    /// without smoothing.
    pub fn from_tensor(w: &Tensor, transposed: bool) -> Result<Self> {
        let (out_dim, in_dim) = Self::dims(w, transposed)?;
        Self::new(&w.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?, out_dim, in_dim, transposed, None)
    }

    /// As [`Self::from_tensor`], smoothed for the activations `x` `[rows, in]` (a calibration
    /// batch) with [`SMOOTHING_ALPHA`].
    pub fn calibrated(w: &Tensor, transposed: bool, x: &Tensor) -> Result<Self> {
        let (out_dim, in_dim) = Self::dims(w, transposed)?;
        let w = w.to_dtype(DType::F32)?;
        let x = x.to_dtype(DType::F32)?.reshape(((), in_dim))?;
        let act = x.abs()?.max(0)?.to_vec1::<f32>()?;
        let weight = w.abs()?.max(if transposed { 1 } else { 0 })?.to_vec1::<f32>()?;
        let smooth = smoothing_factors(&act, &weight, SMOOTHING_ALPHA);
        Self::new(&w.flatten_all()?.to_vec1::<f32>()?, out_dim, in_dim, transposed, Some(&smooth))
    }

    fn dims(w: &Tensor, transposed: bool) -> Result<(usize, usize)> {
        let (rows, cols) = w.dims2()?;
        Ok(if transposed { (cols, rows) } else { (rows, cols) })
    }

    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    pub fn in_dim(&self) -> usize {
        self.in_dim
    }

    /// Bytes held (packed weights, scales, compensations).
    pub fn bytes(&self) -> usize {
        self.data.len() + 4 * (self.scale.len() + self.comp.len())
    }
}

/// The rows of x quantized: `qx + 128` as bytes, each row padded with 128 (zero) to whole groups
/// of four, and each row's scale.
struct QuantizedRows {
    bytes: Vec<u8>,
    scale: Vec<f32>,
    stride: usize,
}

fn quantize_rows(x: &[f32], m: usize, k: usize, inv_smooth: &[f32], vnni: bool) -> QuantizedRows {
    let stride = groups(k) * 4;
    let mut bytes = vec![OFFSET as u8; m * stride];
    let mut scale = vec![0f32; m];
    bytes.par_chunks_mut(stride).zip(scale.par_iter_mut()).enumerate().for_each(|(i, (dst, s))| {
        let row = &x[i * k..(i + 1) * k];
        *s = quantize_row(row, inv_smooth, &mut dst[..k], vnni);
    });
    QuantizedRows { bytes, scale, stride }
}

/// With `v = row ⊙ f` (the smoothed row): writes `round(v / s) + 128` into `dst` and returns
/// `s = max|v| / 127`.
fn quantize_row(row: &[f32], f: &[f32], dst: &mut [u8], vnni: bool) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if vnni && available() {
        // SAFETY: the features were detected; `f` and `dst` have `row.len()` elements.
        return unsafe { quantize_row_avx512(row, f, dst) };
    }
    let absmax = row.iter().zip(f).fold(0f32, |m, (v, f)| m.max((v * f).abs()));
    let (s, inv) = row_scale(absmax, row.iter().zip(f).any(|(v, f)| !(v * f).is_finite()));
    for ((d, &v), &f) in dst.iter_mut().zip(row).zip(f) {
        *d = (quantize(v * f, inv) + OFFSET) as u8;
    }
    s
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn quantize_row_avx512(row: &[f32], f: &[f32], dst: &mut [u8]) -> f32 {
    use std::arch::x86_64::*;
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

/// One register block: rows `a` (`R` rows of `stride` bytes) times panel `b`, into `out`
/// (row stride `ldc`), `cols` ≤ [`NR`] columns valid.
struct Block<'a> {
    a: &'a [u8],
    stride: usize,
    row_scale: &'a [f32],
    b: &'a [i8],
    col_scale: &'a [f32],
    comp: &'a [i32],
    cols: usize,
    out: *mut f32,
    ldc: usize,
}

impl Block<'_> {
    /// The portable kernel: the same integer sums and the same epilogue as the VNNI one.
    fn portable(&self, rows: usize) {
        let g = self.b.len() / (NR * 4);
        for r in 0..rows {
            let a = &self.a[r * self.stride..r * self.stride + g * 4];
            for c in 0..self.cols {
                let mut sum = 0i32;
                for (q, quad) in a.chunks_exact(4).enumerate() {
                    let w = &self.b[q * NR * 4 + c * 4..q * NR * 4 + c * 4 + 4];
                    sum += quad.iter().zip(w).map(|(&x, &w)| x as i32 * w as i32).sum::<i32>();
                }
                let y = ((sum - self.comp[c]) as f32 * self.col_scale[c]) * self.row_scale[r];
                // SAFETY: the caller hands each block disjoint rows/columns of `out`.
                unsafe { *self.out.add(r * self.ldc + c) = y };
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn vnni<const R: usize>(&self) {
        use std::arch::x86_64::*;
        let g = self.b.len() / (NR * 4);
        let (a, b) = (self.a.as_ptr(), self.b.as_ptr());
        let mut acc = [[_mm512_setzero_si512(); 2]; R];
        for q in 0..g {
            let b0 = _mm512_loadu_si512(b.add(q * NR * 4) as *const __m512i);
            let b1 = _mm512_loadu_si512(b.add(q * NR * 4 + 64) as *const __m512i);
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_epi32((a.add(r * self.stride + 4 * q) as *const i32).read_unaligned());
                acc[0] = _mm512_dpbusd_epi32(acc[0], x, b0);
                acc[1] = _mm512_dpbusd_epi32(acc[1], x, b1);
            }
        }
        let valid = |h: usize| -> u16 {
            let n = self.cols.saturating_sub(16 * h).min(16);
            ((1u32 << n) - 1) as u16
        };
        for (r, acc) in acc.iter().enumerate() {
            let s = _mm512_set1_ps(self.row_scale[r]);
            for (h, &v) in acc.iter().enumerate() {
                let comp = _mm512_loadu_si512(self.comp.as_ptr().add(16 * h) as *const __m512i);
                let v = _mm512_cvtepi32_ps(_mm512_sub_epi32(v, comp));
                let y = _mm512_mul_ps(_mm512_mul_ps(v, _mm512_loadu_ps(self.col_scale.as_ptr().add(16 * h))), s);
                _mm512_mask_storeu_ps(self.out.add(r * self.ldc + 16 * h), valid(h), y);
            }
        }
    }

    fn run(&self, rows: usize, vnni: bool) {
        #[cfg(target_arch = "x86_64")]
        if vnni && available() {
            // SAFETY: the features were detected; `a` holds `rows` rows of `stride ≥ 4·g` bytes,
            // `b` a whole panel, the scales and compensations whole panels; the masked stores
            // write only the block's own `rows × cols` elements of `out`.
            unsafe {
                match rows {
                    12 => self.vnni::<12>(),
                    11 => self.vnni::<11>(),
                    10 => self.vnni::<10>(),
                    9 => self.vnni::<9>(),
                    8 => self.vnni::<8>(),
                    7 => self.vnni::<7>(),
                    6 => self.vnni::<6>(),
                    5 => self.vnni::<5>(),
                    4 => self.vnni::<4>(),
                    3 => self.vnni::<3>(),
                    2 => self.vnni::<2>(),
                    _ => self.vnni::<1>(),
                }
            }
            return;
        }
        self.portable(rows)
    }
}

/// `x · Wᵀ` for row-major `x` `[m, in_dim]`: a new row-major `[m, out_dim]`, on the VNNI kernel
/// where the CPU has it.
pub fn matmul(x: &[f32], m: usize, w: &PackedWeight) -> Vec<f32> {
    product(x, m, w, true)
}

/// [`matmul`] in portable code only (the same numbers, slower): what CPUs without AVX512_VNNI run.
pub fn matmul_portable(x: &[f32], m: usize, w: &PackedWeight) -> Vec<f32> {
    product(x, m, w, false)
}

fn product(x: &[f32], m: usize, w: &PackedWeight, vnni: bool) -> Vec<f32> {
    let (k, n) = (w.in_dim, w.out_dim);
    assert_eq!(x.len(), m * k, "int8 matmul: x must be [{m}, {k}]");
    let xq = quantize_rows(x, m, k, &w.inv_smooth, vnni);
    let panel_len = groups(k) * NR * 4;
    let (tiles_m, tiles_n) = (m.div_ceil(MR * TILE_M), n.div_ceil(NR * TILE_N));
    // Not zero-filled: the blocks write every element once.
    let mut y = Vec::<f32>::with_capacity(m * n);
    let out = Shared(y.as_mut_ptr());
    (0..tiles_m * tiles_n).into_par_iter().for_each(|tile| {
        // Captures the `Shared` whole (its raw pointer alone is not `Send`).
        #[allow(clippy::redundant_locals)]
        let out = out;
        let (tm, tn) = (tile / tiles_n, tile % tiles_n);
        let rows = (tm * MR * TILE_M..((tm + 1) * MR * TILE_M).min(m)).step_by(MR);
        for p in tn * TILE_N..((tn + 1) * TILE_N).min(n.div_ceil(NR)) {
            for r0 in rows.clone() {
                let block = Block {
                    a: &xq.bytes[r0 * xq.stride..],
                    stride: xq.stride,
                    row_scale: &xq.scale[r0..],
                    b: &w.data[p * panel_len..(p + 1) * panel_len],
                    col_scale: &w.scale[p * NR..(p + 1) * NR],
                    comp: &w.comp[p * NR..(p + 1) * NR],
                    cols: NR.min(n - p * NR),
                    // SAFETY: rows r0.. and panel p's columns of y belong to this task alone.
                    out: unsafe { out.0.add(r0 * n + p * NR) },
                    ldc: n,
                };
                block.run(MR.min(m - r0), vnni);
            }
        }
    });
    // SAFETY: the tiles cover all m × n elements, each written above.
    unsafe { y.set_len(m * n) };
    y
}

/// `x · Wᵀ` for a 2-D f32 CPU tensor `x` `[m, in_dim]` that needs no gradient.
pub fn linear(x: &Tensor, w: &PackedWeight) -> Result<Tensor> {
    let (m, k) = x.dims2()?;
    if k != w.in_dim || x.dtype() != DType::F32 || !x.device().is_cpu() || x.track_op() {
        return Err(Error::Invalid(format!(
            "int8 linear takes an f32 CPU input [m, {}] without gradient, got {:?} {:?}",
            w.in_dim,
            x.dims(),
            x.dtype()
        )));
    }
    let x = x.contiguous()?;
    let y = {
        let (storage, layout) = x.storage_and_layout();
        let candle_core::Storage::Cpu(s) = &*storage else { unreachable!("checked: CPU tensor") };
        matmul(super::cpu::f32_data(s, layout, "int8 linear")?, m, w)
    };
    Ok(Tensor::from_vec(y, (m, w.out_dim), x.device())?)
}
