//! GPTQ: the error-feedback core against a case worked by hand, the inverse-Hessian factor, and on
//! the tiny llama fixture calibrated on *Emma*, a lower Hessian-weighted reconstruction error than
//! round-to-nearest (plain and importance-weighted) on every linear layer; bad input refused.

use super::common;
use distill_tui::engine::context::Monitor;
use distill_tui::engine::eval::EvalOptions;
use distill_tui::engine::quant::format::IntFormat;
use distill_tui::engine::quant::gptq::{self, GptqOptions, Hessian, Prepared};
use distill_tui::engine::quant::imatrix::{self as gptq_memory, calibrate};
use distill_tui::engine::quant::own::IntTensor;
use distill_tui::engine::quant::{quantize_model, QuantFormat, QuantOptions};
use std::sync::atomic::AtomicBool;

static NO_CANCEL: AtomicBool = AtomicBool::new(false);

/// W = [0.3, 0.3], H = [[1, 0.5], [0.5, 1]], values rounded to multiples of 0.5, no dampening.
/// H⁻¹ = (4/3)·[[1, −0.5], [−0.5, 1]], its upper Cholesky factor U = [[2/√3, −1/√3], [0, 1]].
/// Column 0 rounds 0.3 → 0.5 (error −0.2); the feedback moves column 1 by
/// −(−0.2/U₀₀)·U₀₁ = −0.1 to 0.2, which rounds to 0.0. Weighted errors ΔHΔᵀ: round-to-nearest
/// [0.5, 0.5] gives Δ = [−0.2, −0.2] → 0.12; GPTQ's [0.5, 0.0] gives Δ = [−0.2, 0.3] → 0.07.
#[test]
fn a_two_column_case_worked_by_hand() {
    let h = Hessian { n: 2, data: vec![1.0, 0.5, 0.5, 1.0], tokens: 2 };
    let u = gptq::inverse_cholesky_upper(&h.data, 2, 0.0).unwrap();
    let want_u = [2.0 / 3f32.sqrt(), -1.0 / 3f32.sqrt(), 0.0, 1.0];
    for (got, want) in u.iter().zip(want_u) {
        assert!((got - want).abs() < 1e-6, "U {u:?} vs {want_u:?}");
    }
    let original = vec![0.3f32, 0.3];
    let mut w = original.clone();
    let mut seen = vec![Vec::new()];
    gptq::error_feedback(&mut w, 2, &u, &mut seen, |seen, j, row| {
        seen.push(row[j]);
        (row[j] / 0.5).round() * 0.5
    });
    assert!((seen[0][0] - 0.3).abs() < 1e-6 && (seen[0][1] - 0.2).abs() < 1e-6, "values seen: {:?}", seen[0]);
    assert_eq!(w, vec![0.5, 0.0]);
    let rtn = vec![0.5f32, 0.5];
    assert!((h.weighted_error(&original, &rtn) - 0.12).abs() < 1e-6);
    assert!((h.weighted_error(&original, &w) - 0.07).abs() < 1e-6);
}

#[test]
fn the_factor_inverts_the_dampened_hessian() {
    // H = A Aᵀ for a seeded 37 × 50 A: symmetric positive definite.
    let n = 37;
    let a = common::spread_values(n * 50, 5, 1.0);
    let mut h = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..n {
            h[i * n + j] = (0..50).map(|k| a[i * 50 + k] as f64 * a[j * 50 + k] as f64).sum();
        }
    }
    let damp = 0.01;
    let u = gptq::inverse_cholesky_upper(&h, n, damp).unwrap();
    let mean_diag = (0..n).map(|i| h[i * n + i]).sum::<f64>() / n as f64;
    // Uᵀ U (H + λI) = I.
    let mut worst = 0f64;
    for i in 0..n {
        for j in 0..n {
            let hinv_ij = |i: usize, k: usize| (0..n).map(|m| u[m * n + i] as f64 * u[m * n + k] as f64).sum::<f64>();
            let v: f64 =
                (0..n).map(|k| hinv_ij(i, k) * (h[k * n + j] + if k == j { damp * mean_diag } else { 0.0 })).sum();
            worst = worst.max((v - if i == j { 1.0 } else { 0.0 }).abs());
        }
    }
    assert!(worst < 1e-3, "Uᵀ U H differs from I by {worst}");
    // A dead column (no calibration energy) is isolated: no feedback to or from it.
    let mut dead = h.clone();
    for k in 0..n {
        dead[3 * n + k] = 0.0;
        dead[k * n + 3] = 0.0;
    }
    let u = gptq::inverse_cholesky_upper(&dead, n, damp).unwrap();
    assert!((0..n).filter(|&k| k != 3).all(|k| u[3 * n + k] == 0.0 && u[k * n + 3] == 0.0));
    // Not square: refused.
    assert!(gptq::inverse_cholesky_upper(&h[..10], n, damp).is_err());
}

#[test]
fn gptq_lowers_the_weighted_error_of_every_linear_layer_of_the_fixture() {
    let model = common::load_fixture("tiny-llama", false);
    let text = std::fs::read_to_string(common::shared_dir().join("data/austen/emma.txt")).unwrap();
    let opts = EvalOptions { seq_len: 128, max_tokens: Some(4096), ..Default::default() };
    let imatrix = calibrate(&model, &text, &opts, true, &Monitor::silent(&NO_CANCEL)).unwrap();
    assert!(imatrix.tokens >= 4000, "{} calibration tokens", imatrix.tokens);
    // q, k and v read one input and share one matrix; so do gate and up.
    let h = &imatrix.hessians;
    let q = &h["model.layers.0.self_attn.q_proj.weight"];
    assert!(std::sync::Arc::ptr_eq(q, &h["model.layers.0.self_attn.v_proj.weight"]));
    assert!(!std::sync::Arc::ptr_eq(q, &h["model.layers.0.self_attn.o_proj.weight"]));
    assert!(std::sync::Arc::ptr_eq(&h["model.layers.1.mlp.gate_proj.weight"], &h["model.layers.1.mlp.up_proj.weight"]));
    assert_eq!(h.len(), 4 * 7, "every linear layer of the 4 blocks: {:?}", h.keys().collect::<Vec<_>>());
    // The memory bound counts a matrix per weight (4 blocks × (6 of width 64 + down_proj's 172)),
    // the shared matrices take less; beyond half the free memory calibration is refused.
    let bound = gptq_memory::gram_bytes_upper_bound(&model);
    assert_eq!(bound, 4 * (6 * 64 * 64 + 172 * 172) * 8);
    let mut seen = std::collections::HashSet::new();
    let held: u64 = h.values().filter(|m| seen.insert(std::sync::Arc::as_ptr(m))).map(|m| 8 * (m.n * m.n) as u64).sum();
    assert!(held < bound, "{held} vs {bound}");
    assert!(gptq_memory::check_gram_memory("m", bound, 2 * bound).is_ok());
    let err = gptq_memory::check_gram_memory("m", bound, 2 * bound - 1).unwrap_err().to_string();
    assert!(err.contains("without +gptq") && err.contains("free memory"), "{err}");
    // Its diagonal over the tokens is the importance matrix.
    let diag = q.diagonal();
    let imp = &imatrix.columns["model.layers.0.self_attn.q_proj.weight"];
    for (d, m) in diag.iter().zip(imp) {
        assert!((d / q.tokens as f64 - *m as f64).abs() <= 1e-4 * (*m as f64).max(1e-3), "{d} vs {m}");
    }
    for format in ["int4-g32", "int3-g32", "int4-g32-sym", "int3"] {
        let QuantFormat::Int(f) = QuantFormat::parse(format).unwrap() else { unreachable!() };
        for act_order in [false, true] {
            for (name, hess) in h {
                let w = &model.params[name];
                let (rows, cols) = w.dims2().unwrap();
                let f = if cols % f.group.unwrap_or(cols) == 0 { f } else { IntFormat { group: None, ..f } };
                let values: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
                let plain = IntTensor::quantize(&values, rows, cols, f, None).unwrap().dequantize();
                let weighted =
                    IntTensor::quantize(&values, rows, cols, f, Some(&imatrix.columns[name])).unwrap().dequantize();
                let p = Prepared::new(hess, GptqOptions { damp: 0.01, act_order }).unwrap();
                let g = gptq::quantize_int(&values, rows, cols, IntFormat { gptq: true, ..f }, &p).unwrap();
                assert_eq!(g.codes.len(), rows * cols);
                let ours = g.dequantize();
                let (e_plain, e_weighted, e_gptq) = (
                    hess.weighted_error(&values, &plain),
                    hess.weighted_error(&values, &weighted),
                    hess.weighted_error(&values, &ours),
                );
                assert!(
                    e_gptq < e_plain && e_gptq < e_weighted,
                    "{name} {format} act_order={act_order}: GPTQ {e_gptq:.4e}, nearest {e_plain:.4e}, \
                     importance-weighted {e_weighted:.4e}"
                );
            }
        }
    }
}

#[test]
fn gptq_formats_are_named_and_refuse_missing_or_short_calibration() {
    let f = QuantFormat::parse("INT4-g64+GPTQ").unwrap();
    assert!(f.is_gptq() && f.name() == "int4-g64+gptq", "{}", f.name());
    assert_eq!(QuantFormat::parse(&f.name()).unwrap(), f);
    assert_eq!(QuantFormat::parse("Q4_0+gptq").unwrap().name(), "q4_0+gptq");
    assert_eq!(QuantFormat::parse("q4_k+gptq").unwrap().name(), "q4_k+gptq");
    let model = common::load_fixture("tiny-llama", false);
    let format = QuantFormat::parse("int4-g32+gptq").unwrap();
    let opts = QuantOptions::default();
    let err = quantize_model(&model, format, &opts, &Monitor::silent(&NO_CANCEL)).err().expect("refused").to_string();
    assert!(err.contains("--calib"), "{err}");
    let short = EvalOptions { seq_len: 128, ..Default::default() };
    let err =
        calibrate(&model, "Only a few words.", &short, true, &Monitor::silent(&NO_CANCEL)).unwrap_err().to_string();
    assert!(err.contains("less than one window of 128"), "{err}");
    // With calibration: every linear weight by GPTQ, the tied embedding at the policy's int8.
    let text = std::fs::read_to_string(common::shared_dir().join("data/austen/emma.txt")).unwrap();
    let calib = EvalOptions { seq_len: 128, max_tokens: Some(1024), ..Default::default() };
    let imatrix = calibrate(&model, &text, &calib, true, &Monitor::silent(&NO_CANCEL)).unwrap();
    let opts = QuantOptions { imatrix: Some(&imatrix), ..Default::default() };
    let q = quantize_model(&model, format, &opts, &Monitor::silent(&NO_CANCEL)).unwrap();
    let gptq_tensors = q.report.iter().filter(|r| r.format.ends_with("+gptq")).count();
    assert_eq!(gptq_tensors, 4 * 7, "{:#?}", q.report);
    assert!(q.report.iter().all(|r| r.note.is_none() || r.format.starts_with("int4+gptq")), "{:#?}", q.report);
}

/// GPTQ into the GGML legacy blocks: it rounds in the block format's own-format twin (same codes,
/// offsets and f16 parameters), and the packed blocks dequantize, through candle, to exactly the
/// twin's values; on every linear layer of the fixture whose rows fit the blocks its weighted
/// error is below candle's (llama.cpp's) round-to-nearest in the same type. Through
/// `quantize_model` the tensors are stored in the GGML type and the GGUF file holds that type.
#[test]
fn gptq_in_ggml_legacy_blocks_packs_exactly_and_beats_rounding_to_nearest() {
    use candle_core::quantized::{GgmlDType, QTensor};
    use distill_tui::engine::quant::format::int_twin;
    use distill_tui::engine::quant::ggml_blocks;
    let model = common::load_fixture("tiny-llama", false);
    let text = std::fs::read_to_string(common::shared_dir().join("data/austen/emma.txt")).unwrap();
    let opts = EvalOptions { seq_len: 128, max_tokens: Some(2048), ..Default::default() };
    let imatrix = calibrate(&model, &text, &opts, true, &Monitor::silent(&NO_CANCEL)).unwrap();
    let mut layers = 0;
    for d in [GgmlDType::Q4_0, GgmlDType::Q4_1, GgmlDType::Q5_0, GgmlDType::Q5_1, GgmlDType::Q8_0] {
        let twin = int_twin(d).unwrap();
        for (name, hess) in &imatrix.hessians {
            let w = &model.params[name];
            let (rows, cols) = w.dims2().unwrap();
            if cols % 32 != 0 {
                continue;
            }
            let values: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
            let p = Prepared::new(hess, GptqOptions::default()).unwrap();
            let g = gptq::quantize_int(&values, rows, cols, twin, &p).unwrap();
            let packed = ggml_blocks::pack(&g, d).unwrap();
            assert_eq!(packed.dtype(), d);
            assert_eq!(packed.storage_size_in_bytes(), rows * cols / 32 * d.type_size());
            let unpacked: Vec<f32> =
                packed.dequantize(&candle_core::Device::Cpu).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(unpacked, g.dequantize(), "{d:?} {name}: the blocks hold exactly the twin's values");
            let rtn: Vec<f32> = QTensor::quantize(w, d)
                .unwrap()
                .dequantize(&candle_core::Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let (e_gptq, e_rtn) = (hess.weighted_error(&values, &unpacked), hess.weighted_error(&values, &rtn));
            assert!(e_gptq < e_rtn, "{d:?} {name}: GPTQ {e_gptq:.4e} vs round-to-nearest {e_rtn:.4e}");
            layers += 1;
        }
    }
    assert_eq!(layers, 5 * 4 * 6, "every 64-wide linear layer in every type");

    let format = QuantFormat::parse("q4_0+gptq").unwrap();
    let q = common::quantize_calibrated(&model, format, &imatrix);
    let q_proj = q.report.iter().find(|r| r.name == "model.layers.0.self_attn.q_proj.weight").unwrap();
    assert_eq!((q_proj.requested.as_str(), q_proj.format.as_str()), ("q4_0+gptq", "q4_0"));
    let down = q.report.iter().find(|r| r.name == "model.layers.0.mlp.down_proj.weight").unwrap();
    assert_eq!(down.format, "f16", "172-wide rows fit no 32-weight block: {down:?}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    distill_tui::engine::quant::export(&model, &q, &path).unwrap();
    let g = distill_tui::engine::gguf::load_gguf(&path, &candle_core::Device::Cpu).unwrap();
    for (name, t) in &q.dequantized().unwrap() {
        assert_eq!(common::max_abs_diff(&g.tensors[name], t), 0.0, "`{name}`");
    }
}
