//! The end of a run: the trained models saved as Hugging Face folders, the `[quantize]` sweep,
//! and `summary.json` with every metric of teacher, student and baseline, speed, memory and cache.

use super::setup::Setup;
use super::teacher_cache::TeacherCache;
use super::trainer::Trainee;
use crate::engine::derive::{save_hf_folder, TokenizerOut};
use crate::engine::eval::CompareReport;
use crate::engine::fsutil::write_atomic;
use crate::engine::kernels::autocast::Precision;
use crate::engine::loader::{load_model, LoadOptions};
use crate::engine::recipe::LoadedRecipe;
use crate::engine::{Error, Result};
use crate::jobs::JobContext;
use candle_core::Tensor;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Instant;

#[allow(clippy::too_many_arguments)]
pub(super) fn finish(
    lr: &LoadedRecipe,
    setup: &Setup,
    trainees: &[Trainee],
    teacher_metrics: Option<crate::engine::eval::EvalReport>,
    teacher_fidelity: Option<(Precision, CompareReport)>,
    cache: Option<&TeacherCache>,
    quant_formats: Option<&[crate::engine::quant::QuantFormat]>,
    started: Instant,
    ctx: &JobContext,
) -> Result<serde_json::Value> {
    let out = lr.output_dir();
    let mut summary = serde_json::Map::new();
    summary.insert("recipe".into(), json!(lr.path.display().to_string()));
    summary.insert("output_dir".into(), json!(out.display().to_string()));
    summary.insert("steps".into(), json!(lr.recipe.distill.steps));
    if let (Some(t), Some(m)) = (&setup.teacher, &teacher_metrics) {
        summary.insert(
            "teacher".into(),
            json!({ "model": t.info.name, "parameters": t.info.parameters, "perplexity": m.perplexity, "top1_accuracy": m.top1_accuracy }),
        );
    }
    // The teacher as the training steps computed it, against itself in f32.
    if let (Some(serde_json::Value::Object(teacher)), Some((precision, f))) =
        (summary.get_mut("teacher"), teacher_fidelity)
    {
        teacher.insert(
            "at_training_precision".into(),
            json!({ "precision": precision.name(), "perplexity": f.candidate.perplexity, "top1_accuracy": f.candidate.top1_accuracy, "kl_to_f32": f.kl, "agreement_with_f32": f.agreement }),
        );
    }
    for t in trainees {
        let dir = out.join(t.name());
        let weights: BTreeMap<String, Tensor> =
            t.vars.iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect();
        let tok = match &setup.tokenizer_file {
            Some(p) => TokenizerOut::File(p),
            None => TokenizerOut::Built(&setup.tokenizer),
        };
        save_hf_folder(&dir, &setup.student_config, &weights, tok)?;
        let last = t.evals.last().map(|(_, m)| m.clone()).unwrap_or_default();
        let params: usize = t.vars.values().map(|v| v.elem_count()).sum();
        summary.insert(
            t.name().into(),
            json!({
                "parameters": params,
                "perplexity": last.perplexity,
                "top1_accuracy": last.top1_accuracy,
                "kl_to_teacher": last.kl_to_teacher,
                "agreement": last.agreement,
                "tokens_per_second": t.tokens as f64 / t.seconds.max(1e-9),
                "train_seconds": t.seconds,
                "path": dir.display().to_string(),
            }),
        );
    }
    if let Some(first) = trainees.first() {
        summary.insert("tokens_per_second".into(), json!(first.tokens as f64 / first.seconds.max(1e-9)));
    }
    if let Some(c) = cache {
        summary.insert(
            "teacher_cache".into(),
            json!({ "dir": c.dir().display().to_string(), "windows": c.windows(), "bytes": c.bytes(), "hits": c.hits, "misses": c.misses, "top_k": lr.recipe.distill.cache_top_k }),
        );
    }
    if let Some(formats) = quant_formats {
        // The sweep quantizes and measures on the CPU: a teacher on a GPU is loaded again.
        let cpu_teacher = match &setup.teacher {
            Some(t) if !setup.device.is_cpu() => Some(load_model(&t.resolved, &LoadOptions::default())?),
            _ => None,
        };
        let teacher = cpu_teacher.as_ref().or(setup.teacher.as_ref());
        summary.insert("quantize".into(), super::post_quant::run(lr, teacher, formats, ctx)?);
    }
    summary.insert("peak_memory_bytes".into(), json!(peak_memory_bytes()));
    summary.insert("seconds".into(), json!(started.elapsed().as_secs_f64()));
    let value = serde_json::Value::Object(summary);
    let text = serde_json::to_string_pretty(&value).map_err(|e| Error::Invalid(e.to_string()))?;
    write_atomic(&out.join("summary.json"), text.as_bytes())?;
    ctx.log(format!("wrote {}", out.join("summary.json").display()));
    Ok(value)
}

/// Peak resident memory of this process (Linux `VmHWM`), when the platform tells.
pub fn peak_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
