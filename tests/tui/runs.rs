//! The run library in the workbench: a sweep started from the Recipe screen runs every member as its own run
//! (progress on Jobs), the Runs screen lists them, and reopening them overlays their curves on
//! Train (legend naming what differs) and plots their points on Compare labelled by run; a run
//! reopened after the workbench was closed replays exactly the curves drawn live, and `s` on the
//! same recipe starts a new numbered run instead of an error.

use crate::tui_support;

use crossterm::event::KeyCode;
use distill_tui::tui::app::Screen;
use tui_support::{filters, fixture_recipe, Harness};

#[test]
fn a_sweep_from_train_is_listed_on_runs_and_reopened_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = fixture_recipe(dir.path(), 8);
    let text = std::fs::read_to_string(&recipe).unwrap().replace("[distill]\n", "[distill]\nbaseline = false\n");
    std::fs::write(&recipe, format!("{text}[sweep]\ndistill.temperature = [1, 2, 5]\n")).unwrap();
    let mut h = Harness::new(&recipe);
    assert_eq!(h.app.screen, Screen::Models, "an empty library opens on Models");
    assert_eq!(h.app.recipe.sweep.as_ref().map(|p| p.members.len()), Some(3));
    // Started from the Recipe screen (r), watched on Train.
    h.keys(&[KeyCode::Char('2'), KeyCode::Char('r')]);
    assert_eq!(h.app.screen, Screen::Train);
    h.settle();
    assert!(h.app.popup.is_none(), "{:?}", h.app.popup);
    let job = h.app.jobs.entries.last().unwrap();
    assert!(job.description.contains("sweep (3 runs)"), "{}", job.description);
    assert_eq!(job.runs, Some((3, 3)));
    assert!(job.log.iter().any(|l| l.starts_with("sweep run 3/3: T=5")), "{:?}", job.log);
    assert_eq!(h.app.runs.entries.len(), 4, "the sweep and its three runs");
    for m in ["01-T=1", "02-T=2", "03-T=5"] {
        assert!(dir.path().join("run").join(m).join("summary.json").is_file(), "{m}");
    }
    let settings = filters();
    let _guard = settings.bind_to_scope();
    h.key(KeyCode::Char('8'));
    insta::assert_snapshot!("runs_100x30", h.render(100, 30));
    // Mark the sweep's members and open them together.
    h.keys(&[KeyCode::Char('j'), KeyCode::Char('a'), KeyCode::Enter]);
    assert_eq!(h.app.screen, Screen::Train);
    let labels: Vec<&str> = h.app.train.overlay.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(labels, ["T=1", "T=2", "T=5"]);
    for (_, s) in &h.app.train.overlay {
        assert_eq!(s.student.last.as_ref().unwrap().step, 8);
        assert_eq!(s.student.perplexity.points().len(), 2, "evaluations at steps 4 and 8");
    }
    let train = h.render(100, 30);
    assert!(train.contains("─ T=1 ─ T=2 ─ T=5"), "the legend names what differs:\n{train}");
    insta::assert_snapshot!("train_sweep_100x30", train);
    h.key(KeyCode::Char('4'));
    let names: Vec<String> = h.app.compare.points.iter().map(|p| p.name()).collect();
    assert_eq!(names, ["teacher float", "T=1 student float", "T=2 student float", "T=5 student float"]);
    let compare = h.render(100, 30);
    // The three students measure the same size and nearly the same perplexity: one label names all.
    for label in ["s1,2,3 float", "t float", "1 T=1", "3 T=5"] {
        assert!(compare.contains(label), "no `{label}` on Compare:\n{compare}");
    }
    insta::assert_snapshot!("compare_sweep_100x30", compare);
    // The table sorts by any column: by perplexity, best first.
    h.keys(&[KeyCode::Char('o'), KeyCode::Char('o'), KeyCode::Char('o')]);
    let ppl: Vec<f64> = h.app.compare.points.iter().map(|p| p.perplexity).collect();
    assert!(ppl.windows(2).all(|w| w[0] <= w[1]), "{ppl:?}");
    h.key(KeyCode::Char('O'));
    let ppl: Vec<f64> = h.app.compare.points.iter().map(|p| p.perplexity).collect();
    assert!(ppl.windows(2).all(|w| w[0] >= w[1]), "{ppl:?}");
}

#[test]
fn a_run_reopened_after_a_restart_replays_its_curves_and_s_starts_a_numbered_run() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = fixture_recipe(dir.path(), 8);
    let mut h = Harness::new(&recipe);
    h.keys(&[KeyCode::Char('3'), KeyCode::Char('s')]);
    h.settle();
    assert!(h.app.popup.is_none(), "{:?}", h.app.popup);
    let live = |h: &Harness| {
        let t = &h.app.train;
        [
            &t.student.loss,
            &t.student.soft,
            &t.student.perplexity,
            &t.student.kl,
            &t.baseline.hard,
            &t.baseline.perplexity,
        ]
        .map(|s| s.points())
    };
    let drawn = live(&h);
    let points: Vec<String> = h.app.compare.points.iter().map(|p| p.name()).collect();
    drop(h);
    // Launch again: the finished run is listed and the workbench opens on it.
    let mut h = Harness::new(&recipe);
    assert_eq!(h.app.screen, Screen::Runs);
    assert_eq!(h.app.runs.entries.len(), 1);
    assert_eq!(h.app.runs.entries[0].status.name(), "finished");
    h.key(KeyCode::Enter);
    assert_eq!(h.app.screen, Screen::Train);
    assert_eq!(live(&h), drawn, "the replayed curves differ from those drawn live");
    let reopened: Vec<String> = h.app.compare.points.iter().map(|p| p.name()).collect();
    assert_eq!(reopened, points);
    assert!(h.app.train.outcome.as_deref().unwrap_or("").contains("reopened"), "{:?}", h.app.train.outcome);
    // The same recipe again: a new numbered run beside the first, no error.
    h.key(KeyCode::Char('s'));
    h.settle();
    assert!(h.app.popup.is_none(), "{:?}", h.app.popup);
    assert!(dir.path().join("run-2/summary.json").is_file());
    assert_eq!(h.app.runs.entries.len(), 2);
    assert_eq!(h.app.train.student.last.as_ref().unwrap().step, 8, "the new run's curves are drawn");
}
