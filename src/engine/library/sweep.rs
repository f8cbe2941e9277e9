//! Sweeps: a recipe's `[sweep]` section lists values for recipe keys, and `distill-tui run` trains
//! every combination (a grid, or the lists zipped) as its own run of the library, one after the
//! other, each in a numbered folder under the recipe's `output.dir` and each resumable; the
//! teacher-logit cache (keyed by teacher, data and window length) is shared by all of them.
//!
//! ```toml
//! [sweep]
//! distill.temperature = [1, 2, 5]
//! student.derive.layers = [1, 2]
//! # mode = "zip"      (default "grid")
//! # max_runs = 100    (more than 64 runs must be asked for)
//! ```
//!
//! Every member recipe is built and validated when the recipe is read, so a key that does not
//! exist, a value of the wrong type or an empty list is refused, naming the key, before anything
//! trains.

use super::{short_key, show_value, RunRecord};
use crate::engine::context::JobContext;
use crate::engine::recipe::{overrides, LoadedRecipe, Override, Recipe};
use crate::engine::summary::RunSummary;
use crate::engine::train::RunOptions;
use crate::engine::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The sweep's record in its folder.
pub const SWEEP_FILE: &str = "sweep.json";
/// Runs a sweep may make without `max_runs`.
pub const DEFAULT_MAX_RUNS: usize = 64;

/// Grid (every combination) or zip (the i-th value of every list together).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Grid,
    Zip,
}

/// A `[sweep]` section: the keys and their values, in the order written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sweep {
    pub mode: Mode,
    pub axes: Vec<(String, Vec<toml::Value>)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_runs: Option<usize>,
}

/// One run of a sweep.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    /// What this member sets, key by key.
    pub params: Vec<(String, toml::Value)>,
    /// `T=5 layers=2`.
    pub label: String,
    /// The member's folder under the sweep's: `02-T=5_layers=2`.
    pub folder: String,
    /// The member's recipe (its `output.dir` is set when the sweep runs).
    pub recipe: Recipe,
}

/// A sweep with its members' recipes, built and validated.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub sweep: Sweep,
    pub members: Vec<Member>,
    /// The recipe text as written (with its `[sweep]`), recorded in the sweep's folder.
    pub text: String,
}

/// Splits the `[sweep]` section off recipe text: the text without it (unchanged when there is
/// none) and the sweep.
pub fn split(text: &str, origin: &str) -> Result<(String, Option<Sweep>)> {
    let bad = |msg: String| Error::Invalid(format!("recipe {origin}: [sweep] {msg}"));
    let Ok(mut table) = toml::from_str::<toml::Table>(text) else { return Ok((text.to_string(), None)) };
    let Some(section) = table.remove("sweep") else { return Ok((text.to_string(), None)) };
    let toml::Value::Table(mut section) = section else {
        return Err(bad("must be a section: [sweep] with `key = [values]` lines".into()));
    };
    let mode = match section.remove("mode") {
        None => Mode::Grid,
        Some(toml::Value::String(m)) if m == "grid" => Mode::Grid,
        Some(toml::Value::String(m)) if m == "zip" => Mode::Zip,
        Some(other) => return Err(bad(format!("mode = {other}: valid: \"grid\" (every combination), \"zip\""))),
    };
    let max_runs = match section.remove("max_runs") {
        None => None,
        Some(toml::Value::Integer(n)) if n > 0 => Some(n as usize),
        Some(other) => return Err(bad(format!("max_runs = {other}: give a number of runs > 0"))),
    };
    let mut axes = Vec::new();
    flatten("", &section, &mut axes).map_err(bad)?;
    if axes.is_empty() {
        return Err(bad("lists no key; add e.g. distill.temperature = [1, 2, 5]".into()));
    }
    for (key, _) in &axes {
        if key == "output.dir" || key.starts_with("output.") {
            return Err(bad(format!("{key}: a sweep puts each run in a folder of its own under output.dir")));
        }
    }
    let rest = toml::to_string(&table).map_err(|e| bad(e.to_string()))?;
    Ok((rest, Some(Sweep { mode, axes, max_runs })))
}

fn flatten(
    prefix: &str,
    table: &toml::Table,
    out: &mut Vec<(String, Vec<toml::Value>)>,
) -> std::result::Result<(), String> {
    for (k, v) in table {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            toml::Value::Table(t) => flatten(&key, t, out)?,
            toml::Value::Array(values) if values.is_empty() => {
                return Err(format!("{key} is an empty list; give at least one value"))
            }
            toml::Value::Array(values) => out.push((key, values.clone())),
            other => return Err(format!("{key} = {other}: give a list of values, e.g. {key} = [{other}]")),
        }
    }
    Ok(())
}

impl Sweep {
    /// The combinations, each as (key, value) pairs in axis order (grid: the first key varies slowest).
    pub fn combinations(&self) -> Result<Vec<Vec<(String, toml::Value)>>> {
        let combos: Vec<Vec<(String, toml::Value)>> = match self.mode {
            Mode::Zip => {
                let n = self.axes[0].1.len();
                if let Some((k, v)) = self.axes.iter().find(|(_, v)| v.len() != n) {
                    return Err(Error::Invalid(format!(
                        "[sweep] mode = \"zip\" needs lists of one length: {} has {n} values, {k} has {}",
                        self.axes[0].0,
                        v.len()
                    )));
                }
                (0..n).map(|i| self.axes.iter().map(|(k, v)| (k.clone(), v[i].clone())).collect()).collect()
            }
            Mode::Grid => {
                let total = self.axes.iter().try_fold(1usize, |acc, (_, v)| acc.checked_mul(v.len()));
                let total = total.filter(|t| *t <= 1 << 20).ok_or_else(|| {
                    Error::Invalid("[sweep] makes more than a million runs; sweep fewer values".into())
                })?;
                self.check_count(total)?;
                let mut out = vec![Vec::new()];
                for (k, values) in &self.axes {
                    out = out
                        .into_iter()
                        .flat_map(|prefix| {
                            values.iter().map(move |v| {
                                let mut c = prefix.clone();
                                c.push((k.clone(), v.clone()));
                                c
                            })
                        })
                        .collect();
                }
                out
            }
        };
        self.check_count(combos.len())?;
        Ok(combos)
    }

    fn check_count(&self, n: usize) -> Result<()> {
        let sizes: Vec<String> = self.axes.iter().map(|(_, v)| v.len().to_string()).collect();
        let how = if self.mode == Mode::Grid { format!(" ({})", sizes.join(" × ")) } else { String::new() };
        match self.max_runs {
            None if n > DEFAULT_MAX_RUNS => Err(Error::Invalid(format!(
                "[sweep] makes {n} runs{how}, more than {DEFAULT_MAX_RUNS}: sweep fewer values, or raise the limit with max_runs = {n} in [sweep]"
            ))),
            Some(m) if n > m => Err(Error::Invalid(format!(
                "[sweep] makes {n} runs{how}, more than max_runs = {m}: sweep fewer values or raise max_runs"
            ))),
            _ => Ok(()),
        }
    }
}

/// `T=5 layers=2`.
pub fn label(params: &[(String, toml::Value)]) -> String {
    params.iter().map(|(k, v)| format!("{}={}", short_key(k), show_value(v))).collect::<Vec<_>>().join(" ")
}

/// A folder name for member `index` (0-based): `02-T=5_layers=2`.
fn folder(index: usize, label: &str) -> String {
    let safe: String = label
        .chars()
        .map(|c| match c {
            ' ' => '_',
            c if c.is_ascii_alphanumeric() || "=._+-".contains(c) => c,
            _ => '-',
        })
        .collect();
    format!("{:02}-{}", index + 1, safe.chars().take(80).collect::<String>())
}

impl Plan {
    /// Builds every member's recipe from `base` (the recipe text without `[sweep]`, the `--set`
    /// values applied) with `parse` (reading and validating, as for any recipe); the first member
    /// that does not validate is refused naming the key and value.
    pub fn build(sweep: Sweep, base: &str, text: &str, parse: impl Fn(&str) -> Result<Recipe>) -> Result<Self> {
        let combos = sweep.combinations()?;
        let mut members = Vec::with_capacity(combos.len());
        for (i, params) in combos.into_iter().enumerate() {
            let sets: Vec<Override> = params
                .iter()
                .map(|(k, v)| Override {
                    key: k.split('.').map(str::to_string).collect(),
                    value: v.clone(),
                    text: format!("[sweep] {k} = {v}"),
                })
                .collect();
            let (_, recipe) = overrides::apply(base, &sets, &parse)?;
            let label = label(&params);
            members.push(Member { folder: folder(i, &label), label, params, recipe });
        }
        Ok(Self { sweep, members, text: text.to_string() })
    }
}

/// `sweep.json`: the sweep's recipe and members, for `runs`, `show`, resuming and the Runs screen.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SweepRecord {
    pub recipe: String,
    pub sweep: Sweep,
    pub members: Vec<MemberRecord>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub folder: String,
    pub label: String,
}

impl SweepRecord {
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(SWEEP_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        serde_json::from_str(&text).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
    }

    /// The members' folders.
    pub fn dirs(&self, root: &Path) -> Vec<PathBuf> {
        self.members.iter().map(|m| root.join(&m.folder)).collect()
    }
}

/// Whether `dir` holds a sweep whose every member finished.
pub fn finished(dir: &Path) -> bool {
    SweepRecord::read(dir).is_ok_and(|s| s.dirs(dir).iter().all(|d| super::finished(d)))
}

/// Runs every member of `lr`'s sweep in turn, under the folder `root` (fresh, or a sweep to
/// continue, which only `--resume` gets to: finished members are kept, an interrupted one resumes
/// from its checkpoint). Returns the sweep's summary: each member's label, folder and summary.
pub fn run(lr: &LoadedRecipe, plan: &Plan, root: &Path, ctx: &JobContext) -> Result<serde_json::Value> {
    let _lock = crate::engine::fsutil::FolderLock::acquire(root, "distill-tui run (sweep)")?;
    let record = SweepRecord {
        recipe: lr.path.display().to_string(),
        sweep: plan.sweep.clone(),
        members: plan
            .members
            .iter()
            .map(|m| MemberRecord { folder: m.folder.clone(), label: m.label.clone() })
            .collect(),
    };
    if let Ok(before) = SweepRecord::read(root) {
        if before.members != record.members {
            return Err(Error::Invalid(format!(
                "--resume: {} holds a sweep of other runs ({}); restore the [sweep] it was started with, or start it in another output.dir",
                root.display(),
                before.members.iter().map(|m| m.label.as_str()).collect::<Vec<_>>().join(", ")
            )));
        }
    }
    let text = serde_json::to_string_pretty(&record).map_err(|e| Error::Invalid(e.to_string()))?;
    crate::engine::fsutil::write_atomic(&root.join(SWEEP_FILE), text.as_bytes())?;
    crate::engine::fsutil::write_atomic(&root.join("recipe.toml"), plan.text.as_bytes())?;
    let mut sweep_record = RunRecord::new("sweep", &lr.path, &plan.text);
    sweep_record.label = Some(format!("{} runs: {}", plan.members.len(), axes(&plan.sweep)));
    if let Ok(before) = RunRecord::read(root) {
        sweep_record.created = before.created;
    }
    sweep_record.write(root)?;
    if let Err(e) = super::register(ctx.settings(), root) {
        ctx.log(format!("note: the run library's index was not updated ({e})"));
    }
    let outcome = run_members(lr, plan, root, ctx);
    sweep_record.status = match &outcome {
        Ok(_) => super::Status::Finished,
        Err(Error::Cancelled) => super::Status::Cancelled,
        Err(_) => super::Status::Failed,
    };
    sweep_record.error = outcome.as_ref().err().filter(|e| !matches!(e, Error::Cancelled)).map(|e| e.to_string());
    sweep_record.pid = None;
    sweep_record.updated = super::now();
    sweep_record.write(root)?;
    outcome
}

fn axes(s: &Sweep) -> String {
    s.axes
        .iter()
        .map(|(k, v)| format!("{} ∈ {{{}}}", short_key(k), v.iter().map(show_value).collect::<Vec<_>>().join(", ")))
        .collect::<Vec<_>>()
        .join(if s.mode == Mode::Grid { " × " } else { " with " })
}

fn run_members(lr: &LoadedRecipe, plan: &Plan, root: &Path, ctx: &JobContext) -> Result<serde_json::Value> {
    let n = plan.members.len();
    let abs_root = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
    let mut runs = Vec::with_capacity(n);
    for (i, m) in plan.members.iter().enumerate() {
        ctx.check()?;
        ctx.progress("sweep", i as u64, n as u64, "runs");
        let dir = root.join(&m.folder);
        if super::finished(&dir) {
            ctx.log(format!("sweep run {}/{n} ({}) finished before: kept", i + 1, m.label));
            let summary = RunSummary::read(&dir)?.to_value()?;
            runs.push(serde_json::json!({ "label": m.label, "dir": dir, "summary": summary }));
            continue;
        }
        let resume = matches!(crate::engine::train::checkpoint::load_state(&dir), Ok(Some(_)));
        ctx.log(format!(
            "sweep run {}/{n}: {} → {}{}",
            i + 1,
            m.label,
            dir.display(),
            if resume { " (resuming)" } else { "" }
        ));
        let mut recipe = m.recipe.clone();
        recipe.output.dir = dir.display().to_string();
        let member = LoadedRecipe { recipe, path: lr.path.clone(), base_dir: lr.base_dir.clone(), sweep: None };
        let toml = member.recipe.to_toml()?;
        let mut record = RunRecord::new("distill", &lr.path, &toml);
        record.sweep = Some(abs_root.display().to_string());
        record.label = Some(m.label.clone());
        let _lock = crate::engine::fsutil::FolderLock::acquire(&dir, "distill-tui run (sweep member)")?;
        let summary = super::recorded(ctx, &dir, record, |ctx| {
            crate::engine::distill::trainer::run_with_tokenizer(&member, &RunOptions { resume }, None, ctx)
        })?;
        runs.push(serde_json::json!({ "label": m.label, "dir": dir, "summary": summary }));
    }
    ctx.progress("sweep", n as u64, n as u64, "runs");
    Ok(serde_json::json!({ "sweep": root, "mode": plan.sweep.mode, "runs": runs }))
}
