//! Listing the models already in the local hub cache.

use super::HubSettings;
use crate::engine::{Error, Result};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// A model found in the local hub cache.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CachedModel {
    pub id: String,
    /// The commit hashes with a snapshot folder, newest first.
    pub revisions: Vec<String>,
    /// The snapshot `refs/main` points to, or else the newest one.
    pub snapshot: PathBuf,
    /// The repo-relative files present in `snapshot`, sorted.
    pub files: Vec<String>,
    /// Disk space of the model: the files of all its snapshots, following the symlinks into
    /// `blobs/` and counting each blob once.
    pub bytes: u64,
    /// Whether `snapshot` holds a `.safetensors` file.
    pub has_safetensors: bool,
    /// The `.gguf` files in `snapshot`.
    pub gguf_files: Vec<String>,
}

/// The models in the hub cache, sorted by id. A missing cache folder is an empty cache; folders
/// without any snapshot (nothing downloaded yet) are left out.
pub fn list_cache(settings: &HubSettings) -> Result<Vec<CachedModel>> {
    let cache = &settings.cache_dir;
    let entries = match std::fs::read_dir(cache) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("reading the hub cache {}", cache.display()), e)),
    };
    let mut models = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("reading the hub cache {}", cache.display()), e))?;
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("models--")) else {
            continue;
        };
        if entry.path().is_dir() {
            models.extend(scan_model(&entry.path(), &rest.replace("--", "/")));
        }
    }
    models.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(models)
}

fn scan_model(dir: &Path, id: &str) -> Option<CachedModel> {
    let mut snapshots: Vec<(SystemTime, String)> = std::fs::read_dir(dir.join("snapshots"))
        .ok()?
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| {
            let modified = e.metadata().and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH);
            Some((modified, e.file_name().into_string().ok()?))
        })
        .collect();
    snapshots.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let revisions: Vec<String> = snapshots.into_iter().map(|(_, name)| name).collect();
    let main = std::fs::read_to_string(dir.join("refs").join("main")).ok();
    let chosen =
        main.map(|m| m.trim().to_string()).filter(|m| revisions.contains(m)).or_else(|| revisions.first().cloned())?;
    let snapshot = dir.join("snapshots").join(&chosen);

    let mut files = Vec::new();
    walk(&snapshot, "", &mut files);
    files.sort();
    let mut blobs = HashSet::new();
    let mut bytes = 0;
    for rev in &revisions {
        let mut found = Vec::new();
        walk(&dir.join("snapshots").join(rev), "", &mut found);
        for (_, path, len) in found {
            if blobs.insert(std::fs::canonicalize(&path).unwrap_or(path)) {
                bytes += len;
            }
        }
    }
    let files: Vec<String> = files.into_iter().map(|(name, _, _)| name).collect();
    let has_ext = |f: &str, ext: &str| f.to_ascii_lowercase().ends_with(ext);
    Some(CachedModel {
        id: id.to_string(),
        revisions,
        snapshot,
        has_safetensors: files.iter().any(|f| has_ext(f, ".safetensors")),
        gguf_files: files.iter().filter(|f| has_ext(f, ".gguf")).cloned().collect(),
        files,
        bytes,
    })
}

/// Collects `(repo-relative name, path, size)` of the files under `dir`, following file
/// symlinks (a broken one is skipped) but not directory symlinks.
pub(super) fn walk(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf, u64)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(|n| format!("{prefix}{n}")) else {
            continue;
        };
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => walk(&path, &format!("{name}/"), out),
            Ok(_) => {
                if let Ok(meta) = std::fs::metadata(&path) {
                    if meta.is_file() {
                        out.push((name, path, meta.len()));
                    }
                }
            }
            Err(_) => {}
        }
    }
}
