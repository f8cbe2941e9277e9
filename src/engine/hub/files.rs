//! Which files of a repository a fetch wants ([`FileSet`]), and what that comes to given the
//! files a repository has on the hub or in a cached snapshot: one plan for both.

use super::cache::walk;
use super::check_file_name;
use crate::engine::{Error, Result};
use std::collections::BTreeSet;
use std::path::Path;

const CONFIG: &str = "config.json";
const WEIGHTS: &str = "model.safetensors";
pub(super) const INDEX: &str = "model.safetensors.index.json";
const TOKENIZER: &str = "tokenizer.json";
/// Fetched with a safetensors model when the repository has them.
const HF_OPTIONAL: [&str; 4] =
    [TOKENIZER, "tokenizer_config.json", "generation_config.json", "special_tokens_map.json"];
/// Fetched with a GGUF file when the repository has them.
const GGUF_OPTIONAL: [&str; 2] = [TOKENIZER, CONFIG];

/// Which files of a repository to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileSet {
    /// `config.json` and safetensors weights (`model.safetensors`, or
    /// `model.safetensors.index.json` and every shard it names); also the tokenizer and
    /// generation files when the repository has them.
    HfModel,
    /// One GGUF file, plus `tokenizer.json` and `config.json` when the repository has them.
    Gguf(String),
    /// These repo-relative files (e.g. a dataset's data files), all required.
    Files(Vec<String>),
    /// The files whose repo-relative names match a glob, at least one: `*`, `?` and `[…]` stay
    /// within a folder, `**` spans folders. Online, the glob is matched against the hub's file list
    /// (one request even when every match is cached); offline, against the cached snapshot.
    Matching(String),
}

impl FileSet {
    /// Checks that every name or pattern stays inside the repository `id` and is well-formed.
    pub(super) fn check(&self, id: &str) -> Result<()> {
        match self {
            FileSet::HfModel => Ok(()),
            FileSet::Gguf(name) => check_file_name(id, name),
            FileSet::Files(names) if names.is_empty() => {
                Err(Error::Invalid(format!("no file of `{id}` was asked for")))
            }
            FileSet::Files(names) => names.iter().try_for_each(|n| check_file_name(id, n)),
            FileSet::Matching(pattern) => {
                check_file_name(id, pattern)?;
                glob::Pattern::new(pattern)
                    .map(drop)
                    .map_err(|e| Error::Invalid(format!("`{pattern}` is not a valid file pattern in `{id}`: {e}")))
            }
        }
    }
}

/// The files a [`FileSet`] comes to, given what a repository (on the hub or in a snapshot) has.
pub(super) enum Plan {
    /// Required files first, then the optional ones present.
    Files(Vec<String>),
    /// A required file is not there; the text says which (`` `config.json` ``, …).
    Lacks(String),
}

/// What a repository has, to plan a [`FileSet`] against.
pub(super) struct Has<'a> {
    /// Whether a repo-relative file exists.
    pub file: &'a dyn Fn(&str) -> bool,
    /// All its files (for a glob).
    pub names: &'a dyn Fn() -> Vec<String>,
    /// The shard files named by its `model.safetensors.index.json`.
    pub shards: &'a dyn Fn() -> Result<Vec<String>>,
}

pub(super) fn plan(wanted: &FileSet, has: &Has) -> Result<Plan> {
    let (required, optional): (Vec<String>, &[&str]) = match wanted {
        FileSet::HfModel => {
            let mut required = vec![CONFIG.to_string()];
            if (has.file)(WEIGHTS) {
                required.push(WEIGHTS.to_string());
            } else if (has.file)(INDEX) {
                required.push(INDEX.to_string());
                required.extend((has.shards)()?);
            } else {
                let what = "safetensors weights (`model.safetensors`, or \
                            `model.safetensors.index.json` and its shards)";
                return Ok(Plan::Lacks(what.into()));
            }
            (required, &HF_OPTIONAL)
        }
        FileSet::Gguf(name) => (vec![name.clone()], &GGUF_OPTIONAL),
        FileSet::Files(files) => (files.clone(), &[]),
        FileSet::Matching(pattern) => {
            let matched = matching(pattern, (has.names)());
            if matched.is_empty() {
                return Ok(Plan::Lacks(format!("file matching `{pattern}`")));
            }
            (matched, &[])
        }
    };
    if let Some(absent) = required.iter().find(|f| !(has.file)(f)) {
        return Ok(Plan::Lacks(format!("`{absent}`")));
    }
    let mut files = required;
    for f in optional {
        if (has.file)(f) && !files.iter().any(|g| g == f) {
            files.push(f.to_string());
        }
    }
    Ok(Plan::Files(files))
}

/// The glob's options: a path separator is matched only by a literal `/` (or by `**`).
const GLOB: glob::MatchOptions =
    glob::MatchOptions { case_sensitive: true, require_literal_separator: true, require_literal_leading_dot: false };

/// The names that match `pattern`, sorted, each once.
fn matching(pattern: &str, names: Vec<String>) -> Vec<String> {
    let Ok(pattern) = glob::Pattern::new(pattern) else {
        return Vec::new();
    };
    let mut names: Vec<String> = names.into_iter().filter(|n| pattern.matches_with(n, GLOB)).collect();
    names.sort();
    names.dedup();
    names
}

/// The wanted files present in `dir`, required ones first; `None` when a required one is missing.
pub(super) fn present_files(id: &str, dir: &Path, wanted: &FileSet) -> Option<Vec<String>> {
    let names = || {
        let mut found = Vec::new();
        walk(dir, "", &mut found);
        found.into_iter().map(|(name, _, _)| name).collect()
    };
    let has = Has { file: &|f| dir.join(f).is_file(), names: &names, shards: &|| shard_names(id, &dir.join(INDEX)) };
    match plan(wanted, &has).ok()? {
        Plan::Files(files) => Some(files),
        Plan::Lacks(_) => None,
    }
}

/// The shard files named in a `model.safetensors.index.json`, sorted, each once.
pub(super) fn shard_names(id: &str, index: &Path) -> Result<Vec<String>> {
    let bad = |detail: String| Error::Invalid(format!("{} (of `{id}`): {detail}", index.display()));
    let text = std::fs::read_to_string(index).map_err(|e| Error::io(format!("reading {}", index.display()), e))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let map = json.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| bad("no `weight_map` object".into()))?;
    let mut shards = BTreeSet::new();
    for (tensor, file) in map {
        let file = file.as_str().ok_or_else(|| bad(format!("tensor `{tensor}` maps to a non-string")))?;
        check_file_name(id, file)?;
        shards.insert(file.to_string());
    }
    if shards.is_empty() {
        return Err(bad("the `weight_map` is empty".into()));
    }
    Ok(shards.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_stay_within_a_folder_unless_double_starred() {
        let names: Vec<String> =
            ["data/a.parquet", "data/sub/b.parquet", "c.parquet", "data/a.parquet"].map(String::from).to_vec();
        assert_eq!(matching("data/*.parquet", names.clone()), ["data/a.parquet"]);
        assert_eq!(matching("**/*.parquet", names.clone()), ["c.parquet", "data/a.parquet", "data/sub/b.parquet"]);
        assert_eq!(matching("data/**/b.parquet", names.clone()), ["data/sub/b.parquet"]);
        assert_eq!(matching("?.parquet", names.clone()), ["c.parquet"]);
        assert!(matching("x/*", names).is_empty());
        assert!(FileSet::Matching("data/[".into()).check("o/n").is_err());
        assert!(FileSet::Matching("../*".into()).check("o/n").is_err());
        assert!(FileSet::Files(vec![]).check("o/n").is_err());
    }
}
