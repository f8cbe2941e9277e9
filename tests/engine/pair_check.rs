//! Pair checks: one tokenizer, padding-only vocab differences, memory estimate against the machine.

use crate::common;

use candle_core::{Device, Tensor};
use distill_tui::engine::derive::save_safetensors;
use distill_tui::engine::pair::{check_pair, VocabCheck};
use distill_tui::engine::Error;
use std::collections::BTreeMap;

#[test]
fn fixture_pair_shares_a_vocabulary_and_the_memory_estimate_adds_up() {
    let t = common::load_fixture("tiny-llama", false);
    let s = common::load_fixture("tiny-llama-student", false);
    let r = check_pair(&t, &s, 4, 64).unwrap();
    assert_eq!(r.vocab, VocabCheck::Identical { size: 512 });
    let m = &r.memory;
    assert_eq!(m.teacher_weights, 4 * t.parameter_count());
    assert_eq!(m.optimizer, 2 * m.student_weights);
    assert_eq!(m.logits, 2 * 4 * 64 * 512 * 4);
    assert_eq!(
        m.total,
        m.teacher_weights
            + m.student_weights
            + m.student_grads
            + m.optimizer
            + m.logits
            + m.activations
            + m.transient
            + m.runtime
    );
    assert!(r.machine_total_bytes > 0 && r.fits);
    // A larger batch needs more memory.
    assert!(check_pair(&t, &s, 16, 64).unwrap().memory.total > m.total);
}

#[test]
fn padded_embedding_rows_are_reported_as_padding_only() {
    let (_tmp, dir) = common::copy_fixture("tiny-llama-student");
    let mut tensors: BTreeMap<String, Tensor> =
        candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap().into_iter().collect();
    let emb = &tensors["model.embed_tokens.weight"];
    let pad = Tensor::zeros((8, emb.dim(1).unwrap()), emb.dtype(), &Device::Cpu).unwrap();
    let padded = Tensor::cat(&[emb, &pad], 0).unwrap();
    tensors.insert("model.embed_tokens.weight".into(), padded);
    save_safetensors(&dir.join("model.safetensors"), &tensors).unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    cfg["vocab_size"] = 520.into();
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let t = common::load_fixture("tiny-llama", false);
    let s = common::load(dir.to_str().unwrap(), false);
    let r = check_pair(&t, &s, 2, 32).unwrap();
    assert_eq!(r.vocab, VocabCheck::PaddingOnly { tokenizer_size: 512, teacher_rows: 512, student_rows: 520 });
}

#[test]
fn a_different_tokenizer_is_a_vocabulary_mismatch_naming_the_first_difference() {
    let (_tmp, dir) = common::copy_fixture("tiny-llama-student");
    let path = dir.join("tokenizer.json");
    let mut tok: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let vocab = tok["model"]["vocab"].as_object_mut().unwrap();
    // Swap the ids of two ordinary tokens.
    let (a, b) = {
        let mut keys: Vec<(String, u64)> = vocab.iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap())).collect();
        keys.sort_by_key(|k| k.1);
        (keys[100].clone(), keys[101].clone())
    };
    vocab.insert(a.0.clone(), b.1.into());
    vocab.insert(b.0.clone(), a.1.into());
    std::fs::write(&path, tok.to_string()).unwrap();
    let t = common::load_fixture("tiny-llama", false);
    let s = common::load(dir.to_str().unwrap(), false);
    let e = check_pair(&t, &s, 2, 32).unwrap_err();
    assert!(matches!(e, Error::VocabMismatch { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("first difference at id 100") && msg.contains("derive-student"), "{msg}");
}

#[test]
fn a_causal_lm_and_a_classifier_do_not_pair() {
    let t = common::load_fixture("tiny-llama", false);
    let s = common::load_fixture("tiny-bert-cls", false);
    let msg = check_pair(&t, &s, 2, 32).unwrap_err().to_string();
    assert!(msg.contains("causal-lm") && msg.contains("classifier"), "{msg}");
}

/// The check from configs and tensor headers alone (what `check` and the Models screen do) says
/// what the check of the loaded models says; a GGUF's header counts its matrices in their blocks,
/// exactly what the model holds when kept in them; a derived student's header has the derived
/// model's parameter count without initialising it.
#[test]
fn headers_alone_give_the_loaded_pairs_check() {
    use distill_tui::engine::derive::{derive_loaded, StudentShape};
    use distill_tui::engine::header::{derived_header, read_header};
    use distill_tui::engine::loader::{load_model, LoadOptions};
    use distill_tui::engine::source::resolve;
    let header = |spec: &str| read_header(&resolve(spec, &common::hub(), &|_| {}).unwrap()).unwrap();
    let (t, s) = (common::load_fixture("tiny-llama", false), common::load_fixture("tiny-llama-student", false));
    let (th, sh) = (
        header(common::fixture("tiny-llama").to_str().unwrap()),
        header(common::fixture("tiny-llama-student").to_str().unwrap()),
    );
    assert_eq!(th.info.parameters, t.info.parameters);
    assert_eq!(sh.info.parameters, s.info.parameters);
    assert_eq!(th.info.dtype, t.info.dtype);
    let (loaded, headers) = (check_pair(&t, &s, 4, 64).unwrap(), check_pair(&th, &sh, 4, 64).unwrap());
    assert_eq!(headers.memory, loaded.memory);
    assert_eq!(headers.vocab, loaded.vocab);

    let shape = StudentShape { layers: 2, ..StudentShape::default() };
    let derived = derive_loaded(&t, &shape, 0).unwrap();
    assert_eq!(derived_header(&th, &shape).unwrap().info.parameters, derived.info.parameters);

    let dir = tempfile::tempdir().unwrap();
    let gguf = crate::gguf_teacher::fixture_gguf("tiny-qwen2", "q4_0", dir.path());
    let gh = header(gguf.to_str().unwrap());
    let resolved = resolve(gguf.to_str().unwrap(), &common::hub(), &|_| {}).unwrap();
    let kept = load_model(&resolved, &LoadOptions { keep_quantized: true, ..LoadOptions::default() }).unwrap();
    assert_eq!(gh.block_bytes, Some(kept.resident_weight_bytes()));
    assert_eq!(gh.f32_bytes, 4 * kept.parameter_count());
    assert_eq!(gh.info.parameters, kept.info.parameters);
    assert_eq!(gh.info.dtype, kept.info.dtype);
}
