//! Branch-free f32 row reductions and `exp` written so LLVM vectorizes them, with an AVX-512 build
//! of each row routine chosen at run time ([`with_wide_simd`]).
//!
//! `exp` is the Cephes single-precision algorithm (range reduction by ln 2 in two parts, a degree-5
//! polynomial): within 2 ulp of `f32::exp` on [-87, 88], NaN in → NaN out, and about ten times
//! faster here than the libm call candle makes per element.

/// `e^x` for f32, vectorizable (no branches, no libm call). Inputs below -87.3 give ~1e-38, not 0.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23: adding and subtracting rounds to an integer
                                     // Comparisons (not min/max) so that NaN passes through.
    let x = if x < -87.3 { -87.3 } else { x };
    let x = if x > 88.3 { 88.3 } else { x };
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    // The integer n read from the shifted float's low bits: unlike `n as i32` (a saturating,
    // NaN-checked conversion) this vectorizes.
    let ni = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = x - n * C1 - n * C2;
    let z = r * r;
    let p = ((((1.987_569_2e-4 * r + 1.398_2e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1) * r
        + 5.000_000_1e-1;
    let y = p * z + r + 1.0;
    y * f32::from_bits((ni.wrapping_add(127) as u32) << 23)
}

const LANES: usize = 16;

/// Largest element (NaN-ignoring, like `f32::max`; NaN still reaches the sums).
#[inline(always)]
pub fn max(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = if x > *a { x } else { *a };
        }
    }
    let mut m = tail.iter().fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
    for a in acc {
        m = if a > m { a } else { m };
    }
    m
}

/// Σ f(x) in 16 f32 lanes, added up in f64.
#[inline(always)]
pub fn sum_map(xs: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    let mut acc = [0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += f(x);
        }
    }
    acc.iter().map(|&a| a as f64).sum::<f64>() + tail.iter().map(|&x| f(x) as f64).sum::<f64>()
}

/// Σ f(x, y) over two rows of the same length, in 16 f32 lanes, added up in f64.
#[inline(always)]
pub fn sum_map2(xs: &[f32], ys: &[f32], f: impl Fn(f32, f32) -> f32) -> f64 {
    let mut acc = [0f32; LANES];
    let (xc, yc) = (xs.chunks_exact(LANES), ys.chunks_exact(LANES));
    let (xt, yt) = (xc.remainder(), yc.remainder());
    for (cx, cy) in xc.zip(yc) {
        for ((a, &x), &y) in acc.iter_mut().zip(cx).zip(cy) {
            *a += f(x, y);
        }
    }
    acc.iter().map(|&a| a as f64).sum::<f64>() + xt.iter().zip(yt).map(|(&x, &y)| f(x, y) as f64).sum::<f64>()
}

/// Runs `f` compiled for AVX-512 when the CPU has it, for AVX2 + FMA when it has those (16 lanes
/// as two 8-wide registers), for the baseline (SSE2) otherwise. The closure must be inlined into
/// that build to get its features: pass it as `with_wide_simd(#[inline(always)] || { … })` (without
/// the attribute LLVM keeps a large closure out of line, compiled for the baseline CPU). Rust does
/// not contract `a * b + c` into an FMA by itself, so every tier computes the same numbers.
#[inline(always)]
pub fn with_wide_simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2,fma")]
        unsafe fn wide<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        static LEVEL: std::sync::OnceLock<u8> = std::sync::OnceLock::new();
        let level = *LEVEL.get_or_init(|| {
            if super::isa::has!("avx512f") {
                2
            } else if super::isa::has!("avx2") && super::isa::has!("fma") {
                1
            } else {
                0
            }
        });
        match level {
            // SAFETY: the features were detected on this CPU.
            2 => return unsafe { wide(f) },
            1 => return unsafe { avx2(f) },
            _ => {}
        }
    }
    f()
}
