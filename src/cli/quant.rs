//! Quantization commands: `quantize` (one model, one format, to GGUF or safetensors) and `sweep`
//! ({models} × {formats} as a background job, one line per finished point).

use super::models::load;
use super::print_json;
use crate::engine::context::Progress;
use crate::engine::context::{Monitor, Settings};
use crate::engine::eval::EvalOptions;
use crate::engine::quant::imatrix::DEFAULT_CALIB_TOKENS;
use crate::engine::quant::sweep::read_text;
use crate::engine::quant::{
    calibrate, export, quantize_model, ExportKind, QuantFormat, QuantOptions, QuantPolicy, QuantizedModel,
    SweepOptions, SweepRequest, TensorRule,
};
use crate::engine::{Error, Result};
use crate::headless::progress::{Output, Reporter};
use crate::headless::{cancel_on_interrupt, interrupt_flag};
use crate::jobs::{spawn, JobEvent};
use clap::Args;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// How much of the `--imatrix` text calibration reads.
#[derive(Args, Debug, Clone)]
pub struct CalibTokens {
    /// Calibration tokens: the first N of the `--imatrix` text, or `all`.
    #[arg(long = "calib-tokens", value_name = "N|all", default_value_t = Limit(Some(DEFAULT_CALIB_TOKENS)), value_parser = parse_limit)]
    pub calib_tokens: Limit,
    /// A budget (`budget-BITS`) probes each tensor's sensitivity on the first N calibration tokens.
    #[arg(long = "probe-tokens", value_name = "N", default_value_t = crate::engine::quant::budget::PROBE_TOKENS)]
    pub probe_tokens: usize,
}

/// A token bound; `None` is the whole text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit(pub Option<usize>);

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(n) => write!(f, "{n}"),
            None => f.write_str("all"),
        }
    }
}

fn parse_limit(s: &str) -> std::result::Result<Limit, String> {
    match s {
        "all" => Ok(Limit(None)),
        n => match n.parse::<usize>() {
            Ok(n) if n >= 2 => Ok(Limit(Some(n))),
            _ => Err(format!("`{n}` is neither a number of tokens (2 or more) nor `all`")),
        },
    }
}

/// Options shared by `quantize` and `sweep`.
#[derive(Args, Debug, Clone)]
pub struct PolicyArgs {
    /// Embedding tables: `high` (8-bit of the format's family, as llama.cpp), `keep` (f32), `same`, or a format.
    #[arg(long, default_value = "high")]
    pub embeddings: String,
    /// The output head (a tied head follows this rule): `high`, `keep`, `same`, or a format.
    #[arg(long, default_value = "high")]
    pub head: String,
    /// Window length for calibration and evaluation.
    #[arg(long, default_value_t = 512)]
    pub seq_len: usize,
    #[command(flatten)]
    pub protocol: super::ProtocolArgs,
}

impl PolicyArgs {
    fn policy(&self) -> Result<QuantPolicy> {
        Ok(QuantPolicy { embeddings: TensorRule::parse(&self.embeddings)?, head: TensorRule::parse(&self.head)? })
    }

    /// Windows of `seq_len`, the first `max_tokens` of the text (or `--windows` of them), scored
    /// by the protocol.
    fn eval(&self, max_tokens: Option<usize>) -> Result<EvalOptions> {
        let (protocol, max_tokens) = self.protocol.apply(self.seq_len, max_tokens)?;
        Ok(EvalOptions { seq_len: self.seq_len, max_tokens, batch_size: None, protocol })
    }
}

#[derive(Args, Debug)]
pub struct QuantizeArgs {
    pub model: String,
    /// q8_0, q6_k, q5_1, q5_0, q5_k, q4_1, q4_0, q4_k, q3_k, q2_k, f16, f32, or int{8,4,3,2}[-g{32,64,128}][-sym].
    #[arg(long)]
    pub format: String,
    /// Calibration text: an importance matrix (K-quants and the int formats use it) and, for a
    /// `+gptq` format, the Hessians GPTQ rounds with.
    #[arg(long, visible_alias = "calib")]
    pub imatrix: Option<PathBuf>,
    #[command(flatten)]
    pub calib: CalibTokens,
    /// `FILE.gguf` (GGML formats, llama/qwen2) or `FILE.safetensors` (float and int formats).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub policy: PolicyArgs,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct SweepArgs {
    #[arg(required = true)]
    pub models: Vec<String>,
    /// Comma-separated formats, e.g. `f32,q8_0,q4_k,int4-g64`.
    #[arg(long)]
    pub formats: String,
    /// The held-out text every point is measured on.
    #[arg(long)]
    pub data: PathBuf,
    /// Calibration text: formats that support it use its importance matrix, `+gptq` formats its Hessians.
    #[arg(long, visible_alias = "calib")]
    pub imatrix: Option<PathBuf>,
    #[command(flatten)]
    pub calib: CalibTokens,
    /// Tokens of the `--data` text every point is measured on (the first N; all without it).
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// Tokens timed for tokens/s.
    #[arg(long, default_value_t = 1024)]
    pub speed_tokens: usize,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Keep the sweep as a run of the library in DIR (record, event log, summary with the points):
    /// `runs`, `show` and `compare` then list it beside the distillation runs.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

/// `distill-tui quantize`.
pub(super) fn quantize(args: QuantizeArgs, settings: &Settings, output: Output) -> Result<()> {
    let format = QuantFormat::parse(&args.format)?;
    let policy = args.policy.policy()?;
    ExportKind::from_path(&args.out)?;
    if let Some(why) = format.calibration_need().filter(|_| args.imatrix.is_none()) {
        return Err(Error::Invalid(format!("{format} {why}: give a calibration text with --calib FILE")));
    }
    let calibration = args.imatrix.as_ref().map(|p| read_text(p, "--calib")).transpose()?;
    let reporter = Reporter::new(output);
    let model = load(&settings.hub, &args.model, false, &reporter)?;
    crate::engine::quant::export::check_output(&model, &args.out)?;
    match format {
        QuantFormat::Budget(b) => crate::engine::quant::budget::check_reachable(&model, b.bits())?,
        QuantFormat::Awq(_) => crate::engine::quant::awq::check(&model)?,
        _ => {}
    }
    let cancel = interrupt_flag();
    let monitor = Monitor::new(&cancel, &reporter);
    let imatrix = match &calibration {
        Some(text) => {
            let calib = EvalOptions { protocol: Default::default(), ..args.policy.eval(args.calib.calib_tokens.0)? };
            Some(calibrate(&model, text, &calib, format.needs_hessians(), &monitor.stage("calibration"))?)
        }
        None => None,
    };
    let qopts = QuantOptions { policy, imatrix: imatrix.as_ref(), probe_tokens: Some(args.calib.probe_tokens) };
    let q = quantize_model(&model, format, &qopts, &monitor.stage(format!("quantizing {}", format.name())))?;
    reporter.finish();
    let export = export(&model, &q, &args.out)?;
    if args.json {
        return print_json(&serde_json::json!({
            "model": model.info.name,
            "format": format.name(),
            "imatrix_tokens": imatrix.as_ref().map(|m| m.tokens),
            "size": q.size,
            "quantize_seconds": q.seconds,
            "export": export,
            "tensors": q.report,
            "budget": q.budget,
            "awq": q.awq,
        }));
    }
    print_quantized(&model.info.name, &q);
    if let Some(b) = &q.budget {
        println!(
            "budget      {:.3} bits/weight planned for a target of {} (reachable {:.3}–{:.3}); predicted KL {:.4} \
             from {} sensitivity probes on {} calibration tokens (--probe-tokens), in {:.1} s",
            b.planned_bits_per_weight,
            b.target_bits_per_weight,
            b.smallest_bits_per_weight,
            b.largest_bits_per_weight,
            b.predicted_kl,
            b.probes,
            b.probe_tokens,
            b.sensitivity_seconds
        );
        if let Some(n) = &b.note {
            println!("  note      {n}");
        }
    }
    if let Some(a) = &q.awq {
        println!("awq         {}", a.summary());
    }
    if let Some(m) = &imatrix {
        println!("imatrix     {} calibration tokens (--calib-tokens)", m.tokens);
    }
    println!("wrote {} ({:.1} MB, {} tensors)", export.path, export.bytes as f64 / 1e6, export.tensors);
    Ok(())
}

fn print_quantized(name: &str, q: &QuantizedModel) {
    let mut by_format: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
    for r in &q.report {
        let e = by_format.entry(r.format.as_str()).or_default();
        e.0 += 1;
        e.1 += r.bytes;
    }
    println!("model       {name}");
    println!("format      {}{}", q.format, if q.imatrix { " with importance matrix" } else { "" });
    for (format, (count, bytes)) in by_format {
        println!("  {format:<12} {count:>4} tensors {:>10.2} MB", bytes as f64 / 1e6);
    }
    for r in q.report.iter().filter(|r| r.note.is_some()) {
        println!("  fallback  {} {:?}: {}", r.name, r.shape, r.note.as_deref().unwrap_or(""));
    }
    println!(
        "size        {:.2} MB ({:.3} bits/weight over {} parameters; f32 {:.2} MB), quantized in {:.2} s",
        q.size.bytes as f64 / 1e6,
        q.size.bits_per_weight,
        q.size.parameters,
        q.size.f32_bytes as f64 / 1e6,
        q.seconds
    );
}

/// `distill-tui sweep`: the sweep runs as a job; its events are printed as they arrive.
pub(super) fn sweep(args: SweepArgs, settings: Arc<Settings>, output: Output) -> Result<()> {
    let formats = QuantFormat::parse_list(&args.formats)?;
    let request = SweepRequest {
        models: args.models.clone(),
        formats,
        data: args.data.clone(),
        imatrix: args.imatrix.clone(),
        opts: SweepOptions {
            eval: args.policy.eval(args.max_tokens)?,
            policy: args.policy.policy()?,
            calibration: None,
            calib_tokens: args.calib.calib_tokens.0,
            probe_tokens: Some(args.calib.probe_tokens),
            speed_tokens: args.speed_tokens,
            latency: Some(Default::default()),
        },
    };
    let out = args.out.clone();
    let job =
        spawn("sweep", format!("sweep {} × {}", args.models.join(", "), args.formats), settings, move |ctx| match &out
        {
            Some(dir) => request.run_in(dir, ctx),
            None => request.run(ctx),
        });
    cancel_on_interrupt(job.cancel_flag());
    let reporter = Reporter::new(output);
    if !args.json {
        println!(
            "{:<40} {:<16} {:>8} {:>9} {:>10} {:>7} {:>8} {:>7} {:>9}",
            "model", "format", "bits/w", "MB", "perplexity", "top-1", "KL", "agree", "tokens/s"
        );
    }
    let mut outcome = Ok(());
    for event in job.events.iter() {
        match &event {
            JobEvent::Point { point: p, .. } if !args.json => reporter.suspend(|| {
                println!(
                    "{:<40} {:<16} {:>8.3} {:>9.2} {:>10.4} {:>7.4} {:>8.5} {:>7.4} {:>9.0}",
                    p.model,
                    p.format,
                    p.bits_per_weight,
                    p.bytes as f64 / 1e6,
                    p.metrics.perplexity.unwrap_or(f64::NAN),
                    p.metrics.top1_accuracy.unwrap_or(f64::NAN),
                    p.kl,
                    p.agreement,
                    p.tokens_per_second.unwrap_or(f64::NAN)
                )
            }),
            JobEvent::Point { .. } | JobEvent::Summary { .. } if args.json => {
                reporter.suspend(|| println!("{}", serde_json::to_string(&event).unwrap_or_default()))
            }
            JobEvent::Log { message, .. } => reporter.note(message),
            JobEvent::Progress { stage, done, total, unit, .. } => reporter.progress(stage, *done, *total, unit),
            JobEvent::Failed { error, bad_input: true, .. } => outcome = Err(Error::Invalid(error.clone())),
            JobEvent::Failed { error, .. } => outcome = Err(Error::io("sweep", std::io::Error::other(error.clone()))),
            JobEvent::Cancelled { .. } => outcome = Err(Error::Cancelled),
            _ => {}
        }
        if event.is_terminal() {
            break;
        }
    }
    reporter.finish();
    job.join();
    outcome
}
