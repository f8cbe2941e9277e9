//! GGUF export: a fixture llama in Q8_0 runs in candle-transformers' `quantized_llama` with logits
//! that agree with ours; metadata, tensors and tokenizer read back through our own `load_gguf`.

use crate::common;

use candle_core::{Device, D};
use candle_transformers::models::quantized_llama::ModelWeights;
use distill_tui::engine::context::Monitor;
use distill_tui::engine::gguf::load_gguf;
use distill_tui::engine::quant::gguf_export::{export_gguf, gguf_tensor_name};
use distill_tui::engine::quant::{export, quantize_model, QuantFormat, QuantOptions, QuantizedModel};
use distill_tui::engine::tokenizer::encode_plain;
use std::sync::atomic::AtomicBool;

fn quantized(name: &str, format: &str) -> (distill_tui::engine::loader::LoadedModel, QuantizedModel) {
    let m = common::load_fixture(name, false);
    let q = quantize_model(
        &m,
        QuantFormat::parse(format).unwrap(),
        &QuantOptions::default(),
        &Monitor::silent(&AtomicBool::new(false)),
    )
    .unwrap();
    (m, q)
}

/// Largest logit difference bounded by this for Q8_0 against the f32 model: Q8_0 weights plus
/// Q8_0-quantized activations inside candle's matmul, over a random 4-layer model whose logits
/// are up to about 1.2 (measured: 1.2e-2).
const Q8_TOLERANCE_VS_F32: f32 = 2e-2;
/// Against our own network running the same quantized weights: only the order of float
/// operations and the tied head (f32 on dequantized Q8_0 here, Q8_0 × Q8_0 there) differ (measured: 4.1e-3).
const Q8_TOLERANCE_VS_QUANTIZED: f32 = 1e-2;

#[test]
fn q8_0_gguf_runs_in_candle_quantized_llama_like_our_forward() {
    let (m, q) = quantized("tiny-llama", "q8_0");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny-llama-q8_0.gguf");
    export_gguf(&m, &q, &path).unwrap();

    let mut reader = std::fs::File::open(&path).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut reader).unwrap();
    let mut theirs = ModelWeights::from_gguf(content, &mut reader, &Device::Cpu).unwrap();

    let (ids, _) = common::golden(&common::fixture("tiny-llama"));
    let row = ids.get(0).unwrap();
    let t = row.dim(0).unwrap();
    let ours_f32 = m.network.forward(&row.unsqueeze(0).unwrap()).unwrap().squeeze(0).unwrap();
    let ours_q = q.network(&m).unwrap().forward(&row.unsqueeze(0).unwrap()).unwrap().squeeze(0).unwrap();
    let (mut vs_f32, mut vs_q) = (0f32, 0f32);
    // quantized_llama returns the last position's logits: run every prefix from position 0.
    for n in 1..=t {
        let prefix = row.narrow(0, 0, n).unwrap().unsqueeze(0).unwrap();
        let last = theirs.forward(&prefix, 0).unwrap().squeeze(0).unwrap();
        vs_f32 = vs_f32.max(common::max_abs_diff(&last, &ours_f32.get(n - 1).unwrap()));
        vs_q = vs_q.max(common::max_abs_diff(&last, &ours_q.get(n - 1).unwrap()));
    }
    let scale = ours_f32.abs().unwrap().max(D::Minus1).unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
    println!(
        "quantized_llama vs our f32 forward: max |Δlogit| {vs_f32:.3e}; vs our Q8_0 network: {vs_q:.3e} \
         ({t} positions, logits up to {scale:.3})"
    );
    assert!(vs_f32 < Q8_TOLERANCE_VS_F32, "vs f32: {vs_f32}");
    assert!(vs_q < Q8_TOLERANCE_VS_QUANTIZED, "vs our quantized network: {vs_q}");
}

#[test]
fn exported_gguf_reads_back_through_our_loader() {
    for (fixture, format) in [("tiny-llama", "q8_0"), ("tiny-qwen2", "q4_0"), ("tiny-llama-student", "q5_1")] {
        let (m, q) = quantized(fixture, format);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        let report = export(&m, &q, &path).unwrap();
        assert_eq!(report.bytes, std::fs::metadata(&path).unwrap().len());
        let g = load_gguf(&path, &Device::Cpu).unwrap();
        for key in [
            "model_type",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "vocab_size",
            "max_position_embeddings",
            "tie_word_embeddings",
        ] {
            assert_eq!(g.config[key], m.config_json[key], "{fixture}: config `{key}`");
        }
        // Every tensor, un-permuted by the loader, equals our dequantization exactly.
        let ours = q.dequantized().unwrap();
        assert_eq!(g.tensors.len(), ours.len(), "{fixture}: tensor count");
        for (name, t) in &ours {
            let back = g.tensors.get(name).unwrap_or_else(|| panic!("{fixture}: `{name}` missing"));
            assert_eq!(common::max_abs_diff(back, t), 0.0, "{fixture} {format}: `{name}`");
            assert!(gguf_tensor_name(name).is_some());
        }
        // The vocabulary and merges: the same ids for a text without digits (the loader rebuilds
        // the SmolLM pre-tokenizer, which splits digits; these fixtures' tokenizers do not).
        let text = "It is a truth universally acknowledged, that a single man in possession of a good fortune";
        let ours = encode_plain(m.tokenizer().unwrap(), text).unwrap();
        let back = encode_plain(g.tokenizer.as_ref().expect("tokenizer from the GGUF vocabulary"), text).unwrap();
        assert_eq!(back, ours, "{fixture}: token ids");
    }
}

#[test]
fn llama_q_and_k_rows_are_permuted_for_llama_cpp() {
    let (m, q) = quantized("tiny-llama", "q8_0");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    export_gguf(&m, &q, &path).unwrap();
    let mut reader = std::fs::File::open(&path).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut reader).unwrap();
    let raw = content.tensor(&mut reader, "blk.0.attn_q.weight", &Device::Cpu).unwrap();
    let raw = raw.dequantize(&Device::Cpu).unwrap();
    let hf = q.tensors["model.layers.0.self_attn.q_proj.weight"].dequantize().unwrap();
    let expected = distill_tui::engine::gguf::permute_qk_for_gguf(&hf, 4).unwrap();
    assert_eq!(common::max_abs_diff(&raw, &expected), 0.0);
    assert!(common::max_abs_diff(&raw, &hf) > 0.0, "the rows were not permuted");
    let keys: Vec<&String> = content.metadata.keys().collect();
    for key in ["llama.rope.dimension_count", "llama.attention.head_count_kv", "tokenizer.ggml.merges"] {
        assert!(content.metadata.contains_key(key), "missing `{key}` in {keys:?}");
    }
}

#[test]
fn own_formats_are_refused_for_gguf_and_nothing_is_written() {
    let (m, q) = quantized("tiny-llama", "int4-g32");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    let e = export(&m, &q, &path).unwrap_err().to_string();
    assert!(e.contains("own format") && e.contains(".safetensors"), "{e}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "something was left behind");
}

/// llama.cpp's `_M` mixes: each linear weight asks for the type llama.cpp's `llama_tensor_get_type`
/// gives it (`use_more_bits` layers of attn_v and ffn_down in Q6_K for q4_k_m; Q5_K/Q4_K for q3_k_m),
/// the GGUF file stores every tensor in the type the quantizer's plan reports (after width
/// fallbacks), read back through candle's reader (IQ4_NL, which candle lacks, through ours), and every tensor equals our dequantization.
#[test]
fn a_mix_gives_each_tensor_its_planned_type_in_the_gguf_file() {
    use distill_tui::engine::quant::format::Mix;
    // The rule itself on a 30-block model (SmolLM2-135M's depth): first and last eighth, every third between.
    let more: Vec<usize> = (0..30)
        .filter(|i| Mix::Q4KM.linear_format(&format!("model.layers.{i}.self_attn.v_proj.weight"), 30).name() == "q6_k")
        .collect();
    assert_eq!(more, vec![0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]);
    assert_eq!(Mix::Q4KM.linear_format("model.layers.5.mlp.up_proj.weight", 30).name(), "q4_k");
    assert_eq!(Mix::Q3KM.linear_format("model.layers.1.self_attn.v_proj.weight", 30).name(), "q5_k");
    assert_eq!(Mix::Q3KM.linear_format("model.layers.9.self_attn.v_proj.weight", 30).name(), "q4_k");
    assert_eq!(Mix::Q3KM.linear_format("model.layers.9.self_attn.o_proj.weight", 30).name(), "q4_k");
    assert_eq!(Mix::Q3KM.linear_format("model.layers.9.self_attn.q_proj.weight", 30).name(), "q3_k");
    assert_eq!(QuantFormat::parse("Q4_K_M").unwrap(), QuantFormat::Mix(Mix::Q4KM));
    for (fixture, mix) in [("tiny-llama", "q4_k_m"), ("tiny-qwen2", "q3_k_m"), ("tiny-llama-student", "q5_k_m")] {
        let (m, q) = quantized(fixture, mix);
        let format = QuantFormat::parse(mix).unwrap();
        let layers = m.config.layers();
        let mut asked = std::collections::BTreeSet::new();
        for r in &q.report {
            if r.role == distill_tui::engine::quant::TensorRole::Linear {
                assert_eq!(r.requested, format.for_linear(&r.name, layers).name(), "{fixture} {}", r.name);
                asked.insert(r.requested.clone());
            }
        }
        assert!(asked.len() >= 2, "{fixture} {mix}: the mix asks for more than one type: {asked:?}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        export(&m, &q, &path).unwrap();
        let types = distill_tui::engine::gguf::tensor_type_names(&path).unwrap();
        for r in &q.report {
            let Some(name) = gguf_tensor_name(&r.name) else { continue };
            let stored = types.get(&name).unwrap_or_else(|| panic!("{fixture}: {name} missing"));
            assert_eq!(stored, &r.format, "{fixture} {mix}: {name} stored as {stored}, planned {}", r.format);
        }
        let g = load_gguf(&path, &Device::Cpu).unwrap();
        for (name, t) in &q.dequantized().unwrap() {
            assert_eq!(common::max_abs_diff(&g.tensors[name], t), 0.0, "{fixture} {mix}: `{name}`");
        }
    }
}
