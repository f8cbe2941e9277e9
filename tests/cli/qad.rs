//! Quantization-aware distillation (`distill.qad`) end to end on the fixture pair: the QAD student
//! in int3-g32 ends closer to the teacher than the same student distilled in float and then
//! quantized, at equal steps; its point is labelled `distill+QAD`; kill -9 + `--resume` equals an
//! uninterrupted run; formats QAD cannot train in are refused before anything trains.

use super::trainer::{kill_9_then_resume, recipe, run, student_losses, summary};

fn quantized_student(s: &serde_json::Value, format: &str) -> serde_json::Value {
    let points = s["quantize"].as_array().expect("quantize points");
    points.iter().find(|p| p["model"] == "student" && p["format"] == format).cloned().expect("the student's point")
}

#[test]
fn a_qad_student_ends_closer_to_the_teacher_than_distil_then_quantize() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    // Distil in float, then quantize to int3-g32.
    let float = recipe(dir.path(), "float", "baseline = false");
    let text = std::fs::read_to_string(&float)
        .unwrap()
        .replace("[output]", "[quantize]\nformats = [\"int3-g32\"]\ntargets = [\"student\"]\n[output]");
    std::fs::write(&float, text).unwrap();
    let (code, events, err) = run(&float, &cache, false);
    assert_eq!(code, 0, "{err}");
    let f = summary(&events);
    let after_ptq = quantized_student(&f, "int3-g32");
    assert!(after_ptq.get("qad").is_none(), "{after_ptq}");
    // The same student, steps and data, trained in int3-g32 (no [quantize] section: QAD adds its point).
    let qad = recipe(dir.path(), "qad", "baseline = false\nqad = \"int3-g32\"");
    let (code, events, err) = run(&qad, &cache, false);
    assert_eq!(code, 0, "{err}");
    assert!(events
        .iter()
        .any(|e| e["event"] == "log" && e["message"].as_str().unwrap_or("").contains("quantization-aware")));
    let losses = student_losses(&events);
    assert!(losses[20..].iter().sum::<f64>() < losses[..4].iter().sum::<f64>(), "QAD loss did not fall: {losses:?}");
    let q = summary(&events);
    assert_eq!(q["quantize"].as_array().unwrap().len(), 1);
    let trained = quantized_student(&q, "int3-g32");
    assert_eq!(trained["qad"], true);
    let (ptq_kl, qad_kl) = (after_ptq["kl_to_teacher"].as_f64().unwrap(), trained["kl_to_teacher"].as_f64().unwrap());
    let float_kl = f["student"]["kl_to_teacher"].as_f64().unwrap();
    assert!(qad_kl < ptq_kl, "QAD int3-g32 KL {qad_kl} vs float-then-quantized {ptq_kl} (float {float_kl})");
    // Compare names the path.
    let out = q["output_dir"].as_str().unwrap();
    let (code, stdout, stderr) = crate::common::run_cli(&["compare", out, "--markdown"], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("distill+QAD"), "{stdout}");
}

#[test]
fn kill_9_then_resume_equals_an_uninterrupted_qad_run() {
    let dir = tempfile::tempdir().unwrap();
    kill_9_then_resume(|name| recipe(dir.path(), name, "qad = \"int4-g32\""));
}

#[test]
fn formats_qad_cannot_train_in_are_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    for (qad, says) in [
        ("f16", "not a quantized format"),
        ("int4-g64+gptq", "calibration activations, which the training steps do not have; use int4-g64 (round"),
        ("iq4_nl+gptq", "use iq4_nl (round to nearest)"),
        ("q9_9", "q8_0"),
        ("budget-5", "chooses formats per tensor"),
        ("q4_0+awq", "AWQ scales the weights by calibration activations"),
        ("q4_k+awq+gptq", "use q4_k (round to nearest)"),
        ("q4_k_m", "chooses formats per tensor"),
    ] {
        let path = recipe(dir.path(), "bad", &format!("qad = \"{qad}\""));
        let (code, events, err) = run(&path, &dir.path().join("cache"), false);
        assert_eq!(code, 2, "{qad}: {err}");
        assert!(err.contains("distill.qad") && err.contains(says), "{qad}: {err}");
        assert!(!events.iter().any(|e| e["event"] == "step"), "nothing trained");
    }
}
