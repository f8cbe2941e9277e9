//! Model files that would panic, print NaN or write escapes to the terminal: each is an error that
//! names the field (exit 2), and what a file says is shown, never executed.

use crate::common;
use std::path::{Path, PathBuf};

/// The fixture `name` in `dir` with its config.json changed by `edit` (weights and tokenizer linked).
fn edited(dir: &Path, name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let from = common::fixture(name);
    let to = dir.join(name);
    std::fs::create_dir_all(&to).unwrap();
    for f in ["model.safetensors", "tokenizer.json", "vocab.txt", "tokenizer_config.json"] {
        if from.join(f).is_file() {
            std::os::unix::fs::symlink(from.join(f), to.join(f)).unwrap();
        }
    }
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(from.join("config.json")).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(to.join("config.json"), config.to_string()).unwrap();
    to
}

#[test]
fn impossible_configs_are_named_errors_not_panics_or_nans() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: [(&str, &str, serde_json::Value, &str); 7] = [
        ("tiny-llama", "num_attention_heads", 0.into(), "the number of attention heads is 0"),
        ("tiny-qwen2", "num_attention_heads", 0.into(), "the number of attention heads is 0"),
        ("tiny-gpt2", "n_head", 0.into(), "the number of attention heads is 0"),
        ("tiny-bert-cls", "num_attention_heads", 0.into(), "the number of attention heads is 0"),
        ("tiny-llama", "rms_norm_eps", (-1e-6).into(), "rms_norm_eps = -0.000001 must be a finite positive number"),
        ("tiny-llama", "rope_theta", 0.into(), "rope_theta = 0 must be a finite positive number"),
        ("tiny-llama", "max_position_embeddings", 0.into(), "the context length (max_position_embeddings) is 0"),
    ];
    for (i, (fixture, key, value, want)) in cases.into_iter().enumerate() {
        let dir = tmp.path().join(format!("case{i}"));
        // transformers 5 configs keep the rotary base under rope_parameters.
        let model = edited(&dir, fixture, |c| match c.get_mut("rope_parameters").filter(|_| key == "rope_theta") {
            Some(p) => p[key] = value.clone(),
            None => c[key] = value.clone(),
        });
        let m = model.to_str().unwrap();
        let data = common::shared_dir().join("data/austen/persuasion.txt");
        let eval = vec!["eval", m, "--data", data.to_str().unwrap(), "--max-tokens", "64", "--seq-len", "16"];
        for args in [vec!["inspect", m], vec!["check", m, "--derive-layers", "1"], eval] {
            let (code, _, stderr) = common::run_cli(&args, &[]);
            assert_eq!(code, 2, "{fixture} {key}={value} {args:?}: {stderr}");
            assert!(stderr.contains(want) && stderr.contains("config.json"), "{fixture} {key}: {stderr}");
        }
    }
    // GQA that does not divide, and an unknown activation.
    let model = edited(&tmp.path().join("gqa"), "tiny-llama", |c| c["num_key_value_heads"] = 3.into());
    let (code, _, stderr) = common::run_cli(&["inspect", model.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("must be a multiple of kv heads"), "{stderr}");
    let model = edited(&tmp.path().join("act"), "tiny-llama", |c| c["hidden_act"] = "swoosh".into());
    let (code, _, stderr) = common::run_cli(&["inspect", model.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("hidden_act `swoosh` is not supported"), "{stderr}");
}

#[test]
fn a_derived_student_must_be_a_real_model_no_larger_than_its_teacher() {
    let tmp = tempfile::tempdir().unwrap();
    let t = common::fixture("tiny-llama");
    let t = t.to_str().unwrap();
    let out = tmp.path().join("s");
    let o = out.to_str().unwrap();
    let (code, _, stderr) = common::run_cli(&["derive-student", t, "--layers", "1", "--hidden", "0", "--out", o], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--hidden 0"), "{stderr}");
    let (code, _, stderr) = common::run_cli(&["derive-student", t, "--layers", "10", "--out", o], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("larger than its") && stderr.contains("derive at most"), "{stderr}");
    assert!(!out.exists(), "a refused student was written");
}

#[test]
fn what_a_model_file_says_is_shown_escaped_never_sent_to_the_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let title = "\u{1b}]0;pwned\u{7}\u{1b}[2JLlamaForCausalLM";
    let model = edited(tmp.path(), "tiny-llama", |c| c["architectures"] = serde_json::json!([title]));
    let (code, stdout, stderr) = common::run_cli(&["inspect", model.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stdout.contains('\u{1b}') && !stdout.contains('\u{7}'), "raw escapes reached the terminal: {stdout:?}");
    assert!(stdout.contains("\\u{1b}]0;pwned\\u{7}\\u{1b}[2JLlamaForCausalLM"), "{stdout}");
    // --json is data: the string is kept, escaped by JSON itself.
    let (_, json, _) = common::run_cli(&["inspect", model.to_str().unwrap(), "--json"], &[]);
    assert!(!json.contains('\u{1b}'), "{json:?}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["architecture"], title);
}

#[test]
fn a_sequence_classifier_without_id2label_keeps_its_classes() {
    let tmp = tempfile::tempdir().unwrap();
    // As transformers reads it: num_labels classes named LABEL_i (a bare encoder would give
    // hidden-size outputs instead of class logits).
    let model = edited(tmp.path(), "tiny-bert-cls", |c| {
        let o = c.as_object_mut().unwrap();
        o.remove("id2label");
        o.remove("label2id");
        o.insert("num_labels".into(), 3.into());
    });
    let m = model.to_str().unwrap();
    let (code, stdout, stderr) = common::run_cli(&["logits", m, "--prompt", "a small cat", "--json"], &[]);
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let shown = v["distributions"][0]["top"].as_array().unwrap();
    assert_eq!(shown.len(), 3, "{stdout}");
    assert!(stdout.contains("LABEL_2"), "{stdout}");
    let (_, info, _) = common::run_cli(&["inspect", m, "--json"], &[]);
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["task"], "classifier");
}

#[test]
fn nan_weights_and_foreign_tokenizers_are_named_not_scored() {
    let tmp = tempfile::tempdir().unwrap();
    let text = tmp.path().join("text.txt");
    std::fs::write(&text, "It is a truth universally acknowledged, that a single man. ".repeat(20)).unwrap();
    let t = text.to_str().unwrap();
    // One NaN in one weight: the error names the tensor instead of printing NaN perplexity.
    let model = tmp.path().join("nan");
    std::fs::create_dir_all(&model).unwrap();
    let from = common::fixture("tiny-llama");
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(from.join(f), model.join(f)).unwrap();
    }
    let mut tensors =
        candle_core::safetensors::load(from.join("model.safetensors"), &candle_core::Device::Cpu).unwrap();
    let name = "model.layers.0.mlp.up_proj.weight";
    let w = &tensors[name];
    let mut v: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
    v[7] = f32::NAN;
    tensors.insert(name.into(), candle_core::Tensor::from_vec(v, w.shape(), &candle_core::Device::Cpu).unwrap());
    candle_core::safetensors::save(&tensors, model.join("model.safetensors")).unwrap();
    let (code, stdout, stderr) =
        common::run_cli(&["eval", model.to_str().unwrap(), "--data", t, "--seq-len", "16"], &[]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stderr.contains(&format!("its weight `{name}` holds 1 NaN or infinite values")), "{stderr}");

    // A tokenizer with more tokens than the model's embedding (8 rows kept, config to match).
    let small = tmp.path().join("small");
    std::fs::create_dir_all(&small).unwrap();
    std::fs::copy(from.join("tokenizer.json"), small.join("tokenizer.json")).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(from.join("config.json")).unwrap()).unwrap();
    config["vocab_size"] = 8.into();
    std::fs::write(small.join("config.json"), config.to_string()).unwrap();
    let mut tensors =
        candle_core::safetensors::load(from.join("model.safetensors"), &candle_core::Device::Cpu).unwrap();
    for (name, t) in tensors.iter_mut() {
        if name.contains("embed_tokens") || name.contains("lm_head") {
            *t = t.narrow(0, 0, 8).unwrap().contiguous().unwrap();
        }
    }
    candle_core::safetensors::save(&tensors, small.join("model.safetensors")).unwrap();
    let (code, _, stderr) = common::run_cli(&["eval", small.to_str().unwrap(), "--data", t, "--seq-len", "16"], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("embedding has 8 rows: the tokenizer is not this model's"), "{stderr}");
}
