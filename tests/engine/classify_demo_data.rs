//! The committed demo data (`assets/data/novels-*.csv`) is exactly what the builder makes from
//! `assets/corpus/train/`. `DISTILL_WRITE_DEMO_DATA=1 cargo test --test classify_demo_data` rewrites it.

use distill_tui::engine::classify::data::{load_labelled, Columns};
use distill_tui::engine::classify::demo_data::{build, to_csv, write, DemoSpec};
use std::path::PathBuf;

#[test]
fn committed_demo_data_matches_the_builder() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets");
    let files: Vec<PathBuf> = ["emma", "prideprejudice", "sensesensibility"]
        .iter()
        .map(|n| root.join(format!("corpus/train/{n}.txt")))
        .collect();
    let spec = DemoSpec::default();
    let (train, eval) = build(&files, &spec).unwrap();
    let dir = root.join("data");
    if std::env::var_os("DISTILL_WRITE_DEMO_DATA").is_some() {
        write(&dir, &train, &eval).unwrap();
    }
    assert_eq!((train.len(), eval.len()), (3 * spec.train_per_class, 3 * spec.eval_per_class));
    for (name, rows) in [("novels-train.csv", &train), ("novels-eval.csv", &eval)] {
        let committed = std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(committed == to_csv(rows).unwrap(), "{name} differs from the builder's output");
    }
    // Held-out passages never appear in training, and the CSV reads back with three classes.
    assert!(eval.iter().all(|e| !train.contains(e)));
    let cols = Columns { text: "text".into(), label: "label".into() };
    let set = load_labelled(&dir.join("novels-eval.csv"), &cols, None).unwrap();
    assert_eq!(set.classes, ["emma", "prideprejudice", "sensesensibility"]);
    assert_eq!(set.counts(), vec![spec.eval_per_class; 3]);
}
