//! The records a recipe carries besides its settings: `[provenance]` (the exact inputs of the run
//! it was exported from) and `[expected]` (the metrics that run measured). Plain data: checking
//! them is `export::provenance` and `export::verify`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// The distill-tui version that made the run.
    pub tool_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<ModelRecord>,
    /// Training and evaluation files (and a pretraining tokenizer), relative to the recipe's folder.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data: Vec<FileRecord>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRecord {
    /// `teacher` or `student`.
    pub role: String,
    /// The model as the recipe names it.
    pub spec: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub_id: Option<String>,
    /// Commit hash of the hub snapshot the run used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// config, weights and tokenizer, named relative to the model's folder.
    pub files: Vec<FileRecord>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRecord {
    pub path: String,
    pub sha256: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expected {
    /// The point the export was made for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point: Option<String>,
    /// A metric matches when |measured − expected| ≤ tolerance · |expected| (relative).
    #[serde(default = "d_tolerance")]
    pub tolerance: f64,
    /// `POINT.METRIC` → value, e.g. `student.perplexity`, `student-q4_0.kl`.
    pub metrics: BTreeMap<String, f64>,
}

/// The default relative tolerance: a rerun on the same machine is bit-identical; another CPU may
/// sum in another order and differ in the last digits of a float.
pub fn d_tolerance() -> f64 {
    1e-4
}
