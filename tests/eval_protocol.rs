//! The evaluation yardstick: windows, NLL and top-1 checked against transformers' own logits.

mod common;

use candle_core::{DType, Device, D};
use distill_tui::engine::eval::{evaluate_text, evaluate_tokens, windows, EvalOptions};
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
        let nll = -logp
            .gather(&labels.unsqueeze(1).unwrap(), 1)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        let hits = pred
            .argmax(D::Minus1)
            .unwrap()
            .eq(&labels)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        let n = (b * (t - 1)) as f64;
        let tokens: Vec<u32> = ids.flatten_all().unwrap().to_vec1().unwrap();
        let opts = EvalOptions { seq_len: t, max_tokens: None, batch_size: Some(1) };
        let r = evaluate_tokens(&model.network, &tokens, &opts, &Device::Cpu, &mut |_, _| {}, &AtomicBool::new(false))
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
            &mut |_, _| {},
            &AtomicBool::new(false),
        )
        .unwrap();
        assert!((batched.perplexity - r.perplexity).abs() < 1e-9);
    }
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
    let e = evaluate_text(&model, "some text", &too_long, &mut |_, _| {}, &cancel).unwrap_err().to_string();
    assert!(e.contains("--seq-len 4096") && e.contains("256"), "{e}");
    let e = evaluate_text(&model, "", &EvalOptions { seq_len: 16, ..EvalOptions::default() }, &mut |_, _| {}, &cancel)
        .unwrap_err()
        .to_string();
    assert!(e.contains("at least 2"), "{e}");
    let cancelled = AtomicBool::new(true);
    let e = evaluate_text(
        &model,
        "It is a truth universally acknowledged",
        &EvalOptions { seq_len: 8, ..EvalOptions::default() },
        &mut |_, _| {},
        &cancelled,
    )
    .unwrap_err();
    assert!(matches!(e, distill_tui::engine::Error::Cancelled));
    let cls = common::load_fixture("tiny-bert-cls", false);
    let e = evaluate_text(&cls, "text", &EvalOptions::default(), &mut |_, _| {}, &cancel).unwrap_err().to_string();
    assert!(e.contains("causal language model"), "{e}");
}

#[test]
fn compare_reports_zero_kl_and_full_agreement_against_itself_and_positive_kl_otherwise() {
    use distill_tui::engine::eval::compare_tokens;
    let teacher = common::load_fixture("tiny-llama", false);
    let student = common::load_fixture("tiny-llama-student", false);
    let (ids, _) = common::golden(&common::fixture("tiny-llama"));
    let tokens: Vec<u32> = ids.flatten_all().unwrap().to_vec1().unwrap();
    let opts = EvalOptions { seq_len: 30, max_tokens: None, batch_size: None };
    let cancel = AtomicBool::new(false);
    let same =
        compare_tokens(&teacher.network, &teacher.network, &tokens, &opts, &Device::Cpu, &mut |_, _| {}, &cancel)
            .unwrap();
    assert!(same.kl.abs() < 1e-6, "KL to itself {}", same.kl);
    assert_eq!(same.agreement, 1.0);
    assert!((same.reference_perplexity - same.candidate.perplexity).abs() < 1e-9);
    let other =
        compare_tokens(&teacher.network, &student.network, &tokens, &opts, &Device::Cpu, &mut |_, _| {}, &cancel)
            .unwrap();
    assert!(other.kl > 1e-3, "KL teacher‖student {}", other.kl);
    assert!(other.agreement < 1.0);
    // The candidate's own numbers equal a plain evaluation of it.
    let plain = evaluate_tokens(&student.network, &tokens, &opts, &Device::Cpu, &mut |_, _| {}, &cancel).unwrap();
    assert!((plain.perplexity - other.candidate.perplexity).abs() / plain.perplexity < 1e-6);
    assert_eq!(plain.top1_accuracy, other.candidate.top1_accuracy);
}
