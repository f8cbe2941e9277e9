//! A recipe's `[quantize]` section: every target (teacher, student, baseline) swept over the listed
//! formats on the held-out text, each point measured against its own unquantized model and against
//! the teacher, and reported as a `Point` event (the data of the accuracy-vs-size view). Runs after
//! training, or on its own from the workbench.

use crate::engine::context::JobContext;
use crate::engine::eval::EvalOptions;
use crate::engine::events::QuantPoint;
use crate::engine::loader::{load_model, LoadOptions, LoadedModel};
use crate::engine::quant::{sweep, QuantFormat, SweepOptions};
use crate::engine::recipe::LoadedRecipe;
use crate::engine::source::resolve_folder;
use crate::engine::{Error, Result};

/// The formats of a `[quantize]` section, checked before any work starts; a QAD run's format
/// (`distill.qad`) is among them, with or without the section.
pub fn formats(lr: &LoadedRecipe) -> Result<Option<Vec<QuantFormat>>> {
    let mut formats = lr.recipe.quantize.as_ref().map(|q| q.parsed_formats()).transpose()?;
    if let Some(f) = lr.recipe.qad_format()? {
        let list = formats.get_or_insert_with(Vec::new);
        if !list.contains(&f) {
            list.insert(0, f);
        }
    }
    Ok(formats)
}

/// Reads and joins the files a data key names.
fn read_files(lr: &LoadedRecipe, pattern: &str, key: &str) -> Result<String> {
    let mut text = String::new();
    for f in lr.data_files(pattern, key)? {
        text.push_str(
            &std::fs::read_to_string(&f).map_err(|e| Error::Invalid(format!("cannot read {}: {e}", f.display())))?,
        );
        text.push('\n');
    }
    Ok(text)
}

/// The calibration a recipe's sweep quantizes with (`quantize.imatrix = true`): `data.train`, in
/// windows of `data.seq_len`, its first `quantize.calib_tokens` tokens (default `data.eval_tokens`).
/// Export calibrates a calibrated point (`+gptq`, `budget-…`) the same way, so the file holds the
/// point the sweep measured.
pub fn calibration(lr: &LoadedRecipe) -> Result<(String, Option<usize>)> {
    let tokens = lr.recipe.quantize.as_ref().and_then(|q| q.calib_tokens).unwrap_or(lr.recipe.data.eval_tokens);
    Ok((read_files(lr, &lr.recipe.data.train, "data.train")?, Some(tokens)))
}

/// Calibrates `model` on the recipe's calibration text ([`calibration`]), with GPTQ's Gram
/// matrices when `hessians`.
pub fn calibrate_for(
    lr: &LoadedRecipe,
    model: &LoadedModel,
    hessians: bool,
    monitor: &crate::engine::context::Monitor,
) -> Result<crate::engine::quant::Imatrix> {
    let (text, max_tokens) = calibration(lr)?;
    let opts = EvalOptions { seq_len: lr.recipe.data.seq_len, max_tokens, ..Default::default() };
    crate::engine::quant::calibrate(model, &text, &opts, hessians, monitor)
}

/// The trained model of `role` in the run's output folder; before any run, the recipe's own
/// student for the `student` target.
fn target_model(lr: &LoadedRecipe, role: &str, hub: &crate::engine::hub::HubSettings) -> Result<Option<LoadedModel>> {
    let dir = lr.output_dir().join(role);
    if dir.join("config.json").is_file() {
        return Ok(Some(load_model(&resolve_folder(role, &dir, Default::default())?, &LoadOptions::default())?));
    }
    match (role, &lr.recipe.student.model) {
        ("student", Some(spec)) => {
            let spec = lr.model_spec(spec);
            let resolved = crate::engine::source::resolve(&spec, hub, &|_| {})?;
            Ok(Some(load_model(&resolved, &LoadOptions::default())?))
        }
        _ => Ok(None),
    }
}

/// Sweeps the recipe's targets over `formats`; `teacher` is the loaded teacher (the reference
/// for KL and agreement, and the `teacher` target). Returns the points for the summary.
pub fn run(
    lr: &LoadedRecipe,
    teacher: Option<&LoadedModel>,
    formats: &[QuantFormat],
    ctx: &JobContext,
) -> Result<Vec<QuantPoint>> {
    let qad = lr.recipe.qad_format()?;
    let (mut targets, imatrix) = match (&lr.recipe.quantize, qad) {
        (Some(q), _) => (q.targets.clone(), q.imatrix),
        (None, Some(_)) => (Vec::new(), false),
        (None, None) => {
            return Err(Error::Invalid(
                "the recipe has no [quantize] section: set quantize.formats (e.g. q8_0, q4_0, int4-g64)".into(),
            ))
        }
    };
    // A QAD run's point is its student in the format it trained in.
    if qad.is_some() && !targets.iter().any(|t| t == "student") {
        targets.push("student".into());
    }
    let mut owned: Vec<LoadedModel> = Vec::new();
    let mut use_teacher = false;
    for t in &targets {
        ctx.check()?;
        match t.as_str() {
            "teacher" => use_teacher = teacher.is_some(),
            role => match target_model(lr, role, ctx.hub())? {
                Some(m) => owned.push(m),
                None => ctx.log(format!("no {role} to quantize yet (run the recipe first)")),
            },
        }
    }
    let mut models: Vec<&LoadedModel> = Vec::new();
    if use_teacher {
        models.extend(teacher);
    }
    models.extend(owned.iter());
    if models.is_empty() {
        return Err(Error::Invalid(format!("nothing to quantize: targets {} found no model", targets.join(", "))));
    }
    let text = read_files(lr, &lr.recipe.data.eval, "data.eval")?;
    let eval = EvalOptions {
        seq_len: lr.recipe.data.seq_len,
        max_tokens: Some(lr.recipe.data.eval_tokens),
        ..Default::default()
    };
    let (calibration, calib_tokens) = match imatrix {
        true => {
            let (text, tokens) = calibration(lr)?;
            (Some(text), tokens)
        }
        false => (None, None),
    };
    let opts = SweepOptions { eval, calibration, calib_tokens, ..SweepOptions::default() };
    ctx.log(format!("quantizing {} model(s) × {} format(s)", models.len(), formats.len()));
    let mut points = sweep(&models, teacher, formats, &text, &opts, ctx)?;
    if let Some(f) = qad {
        for p in points.iter_mut().filter(|p| p.model == "student" && p.format == f.name()) {
            p.qad = true;
        }
    }
    Ok(points)
}
