//! The kernels of generation: the host key/value cache (appends, growth, one decoding step's
//! attention against a naive softmax(q·kᵀ)·v with grouped heads) and the dequantizing product of a
//! GGML weight (against candle's dequantized tensor times x, and when it declines).

use crate::common;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor, Var};
use distill_tui::engine::kernels::kv_cache::HostKv;
use distill_tui::engine::kernels::{self, qgemm};

/// Attention of query row `i` (position `pos`) of head `h` over positions `0..=pos`, the way the
/// formula reads: keys and values given per position as `[b, kv, d]` rows.
#[allow(clippy::too_many_arguments)]
fn naive(
    q: &[f32],
    keys: &[Vec<f32>],
    vals: &[Vec<f32>],
    s: usize,
    h: usize,
    pos: usize,
    dims: (usize, usize, usize, usize),
    scale: f32,
) -> Vec<f32> {
    let (_, heads, kv, d) = dims;
    let kh = h / (heads / kv);
    let at = (s * kv + kh) * d..(s * kv + kh + 1) * d;
    let scores: Vec<f64> = (0..=pos)
        .map(|j| q.iter().zip(&keys[j][at.clone()]).map(|(a, b)| (a * b) as f64).sum::<f64>() * scale as f64)
        .collect();
    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
    let total: f64 = e.iter().sum();
    (0..d).map(|c| (0..=pos).map(|j| e[j] / total * vals[j][at.clone()][c] as f64).sum::<f64>() as f32).collect()
}

#[test]
fn the_host_cache_attends_like_the_formula_through_prefill_growth_and_grouped_heads() {
    let (b, heads, kv, d) = (2, 6, 2, 8);
    let scale = 1.0 / (d as f32).sqrt();
    let mut cache = HostKv::new(b, kv, d);
    let (mut keys, mut vals) = (Vec::new(), Vec::new());
    // A 5-token prefill, then 40 single tokens: the buffers grow past 16, 32 and 64 positions.
    let mut seed = 1;
    for t in std::iter::once(5).chain(std::iter::repeat(1).take(40)) {
        let k = common::spread_values(b * t * kv * d, seed, 3.0);
        let v = common::spread_values(b * t * kv * d, seed + 1, 3.0);
        let q = common::spread_values(b * t * heads * d, seed + 2, 3.0);
        seed += 3;
        for i in 0..t {
            let pick =
                |x: &[f32]| (0..b).flat_map(|s| x[(s * t + i) * kv * d..(s * t + i + 1) * kv * d].to_vec()).collect();
            keys.push(pick(&k));
            vals.push(pick(&v));
        }
        cache.append(&k, &v, t);
        assert_eq!(cache.len(), keys.len());
        let got = cache.attend(&q, t, heads, scale);
        for s in 0..b {
            for i in 0..t {
                for h in 0..heads {
                    let row = ((s * t + i) * heads + h) * d;
                    let want =
                        naive(&q[row..row + d], &keys, &vals, s, h, keys.len() - t + i, (b, heads, kv, d), scale);
                    for (g, w) in got[row..row + d].iter().zip(&want) {
                        assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "seq {s} row {i} head {h}: {g} vs {w}");
                    }
                }
            }
        }
    }
    assert!(cache.bytes() >= 2 * b * kv * 45 * d * 4, "{} bytes hold 45 positions", cache.bytes());
}

fn weight(n: usize, k: usize, seed: u64) -> Tensor {
    Tensor::from_vec(common::spread_values(n * k, seed, 4.0), (n, k), &Device::Cpu).unwrap()
}

#[test]
fn the_dequantizing_product_equals_the_dequantized_weight_times_x_for_every_block_family() {
    let (m, n, k) = (19, 130, 256);
    let x = Tensor::from_vec(common::spread_values(m * k, 7, 2.0), (m, k), &Device::Cpu).unwrap();
    for dtype in [
        GgmlDType::Q4_0,
        GgmlDType::Q4_1,
        GgmlDType::Q5_0,
        GgmlDType::Q8_0,
        GgmlDType::Q4K,
        GgmlDType::Q6K,
        GgmlDType::F16,
    ] {
        let q = QTensor::quantize(&weight(n, k, 3), dtype).unwrap();
        assert!(qgemm::applies(&x, &q), "{dtype:?}");
        let got = qgemm::matmul(&x, &q).unwrap().to_vec2::<f32>().unwrap();
        let want = x.matmul(&q.dequantize(&Device::Cpu).unwrap().t().unwrap()).unwrap().to_vec2::<f32>().unwrap();
        for (gr, wr) in got.iter().zip(&want) {
            for (g, w) in gr.iter().zip(wr) {
                assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "{dtype:?}: {g} vs {w}");
            }
        }
    }
}

#[test]
fn the_dequantizing_product_declines_one_row_a_tracked_input_and_the_reference_kernels() {
    let q = QTensor::quantize(&weight(64, 64, 5), GgmlDType::Q8_0).unwrap();
    let few = Tensor::ones((qgemm::MIN_ROWS - 1, 64), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(!qgemm::applies(&few, &q), "a decoding step keeps candle's one-row path");
    let tracked = Var::ones((qgemm::MIN_ROWS, 64), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(!qgemm::applies(tracked.as_tensor(), &q), "nothing differentiates through it");
    let plain = Tensor::ones((qgemm::MIN_ROWS, 64), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(qgemm::applies(&plain, &q));
    let _reference = kernels::reference();
    assert!(!qgemm::applies(&plain, &q), "the reference scope takes candle's path");
    let err = qgemm::matmul(&plain, &q).unwrap_err().to_string();
    assert!(err.contains("dequantizing product takes"), "{err}");
}

#[test]
fn the_one_row_quantized_product_is_the_exact_8_bit_activation_sum_for_q8_0_q4_0_and_q4_1() {
    use candle_core::quantized::QMatMul;
    use distill_tui::engine::kernels::qgemv;
    // 200 output rows: three tasks of 64 and a tail, and a last group of fewer than four rows.
    let (n, k) = (203, 320);
    for dtype in [GgmlDType::Q8_0, GgmlDType::Q4_0, GgmlDType::Q4_1] {
        let q = std::sync::Arc::new(QTensor::quantize(&weight(n, k, 11), dtype).unwrap());
        let candle = QMatMul::from_arc(q.clone()).unwrap();
        for m in 1..=qgemv::MAX_ROWS {
            let x = Tensor::from_vec(common::spread_values(m * k, 13 + m as u64, 2.0), (m, k), &Device::Cpu).unwrap();
            assert!(qgemv::applies(&x, &q), "{dtype:?} m={m}");
            let got = qgemv::matmul(&x, &q).unwrap().to_vec2::<f32>().unwrap();
            // Exactly what it computes: the dequantized weights against x rounded to 8-bit blocks
            // (d = max|x|/127 stored in f16, values round(x·127/max|x|)), summed in f64.
            let wd = q.dequantize(&Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
            for (i, row) in got.iter().enumerate() {
                let xs = x.get(i).unwrap().to_vec1::<f32>().unwrap();
                let x8: Vec<f64> = xs
                    .chunks(32)
                    .flat_map(|b| {
                        let d = b.iter().fold(0f32, |a, v| a.max(v.abs())) / 127.0;
                        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                        let d16 = half::f16::from_f32(d).to_f32() as f64;
                        b.iter().map(move |v| (v * id).round() as f64 * d16).collect::<Vec<_>>()
                    })
                    .collect();
                for (o, g) in row.iter().enumerate() {
                    let want: f64 = wd[o].iter().zip(&x8).map(|(w, x)| *w as f64 * x).sum();
                    assert!(
                        (*g as f64 - want).abs() <= 1e-4 * (1.0 + want.abs()),
                        "{dtype:?} m={m} row {i}: {g} vs {want}"
                    );
                }
                // candle's own one-row path rounds the activations the same way. (Not for Q4_1:
                // candle keeps Q8_1's block sum as f16(sum)·d in f16, and its `m·s` terms then
                // miss the exact sum above by up to 10% of a small output.)
                if dtype == GgmlDType::Q4_1 {
                    continue;
                }
                let theirs = candle_core::Module::forward(&candle, &x.narrow(0, i, 1).unwrap()).unwrap();
                let theirs = theirs.squeeze(0).unwrap().to_vec1::<f32>().unwrap();
                for (g, w) in row.iter().zip(&theirs) {
                    assert!((g - w).abs() <= 2e-3 * (1.0 + w.abs()), "{dtype:?} m={m} row {i}: {g} vs candle {w}");
                }
            }
        }
    }
    // Other block types, more rows than a decoding step, and the reference scope keep candle's path.
    let q4k = QTensor::quantize(&weight(64, 256, 3), GgmlDType::Q4K).unwrap();
    let x = Tensor::ones((1, 256), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(!qgemv::applies(&x, &q4k));
    let q8 = QTensor::quantize(&weight(64, 256, 3), GgmlDType::Q8_0).unwrap();
    assert!(!qgemv::applies(
        &Tensor::ones((qgemv::MAX_ROWS + 1, 256), candle_core::DType::F32, &Device::Cpu).unwrap(),
        &q8
    ));
    let _reference = kernels::reference();
    assert!(!qgemv::applies(&x, &q8));
}
