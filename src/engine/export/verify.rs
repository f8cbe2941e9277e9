//! `[expected]`: the metrics an exported run measured, and their comparison with a rerun
//! (`distill-tui run RECIPE --verify`).

use super::points::metrics_of;
pub use crate::engine::recipe::records::{d_tolerance, Expected};
use crate::engine::summary::RunSummary;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Where `run --verify` writes its rerun: a scratch folder beside the recipe, replaced each time.
pub const VERIFY_DIR: &str = "verify-run";

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
pub fn compare(expected: &Expected, summary: &RunSummary) -> Vec<Comparison> {
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
