//! The evaluation yardstick: windows, NLL and top-1 checked against transformers' own logits.

use crate::common;

use candle_core::{DType, Device, D};
use distill_tui::engine::context::Monitor;
use distill_tui::engine::distribution::soften;
use distill_tui::engine::eval::{evaluate_text, evaluate_tokens, measure_against, windows, EvalOptions};
use distill_tui::engine::prompt::prompt_logits;
use std::sync::atomic::AtomicBool;

#[test]
fn perplexity_and_top1_equal_those_computed_from_golden_logits() {
    for name in ["tiny-llama", "tiny-qwen2", "tiny-gpt2"] {
        let model = common::load_fixture(name, false);
        let (ids, logits) = common::golden(&common::fixture(name));
        let (b, t) = ids.dims2().unwrap();
        // Reference from transformers' logits: positions 0..t-1 predict 1..t, per row.
        let v = logits.dim(2).unwrap();
        let pred = logits.narrow(1, 0, t - 1).unwrap().reshape(((), v)).unwrap();
        let labels = ids.narrow(1, 1, t - 1).unwrap().flatten_all().unwrap();
        let logp = candle_nn::ops::log_softmax(&pred, D::Minus1).unwrap();
        let nll = -sum(&logp.gather(&labels.unsqueeze(1).unwrap(), 1).unwrap());
        let hits = sum(&pred.argmax(D::Minus1).unwrap().eq(&labels).unwrap());
        let n = (b * (t - 1)) as f64;
        let tokens: Vec<u32> = ids.flatten_all().unwrap().to_vec1().unwrap();
        let opts = EvalOptions { seq_len: t, max_tokens: None, batch_size: Some(1), ..Default::default() };
        let r =
            evaluate_tokens(&model.network, &tokens, &opts, &Device::Cpu, &Monitor::silent(&AtomicBool::new(false)))
                .unwrap();
        assert_eq!(r.windows, b);
        assert_eq!(r.predicted_tokens, b * (t - 1));
        let want_ppl = (nll / n).exp();
        assert!((r.perplexity - want_ppl).abs() / want_ppl < 1e-5, "{name}: ppl {} vs {want_ppl}", r.perplexity);
        assert!((r.top1_accuracy - hits / n).abs() < 1e-12, "{name}: top1 {} vs {}", r.top1_accuracy, hits / n);
        // Batching windows must not change the numbers.
        let batched = evaluate_tokens(
            &model.network,
            &tokens,
            &EvalOptions { batch_size: Some(2), ..opts },
            &Device::Cpu,
            &Monitor::silent(&AtomicBool::new(false)),
        )
        .unwrap();
        assert!((batched.perplexity - r.perplexity).abs() < 1e-9);
    }
}

#[test]
fn the_llama_perplexity_protocol_scores_the_second_half_of_whole_windows_only() {
    use distill_tui::engine::eval::{compare_tokens, Protocol};
    let quiet = AtomicBool::new(false);
    for name in ["tiny-llama", "tiny-gpt2"] {
        let model = common::load_fixture(name, false);
        let (ids, logits) = common::golden(&common::fixture(name));
        let (b, t) = ids.dims2().unwrap();
        let v = logits.dim(2).unwrap();
        // Reference from transformers' logits: positions t/2 .. t-2 predict tokens t/2+1 .. t-1.
        let first = t / 2;
        let scored = t - 1 - first;
        let pred = logits.narrow(1, first, scored).unwrap().reshape(((), v)).unwrap();
        let labels = ids.narrow(1, first + 1, scored).unwrap().flatten_all().unwrap();
        let logp = candle_nn::ops::log_softmax(&pred, D::Minus1).unwrap();
        let nll = -sum(&logp.gather(&labels.unsqueeze(1).unwrap(), 1).unwrap());
        let n = (b * scored) as f64;
        // The rows as one text, plus a short tail the protocol must drop.
        let mut tokens: Vec<u32> = ids.flatten_all().unwrap().to_vec1().unwrap();
        tokens.extend_from_slice(&tokens[..t / 2].to_vec());
        let opts = EvalOptions { seq_len: t, protocol: Protocol::LlamaPerplexity, ..Default::default() };
        let r = evaluate_tokens(&model.network, &tokens, &opts, &Device::Cpu, &Monitor::silent(&quiet)).unwrap();
        assert_eq!((r.windows, r.predicted_tokens), (b, b * scored), "{name}: whole windows, second halves");
        let want = (nll / n).exp();
        assert!((r.perplexity - want).abs() / want < 1e-5, "{name}: {} vs {want}", r.perplexity);
        // Every position is scored by default, the tail window too.
        let all = evaluate_tokens(
            &model.network,
            &tokens,
            &EvalOptions { protocol: Protocol::All, ..opts.clone() },
            &Device::Cpu,
            &Monitor::silent(&quiet),
        )
        .unwrap();
        assert_eq!((all.windows, all.predicted_tokens), (b + 1, b * (t - 1) + t / 2 - 1));
        // Against a reference: the same positions; a model against itself is at KL 0, agreement 1.
        let c = compare_tokens(&model.network, &model.network, &tokens, &opts, &Device::Cpu, &Monitor::silent(&quiet))
            .unwrap();
        assert_eq!(c.candidate.predicted_tokens, b * scored);
        assert!(c.kl.abs() < 1e-6 && (c.agreement - 1.0).abs() < 1e-12);
        assert!((c.candidate.perplexity - r.perplexity).abs() / want < 1e-5);
    }
    // Too little text for one whole window is named.
    let model = common::load_fixture("tiny-llama", false);
    let opts = EvalOptions { seq_len: 64, protocol: Protocol::LlamaPerplexity, ..Default::default() };
    let e =
        evaluate_tokens(&model.network, &[1, 2, 3, 4, 5], &opts, &Device::Cpu, &Monitor::silent(&quiet)).unwrap_err();
    assert!(e.to_string().contains("whole windows of 64 tokens"), "{e}");
    assert!(Protocol::parse("llama").unwrap_err().to_string().contains("llama-perplexity"));
}

#[test]
fn windows_are_non_overlapping_and_keep_a_usable_tail() {
    let tokens: Vec<u32> = (0..11).collect();
    let w = windows(&tokens, 4);
    assert_eq!(w, vec![&[0, 1, 2, 3][..], &[4, 5, 6, 7], &[8, 9, 10]]);
    let w = windows(&tokens[..9], 4);
    assert_eq!(w.len(), 2, "a 1-token tail predicts nothing and is dropped");
}

#[test]
fn eval_rejects_bad_settings_with_actionable_messages() {
    let model = common::load_fixture("tiny-llama", false);
    let cancel = AtomicBool::new(false);
    let too_long = EvalOptions { seq_len: 4096, ..EvalOptions::default() };
    let e = evaluate_text(&model, "some text", &too_long, &Monitor::silent(&cancel)).unwrap_err().to_string();
    assert!(e.contains("--seq-len 4096") && e.contains("256"), "{e}");
    let e =
        evaluate_text(&model, "", &EvalOptions { seq_len: 16, ..EvalOptions::default() }, &Monitor::silent(&cancel))
            .unwrap_err()
            .to_string();
    assert!(e.contains("at least 2"), "{e}");
    let cancelled = AtomicBool::new(true);
    let e = evaluate_text(
        &model,
        "It is a truth universally acknowledged",
        &EvalOptions { seq_len: 8, ..EvalOptions::default() },
        &Monitor::silent(&cancelled),
    )
    .unwrap_err();
    assert!(matches!(e, distill_tui::engine::Error::Cancelled));
    let cls = common::load_fixture("tiny-bert-cls", false);
    let e = evaluate_text(&cls, "text", &EvalOptions::default(), &Monitor::silent(&cancel)).unwrap_err().to_string();
    assert!(e.contains("causal language model"), "{e}");
}

#[test]
fn compare_reports_zero_kl_and_full_agreement_against_itself_and_positive_kl_otherwise() {
    use distill_tui::engine::eval::compare_tokens;
    let teacher = common::load_fixture("tiny-llama", false);
    let student = common::load_fixture("tiny-llama-student", false);
    let (ids, _) = common::golden(&common::fixture("tiny-llama"));
    let tokens: Vec<u32> = ids.flatten_all().unwrap().to_vec1().unwrap();
    let opts = EvalOptions { seq_len: 30, ..Default::default() };
    let cancel = AtomicBool::new(false);
    let same =
        compare_tokens(&teacher.network, &teacher.network, &tokens, &opts, &Device::Cpu, &Monitor::silent(&cancel))
            .unwrap();
    assert!(same.kl.abs() < 1e-6, "KL to itself {}", same.kl);
    assert_eq!(same.agreement, 1.0);
    assert!((same.reference_perplexity - same.candidate.perplexity).abs() < 1e-9);
    let other =
        compare_tokens(&teacher.network, &student.network, &tokens, &opts, &Device::Cpu, &Monitor::silent(&cancel))
            .unwrap();
    assert!(other.kl > 1e-3, "KL teacher‖student {}", other.kl);
    assert!(other.agreement < 1.0);
    // The candidate's own numbers equal a plain evaluation of it.
    let plain = evaluate_tokens(&student.network, &tokens, &opts, &Device::Cpu, &Monitor::silent(&cancel)).unwrap();
    assert!((plain.perplexity - other.candidate.perplexity).abs() / plain.perplexity < 1e-6);
    assert_eq!(plain.top1_accuracy, other.candidate.top1_accuracy);
}

/// What the workbench measures is a command too: `eval --teacher` (the Compare screen's float
/// points), `logits` (the Temperature screen) and `check --derive-layers` (the Models screen's pair
/// check with a student derived in memory), each equal to the engine function it prints.
#[test]
fn the_workbench_measurements_run_headless() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("text.txt");
    std::fs::write(&data, "The quick brown fox jumps over the lazy dog. ".repeat(20)).unwrap();
    let (teacher, student) = (common::fixture("tiny-llama"), common::fixture("tiny-llama-student"));
    let (t, s) = (teacher.to_str().unwrap(), student.to_str().unwrap());
    let d = data.to_str().unwrap();
    let args = ["eval", s, "--data", d, "--seq-len", "16", "--teacher", t, "--json"];
    let (code, stdout, err) = common::run_cli(&args, &[]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let (tm, sm) = (common::load_fixture("tiny-llama", false), common::load_fixture("tiny-llama-student", false));
    let opts = EvalOptions { seq_len: 16, ..Default::default() };
    let text = std::fs::read_to_string(&data).unwrap();
    // The monitor hears every stage, named by the model measured, up to its total, and what is
    // about to be scored before it starts.
    let heard = std::sync::Mutex::new(Vec::new());
    let cancel = AtomicBool::new(false);
    let (own, c) = measure_against(&tm, &[&sm], &text, &opts, &Monitor::new(&cancel, &Recorder(&heard))).unwrap();
    let heard = heard.into_inner().unwrap();
    assert!(heard[0].0 == "note" && heard[0].3.starts_with("scoring "), "{heard:?}");
    for stage in ["teacher", "teacher states", sm.info.name.as_str()] {
        let last = heard.iter().rfind(|h| h.0 == stage).unwrap_or_else(|| panic!("no progress for {stage}: {heard:?}"));
        assert!(last.1 == last.2 && last.2 > 0 && last.3 == "windows", "{last:?}");
    }
    assert_eq!(v["kl_to_teacher"].as_f64().unwrap(), c[0].kl);
    assert_eq!(v["agreement"].as_f64().unwrap(), c[0].agreement);
    assert_eq!(v["teacher"]["perplexity"].as_f64().unwrap(), own.perplexity);
    assert!(c[0].kl > 0.0 && (0.0..=1.0).contains(&c[0].agreement));
    // The teacher against itself: no divergence, full agreement.
    let (_, same) = measure_against(&tm, &[&tm], &text, &opts, &Monitor::silent(&AtomicBool::new(false))).unwrap();
    assert!(same[0].kl.abs() < 1e-6 && same[0].agreement == 1.0, "{:?}", same[0]);

    let args = ["logits", t, "--prompt", "The quick brown", "--temperatures", "1,5", "--top", "3", "--json"];
    let (code, stdout, err) = common::run_cli(&args, &[]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let at = v["distributions"].as_array().unwrap();
    assert_eq!(at.len(), 2);
    let logits = prompt_logits(&tm, "The quick brown").unwrap();
    let cold = soften(logits.rows.last().unwrap(), 1.0, 3);
    let top: Vec<f64> = at[0]["top"].as_array().unwrap().iter().map(|e| e["p"].as_f64().unwrap()).collect();
    assert_eq!(top, cold.top.iter().map(|e| e.1).collect::<Vec<_>>());
    assert!(at[1]["entropy"].as_f64().unwrap() > at[0]["entropy"].as_f64().unwrap(), "T = 5 is flatter");
    // A classifier's outputs are its classes.
    let bert = common::fixture("tiny-bert-cls");
    let args = ["logits", bert.to_str().unwrap(), "--prompt", "a small cat", "--top", "3", "--json"];
    let (code, stdout, err) = common::run_cli(&args, &[]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let mut names: Vec<&str> =
        v["distributions"][0]["top"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["cat", "dog", "horse"]);

    let (code, stdout, err) = common::run_cli(&["check", t, "--derive-layers", "1", "--json"], &[]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["fits"], true, "{v}");
    let (code, _, err) = common::run_cli(&["check", t], &[]);
    assert_eq!(code, 2, "a student or --derive-layers is required: {err}");
}

/// A progress sink that keeps what it hears: `(stage, done, total, unit)`, notes as `("note", 0, 0, text)`.
struct Recorder<'a>(&'a std::sync::Mutex<Vec<(String, u64, u64, String)>>);

impl distill_tui::engine::context::Progress for Recorder<'_> {
    fn progress(&self, stage: &str, done: u64, total: u64, unit: &str) {
        self.0.lock().unwrap().push((stage.into(), done, total, unit.into()));
    }

    fn note(&self, message: &str) {
        self.0.lock().unwrap().push(("note".into(), 0, 0, message.into()));
    }
}

/// The sum of a tensor's elements, in f64.
fn sum(t: &candle_core::Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap()
}
