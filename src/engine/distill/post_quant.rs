//! A recipe's `[quantize]` section: after training, every target (teacher, student, baseline) is
//! swept over the listed formats on the held-out text, each point measured against its own
//! unquantized model and reported as a `Point` event (the data of the accuracy-vs-size view).

use super::setup::Setup;
use crate::engine::eval::EvalOptions;
use crate::engine::loader::{load_model, LoadOptions, LoadedModel};
use crate::engine::quant::{sweep, QuantFormat, SweepOptions};
use crate::engine::recipe::LoadedRecipe;
use crate::engine::source::resolve_folder;
use crate::engine::{Error, Result};
use crate::jobs::JobContext;

/// The formats of a `[quantize]` section, checked before any training starts.
pub fn formats(lr: &LoadedRecipe) -> Result<Option<Vec<QuantFormat>>> {
    let Some(q) = &lr.recipe.quantize else { return Ok(None) };
    for t in &q.targets {
        if !matches!(t.as_str(), "teacher" | "student" | "baseline") {
            return Err(Error::Invalid(format!(
                "quantize.targets: unknown target `{t}`; valid: teacher, student, baseline"
            )));
        }
    }
    Ok(Some(QuantFormat::parse_list(&q.formats.join(","))?))
}

/// Sweeps the targets after training; returns the points for the summary.
pub fn run(lr: &LoadedRecipe, setup: &Setup, formats: &[QuantFormat], ctx: &JobContext) -> Result<serde_json::Value> {
    let q = lr.recipe.quantize.as_ref().expect("formats() found a [quantize] section");
    let out = lr.output_dir();
    let mut owned: Vec<LoadedModel> = Vec::new();
    let mut use_teacher = false;
    for t in &q.targets {
        match t.as_str() {
            // The sweep quantizes and measures on the CPU: a teacher on a GPU is loaded again.
            "teacher" => match &setup.teacher {
                Some(t) if !setup.device.is_cpu() => owned.push(load_model(&t.resolved, &LoadOptions::default())?),
                Some(_) => use_teacher = true,
                None => {}
            },
            role => {
                let dir = out.join(role);
                if dir.join("config.json").is_file() {
                    owned.push(load_model(&resolve_folder(role, &dir, None, None)?, &LoadOptions::default())?);
                }
            }
        }
    }
    let mut models: Vec<&LoadedModel> = Vec::new();
    if use_teacher {
        models.extend(setup.teacher.as_ref());
    }
    models.extend(owned.iter());
    let mut text = String::new();
    for f in lr.data_files(&lr.recipe.data.eval, "data.eval")? {
        text.push_str(
            &std::fs::read_to_string(&f).map_err(|e| Error::Invalid(format!("cannot read {}: {e}", f.display())))?,
        );
    }
    let eval =
        EvalOptions { seq_len: lr.recipe.data.seq_len, max_tokens: Some(lr.recipe.data.eval_tokens), batch_size: None };
    let opts = SweepOptions { eval, ..SweepOptions::default() };
    ctx.log(format!("quantizing {} model(s) × {} format(s)", models.len(), formats.len()));
    let results = sweep(&models, formats, &text, &opts, ctx)?;
    serde_json::to_value(&results).map_err(|e| Error::Invalid(e.to_string()))
}
