//! Export: one point of a finished run as a reproducible recipe plus deployable artifacts, and
//! optionally as projects for other engines (`trl`: Hugging Face transformers on many GPUs;
//! `llama.cpp`: the quantize and perplexity commands). Documented in `docs/export.md`.
//!
//! `OUT/recipe.toml` is the run's recipe with its paths rebased to `OUT`, hub models pinned to the
//! revision the run used, a `[provenance]` section (sha256 of every model and data file, the tool
//! version) and an `[expected]` section (every deterministic metric the run measured), which
//! `distill-tui run OUT/recipe.toml --verify` reproduces.

pub mod llamacpp;
pub mod model_card;
pub mod points;
pub mod provenance;
pub mod rebase;
pub mod trl;
pub mod verify;

use crate::engine::context::JobContext;
use crate::engine::derive::save_safetensors;
use crate::engine::fsutil::{write_atomic, write_atomic_with};
use crate::engine::loader::{load_model, LoadOptions};
use crate::engine::quant::{export, quantize_model, QuantFormat, QuantOptions};
use crate::engine::recipe::{LoadedRecipe, Recipe};
use crate::engine::source::{resolve_folder, ResolvedModel};
use crate::engine::summary::TaskKind;
use crate::engine::{Error, Result};
use points::{metrics_of, FinishedRun, Point};
use provenance::{absolute, collect, resolve_spec};
use serde_json::json;
use std::path::{Path, PathBuf};
use verify::Expected;

/// An engine to write a project for, besides the recipe and the artifacts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Trl,
    LlamaCpp,
}

impl Target {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "trl" => Ok(Self::Trl),
            "llama.cpp" | "llamacpp" => Ok(Self::LlamaCpp),
            other => Err(Error::Invalid(format!("unknown export target `{other}`; valid: trl, llama.cpp"))),
        }
    }
}

/// What to export.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportRequest {
    pub run_dir: PathBuf,
    pub point: String,
    pub out: PathBuf,
    pub targets: Vec<Target>,
}

/// The folder the run resolved its recipe's relative paths against.
pub fn recipe_dir(run: &FinishedRun) -> PathBuf {
    match &run.provenance {
        Some(p) => p.recipe_dir.clone(),
        // Runs made before provenance was recorded: the summary names the recipe file.
        None => Path::new(&run.summary.recipe).parent().map(absolute).unwrap_or_default(),
    }
}

/// The run's recipe (a language-model run's), resolved against the folder the run resolved it against.
pub fn recipe_of(run: &FinishedRun) -> Result<LoadedRecipe> {
    let recipe = run.recipe.clone().ok_or_else(|| {
        Error::Invalid(format!("{} is a classification run, not a language-model one", run.dir.display()))
    })?;
    Ok(LoadedRecipe { recipe, path: run.dir.join("recipe.toml"), base_dir: recipe_dir(run), sweep: None })
}

/// The `[expected]` section of a point's exported recipe: every deterministic metric of the run.
pub fn expected(run: &FinishedRun, point: &Point) -> Expected {
    Expected { point: Some(point.name.clone()), tolerance: verify::d_tolerance(), metrics: metrics_of(&run.summary) }
}

/// Exports a point; returns a report naming every file written.
pub fn export_run(req: &ExportRequest, ctx: &JobContext) -> Result<serde_json::Value> {
    crate::engine::fsutil::refuse_overwriting_input(&req.out, &[&req.run_dir], "--out")?;
    let run = FinishedRun::open(&req.run_dir)?;
    let point = run.point(&req.point)?;
    if run.summary.task() == TaskKind::Classification {
        return owned(&req.out, || crate::engine::classify::export::export(&run, &point, req, ctx));
    }
    for t in &req.targets {
        match t {
            Target::Trl => trl::check(&run)?,
            Target::LlamaCpp => llamacpp::check(&point, &run)?,
        }
    }
    // Taken once the request is known to be valid: a refused export leaves no folder behind.
    owned(&req.out, || export_lm(&run, &point, req, ctx))
}

/// The marker of an export still being written (or killed while it was): `run --verify` refuses
/// a folder holding it.
pub const INCOMPLETE: &str = "export.incomplete";

/// Runs `write` with `out` locked and marked incomplete until it succeeds.
fn owned(out: &Path, write: impl FnOnce() -> Result<serde_json::Value>) -> Result<serde_json::Value> {
    let _lock = crate::engine::fsutil::FolderLock::acquire(out, "distill-tui export")?;
    let marker = out.join(INCOMPLETE);
    write_atomic(&marker, b"an export into this folder did not finish; export again before using it\n")?;
    let report = write()?;
    std::fs::remove_file(&marker).map_err(|e| Error::io(format!("removing {}", marker.display()), e))?;
    Ok(report)
}

fn export_lm(run: &FinishedRun, point: &Point, req: &ExportRequest, ctx: &JobContext) -> Result<serde_json::Value> {
    let lr = recipe_of(run)?;
    let mut warnings = Vec::new();
    let prov = match &run.provenance {
        Some(p) => {
            ctx.log("checking the run's inputs against their recorded sha256");
            p.provenance.check(&lr, ctx.hub())?;
            p.provenance.clone()
        }
        None => {
            warnings.push(
                "the run predates provenance recording: the sha256 values are of the files as they are now".to_string(),
            );
            collect(&lr, ctx.hub())?
        }
    };
    let out = create_out(&req.out)?;
    let mut recipe = rebase::recipe(&lr, &prov, &out);
    recipe.expected = Some(expected(&run, &point));
    let recipe_text = recipe.to_toml()?;
    let teacher = || {
        let spec = lr.recipe.teacher.as_ref().map(|t| t.model.clone()).unwrap_or_default();
        resolve_spec(&lr, &spec, ctx.hub())
    };
    let mut files = write_point(&run, &point, &recipe_text, &out, teacher, ctx)?;
    let exported = LoadedRecipe { recipe, path: out.join("recipe.toml"), base_dir: out.clone(), sweep: None };
    for t in &req.targets {
        files.extend(match t {
            Target::Trl => trl::write(&exported, &out.join("trl"), ctx)?,
            Target::LlamaCpp => llamacpp::write(&exported, &point, &out.join("llama.cpp"))?,
        });
    }
    warnings.extend(trl_warnings(&req.targets, &exported.recipe));
    for w in &warnings {
        ctx.log(format!("warning: {w}"));
    }
    Ok(json!({
        "point": point.name,
        "out": out.display().to_string(),
        "files": files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
        "warnings": warnings,
    }))
}

fn trl_warnings(targets: &[Target], r: &Recipe) -> Option<String> {
    (targets.contains(&Target::Trl) && r.distill.cache_top_k > 0).then(|| {
        format!(
            "the run used the teacher top-{} cache; the trl script uses the full-vocabulary loss (identical when cache_top_k = 0)",
            r.distill.cache_top_k
        )
    })
}

/// The GGUF file of a GGML (or float) point of a family GGUF can hold (`gguf`), safetensors for
/// the own integer formats, and the dequantized values of a GGML point of another family.
pub fn quant_file_name(point: &Point, format: QuantFormat, gguf: bool) -> String {
    match format {
        QuantFormat::Int(_) => format!("{}.safetensors", point.name),
        QuantFormat::Ggml(_) | QuantFormat::GgmlGptq(_) if !gguf => format!("{}.dequantized.safetensors", point.name),
        _ if !gguf => format!("{}.safetensors", point.name),
        _ => format!("{}.gguf", point.name),
    }
}

/// The export folder `out`, created, as an absolute path.
pub fn create_out(out: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(format!("creating {}", out.display()), e))?;
    Ok(absolute(out))
}

/// Writes the exported recipe and the point's files into `out`: a trained model's Hugging Face
/// folder with its model card, or the quantized file of a quantized point (quantized from the run's
/// folder of the role, or from `teacher()` for the teacher). Returns the files written.
pub fn write_point(
    run: &FinishedRun,
    point: &Point,
    recipe_text: &str,
    out: &Path,
    teacher: impl FnOnce() -> Result<ResolvedModel>,
    ctx: &JobContext,
) -> Result<Vec<PathBuf>> {
    let mut files = vec![out.join("recipe.toml")];
    write_atomic(&files[0], recipe_text.as_bytes())?;
    let role_dir = run.dir.join(point.role.name());
    if role_dir.join("config.json").is_file() {
        ctx.log(format!("writing the {} as a Hugging Face folder", point.role.name()));
        let dir = out.join("model");
        files.extend(copy_hf_folder(&role_dir, &dir)?);
        let card = model_card::render(point, &run.summary, recipe_text);
        write_atomic(&dir.join("README.md"), card.as_bytes())?;
        files.push(dir.join("README.md"));
    }
    if let Some(format) = point.format {
        ctx.log(format!("quantizing the {} to {}", point.role.name(), format.name()));
        let resolved = if role_dir.join("config.json").is_file() {
            resolve_folder(point.role.name(), &role_dir, Default::default())?
        } else {
            teacher()?
        };
        let model = load_model(&resolved, &LoadOptions::default())?;
        // A calibrated point (GPTQ, a budget) is calibrated as the run's sweep calibrated it.
        let imatrix = match format.calibration_need() {
            Some(_) => Some(crate::engine::distill::post_quant::calibrate_for(
                &recipe_of(run)?,
                &model,
                format.needs_hessians(),
                &ctx.monitor("calibration"),
            )?),
            None => None,
        };
        let q = quantize_model(
            &model,
            format,
            &QuantOptions { imatrix: imatrix.as_ref(), ..Default::default() },
            &ctx.monitor(format!("quantizing {}", format.name())),
        )?;
        let gguf = crate::engine::quant::gguf_export::supports(&model);
        let path = out.join(quant_file_name(point, format, gguf));
        if matches!(format, QuantFormat::Ggml(_) | QuantFormat::GgmlGptq(_)) && !gguf {
            // Neither GGUF (llama.cpp knows no such family) nor safetensors (no GGML block types)
            // holds these blocks: the point's weights are written as the values they stand for.
            ctx.log(format!("{} is no GGUF family: writing the point's weights dequantized", model.info.name));
            save_safetensors(&path, &q.dequantized()?)?;
        } else {
            export(&model, &q, &path)?;
        }
        files.push(path);
    }
    Ok(files)
}

/// Copies a Hugging Face folder's files (not sub-folders), each atomically.
fn copy_hf_folder(from: &Path, to: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(from).map_err(|e| Error::io(format!("reading {}", from.display()), e))?;
    let mut written = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if !path.is_file() || name.starts_with('.') {
            continue;
        }
        let dest = to.join(&name);
        let mut src = std::fs::File::open(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        write_atomic_with(&dest, |f| std::io::copy(&mut src, f).map(|_| ()))?;
        written.push(dest);
    }
    written.sort();
    Ok(written)
}
