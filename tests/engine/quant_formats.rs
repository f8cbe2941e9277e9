//! Quantization formats: GGUF block bytes against gguf-py, K-quants through a GGUF round trip,
//! the own integer formats (error bounds, weighted rounding, packing), names, and size accounting.

use crate::common;

use candle_core::quantized::gguf_file::{self, Content};
use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};
use distill_tui::engine::context::Monitor;
use distill_tui::engine::quant::own::IntTensor;
use distill_tui::engine::quant::quantize::quantize_tensor;
use distill_tui::engine::quant::st_export::{export_safetensors, read_safetensors_dequantized};
use distill_tui::engine::quant::{
    quantize_model, IntFormat, QuantData, QuantFormat, QuantOptions, QuantPolicy, TensorRole, TensorRule,
};
use std::sync::atomic::AtomicBool;

fn reference() -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(common::shared_dir().join("fixtures/quant/quant_ref.safetensors"), &Device::Cpu)
        .unwrap()
}

fn quantize(w: &Tensor, format: QuantFormat, imp: Option<&[f32]>) -> distill_tui::engine::quant::QuantTensor {
    quantize_tensor("weight", w, TensorRole::Linear, format, false, imp, None).unwrap().0
}

#[test]
fn legacy_block_bytes_equal_gguf_py() {
    let r = reference();
    let w = &r["weight"];
    for name in ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"] {
        let format = QuantFormat::parse(name).unwrap();
        let q = quantize(w, format, None);
        let QuantData::Ggml(qt) = &q.data else { panic!("{name} is not a GGML tensor") };
        let ours = qt.data().unwrap().to_vec();
        let theirs: Vec<u8> = r[&format!("{name}.bytes")].to_vec1().unwrap();
        assert_eq!(ours.len(), theirs.len(), "{name}: byte count");
        let differing = ours.iter().zip(&theirs).filter(|(a, b)| a != b).count();
        assert_eq!(differing, 0, "{name}: {differing} of {} bytes differ from gguf-py", theirs.len());
        let deq = common::max_abs_diff(&q.dequantize().unwrap(), &r[&format!("{name}.dequant")]);
        assert_eq!(deq, 0.0, "{name}: dequantization differs from gguf-py by {deq}");
        assert_eq!(q.bytes() as usize, theirs.len(), "{name}: reported bytes");
    }
}

#[test]
fn k_quants_read_back_from_gguf_equal_our_dequantization() {
    let w = reference()["weight"].clone();
    let imp: Vec<f32> = (0..512).map(|i| 1.0 + (i % 7) as f32).collect();
    let dir = tempfile::tempdir().unwrap();
    for name in ["q6_k", "q5_k", "q4_k", "q3_k", "q2_k"] {
        for importance in [None, Some(imp.as_slice())] {
            let q = quantize(&w, QuantFormat::parse(name).unwrap(), importance);
            let QuantData::Ggml(qt) = &q.data else { panic!("{name} is not a GGML tensor") };
            let path = dir.path().join(format!("{name}.gguf"));
            let mut f = std::fs::File::create(&path).unwrap();
            gguf_file::write(&mut f, &[], &[("weight", qt.as_ref())]).unwrap();
            drop(f);
            let mut reader = std::fs::File::open(&path).unwrap();
            let content = Content::read(&mut reader).unwrap();
            let back = content.tensor(&mut reader, "weight", &Device::Cpu).unwrap();
            assert_eq!(back.dtype(), qt.dtype());
            let diff = common::max_abs_diff(&back.dequantize(&Device::Cpu).unwrap(), &q.dequantize().unwrap());
            assert_eq!(diff, 0.0, "{name}: read-back differs by {diff}");
            // The dequantization must also be close to the weight: lower bits, larger error.
            let rmse = rmse(&q.dequantize().unwrap(), &w);
            let bound = match name {
                "q6_k" => 0.002,
                "q5_k" => 0.003,
                "q4_k" => 0.006,
                "q3_k" => 0.012,
                _ => 0.025,
            };
            assert!(rmse < bound, "{name} (imatrix {}): rmse {rmse} ≥ {bound}", importance.is_some());
        }
    }
}

fn rmse(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().sqr().unwrap().mean_all().unwrap().to_scalar::<f32>().unwrap().sqrt()
}

#[test]
fn own_formats_stay_within_half_a_step_and_pack_losslessly() {
    let w = reference()["weight"].clone();
    let values: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
    for bits in [8u8, 4, 3, 2] {
        for group in [None, Some(32), Some(64), Some(128)] {
            for symmetric in [false, true] {
                let f = IntFormat { bits, group, symmetric, gptq: false };
                let t = IntTensor::quantize(&values, 32, 512, f, None).unwrap();
                let deq = t.dequantize();
                let g = group.unwrap_or(512);
                for (i, (&x, &y)) in values.iter().zip(&deq).enumerate() {
                    let s = t.scales[i / g].abs();
                    // Half a step, plus the f16 rounding of the stored minimum.
                    let slack = s * 0.5 + 1e-3 * x.abs().max(s) + 1e-6;
                    let clipped = symmetric && (x - y).abs() <= s + 1e-6;
                    assert!((x - y).abs() <= slack || clipped, "{f:?}: weight {i}: {x} → {y}, scale {s}");
                }
                let packed = t.packed_codes();
                assert_eq!(packed.len(), (values.len() * bits as usize).div_ceil(8));
                let back = IntTensor::from_packed(f, 32, 512, &packed, t.scales.clone(), t.mins.clone()).unwrap();
                assert_eq!(back.codes, t.codes, "{f:?}: packing is not lossless");
                let groups = 32 * 512 / g;
                let meta = if symmetric { 2 } else { 4 };
                assert_eq!(t.storage_bytes(), (values.len() * bits as usize / 8 + groups * meta) as u64);
            }
        }
    }
}

#[test]
fn weighted_rounding_lowers_the_weighted_error() {
    let w = reference()["weight"].clone();
    let values: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
    // A few columns carry most of the activation energy, as in real layers.
    let imp: Vec<f32> = (0..512).map(|j| if j % 16 == 0 { 100.0 } else { 0.1 }).collect();
    let err = |t: &IntTensor| -> f64 {
        let deq = t.dequantize();
        values.iter().zip(&deq).enumerate().map(|(i, (x, y))| imp[i % 512] as f64 * ((x - y) as f64).powi(2)).sum()
    };
    for name in ["int4-g64", "int3-g64", "int2-g64", "int3-g128-sym", "int4"] {
        let QuantFormat::Int(f) = QuantFormat::parse(name).unwrap() else { unreachable!() };
        let plain = IntTensor::quantize(&values, 32, 512, f, None).unwrap();
        let weighted = IntTensor::quantize(&values, 32, 512, f, Some(&imp)).unwrap();
        let (p, q) = (err(&plain), err(&weighted));
        assert!(q < 0.9 * p, "{name}: weighted error {q} is not clearly below plain {p}");
    }
}

#[test]
fn format_names_round_trip_and_unknown_names_list_the_valid_ones() {
    for name in distill_tui::engine::quant::format::valid_names() {
        assert_eq!(QuantFormat::parse(&name).unwrap().name(), name);
    }
    assert_eq!(QuantFormat::parse("Q4K").unwrap(), QuantFormat::Ggml(GgmlDType::Q4K));
    assert_eq!(QuantFormat::parse("int3-g64-sym").unwrap().name(), "int3-g64-sym");
    let e = QuantFormat::parse("q9_9").unwrap_err().to_string();
    for needle in ["q9_9", "q8_0", "q2_k", "int4-g64"] {
        assert!(e.contains(needle), "error lacks `{needle}`: {e}");
    }
    assert!(QuantFormat::parse("int5").is_err() && QuantFormat::parse("int4-g48").is_err());
    assert_eq!(QuantFormat::parse("q8_0").unwrap().bits_per_weight(512), 8.5);
    assert_eq!(QuantFormat::parse("int4-g64").unwrap().bits_per_weight(512), 4.5);
    // GPTQ's twin rounded to nearest: the same storage, no calibration.
    for (gptq, rtn) in [
        ("int4-g64+gptq", "int4-g64"),
        ("q4_0+gptq", "q4_0"),
        ("q3_k+gptq", "q3_k"),
        ("iq4_nl+gptq", "iq4_nl"),
        ("q4_k_m+gptq", "q4_k_m"),
        ("budget-5+gptq", "budget-5"),
        ("q8_0", "q8_0"),
        ("int8", "int8"),
    ] {
        let f = QuantFormat::parse(gptq).unwrap().rounded_to_nearest();
        assert_eq!(f.name(), rtn);
        assert!(!f.is_gptq(), "{rtn}");
        // A budget still measures sensitivities on calibration text; the others need none.
        assert_eq!(f.calibration_need().is_none(), !rtn.starts_with("budget"), "{rtn}");
    }
}

#[test]
fn sizes_count_every_byte_and_fallbacks_are_reported() {
    let m = common::load_fixture("tiny-llama", false);
    let cancel = AtomicBool::new(false);
    let q =
        quantize_model(&m, QuantFormat::parse("q8_0").unwrap(), &QuantOptions::default(), &Monitor::silent(&cancel))
            .unwrap();
    let mut expected = 0u64;
    for (name, t) in &m.params {
        let n = t.elem_count() as u64;
        let r = q.report.iter().find(|r| &r.name == name).unwrap();
        let bytes = match (t.rank(), t.dim(t.rank() - 1).unwrap()) {
            (1, _) => 4 * n,
            (_, w) if w % 32 == 0 => n / 32 * 34,
            _ => 2 * n, // 172-wide down_proj rows: f16 fallback
        };
        assert_eq!(r.bytes, bytes, "{name}: {r:?}");
        assert_eq!(r.note.is_some(), t.rank() == 2 && t.dim(1).unwrap() % 32 != 0, "{name}: {r:?}");
        expected += bytes;
    }
    assert_eq!(q.size.bytes, expected);
    assert_eq!(q.size.parameters, m.parameter_count());
    assert!((q.size.bits_per_weight - 8.0 * expected as f64 / m.parameter_count() as f64).abs() < 1e-12);
    assert_eq!(q.size.fallbacks, 4);

    // Keeping the tied embedding f32 costs exactly its f32 bytes.
    let keep = QuantPolicy { embeddings: TensorRule::Keep, head: TensorRule::Keep };
    let qk = quantize_model(
        &m,
        QuantFormat::parse("q8_0").unwrap(),
        &QuantOptions { policy: keep, ..Default::default() },
        &Monitor::silent(&cancel),
    )
    .unwrap();
    let emb = m.params["model.embed_tokens.weight"].elem_count() as u64;
    assert_eq!(qk.size.bytes - q.size.bytes, 4 * emb - emb / 32 * 34);

    // The tied head multiplies in the table's own format (Q8_0 here), as its size says; kept f32,
    // it is a dense product. Over many rows both give the dequantized table's logits.
    let (net, net_keep) = (q.network(&m).unwrap(), qk.network(&m).unwrap());
    assert!(net.lm_head_weight().is_none(), "the tied head runs quantized");
    assert!(net_keep.lm_head_weight().is_some(), "kept f32, the head is dense");
    let hidden = candle_core::Tensor::randn(0f32, 1.0, (16, m.config.hidden()), &Device::Cpu).unwrap();
    let table = q.dequantized().unwrap()["model.embed_tokens.weight"].clone();
    let want = hidden.matmul(&table.t().unwrap()).unwrap();
    let got = net.lm_logits(&hidden).unwrap();
    assert!(common::max_abs_diff(&got, &want) < 1e-4, "{}", common::max_abs_diff(&got, &want));
}

#[test]
fn own_format_safetensors_round_trip() {
    let m = common::load_fixture("tiny-llama", false);
    let cancel = AtomicBool::new(false);
    for name in ["int4-g32", "int3-g64-sym", "f16"] {
        let q =
            quantize_model(&m, QuantFormat::parse(name).unwrap(), &QuantOptions::default(), &Monitor::silent(&cancel))
                .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        export_safetensors(&q, &path).unwrap();
        let back = read_safetensors_dequantized(&path).unwrap();
        let ours = q.dequantized().unwrap();
        assert_eq!(back.keys().collect::<Vec<_>>(), ours.keys().collect::<Vec<_>>(), "{name}");
        for (n, t) in &ours {
            assert_eq!(common::max_abs_diff(&back[n], t), 0.0, "{name}: {n}");
        }
    }
}
