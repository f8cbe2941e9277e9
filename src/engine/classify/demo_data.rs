//! The offline demo's data set: "which novel is this passage from?", built deterministically from
//! the public-domain novels in `assets/corpus/train/`. Each novel is cut into passages of a fixed
//! number of words; the first 85% of a novel gives training passages and the last 15% held-out
//! ones (no passage of the eval set neighbours one of the training set), taken at an even stride.
//! `tests/engine/classify_demo_data.rs` checks that the committed CSV files are exactly this output.

use crate::engine::fsutil::write_atomic;
use crate::engine::{Error, Result};
use std::path::{Path, PathBuf};

/// Shape of the demo set.
#[derive(Clone, Copy, Debug)]
pub struct DemoSpec {
    pub words: usize,
    pub train_per_class: usize,
    pub eval_per_class: usize,
    /// Share of each novel (its end) kept for evaluation.
    pub held_out: f64,
}

impl Default for DemoSpec {
    fn default() -> Self {
        Self { words: 32, train_per_class: 2500, eval_per_class: 200, held_out: 0.15 }
    }
}

/// `(text, label)` rows of the training and the eval split.
pub type Rows = Vec<(String, String)>;

/// `count` items at an even stride over `items` (all of them when there are fewer).
fn strided<T: Clone>(items: &[T], count: usize) -> Vec<T> {
    if items.len() <= count {
        return items.to_vec();
    }
    (0..count).map(|i| items[i * items.len() / count].clone()).collect()
}

/// Passages of one novel: runs of `words` words; headings (CHAPTER, VOLUME) are dropped.
fn passages(text: &str, words: usize) -> Vec<String> {
    let tokens: Vec<&str> = text.split_whitespace().collect();
    tokens
        .chunks(words)
        .filter(|c| c.len() == words && !c.iter().any(|w| *w == "CHAPTER" || *w == "VOLUME"))
        .map(|c| c.join(" "))
        .collect()
}

/// Builds both splits from `files` (label = file stem), in file order.
pub fn build(files: &[PathBuf], spec: &DemoSpec) -> Result<(Rows, Rows)> {
    let (mut train, mut eval) = (Vec::new(), Vec::new());
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|e| Error::io(format!("reading {}", f.display()), e))?;
        let label = f.file_stem().and_then(|s| s.to_str()).unwrap_or("unknown").to_string();
        let all = passages(&text, spec.words);
        let cut = ((all.len() as f64) * (1.0 - spec.held_out)) as usize;
        if cut == 0 || cut >= all.len() {
            return Err(Error::Invalid(format!("{}: too short for a demo split", f.display())));
        }
        train.extend(strided(&all[..cut], spec.train_per_class).into_iter().map(|p| (p, label.clone())));
        eval.extend(strided(&all[cut..], spec.eval_per_class).into_iter().map(|p| (p, label.clone())));
    }
    Ok((train, eval))
}

/// CSV text with a `text,label` header.
pub fn to_csv(rows: &Rows) -> Result<Vec<u8>> {
    let bad = |e: csv::Error| Error::Invalid(format!("writing CSV: {e}"));
    let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::Any(b'\n')).from_writer(Vec::new());
    w.write_record(["text", "label"]).map_err(bad)?;
    for (text, label) in rows {
        w.write_record([text, label]).map_err(bad)?;
    }
    w.into_inner().map_err(|e| Error::Invalid(format!("writing CSV: {e}")))
}

/// Writes `novels-train.csv` and `novels-eval.csv` into `dir`.
pub fn write(dir: &Path, train: &Rows, eval: &Rows) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    write_atomic(&dir.join("novels-train.csv"), &to_csv(train)?)?;
    write_atomic(&dir.join("novels-eval.csv"), &to_csv(eval)?)
}
