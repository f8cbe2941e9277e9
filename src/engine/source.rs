//! Model sources, one resolver: a hub id (`org/name`, `org/name@revision`), a hub GGUF
//! (`org/name:file.gguf`), a local Hugging Face folder, or a local `.gguf` file → files on disk.

use crate::engine::hub::{self, expand_home, DownloadProgress, FileSet, HubRepo, HubSettings};
use crate::engine::{Error, Result};
use std::path::{Path, PathBuf};

/// What the user typed, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSpec {
    Hub { id: String, revision: Option<String>, gguf: Option<String> },
    Folder(PathBuf),
    GgufFile(PathBuf),
}

impl ModelSpec {
    /// Parses a model argument. Existing paths win over hub ids; `./x`, `/x`, `~/x` are always paths
    /// (`~` is the folder `home`).
    pub fn parse(spec: &str, home: &Path) -> Result<Self> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Err(Error::Invalid(
                "empty model name; give a hub id like `org/name`, a folder or a .gguf file".into(),
            ));
        }
        let expanded = expand_home(spec, home);
        let path = expanded.as_path();
        let looks_local = spec.starts_with('.') || spec.starts_with('/') || spec.starts_with('~');
        if path.is_dir() {
            return Ok(Self::Folder(path.to_path_buf()));
        }
        if path.is_file() {
            if is_gguf_name(spec) {
                return Ok(Self::GgufFile(path.to_path_buf()));
            }
            if path.file_name().is_some_and(|n| n == "config.json") {
                return Ok(Self::Folder(path.parent().unwrap_or(Path::new(".")).to_path_buf()));
            }
            return Err(Error::BadSource {
                path: path.into(),
                detail: "a model is a folder with config.json, or a .gguf file".into(),
            });
        }
        if looks_local || (is_gguf_name(spec) && !spec.contains(':')) {
            return Err(Error::BadSource { path: path.into(), detail: "no such file or folder".into() });
        }
        let (rest, gguf) = match spec.split_once(':') {
            Some((r, f)) if is_gguf_name(f) => (r, Some(f.to_string())),
            Some((_, f)) => {
                return Err(Error::Invalid(format!(
                    "`{spec}`: after `:` a hub spec names a .gguf file in the repo, got `{f}`"
                )))
            }
            None => (spec, None),
        };
        let (id, revision) = match rest.split_once('@') {
            Some((id, rev)) if !rev.is_empty() => (id, Some(rev.to_string())),
            Some(_) => return Err(Error::Invalid(format!("`{spec}`: empty revision after `@`"))),
            None => (rest, None),
        };
        let valid = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        let parts: Vec<&str> = id.split('/').collect();
        if parts.len() > 2 || !parts.iter().all(|p| valid(p)) {
            return Err(Error::Invalid(format!(
                "`{spec}` is neither an existing path nor a hub id (`org/name`, `org/name@revision`, `org/name:file.gguf`)"
            )));
        }
        Ok(Self::Hub { id: id.to_string(), revision, gguf })
    }
}

fn is_gguf_name(s: &str) -> bool {
    s.to_ascii_lowercase().ends_with(".gguf")
}

/// The on-disk layout of a resolved model.
#[derive(Clone, Debug)]
pub enum ModelFiles {
    /// A Hugging Face folder: config.json and one or more safetensors shards.
    Hf { dir: PathBuf, config: PathBuf, weights: Vec<PathBuf> },
    /// A GGUF file (config and vocabulary inside), with config.json beside it when the repo has one.
    Gguf { file: PathBuf },
}

/// A model source resolved to local files.
#[derive(Clone, Debug)]
pub struct ResolvedModel {
    /// The spec as the user wrote it.
    pub spec: String,
    pub files: ModelFiles,
    pub tokenizer: Option<PathBuf>,
    pub hub: HubRef,
}

/// Where on the hub a model came from: both absent for a local folder or file.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct HubRef {
    /// Hub id, when it came from the hub.
    pub hub_id: Option<String>,
    /// Commit hash of the hub snapshot.
    pub revision: Option<String>,
}

impl HubRef {
    pub fn new(id: impl Into<String>, revision: impl Into<String>) -> Self {
        Self { hub_id: Some(id.into()), revision: Some(revision.into()) }
    }
}

impl ResolvedModel {
    /// The folder or file a user would open to look at the model.
    pub fn path(&self) -> &Path {
        match &self.files {
            ModelFiles::Hf { dir, .. } => dir,
            ModelFiles::Gguf { file } => file,
        }
    }

    /// Files holding the weights.
    pub fn weight_files(&self) -> Vec<PathBuf> {
        match &self.files {
            ModelFiles::Hf { weights, .. } => weights.clone(),
            ModelFiles::Gguf { file } => vec![file.clone()],
        }
    }

    /// Every file a load reads: weights, config and tokenizer (what no command may write over).
    pub fn input_files(&self) -> Vec<PathBuf> {
        let mut files = self.weight_files();
        if let ModelFiles::Hf { config, .. } = &self.files {
            files.push(config.clone());
        }
        files.extend(self.tokenizer.clone());
        files.push(self.path().to_path_buf());
        files
    }

    /// Total bytes of the weight files.
    pub fn weight_bytes(&self) -> u64 {
        self.weight_files().iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum()
    }

    /// A short name for display: the hub id or the last path component.
    pub fn display_name(&self) -> String {
        self.hub.hub_id.clone().unwrap_or_else(|| {
            self.path().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| self.spec.clone())
        })
    }
}

/// Resolves a model argument to local files, downloading from the hub when needed (cache first).
pub fn resolve(spec: &str, settings: &HubSettings, progress: &dyn Fn(&DownloadProgress)) -> Result<ResolvedModel> {
    match ModelSpec::parse(spec, &settings.home)? {
        ModelSpec::Folder(dir) => resolve_folder(spec, &dir, HubRef::default()),
        ModelSpec::GgufFile(file) => {
            let tokenizer = file.parent().map(|d| d.join("tokenizer.json")).filter(|p| p.is_file());
            Ok(ResolvedModel { spec: spec.into(), files: ModelFiles::Gguf { file }, tokenizer, hub: HubRef::default() })
        }
        ModelSpec::Hub { id, revision, gguf } => {
            let repo = HubRepo { revision, ..HubRepo::new(id.clone()) };
            let wanted = match &gguf {
                Some(f) => FileSet::Gguf(f.clone()),
                None => FileSet::HfModel,
            };
            let snap = hub::fetch(settings, &repo, &wanted, progress)?;
            match gguf {
                Some(f) => {
                    let tokenizer = Some(snap.dir.join("tokenizer.json")).filter(|p| p.is_file());
                    Ok(ResolvedModel {
                        spec: spec.into(),
                        files: ModelFiles::Gguf { file: snap.dir.join(f) },
                        tokenizer,
                        hub: HubRef::new(id, snap.revision),
                    })
                }
                None => resolve_folder(spec, &snap.dir, HubRef::new(id, snap.revision)),
            }
        }
    }
}

/// Resolves a Hugging Face layout folder: config.json plus `model.safetensors` or a sharded index.
pub fn resolve_folder(spec: &str, dir: &Path, hub: HubRef) -> Result<ResolvedModel> {
    let config = dir.join("config.json");
    if !config.is_file() {
        return Err(Error::BadSource { path: dir.into(), detail: "no config.json in this folder".into() });
    }
    let weights = weight_files(dir)?;
    let tokenizer = Some(dir.join("tokenizer.json")).filter(|p| p.is_file());
    Ok(ResolvedModel { spec: spec.into(), files: ModelFiles::Hf { dir: dir.into(), config, weights }, tokenizer, hub })
}

/// `model.safetensors`, or the shards listed by `model.safetensors.index.json`.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let shards = shard_names(&index)?;
        let paths: Vec<PathBuf> = shards.iter().map(|s| dir.join(s)).collect();
        if let Some(missing) = paths.iter().find(|p| !p.is_file()) {
            return Err(Error::BadSource {
                path: index,
                detail: format!("shard {} is missing; download the model again", missing.display()),
            });
        }
        return Ok(paths);
    }
    let detail = if dir.join("pytorch_model.bin").is_file() {
        "only pytorch_model.bin (pickle) found; convert it to safetensors first \
         (transformers: model.save_pretrained(dir, safe_serialization=True))"
    } else {
        "no model.safetensors or model.safetensors.index.json"
    };
    Err(Error::BadSource { path: dir.into(), detail: detail.into() })
}

/// Shard file names from a `model.safetensors.index.json`, in order of first appearance, deduplicated.
pub fn shard_names(index: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(index).map_err(|e| Error::io(format!("reading {}", index.display()), e))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::Config { path: index.into(), detail: e.to_string() })?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::Config { path: index.into(), detail: "no `weight_map` object".into() })?;
    let mut shards: Vec<String> = map.values().filter_map(|v| v.as_str().map(String::from)).collect();
    shards.sort();
    shards.dedup();
    Ok(shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leading_tilde_is_the_home_folder_the_settings_name() {
        let home = std::env::temp_dir().join(format!("distill-source-home-{}", std::process::id()));
        std::fs::create_dir_all(home.join("models/tiny")).unwrap();
        assert_eq!(ModelSpec::parse("~/models/tiny", &home).unwrap(), ModelSpec::Folder(home.join("models/tiny")));
        let missing = ModelSpec::parse("~/models/none", &home).unwrap_err().to_string();
        assert!(missing.contains("models/none") && missing.contains("is not a model"), "{missing}");
        assert!(matches!(ModelSpec::parse("org/name", &home).unwrap(), ModelSpec::Hub { .. }));
        let _ = std::fs::remove_dir_all(&home);
    }
}
