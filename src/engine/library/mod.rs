//! The run library: every run (a distillation, a pretraining, a classification run, a sweep and its
//! members) is a folder holding its recipe (`recipe.toml`), its record (`run.json`: task, status,
//! dates, key settings), its event log (`events.jsonl`) and, once finished, its summary
//! (`summary.json`). An index under the cache root (`runs.json`, the user's data folder unless
//! `DISTILL_CACHE_DIR` says otherwise) remembers where the folders are, so `distill-tui runs`, `show`,
//! `compare` and the workbench's Runs screen find them from anywhere.
//!
//! Starting a recipe whose folder holds a finished run starts a new numbered run beside it
//! (`runs/demo` → `runs/demo-2`); a folder holding an unfinished run is resumed with `--resume`.

pub mod log;
pub mod record;
pub mod sweep;
pub mod table;

pub use record::*;

use crate::engine::context::{JobContext, Settings};
use crate::engine::events::JobEvent;
use crate::engine::fsutil::write_atomic;
use crate::engine::summary::RunSummary;
use crate::engine::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The index of run folders under the cache root.
pub const INDEX_FILE: &str = "runs.json";

/// Whether `dir` holds a run that finished (its summary is written).
pub fn finished(dir: &Path) -> bool {
    dir.join("summary.json").is_file()
}

/// Whether `dir` holds any run: a record, a summary or a checkpoint.
pub fn holds_run(dir: &Path) -> bool {
    dir.join(RUN_FILE).is_file()
        || finished(dir)
        || matches!(crate::engine::train::checkpoint::load_state(dir), Ok(Some(_)))
        || dir.join(sweep::SWEEP_FILE).is_file()
}

/// The folder a run started without `--resume` writes to: `dir` itself when it holds no run,
/// else `dir-2`, `dir-3`... (the first that holds none) when `dir` holds a finished run. A folder
/// holding an unfinished run is refused (continue it with --resume, or start it elsewhere).
pub fn fresh_dir(dir: &Path, resume: bool) -> Result<PathBuf> {
    if resume || !holds_run(dir) {
        return Ok(dir.to_path_buf());
    }
    if !finished(dir) && !sweep::finished(dir) {
        // A run going on there is named as such (the lock says by whom).
        drop(crate::engine::fsutil::FolderLock::acquire(dir, "distill-tui (checking the folder)")?);
        return Err(Error::Invalid(format!(
            "{} holds an unfinished run; pass --resume to continue it (p on the Train screen), or change output.dir",
            dir.display()
        )));
    }
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "run".into());
    let parent = dir.parent().unwrap_or(Path::new(""));
    (2..10_000)
        .map(|n| parent.join(format!("{name}-{n}")))
        .find(|d| !holds_run(d))
        .ok_or_else(|| Error::Invalid(format!("{} has 10,000 numbered runs; pick another output.dir", dir.display())))
}

/// Runs `body` as the run in `dir`, recorded: `run.json` says it is running (then how it ended),
/// the job's events are appended to `events.jsonl` (a continued run's after the earlier attempt's;
/// a replay lets the later steps replace the earlier), and the folder joins the index under the
/// cache root.
pub fn recorded(
    ctx: &JobContext,
    dir: &Path,
    mut record: RunRecord,
    body: impl FnOnce(&JobContext) -> Result<serde_json::Value>,
) -> Result<serde_json::Value> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    if let Ok(before) = RunRecord::read(dir) {
        record.created = before.created;
        record.sweep = record.sweep.or(before.sweep);
        record.label = record.label.or(before.label);
    }
    record.write(dir)?;
    if let Err(e) = register(ctx.settings(), dir) {
        ctx.log(format!("note: the run library's index was not updated ({e}); the run goes on"));
    }
    ctx.recorder().start(dir, true)?;
    let outcome = body(ctx);
    let end = match &outcome {
        Ok(summary) => JobEvent::Summary { job: ctx.id, summary: summary.clone() },
        Err(Error::Cancelled) => JobEvent::Cancelled { job: ctx.id },
        Err(e) => JobEvent::Failed { job: ctx.id, error: e.to_string(), bad_input: e.is_bad_input() },
    };
    ctx.recorder().write(&end);
    ctx.recorder().stop();
    record.status = match &outcome {
        Ok(_) => Status::Finished,
        Err(Error::Cancelled) => Status::Cancelled,
        Err(_) => Status::Failed,
    };
    record.error = outcome.as_ref().err().filter(|e| !matches!(e, Error::Cancelled)).map(|e| e.to_string());
    record.pid = None;
    record.updated = now();
    if let Err(e) = record.write(dir) {
        ctx.log(format!("note: could not update {}: {e}", dir.join(RUN_FILE).display()));
    }
    outcome
}

fn index_path(settings: &Settings) -> PathBuf {
    settings.cache_dir.join(INDEX_FILE)
}

#[derive(Default, Serialize, Deserialize)]
struct Index {
    runs: Vec<PathBuf>,
}

/// Adds `dir` to the index (absolute; folders that are gone are dropped as it is rewritten). The
/// index is read, changed and written under a lock, so two processes never lose each other's runs.
pub fn register(settings: &Settings, dir: &Path) -> Result<()> {
    let path = index_path(settings);
    std::fs::create_dir_all(&settings.cache_dir)
        .map_err(|e| Error::io(format!("creating {}", settings.cache_dir.display()), e))?;
    let lock_path = settings.cache_dir.join(".runs.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Error::io(format!("opening {}", lock_path.display()), e))?;
    lock.lock().map_err(|e| Error::io(format!("locking {}", lock_path.display()), e))?;
    let mut index = read_index(&path);
    let dir = std::path::absolute(dir).map_err(|e| Error::io(format!("resolving {}", dir.display()), e))?;
    index.runs.retain(|d| d != &dir && d.is_dir());
    index.runs.push(dir);
    let text = serde_json::to_string_pretty(&index).map_err(|e| Error::Invalid(e.to_string()))?;
    write_atomic(&path, text.as_bytes())
}

fn read_index(path: &Path) -> Index {
    std::fs::read_to_string(path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default()
}

/// One run as the library lists it.
#[derive(Clone, Debug, Serialize)]
pub struct RunEntry {
    /// The folder as given to `show`: relative to the working directory when under it.
    pub name: String,
    pub dir: PathBuf,
    pub record: Option<RunRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<RunSummary>,
    pub status: Status,
    /// The last checkpoint's step of an unfinished run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_step: Option<usize>,
}

impl RunEntry {
    /// Reads the run in `dir`; `None` when the folder holds none.
    pub fn read(dir: &Path) -> Option<Self> {
        if !holds_run(dir) {
            return None;
        }
        let record = RunRecord::read(dir).ok();
        let summary = RunSummary::read(dir).ok();
        let checkpoint_step = crate::engine::train::checkpoint::load_state(dir).ok().flatten().map(|s| s.step);
        let status = match (&record, &summary) {
            (Some(r), _) => r.status,
            (None, Some(_)) => Status::Finished,
            (None, None) if dir.join(sweep::SWEEP_FILE).is_file() => {
                if sweep::finished(dir) {
                    Status::Finished
                } else {
                    Status::Interrupted
                }
            }
            (None, None) => Status::Interrupted,
        };
        Some(Self { name: display_name(dir), dir: dir.to_path_buf(), record, summary, status, checkpoint_step })
    }

    pub fn task(&self) -> String {
        self.record.as_ref().map(|r| r.task.clone()).unwrap_or_else(|| match &self.summary {
            Some(s) if s.task() == crate::engine::summary::TaskKind::Classification => "classification".into(),
            Some(s) if s.model.is_some() => "pretrain".into(),
            _ => "distill".into(),
        })
    }

    /// The key settings (from the record, or the recipe in the folder).
    pub fn settings(&self) -> BTreeMap<String, String> {
        match &self.record {
            Some(r) => r.settings.clone(),
            None => key_settings(&std::fs::read_to_string(self.dir.join("recipe.toml")).unwrap_or_default()),
        }
    }

    /// The headline of the trained model: `ppl 81.2 · KL 0.31` (the student; the model of a
    /// pretraining run; the teacher of a fine-tuning).
    pub fn best(&self) -> String {
        let Some(s) = &self.summary else { return String::new() };
        let Some(m) = s.student.as_ref().or(s.model.as_ref()).or(s.teacher.as_ref()) else { return String::new() };
        let mut out = m.metrics.headline();
        if let Some(kl) = m.kl_to_teacher {
            out.push_str(&format!(" · KL {kl:.4}"));
        }
        out
    }

    pub fn date(&self) -> String {
        self.record.as_ref().map(|r| show_time(r.updated)).unwrap_or_default()
    }
}

/// `dir` relative to the working directory when it lies under it.
pub fn display_name(dir: &Path) -> String {
    let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    match std::env::current_dir().ok().and_then(|cwd| abs.strip_prefix(&cwd).ok().map(Path::to_path_buf)) {
        Some(rel) if !rel.as_os_str().is_empty() => rel.display().to_string(),
        _ => abs.display().to_string(),
    }
}

/// Every run the index knows whose folder still holds it, oldest first; a sweep's members follow
/// their sweep.
pub fn list(settings: &Settings) -> Vec<RunEntry> {
    let index = read_index(&index_path(settings));
    let mut out: Vec<RunEntry> = Vec::new();
    for dir in &index.runs {
        if out.iter().any(|e| &e.dir == dir) {
            continue;
        }
        if let Some(e) = RunEntry::read(dir) {
            out.push(e);
        }
    }
    // Members right after their sweep, in member order.
    let mut ordered: Vec<RunEntry> = Vec::new();
    for e in out.iter().filter(|e| e.record.as_ref().and_then(|r| r.sweep.as_ref()).is_none()) {
        ordered.push(e.clone());
        let mut members: Vec<&RunEntry> = out
            .iter()
            .filter(|m| m.record.as_ref().and_then(|r| r.sweep.as_deref()) == Some(&*e.dir.to_string_lossy()))
            .collect();
        members.sort_by(|a, b| a.dir.cmp(&b.dir));
        ordered.extend(members.into_iter().cloned());
    }
    // Members whose sweep is not indexed.
    for e in out {
        if !ordered.iter().any(|o| o.dir == e.dir) {
            ordered.push(e);
        }
    }
    ordered
}

/// The run `name` names: a folder holding a run, or a run of the index by its folder's name or
/// its name as listed (`runs/demo-2`, `demo-2`, `demo-sweep/02-T=2`). Unknown or ambiguous names
/// are refused listing what there is.
pub fn find(settings: &Settings, name: &str) -> Result<RunEntry> {
    let path = Path::new(name);
    if path.is_dir() {
        return RunEntry::read(path)
            .ok_or_else(|| Error::Invalid(format!("{name} holds no run (no run.json, summary.json or checkpoint)")));
    }
    let all = list(settings);
    let matches: Vec<&RunEntry> = all
        .iter()
        .filter(|e| {
            e.name == name
                || e.dir.file_name().is_some_and(|f| f == name)
                || e.name.ends_with(&format!("/{name}"))
                || e.record.as_ref().and_then(|r| r.label.as_deref()) == Some(name)
        })
        .collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => {
            let known: Vec<&str> = all.iter().map(|e| e.name.as_str()).take(12).collect();
            Err(Error::Invalid(format!(
                "no run named `{name}`{}; `distill-tui runs` lists them",
                if known.is_empty() {
                    " (the library is empty)".to_string()
                } else {
                    format!(" (known: {})", known.join(", "))
                }
            )))
        }
        many => Err(Error::Invalid(format!(
            "`{name}` names {} runs ({}); give the folder",
            many.len(),
            many.iter().map(|e| e.name.as_str()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// What tells `runs` apart: the key settings whose values differ between them, as `T=5 layers=2`
/// per run (the folder name when nothing differs).
pub fn differences(runs: &[RunEntry]) -> Vec<String> {
    let settings: Vec<BTreeMap<String, String>> = runs.iter().map(RunEntry::settings).collect();
    let keys: std::collections::BTreeSet<&String> = settings.iter().flat_map(|s| s.keys()).collect();
    let differing: Vec<&String> =
        keys.into_iter().filter(|k| settings.iter().any(|s| s.get(*k) != settings[0].get(*k))).collect();
    runs.iter()
        .zip(&settings)
        .map(|(run, s)| {
            let parts: Vec<String> =
                differing.iter().map(|k| format!("{k}={}", s.get(*k).map(String::as_str).unwrap_or("-"))).collect();
            if parts.is_empty() {
                run.dir.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_else(|| run.name.clone())
            } else {
                parts.join(" ")
            }
        })
        .collect()
}

/// `lr` writing to `dir` (told to the user when it is a new numbered folder).
pub fn redirect(
    lr: &crate::engine::recipe::LoadedRecipe,
    dir: &Path,
    ctx: &JobContext,
) -> crate::engine::recipe::LoadedRecipe {
    let mut lr = lr.clone();
    let asked = lr.output_dir();
    if asked != dir {
        ctx.log(format!("{} holds a finished run: this run is {}", asked.display(), dir.display()));
        lr.recipe.output.dir = dir.display().to_string();
    }
    lr
}
