//! `--resume` continues the run a folder holds only with the recipe it was trained with: a change
//! that alters what was trained (data, model, loss, sequence length, batch, learning rate...) is
//! refused naming each changed key; the keys that only say how long or how often (steps, eval and
//! checkpoint intervals) and what happens after training (`[quantize]`) may change.

use crate::engine::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// Keys (and whole sections) a resumed run may change: the length of the run, how often it
/// evaluates and checkpoints, and what is done after training.
pub const MAY_CHANGE: &[&str] = &[
    "distill.steps",
    "distill.eval_every",
    "distill.checkpoint_every",
    "finetune.steps",
    "finetune.eval_every",
    "finetune.checkpoint_every",
    "data.eval_tokens",
    "quantize",
    "output",
    "provenance",
    "expected",
];

/// Refuses `current` (the recipe about to resume, as TOML) when it differs from the recipe the run
/// in `out` recorded (`out/recipe.toml`) in a key outside [`MAY_CHANGE`]. No recorded recipe: nothing
/// to compare (a run from before recipes were recorded).
pub fn check_unchanged(out: &Path, current: &str) -> Result<()> {
    let Ok(recorded) = std::fs::read_to_string(out.join("recipe.toml")) else { return Ok(()) };
    let (before, now) = (flatten_text(&recorded)?, flatten_text(current)?);
    let keys: std::collections::BTreeSet<&String> = before.keys().chain(now.keys()).collect();
    let none = "(absent)".to_string();
    let changed: Vec<String> = keys
        .into_iter()
        .filter(|k| !MAY_CHANGE.iter().any(|m| *k == m || k.starts_with(&format!("{m}."))))
        .filter(|k| before.get(*k) != now.get(*k))
        .map(|k| format!("{k}: {} → {}", before.get(k).unwrap_or(&none), now.get(k).unwrap_or(&none)))
        .collect();
    if changed.is_empty() {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "--resume: the recipe changed what {} was trained with ({}); restore those values, or start a new run in another output.dir (only steps, eval/checkpoint intervals, eval_tokens and [quantize] may change on resume)",
        out.display(),
        changed.join("; ")
    )))
}

fn flatten_text(text: &str) -> Result<BTreeMap<String, String>> {
    let table: toml::Table =
        toml::from_str(text).map_err(|e| Error::Invalid(format!("recorded recipe: {}", e.message())))?;
    let mut out = BTreeMap::new();
    flatten("", &toml::Value::Table(table), &mut out);
    Ok(out)
}

fn flatten(prefix: &str, value: &toml::Value, out: &mut BTreeMap<String, String>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        // Integers and floats compare by value: `temperature = 1` and `1.0` are the same recipe.
        toml::Value::Integer(i) => {
            out.insert(prefix.into(), format!("{}", *i as f64));
        }
        toml::Value::Float(f) => {
            out.insert(prefix.into(), format!("{f}"));
        }
        other => {
            out.insert(prefix.into(), other.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_seq_len_is_named_and_more_steps_are_allowed() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("recipe.toml"), "[data]\nseq_len = 128\n[distill]\nsteps = 10\n").unwrap();
        check_unchanged(tmp.path(), "[data]\nseq_len = 128\n[distill]\nsteps = 40\neval_every = 5\n").unwrap();
        let e = check_unchanged(tmp.path(), "[data]\nseq_len = 256\n[distill]\nsteps = 10\n").unwrap_err().to_string();
        assert!(e.contains("data.seq_len: 128 → 256"), "{e}");
        let e = check_unchanged(tmp.path(), "[data]\nseq_len = 128\n[distill]\nsteps = 10\nlr = 0.1\n").unwrap_err();
        assert!(e.to_string().contains("distill.lr: (absent) → 0.1"), "{e}");
    }
}
