//! On-policy and mixed-policy distillation (`[distill.on_policy]`) end to end on the fixture pair:
//! a mixed run trains and is deterministic, `lmbda = 0` is the off-policy run exactly, sequence-
//! level KD lets the teacher write, kill -9 + `--resume` equals an uninterrupted run, and bad
//! settings are refused before anything trains.

use super::trainer::{kill_9_then_resume, recipe, run, student_losses, summary};

const METRICS: [&str; 4] = ["perplexity", "top1_accuracy", "kl_to_teacher", "agreement"];

fn same_student(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    METRICS.iter().all(|m| a["student"][m] == b["student"][m])
}

#[test]
fn a_mixed_policy_run_trains_deterministically_and_lmbda_zero_is_the_off_policy_run() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let mixed = "baseline = false\n[distill.on_policy]\nlmbda = 0.5\nprompt_len = 16\n";
    let (code, events, err) = run(&recipe(dir.path(), "mixed", mixed), &cache, false);
    assert_eq!(code, 0, "{err}");
    let a = summary(&events);
    // Training works: the held-out perplexity falls from evaluation to evaluation, and the step
    // losses fall (they alternate between text and sampled micro-batches, whose hard term covers
    // half the positions, so they are compared within one kind). The fixture teacher has random
    // weights, so KL to it is no yardstick here (it rises in the off-policy run too).
    let ppl: Vec<f64> = events
        .iter()
        .filter(|e| e["event"] == "eval" && e["role"] == "student")
        .map(|e| e["metrics"]["perplexity"].as_f64().unwrap())
        .collect();
    assert!(ppl.len() == 3 && ppl[2] < ppl[1] && ppl[1] < ppl[0], "held-out perplexity {ppl:?}");
    let losses = student_losses(&events);
    let (sampled, text): (Vec<f64>, Vec<f64>) = losses.iter().partition(|l| **l < 0.45);
    for (kind, l) in [("sampled", &sampled), ("text", &text)] {
        assert!(l[l.len() - 2..].iter().sum::<f64>() < l[..2].iter().sum::<f64>(), "{kind} loss did not fall: {l:?}");
    }
    let p = &a["on_policy"];
    let (student, text) = (p["student_batches"].as_u64().unwrap(), p["text_batches"].as_u64().unwrap());
    assert_eq!(student + text, 24, "{p}");
    assert!((6..=18).contains(&student), "about half the micro-batches are the student's: {p}");
    assert_eq!(sampled.len() as u64, student, "the sampled micro-batches are the low-loss ones: {losses:?}");
    assert_eq!(p["teacher_batches"], 0);
    assert_eq!(p["generated_tokens"].as_u64().unwrap(), student * 4 * 16, "4 windows × 16 written tokens");
    let share = p["share_of_step_time"].as_f64().unwrap();
    assert!(share > 0.0 && share < 1.0, "{p}");
    assert!(events.iter().any(|e| e["message"].as_str().unwrap_or("").starts_with("on-policy:")));
    // Deterministic: the same recipe samples the same continuations.
    let (code, events, err) = run(&recipe(dir.path(), "mixed-again", mixed), &cache, false);
    assert_eq!(code, 0, "{err}");
    let b = summary(&events);
    assert!(same_student(&a, &b), "{} vs {}", a["student"], b["student"]);
    // lmbda = 0 (no seq_kd): every micro-batch is the text, exactly today's off-policy run.
    let (code, events, err) = run(&recipe(dir.path(), "off", "baseline = false"), &cache, false);
    assert_eq!(code, 0, "{err}");
    let off = summary(&events);
    let zero = "baseline = false\n[distill.on_policy]\nlmbda = 0.0\n";
    let (code, events, err) = run(&recipe(dir.path(), "zero", zero), &cache, false);
    assert_eq!(code, 0, "{err}");
    let z = summary(&events);
    assert!(same_student(&off, &z), "{} vs {}", off["student"], z["student"]);
    assert_eq!(z["on_policy"]["student_batches"], 0);
    assert!(!same_student(&off, &a), "the mixed run trained on other sequences");
}

#[test]
fn sequence_level_kd_lets_the_teacher_write_the_other_batches() {
    let dir = tempfile::tempdir().unwrap();
    let extra = "baseline = false\n[distill.on_policy]\nlmbda = 0.25\nseq_kd = true\ntemperature = 0.0\n";
    let (code, events, err) = run(&recipe(dir.path(), "seqkd", extra), &dir.path().join("cache"), false);
    assert_eq!(code, 0, "{err}");
    let p = &summary(&events)["on_policy"];
    let (student, teacher) = (p["student_batches"].as_u64().unwrap(), p["teacher_batches"].as_u64().unwrap());
    assert_eq!((student + teacher, p["text_batches"].as_u64().unwrap()), (24, 0), "{p}");
    assert!(teacher > student && student > 0, "{p}");
    assert_eq!(p["prompt_len"], 16, "half the 32-token window by default");
    let losses = student_losses(&events);
    assert!(losses.iter().all(|l| l.is_finite()));
}

#[test]
fn kill_9_then_resume_equals_an_uninterrupted_on_policy_run() {
    let dir = tempfile::tempdir().unwrap();
    kill_9_then_resume(|name| recipe(dir.path(), name, "[distill.on_policy]\nlmbda = 0.5\n"));
}

#[test]
fn bad_on_policy_settings_are_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    for (extra, says) in [
        ("lmbda = 1.5", "lmbda"),
        ("prompt_len = 31", "prompt_len"),
        ("top_p = 0.0", "top_p"),
        ("lambda = 0.5", "lambda"),
    ] {
        let path = recipe(dir.path(), "bad", &format!("[distill.on_policy]\n{extra}\n"));
        let (code, events, err) = run(&path, &dir.path().join("cache"), false);
        assert_eq!(code, 2, "{extra}: {err}");
        assert!(err.contains(says), "{extra}: {err}");
        assert!(!events.iter().any(|e| e["event"] == "step"), "nothing trained");
    }
}

#[test]
fn prompts_from_a_file_replace_the_windows_beginnings_and_short_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(crate::common::shared_dir().join("data/austen/persuasion.txt")).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.split_whitespace().count() >= 12).take(40).collect();
    std::fs::write(dir.path().join("prompts.txt"), lines.join("\n")).unwrap();
    std::fs::write(dir.path().join("short.txt"), "Yes.\nNo.\n").unwrap();
    let extra = "baseline = false\n[distill.on_policy]\nlmbda = 1.0\nprompt_len = 8\nprompts = \"prompts.txt\"\n";
    let cache = dir.path().join("cache");
    let (code, events, err) = run(&recipe(dir.path(), "file", extra), &cache, false);
    assert_eq!(code, 0, "{err}");
    let a = summary(&events);
    let p = &a["on_policy"];
    assert_eq!(p["student_batches"], 24, "{p}");
    assert_eq!(p["prompts"].as_u64().unwrap() as usize, lines.len(), "every line is long enough: {p}");
    assert_eq!(p["generated_tokens"].as_u64().unwrap(), 24 * 4 * 24, "{p}");
    // The prompts differ from the windows' beginnings: another run than one on the windows.
    let windows = "baseline = false\n[distill.on_policy]\nlmbda = 1.0\nprompt_len = 8\n";
    let (code, events, err) = run(&recipe(dir.path(), "windows", windows), &cache, false);
    assert_eq!(code, 0, "{err}");
    assert!(!same_student(&a, &summary(&events)));
    let short = "[distill.on_policy]\nprompt_len = 8\nprompts = \"short.txt\"\n";
    let (code, events, err) = run(&recipe(dir.path(), "short", short), &cache, false);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("short.txt") && err.contains("prompt_len"), "{err}");
    assert!(!events.iter().any(|e| e["event"] == "step"), "nothing trained");
}
