//! The bf16 matmul (AVX512_BF16 kernel, or its emulation elsewhere): products of bf16-rounded
//! inputs summed in f32, for every layout training produces, edge sizes, and its gradients.

use crate::common;

use candle_core::{DType, Device, Tensor, Var};
use distill_tui::engine::kernels::autocast::{self, bf16_matmul, emulated_bf16_matmul, Precision};
use distill_tui::engine::kernels::bf16_gemm::{self, round_bf16, View};

/// xorshift values in [-1, 1), every seventh thirty times larger.
fn values(n: usize, seed: u64) -> Vec<f32> {
    common::spread_values(n, seed, 30.0)
}

/// Σ_k round(a_ik)·round(b_kj) in f64, and Σ_k |…| for the tolerance.
fn reference(a: &View, b: &View) -> (Vec<f64>, Vec<f64>) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let at = |v: &View, i: usize, j: usize| round_bf16(v.data[v.offset + i * v.rs + j * v.cs]) as f64;
    let mut c = vec![0.0; m * n];
    let mut mag = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            for q in 0..k {
                let p = at(a, i, q) * at(b, q, j);
                c[i * n + j] += p;
                mag[i * n + j] += p.abs();
            }
        }
    }
    (c, mag)
}

fn assert_close(got: &[f32], want: &[f64], mag: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, ((&g, &w), &s)) in got.iter().zip(want).zip(mag).enumerate() {
        let tol = 1e-6 * (1.0 + s);
        assert!((g as f64 - w).abs() <= tol, "{what}: element {i} is {g}, want {w} (tolerance {tol:e})");
    }
}

#[test]
fn rounding_matches_half_round_to_nearest_even() {
    let mut specials = vec![0.0f32, -0.0, 1.0, -1.5, f32::MAX, f32::MIN_POSITIVE, 1e-40, f32::INFINITY];
    specials.extend(values(20_000, 3));
    specials.extend((0..20_000u32).map(|i| f32::from_bits(0x3f80_0000 + i * 0x1_0001)));
    for x in specials {
        let want = half::bf16::from_f32(x).to_f32();
        assert_eq!(round_bf16(x).to_bits(), want.to_bits(), "rounding {x:e} ({:#x})", x.to_bits());
    }
    assert!(round_bf16(f32::NAN).is_nan());
}

#[test]
fn kernel_matches_reference_for_every_layout_and_edge_size() {
    if !bf16_gemm::available() {
        println!("skipped: this CPU lacks AVX512_BF16 (the emulated path is tested below)");
        return;
    }
    matches_reference_for_every_layout_and_edge_size(bf16_gemm::matmul);
}

/// What a CPU without AVX512_BF16 runs inside the same op: rounded copies and the f32 GEMM.
#[test]
fn emulation_matches_reference_for_every_layout_and_edge_size() {
    matches_reference_for_every_layout_and_edge_size(bf16_gemm::emulated);
}

fn matches_reference_for_every_layout_and_edge_size(product: fn(&View, &View) -> Vec<f32>) {
    // (m, k, n): panel edges (MR = 12, NR = 32), odd k, a k beyond one KC block (512).
    let shapes = [(1, 1, 1), (13, 3, 33), (12, 64, 32), (25, 129, 65), (37, 600, 70), (96, 1031, 130)];
    for (si, &(m, k, n)) in shapes.iter().enumerate() {
        let a_data = values(m * k, 10 + si as u64);
        let b_data = values(k * n, 20 + si as u64);
        // Row-major and transposed storage of the same matrices.
        let a_t: Vec<f32> = (0..k).flat_map(|q| (0..m).map(move |i| (i, q))).map(|(i, q)| a_data[i * k + q]).collect();
        let b_t: Vec<f32> = (0..n).flat_map(|j| (0..k).map(move |q| (q, j))).map(|(q, j)| b_data[q * n + j]).collect();
        let a_views = [View::row_major(&a_data, m, k), View::row_major(&a_t, k, m).t()];
        let b_views = [View::row_major(&b_data, k, n), View::row_major(&b_t, n, k).t()];
        let (want, mag) = reference(&a_views[0], &b_views[0]);
        for (ai, a) in a_views.iter().enumerate() {
            for (bi, b) in b_views.iter().enumerate() {
                let got = product(a, b);
                assert_close(&got, &want, &mag, &format!("{m}x{k}x{n}, a layout {ai}, b layout {bi}"));
            }
        }
        // A general strided view: every other column of a wider matrix, at an offset.
        let wide = values(m * (2 * k + 1), 30 + si as u64);
        let a = View { data: &wide, offset: 1, rows: m, cols: k, rs: 2 * k + 1, cs: 2 };
        let (want, mag) = reference(&a, &b_views[0]);
        assert_close(&product(&a, &b_views[0]), &want, &mag, &format!("{m}x{k}x{n}, strided a"));
    }
}

#[test]
fn nan_and_infinity_propagate() {
    if !bf16_gemm::available() {
        println!("skipped: this CPU lacks AVX512_BF16");
        return;
    }
    let mut a = values(4 * 8, 1);
    a[3] = f32::NAN;
    a[8 + 2] = f32::INFINITY;
    let b = values(8 * 5, 2);
    let c = bf16_gemm::matmul(&View::row_major(&a, 4, 8), &View::row_major(&b, 8, 5));
    assert!(c[..5].iter().all(|x| x.is_nan()), "row 0 holds the NaN: {:?}", &c[..5]);
    assert!(c[5..10].iter().all(|x| !x.is_finite()), "row 1 holds the infinity: {:?}", &c[5..10]);
    assert!(c[10..].iter().all(|x| x.is_finite()));
}

fn tensor(data: Vec<f32>, shape: (usize, usize)) -> Tensor {
    Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
}

fn rounded(t: &Tensor) -> Tensor {
    t.to_dtype(DType::BF16).unwrap().to_dtype(DType::F32).unwrap()
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    max_abs(&(a - b).unwrap())
}

/// Largest difference relative to the largest magnitude of `want` (f32 summation order aside).
fn rel_diff(got: &Tensor, want: &Tensor) -> f32 {
    max_abs_diff(got, want) / max_abs(want).max(1e-30)
}

#[test]
fn gradients_are_bf16_products_of_the_output_gradient() {
    let (m, k, n) = (29, 70, 45);
    let x = Var::from_tensor(&tensor(values(m * k, 5), (m, k))).unwrap();
    let w = Var::from_tensor(&tensor(values(n * k, 6), (n, k))).unwrap();
    let g = tensor(values(m * n, 7), (m, n));
    // y = x·wᵀ as a linear layer computes it; loss = Σ y ⊙ g, so dL/dy = g.
    let y = bf16_matmul(x.as_tensor(), &w.as_tensor().t().unwrap()).unwrap();
    let want_y = rounded(x.as_tensor()).matmul(&rounded(w.as_tensor()).t().unwrap()).unwrap();
    assert!(rel_diff(&y, &want_y) < 1e-6, "forward differs by {}", rel_diff(&y, &want_y));
    let grads = (&y * &g).unwrap().sum_all().unwrap().backward().unwrap();
    let gx = grads.get(x.as_tensor()).expect("x gets a gradient");
    let gw = grads.get(w.as_tensor()).expect("w gets a gradient");
    let want_gx = rounded(&g).matmul(&rounded(w.as_tensor())).unwrap();
    let want_gw = rounded(&g).t().unwrap().matmul(&rounded(x.as_tensor())).unwrap();
    assert!(rel_diff(gx, &want_gx) < 1e-6, "dx differs by {}", rel_diff(gx, &want_gx));
    assert!(rel_diff(gw, &want_gw) < 1e-6, "dw differs by {}", rel_diff(gw, &want_gw));
    // And they are close to, but not equal to, the f32 gradients: bf16 keeps 8 bits of mantissa.
    let f32_gx = g.matmul(w.as_tensor()).unwrap();
    let rel = rel_diff(gx, &f32_gx);
    assert!(rel > 0.0 && rel < 2e-2, "bf16 gradient relative difference {rel}");
}

#[test]
fn autocast_scopes_nest_and_restore() {
    assert_eq!(autocast::current(), Precision::F32);
    {
        let _outer = autocast::enter(Precision::Bf16);
        assert_eq!(autocast::current(), Precision::Bf16);
        {
            let _inner = autocast::enter(Precision::F32);
            assert_eq!(autocast::current(), Precision::F32);
        }
        assert_eq!(autocast::current(), Precision::Bf16);
        // Another thread keeps its own setting.
        std::thread::spawn(|| assert_eq!(autocast::current(), Precision::F32)).join().unwrap();
        let a = tensor(values(6 * 10, 8), (6, 10));
        let b = tensor(values(10 * 4, 9), (10, 4));
        let y = autocast::matmul(&a, &b).unwrap();
        let want = rounded(&a).matmul(&rounded(&b)).unwrap();
        assert!(rel_diff(&y, &want) < 1e-6, "autocast matmul differs by {}", rel_diff(&y, &want));
    }
    assert_eq!(autocast::current(), Precision::F32);
}

#[test]
fn bad_operands_are_named() {
    let a = tensor(values(6, 1), (2, 3));
    let err = bf16_matmul(&a.unsqueeze(0).unwrap(), &a.t().unwrap()).unwrap_err().to_string();
    assert!(err.contains("2-D f32"), "{err}");
    let err = bf16_matmul(&a, &a).unwrap_err().to_string();
    assert!(err.contains("[2, 3]") || err.contains("shape") || err.contains("chain"), "{err}");
}

#[test]
fn emulation_agrees_with_the_kernel_in_value_and_gradient() {
    let (m, k, n) = (17, 40, 33);
    let run = |mm: fn(&Tensor, &Tensor) -> distill_tui::engine::Result<Tensor>| {
        let x = Var::from_tensor(&tensor(values(m * k, 11), (m, k))).unwrap();
        let w = Var::from_tensor(&tensor(values(n * k, 12), (n, k))).unwrap();
        let y = mm(x.as_tensor(), &w.as_tensor().t().unwrap()).unwrap();
        let grads = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        (y.clone(), grads.get(x.as_tensor()).unwrap().clone(), grads.get(w.as_tensor()).unwrap().clone())
    };
    let (y1, gx1, gw1) = run(bf16_matmul);
    let (y2, gx2, gw2) = run(emulated_bf16_matmul);
    assert!(rel_diff(&y1, &y2) < 1e-6, "values differ by {}", rel_diff(&y1, &y2));
    // Both round the output gradient to bf16 before the backward products, as autocast does: they
    // agree up to f32 summation order.
    assert!(rel_diff(&gx1, &gx2) < 1e-6, "dx differs by {}", rel_diff(&gx1, &gx2));
    assert!(rel_diff(&gw1, &gw2) < 1e-6, "dw differs by {}", rel_diff(&gw1, &gw2));
}

/// Under bf16 a frozen model (the teacher) takes candle's fused softmax, RMS norm and rope; a
/// trainable one the differentiable forms. Both give the same logits up to bf16 noise, and f32
/// differs from both by more than that noise's floor.
#[test]
fn frozen_and_trainable_models_agree_under_bf16() {
    let frozen = common::load_fixture("tiny-llama", false);
    let trainable = common::load_fixture("tiny-llama", true);
    let (ids, _) = common::golden(&common::fixture("tiny-llama"));
    let f32_logits = frozen.network.forward(&ids).unwrap();
    let (fast, slow) = {
        let _bf16 = autocast::enter(Precision::Bf16);
        assert!(!autocast::fast_inference(&trainable.network.forward(&ids).unwrap()), "a trainable forward tracks");
        (frozen.network.forward(&ids).unwrap(), trainable.network.forward(&ids).unwrap().detach())
    };
    let fast_vs_slow = rel_diff(&fast, &slow);
    let bf16_vs_f32 = rel_diff(&slow, &f32_logits);
    assert!(fast_vs_slow < 1e-2, "fused and composed bf16 forwards differ by {fast_vs_slow}");
    assert!(bf16_vs_f32 > 0.0 && bf16_vs_f32 < 5e-2, "bf16 vs f32 logits differ by {bf16_vs_f32}");
    println!("relative max difference: fused vs composed {fast_vs_slow:e}, bf16 vs f32 {bf16_vs_f32:e}");
}
