//! `run RECIPE`: a distillation recipe, headless.

use crate::engine::distill::trainer::{run_recipe, RunOptions};
use crate::engine::recipe::Recipe;
use crate::headless::{follow, Mode};
use std::path::Path;

pub fn run(recipe: &Path, resume: bool, json: bool) -> i32 {
    let loaded = match Recipe::load(recipe) {
        Ok(r) => r,
        Err(e) => {
            if json {
                println!("{}", serde_json::json!({ "event": "failed", "error": e.to_string(), "bad_input": true }));
            }
            eprintln!("error: {e}");
            return 2;
        }
    };
    let description = format!("distill {}", recipe.display());
    let handle =
        crate::jobs::spawn("distill", description, move |ctx| run_recipe(&loaded, &RunOptions { resume }, ctx));
    follow(handle, if json { Mode::Json } else { Mode::Human })
}
