//! `run RECIPE` (distillation) and `pretrain RECIPE`, headless.

use crate::engine::classify::recipe::is_classification;
use crate::engine::distill::trainer::{run_recipe, RunOptions};
use crate::engine::pretrain::run_pretrain;
use crate::engine::recipe::Recipe;
use crate::headless::{follow, Mode};
use std::path::Path;

/// Which loop a recipe runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Distill,
    Pretrain,
}

pub fn run(recipe: &Path, kind: Kind, resume: bool, json: bool) -> i32 {
    let text = std::fs::read_to_string(recipe).unwrap_or_default();
    if kind == Kind::Distill && is_classification(&text) {
        if resume {
            eprintln!("error: classification runs have no checkpoints to resume from; run without --resume");
            return 2;
        }
        return super::classify::run(recipe, super::classify::Stage::Run, json);
    }
    let loaded = match Recipe::load(recipe) {
        Ok(r) => r,
        Err(e) => return bad_recipe(&e, json),
    };
    let opts = RunOptions { resume };
    let handle = match kind {
        Kind::Distill => crate::jobs::spawn("distill", format!("distill {}", recipe.display()), move |ctx| {
            run_recipe(&loaded, &opts, ctx)
        }),
        Kind::Pretrain => crate::jobs::spawn("pretrain", format!("pretrain {}", recipe.display()), move |ctx| {
            run_pretrain(&loaded, &opts, ctx)
        }),
    };
    follow(handle, if json { Mode::Json } else { Mode::Human })
}

/// Reports a recipe that does not load (a `failed` JSON line with `--json`); exit code 2.
pub(super) fn bad_recipe(e: &crate::engine::Error, json: bool) -> i32 {
    if json {
        println!("{}", serde_json::json!({ "event": "failed", "error": e.to_string(), "bad_input": true }));
    }
    eprintln!("error: {e}");
    2
}
