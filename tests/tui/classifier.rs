//! The Temperature screen with a classifier teacher (the tiny-bert-cls fixture, classes
//! cat/dog/horse): a sentence in, the class distribution at T = 1 and at T = 5 side by side.

use crate::tui_support;

use tui_support::{shared_dir, Harness};

#[test]
fn temperature_shows_class_bars_for_a_classifier() {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(shared_dir().join("fixtures/models"), dir.path().join("models")).unwrap();
    std::os::unix::fs::symlink(shared_dir().join("data/austen"), dir.path().join("data")).unwrap();
    let recipe = dir.path().join("recipe.toml");
    let text = "[teacher]\nmodel = \"models/tiny-bert-cls\"\n[student]\nderive = { layers = 2 }\n[data]\n\
                train = \"data/persuasion.txt\"\neval = \"data/northangerabbey.txt\"\n[output]\ndir = \"run\"\n";
    std::fs::write(&recipe, text).unwrap();
    let mut h = Harness::new(&recipe);
    h.run_prompt("The horse would not stand still in the stable.");
    assert!(h.app.popup.is_none(), "{:?}", h.app.popup);
    let teacher = h.app.temperature.teacher.as_ref().expect("teacher logits");
    assert_eq!(teacher.labels, ["cat", "dog", "horse"]);
    assert_eq!(teacher.rows.len(), 1, "one row of class logits for the whole sentence");
    let screen = h.render(100, 16);
    for needle in ["classifier: 3 classes (cat, dog, horse)", "T=1.0", "T=5.0", "cat", "dog", "horse"] {
        assert!(screen.contains(needle), "screen lacks `{needle}`:\n{screen}");
    }
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path("snapshots");
    s.set_prepend_module_to_snapshot(false);
    s.bind(|| insta::assert_snapshot!("temperature_classifier_100x16", screen));
}
