//! Engine work the workbench starts: each function is a job body and runs on a job thread.

use crate::engine::derive::StudentShape;
use crate::engine::eval::{measure_against, EvalOptions};
use crate::engine::header::{derived_header, read_header, ModelHeader};
use crate::engine::hub::{self, DownloadProgress};
use crate::engine::loader::{load_model, LoadOptions, LoadedModel};
use crate::engine::pair::check_pair;
use crate::engine::prompt::PromptLogits;
use crate::engine::source::resolve;
use crate::engine::tradeoff::{Origin, Point};
use crate::engine::{Error, Result};
use crate::jobs::JobContext;
use crate::tui::tasks::{Logits, Outbox, Output};
use serde_json::{json, Value};
use std::sync::Arc;

/// Which student the Models screen asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum StudentChoice {
    None,
    Model(String),
    Derive { shape: StudentShape, seed: u64 },
}

/// Resolves (downloading with progress when needed) and loads a model.
pub fn load(ctx: &JobContext, spec: &str) -> Result<Arc<LoadedModel>> {
    ctx.log(format!("loading {spec}"));
    let progress = |p: &DownloadProgress| ctx.progress(&format!("download {}", p.file), p.bytes, p.total, "bytes");
    let resolved = resolve(spec, ctx.hub(), &progress)?;
    ctx.check()?;
    // Everything the workbench loads is frozen: a GGUF stays in its block formats.
    Ok(Arc::new(load_model(&resolved, &LoadOptions { keep_quantized: true, ..LoadOptions::default() })?))
}

/// Resolves (downloading with progress when needed) and reads a model's config, tensor headers
/// and tokenizer, without loading its weights.
pub fn header(ctx: &JobContext, spec: &str) -> Result<ModelHeader> {
    ctx.log(format!("reading {spec}"));
    let progress = |p: &DownloadProgress| ctx.progress(&format!("download {}", p.file), p.bytes, p.total, "bytes");
    let resolved = resolve(spec, ctx.hub(), &progress)?;
    ctx.check()?;
    read_header(&resolved)
}

pub fn list_cache(ctx: &JobContext, out: &Outbox) -> Result<Value> {
    let models = hub::list_cache(ctx.hub())?;
    let n = models.len();
    out.send(Output::Cache(models));
    Ok(json!({ "cached_models": n }))
}

pub fn search(ctx: &JobContext, out: &Outbox, query: &str) -> Result<Value> {
    let found = hub::search(ctx.hub(), query, 30)?;
    let n = found.len();
    out.send(Output::Search(found));
    Ok(json!({ "query": query, "results": n }))
}

/// Reads the teacher's and student's headers (the derived student's from its config) and checks
/// the pair, loading no weights: a 1.5B GGUF teacher is checked in megabytes.
pub fn inspect_pair(
    ctx: &JobContext,
    out: &Outbox,
    teacher: &str,
    keep_quantized: bool,
    student: &StudentChoice,
    batch: usize,
    seq_len: usize,
) -> Result<Value> {
    let mut t = header(ctx, teacher)?;
    t.keep_quantized = keep_quantized;
    let s = match student {
        StudentChoice::None => None,
        StudentChoice::Model(spec) => Some(header(ctx, spec)?),
        StudentChoice::Derive { shape, .. } => Some(derived_header(&t, shape)?),
    };
    let pair = match &s {
        Some(s) => check_pair(&t, s, batch, seq_len).map_err(|e| e.to_string()),
        None => Err("no student chosen yet".to_string()),
    };
    let summary = json!({
        "teacher_parameters": t.info.parameters,
        "student_parameters": s.as_ref().map(|s| s.info.parameters),
        "fits": pair.as_ref().map(|p| p.fits).ok(),
    });
    out.send(Output::Models { teacher: t.info, student: s.map(|s| s.info), pair });
    Ok(summary)
}

/// Runs `model` once on `prompt` and keeps the logits of every position (or the class logits).
pub fn prompt_logits(
    ctx: &JobContext,
    out: &Outbox,
    role: &'static str,
    model: Option<Arc<LoadedModel>>,
    spec: &str,
    prompt: &str,
) -> Result<Value> {
    let model = match model {
        Some(m) => m,
        None => load(ctx, spec)?,
    };
    let PromptLogits { tokens, rows, labels } = crate::engine::prompt::prompt_logits(&model, prompt)?;
    let n = tokens.len();
    out.send(Output::Logits(Logits { role, model, tokens, rows, labels }));
    Ok(json!({ "role": role, "tokens": n }))
}

/// The prompt's logits of a student derived from the teacher (`shape`, `seed`: the recipe's), before
/// any training: what the Temperature screen shows beside the teacher until a run trains one.
pub fn derived_prompt_logits(
    ctx: &JobContext,
    out: &Outbox,
    teacher: Option<Arc<LoadedModel>>,
    teacher_spec: &str,
    shape: &crate::engine::derive::StudentShape,
    seed: u64,
    prompt: &str,
) -> Result<Value> {
    let teacher = match teacher {
        Some(m) => m,
        None => load(ctx, teacher_spec)?,
    };
    let derived = Arc::new(crate::engine::derive::derive_loaded(&teacher, shape, seed)?);
    prompt_logits(ctx, out, "student", Some(derived), teacher_spec, prompt)
}

/// Measures the float teacher and student on the eval text: the Compare screen's float points.
pub fn float_points(
    ctx: &JobContext,
    out: &Outbox,
    teacher: Arc<LoadedModel>,
    student: Option<Arc<LoadedModel>>,
    text: &str,
    opts: &EvalOptions,
) -> Result<Value> {
    let candidates: Vec<&LoadedModel> = student.iter().map(|s| s.as_ref()).collect();
    let (t, compared) = measure_against(&teacher, &candidates, text, opts, &ctx.monitor(""))?;
    let mut points = vec![Point {
        bytes: teacher.info.parameters * 4,
        top1_accuracy: t.top1_accuracy,
        cost_seconds: Some(0.0),
        ..Point::new(Origin::Teacher, "float", 0.0, t.perplexity)
    }];
    for (s, c) in candidates.iter().zip(compared) {
        points.push(Point {
            bytes: s.info.parameters * 4,
            top1_accuracy: c.candidate.top1_accuracy,
            kl: c.kl,
            agreement: c.agreement,
            ..Point::new(Origin::Student, "float", 0.0, c.candidate.perplexity)
        });
    }
    let summary = serde_json::to_value(&points).map_err(|e| Error::Invalid(e.to_string()))?;
    out.send(Output::Points(points));
    Ok(summary)
}
