//! A finished run directory and its points: `teacher`, `student`, `baseline` (the models the run
//! measured) and one `ROLE-FORMAT` point per quantized model of its `[quantize]` sweep
//! (`student-q4_0`, `teacher-q8_0`, …). Each point's metrics come from `summary.json`.

use super::provenance::RunProvenance;
use crate::engine::events::QuantPoint;
use crate::engine::events::Role;
use crate::engine::quant::QuantFormat;
use crate::engine::recipe::Recipe;
use crate::engine::summary::{RunSummary, TaskKind};
use crate::engine::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The deterministic metrics (not speeds or times) of a language model's point.
pub const LM_METRICS: [&str; 4] = ["perplexity", "top1_accuracy", "kl_to_teacher", "agreement"];
/// The deterministic metrics of a classifier's point.
pub const CLASS_METRICS: [&str; 5] = ["accuracy", "macro_f1", "cross_entropy", "kl_to_teacher", "agreement"];
/// The metrics of a quantized point (KL and agreement against its own unquantized model); a
/// point has the task's own among them.
pub const QUANT_METRICS: [&str; 9] = [
    "perplexity",
    "top1_accuracy",
    "accuracy",
    "macro_f1",
    "cross_entropy",
    "kl",
    "agreement",
    "bits_per_weight",
    "bytes",
];

/// A run directory whose run has finished.
pub struct FinishedRun {
    pub dir: PathBuf,
    /// The run's recipe, for a language-model run (a classification run's recipe is read by
    /// `classify::recipe`).
    pub recipe: Option<Recipe>,
    pub recipe_text: String,
    pub summary: RunSummary,
    pub provenance: Option<RunProvenance>,
}

/// One exportable point of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub name: String,
    pub role: Role,
    pub format: Option<QuantFormat>,
}

impl FinishedRun {
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::Invalid(format!(
                "run directory {} does not exist; give the output.dir of a finished `distill-tui run`",
                dir.display()
            )));
        }
        let summary_path = dir.join("summary.json");
        if !summary_path.is_file() {
            return Err(Error::Invalid(format!(
                "{} holds no finished run (no summary.json); finish it with `distill-tui run RECIPE --resume`",
                dir.display()
            )));
        }
        let summary = RunSummary::read(dir)?;
        let recipe_path = dir.join("recipe.toml");
        let recipe_text = std::fs::read_to_string(&recipe_path)
            .map_err(|e| Error::io(format!("reading {}", recipe_path.display()), e))?;
        let recipe = match summary.task() {
            TaskKind::CausalLm => Some(Recipe::parse(&recipe_text, &recipe_path.display().to_string())?),
            TaskKind::Classification => None,
        };
        Ok(Self { dir: dir.to_path_buf(), recipe, recipe_text, summary, provenance: RunProvenance::read(dir)? })
    }

    pub fn points(&self) -> Vec<Point> {
        points_of(&self.summary)
    }

    /// The point called `name`; an unknown name lists the valid ones.
    pub fn point(&self, name: &str) -> Result<Point> {
        let points = self.points();
        points.iter().find(|p| p.name == name).cloned().ok_or_else(|| {
            let names: Vec<&str> = points.iter().map(|p| p.name.as_str()).collect();
            Error::Invalid(format!(
                "unknown point `{name}` in {}; valid points: {}",
                self.dir.display(),
                names.join(", ")
            ))
        })
    }
}

/// The points a summary records, models first, then the quantized points in sweep order.
pub fn points_of(summary: &RunSummary) -> Vec<Point> {
    let mut out: Vec<Point> =
        summary.roles().into_iter().map(|r| Point { name: r.name().to_string(), role: r, format: None }).collect();
    for q in &summary.quantize {
        let role = RunSummary::quant_role(q);
        if let Ok(format) = QuantFormat::parse(&q.format) {
            out.push(Point { name: format!("{}-{}", role.name(), format.name()), role, format: Some(format) });
        }
    }
    out
}

/// The sweep's record of a quantized point.
pub fn quant_record<'a>(summary: &'a RunSummary, p: &Point) -> Option<&'a QuantPoint> {
    let f = p.format?;
    summary.quantize.iter().find(|q| RunSummary::quant_role(q) == p.role && q.format == f.name())
}

/// The summary's record of a point as JSON: its model's entry, or its entry in the quantization sweep.
pub fn point_record(summary: &RunSummary, p: &Point) -> serde_json::Value {
    let record = match p.format {
        None => serde_json::to_value(summary.role(p.role)),
        Some(_) => serde_json::to_value(quant_record(summary, p)),
    };
    record.unwrap_or_default()
}

/// Every deterministic metric of a summary as `POINT.METRIC` → value (the expected values of a rerun).
pub fn metrics_of(summary: &RunSummary) -> BTreeMap<String, f64> {
    let model_metrics: &[&str] = match summary.task() {
        TaskKind::CausalLm => &LM_METRICS,
        TaskKind::Classification => &CLASS_METRICS,
    };
    let mut out = BTreeMap::new();
    for p in points_of(summary) {
        let record = point_record(summary, &p);
        let names: &[&str] = if p.format.is_some() { &QUANT_METRICS } else { model_metrics };
        for m in names {
            if let Some(v) = record.get(*m).and_then(|v| v.as_f64()) {
                out.insert(format!("{}.{m}", p.name), v);
            }
        }
    }
    out
}
