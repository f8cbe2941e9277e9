//! `run RECIPE` (distillation, `--verify` to rerun an exported recipe and compare its metrics) and
//! `pretrain RECIPE`, headless.

use super::RecipeOverrides;
use crate::engine::classify::recipe::{is_classification, ClassifyRecipe, LoadedClassify};
use crate::engine::context::Settings;
use crate::engine::distill::trainer::run_recipe;
use crate::engine::export::verify::{compare, verify_dir, Expected};
use crate::engine::pretrain::run_pretrain;
use crate::engine::recipe::{LoadedRecipe, Recipe};
use crate::engine::summary::RunSummary;
use crate::engine::train::RunOptions;
use crate::engine::Error;
use crate::headless::progress::Output;
use crate::headless::{follow, Mode};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Which loop a recipe runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Distill,
    Pretrain,
}

/// A recipe of either task.
enum Loaded {
    Lm(LoadedRecipe),
    Classify(LoadedClassify),
}

/// How a recipe command runs: its flags besides the recipe and its overrides.
#[derive(Clone, Copy, Debug)]
pub struct How {
    pub resume: bool,
    pub json: bool,
    /// `run --verify`.
    pub verify: bool,
    pub output: Output,
}

impl Loaded {
    fn load(recipe: &Path, overrides: &RecipeOverrides, kind: Kind) -> crate::engine::Result<Self> {
        let overrides = overrides.parsed()?;
        let text = std::fs::read_to_string(recipe).unwrap_or_default();
        if kind == Kind::Distill && is_classification(&text) {
            ClassifyRecipe::load_with(recipe, &overrides).map(Self::Classify)
        } else {
            Recipe::load_with(recipe, &overrides).map(Self::Lm)
        }
    }

    fn expected(&self) -> Option<Expected> {
        match self {
            Self::Lm(l) => l.recipe.expected.clone(),
            Self::Classify(l) => l.recipe.expected.clone(),
        }
    }

    /// Sends the run's output to `dir`.
    fn redirect(&mut self, dir: &Path) {
        let out = match self {
            Self::Lm(l) => &mut l.recipe.output.dir,
            Self::Classify(l) => &mut l.recipe.output.dir,
        };
        *out = dir.display().to_string();
    }
}

pub fn run(recipe: &Path, overrides: &RecipeOverrides, kind: Kind, how: How, settings: Arc<Settings>) -> i32 {
    let How { resume, json, verify, output } = how;
    let mut loaded = match Loaded::load(recipe, overrides, kind) {
        Ok(r) => r,
        Err(e) => return crate::headless::fail(&e, json),
    };
    let expected = match verification(verify, loaded.expected(), recipe, json) {
        Ok(e) => e,
        Err(code) => return code,
    };
    if let Some((_, dir)) = &expected {
        loaded.redirect(dir);
    }
    let opts = RunOptions { resume };
    let what = recipe.display();
    // Where a sweep's members go (the job decides the same way), for the table at the end.
    let sweep_root = match &loaded {
        Loaded::Lm(l) if l.sweep.is_some() => crate::engine::library::fresh_dir(&l.output_dir(), resume).ok(),
        _ => None,
    };
    let handle = match (loaded, kind) {
        (Loaded::Classify(l), _) => {
            let code = super::classify::follow_run(l, super::classify::Stage::Run, how, settings);
            return finish(expected, code, json);
        }
        (Loaded::Lm(l), Kind::Distill) => {
            crate::jobs::spawn("distill", format!("distill {what}"), settings, move |ctx| run_recipe(&l, &opts, ctx))
        }
        (Loaded::Lm(l), Kind::Pretrain) => {
            crate::jobs::spawn("pretrain", format!("pretrain {what}"), settings, move |ctx| {
                run_pretrain(&l, &opts, ctx)
            })
        }
    };
    let code = follow(handle, if json { Mode::Json } else { Mode::Human }, output);
    if let (0, Some(root), false) = (code, &sweep_root, json) {
        sweep_table(root);
    }
    finish(expected, code, json)
}

/// The table of a finished sweep's points, its members told apart by what they set.
fn sweep_table(root: &Path) {
    let members = match crate::engine::library::sweep::SweepRecord::read(root) {
        Ok(s) => s.dirs(root).iter().filter_map(|d| crate::engine::library::RunEntry::read(d)).collect::<Vec<_>>(),
        Err(_) => return,
    };
    match super::library::points_of(&members) {
        Ok(points) => {
            let metric = crate::engine::tradeoff::Metric::Perplexity;
            let table = crate::engine::library::table::points_table(
                &points,
                metric,
                crate::engine::library::table::Format::Text,
            );
            println!(
                "
sweep {} ({} runs):
{table}",
                root.display(),
                members.len()
            );
        }
        Err(e) => eprintln!("note: no table: {e}"),
    }
}

/// With `--verify`: the recipe's `[expected]` metrics and the scratch folder the rerun goes to
/// (emptied now); an exit code when the recipe has none or the folder cannot be cleared.
fn verification(
    verify: bool,
    expected: Option<Expected>,
    recipe: &Path,
    json: bool,
) -> Result<Option<(Expected, PathBuf)>, i32> {
    let expected = match (verify, expected) {
        (false, _) => return Ok(None),
        (true, Some(e)) => e,
        (true, None) => {
            let why = format!(
                "{} has no [expected] section; --verify reruns a recipe written by `distill-tui export`",
                recipe.display()
            );
            return Err(crate::headless::fail(&Error::Invalid(why), json));
        }
    };
    let marker = recipe.parent().unwrap_or(Path::new(".")).join(crate::engine::export::INCOMPLETE);
    if marker.exists() {
        let why = format!(
            "{} is from an export that did not finish ({} is there); export the point again",
            recipe.display(),
            marker.display()
        );
        return Err(crate::headless::fail(&Error::Invalid(why), json));
    }
    // The rerun goes to a scratch folder beside the recipe, replaced each time.
    let dir = verify_dir(recipe);
    if dir.exists() {
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            return Err(crate::headless::fail(&Error::Invalid(format!("cannot clear {}: {e}", dir.display())), json));
        }
    }
    Ok(Some((expected, dir)))
}

/// The exit code of a run, after the comparison with `[expected]` when it was a verification.
fn finish(expected: Option<(Expected, PathBuf)>, code: i32, json: bool) -> i32 {
    match expected {
        Some((e, dir)) if code == 0 => report(&e, &dir, json),
        _ => code,
    }
}

/// Compares the rerun's summary with the expected metrics: 0 when all match, 1 naming the others.
fn report(expected: &Expected, out: &Path, json: bool) -> i32 {
    let summary = match RunSummary::read(out) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: the rerun left no readable summary: {e}");
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
