//! The Hugging Face hub: settings from the environment, cache-first downloads of model and
//! dataset files (also named by `hf://` URIs), search, and cache listing.
//!
//! The on-disk layout is the one `huggingface_hub` (Python) and `hf-hub` (Rust) share, so files
//! downloaded by either are found here and the other way round:
//!
//! ```text
//! <cache_dir>/models--ORG--NAME/      (a dataset: datasets--ORG--NAME/)
//!     refs/main                 the commit hash `main` pointed to when last fetched
//!     blobs/<etag>              file contents, named by their etag (sha256 for LFS files)
//!     snapshots/<commit>/FILE   symlinks into blobs/
//! ```
//!
//! Nothing here prints; download progress goes to a callback, and the token never appears in a
//! `Debug` output or an error message.

mod cache;
mod fetch;
mod files;
mod progress;
mod search;
mod settings;
mod uri;

pub use cache::{list_cache, CachedModel};
pub use fetch::{fetch, HubRepo, Snapshot};
pub use files::FileSet;
pub use progress::{DownloadProgress, ProgressReporter, PROGRESS_INTERVAL};
pub use search::{search, ModelSummary};
pub use settings::{expand_home, HubSettings, DEFAULT_ENDPOINT};
pub use uri::{fetch_uri, is_hf_uri, HfUri};

use crate::engine::{Error, Result};

/// Sent as the `User-Agent` of every request this module makes.
const USER_AGENT: &str = concat!("distill-tui/", env!("CARGO_PKG_VERSION"));

/// The kind of a hub repository. Models and datasets live side by side in the cache and on the
/// hub, under different prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum RepoKind {
    Model,
    Dataset,
}

impl RepoKind {
    /// `models` or `datasets`: the prefix of cache folders, API routes and `hf://` URIs.
    pub fn plural(self) -> &'static str {
        match self {
            RepoKind::Model => "models",
            RepoKind::Dataset => "datasets",
        }
    }

    fn hf_hub(self) -> hf_hub::RepoType {
        match self {
            RepoKind::Model => hf_hub::RepoType::Model,
            RepoKind::Dataset => hf_hub::RepoType::Dataset,
        }
    }

    /// What to try when a repository of this kind is not in the cache (used in [`Error::NotInCache`]).
    pub(crate) fn cache_hint(self) -> &'static str {
        match self {
            RepoKind::Model => ", or check the id with `distill-tui cache`",
            RepoKind::Dataset => " (once fetched, its files stay in the cache for offline runs)",
        }
    }

    /// Where to look up a repository of this kind that the hub does not know (used in [`Error::NotOnHub`]).
    pub(crate) fn search_hint(self) -> &'static str {
        match self {
            RepoKind::Model => " (`distill-tui search WORDS` lists matching models)",
            RepoKind::Dataset => " (a dataset's page is https://huggingface.co/datasets/ORG/NAME)",
        }
    }
}

impl std::fmt::Display for RepoKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RepoKind::Model => "model",
            RepoKind::Dataset => "dataset",
        })
    }
}

/// The cache folder name of a repository: model `org/name` → `models--org--name`, dataset
/// `org/name` → `datasets--org--name`.
fn repo_folder(kind: RepoKind, id: &str) -> String {
    format!("{}--{}", kind.plural(), id.replace('/', "--"))
}

/// True for a full 40-hex-digit git commit hash (the form used for snapshot folders).
fn is_commit_hash(rev: &str) -> bool {
    rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Checks that `id` looks like a hub repository id (`name` or `org/name`), so that it can never
/// name a path outside the cache.
fn check_id(kind: RepoKind, id: &str) -> Result<()> {
    let part_ok = |p: &str| {
        !p.is_empty()
            && p != "."
            && !p.contains("..")
            && !p.contains("--")
            && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    let parts: Vec<&str> = id.split('/').collect();
    if parts.len() <= 2 && parts.iter().all(|p| part_ok(p)) {
        Ok(())
    } else {
        let example = match kind {
            RepoKind::Model => "HuggingFaceTB/SmolLM2-135M",
            RepoKind::Dataset => "stanfordnlp/imdb",
        };
        Err(Error::Invalid(format!(
            "`{id}` is not a hub {kind} id; expected `NAME` or `ORG/NAME` \
             (letters, digits, `-`, `_`, `.`), e.g. `{example}`"
        )))
    }
}

/// Checks that a repo-relative file name (from the user or from a shard index) stays inside
/// the snapshot folder.
fn check_file_name(id: &str, name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name.starts_with('/')
        || name.contains('\\')
        || name.split('/').any(|p| p.is_empty() || p == "." || p == "..");
    if bad {
        Err(Error::Invalid(format!(
            "`{name}` is not a valid file name in `{id}`; \
             expected a path relative to the repository"
        )))
    } else {
        Ok(())
    }
}

/// Replaces every occurrence of the token in `text` (defence in depth for error details).
fn scrub(text: String, token: Option<&str>) -> String {
    match token {
        Some(t) if !t.is_empty() && text.contains(t) => text.replace(t, "***"),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names() {
        assert!(check_id(RepoKind::Model, "gpt2").is_ok());
        assert!(check_id(RepoKind::Model, "HuggingFaceTB/SmolLM2-135M").is_ok());
        for bad in ["", "a/b/c", "../x", "a/..", "a--b/c", "a b", "/abs"] {
            assert!(check_id(RepoKind::Model, bad).is_err(), "{bad}");
        }
        let e = check_id(RepoKind::Dataset, "a/b/c").unwrap_err().to_string();
        assert!(e.contains("hub dataset id"), "{e}");
        assert!(check_file_name("x", "onnx/model.onnx").is_ok());
        for bad in ["", "/etc/passwd", "../x", "a/../../b", "a//b", "a\\b"] {
            assert!(check_file_name("x", bad).is_err(), "{bad}");
        }
        assert_eq!(repo_folder(RepoKind::Model, "org/name"), "models--org--name");
        assert_eq!(repo_folder(RepoKind::Dataset, "org/name"), "datasets--org--name");
        assert!(is_commit_hash(&"a".repeat(40)));
        assert!(!is_commit_hash("main"));
        assert_eq!(scrub("x hf_abc y".into(), Some("hf_abc")), "x *** y");
    }
}
