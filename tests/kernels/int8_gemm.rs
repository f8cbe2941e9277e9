//! The int8 product of a frozen layer (AVX512_VNNI or AVX2 kernel, or the portable form elsewhere): the W8A8
//! arithmetic exactly as documented, the same numbers from both paths, edge shapes, smoothing,
//! zero and NaN rows, and which layers the `int8` precision routes to it.

use crate::common;

use candle_core::{Device, Tensor, Var};
use distill_tui::engine::kernels::autocast::{self, Precision};
use distill_tui::engine::kernels::int8_gemm::{self, matmul, matmul_portable, Int8Kernel, PackedWeight};
use distill_tui::engine::models::layers::Linear;

/// xorshift values in [-1, 1), every seventh ten times larger.
fn values(n: usize, seed: u64) -> Vec<f32> {
    common::spread_values(n, seed, 10.0)
}

/// Row `r` of a row-major matrix quantized as documented: `s = max|r| / 127`,
/// `q = round_half_even(v · 127 / max|r|)`.
fn quantize(row: &[f32]) -> (f32, Vec<i32>) {
    let absmax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
    if absmax == 0.0 {
        return (0.0, vec![0; row.len()]);
    }
    let inv = 127.0 / absmax;
    (absmax / 127.0, row.iter().map(|v| (v * inv).round_ties_even() as i32).collect())
}

/// `y_ij = (Σ_k qx_ik · qw_jk) · sw_j · sx_i`, the integer sum exact.
fn reference(x: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> Vec<f32> {
    let xs: Vec<_> = x.chunks(k).map(quantize).collect();
    let ws: Vec<_> = w.chunks(k).map(quantize).collect();
    let mut y = Vec::with_capacity(m * n);
    for (sx, qx) in &xs {
        for (sw, qw) in &ws {
            let dot: i32 = qx.iter().zip(qw).map(|(a, b)| a * b).sum();
            y.push((dot as f32 * sw) * sx);
        }
    }
    y
}

fn transpose(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols * rows).map(|i| w[(i % rows) * cols + i / rows]).collect()
}

fn relative_error(got: &[f32], want: &[f32]) -> f64 {
    let num: f64 = got.iter().zip(want).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
    let den: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
    (num / den).sqrt()
}

#[test]
fn both_paths_compute_the_documented_w8a8_product_exactly_at_every_edge_shape() {
    // m: below, at and past the 12-row block; k: not a multiple of 4 or of 16; n: below, at and
    // past the 32-column panel.
    for (m, k, n) in [(1, 1, 1), (13, 5, 33), (100, 130, 70), (25, 64, 32), (12, 4, 64), (37, 17, 5)] {
        let x = values(m * k, (m * 31 + k) as u64);
        let w = values(n * k, (n * 17 + k) as u64);
        let want = reference(&x, m, k, &w, n);
        // Every kernel's packing, whichever this CPU runs: a packing whose kernel the CPU lacks
        // runs in portable code, which must give the same numbers too.
        for kernel in [Int8Kernel::Vnni, Int8Kernel::Avx2, Int8Kernel::Portable] {
            let packed = PackedWeight::for_kernel(&w, n, k, false, None, kernel).unwrap();
            assert_eq!((packed.out_dim(), packed.in_dim()), (n, k));
            let fast = matmul(&x, m, &packed);
            let portable = matmul_portable(&x, m, &packed);
            let ran = packed.kernel().name();
            for (i, ((f, p), r)) in fast.iter().zip(&portable).zip(&want).enumerate() {
                assert_eq!(
                    f.to_bits(),
                    r.to_bits(),
                    "[{m}, {k}, {n}] {kernel:?} element {i}: {ran} {f} vs reference {r}"
                );
                assert_eq!(p.to_bits(), r.to_bits(), "[{m}, {k}, {n}] {kernel:?} element {i}: portable {p} vs {r}");
            }
            // A weight stored [in, out] (GPT-2 Conv1D) packs to the same thing.
            let t = PackedWeight::for_kernel(&transpose(&w, n, k), n, k, true, None, kernel).unwrap();
            assert_eq!(matmul(&x, m, &t), fast, "[{m}, {k}, {n}] {kernel:?} transposed");
        }
    }
}

#[test]
fn the_cpu_runs_its_simd_kernel_on_its_own_packing() {
    // Every CPU this project has been measured on has AVX2 at least: the int8 teacher must not
    // silently take the portable path there.
    let detected = Int8Kernel::detected();
    println!("int8 kernel on this CPU: {}", detected.name());
    let packed = PackedWeight::new(&values(64, 1), 8, 8, false, None).unwrap();
    assert_eq!(packed.kernel(), detected);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        assert_ne!(detected, Int8Kernel::Portable);
        assert!(int8_gemm::available());
    }
}

#[test]
fn int8_stays_near_f32_and_smoothing_tames_an_outlier_channel() {
    let (m, k, n) = (64, 96, 48);
    let dev = Device::Cpu;
    let mut x = values(m * k, 3);
    let w = values(n * k, 4);
    let wt = Tensor::from_vec(w.clone(), (n, k), &dev).unwrap();
    let exact = |x: &[f32]| {
        let xt = Tensor::from_vec(x.to_vec(), (m, k), &dev).unwrap();
        xt.matmul(&wt.t().unwrap()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
    };
    let plain = PackedWeight::new(&w, n, k, false, None).unwrap();
    let err = relative_error(&matmul(&x, m, &plain), &exact(&x));
    assert!(err < 0.02, "int8 relative error {err}");
    // One activation channel 100× the others (as in LLM residual streams): every row's scale is set
    // by it, and the other channels lose their resolution unless the channel is smoothed.
    for row in x.chunks_mut(k) {
        row[5] *= 100.0;
    }
    let want = exact(&x);
    let plain_err = relative_error(&matmul(&x, m, &plain), &want);
    let xt = Tensor::from_vec(x.clone(), (m, k), &dev).unwrap();
    let smoothed = PackedWeight::calibrated(&wt, false, &xt).unwrap();
    let smooth_err = relative_error(&matmul(&x, m, &smoothed), &want);
    assert!(smooth_err < 0.5 * plain_err, "smoothed {smooth_err} vs plain {plain_err}");
    assert_eq!(matmul_portable(&x, m, &smoothed), matmul(&x, m, &smoothed), "both paths smooth alike");
    // The factors follow SmoothQuant: sqrt(max|x_k| / max|W_k|), 1 where a maximum is zero.
    let s = int8_gemm::smoothing_factors(&[4.0, 0.0, 9.0], &[1.0, 2.0, 0.0], 0.5);
    assert_eq!(s, vec![2.0, 1.0, 1.0]);
}

#[test]
fn a_zero_row_gives_zeros_and_a_non_finite_row_gives_nan_not_finite_nonsense() {
    let (k, n) = (20, 40);
    let w = values(n * k, 9);
    let packed = PackedWeight::new(&w, n, k, false, None).unwrap();
    let mut x = values(3 * k, 10);
    x[..k].fill(0.0);
    x[k + 7] = f32::NAN;
    x[2 * k + 3] = f32::INFINITY;
    for y in [matmul(&x, 3, &packed), matmul_portable(&x, 3, &packed)] {
        assert!(y[..n].iter().all(|v| *v == 0.0), "zero row: {:?}", &y[..n]);
        assert!(y[n..].iter().all(|v| v.is_nan()), "NaN and ∞ rows: {:?}", &y[n..]);
    }
}

#[test]
fn bad_shapes_are_refused_with_the_shapes_named() {
    let err = PackedWeight::new(&[1.0; 10], 3, 4, false, None).err().unwrap().to_string();
    assert!(err.contains("10 values") && err.contains("[3, 4]"), "{err}");
    let err = PackedWeight::new(&[1.0; 12], 3, 4, false, Some(&[1.0; 3])).err().unwrap().to_string();
    assert!(err.contains("3 smoothing factors"), "{err}");
    let packed = PackedWeight::new(&[1.0; 12], 3, 4, false, None).unwrap();
    let x = Tensor::ones((2, 5), candle_core::DType::F32, &Device::Cpu).unwrap();
    let err = int8_gemm::linear(&x, &packed).err().unwrap().to_string();
    assert!(err.contains("[m, 4]") && err.contains("[2, 5]"), "{err}");
}

/// Under `Precision::Int8` a frozen layer multiplies in int8 (close to f32, not equal); a trainable
/// weight (a `Var`) or an input that needs a gradient keeps the f32 product, bit for bit.
#[test]
fn the_int8_precision_takes_frozen_layers_only() {
    let dev = Device::Cpu;
    let (m, k, n) = (24, 40, 36);
    let x = Tensor::from_vec(values(m * k, 21), (m, k), &dev).unwrap();
    let w = Tensor::from_vec(values(n * k, 22), (n, k), &dev).unwrap();
    let f32_y = |layer: &Linear, x: &Tensor| layer.forward(x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let frozen = Linear::from_weight(w.clone());
    let want = f32_y(&frozen, &x);
    let int8 = {
        let _int8 = autocast::enter(Precision::Int8);
        f32_y(&frozen, &x)
    };
    assert_ne!(int8, want, "a frozen layer multiplies in int8");
    assert!(relative_error(&int8, &want) < 0.02, "int8 error {}", relative_error(&int8, &want));
    // The scope ends with its guard: f32 again.
    assert_eq!(f32_y(&frozen, &x), want);
    let var = Var::from_tensor(&w).unwrap();
    let trainable = Linear::from_weight(var.as_tensor().clone());
    let tracked_x = Var::from_tensor(&x).unwrap();
    let _int8 = autocast::enter(Precision::Int8);
    assert_eq!(f32_y(&trainable, &x), want, "a trainable weight stays f32");
    assert_eq!(f32_y(&frozen, tracked_x.as_tensor()), want, "an input that needs a gradient stays f32");
}
