//! Classification on the tiny BERT fixture (labels cat/dog/horse): fine-tune the teacher, distil a
//! 2-layer student from it, and check held-out accuracy beats chance (1/3); plus bad input.

use crate::common;

use common::animals::{sentences, write_csv, write_jsonl};
use common::{fixture, run_cli};
use distill_tui::engine::classify::pipeline::run_classification;
use distill_tui::engine::classify::recipe::ClassifyRecipe;
use distill_tui::engine::export::points::metrics_of;
use distill_tui::engine::summary::RunSummary;
use distill_tui::jobs::JobContext;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

fn recipe(dir: &Path, train: &str, extra: &str) -> std::path::PathBuf {
    let model = fixture("tiny-bert-cls");
    let text = format!(
        r#"task = "classification"
[data]
train = "{train}"
eval = "eval.jsonl"
text_column = "sentence"
label_column = "animal"
max_len = 32
[teacher]
model = "{}"
[finetune]
steps = 150
batch_size = 16
lr = 1e-3
warmup_steps = 5
{extra}
[output]
dir = "{}"
"#,
        model.display(),
        dir.join("out").display()
    );
    let path = dir.join("recipe.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn context() -> JobContext {
    let (tx, _) = std::sync::mpsc::channel();
    JobContext::new(tx, Arc::new(AtomicBool::new(false)), Arc::new(common::settings()))
}

#[test]
fn finetune_and_distill_tiny_bert_beat_chance() {
    let tmp = tempfile::tempdir().unwrap();
    write_csv(&tmp.path().join("train.csv"), &sentences(240, 1), "sentence,animal");
    write_jsonl(&tmp.path().join("eval.jsonl"), &sentences(90, 2));
    let extra = "[student]\nlayers = 2\n[distill]\nsteps = 150\nbatch_size = 16\nlr = 1e-3\nalpha = 0.5\ntemperature = 4.0\ncosine = 0.1\n";
    let lr = ClassifyRecipe::load(&recipe(tmp.path(), "train.csv", extra)).unwrap();
    let summary = run_classification(&lr, &Default::default(), &context()).unwrap();
    let acc = |who: &str| summary[who]["accuracy"].as_f64().unwrap_or_else(|| panic!("{who} accuracy in {summary}"));
    eprintln!("held-out accuracy: teacher {} student {} baseline {}", acc("teacher"), acc("student"), acc("baseline"));
    assert_eq!(summary["classes"], serde_json::json!(["cat", "dog", "horse"]), "labels follow id2label");
    assert!(acc("teacher") > 0.6, "teacher accuracy {} (chance 1/3): {summary}", acc("teacher"));
    assert!(acc("student") > 0.5, "student accuracy {} (chance 1/3): {summary}", acc("student"));
    assert!(acc("baseline") > 0.4, "baseline accuracy {}: {summary}", acc("baseline"));
    assert_eq!(summary["student"]["layers"], 2);
    let (tp, sp) =
        (summary["teacher"]["parameters"].as_u64().unwrap(), summary["student"]["parameters"].as_u64().unwrap());
    assert!(sp < tp, "student {sp} vs teacher {tp} parameters");
    let agreement = summary["student"]["agreement"].as_f64().unwrap();
    assert!(agreement > 0.5, "student agrees with the teacher on {agreement}");
    // The saved student loads as a classifier with the same labels.
    let student = common::load(summary["student"]["path"].as_str().unwrap(), false);
    assert_eq!(student.config.labels(), ["cat", "dog", "horse"]);
    assert_eq!(student.config.layers(), 2);
    assert!(tmp.path().join("out/summary.json").is_file());
}

fn assert_bad(tmp: &Path, recipe: &Path, needles: &[&str]) {
    let (code, _, stderr) = run_cli(&["finetune", recipe.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "exit code {code}, stderr: {stderr}");
    for n in needles {
        assert!(stderr.contains(n), "stderr lacks `{n}`:\n{stderr}");
    }
    assert!(!tmp.join("out/teacher").exists(), "nothing is trained on bad input");
}

#[test]
fn bad_classification_data_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_jsonl(&dir.join("eval.jsonl"), &sentences(9, 2));
    let rows = sentences(12, 1);
    write_csv(&dir.join("nolabel.csv"), &rows, "sentence,category");
    assert_bad(dir, &recipe(dir, "nolabel.csv", ""), &["no label column `animal`", "sentence, category"]);

    let mut unknown = rows.clone();
    unknown[4].1 = "cow";
    write_csv(&dir.join("unknown.csv"), &unknown, "sentence,animal");
    assert_bad(dir, &recipe(dir, "unknown.csv", ""), &["unknown label `cow`", "cat, dog, horse"]);

    let no_horse: Vec<_> = rows.iter().filter(|(_, l)| *l != "horse").cloned().collect();
    write_csv(&dir.join("nohorse.csv"), &no_horse, "sentence,animal");
    assert_bad(dir, &recipe(dir, "nohorse.csv", ""), &["class `horse` has no examples"]);

    let empty: Vec<_> = rows.iter().map(|(_, l)| (String::new(), *l)).collect();
    write_csv(&dir.join("empty.csv"), &empty, "sentence,animal");
    assert_bad(dir, &recipe(dir, "empty.csv", ""), &["text column `sentence` is empty in 12 of 12 rows"]);
}

/// A classification recipe in `dir` writing to `dir/NAME`: fine-tuning and distillation of 48
/// steps each with checkpoints every 4, and a `[quantize]` sweep of every model.
fn lifecycle_recipe(dir: &Path, name: &str) -> std::path::PathBuf {
    let stage = "steps = 48\nbatch_size = 8\nlr = 1e-3\nwarmup_steps = 4\neval_every = 16\ncheckpoint_every = 4\n";
    let text = format!(
        "task = \"classification\"\n[data]\ntrain = \"train.csv\"\neval = \"eval.jsonl\"\n\
         text_column = \"sentence\"\nlabel_column = \"animal\"\nmax_len = 32\n\
         [teacher]\nmodel = \"{}\"\n[finetune]\n{stage}[student]\nlayers = 2\n\
         [distill]\n{stage}alpha = 0.5\ntemperature = 4.0\n\
         [quantize]\nformats = [\"q8_0\", \"int4-g32\"]\ntargets = [\"teacher\", \"student\", \"baseline\"]\n\
         [output]\ndir = \"{}\"\n",
        fixture("tiny-bert-cls").display(),
        dir.join(name).display()
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn write_animals(dir: &Path) {
    write_csv(&dir.join("train.csv"), &sentences(120, 1), "sentence,animal");
    write_jsonl(&dir.join("eval.jsonl"), &sentences(45, 2));
}

/// Every deterministic metric of a finished run (`POINT.METRIC`).
fn metrics(out: &Path) -> std::collections::BTreeMap<String, f64> {
    let summary = RunSummary::read(out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    metrics_of(&summary)
}

/// Kills `run RECIPE` (SIGKILL) once the checkpoint under `checkpoint_root` reaches step 8, and
/// checks that no file it left is partial.
fn kill_9_at_step_8(recipe: &Path, checkpoint_root: &Path) {
    common::kill_9_at_checkpoint(recipe, &[], checkpoint_root, 8);
    for dir in [checkpoint_root.to_path_buf(), checkpoint_root.join("checkpoint")] {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".safetensors") {
                candle_core::safetensors::load(e.path(), &candle_core::Device::Cpu)
                    .unwrap_or_else(|e| panic!("{name} is incomplete: {e}"));
            }
        }
    }
}

#[test]
fn a_classification_run_killed_in_either_stage_resumes_to_the_uninterrupted_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_animals(dir);
    let whole = lifecycle_recipe(dir, "whole");
    let (code, _, err) = run_cli(&["run", whole.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    let expected = metrics(&dir.join("whole"));
    for key in ["teacher.accuracy", "student.macro_f1", "baseline.cross_entropy", "student.kl_to_teacher"] {
        assert!(expected.contains_key(key), "{key} in {expected:?}");
    }
    let quantized: Vec<&String> = expected.keys().filter(|k| k.ends_with(".bits_per_weight")).collect();
    assert_eq!(quantized.len(), 6, "3 models × 2 formats: {quantized:?}");
    assert!(expected["student-q8_0.kl"] < expected["student-int4-g32.kl"], "{expected:?}");

    // Killed while the teacher fine-tunes, then while the student distils.
    for (name, root) in [("killed-finetune", "killed-finetune/finetune"), ("killed-distill", "killed-distill")] {
        let recipe = lifecycle_recipe(dir, name);
        kill_9_at_step_8(&recipe, &dir.join(root));
        assert!(!dir.join(name).join("summary.json").exists(), "{name}: killed before the end");
        let (code, _, err) = run_cli(&["run", recipe.to_str().unwrap()], &[]);
        assert_eq!(code, 2, "{name}: a folder holding a run is refused without --resume: {err}");
        assert!(err.contains("already holds a run; pass --resume"), "{err}");
        let (code, _, err) = run_cli(&["run", recipe.to_str().unwrap(), "--resume"], &[]);
        assert_eq!(code, 0, "{name}: {err}");
        assert_eq!(metrics(&dir.join(name)), expected, "{name}: the resumed run ends as the uninterrupted one");
    }
}

#[test]
fn an_exported_classification_point_verifies_by_rerunning() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_animals(dir);
    let recipe = lifecycle_recipe(dir, "run");
    let text = std::fs::read_to_string(&recipe).unwrap().replace("steps = 48", "steps = 12");
    std::fs::write(&recipe, text).unwrap();
    let (code, _, err) = run_cli(&["run", recipe.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    let run_dir = dir.join("run");
    for point in ["student", "student-q8_0", "teacher-int4-g32"] {
        let out = dir.join(format!("export-{point}"));
        let args = ["export", run_dir.to_str().unwrap(), "--point", point, "--out", out.to_str().unwrap()];
        let (code, _, err) = run_cli(&args, &[]);
        assert_eq!(code, 0, "export {point}: {err}");
        let exported = std::fs::read_to_string(out.join("recipe.toml")).unwrap();
        assert!(exported.contains("[expected]") && exported.contains("\"student.accuracy\""), "{exported}");
        match point {
            "student" => {
                assert!(out.join("model/model.safetensors").is_file() && out.join("model/README.md").is_file())
            }
            "student-q8_0" => {
                assert!(out.join("student-q8_0.dequantized.safetensors").is_file(), "BERT is no GGUF family")
            }
            _ => assert!(out.join("teacher-int4-g32.safetensors").is_file()),
        }
        let (code, stdout, err) = run_cli(&["run", out.join("recipe.toml").to_str().unwrap(), "--verify"], &[]);
        assert_eq!(code, 0, "verify {point}: {err}\n{stdout}");
        assert!(stdout.contains("verified:"), "{stdout}");
    }
    // A metric the rerun cannot reproduce is named.
    let out = dir.join("export-student");
    let path = out.join("recipe.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let line = text.lines().find(|l| l.starts_with("\"student.accuracy\"")).unwrap().to_string();
    std::fs::write(&path, text.replace(&line, "\"student.accuracy\" = 0.123")).unwrap();
    let (code, _, err) = run_cli(&["run", path.to_str().unwrap(), "--verify"], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("student.accuracy (expected 0.123"), "{err}");
    // Projects for other engines are for language models.
    let x = dir.join("x");
    let args =
        ["export", run_dir.to_str().unwrap(), "--point", "student", "--out", x.to_str().unwrap(), "--target", "trl"];
    let (code, _, err) = run_cli(&args, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("causal language models"), "{err}");
}
