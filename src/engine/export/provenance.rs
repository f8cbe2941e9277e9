//! Provenance: the exact inputs a run read — each model's hub revision and the sha256 of each of
//! its files, and the sha256 of every data file. A run records it in its directory
//! (`provenance.json`) before it trains; an export carries it into the recipe's `[provenance]`
//! section; a rerun and an export check the files against it, naming every file that changed.

use crate::engine::fsutil::{sha256_file, write_atomic};
use crate::engine::hub::HubSettings;
use crate::engine::recipe::LoadedRecipe;
use crate::engine::source::{resolve, ModelFiles, ResolvedModel};
use crate::engine::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The file a run directory keeps its provenance in.
pub const RUN_FILE: &str = "provenance.json";

pub use crate::engine::recipe::records::{FileRecord, ModelRecord, Provenance};

/// What a run directory records: the provenance and the absolute folder its recipe's relative
/// paths were resolved against (the run's `recipe.toml` keeps them as written).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunProvenance {
    pub recipe_dir: PathBuf,
    pub provenance: Provenance,
}

impl RunProvenance {
    pub fn read(run_dir: &Path) -> Result<Option<Self>> {
        let path = run_dir.join(RUN_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        serde_json::from_str(&text).map(Some).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
    }
}

/// The inputs of a run about to start: checked against the recipe's `[provenance]` when it has one.
pub fn for_run(lr: &LoadedRecipe, ctx: &crate::engine::context::JobContext) -> Result<Provenance> {
    match &lr.recipe.provenance {
        Some(p) => {
            ctx.log("checking the inputs against the recipe's [provenance] (sha256)");
            p.check(lr, ctx.hub())
        }
        None => collect(lr, ctx.hub()),
    }
}

/// Writes a run's `provenance.json` (the inputs of `lr` as [`collect`] found them).
pub fn record(lr: &LoadedRecipe, prov: &Provenance, out: &Path) -> Result<()> {
    let run = RunProvenance { recipe_dir: absolute(&lr.base_dir), provenance: prov.clone() };
    let text = serde_json::to_string_pretty(&run).map_err(|e| Error::Invalid(e.to_string()))?;
    write_atomic(&out.join(RUN_FILE), text.as_bytes())
}

/// The provenance of a recipe's inputs as they are now.
pub fn collect(lr: &LoadedRecipe, hub: &HubSettings) -> Result<Provenance> {
    let mut models = Vec::new();
    for (role, spec) in model_specs(lr) {
        let resolved = resolve_spec(lr, &spec, hub)?;
        let files = model_files(&resolved)
            .into_iter()
            .map(|(name, path)| Ok(FileRecord { path: name, sha256: file_sha256(&path)? }))
            .collect::<Result<Vec<_>>>()?;
        models.push(ModelRecord {
            role: role.into(),
            spec,
            hub_id: resolved.hub.hub_id.clone(),
            revision: resolved.hub.revision.clone(),
            files,
        });
    }
    let data = data_files(lr)?
        .into_iter()
        .map(|(name, path)| Ok(FileRecord { path: name, sha256: file_sha256(&path)? }))
        .collect::<Result<Vec<_>>>()?;
    Ok(Provenance { tool_version: env!("CARGO_PKG_VERSION").into(), models, data })
}

impl Provenance {
    /// Compares the recorded hashes with the files now (returned); the error names every file that changed.
    pub fn check(&self, lr: &LoadedRecipe, hub: &HubSettings) -> Result<Provenance> {
        let now = collect(lr, hub)?;
        let mut problems = Vec::new();
        for m in &self.models {
            let Some(cur) = now.models.iter().find(|c| c.role == m.role) else {
                problems.push(format!("the recipe no longer names a {} model", m.role));
                continue;
            };
            if m.revision.is_some() && cur.revision != m.revision {
                problems.push(format!(
                    "{} {}: revision {} now, {} recorded",
                    m.role,
                    m.spec,
                    cur.revision.as_deref().unwrap_or("none"),
                    m.revision.as_deref().unwrap_or("none")
                ));
            }
            compare(&format!("{} {}", m.role, cur.spec), &m.files, &cur.files, &mut problems);
        }
        compare("data", &self.data, &now.data, &mut problems);
        if problems.is_empty() {
            return Ok(now);
        }
        Err(Error::Invalid(format!(
            "inputs changed since the run (sha256 mismatch): {}; restore them, or run the recipe without its [provenance] section to accept the new files",
            problems.join("; ")
        )))
    }
}

fn compare(what: &str, recorded: &[FileRecord], now: &[FileRecord], problems: &mut Vec<String>) {
    for r in recorded {
        match now.iter().find(|n| n.path == r.path) {
            None => problems.push(format!("{what}: {} is gone", r.path)),
            Some(n) if n.sha256 != r.sha256 => {
                problems.push(format!("{what}: {} has sha256 {} now, {} recorded", r.path, n.sha256, r.sha256))
            }
            Some(_) => {}
        }
    }
    for n in now.iter().filter(|n| !recorded.iter().any(|r| r.path == n.path)) {
        problems.push(format!("{what}: {} is new (not in the recorded provenance)", n.path));
    }
}

/// The recipe's model arguments by role.
pub fn model_specs(lr: &LoadedRecipe) -> Vec<(&'static str, String)> {
    let r = &lr.recipe;
    let mut out = Vec::new();
    if let Some(t) = &r.teacher {
        out.push(("teacher", t.model.clone()));
    }
    if let Some(s) = &r.student.model {
        out.push(("student", s.clone()));
    }
    out
}

/// Resolves a recipe's model argument through the hub cache (downloading only when it must).
pub fn resolve_spec(lr: &LoadedRecipe, spec: &str, hub: &HubSettings) -> Result<ResolvedModel> {
    resolve(&lr.model_spec(spec), hub, &|_| {})
}

/// (name relative to the model, path) of every file a model is made of.
fn model_files(m: &ResolvedModel) -> Vec<(String, PathBuf)> {
    let (dir, mut paths) = match &m.files {
        ModelFiles::Hf { dir, config, weights } => {
            (dir.clone(), std::iter::once(config.clone()).chain(weights.iter().cloned()).collect::<Vec<_>>())
        }
        ModelFiles::Gguf { file } => (file.parent().map(Path::to_path_buf).unwrap_or_default(), vec![file.clone()]),
    };
    paths.extend(m.tokenizer.iter().cloned());
    paths
        .into_iter()
        .map(|p| {
            let name = p.strip_prefix(&dir).unwrap_or(&p).display().to_string();
            (name, p)
        })
        .collect()
}

/// (path as the recipe's folder sees it, path) of the training, evaluation and tokenizer files.
fn data_files(lr: &LoadedRecipe) -> Result<Vec<(String, PathBuf)>> {
    let r = &lr.recipe;
    let mut files = lr.data_files(&r.data.train, "data.train")?;
    files.extend(lr.data_files(&r.data.eval, "data.eval")?);
    if let Some(tok) = r.pretrain.as_ref().and_then(|p| p.tokenizer.as_ref()) {
        files.push(lr.base_dir.join(tok));
    }
    files.dedup();
    Ok(files
        .into_iter()
        .map(|p| {
            let name = p.strip_prefix(&lr.base_dir).unwrap_or(&p).display().to_string();
            (name, p)
        })
        .collect())
}

/// sha256 of a file; a hub cache symlink into `blobs/` is named by the hash of its content already.
fn file_sha256(path: &Path) -> Result<String> {
    if let Ok(target) = std::fs::read_link(path) {
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let in_blobs = target.parent().and_then(|p| p.file_name()).is_some_and(|n| n == "blobs");
        if in_blobs && name.len() == 64 && name.chars().all(|c| c.is_ascii_hexdigit()) {
            return Ok(name.to_ascii_lowercase());
        }
    }
    sha256_file(path)
}

/// `path` made absolute against the working directory (canonical when it exists).
pub fn absolute(path: &Path) -> PathBuf {
    let p = if path.as_os_str().is_empty() { Path::new(".") } else { path };
    std::fs::canonicalize(p).unwrap_or_else(|_| std::env::current_dir().unwrap_or_default().join(p))
}
