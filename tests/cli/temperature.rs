//! The prompt commands. `temperature`: the Temperature screen's numbers headless (the teacher and a
//! student at T1 and T2 on the teacher's T1 rows, entropy, mass, KL between the panels and to the
//! teacher, the rank curve; bad temperatures and a student of another vocabulary refused).
//! `generate`: a timed, repeatable continuation; bad sampling settings refused.

use crate::common;

const PROMPT: &str = "It is a truth universally acknowledged, that a single man";

#[test]
fn temperature_reads_teacher_and_student_on_the_same_rows() {
    let (t, s) = (common::fixture("tiny-llama"), common::fixture("tiny-llama-student"));
    let args = ["temperature", t.to_str().unwrap(), "--prompt", PROMPT, "--student", s.to_str().unwrap()];
    let (code, out, err) = common::run_cli(&[&args[..], &["--top", "5", "--json"]].concat(), &[]);
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    let v = &j["view"];
    assert_eq!(v["ids"].as_array().unwrap().len(), 5);
    assert_eq!(j["names"].as_array().unwrap().len(), 5);
    let p = |who: &str, ti: usize| -> Vec<f64> {
        v[who]["probs"][ti].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
    };
    let t1 = p("teacher", 0);
    assert!(t1.windows(2).all(|w| w[0] >= w[1]), "rows are the teacher's T1 ranking: {t1:?}");
    assert_eq!(p("student", 1).len(), 5, "the student is read on the same rows");
    let h = |who: &str, ti: usize| v[who]["entropy"][ti].as_f64().unwrap();
    assert!(h("teacher", 1) > h("teacher", 0), "T=5 is flatter");
    assert!(v["teacher"]["kl_t1_t2"].as_f64().unwrap() > 0.0);
    assert!(v["kl_teacher_student"][0].as_f64().unwrap() > 0.0);
    let curve = v["teacher"]["curves"][0].as_array().unwrap();
    assert_eq!(curve.last().unwrap()[0], 512, "the curve reaches the last rank of the vocabulary");
    let (code, out, err) = common::run_cli(&args, &[]);
    assert_eq!(code, 0, "{err}");
    for needle in ["teacher T=1", "student T=5", "KL(T1‖T2)", "KL(teacher‖student)", "probability at rank"] {
        assert!(out.contains(needle), "no `{needle}` in\n{out}");
    }
}

#[test]
fn bad_temperatures_and_another_vocabulary_are_refused() {
    let t = common::fixture("tiny-llama");
    let (code, _, err) = common::run_cli(&["temperature", t.to_str().unwrap(), "--prompt", PROMPT, "--t2", "0"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--t2 0: a temperature must be > 0"), "{err}");
    let demo = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/models/demo-teacher");
    let args = ["temperature", t.to_str().unwrap(), "--prompt", PROMPT, "--student", demo.to_str().unwrap()];
    let (code, _, err) = common::run_cli(&args, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("need one vocabulary"), "{err}");
}

#[test]
fn generate_continues_a_prompt_timed_and_refuses_bad_sampling() {
    let t = common::fixture("tiny-qwen2");
    let args = ["generate", t.to_str().unwrap(), "--prompt", PROMPT, "--max-new-tokens", "8", "--json"];
    let (code, out, err) = common::run_cli(&args, &[]);
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["generation"]["tokens"].as_array().unwrap().len(), 8);
    assert!(j["decode_tokens_per_second"].as_f64().unwrap() > 0.0);
    assert!(j["prefill_tokens_per_second"].as_f64().unwrap() > 0.0);
    assert!(j["threads"].as_u64().unwrap() >= 1);
    // Greedy twice: the same text.
    let (_, again, _) = common::run_cli(&args, &[]);
    let k: serde_json::Value = serde_json::from_str(&again).unwrap();
    assert_eq!(j["generation"]["tokens"], k["generation"]["tokens"]);
    let (code, _, err) = common::run_cli(&["generate", t.to_str().unwrap(), "--prompt", PROMPT, "--top-p", "0"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--top-p 0"), "{err}");
}
