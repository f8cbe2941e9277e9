//! `finetune RECIPE` and `run RECIPE` for classification recipes (`task = "classification"`).

use crate::engine::classify::pipeline::{run_classification, run_finetune};
use crate::engine::classify::recipe::ClassifyRecipe;
use crate::headless::{follow, Mode};
use std::path::Path;

/// Which part of a classification recipe to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The teacher only.
    Finetune,
    /// Teacher, student and baseline.
    Run,
}

pub fn run(recipe: &Path, stage: Stage, json: bool) -> i32 {
    let loaded = match ClassifyRecipe::load(recipe) {
        Ok(r) => r,
        Err(e) => return super::run::bad_recipe(&e, json),
    };
    let handle = match stage {
        Stage::Finetune => crate::jobs::spawn("finetune", format!("finetune {}", recipe.display()), move |ctx| {
            run_finetune(&loaded, ctx)
        }),
        Stage::Run => crate::jobs::spawn("classify", format!("classify {}", recipe.display()), move |ctx| {
            run_classification(&loaded, ctx)
        }),
    };
    follow(handle, if json { Mode::Json } else { Mode::Human })
}
