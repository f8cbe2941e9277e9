//! Classification on the tiny BERT fixture (labels cat/dog/horse): fine-tune the teacher, distil a
//! 2-layer student from it, and check held-out accuracy beats chance (1/3); plus bad input.

mod common;

use common::animals::{sentences, write_csv, write_jsonl};
use common::{fixture, run_cli};
use distill_tui::engine::classify::pipeline::run_classification;
use distill_tui::engine::classify::recipe::ClassifyRecipe;
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
    JobContext::new(tx, Arc::new(AtomicBool::new(false)))
}

#[test]
fn finetune_and_distill_tiny_bert_beat_chance() {
    let tmp = tempfile::tempdir().unwrap();
    write_csv(&tmp.path().join("train.csv"), &sentences(240, 1), "sentence,animal");
    write_jsonl(&tmp.path().join("eval.jsonl"), &sentences(90, 2));
    let extra = "[student]\nlayers = 2\n[distill]\nsteps = 150\nbatch_size = 16\nlr = 1e-3\nalpha = 0.5\ntemperature = 4.0\ncosine = 0.1\n";
    let lr = ClassifyRecipe::load(&recipe(tmp.path(), "train.csv", extra)).unwrap();
    let summary = run_classification(&lr, &context()).unwrap();
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
