//! GPTQ inside the K-quants' super-blocks and IQ4_NL's blocks: the codes sit where candle's
//! (llama.cpp's) dequantization reads them; on correlated activations and on the demo teacher
//! calibrated on *Emma*, a lower Hessian-weighted error than the importance-weighted
//! round-to-nearest of the same type (`FORMAT+imatrix`), with and without act-order; through
//! `quantize_model` the tensors are stored in the block type (narrow rows in the GPTQ form of
//! their fallback), a mix's file has the plan's types, and GGUF files read back equal.

use super::common;
use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use distill_tui::engine::quant::gptq::{GptqOptions, Hessian, Prepared};
use distill_tui::engine::quant::gptq_blocks::{self, QK_K};
use distill_tui::engine::quant::iq4nl::{self, Iq4NlTensor};
use distill_tui::engine::quant::QuantFormat;

const KQUANTS: [GgmlDType; 5] = [GgmlDType::Q2K, GgmlDType::Q3K, GgmlDType::Q4K, GgmlDType::Q5K, GgmlDType::Q6K];

fn dequantized(q: &QTensor) -> Vec<f32> {
    q.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

/// Random codes written with `set_code` into fitted blocks dequantize, through candle, to
/// `a·c + z` with the `(a, z)` read from the same blocks: a code put in the wrong place (or with
/// the wrong bits) would change some other weight's value instead.
#[test]
fn codes_sit_where_candles_dequantization_reads_them() {
    let values = common::spread_values(2 * QK_K, 11, 4.0);
    for d in KQUANTS {
        let max = gptq_blocks::max_code(d).unwrap();
        let fitted = QTensor::quantize(&Tensor::from_slice(&values, (1, 2 * QK_K), &Device::Cpu).unwrap(), d).unwrap();
        let mut blocks = fitted.data().unwrap().into_owned();
        let (a, z) = gptq_blocks::affine(d, &blocks).unwrap();
        assert!(a.iter().filter(|a| a.abs() > 1e-6).count() > QK_K, "{d:?}: scales read back: {:?}", &a[..8]);
        let codes: Vec<u8> = common::spread_values(2 * QK_K, 5, 1.0)
            .iter()
            .map(|u| (((u + 1.0) / 2.0 * (max as f32 + 1.0)) as u8).min(max))
            .collect();
        assert_eq!(codes.iter().max(), Some(&max));
        assert_eq!(codes.iter().min(), Some(&0));
        for (b, block) in blocks.chunks_exact_mut(d.type_size()).enumerate() {
            for e in 0..QK_K {
                gptq_blocks::set_code(d, block, e, codes[b * QK_K + e]);
            }
        }
        let got = dequantized(&qtensor_from_ggml(d, &blocks, vec![2 * QK_K], &Device::Cpu).unwrap());
        for (i, &g) in got.iter().enumerate() {
            let want = a[i] * codes[i] as f32 + z[i];
            let tol = 1e-5 * (a[i].abs() * max as f32 + z[i].abs()).max(1e-6);
            assert!((g - want).abs() <= tol, "{d:?} weight {i} code {}: candle reads {g}, want {want}", codes[i]);
        }
    }
}

/// Activations `[tokens, n]` whose columns are correlated (each mixes its neighbours) and of
/// spread magnitudes; `H = XᵀX`.
fn correlated_hessian(n: usize, tokens: usize) -> Hessian {
    let g = common::spread_values(tokens * n, 3, 6.0);
    let mut data = vec![0f64; n * n];
    let mut x = vec![0f64; n];
    for t in 0..tokens {
        let row = &g[t * n..(t + 1) * n];
        for j in 0..n {
            x[j] = row[j] as f64 + 0.7 * row[(j + 1) % n] as f64 - 0.4 * row[(j + 5) % n] as f64;
        }
        for i in 0..n {
            for j in i..n {
                data[i * n + j] += x[i] * x[j];
            }
        }
    }
    for i in 0..n {
        for j in 0..i {
            data[i * n + j] = data[j * n + i];
        }
    }
    Hessian { n, data, tokens }
}

/// GPTQ's error against the same type rounded to nearest with `H`'s diagonal as importance
/// (what `FORMAT+imatrix` does) and plainly: every K type when the rows hold super-blocks, and
/// IQ4_NL; act-order on and off.
fn assert_gptq_wins(w: &[f32], rows: usize, cols: usize, h: &Hessian, what: &str) {
    let t = Tensor::from_slice(w, (rows, cols), &Device::Cpu).unwrap();
    let diag: Vec<f32> = h.diagonal().iter().map(|&v| v as f32).collect();
    let prepared =
        [true, false].map(|act_order| Prepared::new(h, GptqOptions { act_order, ..Default::default() }).unwrap());
    let check = |label: &str, e: f64, e_imatrix: f64, e_plain: f64, act_order: bool| {
        eprintln!("{what} {label} act_order={act_order}: GPTQ {e:.4e}, imatrix {e_imatrix:.4e}, plain {e_plain:.4e}");
        assert!(e < e_imatrix && e < e_plain, "{what} {label} act_order={act_order}: GPTQ {e:.4e} vs {e_imatrix:.4e}");
    };
    if cols.is_multiple_of(QK_K) {
        for d in KQUANTS {
            let imatrix = dequantized(&QTensor::quantize_imatrix(&t, &diag, d).unwrap());
            let plain = dequantized(&QTensor::quantize(&t, d).unwrap());
            let (e_imatrix, e_plain) = (h.weighted_error(w, &imatrix), h.weighted_error(w, &plain));
            for p in &prepared {
                let q = gptq_blocks::quantize_kquant(w, rows, cols, d, p).unwrap();
                assert_eq!((q.dtype(), q.shape().dims()), (d, &[rows, cols][..]));
                check(&format!("{d:?}"), h.weighted_error(w, &dequantized(&q)), e_imatrix, e_plain, p.act_order);
            }
        }
    }
    let imatrix = Iq4NlTensor::quantize(w, rows, cols, Some(&diag)).unwrap().dequantize();
    let plain = Iq4NlTensor::quantize(w, rows, cols, None).unwrap().dequantize();
    let (e_imatrix, e_plain) = (h.weighted_error(w, &imatrix), h.weighted_error(w, &plain));
    for p in &prepared {
        let q = gptq_blocks::quantize_iq4nl(w, rows, cols, p).unwrap();
        check("IQ4_NL", h.weighted_error(w, &q.dequantize()), e_imatrix, e_plain, p.act_order);
    }
}

#[test]
fn gptq_in_super_blocks_beats_importance_weighted_rounding_on_correlated_inputs() {
    let (rows, cols) = (24, 2 * QK_K);
    let h = correlated_hessian(cols, 1024);
    let w = common::spread_values(rows * cols, 17, 3.0);
    assert_gptq_wins(&w, rows, cols, &h, "synthetic");
    // A weight of another width or a Hessian of another size is refused with the reason.
    let p = Prepared::new(&h, GptqOptions::default()).unwrap();
    let err = gptq_blocks::quantize_kquant(&w[..rows * 300], rows, 300, GgmlDType::Q4K, &p).unwrap_err().to_string();
    assert!(err.contains("blocks of 256"), "{err}");
    let err = gptq_blocks::quantize_kquant(&w, rows, cols, GgmlDType::Q4_0, &p).unwrap_err().to_string();
    assert!(err.contains("not a K-quant"), "{err}");
    let err = gptq_blocks::quantize_iq4nl(&w[..rows * 300], rows, 300, &p).unwrap_err().to_string();
    assert!(err.contains("blocks of 32"), "{err}");
}

/// The demo teacher (hidden 192, MLP 512) calibrated on *Emma*: every `down_proj` (512-wide rows)
/// by GPTQ in every K type beats `+imatrix`; through `quantize_model`, `q4_k+gptq` stores
/// `down_proj` as Q4_K and the 192-wide matrices in `q5_0+gptq` (Q4_K's fallback, still GPTQ), and
/// the GGUF file reads back equal with those types.
#[test]
fn gptq_in_super_blocks_on_the_demo_teacher_and_through_gguf() {
    let demo = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/models/demo-teacher");
    let model = common::load(demo.to_str().unwrap(), false);
    let imatrix = common::calibrated_on_emma(&model, 128, 2048, true);
    let mut layers = 0;
    for (name, h) in &imatrix.hessians {
        if let Some((rows, cols, w)) = common::matrix_in_blocks_of(&model, name, QK_K) {
            assert_gptq_wins(&w, rows, cols, h, name);
            layers += 1;
        }
    }
    assert_eq!(layers, 4, "the four down_proj matrices");
    for name in ["model.layers.0.self_attn.q_proj.weight", "model.layers.3.mlp.gate_proj.weight"] {
        let (rows, cols, w) = common::matrix_in_blocks_of(&model, name, iq4nl::BLOCK).unwrap();
        assert_gptq_wins(&w, rows, cols, &imatrix.hessians[name], name);
    }

    let format = QuantFormat::parse("q4_k+gptq").unwrap();
    assert_eq!(format.name(), "q4_k+gptq");
    assert_eq!(QuantFormat::parse("Q6_K+GPTQ").unwrap().name(), "q6_k+gptq");
    let q = common::quantize_calibrated(&model, format, &imatrix);
    let down = q.report.iter().find(|r| r.name == "model.layers.1.mlp.down_proj.weight").unwrap();
    assert_eq!((down.format.as_str(), down.note.as_deref()), ("q4_k", None), "{down:?}");
    let q_proj = q.report.iter().find(|r| r.name == "model.layers.1.self_attn.q_proj.weight").unwrap();
    assert_eq!(q_proj.format, "q5_0", "{q_proj:?}");
    assert!(q_proj.note.as_deref().unwrap_or("").contains("q5_0+gptq"), "{q_proj:?}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    distill_tui::engine::quant::export(&model, &q, &path).unwrap();
    let types = distill_tui::engine::gguf::tensor_type_names(&path).unwrap();
    let down_type = types.get("blk.1.ffn_down.weight").map(String::as_str);
    assert_eq!(down_type, Some("q4_k"), "{types:?}");
    let g = distill_tui::engine::gguf::load_gguf(&path, &Device::Cpu).unwrap();
    for (name, t) in &q.dequantized().unwrap() {
        assert_eq!(common::max_abs_diff(&g.tensors[name], t), 0.0, "`{name}`");
    }

    // llama.cpp's Q4_K_M mix with every GGML tensor by GPTQ: on 4 blocks `use_more_bits` gives
    // blocks 2 and 3 Q6_K for attn_v and ffn_down; the file's types follow the plan.
    let mix = QuantFormat::parse("q4_k_m+gptq").unwrap();
    assert!(mix.is_gptq() && mix.name() == "q4_k_m+gptq", "{mix}");
    let q = common::quantize_calibrated(&model, mix, &imatrix);
    let linear: Vec<_> =
        q.report.iter().filter(|r| r.name.contains(".mlp.") || r.name.contains(".self_attn.")).collect();
    assert_eq!(linear.len(), 4 * 7);
    for r in &linear {
        assert!(r.requested.ends_with("+gptq"), "{r:?}");
        assert!(!r.note.as_deref().unwrap_or("").contains("rounded to nearest"), "{r:?}");
    }
    let format_of = |name: &str| q.report.iter().find(|r| r.name == name).unwrap().format.clone();
    assert_eq!(format_of("model.layers.3.mlp.down_proj.weight"), "q6_k");
    assert_eq!(format_of("model.layers.0.mlp.down_proj.weight"), "q4_k");
    assert_eq!(format_of("model.layers.2.self_attn.v_proj.weight"), "q8_0", "q6_k+gptq falls back to q8_0+gptq");
    let path = dir.path().join("mix.gguf");
    distill_tui::engine::quant::export(&model, &q, &path).unwrap();
    let types = distill_tui::engine::gguf::tensor_type_names(&path).unwrap();
    assert_eq!(types.get("blk.3.ffn_down.weight").map(String::as_str), Some("q6_k"), "{types:?}");
    assert_eq!(types.get("blk.0.ffn_down.weight").map(String::as_str), Some("q4_k"), "{types:?}");
}

/// Random codes written into IQ4_NL blocks read back through the block decoder (the one the
/// golden file from llama-quantize checks).
#[test]
fn iq4nl_gptq_codes_read_back() {
    let (rows, cols) = (3, 64);
    let w = common::spread_values(rows * cols, 23, 2.0);
    let h = correlated_hessian(cols, 256);
    let p = Prepared::new(&h, GptqOptions::default()).unwrap();
    let q = gptq_blocks::quantize_iq4nl(&w, rows, cols, &p).unwrap();
    let values = q.dequantize();
    for (b, block) in q.data.chunks_exact(iq4nl::BLOCK_BYTES).enumerate() {
        let d = half::f16::from_le_bytes([block[0], block[1]]).to_f32();
        assert!(d != 0.0);
        for (e, v) in values[b * iq4nl::BLOCK..(b + 1) * iq4nl::BLOCK].iter().enumerate() {
            let code = if e < 16 { block[2 + e] & 0x0f } else { block[2 + e - 16] >> 4 };
            assert_eq!(*v, d * iq4nl::KVALUES[code as usize] as f32, "block {b} weight {e}");
        }
    }
}

/// The fallbacks of the K-quants keep GPTQ: Q2_K and Q3_K to `iq4_nl+gptq` as their plain forms
/// fall back to IQ4_NL, Q4_K/Q5_K/Q6_K to the legacy blocks' GPTQ.
#[test]
fn k_quant_gptq_falls_back_as_its_format_does() {
    let f = QuantFormat::parse("q3_k+gptq").unwrap();
    assert_eq!(f.for_width(512), f);
    assert_eq!(f.for_width(192), QuantFormat::Iq4NlGptq);
    assert_eq!(QuantFormat::Iq4NlGptq.for_width(172), QuantFormat::F16);
    assert!(QuantFormat::Iq4NlGptq.is_gptq() && QuantFormat::Iq4NlGptq.name() == "iq4_nl+gptq");
    assert_eq!(QuantFormat::parse("iq4_nl+awq+gptq").unwrap().name(), "iq4_nl+awq+gptq");
    assert_eq!(QuantFormat::parse("q4_k+gptq").unwrap().for_width(192).name(), "q5_0+gptq");
    assert_eq!(QuantFormat::parse("q6_k+gptq").unwrap().for_width(192).name(), "q8_0+gptq");
    assert_eq!(QuantFormat::parse("q5_k+gptq").unwrap().for_width(172).name(), "f16");
}
