//! `[expected]`: the metrics an exported run measured, and their comparison with a rerun
//! (`distill-tui run RECIPE --verify`).

use super::points::metrics_of;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where `run --verify` writes its rerun: a scratch folder beside the recipe, replaced each time.
pub const VERIFY_DIR: &str = "verify-run";

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

/// One metric of a rerun next to its expected value.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub metric: String,
    pub expected: f64,
    /// `None` when the rerun did not measure it.
    pub measured: Option<f64>,
    pub abs_diff: f64,
    pub ok: bool,
}

/// Compares every expected metric with the rerun's summary.
pub fn compare(expected: &Expected, summary: &serde_json::Value) -> Vec<Comparison> {
    let measured = metrics_of(summary);
    expected
        .metrics
        .iter()
        .map(|(metric, &want)| {
            let got = measured.get(metric).copied();
            let abs_diff = got.map(|g| (g - want).abs()).unwrap_or(f64::INFINITY);
            let ok = abs_diff <= expected.tolerance * want.abs() || abs_diff == 0.0;
            Comparison { metric: metric.clone(), expected: want, measured: got, abs_diff, ok }
        })
        .collect()
}

/// The rerun folder of a recipe at `recipe_path`.
pub fn verify_dir(recipe_path: &Path) -> PathBuf {
    recipe_path.parent().unwrap_or(Path::new(".")).join(VERIFY_DIR)
}
