//! Snapshots of every screen in a populated state, at 80×24 and 120×40, driven by the real engine
//! on the fixture models: the pair check, a short distillation run (KD student and baseline), the
//! Temperature screen on a prompt, and the Compare points the run and a quantization sweep measured.
//!
//! Numbers that depend on the machine (rates, ETAs, free memory) and temporary paths are masked;
//! everything else, the losses and perplexities included, is compared exactly. A mismatch fails
//! the test (`INSTA_UPDATE=no` in CI; review changes with `cargo insta review`).

use crate::tui_support;

use crossterm::event::KeyCode;
use distill_tui::engine::context::Settings;
use distill_tui::tui::app::Action;
use tui_support::{filters, fixture_recipe, Harness};

/// A hub cache holding the tiny-llama fixture as `fixtures/tiny-llama`, so the Models screen's
/// cache list shows the same thing on every machine.
fn fixture_hub_cache(root: &std::path::Path) {
    let repo = root.join("models--fixtures--tiny-llama");
    let snap = repo.join("snapshots/0123456789abcdef0123456789abcdef01234567");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123456789abcdef0123456789abcdef01234567").unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        let from = tui_support::shared_dir().join("fixtures/models/tiny-llama").join(f);
        std::os::unix::fs::symlink(from, snap.join(f)).unwrap();
    }
}

#[test]
fn every_screen_populated_by_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("hub");
    fixture_hub_cache(&cache);
    let mut settings = Settings::from_env().expect("the environment's settings");
    settings.hub = settings.hub.with_cache_dir(&cache);
    settings.hub.offline = true;
    let recipe = fixture_recipe(dir.path(), 12);
    let mut h = Harness::with_settings(&recipe, settings);
    // Models: load both fixtures and check the pair.
    h.key(KeyCode::Char('c'));
    h.settle();
    assert!(h.app.popup.is_none(), "{:?}", h.app.popup);
    // Train: a real 12-step run of the KD student and the baseline.
    h.keys(&[KeyCode::Char('3'), KeyCode::Char('s')]);
    h.settle();
    assert!(h.app.popup.is_none(), "{:?}", h.app.popup);
    assert_eq!(h.app.train.student.last.as_ref().unwrap().step, 12);
    // Temperature: the teacher and the trained student on the default prompt, T2 raised to 6.
    h.keys(&[KeyCode::Char('5'), KeyCode::Enter, KeyCode::Enter]);
    h.settle();
    h.keys(&[KeyCode::Char('+'), KeyCode::Left]);
    // Compare: the run's float points, a quantization sweep of the teacher and the trained student
    // started from the screen (formats set as on the Recipe screen), and a size budget.
    let formats = Action::SetField { key: "quantize.formats".into(), text: "q8_0, q4_0".into() };
    h.app.handle_action(formats);
    h.keys(&[KeyCode::Char('4'), KeyCode::Char('z')]);
    h.settle();
    assert!(h.app.popup.is_none(), "{:?}", h.app.popup);
    assert_eq!(h.app.compare.points.len(), 7, "3 float points + 2 models × 2 formats");
    h.key(KeyCode::Char('b'));
    h.keys(&[KeyCode::Char('0'), KeyCode::Char('.'), KeyCode::Char('5'), KeyCode::Enter]);
    let settings = filters();
    let _guard = settings.bind_to_scope();
    for (key, name) in [
        ('1', "models"),
        ('2', "recipe"),
        ('3', "train"),
        ('4', "compare"),
        ('5', "temperature"),
        ('6', "jobs"),
        ('7', "export"),
    ] {
        h.key(KeyCode::Char(key));
        insta::assert_snapshot!(format!("{name}_80x24"), h.render(80, 24));
        insta::assert_snapshot!(format!("{name}_120x40"), h.render(120, 40));
        // Any terminal size, however small or odd, draws without a panic.
        for (w, hgt) in [(30, 8), (20, 5), (19, 4), (10, 3), (1, 1), (200, 6), (30, 60), (9, 9)] {
            let text = h.render(w, hgt);
            assert_eq!(text.lines().count(), hgt as usize, "{name} at {w}×{hgt}");
            if w < 20 || hgt < 5 {
                assert!(text.contains("small") || w < 12 || hgt < 2, "{name} at {w}×{hgt} says nothing:\n{text}");
            }
        }
    }
    // Export (the screen is open): `x` exports the run's student through the engine's export job.
    h.key(KeyCode::Char('x'));
    h.settle();
    assert!(h.app.popup.is_none(), "{:?}", h.app.popup);
    let out = std::path::PathBuf::from(h.app.export.fields[2].text.trim());
    for f in ["recipe.toml", "model/model.safetensors", "model/README.md"] {
        assert!(out.join(f).is_file(), "the export wrote no {f}");
    }
}
