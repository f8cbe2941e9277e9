//! `run.json`: what a run is (task, recipe, teacher, student, the settings that tell it apart) and
//! how it stands (running, finished, failed, cancelled, interrupted), with the helpers that read a
//! recipe's key settings and show them.

use crate::engine::fsutil::write_atomic;
use crate::engine::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// A run's record inside its folder.
pub const RUN_FILE: &str = "run.json";

/// How a run stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Running,
    Finished,
    Failed,
    Cancelled,
    /// Recorded as running by a process that is gone (killed): resumable from its last checkpoint.
    Interrupted,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Finished => "finished",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Interrupted => "interrupted",
        }
    }

    /// Whether `--resume` (or `p` on the Runs screen) has something to continue.
    pub fn resumable(self) -> bool {
        matches!(self, Self::Cancelled | Self::Interrupted | Self::Failed)
    }
}

/// `run.json`: what a run is and how it stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// `distill`, `pretrain`, `finetune`, `classification` or `sweep`.
    pub task: String,
    /// The recipe file the run was started from.
    pub recipe: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub student: Option<String>,
    /// The recipe values that tell runs apart (temperature, loss, alpha, student size, steps...).
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    pub status: Status,
    /// The process that runs it (while `running`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Unix seconds.
    pub created: i64,
    pub updated: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A sweep member: the sweep's folder and what this member sets (`T=5 layers=2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// The recipe keys a run's record keeps as its settings, with the short names tables use.
pub const KEY_SETTINGS: &[(&str, &str)] = &[
    ("distill.loss", "loss"),
    ("distill.temperature", "T"),
    ("distill.alpha", "alpha"),
    ("distill.jsd_beta", "beta"),
    ("distill.lr", "lr"),
    ("distill.steps", "steps"),
    ("distill.batch_size", "batch"),
    ("distill.seed", "seed"),
    ("distill.cache_top_k", "top_k"),
    ("distill.precision", "precision"),
    ("distill.teacher_precision", "teacher_precision"),
    ("student.derive.layers", "layers"),
    ("student.derive.hidden", "hidden"),
    ("student.derive.intermediate", "intermediate"),
    ("student.layers", "layers"),
    ("data.seq_len", "seq_len"),
    ("quantize.formats", "formats"),
    ("finetune.steps", "finetune_steps"),
];

/// The short name of a recipe key (`distill.temperature` → `T`), or its last part.
pub fn short_key(key: &str) -> String {
    KEY_SETTINGS
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, s)| s.to_string())
        .unwrap_or_else(|| key.rsplit('.').next().unwrap_or(key).to_string())
}

/// A TOML value as a setting shows it: strings bare, lists joined by `+`.
pub fn show_value(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Array(a) => a.iter().map(show_value).collect::<Vec<_>>().join("+"),
        toml::Value::Float(f) => format!("{f}"),
        other => other.to_string(),
    }
}

/// The value at a dotted key of a TOML table.
pub fn value_at<'a>(table: &'a toml::Table, key: &str) -> Option<&'a toml::Value> {
    let mut parts = key.split('.');
    let mut at = table.get(parts.next()?)?;
    for p in parts {
        at = at.as_table()?.get(p)?;
    }
    Some(at)
}

/// The key settings of a recipe's TOML text.
pub fn key_settings(recipe_toml: &str) -> BTreeMap<String, String> {
    let Ok(table) = toml::from_str::<toml::Table>(recipe_toml) else { return BTreeMap::new() };
    KEY_SETTINGS
        .iter()
        .filter_map(|(k, short)| value_at(&table, k).map(|v| (short.to_string(), show_value(v))))
        .collect()
}

pub(crate) fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// A Unix time as `2026-12-04 22:40` (UTC).
pub fn show_time(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0).map(|t| t.format("%Y-%m-%d %H:%M").to_string()).unwrap_or_default()
}

impl RunRecord {
    /// A new record of a run of `task` from the recipe at `recipe` (its TOML as run).
    pub fn new(task: &str, recipe: &Path, recipe_toml: &str) -> Self {
        let table = toml::from_str::<toml::Table>(recipe_toml).unwrap_or_default();
        let text = |k: &str| value_at(&table, k).and_then(|v| v.as_str()).map(str::to_string);
        let student = text("student.model").or_else(|| {
            value_at(&table, "student.derive.layers").map(|l| format!("derived, {} layers", show_value(l)))
        });
        Self {
            task: task.into(),
            recipe: recipe.display().to_string(),
            teacher: text("teacher.model"),
            student: student
                .or_else(|| value_at(&table, "student.layers").map(|l| format!("{} layers", show_value(l)))),
            settings: key_settings(recipe_toml),
            status: Status::Running,
            pid: Some(std::process::id()),
            created: now(),
            updated: now(),
            error: None,
            sweep: None,
            label: None,
        }
    }

    /// `dir/run.json`, with a run recorded as running by a process that is gone read as interrupted.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(RUN_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let mut r: Self =
            serde_json::from_str(&text).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
        if r.status == Status::Running && !r.pid.is_some_and(crate::engine::fsutil::process_alive) {
            r.status = Status::Interrupted;
        }
        Ok(r)
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::Invalid(e.to_string()))?;
        write_atomic(&dir.join(RUN_FILE), text.as_bytes())
    }
}
