//! `hf://` URIs of files in hub repositories, the syntax `huggingface_hub` (`HfFileSystem`,
//! `parse_hf_uri`) uses: `hf://[TYPE/]ORG/NAME[@REVISION]/PATH`, where TYPE is `datasets` or
//! `models` (the default). REVISION is a branch, tag or commit, URL-encoded where it holds a `/`,
//! except `refs/convert/NAME` and `refs/pr/N`, which may be written as they are. PATH may be a glob.

use super::fetch::{fetch, HubRepo};
use super::files::FileSet;
use super::{DownloadProgress, HubSettings, RepoKind};
use crate::engine::{Error, Result};
use std::path::PathBuf;

const SCHEME: &str = "hf://";

/// True when `s` is written as an `hf://` URI.
pub fn is_hf_uri(s: &str) -> bool {
    s.starts_with(SCHEME)
}

/// A file, or a glob of files, in a hub repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HfUri {
    pub repo: HubRepo,
    /// The path in the repository, e.g. `data/train-00000-of-00001.parquet` or `data/train-*`.
    pub path: String,
}

impl HfUri {
    /// Parses `hf://[datasets/|models/]ORG/NAME[@REVISION]/PATH`.
    pub fn parse(uri: &str) -> Result<Self> {
        let bad = |detail: &str| {
            Error::Invalid(format!(
                "`{uri}` is not a usable hf:// URI: {detail}; expected \
                 `hf://datasets/ORG/NAME[@REVISION]/PATH`, e.g. `hf://datasets/stanfordnlp/imdb/plain_text/train-00000-of-00001.parquet`"
            ))
        };
        let body = uri.strip_prefix(SCHEME).ok_or_else(|| bad("it does not start with hf://"))?;
        let (first, rest) = body.split_once('/').unwrap_or((body, ""));
        let (kind, location) = match first {
            "datasets" => (RepoKind::Dataset, rest),
            "models" => (RepoKind::Model, rest),
            "spaces" | "kernels" | "buckets" => return Err(bad(&format!("files of {first} are not supported here"))),
            "dataset" | "model" => return Err(bad(&format!("the type is plural: `{first}s/`"))),
            _ => (RepoKind::Model, body),
        };
        let location = location.trim_matches('/');
        let (id, revision, path) = match location.find('@') {
            Some(at) if location[..at].matches('/').count() <= 1 => {
                let (id, rev_and_path) = (&location[..at], &location[at + 1..]);
                let (revision, path) = split_revision(rev_and_path);
                (
                    id.to_string(),
                    Some(percent_decode(revision).ok_or_else(|| bad("bad %-escape in the revision"))?),
                    path,
                )
            }
            _ => {
                let mut parts = location.splitn(3, '/');
                let (org, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                (format!("{org}/{name}"), None, parts.next().unwrap_or(""))
            }
        };
        let parts: Vec<&str> = id.split('/').collect();
        if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) {
            return Err(bad(&format!("the repository id must be `ORG/NAME`, not `{id}`")));
        }
        if revision.as_deref() == Some("") {
            return Err(bad("the revision after `@` is empty"));
        }
        if path.is_empty() {
            return Err(bad("it names the repository, not a file in it"));
        }
        Ok(HfUri { repo: HubRepo { kind, id, revision }, path: path.to_string() })
    }

    /// Whether the path is a glob (`*`, `?` or `[`).
    pub fn is_glob(&self) -> bool {
        self.path.contains(['*', '?', '['])
    }
}

/// Splits `REVISION/PATH` after the `@`: `refs/convert/NAME` and `refs/pr/N` are whole revisions,
/// as in `huggingface_hub`; otherwise the revision ends at the first `/`.
fn split_revision(s: &str) -> (&str, &str) {
    let special = |prefix: &str, ok: fn(char) -> bool| {
        let rest = s.strip_prefix(prefix)?;
        let len = rest.find(|c: char| !ok(c)).unwrap_or(rest.len());
        (len > 0).then(|| prefix.len() + len)
    };
    let word = |c: char| c.is_alphanumeric() || "_.-".contains(c);
    let end = special("refs/convert/", word).or_else(|| special("refs/pr/", |c| c.is_ascii_digit()));
    let end = end.or_else(|| s.find('/')).unwrap_or(s.len());
    (&s[..end], s[end..].trim_start_matches('/'))
}

/// Decodes `%XX` escapes (a revision such as `refs%2Fpr%2F1`); `None` for a malformed one.
fn percent_decode(s: &str) -> Option<String> {
    let (bytes, mut out, mut i) = (s.as_bytes(), Vec::new(), 0);
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(s.get(i + 1..i + 3)?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Makes the file(s) an `hf://` URI names available in the hub cache (see [`fetch`]: cache first,
/// `HF_HUB_OFFLINE` honoured) and returns their local paths, sorted when the URI is a glob.
pub fn fetch_uri(settings: &HubSettings, uri: &str, progress: &dyn Fn(&DownloadProgress)) -> Result<Vec<PathBuf>> {
    let parsed = HfUri::parse(uri)?;
    let wanted = if parsed.is_glob() {
        FileSet::Matching(parsed.path.clone())
    } else {
        FileSet::Files(vec![parsed.path.clone()])
    };
    let snapshot = fetch(settings, &parsed.repo, &wanted, progress)?;
    Ok(snapshot.files.iter().map(|f| snapshot.path(f)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(uri: &str) -> (RepoKind, String, Option<String>, String) {
        let u = HfUri::parse(uri).unwrap_or_else(|e| panic!("{uri}: {e}"));
        (u.repo.kind, u.repo.id, u.repo.revision, u.path)
    }

    #[test]
    fn the_huggingface_hub_syntax() {
        let d = RepoKind::Dataset;
        let (id, file) = ("org/name".to_string(), "data/train.parquet".to_string());
        assert_eq!(parse("hf://datasets/org/name/data/train.parquet"), (d, id.clone(), None, file.clone()));
        assert_eq!(parse("hf://datasets/org/name@v1.0/data/train.parquet"), (d, id.clone(), Some("v1.0".into()), file));
        let pr = parse("hf://datasets/org/name@refs/pr/3/train.json");
        assert_eq!(pr, (d, id.clone(), Some("refs/pr/3".into()), "train.json".into()));
        let converted = parse("hf://datasets/org/name@refs/convert/parquet/default/train/0000.parquet");
        assert_eq!(converted.2.as_deref(), Some("refs/convert/parquet"));
        assert_eq!(converted.3, "default/train/0000.parquet");
        let escaped = parse("hf://datasets/org/name@refs%2Fconvert%2Fparquet/default/train/0000.parquet");
        assert_eq!(escaped, converted);
        // An `@` past ORG/NAME belongs to the file name.
        assert_eq!(parse("hf://datasets/org/name/file@1.csv"), (d, id.clone(), None, "file@1.csv".into()));
        assert_eq!(parse("hf://org/name/x.csv"), (RepoKind::Model, id.clone(), None, "x.csv".into()));
        assert_eq!(parse("hf://models/org/name/x.csv").0, RepoKind::Model);
        assert!(HfUri::parse("hf://datasets/org/name/data/train-*.parquet").unwrap().is_glob());
        assert!(!HfUri::parse("hf://datasets/org/name/train.csv").unwrap().is_glob());
        for bad in [
            "hf://datasets/org/name",
            "hf://datasets/org/name@main",
            "hf://datasets/org/name@/x.csv",
            "hf://datasets/org",
            "hf://dataset/org/name/x.csv",
            "hf://spaces/org/name/app.py",
            "hf://datasets/org/name@%zz/x.csv",
            "https://huggingface.co/datasets/org/name",
        ] {
            let e = HfUri::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains("hf://datasets/ORG/NAME"), "{e}");
        }
    }
}
