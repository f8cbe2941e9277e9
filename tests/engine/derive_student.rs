//! Student derivation: DistilBERT-style layer copies, seeded random init, HF folders that load.

use crate::common;

use candle_core::Device;
use distill_tui::engine::derive::{derive_and_save, derive_student, layer_map, StudentShape};
use std::collections::BTreeSet;

fn shape(layers: usize) -> StudentShape {
    StudentShape { layers, ..StudentShape::default() }
}

#[test]
fn layer_map_takes_every_other_layer_like_distilbert() {
    assert_eq!(layer_map(12, 6), vec![0, 2, 4, 6, 8, 10]);
    assert_eq!(layer_map(30, 8), vec![0, 3, 7, 11, 15, 18, 22, 26]);
    assert_eq!(layer_map(4, 4), vec![0, 1, 2, 3]);
}

#[test]
fn derived_llama_copies_evenly_spaced_layers_and_saves_a_loadable_hf_folder() {
    let teacher = common::load_fixture("tiny-llama", false);
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("student");
    let report = derive_and_save(&teacher, &shape(2), 0, &dir).unwrap();
    assert_eq!(report.copied_layers, vec![0, 2]);
    assert!(report.embeddings_copied);
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert!(dir.join(f).is_file(), "{f} written");
    }
    assert_eq!(
        std::fs::read(dir.join("tokenizer.json")).unwrap(),
        std::fs::read(common::fixture("tiny-llama").join("tokenizer.json")).unwrap()
    );
    let student = common::load(dir.to_str().unwrap(), false);
    assert_eq!(student.config.layers(), 2);
    assert_eq!(student.info.parameters, report.parameters);
    // Exactly the teacher's key set restricted to two layers: nothing missing, nothing unexpected.
    let expected: BTreeSet<String> = teacher
        .params
        .keys()
        .filter(|k| {
            !k.starts_with("model.layers.") || k.starts_with("model.layers.0.") || k.starts_with("model.layers.1.")
        })
        .cloned()
        .collect();
    let stored: BTreeSet<String> =
        candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap().into_keys().collect();
    assert_eq!(stored, expected);
    for (s, t) in [
        ("model.layers.1.mlp.up_proj.weight", "model.layers.2.mlp.up_proj.weight"),
        ("model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.q_proj.weight"),
        ("model.embed_tokens.weight", "model.embed_tokens.weight"),
    ] {
        assert_eq!(common::max_abs_diff(&student.params[s], &teacher.params[t]), 0.0, "{s} copies teacher {t}");
    }
}

#[test]
fn qwen2_student_keeps_per_layer_lists_consistent() {
    let teacher = common::load_fixture("tiny-qwen2", false);
    let s = derive_student(&teacher, &shape(1), 0).unwrap();
    assert_eq!(s.config_json["num_hidden_layers"], 1);
    assert_eq!(s.config_json["layer_types"].as_array().unwrap().len(), 1);
    assert!(s.tensors.contains_key("lm_head.weight"), "untied head is kept");
    assert!(s.tensors.contains_key("model.layers.0.self_attn.q_proj.bias"));
}

#[test]
fn narrower_student_is_random_but_seeded() {
    let teacher = common::load_fixture("tiny-llama", false);
    let narrow = StudentShape { layers: 2, hidden: Some(32), heads: Some(2), kv_heads: Some(1), intermediate: None };
    let a = derive_student(&teacher, &narrow, 1).unwrap();
    let b = derive_student(&teacher, &narrow, 1).unwrap();
    let c = derive_student(&teacher, &narrow, 2).unwrap();
    assert!(a.copied_layers.is_empty() && !a.embeddings_copied);
    assert_eq!(a.config.hidden(), 32);
    assert_eq!(a.config.intermediate(), 88, "intermediate scales with hidden, rounded to 8");
    let w = "model.layers.0.mlp.gate_proj.weight";
    assert_eq!(common::max_abs_diff(&a.tensors[w], &b.tensors[w]), 0.0, "same seed, same weights");
    assert!(common::max_abs_diff(&a.tensors[w], &c.tensors[w]) > 0.0, "another seed, other weights");
    let e = derive_student(
        &teacher,
        &StudentShape { layers: 2, heads: Some(3), kv_heads: Some(2), ..StudentShape::default() },
        0,
    );
    assert!(e.err().unwrap().to_string().contains("multiple of kv heads"));
    assert!(derive_student(&teacher, &shape(0), 0).err().unwrap().to_string().contains("at least one layer"));
}

#[test]
fn gpt2_and_bert_students_copy_their_own_layer_names() {
    for (name, key) in [
        ("tiny-gpt2", "transformer.h.1.mlp.c_fc.weight"),
        ("tiny-bert-cls", "bert.encoder.layer.1.output.dense.weight"),
    ] {
        let teacher = common::load_fixture(name, false);
        let s = derive_student(&teacher, &shape(2), 0).unwrap();
        assert!(!s.copied_layers.is_empty(), "{name}: layers copied");
        let src = key.replace(".1.", &format!(".{}.", s.copied_layers[1]));
        assert_eq!(common::max_abs_diff(&s.tensors[key], &teacher.params[&src]), 0.0, "{name}: {key} from {src}");
    }
}

#[test]
fn transformers_loads_the_derived_student_without_missing_or_unexpected_keys() {
    if let Err(reason) = common::python_with(&["torch", "transformers"]) {
        eprintln!("skipped: {reason}");
        return;
    }
    let out = tempfile::tempdir().unwrap();
    for name in ["tiny-llama", "tiny-qwen2", "tiny-gpt2", "tiny-bert-cls"] {
        let teacher = common::load_fixture(name, false);
        let dir = out.path().join(name);
        derive_and_save(&teacher, &shape(2), 0, &dir).unwrap();
        let script = "import sys, transformers as t\n\
            cls = getattr(t, t.AutoConfig.from_pretrained(sys.argv[1]).architectures[0])\n\
            m, info = cls.from_pretrained(sys.argv[1], output_loading_info=True)\n\
            bad = {k: v for k, v in info.items() if k in ('missing_keys', 'unexpected_keys', 'mismatched_keys') and v}\n\
            assert not bad, bad\n\
            print('ok', sum(p.numel() for p in m.parameters()))";
        let o = std::process::Command::new("python3").args(["-c", script, dir.to_str().unwrap()]).output().unwrap();
        assert!(o.status.success(), "{name}: {}", String::from_utf8_lossy(&o.stderr));
    }
}
