//! Runs whose teacher computes in a block format: a GGUF teacher in its own formats (the default
//! for a GGUF), and an f32 teacher quantized once at load (`teacher_precision = "q8_0"`); each
//! run's summary says how far that teacher is from the f32 one.

use crate::common;

use distill_tui::engine::context::Monitor;
use distill_tui::engine::quant::{export, quantize_model, QuantFormat, QuantOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

fn recipe(dir: &Path, name: &str, teacher: &Path, extra: &str) -> PathBuf {
    let austen = common::shared_dir().join("data/austen");
    let train = dir.join("train.txt");
    if !train.exists() {
        let text = std::fs::read_to_string(austen.join("emma.txt")).unwrap();
        std::fs::write(&train, &text[..60_000]).unwrap();
        let eval = std::fs::read_to_string(austen.join("persuasion.txt")).unwrap();
        std::fs::write(dir.join("eval.txt"), &eval[..12_000]).unwrap();
    }
    let text = format!(
        "[teacher]\nmodel = \"{}\"\n[student]\nderive = {{ layers = 2 }}\n[data]\ntrain = \"train.txt\"\neval = \"eval.txt\"\nseq_len = 32\neval_tokens = 512\n\
         [distill]\nsteps = 8\nbatch_size = 4\nwarmup_steps = 2\neval_every = 8\ncheckpoint_every = 8\ncache_top_k = 0\nbaseline = false\n{extra}\n[output]\ndir = \"{}\"\n",
        teacher.display(),
        dir.join(name).display()
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn run(recipe: &Path, cache: &Path) -> (i32, Vec<serde_json::Value>, String) {
    let (code, stdout, stderr) = common::run_cli(
        &["run", recipe.to_str().unwrap(), "--json"],
        &[("DISTILL_CACHE_DIR", cache.to_str().unwrap())],
    );
    (code, stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect(), stderr)
}

fn summary(events: &[serde_json::Value]) -> &serde_json::Value {
    &events.iter().rev().find(|e| e["event"] == "summary").expect("a summary event")["summary"]
}

fn logs(events: &[serde_json::Value]) -> Vec<String> {
    events.iter().filter(|e| e["event"] == "log").filter_map(|e| e["message"].as_str().map(String::from)).collect()
}

#[test]
fn a_gguf_teacher_trains_in_its_own_formats_like_its_dequantized_self() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let m = common::load_fixture("tiny-llama", false);
    let silent = AtomicBool::new(false);
    let q =
        quantize_model(&m, QuantFormat::parse("q4_0").unwrap(), &QuantOptions::default(), &Monitor::silent(&silent))
            .unwrap();
    let gguf = dir.path().join("teacher-q4_0.gguf");
    export(&m, &q, &gguf).unwrap();

    let (code, events, err) = run(&recipe(dir.path(), "native", &gguf, ""), &cache);
    assert_eq!(code, 0, "{err}");
    let native = summary(&events).clone();
    let log = logs(&events);
    assert!(log.iter().any(|l| l.contains("teacher in its GGUF block formats")), "{log:?}");
    let at = &native["teacher"]["at_training_precision"];
    assert!(at["precision"].as_str().unwrap().starts_with("gguf (Q4_0"), "{native}");
    let (kl, agree) = (at["kl_to_f32"].as_f64().unwrap(), at["agreement_with_f32"].as_f64().unwrap());
    assert!(
        (0.0..1e-6).contains(&kl) && agree > 0.99,
        "GGUF teacher vs its dequantized self: KL {kl}, agreement {agree}"
    );

    // The same file dequantized (`teacher_precision = "f32"`) teaches the same student.
    let (code, events, err) = run(&recipe(dir.path(), "dequantized", &gguf, "teacher_precision = \"f32\""), &cache);
    assert_eq!(code, 0, "{err}");
    let dense = summary(&events).clone();
    assert!(dense["teacher"].get("at_training_precision").is_none(), "{dense}");
    let (pn, pd) =
        (native["student"]["perplexity"].as_f64().unwrap(), dense["student"]["perplexity"].as_f64().unwrap());
    assert!((pn / pd - 1.0).abs() < 1e-3, "student perplexity {pn} (GGUF teacher) vs {pd} (dequantized)");
    let (tn, td) =
        (native["teacher"]["perplexity"].as_f64().unwrap(), dense["teacher"]["perplexity"].as_f64().unwrap());
    assert!((tn / td - 1.0).abs() < 1e-5, "teacher perplexity {tn} vs {td}");
}

#[test]
fn an_f32_teacher_quantized_at_load_reports_its_fidelity_and_gguf_needs_a_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let teacher = common::fixture("tiny-llama");
    let (code, events, err) = run(&recipe(dir.path(), "q8", &teacher, "teacher_precision = \"q8_0\""), &cache);
    assert_eq!(code, 0, "{err}");
    let s = summary(&events);
    let log = logs(&events);
    assert!(log.iter().any(|l| l.contains("teacher quantized to q8_0 at load")), "{log:?}");
    let at = &s["teacher"]["at_training_precision"];
    assert_eq!(at["precision"], "q8_0", "{s}");
    let kl = at["kl_to_f32"].as_f64().unwrap();
    assert!(kl > 0.0 && kl < 0.02, "q8_0 teacher vs f32: KL {kl}");

    let (code, events, err) = run(&recipe(dir.path(), "bad", &teacher, "teacher_precision = \"gguf\""), &cache);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a GGUF file") && err.contains("q8_0"), "{err}");
    assert!(!events.iter().any(|e| e["event"] == "step"));
    let (code, _, err) = run(&recipe(dir.path(), "bad2", &teacher, "teacher_precision = \"int4-g64\""), &cache);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("teacher_precision") && err.contains("q4_k"), "{err}");
}
