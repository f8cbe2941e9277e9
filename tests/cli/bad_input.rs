//! Bad input through the real binary: each case exits with code 2 and a message that names the
//! thing and says what to do.

use crate::common;

use common::run_cli;

fn assert_bad_input(args: &[&str], env: &[(&str, &str)], needles: &[&str]) {
    let (code, _, stderr) = run_cli(args, env);
    assert_eq!(code, 2, "{args:?}: exit code {code}, stderr: {stderr}");
    for n in needles {
        assert!(stderr.contains(n), "{args:?}: stderr lacks `{n}`:\n{stderr}");
    }
}

#[test]
fn unknown_id_offline_is_not_in_cache() {
    let cache = tempfile::tempdir().unwrap();
    let c = cache.path().to_str().unwrap();
    assert_bad_input(
        &["inspect", "nobody/no-such-model"],
        &[("HF_HUB_OFFLINE", "1"), ("HF_HUB_CACHE", c)],
        &["nobody/no-such-model", "not in the local hub cache", "HF_HUB_OFFLINE"],
    );
}

#[test]
fn truncated_and_corrupt_safetensors_are_named() {
    let (_tmp, dir) = common::copy_fixture("tiny-llama");
    let weights = dir.join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let d = dir.to_str().unwrap();
    assert_bad_input(&["inspect", d], &[], &["corrupt or truncated", "model.safetensors", "download it again"]);
    std::fs::write(&weights, b"\xff\xff\xff\xff\xff\xff\xff\x7fgarbage").unwrap();
    assert_bad_input(&["inspect", d], &[], &["corrupt or truncated", "model.safetensors"]);
}

#[test]
fn missing_tokenizer_says_where_it_was_expected() {
    let (_tmp, dir) = common::copy_fixture("tiny-llama");
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    let text = dir.join("text.txt");
    std::fs::write(&text, "It is a truth universally acknowledged.").unwrap();
    assert_bad_input(
        &["eval", dir.to_str().unwrap(), "--data", text.to_str().unwrap(), "--seq-len", "8"],
        &[],
        &["no tokenizer", "tokenizer.json"],
    );
}

#[test]
fn unsupported_model_type_lists_the_supported_ones() {
    let (_tmp, dir) = common::copy_fixture("tiny-llama");
    let cfg = std::fs::read_to_string(dir.join("config.json")).unwrap().replace("\"llama\"", "\"mamba\"");
    std::fs::write(dir.join("config.json"), cfg).unwrap();
    assert_bad_input(
        &["inspect", dir.to_str().unwrap()],
        &[],
        &["unsupported model_type `mamba`", "llama, qwen2, qwen3, gpt2, bert, distilbert"],
    );
}

#[test]
fn vocabulary_mismatch_through_check() {
    let (_tmp, dir) = common::copy_fixture("tiny-llama-student");
    let path = dir.join("tokenizer.json");
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    json["model"]["vocab"].as_object_mut().unwrap().insert("zzz-extra-token".into(), 512.into());
    std::fs::write(&path, json.to_string()).unwrap();
    let teacher = common::fixture("tiny-llama");
    assert_bad_input(
        &["check", teacher.to_str().unwrap(), dir.to_str().unwrap()],
        &[],
        &["vocabularies differ", "513"],
    );
}

#[test]
fn missing_paths_and_malformed_ids_are_rejected() {
    assert_bad_input(&["inspect", "./no/such/folder"], &[], &["no such file or folder"]);
    assert_bad_input(&["inspect", "a/b/c/d"], &[], &["neither an existing path nor a hub id"]);
    assert_bad_input(&["inspect", "org/name:weights.bin"], &[], &[".gguf"]);
    let fixture = common::fixture("tiny-llama");
    assert_bad_input(&["eval", fixture.to_str().unwrap(), "--data", "/no/such.txt"], &[], &["--data", "/no/such.txt"]);
}

#[test]
fn inspect_json_reports_the_model() {
    let (code, stdout, stderr) = run_cli(&["inspect", common::fixture("tiny-qwen2").to_str().unwrap(), "--json"], &[]);
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["model_type"], "qwen2");
    assert_eq!(v["layers"], 3);
    assert_eq!(v["kv_heads"], 2);
    assert_eq!(v["vocab"], 512);
    assert_eq!(v["tied_embeddings"], false);
    assert_eq!(v["dtype"], "F32");
    let params: u64 = v["parameters"].as_u64().unwrap();
    // embed + lm_head + 3 × (q,k,v,o with q/k/v biases + mlp + 2 norms) + final norm
    let layer = 64 * 64 + 64 + 2 * (32 * 64 + 32) + 64 * 64 + 3 * 64 * 160 + 2 * 64;
    assert_eq!(params, 2 * 512 * 64 + 3 * layer + 64);
}
