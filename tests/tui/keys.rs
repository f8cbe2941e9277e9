//! The workbench's state machine driven by key events, with real jobs behind it.

use crate::tui_support;

use crossterm::event::{KeyCode, KeyModifiers};
use distill_tui::tui::app::{Popup, Screen};
use distill_tui::tui::recipe_fields::FIELDS;
use distill_tui::tui::tasks::Status;
use tui_support::{fixture_recipe, Harness};

fn harness(steps: usize) -> (tempfile::TempDir, Harness) {
    let dir = tempfile::tempdir().unwrap();
    let recipe = fixture_recipe(dir.path(), steps);
    let h = Harness::new(&recipe);
    (dir, h)
}

#[test]
fn tab_digits_and_back_tab_move_between_screens() {
    let (_d, mut h) = harness(4);
    assert_eq!(h.app.screen, Screen::Models);
    h.key(KeyCode::Tab);
    assert_eq!(h.app.screen, Screen::Recipe);
    h.key(KeyCode::BackTab);
    h.key(KeyCode::BackTab);
    assert_eq!(h.app.screen, Screen::Runs);
    for (i, screen) in Screen::ALL.iter().enumerate() {
        h.key(KeyCode::Char(char::from(b'1' + i as u8)));
        assert_eq!(h.app.screen, *screen);
    }
}

#[test]
fn a_finished_run_gets_a_numbered_run_and_an_unfinished_one_is_resumed_with_p() {
    let (d, mut h) = harness(4);
    h.keys(&[KeyCode::Char('3'), KeyCode::Char('s')]);
    h.settle();
    assert!(h.app.train.outcome.as_deref().is_some_and(|o| o.starts_with("finished")), "{:?}", h.app.train.outcome);
    // `s` again on a finished run: a new run beside it, no popup.
    h.key(KeyCode::Char('s'));
    h.settle();
    assert!(h.app.popup.is_none(), "{:?}", h.app.popup);
    assert!(d.path().join("run-2/summary.json").is_file());
    // A run that did not finish (a checkpoint, no summary) is not replaced: `p` resumes it.
    std::fs::remove_file(d.path().join("run/summary.json")).unwrap();
    h.key(KeyCode::Char('s'));
    assert!(
        matches!(&h.app.popup, Some(Popup::Error(m)) if m.contains("holds an unfinished run: p resumes it")),
        "{:?}",
        h.app.popup
    );
    h.key(KeyCode::Esc);
    h.key(KeyCode::Char('p'));
    h.settle();
    assert!(h.app.popup.is_none(), "{:?}", h.app.popup);
    assert!(h.app.train.outcome.as_deref().is_some_and(|o| o.starts_with("finished")), "{:?}", h.app.train.outcome);
    let resumed = h.app.jobs.entries.iter().filter(|e| e.description.starts_with("resume")).count();
    assert_eq!(resumed, 1, "p started a resume job");
    assert!(d.path().join("run/summary.json").is_file());
}

#[test]
fn help_opens_and_any_key_closes_it() {
    let (_d, mut h) = harness(4);
    h.key(KeyCode::Char('?'));
    assert!(h.app.help);
    assert!(h.render(80, 24).contains("Keys (any key closes)"));
    h.key(KeyCode::Char('3'));
    assert!(!h.app.help);
    assert_eq!(h.app.screen, Screen::Models, "the key that closes help does nothing else");
}

#[test]
fn quit_without_jobs_is_immediate() {
    let (_d, mut h) = harness(4);
    h.key(KeyCode::Char('q'));
    assert!(h.app.should_quit);
}

#[test]
fn quit_while_a_run_trains_asks_first_and_cancels_it() {
    let (_d, mut h) = harness(10_000);
    h.keys(&[KeyCode::Char('3'), KeyCode::Char('s')]);
    assert_eq!(h.app.popup, None);
    let job = h.app.train.job.expect("the run started");
    h.wait_until("the first step", |app| app.train.student.last.is_some());
    h.key(KeyCode::Char('q'));
    assert_eq!(h.app.popup, Some(Popup::ConfirmQuit));
    assert!(!h.app.should_quit);
    h.key(KeyCode::Char('n'));
    assert_eq!(h.app.popup, None);
    assert!(!h.app.should_quit);
    h.key(KeyCode::Char('q'));
    h.key(KeyCode::Char('y'));
    assert!(h.app.should_quit);
    h.settle();
    assert_eq!(h.app.jobs.get(job).unwrap().status, Status::Cancelled);
}

#[test]
fn arrows_and_vim_keys_move_the_recipe_cursor() {
    let (_d, mut h) = harness(4);
    h.key(KeyCode::Char('2'));
    h.keys(&[KeyCode::Down, KeyCode::Char('j'), KeyCode::Char('j')]);
    assert_eq!(h.app.recipe_screen.row, 3);
    h.keys(&[KeyCode::Up, KeyCode::Char('k')]);
    assert_eq!(h.app.recipe_screen.row, 1);
    h.key(KeyCode::Char('G'));
    assert_eq!(h.app.recipe_screen.row, FIELDS.len() - 1);
    h.key(KeyCode::Char('g'));
    assert_eq!(h.app.recipe_screen.row, 0);
}

fn select_field(h: &mut Harness, key: &str) {
    h.key(KeyCode::Char('2'));
    h.key(KeyCode::Char('g'));
    let row = FIELDS.iter().position(|f| f.key == key).unwrap();
    (0..row).for_each(|_| h.key(KeyCode::Down));
}

#[test]
fn an_invalid_recipe_value_is_flagged_as_typed_and_not_applied() {
    let (_d, mut h) = harness(4);
    select_field(&mut h, "distill.alpha");
    h.key(KeyCode::Enter);
    h.key_with(KeyCode::Char('u'), KeyModifiers::CONTROL);
    h.type_text("1.5");
    let verdict = h.app.recipe_screen.verdict.clone().unwrap();
    assert_eq!(verdict, Err("distill.alpha must be in [0, 1]".to_string()));
    assert!(h.render(80, 24).contains("✗ distill.alpha must be in [0, 1]"));
    h.key(KeyCode::Enter);
    assert!(h.app.recipe_screen.editing(), "Enter keeps an invalid value in the field");
    assert_eq!(h.app.recipe.recipe.distill.alpha, 0.9);
    h.key(KeyCode::Backspace);
    h.key(KeyCode::Backspace);
    assert_eq!(h.app.recipe_screen.verdict, Some(Ok(())));
    h.key(KeyCode::Enter);
    assert!(!h.app.recipe_screen.editing());
    assert_eq!(h.app.recipe.recipe.distill.alpha, 1.0);
}

/// The teacher's precision is a recipe field: `int8` is taken, a name that is no precision is
/// flagged with the valid ones, and emptying the field removes the key (the teacher follows
/// `precision` again); `precision = "int8"` is refused by the recipe's own check.
#[test]
fn the_teacher_precision_is_edited_like_any_field() {
    use distill_tui::engine::kernels::autocast::Precision;
    let (_d, mut h) = harness(4);
    select_field(&mut h, "distill.teacher_precision");
    h.key(KeyCode::Enter);
    h.type_text("int4");
    let verdict = h.app.recipe_screen.verdict.clone().unwrap();
    assert!(verdict.as_ref().is_err_and(|e| e.contains("int4") && e.contains("int8")), "{verdict:?}");
    (0..4).for_each(|_| h.key(KeyCode::Backspace));
    h.type_text("int8");
    h.key(KeyCode::Enter);
    assert!(!h.app.recipe_screen.editing());
    assert_eq!(h.app.recipe.recipe.distill.teacher_precision, Some(Precision::Int8.into()));
    h.key(KeyCode::Enter);
    h.key_with(KeyCode::Char('u'), KeyModifiers::CONTROL);
    h.key(KeyCode::Enter);
    assert_eq!(h.app.recipe.recipe.distill.teacher_precision, None, "an empty field removes the key");
    select_field(&mut h, "distill.precision");
    h.key(KeyCode::Enter);
    h.key_with(KeyCode::Char('u'), KeyModifiers::CONTROL);
    h.type_text("int8");
    let verdict = h.app.recipe_screen.verdict.clone().unwrap();
    assert!(verdict.as_ref().is_err_and(|e| e.contains("teacher_precision")), "{verdict:?}");
    h.key(KeyCode::Esc);
    assert_eq!(h.app.recipe.recipe.distill.precision, Precision::F32);
}

#[test]
fn letters_typed_into_a_field_are_text_not_commands() {
    let (_d, mut h) = harness(4);
    select_field(&mut h, "output.dir");
    h.key(KeyCode::Enter);
    h.type_text("q1?");
    assert!(!h.app.should_quit && !h.app.help);
    assert_eq!(h.app.screen, Screen::Recipe);
    h.key(KeyCode::Esc);
    assert!(!h.app.recipe.recipe.output.dir.ends_with("q1?"), "Esc drops the edit");
}

#[test]
fn recipe_saves_and_opens_again() {
    let (dir, mut h) = harness(4);
    select_field(&mut h, "distill.temperature");
    h.key(KeyCode::Enter);
    h.key_with(KeyCode::Char('u'), KeyModifiers::CONTROL);
    h.type_text("4");
    h.key(KeyCode::Enter);
    let saved = dir.path().join("saved.toml");
    h.key(KeyCode::Char('s'));
    h.key_with(KeyCode::Char('u'), KeyModifiers::CONTROL);
    h.type_text(saved.to_str().unwrap());
    h.key(KeyCode::Enter);
    assert_eq!(h.app.popup, None);
    let reopened = distill_tui::engine::recipe::Recipe::load(&saved).unwrap();
    assert_eq!(reopened.recipe.distill.temperature, 4.0);
    assert_eq!(reopened.recipe, h.app.recipe.recipe);
}

#[test]
fn a_bad_model_path_shows_an_error_popup_and_the_app_goes_on() {
    let (_d, mut h) = harness(4);
    h.key(KeyCode::Enter);
    h.key_with(KeyCode::Char('u'), KeyModifiers::CONTROL);
    h.type_text("./no/such/model");
    h.key(KeyCode::Enter);
    h.key(KeyCode::Char('c'));
    h.settle();
    match &h.app.popup {
        Some(Popup::Error(msg)) => assert!(msg.contains("no such file or folder"), "{msg}"),
        other => panic!("expected an error popup, got {other:?}"),
    }
    h.key(KeyCode::Esc);
    assert_eq!(h.app.popup, None);
    assert!(!h.app.should_quit);
}

#[test]
fn changing_the_temperature_reuses_the_logits() {
    let (_d, mut h) = harness(4);
    h.key(KeyCode::Char('5'));
    h.key(KeyCode::Enter);
    h.key(KeyCode::Enter);
    h.settle();
    let jobs = h.app.jobs.entries.len();
    let last = h.app.temperature.teacher.as_ref().unwrap().rows.len() - 1;
    assert_eq!(h.app.temperature.position, last);
    assert_eq!(h.app.temperature.t, [1.0, 5.0]);
    h.keys(&[KeyCode::Char('+'), KeyCode::Char('t'), KeyCode::Char('-'), KeyCode::Left, KeyCode::Char('h')]);
    assert_eq!(h.app.temperature.t, [0.5, 5.5]);
    assert_eq!(h.app.temperature.position, last - 2);
    assert_eq!(h.app.jobs.entries.len(), jobs, "no model was run again");
}

#[test]
fn compare_budget_and_axis_keys() {
    let (_d, mut h) = harness(4);
    h.key(KeyCode::Char('4'));
    h.key(KeyCode::Char('m'));
    assert_eq!(h.app.compare.metric, distill_tui::tui::tradeoff::Metric::Kl);
    h.key(KeyCode::Char('x'));
    assert_eq!(h.app.compare.cost, distill_tui::tui::tradeoff::Cost::Latency);
    h.key(KeyCode::Char('x'));
    assert_eq!(h.app.compare.cost, distill_tui::tui::tradeoff::Cost::Size);
    h.key(KeyCode::Char('b'));
    h.type_text("0.5");
    h.key(KeyCode::Enter);
    assert_eq!(h.app.compare.budget.max_mb, Some(0.5));
    // Every bound of the advisor has its key; the rarer ones join the budget line once set.
    for (key, text) in [('f', "40000"), ('v', "0.2"), ('a', "0.7"), ('s', "1.5"), ('t', "3")] {
        h.key(KeyCode::Char(key));
        h.type_text(text);
        h.key(KeyCode::Enter);
    }
    let b = &h.app.compare.budget;
    assert_eq!(
        (b.min_prefill_tokens_per_second, b.max_kl, b.min_agreement, b.max_ms_per_token, b.max_train_minutes),
        (Some(40000.0), Some(0.2), Some(0.7), Some(1.5), Some(3.0))
    );
    let screen = h.render(160, 30);
    assert!(screen.contains("prefill 40000 tok/s · KL 0.2 · agreement 0.7 · training 3 min"), "{screen}");
    h.key(KeyCode::Char('d'));
    h.type_text("abc");
    h.key(KeyCode::Enter);
    assert!(matches!(&h.app.popup, Some(Popup::Error(m)) if m.contains("not a number")));
}

#[test]
fn z_on_compare_quantizes_the_recipe_models_with_the_formats_set_on_the_recipe_screen() {
    let (_d, mut h) = harness(4);
    h.keys(&[KeyCode::Char('4'), KeyCode::Char('z')]);
    assert!(matches!(&h.app.popup, Some(Popup::Error(m)) if m.contains("quantize.formats")), "{:?}", h.app.popup);
    h.key(KeyCode::Esc);
    for (key, text) in [("quantize.formats", "q8_0, int4"), ("quantize.group_size", "32")] {
        select_field(&mut h, key);
        h.key(KeyCode::Enter);
        h.key_with(KeyCode::Char('u'), KeyModifiers::CONTROL);
        h.type_text(text);
        h.key(KeyCode::Enter);
        assert!(!h.app.recipe_screen.editing(), "{key} = {text} applies");
    }
    h.keys(&[KeyCode::Char('4'), KeyCode::Char('z')]);
    assert!(h.app.jobs.running_of("sweep").is_some());
    h.settle();
    assert_eq!(h.app.popup, None);
    let names: Vec<String> = h.app.compare.points.iter().map(|p| p.name()).collect();
    // No run yet: the teacher and the recipe's own student, each in both formats.
    for want in ["teacher q8_0", "teacher int4-g32", "student q8_0", "student int4-g32"] {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }
    // KL is to the teacher for every point: the untrained student is far from it, q8_0 is not.
    let kl = |name: &str| h.app.compare.points.iter().find(|p| p.name() == name).unwrap().kl;
    assert!(kl("teacher q8_0") < 0.01 && kl("student q8_0") > 10.0 * kl("teacher q8_0"));
    assert!(h.render(100, 30).contains("teacher int4-g32"));
}

#[test]
fn a_job_that_panics_fails_with_its_report_and_prints_nothing_over_the_screen() {
    // The workbench's hook: a job thread's panic is kept for its Failed event (the popup) instead
    // of being printed over the screen; the report names the message and where it happened.
    distill_tui::tui::terminal::install_panic_hook();
    let settings = std::sync::Arc::new(crate::common::settings());
    let job = distill_tui::jobs::spawn(
        "boom",
        "a job that panics".into(),
        settings,
        |_| -> distill_tui::engine::Result<serde_json::Value> { panic!("boom at step 3") },
    );
    let last = job.events.iter().last().unwrap();
    match last {
        distill_tui::jobs::JobEvent::Failed { error, bad_input, .. } => {
            assert!(!bad_input);
            assert!(error.starts_with("internal error (please report it): "), "{error}");
            assert!(error.contains("boom at step 3") && error.contains("tests/tui/keys.rs"), "{error}");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[test]
fn temperature_shows_a_derived_student_before_training_on_the_teachers_rows() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = fixture_recipe(dir.path(), 4);
    let text = std::fs::read_to_string(&recipe).unwrap();
    std::fs::write(&recipe, text.replace("model = \"models/tiny-llama-student\"", "derive = { layers = 1 }")).unwrap();
    let mut h = Harness::new(&recipe);
    h.run_prompt("It is a truth universally acknowledged");
    assert!(h.app.popup.is_none(), "{:?}", h.app.popup);
    let student = h.app.temperature.student.as_ref().expect("the derived student's logits");
    assert!(student.model.info.name.contains("(derived, 1 layers)"), "{}", student.model.info.name);
    let screen = h.render(120, 30);
    assert!(screen.contains("derived student T1") && screen.contains("KL(teacher‖student)"), "{screen}");
}
