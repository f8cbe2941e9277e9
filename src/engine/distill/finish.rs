//! The end of a run: the trained models saved as Hugging Face folders, the `[quantize]` sweep,
//! and `summary.json` with every metric of teacher, student and baseline, speed, memory and cache.

use super::setup::Setup;
use super::teacher_cache::TeacherCache;
use crate::engine::context::JobContext;
use crate::engine::derive::{save_hf_folder, TokenizerOut};
use crate::engine::eval::CompareReport;
use crate::engine::events::EvalMetrics;
use crate::engine::events::TaskMetrics;
use crate::engine::loader::{load_model, LoadOptions};
use crate::engine::recipe::LoadedRecipe;
use crate::engine::summary::{CacheSummary, Fidelity, ModelSummary, RunSummary, TaskKind};
use crate::engine::train::Trainee;
use crate::engine::Result;

/// Held-out prompts each model continues for the teacher to judge, and the longest prompt and
/// continuation (half the training window, up to this).
const SAMPLE_PROMPTS: usize = 16;
const SAMPLE_TOKENS: usize = 64;

#[allow(clippy::too_many_arguments)]
pub(super) fn finish(
    lr: &LoadedRecipe,
    setup: &Setup,
    trainees: &[Trainee<EvalMetrics>],
    teacher_metrics: Option<crate::engine::eval::EvalReport>,
    teacher_fidelity: Option<(String, CompareReport)>,
    cache: Option<&TeacherCache>,
    quant_formats: Option<&[crate::engine::quant::QuantFormat]>,
    on_policy: Option<super::on_policy::OnPolicySummary>,
    started: &crate::engine::usage::Stopwatch,
    ctx: &JobContext,
) -> Result<serde_json::Value> {
    let out = lr.output_dir();
    let mut summary = RunSummary {
        task: Some(TaskKind::CausalLm),
        recipe: lr.path.display().to_string(),
        output_dir: Some(out.display().to_string()),
        steps: Some(lr.recipe.distill.steps),
        ..RunSummary::default()
    };
    // Every float model's serving speed (prefill, KV-cache decode) on the eval text's tokens.
    let context = |cfg: &crate::engine::models::ArchConfig| cfg.context_length();
    let latency = |net: &crate::engine::models::Network, ctx_len: usize, who: &str| {
        let monitor = ctx.monitor(format!("timing the {who}")).unit("repeats");
        crate::engine::generate::measure_latency(net, &setup.eval_tokens, ctx_len, &Default::default(), &monitor)
    };
    // Each model's own continuations of held-out prompts, judged by the teacher.
    let samples = |net: &crate::engine::models::Network| -> Result<Option<crate::engine::generate::SampleScore>> {
        let Some(t) = &setup.teacher else { return Ok(None) };
        let half = (setup.train.seq_len / 2).clamp(1, SAMPLE_TOKENS);
        let shape = (SAMPLE_PROMPTS, half, half);
        if setup.eval_tokens.len() < 2 * half {
            return Ok(None);
        }
        ctx.check()?;
        crate::engine::generate::score_samples(net, &t.network, &setup.eval_tokens, shape, 1.0, 0, &setup.device)
            .map(Some)
    };
    if let (Some(t), Some(m)) = (&setup.teacher, &teacher_metrics) {
        let timed = latency(&t.network, context(&t.config), "teacher")?;
        summary.teacher = Some(ModelSummary {
            latency: Some(timed),
            samples: samples(&t.network)?,
            model: Some(t.info.name.clone()),
            parameters: t.info.parameters,
            metrics: TaskMetrics::lm(m.perplexity, m.top1_accuracy),
            // The teacher as the training steps computed it, against itself in f32.
            at_training_precision: teacher_fidelity.map(|(precision, f)| Fidelity {
                precision,
                perplexity: f.candidate.perplexity,
                top1_accuracy: f.candidate.top1_accuracy,
                kl_to_f32: f.kl,
                agreement_with_f32: f.agreement,
            }),
            ..ModelSummary::default()
        });
    }
    let student_config =
        crate::engine::models::ArchConfig::from_json(&setup.student_config, &out.join("config.json")).ok();
    let student_layers = student_config.as_ref().map(|c| c.layers());
    let student_context = student_config.as_ref().map(context).unwrap_or(setup.train.seq_len);
    for t in trainees {
        let dir = out.join(t.name());
        let tok = TokenizerOut::of(setup.tokenizer_file.as_deref(), &setup.tokenizer);
        save_hf_folder(&dir, &setup.student_config, &t.weights(), tok)?;
        let last = t.last().cloned().unwrap_or_default();
        *summary.role_mut(t.role) = Some(ModelSummary {
            parameters: t.parameters() as u64,
            layers: student_layers,
            latency: Some(latency(&t.network, student_context, t.name())?),
            samples: samples(&t.network)?,
            metrics: TaskMetrics::lm(last.perplexity, last.top1_accuracy),
            kl_to_teacher: last.kl_to_teacher,
            agreement: last.agreement,
            tokens_per_second: Some(t.tokens_per_second()),
            train_seconds: Some(t.seconds),
            path: Some(dir.display().to_string()),
            ..ModelSummary::default()
        });
    }
    summary.tokens_per_second = trainees.first().map(|t| t.tokens_per_second());
    summary.on_policy = on_policy;
    summary.teacher_cache = cache.map(|c| CacheSummary {
        dir: c.dir().display().to_string(),
        windows: c.windows(),
        bytes: c.bytes(),
        hits: c.hits,
        misses: c.misses,
        top_k: lr.recipe.distill.cache_top_k,
    });
    if let Some(formats) = quant_formats {
        // The sweep quantizes and measures on the CPU: a teacher on a GPU is loaded again.
        let cpu_teacher = match &setup.teacher {
            Some(t) if !setup.device.is_cpu() => Some(load_model(&t.resolved, &LoadOptions::default())?),
            _ => None,
        };
        let teacher = cpu_teacher.as_ref().or(setup.teacher.as_ref());
        summary.quantize = super::post_quant::run(lr, teacher, formats, ctx)?;
    }
    summary.peak_memory_bytes = crate::engine::usage::peak_rss_bytes();
    summary.training_peak_memory_bytes = setup.training_peak.get();
    summary.memory_estimate_bytes = setup.memory_estimate;
    summary.seconds = Some(started.wall_seconds());
    summary.cpu_seconds = started.cpu_seconds();
    let d = &lr.recipe.distill;
    summary.training_tokens = Some((d.steps * d.batch_size * d.grad_accum * lr.recipe.data.seq_len) as u64);
    summary.write(&out)?;
    ctx.log(format!("wrote {}", out.join("summary.json").display()));
    summary.to_value()
}
