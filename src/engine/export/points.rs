//! A finished run directory and its points: `teacher`, `student`, `baseline` (the models the run
//! measured) and one `ROLE-FORMAT` point per quantized model of its `[quantize]` sweep
//! (`student-q4_0`, `teacher-q8_0`, …). Each point's metrics come from `summary.json`.

use super::provenance::RunProvenance;
use crate::engine::quant::QuantFormat;
use crate::engine::recipe::Recipe;
use crate::engine::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The metrics of a model point that are deterministic (not speeds or times).
pub const MODEL_METRICS: [&str; 4] = ["perplexity", "top1_accuracy", "kl_to_teacher", "agreement"];
/// The metrics of a quantized point (KL and agreement against its own unquantized model).
pub const QUANT_METRICS: [&str; 6] = ["perplexity", "top1_accuracy", "kl", "agreement", "bits_per_weight", "bytes"];

/// A run directory whose run has finished.
pub struct FinishedRun {
    pub dir: PathBuf,
    pub recipe: Recipe,
    pub summary: serde_json::Value,
    pub provenance: Option<RunProvenance>,
}

/// One exportable point of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub name: String,
    /// `teacher`, `student`, `baseline` (or `model` for a pretraining run).
    pub role: String,
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
        let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| Error::io(format!("reading {}", p.display()), e));
        let summary: serde_json::Value = serde_json::from_str(&read(&summary_path)?)
            .map_err(|e| Error::Invalid(format!("{}: {e}", summary_path.display())))?;
        let recipe_path = dir.join("recipe.toml");
        let recipe = Recipe::parse(&read(&recipe_path)?, &recipe_path.display().to_string())?;
        Ok(Self { dir: dir.to_path_buf(), recipe, summary, provenance: RunProvenance::read(dir)? })
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
pub fn points_of(summary: &serde_json::Value) -> Vec<Point> {
    let mut out: Vec<Point> = ["teacher", "student", "baseline", "model"]
        .iter()
        .filter(|r| summary.get(**r).is_some_and(|v| v.is_object()))
        .map(|r| Point { name: r.to_string(), role: r.to_string(), format: None })
        .collect();
    for q in quant_points(summary) {
        let role = quant_role(&q);
        let format = q["format"].as_str().and_then(|f| QuantFormat::parse(f).ok());
        if let Some(format) = format {
            out.push(Point { name: format!("{role}-{}", format.name()), role, format: Some(format) });
        }
    }
    out
}

fn quant_points(summary: &serde_json::Value) -> Vec<serde_json::Value> {
    summary.get("quantize").and_then(|q| q.as_array()).cloned().unwrap_or_default()
}

/// The sweep names a model by its folder (`student`, `baseline`) or, for the teacher, by the
/// teacher's name as the summary records it.
fn quant_role(q: &serde_json::Value) -> String {
    let model = q["model"].as_str().unwrap_or_default();
    match model {
        "student" | "baseline" | "model" => model.to_string(),
        _ => "teacher".to_string(),
    }
}

/// The summary's record of a point: its model's entry, or its entry in the quantization sweep.
pub fn point_record(summary: &serde_json::Value, p: &Point) -> serde_json::Value {
    match p.format {
        None => summary[&p.role].clone(),
        Some(f) => quant_points(summary)
            .into_iter()
            .find(|q| quant_role(q) == p.role && q["format"].as_str() == Some(f.name().as_str()))
            .unwrap_or_default(),
    }
}

/// Every deterministic metric of a summary as `POINT.METRIC` → value (the expected values of a rerun).
pub fn metrics_of(summary: &serde_json::Value) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for p in points_of(summary) {
        let record = point_record(summary, &p);
        let names: &[&str] = if p.format.is_some() { &QUANT_METRICS } else { &MODEL_METRICS };
        for m in names {
            if let Some(v) = record.get(*m).and_then(|v| v.as_f64()) {
                out.insert(format!("{}.{m}", p.name), v);
            }
        }
    }
    out
}
