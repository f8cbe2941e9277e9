//! The Hugging Face hub: settings from the environment, cache-first downloads, search, and
//! cache listing.
//!
//! The on-disk layout is the one `huggingface_hub` (Python) and `hf-hub` (Rust) share, so models
//! downloaded by either are found here and the other way round:
//!
//! ```text
//! <cache_dir>/models--ORG--NAME/
//!     refs/main                 the commit hash `main` pointed to when last fetched
//!     blobs/<etag>              file contents, named by their etag (sha256 for LFS files)
//!     snapshots/<commit>/FILE   symlinks into blobs/
//! ```
//!
//! Nothing here prints; download progress goes to a callback, and the token never appears in a
//! `Debug` output or an error message.

mod cache;
mod fetch;
mod progress;
mod search;
mod settings;

pub use cache::{list_cache, CachedModel};
pub use fetch::{fetch, FileSet, HubRepo, Snapshot};
pub use progress::{DownloadProgress, ProgressReporter, PROGRESS_INTERVAL};
pub use search::{search, ModelSummary};
pub use settings::{HubSettings, DEFAULT_ENDPOINT};

use crate::engine::{Error, Result};

/// Sent as the `User-Agent` of every request this module makes.
const USER_AGENT: &str = concat!("distill-tui/", env!("CARGO_PKG_VERSION"));

/// The cache folder name of a model repository: `org/name` → `models--org--name`.
fn repo_folder(id: &str) -> String {
    format!("models--{}", id.replace('/', "--"))
}

/// True for a full 40-hex-digit git commit hash (the form used for snapshot folders).
fn is_commit_hash(rev: &str) -> bool {
    rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Checks that `id` looks like a hub model id (`name` or `org/name`), so that it can never
/// name a path outside the cache.
fn check_id(id: &str) -> Result<()> {
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
        Err(Error::Invalid(format!(
            "`{id}` is not a hub model id; expected `NAME` or `ORG/NAME` \
             (letters, digits, `-`, `_`, `.`), e.g. `HuggingFaceTB/SmolLM2-135M`"
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
        assert!(check_id("gpt2").is_ok());
        assert!(check_id("HuggingFaceTB/SmolLM2-135M").is_ok());
        for bad in ["", "a/b/c", "../x", "a/..", "a--b/c", "a b", "/abs"] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
        assert!(check_file_name("x", "onnx/model.onnx").is_ok());
        for bad in ["", "/etc/passwd", "../x", "a/../../b", "a//b", "a\\b"] {
            assert!(check_file_name("x", bad).is_err(), "{bad}");
        }
        assert_eq!(repo_folder("org/name"), "models--org--name");
        assert!(is_commit_hash(&"a".repeat(40)));
        assert!(!is_commit_hash("main"));
        assert_eq!(scrub("x hf_abc y".into(), Some("hf_abc")), "x *** y");
    }
}
