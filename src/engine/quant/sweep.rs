//! Sweeps: {models} × {formats}, each point measured against the unquantized model on one text.
//!
//! Per point: quantize (timed: the throughput in Mparams/s), build the network that runs the
//! quantized weights, compare it with the unquantized network window by window
//! (`eval::compare_with_states`: perplexity, top-1, KL(unquantized‖quantized), agreement; with a
//! teacher, KL and agreement to the teacher as well), and time
//! the quantized network alone over the first `speed_tokens` tokens (tokens/s of what actually
//! runs: QMatMul for GGML formats, dequantized f32 for the own formats), and its serving speed as
//! llama-bench reports it (prefill and KV-cache decode tokens/s, `generate::measure_latency`).

use super::format::QuantFormat;
use super::imatrix::{calibrate, Imatrix, DEFAULT_CALIB_TOKENS};
use super::policy::QuantPolicy;
use super::quantize::{quantize_model, QuantOptions};
use crate::engine::context::JobContext;
use crate::engine::eval::{compare_with_states, evaluate_tokens, EvalOptions, ReferenceStates};
use crate::engine::events::{JobEvent, QuantPoint, TaskMetrics};
use crate::engine::loader::{load_model, LoadOptions, LoadedModel};
use crate::engine::source::resolve;
use crate::engine::tokenizer::encode_plain;
use crate::engine::{Error, Result};
use candle_core::Device;
use std::path::PathBuf;

/// How to run a sweep.
#[derive(Clone, Debug)]
pub struct SweepOptions {
    /// Windows and token budget of the evaluation text.
    pub eval: EvalOptions,
    pub policy: QuantPolicy,
    /// A calibration text: formats that support it are quantized with its importance matrix.
    pub calibration: Option<String>,
    /// Tokens of the calibration text used (the first N; `None`: all of it).
    pub calib_tokens: Option<usize>,
    /// Calibration tokens a budget's sensitivity probes run on (`None`: the default).
    pub probe_tokens: Option<usize>,
    /// Tokens timed for tokens/s (the quantized network alone).
    pub speed_tokens: usize,
    /// How each point's serving speed is timed (prefill, decode with the KV cache); `None`: not.
    pub latency: Option<crate::engine::generate::LatencyOptions>,
}

impl Default for SweepOptions {
    fn default() -> Self {
        Self {
            eval: EvalOptions::default(),
            policy: QuantPolicy::default(),
            calibration: None,
            calib_tokens: Some(DEFAULT_CALIB_TOKENS),
            probe_tokens: None,
            speed_tokens: 1024,
            latency: Some(Default::default()),
        }
    }
}

/// The model every point is also measured against (KL and agreement to the teacher), with its
/// hidden states on the evaluation windows computed once.
struct TeacherRef<'a> {
    model: &'a LoadedModel,
    states: ReferenceStates,
}

/// Runs every format on every model; emits a `Point` event per finished point. With a `teacher`,
/// each point also gets its KL and agreement to the teacher (the models must share its
/// tokenizer), so quantized students sit on the same axis as float ones.
pub fn sweep(
    models: &[&LoadedModel],
    teacher: Option<&LoadedModel>,
    formats: &[QuantFormat],
    data: &str,
    opts: &SweepOptions,
    ctx: &JobContext,
) -> Result<Vec<QuantPoint>> {
    if formats.is_empty() {
        return Err(Error::Invalid("no formats to sweep; pass --formats q8_0,q4_k,…".into()));
    }
    if let Some(f) = formats.iter().find(|f| f.calibration_need().is_some()).filter(|_| opts.calibration.is_none()) {
        return Err(Error::Invalid(format!(
            "{f} {}: give a calibration text with --calib FILE",
            f.calibration_need().unwrap_or_default()
        )));
    }
    for model in models {
        for f in formats {
            match f {
                QuantFormat::Budget(b) => super::budget::check_reachable(model, b.bits())?,
                QuantFormat::Awq(_) => super::awq::check(model)?,
                _ => {}
            }
        }
    }
    let total = (models.len() * formats.len()) as u64;
    let mut results = Vec::with_capacity(total as usize);
    let teacher = match teacher {
        Some(t) => {
            ctx.log(format!("reference: {} (KL and agreement to the teacher)", t.info.name));
            let tokens = eval_tokens(t, data, opts)?;
            let states = ReferenceStates::compute(
                &t.network,
                &tokens,
                &opts.eval,
                &Device::Cpu,
                &ctx.monitor("teacher states"),
            )?;
            Some(TeacherRef { model: t, states })
        }
        None => None,
    };
    ctx.progress("sweep", 0, total, "points");
    for model in models {
        let tokens = eval_tokens(model, data, opts)?;
        let own = ReferenceStates::compute(
            &model.network,
            &tokens,
            &opts.eval,
            &Device::Cpu,
            &ctx.monitor("reference states"),
        )?;
        // The teacher's own points are already measured against the teacher.
        let is_teacher = teacher.as_ref().is_some_and(|t| std::ptr::eq(t.model, *model));
        let teacher = teacher.as_ref().filter(|_| !is_teacher);
        let imatrix = match &opts.calibration {
            Some(text) if formats.iter().any(|f| f.supports_imatrix()) => {
                ctx.log(format!("calibrating {} for the importance matrix", model.info.name));
                let calib = EvalOptions { max_tokens: opts.calib_tokens, ..opts.eval.clone() };
                let hessians = formats.iter().any(|f| f.needs_hessians());
                Some(calibrate(model, text, &calib, hessians, &ctx.monitor("calibration"))?)
            }
            _ => None,
        };
        for format in formats {
            ctx.check()?;
            let mut r = sweep_point(model, *format, &tokens, &own, teacher, imatrix.as_ref(), opts, ctx)?;
            if is_teacher {
                r.kl_to_teacher = Some(r.kl);
                r.agreement_with_teacher = Some(r.agreement);
            }
            ctx.emit(JobEvent::Point { job: ctx.id, point: r.clone() });
            results.push(r);
            ctx.progress("sweep", results.len() as u64, total, "points");
        }
    }
    Ok(results)
}

/// The first `max_tokens` of `data` in `model`'s tokenizer.
fn eval_tokens(model: &LoadedModel, data: &str, opts: &SweepOptions) -> Result<Vec<u32>> {
    let mut tokens = encode_plain(model.tokenizer()?, data)?;
    if let Some(max) = opts.eval.max_tokens {
        tokens.truncate(max);
    }
    Ok(tokens)
}

#[allow(clippy::too_many_arguments)]
fn sweep_point(
    model: &LoadedModel,
    format: QuantFormat,
    tokens: &[u32],
    own: &ReferenceStates,
    teacher: Option<&TeacherRef>,
    imatrix: Option<&Imatrix>,
    opts: &SweepOptions,
    ctx: &JobContext,
) -> Result<QuantPoint> {
    let qopts = QuantOptions { policy: opts.policy, imatrix, probe_tokens: opts.probe_tokens };
    let clock = crate::engine::usage::Stopwatch::start();
    let q = quantize_model(model, format, &qopts, &ctx.monitor(format!("quantizing {}", format.name())))?;
    let quantize_cpu_seconds = clock.cpu_seconds();
    let network = q.network(model)?;
    let label =
        format!("{}{}", format.name(), if q.imatrix && format.calibration_need().is_none() { "+imatrix" } else { "" });
    ctx.log(format!(
        "{} {label}: {:.2} bits/weight, {:.1} MB, quantized in {:.2} s",
        model.info.name,
        q.size.bits_per_weight,
        q.size.bytes as f64 / 1e6,
        q.seconds
    ));
    if let Some(a) = &q.awq {
        ctx.log(format!("{} {label}: {}", model.info.name, a.summary()));
    }
    let cpu = Device::Cpu;
    let each = ctx.monitor(format!("evaluating {label}"));
    let cmp = compare_with_states(&model.network, own, &network, &opts.eval, &cpu, &each)?;
    let to_teacher = match teacher {
        Some(t) => {
            let each = ctx.monitor(format!("{label} vs teacher"));
            let c = compare_with_states(&t.model.network, &t.states, &network, &opts.eval, &cpu, &each)?;
            Some((c.kl, c.agreement))
        }
        None => None,
    };
    let timed = &tokens[..opts.speed_tokens.max(2).min(tokens.len())];
    // Timing scores every position of the timed tokens, whatever the evaluation's protocol.
    let timing = EvalOptions { protocol: Default::default(), ..opts.eval.clone() };
    let speed = evaluate_tokens(&network, timed, &timing, &Device::Cpu, &ctx.quiet())?;
    let context = model.config.context_length();
    let latency = match &opts.latency {
        Some(l) => Some(crate::engine::generate::measure_latency(
            &network,
            tokens,
            context,
            l,
            &ctx.monitor(format!("timing {label}")).unit("repeats"),
        )?),
        None => None,
    };
    Ok(QuantPoint {
        model: model.info.name.clone(),
        format: label,
        bits_per_weight: q.size.bits_per_weight,
        bytes: q.size.bytes,
        metrics: TaskMetrics::lm(cmp.candidate.perplexity, cmp.candidate.top1_accuracy),
        kl: cmp.kl,
        agreement: cmp.agreement,
        kl_to_teacher: to_teacher.map(|t| t.0),
        agreement_with_teacher: to_teacher.map(|t| t.1),
        tokens_per_second: Some(speed.tokens_per_second),
        quantize_seconds: Some(q.seconds),
        quantize_cpu_seconds,
        mparams_per_second: Some(q.size.parameters as f64 / 1e6 / q.seconds.max(1e-9)),
        fallbacks: Some(q.size.fallbacks),
        imatrix: Some(q.imatrix),
        reference_perplexity: Some(cmp.reference_perplexity),
        latency,
        ..QuantPoint::default()
    })
}

/// A sweep as a job: model specs resolved through the hub, data and calibration read from files.
#[derive(Clone, Debug)]
pub struct SweepRequest {
    pub models: Vec<String>,
    pub formats: Vec<QuantFormat>,
    pub data: PathBuf,
    /// A calibration text file for the importance matrix.
    pub imatrix: Option<PathBuf>,
    pub opts: SweepOptions,
}

impl SweepRequest {
    /// The job body: loads the models, runs [`sweep`], returns `{"points": [...]}`.
    pub fn run(mut self, ctx: &JobContext) -> Result<serde_json::Value> {
        let data = read_text(&self.data, "--data")?;
        if let Some(path) = &self.imatrix {
            self.opts.calibration = Some(read_text(path, "--imatrix")?);
        }
        let settings = ctx.hub();
        let mut loaded = Vec::with_capacity(self.models.len());
        for spec in &self.models {
            ctx.check()?;
            ctx.log(format!("loading {spec}"));
            let resolved = resolve(spec, settings, &|p| ctx.progress(&p.file, p.bytes, p.total, "bytes"))?;
            loaded.push(load_model(&resolved, &LoadOptions::default())?);
        }
        let refs: Vec<&LoadedModel> = loaded.iter().collect();
        let results = sweep(&refs, None, &self.formats, &data, &self.opts, ctx)?;
        Ok(serde_json::json!({ "data": self.data.display().to_string(), "points": results }))
    }
}

impl SweepRequest {
    /// `sweep --out DIR`: the sweep as a run of the library in `dir` (or a numbered folder beside
    /// it when `dir` holds a finished run): its record, event log and a summary whose `quantize`
    /// entries are the points, so `runs`, `show`, `compare` and the Runs screen know it.
    pub fn run_in(self, dir: &std::path::Path, ctx: &JobContext) -> Result<serde_json::Value> {
        use crate::engine::library;
        let out = library::fresh_dir(dir, false)?;
        if out != dir {
            ctx.log(format!("{} holds a finished run: this sweep is {}", dir.display(), out.display()));
        }
        let _lock = crate::engine::fsutil::FolderLock::acquire(&out, "distill-tui sweep")?;
        let mut record = library::RunRecord::new("quantize", &self.data, "");
        record.teacher = Some(self.models.join(", "));
        let names: Vec<String> = self.formats.iter().map(QuantFormat::name).collect();
        record.settings.insert("formats".into(), names.join("+"));
        record.label = Some(format!("formats {}", names.join(", ")));
        library::recorded(ctx, &out, record, |ctx| {
            let started = crate::engine::usage::Stopwatch::start();
            let data = self.data.display().to_string();
            let value = self.run(ctx)?;
            let points: Vec<QuantPoint> = serde_json::from_value(value["points"].clone())
                .map_err(|e| Error::Invalid(format!("sweep points: {e}")))?;
            let summary = crate::engine::summary::RunSummary {
                task: Some(crate::engine::summary::TaskKind::CausalLm),
                recipe: data,
                output_dir: Some(out.display().to_string()),
                quantize: points,
                seconds: Some(started.wall_seconds()),
                cpu_seconds: started.cpu_seconds(),
                ..Default::default()
            };
            summary.write(&out)?;
            Ok(value)
        })
    }
}

/// Reads a text file named by a command-line option.
pub fn read_text(path: &std::path::Path, option: &str) -> Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| Error::Invalid(format!("cannot read {option} {}: {e}; give a UTF-8 text file", path.display())))
}
