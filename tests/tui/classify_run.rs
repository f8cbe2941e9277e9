//! A classification recipe in the workbench, driven by keys: opened on the Recipe screen (shown
//! read-only), run from Train (teacher fine-tuning, KD student, labels-only baseline on the
//! tiny-bert-cls fixture), its points on Compare, the trained classifiers on Temperature, and back
//! to a language-model recipe.

use crate::common;
use crate::tui_support;

use common::animals::{sentences, write_csv, write_jsonl};
use crossterm::event::KeyCode;
use distill_tui::tui::app::Popup;
use distill_tui::tui::tradeoff::Origin;
use std::path::Path;
use tui_support::{filters, fixture_recipe, shared_dir, Harness};

const STEPS: usize = 60;

fn classification_recipe(dir: &Path) -> std::path::PathBuf {
    std::os::unix::fs::symlink(shared_dir().join("fixtures/models/tiny-bert-cls"), dir.join("tiny-bert-cls")).unwrap();
    write_csv(&dir.join("train.csv"), &sentences(240, 1), "sentence,animal");
    write_jsonl(&dir.join("eval.jsonl"), &sentences(90, 2));
    let stage = format!(
        "steps = {STEPS}\nbatch_size = 16\nlr = 1e-3\nwarmup_steps = 5\neval_every = 20\ncheckpoint_every = 4\n"
    );
    let text = format!(
        "task = \"classification\"\n[data]\ntrain = \"train.csv\"\neval = \"eval.jsonl\"\n\
         text_column = \"sentence\"\nlabel_column = \"animal\"\nmax_len = 32\n\
         [teacher]\nmodel = \"tiny-bert-cls\"\n[finetune]\n{stage}[student]\nlayers = 2\n\
         [distill]\n{stage}alpha = 0.5\ntemperature = 4.0\ncosine = 0.1\n[output]\ndir = \"{}\"\n",
        dir.join("cls-run").display()
    );
    let path = dir.join("classify.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn open(h: &mut Harness, path: &Path) {
    h.keys(&[KeyCode::Char('2'), KeyCode::Char('o')]);
    h.type_text(path.to_str().unwrap());
    h.key(KeyCode::Enter);
    h.settle();
}

#[test]
fn a_classification_recipe_opens_runs_and_feeds_compare_and_temperature() {
    let tmp = tempfile::tempdir().unwrap();
    let lm_recipe = fixture_recipe(tmp.path(), 4);
    let cls_recipe = classification_recipe(tmp.path());
    let mut h = Harness::new(&lm_recipe);

    open(&mut h, &cls_recipe);
    assert!(h.app.popup.is_none(), "{:?}", h.app.popup);
    assert!(h.app.classify.is_some(), "the classification recipe is the workbench's now");
    let screen = h.render(110, 20);
    for needle in ["classification, read-only", "tiny-bert-cls", "60 steps × 16", "2 layers", "alpha 0.5 · KL(T = 4)"]
    {
        assert!(screen.contains(needle), "Recipe screen lacks `{needle}`:\n{screen}");
    }
    // Read-only: Enter does not start editing a language-model field.
    h.key(KeyCode::Enter);
    assert!(!h.app.recipe_screen.editing());

    // Started, paused at once (p), resumed from its last checkpoint (p again): the run goes on to
    // the end as if it had never stopped.
    h.keys(&[KeyCode::Char('3'), KeyCode::Char('s'), KeyCode::Char('p')]);
    h.settle();
    assert!(h.app.popup.is_none(), "{:?}", h.app.popup);
    let paused = h.app.train.outcome.clone().unwrap_or_default();
    assert!(paused.starts_with("paused at step"), "{paused}");
    h.key(KeyCode::Char('p'));
    h.settle();
    assert!(h.app.popup.is_none(), "{:?}", h.app.popup);
    let t = &h.app.train;
    for (who, s) in [("teacher", &t.teacher), ("student", &t.student), ("baseline", &t.baseline)] {
        assert_eq!(s.last.as_ref().map(|l| l.step), Some(STEPS), "{who} steps");
        assert_eq!(s.accuracy.points().len(), 3, "{who}: evaluations at steps 20, 40, 60");
    }
    assert!(t.outcome.as_deref().is_some_and(|o| o.starts_with("finished")), "{:?}", t.outcome);
    assert_eq!(t.teacher.kl.points().len(), 0, "the teacher has no KL to itself");
    assert_eq!(t.student.kl.points().len(), 3);

    // The run's summary on disk is what Compare shows.
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("cls-run/summary.json")).unwrap()).unwrap();
    let points = &h.app.compare.points;
    assert_eq!(points.len(), 3, "teacher, student and baseline");
    for (key, origin) in [("teacher", Origin::Teacher), ("student", Origin::Student), ("baseline", Origin::Baseline)] {
        let p = points.iter().find(|p| p.origin == origin).unwrap_or_else(|| panic!("no {key} point"));
        // summary.json's numbers read back within an ulp (serde_json parses floats fast, not exactly).
        assert!((p.top1_accuracy - summary[key]["accuracy"].as_f64().unwrap()).abs() < 1e-12, "{key} accuracy");
        assert_eq!(p.bytes, summary[key]["parameters"].as_u64().unwrap() * 4, "{key} size");
        let ce = summary[key]["cross_entropy"].as_f64().unwrap();
        assert!((p.perplexity - ce.exp()).abs() < 1e-9, "{key} perplexity is exp(label CE)");
    }
    let student = points.iter().find(|p| p.origin == Origin::Student).unwrap();
    assert!(student.top1_accuracy > 0.5, "the KD student beats chance (1/3): {}", student.top1_accuracy);
    assert!((student.kl - summary["student"]["kl_to_teacher"].as_f64().unwrap()).abs() < 1e-12);

    let train_screen = h.render(100, 30);
    for needle in ["teacher  60/60", "student  60/60", "baseline 60/60", "finished", "eval accuracy"] {
        assert!(train_screen.contains(needle), "Train screen lacks `{needle}`:\n{train_screen}");
    }
    filters().bind(|| insta::assert_snapshot!("train_classification_100x30", train_screen));

    // A finished run has nothing to pause; quantizing classifiers from Compare is not offered
    // (their recipe's [quantize] section does it in the run).
    h.key(KeyCode::Char('p'));
    assert!(h.app.popup.is_none(), "{:?}", h.app.popup);
    h.keys(&[KeyCode::Char('4'), KeyCode::Char('z')]);
    assert!(matches!(&h.app.popup, Some(Popup::Error(m)) if m.contains("language-model recipes")));
    h.key(KeyCode::Esc);

    // Temperature runs the fine-tuned teacher and the KD student on a sentence.
    h.run_prompt("The pony galloped past the stable with hay.");
    assert!(h.app.popup.is_none(), "{:?}", h.app.popup);
    let teacher = h.app.temperature.teacher.as_ref().expect("teacher logits");
    let student = h.app.temperature.student.as_ref().expect("student logits");
    assert_eq!(teacher.labels, ["cat", "dog", "horse"]);
    assert_eq!(student.labels, teacher.labels);
    assert!(teacher.model.resolved.path().starts_with(tmp.path().join("cls-run/teacher")));
    // The fine-tuned teacher is sure at T = 1 and spreads its mass at T = 5: one probability
    // scale, so the T = 5 bar of the same class is visibly shorter.
    let screen = h.render(100, 16);
    let horse = screen.lines().find(|l| l.starts_with("│horse")).expect("a horse row");
    // Per panel (teacher T1, T2, student T1, T2): the bar's width in eighths and the probability.
    let panels: Vec<(usize, f64)> = horse
        .split('│')
        .filter(|cell| cell.starts_with("horse"))
        .map(|cell| {
            let eighths = cell
                .chars()
                .map(|c| match c {
                    '█' => 8,
                    '▉'..='▏' => '▏' as usize - c as usize + 1,
                    _ => 0,
                })
                .sum::<usize>();
            (eighths, cell.split_whitespace().last().unwrap().parse::<f64>().unwrap())
        })
        .collect();
    assert_eq!(panels.len(), 4, "{horse}");
    let ((bar1, p1), (bar5, p5)) = (panels[0], panels[1]);
    assert!(p1 > 0.7 && p5 < p1 - 0.2, "teacher horse: {p1} at T=1, {p5} at T=5");
    assert!(bar5 < bar1, "the T=5 bar is shorter: {bar5} vs {bar1} eighths");
    // One scale for every panel: the largest probability fills the 8-cell bar (64 eighths).
    let top = panels.iter().map(|&(_, p)| p).fold(0.0, f64::max);
    for &(bar, p) in &panels {
        assert!((bar as f64 - p * 64.0 / top).abs() <= 1.0, "{bar} eighths for {p} (largest {top}): {horse}");
    }
    filters().bind(|| insta::assert_snapshot!("temperature_classifier_trained_100x16", screen));

    // Opening a language-model recipe leaves classification mode and forgets the run.
    open(&mut h, &lm_recipe);
    assert!(h.app.classify.is_none());
    assert!(h.app.temperature.trained_student.is_none() && h.app.train.teacher.last.is_none());
    let screen = h.render(110, 20);
    assert!(screen.contains("teacher.model"), "the editable recipe is back:\n{screen}");
}
