//! Engine work the workbench starts: each function is a job body and runs on a job thread.

use crate::engine::derive::{derive_student, StudentShape};
use crate::engine::eval::{compare_tokens, evaluate_tokens, EvalOptions};
use crate::engine::hub::{self, DownloadProgress};
use crate::engine::loader::{build_network, load_model, LoadOptions, LoadedModel};
use crate::engine::models::weights::TensorSource;
use crate::engine::pair::check_pair;
use crate::engine::source::resolve;
use crate::engine::tokenizer::{encode_plain, token_text};
use crate::engine::{Error, Result};
use crate::jobs::JobContext;
use crate::tui::tasks::{Logits, Outbox, Output};
use crate::tui::tradeoff::{Origin, Point};
use candle_core::{DType, Device, Tensor};
use serde_json::{json, Value};
use std::sync::Arc;

/// Which student the Models screen asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum StudentChoice {
    None,
    Model(String),
    Derive { layers: usize, hidden: Option<usize>, heads: Option<usize>, kv_heads: Option<usize>, seed: u64 },
}

/// Resolves (downloading with progress when needed) and loads a model.
pub fn load(ctx: &JobContext, spec: &str) -> Result<Arc<LoadedModel>> {
    ctx.log(format!("loading {spec}"));
    let progress = |p: &DownloadProgress| ctx.progress(&format!("download {}", p.file), p.bytes, p.total, "bytes");
    let resolved = resolve(spec, ctx.hub(), &progress)?;
    ctx.check()?;
    Ok(Arc::new(load_model(&resolved, &LoadOptions::default())?))
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

/// Loads the teacher and student (or derives the student in memory) and checks the pair.
pub fn inspect_pair(
    ctx: &JobContext,
    out: &Outbox,
    teacher: &str,
    student: &StudentChoice,
    batch: usize,
    seq_len: usize,
) -> Result<Value> {
    let t = load(ctx, teacher)?;
    let s = match student {
        StudentChoice::None => None,
        StudentChoice::Model(spec) => Some(load(ctx, spec)?),
        StudentChoice::Derive { layers, hidden, heads, kv_heads, seed } => {
            let shape = StudentShape {
                layers: *layers,
                hidden: *hidden,
                heads: *heads,
                kv_heads: *kv_heads,
                intermediate: None,
            };
            Some(Arc::new(derived(&t, &shape, *seed)?))
        }
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
    out.send(Output::Models { teacher: t, student: s, pair });
    Ok(summary)
}

/// A student derived in memory, loaded like a model from disk (the teacher's tokenizer).
fn derived(teacher: &LoadedModel, shape: &StudentShape, seed: u64) -> Result<LoadedModel> {
    let d = derive_student(teacher, shape, seed)?;
    let path = teacher.resolved.path().join("config.json");
    let tensors = d.tensors.into_iter().collect();
    let built = build_network(&d.config_json, &path, TensorSource::Memory(tensors), &LoadOptions::default())?;
    let mut info = teacher.info.clone();
    info.name = format!("{} (derived, {} layers)", teacher.info.name, built.config.layers());
    info.parameters = d.parameters;
    info.layers = built.config.layers();
    info.hidden = built.config.hidden();
    info.intermediate = built.config.intermediate();
    info.heads = built.config.heads();
    info.kv_heads = built.config.kv_heads();
    info.head_dim = built.config.head_dim();
    info.bytes = d.parameters * 4;
    info.dtype = "F32 (not saved yet)".into();
    info.hub_id = None;
    info.revision = None;
    Ok(LoadedModel {
        resolved: teacher.resolved.clone(),
        config: built.config,
        config_json: d.config_json,
        network: built.network,
        tokenizer: teacher.tokenizer.clone(),
        params: built.params,
        vars: built.vars,
        info,
    })
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
    let tok = model.tokenizer()?;
    let ctx_len = model.config.context_length();
    let ids = if model.config.is_causal_lm() {
        let ids = encode_plain(tok, prompt)?;
        ids[ids.len().saturating_sub(ctx_len)..].to_vec()
    } else {
        // A classifier reads the whole sentence with its special tokens ([CLS] … [SEP]).
        let enc = tok.encode(prompt, true).map_err(|e| Error::Invalid(format!("tokenizer: {e}")))?;
        enc.get_ids().iter().copied().take(ctx_len).collect()
    };
    if ids.is_empty() || (!model.config.is_causal_lm() && prompt.trim().is_empty()) {
        return Err(Error::Invalid("the prompt gives no tokens; type some text".into()));
    }
    let tokens: Vec<String> = ids.iter().map(|&i| token_text(tok, i)).collect();
    let input = Tensor::from_slice(&ids, (1, ids.len()), &Device::Cpu)?;
    let logits = model.network.forward(&input)?.to_dtype(DType::F32)?;
    let rows: Vec<Vec<f32>> =
        if model.config.is_causal_lm() { logits.squeeze(0)?.to_vec2()? } else { logits.to_vec2()? };
    let labels = model.config.labels().to_vec();
    let n = tokens.len();
    out.send(Output::Logits(Logits { role, model, tokens, rows, labels }));
    Ok(json!({ "role": role, "tokens": n }))
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
    let mut tokens = encode_plain(teacher.tokenizer()?, text)?;
    if let Some(max) = opts.max_tokens {
        tokens.truncate(max);
    }
    fn report<'a>(ctx: &'a JobContext, stage: &'static str) -> impl FnMut(usize, usize) + 'a {
        move |d, t| ctx.progress(stage, d as u64, t as u64, "windows")
    }
    let cpu = Device::Cpu;
    let t = evaluate_tokens(&teacher.network, &tokens, opts, &cpu, &mut report(ctx, "teacher"), ctx.cancel_flag())?;
    let mut points = vec![Point {
        origin: Origin::Teacher,
        format: "float".into(),
        bytes: teacher.info.parameters * 4,
        perplexity: t.perplexity,
        top1_accuracy: t.top1_accuracy,
        kl: 0.0,
        agreement: 1.0,
    }];
    if let Some(s) = &student {
        let c = compare_tokens(
            &teacher.network,
            &s.network,
            &tokens,
            opts,
            &cpu,
            &mut report(ctx, "student"),
            ctx.cancel_flag(),
        )?;
        points.push(Point {
            origin: Origin::Student,
            format: "float".into(),
            bytes: s.info.parameters * 4,
            perplexity: c.candidate.perplexity,
            top1_accuracy: c.candidate.top1_accuracy,
            kl: c.kl,
            agreement: c.agreement,
        });
    }
    let summary = serde_json::to_value(&points).map_err(|e| Error::Invalid(e.to_string()))?;
    out.send(Output::Points(points));
    Ok(summary)
}
