//! `run RECIPE` (distillation, `--verify` to rerun an exported recipe and compare its metrics) and
//! `pretrain RECIPE`, headless.

use crate::engine::classify::recipe::is_classification;
use crate::engine::distill::trainer::{run_recipe, RunOptions};
use crate::engine::export::verify::{compare, verify_dir, Expected};
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

fn bad_input(message: &str, json: bool) -> i32 {
    if json {
        println!("{}", serde_json::json!({ "event": "failed", "error": message, "bad_input": true }));
    }
    eprintln!("error: {message}");
    2
}

pub fn run(recipe: &Path, kind: Kind, resume: bool, json: bool, verify: bool) -> i32 {
    let text = std::fs::read_to_string(recipe).unwrap_or_default();
    if kind == Kind::Distill && is_classification(&text) {
        if resume || verify {
            return bad_input("classification runs have no checkpoints to resume from and no --verify yet", json);
        }
        return super::classify::run(recipe, super::classify::Stage::Run, json);
    }
    let mut loaded = match Recipe::load(recipe) {
        Ok(r) => r,
        Err(e) => return bad_input(&e.to_string(), json),
    };
    let expected = match (verify, loaded.recipe.expected.clone()) {
        (false, _) => None,
        (true, Some(e)) => Some(e),
        (true, None) => {
            return bad_input(
                &format!(
                    "{} has no [expected] section; --verify reruns a recipe written by `distill-tui export`",
                    recipe.display()
                ),
                json,
            )
        }
    };
    if expected.is_some() {
        // The rerun goes to a scratch folder beside the recipe, replaced each time.
        let dir = verify_dir(recipe);
        if dir.exists() {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                return bad_input(&format!("cannot clear {}: {e}", dir.display()), json);
            }
        }
        loaded.recipe.output.dir = dir.display().to_string();
    }
    let out = loaded.output_dir();
    let opts = RunOptions { resume };
    let handle = match kind {
        Kind::Distill => crate::jobs::spawn("distill", format!("distill {}", recipe.display()), move |ctx| {
            run_recipe(&loaded, &opts, ctx)
        }),
        Kind::Pretrain => crate::jobs::spawn("pretrain", format!("pretrain {}", recipe.display()), move |ctx| {
            run_pretrain(&loaded, &opts, ctx)
        }),
    };
    let code = follow(handle, if json { Mode::Json } else { Mode::Human });
    match expected {
        Some(e) if code == 0 => report(&e, &out, json),
        _ => code,
    }
}

/// Compares the rerun's summary with the expected metrics: 0 when all match, 1 naming the others.
fn report(expected: &Expected, out: &Path, json: bool) -> i32 {
    let path = out.join("summary.json");
    let summary: serde_json::Value =
        match std::fs::read_to_string(&path).ok().and_then(|t| serde_json::from_str(&t).ok()) {
            Some(s) => s,
            None => {
                eprintln!("error: the rerun left no readable {}", path.display());
                return 1;
            }
        };
    let rows = compare(expected, &summary);
    let failed: Vec<_> = rows.iter().filter(|r| !r.ok).collect();
    if json {
        println!(
            "{}",
            serde_json::json!({ "event": "verify", "ok": failed.is_empty(), "tolerance": expected.tolerance, "metrics": rows })
        );
    } else {
        for r in &rows {
            let measured = r.measured.map(|m| m.to_string()).unwrap_or_else(|| "not measured".into());
            let verdict = if r.ok { "ok" } else { "MISMATCH" };
            println!(
                "verify {:<36} expected {}  measured {measured}  |diff| {:e}  {verdict}",
                r.metric, r.expected, r.abs_diff
            );
        }
    }
    if failed.is_empty() {
        if !json {
            println!("verified: {} metrics match within a relative tolerance of {:e}", rows.len(), expected.tolerance);
        }
        return 0;
    }
    let names: Vec<String> = failed
        .iter()
        .map(|r| {
            let measured = r.measured.map(|m| m.to_string()).unwrap_or_else(|| "not measured".into());
            format!("{} (expected {}, measured {measured})", r.metric, r.expected)
        })
        .collect();
    eprintln!(
        "error: the rerun does not reproduce {} beyond the relative tolerance {:e}",
        names.join(", "),
        expected.tolerance
    );
    1
}

/// Reports a recipe that does not load (a `failed` JSON line with `--json`); exit code 2.
pub(super) fn bad_recipe(e: &crate::engine::Error, json: bool) -> i32 {
    bad_input(&e.to_string(), json)
}
