//! `finetune RECIPE` and `run RECIPE` for classification recipes (`task = "classification"`).

use super::run::How;
use super::RecipeOverrides;
use crate::engine::classify::pipeline::{run_classification, run_finetune};
use crate::engine::classify::recipe::{ClassifyRecipe, LoadedClassify};
use crate::engine::context::Settings;
use crate::engine::train::RunOptions;
use crate::headless::{follow, Mode};
use std::path::Path;
use std::sync::Arc;

/// Which part of a classification recipe to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The teacher only.
    Finetune,
    /// Teacher, student and baseline.
    Run,
}

pub fn run(recipe: &Path, overrides: &RecipeOverrides, stage: Stage, how: How, settings: Arc<Settings>) -> i32 {
    match overrides.parsed().and_then(|o| ClassifyRecipe::load_with(recipe, &o)) {
        Ok(loaded) => follow_run(loaded, stage, how, settings),
        Err(e) => crate::headless::fail(&e, how.json),
    }
}

/// Runs a loaded classification recipe as a job and follows its events; returns the exit code.
pub fn follow_run(loaded: LoadedClassify, stage: Stage, how: How, settings: Arc<Settings>) -> i32 {
    let How { resume, json, output, .. } = how;
    let opts = RunOptions { resume };
    let what = loaded.path.display().to_string();
    let handle = match stage {
        Stage::Finetune => crate::jobs::spawn("finetune", format!("finetune {what}"), settings, move |ctx| {
            run_finetune(&loaded, &opts, ctx)
        }),
        Stage::Run => crate::jobs::spawn("classify", format!("classify {what}"), settings, move |ctx| {
            run_classification(&loaded, &opts, ctx)
        }),
    };
    follow(handle, if json { Mode::Json } else { Mode::Human }, output)
}
