//! TEMPORARY stub (replaced by the hub branch).
use crate::engine::{Error, Result};
use std::path::PathBuf;
pub struct HubSettings {
    pub cache_dir: PathBuf,
    pub endpoint: String,
    pub offline: bool,
}
impl HubSettings {
    pub fn from_env() -> Self {
        Self {
            cache_dir: PathBuf::from("/root/.cache/huggingface/hub"),
            endpoint: "https://huggingface.co".into(),
            offline: true,
        }
    }
}
pub struct DownloadProgress {
    pub file: String,
    pub bytes: u64,
    pub total: u64,
}
pub struct HubRepo {
    pub id: String,
    pub revision: Option<String>,
}
pub enum FileSet {
    HfModel,
    Gguf(String),
}
pub struct Snapshot {
    pub id: String,
    pub revision: String,
    pub dir: PathBuf,
    pub files: Vec<String>,
}
pub fn fetch(s: &HubSettings, repo: &HubRepo, _w: &FileSet, _p: &dyn Fn(&DownloadProgress)) -> Result<Snapshot> {
    let d = s.cache_dir.join(format!("models--{}", repo.id.replace('/', "--")));
    let rev = std::fs::read_to_string(d.join("refs/main"))
        .map_err(|_| Error::NotInCache { id: repo.id.clone(), cache: s.cache_dir.clone() })?;
    Ok(Snapshot { id: repo.id.clone(), dir: d.join("snapshots").join(&rev), revision: rev, files: vec![] })
}
#[derive(serde::Serialize)]
pub struct ModelSummary {
    pub id: String,
    pub downloads: u64,
    pub pipeline_tag: Option<String>,
}
pub fn search(_s: &HubSettings, _q: &str, _l: usize) -> Result<Vec<ModelSummary>> {
    Ok(vec![])
}
#[derive(serde::Serialize)]
pub struct CachedModel {
    pub id: String,
    pub bytes: u64,
    pub has_safetensors: bool,
    pub gguf_files: Vec<String>,
}
pub fn list_cache(_s: &HubSettings) -> Result<Vec<CachedModel>> {
    Ok(vec![])
}
