//! Parquet data for classification recipes, against files pyarrow wrote
//! (`tests/fixtures/classify/make_parquet.py`, committed with the rows pyarrow was given): string
//! and integer labels, `datasets` ClassLabel metadata, snappy/zstd/gzip/lz4 (and brotli, left out
//! of the build), several row groups and pages, nulls, binary text, a missing column, wrong column
//! types, truncated and corrupt files.

use distill_tui::engine::classify::data::{
    declared_classes, label_rows, load_labelled, load_labelled_files, read_rows, Columns,
};
use distill_tui::engine::classify::parquet::read_parquet;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/classify").join(name)
}

fn cols(text: &str, label: &str) -> Columns {
    Columns { text: text.into(), label: label.into() }
}

/// The rows `make_parquet.py` wrote into `NAME.parquet`, from `NAME.expected.jsonl`.
fn expected(name: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(fixture(&format!("{name}.expected.jsonl"))).unwrap();
    let row = |line: &str| {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        (v["text"].as_str().unwrap().to_string(), v["label"].as_str().unwrap().to_string())
    };
    text.lines().map(row).collect()
}

fn err(r: Result<impl std::fmt::Debug, distill_tui::engine::Error>) -> String {
    r.expect_err("an error").to_string()
}

#[test]
fn rows_equal_what_pyarrow_wrote() {
    let cases = [
        ("animals-snappy", cols("sentence", "animal"), 60),
        ("animals-classlabel", cols("text", "label"), 90),
        ("animals-ids-gzip", cols("text", "label"), 30),
        ("null-text", cols("text", "label"), 6),
        ("binary-lz4", cols("text", "label"), 9),
    ];
    for (name, c, n) in cases {
        let rows = read_parquet(&fixture(&format!("{name}.parquet")), &c).unwrap();
        assert_eq!(rows.len(), n, "{name}");
        assert_eq!(rows, expected(name), "{name}");
    }
    // Some texts are not ASCII, and the ClassLabel ids came back as names.
    let rows = read_rows(&fixture("animals-classlabel.parquet"), &cols("text", "label")).unwrap();
    assert!(rows.iter().any(|(t, _)| t.contains('🐾') || t.contains("café") || t.contains("日本")));
    assert_eq!(rows[..3].iter().map(|(_, l)| l.as_str()).collect::<Vec<_>>(), ["cat", "dog", "horse"]);
}

#[test]
fn classlabel_names_are_the_classes_and_ids_map_through_them() {
    let c = cols("text", "label");
    let names = ["cat", "dog", "horse"];
    let classlabel = fixture("animals-classlabel.parquet");
    assert_eq!(declared_classes(&classlabel, &c).unwrap().unwrap(), names);
    assert_eq!(declared_classes(&fixture("animals-ids-gzip.parquet"), &c).unwrap(), None);
    let set = load_labelled(&classlabel, &c, None).unwrap();
    assert_eq!(set.classes, names);
    let want: Vec<usize> =
        expected("animals-classlabel").iter().map(|(_, l)| names.iter().position(|n| n == l).unwrap()).collect();
    assert_eq!(set.examples.iter().map(|e| e.label).collect::<Vec<_>>(), want);

    // Bare ids: without classes they are their own (numerically sorted) classes; with the
    // model's id2label they are class ids.
    let ids = fixture("animals-ids-gzip.parquet");
    let set = load_labelled(&ids, &c, None).unwrap();
    assert_eq!(set.classes, ["0", "1", "2"]);
    let names_owned: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let set = load_labelled(&ids, &c, Some(&names_owned)).unwrap();
    let want: Vec<usize> = expected("animals-ids-gzip").iter().map(|(_, l)| l.parse().unwrap()).collect();
    assert_eq!(set.examples.iter().map(|e| e.label).collect::<Vec<_>>(), want);

    // Several files: rows one after the other, the declared names for all of them.
    let both = load_labelled_files(&[classlabel, ids], &c, None).unwrap();
    assert_eq!((both.classes.as_slice(), both.examples.len()), (&names_owned[..], 120));
    assert_eq!(both.examples[90..].iter().map(|e| e.label).collect::<Vec<_>>(), want);
}

#[test]
fn integer_labels_sort_by_value() {
    let rows = ["10", "2", "1", "2"].iter().map(|l| ("some text".to_string(), l.to_string())).collect();
    let set = label_rows(rows, None, Path::new("x.csv")).unwrap();
    assert_eq!(set.classes, ["1", "2", "10"]);
    assert_eq!(set.examples.iter().map(|e| e.label).collect::<Vec<_>>(), [2, 1, 0, 1]);
}

#[test]
fn a_null_text_is_an_empty_text() {
    let path = fixture("null-text.parquet");
    let e = err(read_rows(&path, &cols("text", "label")));
    assert!(
        e.contains("null-text.parquet") && e.contains("the text column `text` is empty in 1 of 6 rows (first: row 3)"),
        "{e}"
    );
}

#[test]
fn missing_columns_and_wrong_types_are_named() {
    let path = fixture("animals-snappy.parquet");
    let e = err(read_rows(&path, &cols("text", "animal")));
    assert!(e.contains("animals-snappy.parquet: no text column `text`"), "{e}");
    assert!(e.contains("columns: idx, sentence, animal (set data.text_column)"), "{e}");
    let e = err(read_rows(&path, &cols("sentence", "label")));
    assert!(e.contains("no label column `label`") && e.contains("(set data.label_column)"), "{e}");
    let e = err(read_rows(&path, &cols("idx", "animal")));
    assert!(e.contains("the text column `idx` holds") && e.contains("INT") && e.contains("data.text_column"), "{e}");
    // An integer column is a fine label column: its values are class ids.
    let rows = read_rows(&path, &cols("sentence", "idx")).unwrap();
    assert_eq!(rows[59].1, "59");
}

#[test]
fn a_codec_left_out_of_the_build_is_named() {
    let e = err(read_rows(&fixture("brotli.parquet"), &cols("text", "label")));
    assert!(e.contains("brotli.parquet: compressed with brotli, which this build does not read"), "{e}");
    assert!(e.contains("snappy, zstd, gzip, lz4"), "{e}");
}

#[test]
fn truncated_and_corrupt_files_are_errors_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cols("text", "label");
    let bytes = std::fs::read(fixture("animals-classlabel.parquet")).unwrap();
    let n = bytes.len();
    for keep in [0, 4, 100, n / 2, n - 9, n - 1] {
        let path = tmp.path().join(format!("cut-{keep}.parquet"));
        std::fs::write(&path, &bytes[..keep]).unwrap();
        let e = err(read_rows(&path, &c));
        assert!(e.contains(&path.display().to_string()) && e.contains("Parquet"), "{keep} bytes: {e}");
    }
    // Damaged bytes anywhere (the `parquet` crate panics on some: the reader must not).
    let bytes = std::fs::read(fixture("animals-ids-gzip.parquet")).unwrap();
    let path = tmp.path().join("damaged.parquet");
    let mut errors = 0;
    for (at, mask) in (0..bytes.len()).flat_map(|at| [(at, 0x01u8), (at, 0x5a), (at, 0xff)]) {
        let mut damaged = bytes.clone();
        damaged[at] ^= mask;
        std::fs::write(&path, &damaged).unwrap();
        let outcome = std::panic::catch_unwind(|| read_rows(&path, &c).map(|rows| rows.len()));
        match outcome {
            Ok(Err(e)) => {
                errors += 1;
                assert!(e.to_string().contains(&path.display().to_string()), "byte {at} ^ {mask:#x}: {e}");
            }
            Ok(Ok(_)) => {}
            Err(_) => panic!("reading a file with byte {at} ^ {mask:#x} panicked"),
        }
    }
    assert!(errors > bytes.len(), "most damage is detected ({errors} errors)");
}
