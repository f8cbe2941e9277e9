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
//! α = 1/2, from a calibration batch.
//!
//! Three kernels compute the same integers and the same f32 epilogue, so the numbers do not depend
//! on the CPU ([`Int8Kernel`], chosen at run time):
//! - **AVX512_VNNI**: `vpdpbusd` multiplies *unsigned* by signed bytes (64 products per
//!   instruction), so x is stored as `qx + 128` and the kernel subtracts `128 · Σ_k qw_jk` (kept per
//!   column) from the integer sum, which stays exact: `|Σ| ≤ k · 255 · 127` fits i32 for any `k`
//!   below 66 000. W is packed in panels of 32 columns, each as groups of four consecutive reduction
//!   indices per column (64 bytes = one zmm per 16 columns); a 12 × 32 register block.
//! - **AVX2**: `vpmaddwd` multiplies pairs of i16 and adds each pair into an i32 (16 products per
//!   instruction, against 8 f32 FMAs, on the same ports). Bytes would need `vpmaddubsw`, whose i16
//!   pair sums saturate for 8-bit operands (255 · 127 · 2 > 32 767), so both operands are widened to
//!   i16 once: W when it is packed (panels of 16 columns, pairs of reduction indices), x as it is
//!   quantized. A 6 × 16 register block in 12 ymm accumulators.
//! - **Portable** code for every other CPU, on either packing.
//!
//! Work is split into tiles (rows × column panels), each one rayon task over the whole reduction,
//! so results do not depend on the thread count either.

use super::cpu::Shared;
use crate::engine::{Error, Result};
use candle_core::{DType, Tensor};
use rayon::prelude::*;

mod rows;
mod weight;
#[cfg(target_arch = "x86_64")]
mod x86;

use rows::{quantize_rows, QuantizedRows, Rows};
pub use weight::{smoothing_factors, PackedWeight, SMOOTHING_ALPHA};
use weight::{Packing, Panels};

/// Added to the signed activations to make them VNNI's unsigned operand.
const OFFSET: i32 = 128;

/// Which int8 kernel runs the products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Int8Kernel {
    /// AVX512F + AVX512BW + AVX512_VNNI.
    Vnni,
    /// AVX2.
    Avx2,
    /// Scalar code: the same numbers, several times slower than the f32 GEMM.
    Portable,
}

impl Int8Kernel {
    /// The fastest kernel this CPU runs, detected once.
    pub fn detected() -> Self {
        static DETECTED: std::sync::OnceLock<Int8Kernel> = std::sync::OnceLock::new();
        *DETECTED.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                use crate::engine::kernels::isa::has;
                if has!("avx512f") && has!("avx512bw") && has!("avx512vnni") {
                    return Int8Kernel::Vnni;
                }
                if has!("avx2") {
                    return Int8Kernel::Avx2;
                }
            }
            Int8Kernel::Portable
        })
    }

    /// The name in notes and benchmark tables.
    pub fn name(self) -> &'static str {
        match self {
            Self::Vnni => "AVX512_VNNI",
            Self::Avx2 => "AVX2",
            Self::Portable => "portable",
        }
    }

    fn layout(self) -> Packing {
        match self {
            Self::Vnni => Packing::Quads,
            // The portable kernel reads either packing; pairs are what AVX2 machines also use.
            Self::Avx2 | Self::Portable => Packing::Pairs,
        }
    }
}

/// True when this CPU has a SIMD int8 kernel (AVX512_VNNI or AVX2), faster than its f32 GEMM.
pub fn available() -> bool {
    Int8Kernel::detected() != Int8Kernel::Portable
}

/// Register blocks of rows per task.
const TILE_M: usize = 8;
/// Columns per task (whole panels).
const TILE_COLS: usize = 128;

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

/// One register block: `rows` rows of quantized x (from `r0`) times one panel of W, into `out`
/// (row stride `ldc`), `cols` ≤ the panel's columns valid.
struct Block<'a> {
    x: &'a QuantizedRows,
    r0: usize,
    w: &'a PackedWeight,
    panel: usize,
    cols: usize,
    out: *mut f32,
    ldc: usize,
}

impl Block<'_> {
    fn col_scale(&self) -> &[f32] {
        let nr = self.w.packing.nr();
        &self.w.scale[self.panel * nr..(self.panel + 1) * nr]
    }

    fn comp(&self) -> &[i32] {
        let nr = self.w.packing.nr();
        &self.w.comp[self.panel * nr..(self.panel + 1) * nr]
    }

    /// The epilogue every kernel shares: `((Σ − comp) · sw) · sx`.
    #[inline(always)]
    fn finish(&self, r: usize, c: usize, sum: i32) -> f32 {
        ((sum - self.comp()[c]) as f32 * self.col_scale()[c]) * self.x.scale[self.r0 + r]
    }

    /// The portable kernel: the same integer sums and the same epilogue as the SIMD ones, on
    /// either packing.
    fn portable(&self, rows: usize) {
        let (nr, grp, k) = (self.w.packing.nr(), self.w.packing.group(), self.x.stride);
        let base = self.panel * k * nr;
        let weight = |kk: usize, c: usize| -> i32 {
            let i = base + (kk / grp) * nr * grp + c * grp + kk % grp;
            match &self.w.data {
                Panels::Quads(d) => d[i] as i32,
                Panels::Pairs(d) => d[i] as i32,
            }
        };
        for r in 0..rows {
            let row = (self.r0 + r) * self.x.stride;
            for c in 0..self.cols {
                let sum: i32 = match &self.x.data {
                    Rows::Bytes(b) => (0..k).map(|kk| b[row + kk] as i32 * weight(kk, c)).sum(),
                    Rows::Words(w) => (0..k).map(|kk| w[row + kk] as i32 * weight(kk, c)).sum(),
                };
                // SAFETY: the caller hands each block disjoint rows/columns of `out`.
                unsafe { *self.out.add(r * self.ldc + c) = self.finish(r, c, sum) };
            }
        }
    }

    fn run(&self, rows: usize, kernel: Int8Kernel) {
        #[allow(unused_macros)] // x86-64 only
        macro_rules! dispatch {
            ($f:ident, $($n:literal)+) => {
                match rows { $($n => self.$f::<$n>(),)+ _ => self.$f::<1>() }
            };
        }
        #[cfg(target_arch = "x86_64")]
        match kernel {
            // SAFETY: `kernel` is one this CPU runs on this packing ([`PackedWeight::kernel`]);
            // x holds `rows` rows from `r0` and the weight whole panels; the (masked) stores
            // write only the block's own `rows × cols` elements of `out`.
            Int8Kernel::Vnni => return unsafe { dispatch!(vnni, 12 11 10 9 8 7 6 5 4 3 2) },
            Int8Kernel::Avx2 => return unsafe { dispatch!(avx2, 6 5 4 3 2) },
            Int8Kernel::Portable => {}
        }
        let _ = kernel;
        self.portable(rows)
    }
}

/// `x · Wᵀ` for row-major `x` `[m, in_dim]`: a new row-major `[m, out_dim]`, on the fastest
/// kernel this CPU runs for the weight's packing.
pub fn matmul(x: &[f32], m: usize, w: &PackedWeight) -> Vec<f32> {
    product(x, m, w, w.kernel())
}

/// [`matmul`] in portable code only (the same numbers, slower): what CPUs without AVX2 run.
pub fn matmul_portable(x: &[f32], m: usize, w: &PackedWeight) -> Vec<f32> {
    product(x, m, w, Int8Kernel::Portable)
}

fn product(x: &[f32], m: usize, w: &PackedWeight, kernel: Int8Kernel) -> Vec<f32> {
    let (k, n) = (w.in_dim, w.out_dim);
    assert_eq!(x.len(), m * k, "int8 matmul: x must be [{m}, {k}]");
    let xq = quantize_rows(x, m, k, &w.inv_smooth, w.packing, kernel != Int8Kernel::Portable);
    let (mr, nr) = (w.packing.mr(), w.packing.nr());
    let tile_n = TILE_COLS / nr;
    let (tiles_m, tiles_n) = (m.div_ceil(mr * TILE_M), n.div_ceil(nr * tile_n));
    // Not zero-filled: the blocks write every element once.
    let mut y = Vec::<f32>::with_capacity(m * n);
    let out = Shared(y.as_mut_ptr());
    (0..tiles_m * tiles_n).into_par_iter().for_each(|tile| {
        // Captures the `Shared` whole (its raw pointer alone is not `Send`).
        #[allow(clippy::redundant_locals)]
        let out = out;
        let (tm, tn) = (tile / tiles_n, tile % tiles_n);
        let rows = (tm * mr * TILE_M..((tm + 1) * mr * TILE_M).min(m)).step_by(mr);
        for p in tn * tile_n..((tn + 1) * tile_n).min(n.div_ceil(nr)) {
            for r0 in rows.clone() {
                let block = Block {
                    x: &xq,
                    r0,
                    w,
                    panel: p,
                    cols: nr.min(n - p * nr),
                    // SAFETY: rows r0.. and panel p's columns of y belong to this task alone.
                    out: unsafe { out.0.add(r0 * n + p * nr) },
                    ldc: n,
                };
                block.run(mr.min(m - r0), kernel);
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
