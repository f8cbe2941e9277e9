//! Labelled text for classification: CSV/TSV (header row), JSON lines or Parquet, with a text and a
//! label column whose names are configurable. Labels map to the model's `id2label` when it has one;
//! otherwise to the class names a Parquet file's `datasets` metadata gives (a `ClassLabel`), or else
//! the sorted distinct labels of the training files become the classes. Every bad input is named: a
//! missing column, an empty text, a label the model does not know, a class with no examples.

use super::parquet::{class_names, read_parquet};
use crate::engine::{Error, Result};
use std::path::{Path, PathBuf};

/// One labelled example.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub text: String,
    pub label: usize,
}

/// A labelled data set: class names by id and the examples.
#[derive(Clone, Debug)]
pub struct LabelledSet {
    pub classes: Vec<String>,
    pub examples: Vec<Example>,
}

/// Which columns hold the text and the label.
#[derive(Clone, Debug)]
pub struct Columns {
    pub text: String,
    pub label: String,
}

/// Reads `(text, label)` rows of a `.csv`, `.tsv`, `.jsonl` / `.json` (JSON lines) or `.parquet` file.
pub fn read_rows(path: &Path, cols: &Columns) -> Result<Vec<(String, String)>> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let rows = match ext.as_str() {
        "csv" | "tsv" => read_csv(path, cols, if ext == "tsv" { b'\t' } else { b',' })?,
        "jsonl" | "json" | "ndjson" => read_jsonl(path, cols)?,
        "parquet" => read_parquet(path, cols)?,
        other => {
            return Err(Error::Invalid(format!(
                "{}: unknown data format `.{other}`; use .csv, .tsv, .jsonl or .parquet",
                path.display()
            )))
        }
    };
    if rows.is_empty() {
        return Err(Error::Invalid(format!("{}: no rows", path.display())));
    }
    if let Some(i) = rows.iter().position(|(t, _)| t.trim().is_empty()) {
        let empty = rows.iter().filter(|(t, _)| t.trim().is_empty()).count();
        return Err(Error::Invalid(format!(
            "{}: the text column `{}` is empty in {empty} of {} rows (first: row {})",
            path.display(),
            cols.text,
            rows.len(),
            i + 1
        )));
    }
    Ok(rows)
}

/// The error for a column that is not there, listing the ones that are.
pub(super) fn missing_column(path: &Path, what: &str, name: &str, found: &[String]) -> Error {
    Error::Invalid(format!(
        "{}: no {what} column `{name}`; columns: {} (set data.{what}_column)",
        path.display(),
        found.join(", ")
    ))
}

fn read_csv(path: &Path, cols: &Columns, delimiter: u8) -> Result<Vec<(String, String)>> {
    let bad = |e: csv::Error| Error::Invalid(format!("{}: {e}", path.display()));
    let mut reader = csv::ReaderBuilder::new().delimiter(delimiter).from_path(path).map_err(bad)?;
    let headers: Vec<String> = reader.headers().map_err(bad)?.iter().map(str::to_string).collect();
    let find = |what: &str, name: &str| {
        headers.iter().position(|h| h == name).ok_or_else(|| missing_column(path, what, name, &headers))
    };
    let (ti, li) = (find("text", &cols.text)?, find("label", &cols.label)?);
    let mut rows = Vec::new();
    for record in reader.records() {
        let r = record.map_err(bad)?;
        rows.push((r.get(ti).unwrap_or("").to_string(), r.get(li).unwrap_or("").trim().to_string()));
    }
    Ok(rows)
}

fn read_jsonl(path: &Path, cols: &Columns) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| Error::Invalid(format!("{} line {}: {e}", path.display(), n + 1)))?;
        let obj = v
            .as_object()
            .ok_or_else(|| Error::Invalid(format!("{} line {}: not a JSON object", path.display(), n + 1)))?;
        let field = |what: &str, name: &str| -> Result<String> {
            match obj.get(name) {
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                Some(serde_json::Value::Null) | None if what == "text" && obj.contains_key(name) => Ok(String::new()),
                Some(other) if what == "label" => Ok(other.to_string()),
                Some(_) => Err(Error::Invalid(format!(
                    "{} line {}: the {what} column `{name}` is not a string",
                    path.display(),
                    n + 1
                ))),
                None => Err(missing_column(path, what, name, &obj.keys().cloned().collect::<Vec<_>>())),
            }
        };
        rows.push((field("text", &cols.text)?, field("label", &cols.label)?.trim().to_string()));
    }
    Ok(rows)
}

/// Maps label strings to class ids. With `classes` (the model's `id2label`), a label must be one
/// of them (or a class id); without, the distinct labels of `rows` are the classes.
pub fn label_rows(rows: Vec<(String, String)>, classes: Option<&[String]>, origin: &Path) -> Result<LabelledSet> {
    let classes: Vec<String> = match classes {
        Some(c) if !c.is_empty() => c.to_vec(),
        _ => distinct_labels(rows.iter().map(|(_, l)| l)),
    };
    let mut examples = Vec::with_capacity(rows.len());
    for (i, (text, label)) in rows.into_iter().enumerate() {
        let id = classes.iter().position(|c| *c == label).or_else(|| {
            label
                .parse::<usize>()
                .ok()
                .filter(|&k| k < classes.len() && !classes.iter().any(|c| c.parse::<usize>().is_ok()))
        });
        let id = id.ok_or_else(|| {
            Error::Invalid(format!(
                "{} row {}: unknown label `{label}`; the model's classes are: {}",
                origin.display(),
                i + 1,
                classes.join(", ")
            ))
        })?;
        examples.push(Example { text, label: id });
    }
    Ok(LabelledSet { classes, examples })
}

impl LabelledSet {
    /// Examples per class.
    pub fn counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.classes.len()];
        for e in &self.examples {
            c[e.label] += 1;
        }
        c
    }

    /// Fails when a class has no example (a training set must show every class).
    pub fn require_every_class(&self, origin: &Path) -> Result<()> {
        if self.classes.len() < 2 {
            return Err(Error::Invalid(format!(
                "{}: classification needs at least 2 classes, found {}",
                origin.display(),
                self.classes.len()
            )));
        }
        let empty: Vec<&str> =
            self.counts().iter().zip(&self.classes).filter(|(n, _)| **n == 0).map(|(_, c)| c.as_str()).collect();
        if !empty.is_empty() {
            return Err(Error::Invalid(format!(
                "{}: class {} has no examples; every class of the model needs training data",
                origin.display(),
                empty.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")
            )));
        }
        Ok(())
    }
}

/// The distinct labels, sorted: by value when all are integers (`2` before `10`), else as text.
fn distinct_labels<'a>(labels: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut c: Vec<String> = labels.cloned().collect();
    c.sort();
    c.dedup();
    if c.iter().all(|l| l.parse::<i64>().is_ok()) {
        c.sort_by_key(|l| l.parse::<i64>().unwrap_or(0));
    }
    c
}

/// The classes a data file itself names for its label column: the `ClassLabel` names in a
/// Parquet file's `datasets` metadata; `None` for other files and formats.
pub fn declared_classes(path: &Path, cols: &Columns) -> Result<Option<Vec<String>>> {
    let parquet = path.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("parquet"));
    if parquet {
        class_names(path, &cols.label)
    } else {
        Ok(None)
    }
}

/// Reads and labels a data file.
pub fn load_labelled(path: &Path, cols: &Columns, classes: Option<&[String]>) -> Result<LabelledSet> {
    load_labelled_files(&[path.to_path_buf()], cols, classes)
}

/// Reads and labels data files, their rows one after the other. The classes are `classes` (the
/// model's `id2label`) when given, else the class names the files declare (which must agree),
/// else the distinct labels of all the files.
pub fn load_labelled_files(paths: &[PathBuf], cols: &Columns, classes: Option<&[String]>) -> Result<LabelledSet> {
    let tables = paths.iter().map(|p| Ok((p, read_rows(p, cols)?))).collect::<Result<Vec<_>>>()?;
    let classes = match classes {
        Some(c) if !c.is_empty() => c.to_vec(),
        _ => {
            let mut declared: Option<(&PathBuf, Vec<String>)> = None;
            for p in paths {
                match (declared_classes(p, cols)?, &declared) {
                    (Some(names), Some((first, seen))) if names != *seen => {
                        return Err(Error::Invalid(format!(
                            "{} and {} name different classes for `{}` ({} against {}); use files of one dataset",
                            first.display(),
                            p.display(),
                            cols.label,
                            seen.join(", "),
                            names.join(", ")
                        )))
                    }
                    (Some(names), None) => declared = Some((p, names)),
                    _ => {}
                }
            }
            match declared {
                Some((_, names)) => names,
                None => distinct_labels(tables.iter().flat_map(|(_, rows)| rows.iter().map(|(_, l)| l))),
            }
        }
    };
    let mut examples = Vec::new();
    for (path, rows) in tables {
        examples.extend(label_rows(rows, Some(&classes), path)?.examples);
    }
    Ok(LabelledSet { classes, examples })
}
