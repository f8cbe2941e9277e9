//! The yardstick every later measurement uses: perplexity and top-1 next-token accuracy over a text.
//!
//! Protocol (the same as the transformers reference in the README): tokens = tokenizer(text) without
//! special tokens; the first `max_tokens`; non-overlapping windows of `seq_len` tokens (a shorter
//! tail window of at least 2 tokens is evaluated too); each window predicts its positions
//! 1..len-1 from the ones before; perplexity = exp(mean NLL) over every predicted token.

use crate::engine::context::Monitor;
use crate::engine::kernels::autocast::{self, Precision};
use crate::engine::loader::LoadedModel;
use crate::engine::models::Network;
use crate::engine::tokenizer::encode_plain;
use crate::engine::{Error, Result};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::ops::log_softmax;
use serde::Serialize;
use std::time::Instant;

mod protocol;
use protocol::checked_windows;
pub use protocol::{windows, Protocol};

#[derive(Clone, Debug)]
pub struct EvalOptions {
    pub seq_len: usize,
    pub max_tokens: Option<usize>,
    /// Windows per forward pass; `None` picks about 2048 tokens per batch.
    pub batch_size: Option<usize>,
    /// Which positions of each window are scored.
    pub protocol: Protocol,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self { seq_len: 512, max_tokens: None, batch_size: None, protocol: Protocol::All }
    }
}

/// Result of an evaluation; `distill-tui eval --json` prints it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct EvalReport {
    pub perplexity: f64,
    pub top1_accuracy: f64,
    /// Mean negative log-likelihood per predicted token (nats).
    pub mean_nll: f64,
    pub predicted_tokens: usize,
    /// Tokens fed through the model per second of wall time.
    pub tokens_per_second: f64,
    pub windows: usize,
    pub seq_len: usize,
    pub seconds: f64,
}

/// Evaluates a causal LM on a text with its own tokenizer.
pub fn evaluate_text(model: &LoadedModel, text: &str, opts: &EvalOptions, monitor: &Monitor) -> Result<EvalReport> {
    if !model.config.is_causal_lm() {
        return Err(Error::Invalid(format!(
            "{} is a {} model; perplexity needs a causal language model",
            model.info.name, model.info.task
        )));
    }
    let ctx = model.config.context_length();
    if opts.seq_len > ctx {
        return Err(Error::Invalid(format!(
            "--seq-len {} is longer than the model's context ({ctx} positions); use --seq-len {ctx} or less",
            opts.seq_len
        )));
    }
    let tokens = scored_tokens(model, text, opts, monitor)?;
    let report = evaluate_tokens(&model.network, &tokens, opts, &Device::Cpu, monitor)?;
    finite(model, report.mean_nll)?;
    Ok(report)
}

/// Memory of one evaluation pass of `model` at `opts` (weights, logits and activations of a batch
/// of windows), in bytes.
pub fn eval_bytes(model: &LoadedModel, opts: &EvalOptions, batch: usize) -> u64 {
    let c = &model.config;
    let (b, t) = (batch as f64, opts.seq_len as f64);
    let per_token = 2.0 * c.vocab_size() as f64
        + 16.0 * c.hidden() as f64
        + 3.0 * c.intermediate() as f64
        + 2.0 * c.heads() as f64 * t;
    (4.0 * (model.parameter_count() as f64 + b * t * per_token)) as u64
}

/// Refuses an evaluation whose batch of windows cannot fit in `available` bytes, naming a
/// `--batch-size` that does.
pub fn preflight(model: &LoadedModel, opts: &EvalOptions, available: u64) -> Result<()> {
    let batch = opts.batch_size.unwrap_or((2048 / opts.seq_len.max(1)).max(1));
    let need = eval_bytes(model, opts, batch);
    if need <= available {
        return Ok(());
    }
    // Linear in the batch: the weights, then a fixed cost per window.
    let (base, per_window) = (eval_bytes(model, opts, 0), eval_bytes(model, opts, 1) - eval_bytes(model, opts, 0));
    let fits = (available > base).then(|| ((available - base) / per_window.max(1)) as usize).filter(|&b| b >= 1);
    let gib = |x: u64| x as f64 / (1u64 << 30) as f64;
    Err(Error::Invalid(format!(
        "evaluating {} at --batch-size {batch} × --seq-len {} needs about {:.1} GiB but {:.1} GiB of memory is available; {}",
        model.info.name,
        opts.seq_len,
        gib(need),
        gib(available),
        match fits {
            Some(b) => format!("--batch-size {b} fits"),
            None => "lower --seq-len (not even one window fits)".into(),
        }
    )))
}

/// A non-finite score is an error naming its cause, never a printed NaN: the first weight tensor
/// holding NaN or infinity, or (all weights finite) an activation that overflows.
pub fn finite(model: &LoadedModel, value: f64) -> Result<()> {
    if value.is_finite() {
        return Ok(());
    }
    for (name, t) in &model.params {
        let values: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let bad = values.iter().filter(|v| !v.is_finite()).count();
        if bad > 0 {
            return Err(Error::Invalid(format!(
                "{} gives a non-finite loss ({value}): its weight `{name}` holds {bad} NaN or infinite values; the file is corrupt",
                model.info.name
            )));
        }
    }
    Err(Error::Invalid(format!(
        "{} gives a non-finite loss ({value}) although every weight is finite: an activation overflows (check the config's norm epsilon and rope base)",
        model.info.name
    )))
}

/// The first `opts.max_tokens` tokens of `text` in `model`'s tokenizer, said on `monitor` before
/// any work starts (how many tokens, of how many, in how many windows).
fn scored_tokens(model: &LoadedModel, text: &str, opts: &EvalOptions, monitor: &Monitor) -> Result<Vec<u32>> {
    preflight(model, opts, crate::engine::pair::machine_memory().1)?;
    let mut tokens = encode_plain(model.tokenizer()?, text)?;
    crate::engine::tokenizer::check_ids(&tokens, model.config.vocab_size(), &model.info.name)?;
    let available = tokens.len();
    if let Some(max) = opts.max_tokens {
        tokens.truncate(max);
    }
    let of = if tokens.len() < available { format!(" of the text's {available}") } else { String::new() };
    let hint = if opts.max_tokens.is_none() { " (--max-tokens bounds it)" } else { "" };
    monitor.note(format!(
        "scoring {} tokens{of} in {} windows of {}{hint}",
        tokens.len(),
        windows(&tokens, opts.seq_len.max(2)).len(),
        opts.seq_len
    ));
    Ok(tokens)
}

/// Evaluates a causal LM on token ids.
pub fn evaluate_tokens(
    network: &Network,
    tokens: &[u32],
    opts: &EvalOptions,
    device: &Device,
    monitor: &Monitor,
) -> Result<EvalReport> {
    if opts.seq_len < 2 {
        return Err(Error::Invalid("--seq-len must be at least 2".into()));
    }
    let wins = checked_windows(tokens, opts)?;
    let batch = opts.batch_size.unwrap_or((2048 / opts.seq_len).max(1));
    let start = Instant::now();
    let (mut nll, mut correct, mut predicted, mut fed) = (0f64, 0usize, 0usize, 0usize);
    let mut done = 0;
    // Full windows go in batches; the tail window (shorter) goes alone.
    let mut groups: Vec<Vec<&[u32]>> = Vec::new();
    for w in &wins {
        match groups.last_mut() {
            Some(g) if g.len() < batch && g[0].len() == w.len() => g.push(w),
            _ => groups.push(vec![w]),
        }
    }
    monitor.report(0, wins.len());
    for group in groups {
        monitor.check()?;
        let t = group[0].len();
        let flat: Vec<u32> = group.iter().flat_map(|w| w.iter().copied()).collect();
        let ids = Tensor::from_vec(flat, (group.len(), t), device)?;
        let first = opts.protocol.first_scored(t);
        let (s_nll, s_correct) = window_stats(network, &ids, first)?;
        nll += s_nll;
        correct += s_correct;
        predicted += group.len() * (t - 1 - first);
        fed += group.len() * t;
        done += group.len();
        monitor.report(done, wins.len());
    }
    let seconds = start.elapsed().as_secs_f64();
    let mean_nll = nll / predicted as f64;
    Ok(EvalReport {
        perplexity: mean_nll.exp(),
        top1_accuracy: correct as f64 / predicted as f64,
        mean_nll,
        predicted_tokens: predicted,
        tokens_per_second: fed as f64 / seconds.max(1e-9),
        windows: wins.len(),
        seq_len: opts.seq_len,
        seconds,
    })
}

/// A candidate measured against a reference model (teacher, or the unquantized model) on one text.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CompareReport {
    /// The candidate's own yardstick numbers.
    pub candidate: EvalReport,
    /// Mean KL(reference ‖ candidate) per predicted position at T = 1 (nats).
    pub kl: f64,
    /// Fraction of positions where both models' top-1 predictions agree.
    pub agreement: f64,
    /// The reference's perplexity on the same windows.
    pub reference_perplexity: f64,
}

/// The reference model's final hidden states on each evaluation window, computed once and reused
/// by every later comparison (the teacher's body is the expensive part; its head runs per chunk).
pub struct ReferenceStates {
    windows: Vec<Vec<u32>>,
    hidden: Vec<Tensor>,
}

impl ReferenceStates {
    pub fn compute(
        reference: &Network,
        tokens: &[u32],
        opts: &EvalOptions,
        device: &Device,
        monitor: &Monitor,
    ) -> Result<Self> {
        let wins: Vec<Vec<u32>> = checked_windows(tokens, opts)?.into_iter().map(|w| w.to_vec()).collect();
        let mut hidden = Vec::with_capacity(wins.len());
        monitor.report(0, wins.len());
        for (i, w) in wins.iter().enumerate() {
            monitor.check()?;
            let ids = Tensor::from_slice(&w[..w.len() - 1], (1, w.len() - 1), device)?;
            let h = reference.hidden_states(&ids)?;
            hidden.push(h.reshape((w.len() - 1, h.dim(D::Minus1)?))?);
            monitor.report(i + 1, wins.len());
        }
        Ok(Self { windows: wins, hidden })
    }
}

/// The teacher's own numbers on `text` (in the teacher's tokenizer, its first `max_tokens`
/// tokens) and each candidate's, with KL and agreement to the teacher: the float points of the
/// Compare screen and of `distill-tui eval MODEL --teacher TEACHER`. The monitor's stage names the
/// model being measured.
pub fn measure_against(
    teacher: &LoadedModel,
    candidates: &[&LoadedModel],
    text: &str,
    opts: &EvalOptions,
    monitor: &Monitor,
) -> Result<(EvalReport, Vec<CompareReport>)> {
    let tokens = scored_tokens(teacher, text, opts, monitor)?;
    let cpu = Device::Cpu;
    let own = evaluate_tokens(&teacher.network, &tokens, opts, &cpu, &monitor.stage("teacher"))?;
    finite(teacher, own.mean_nll)?;
    let states = ReferenceStates::compute(&teacher.network, &tokens, opts, &cpu, &monitor.stage("teacher states"))?;
    let mut out = Vec::with_capacity(candidates.len());
    for c in candidates {
        let each = monitor.stage(c.info.name.as_str());
        let compared = compare_with_states(&teacher.network, &states, &c.network, opts, &cpu, &each)?;
        finite(c, compared.candidate.mean_nll)?;
        out.push(compared);
    }
    Ok((own, out))
}

/// Evaluates `candidate` on `tokens` and compares it with `reference` position by position.
/// Logits are compared over the shared vocabulary (the first `min(V_ref, V_cand)` ids), so a
/// padding-only vocabulary difference is harmless.
pub fn compare_tokens(
    reference: &Network,
    candidate: &Network,
    tokens: &[u32],
    opts: &EvalOptions,
    device: &Device,
    monitor: &Monitor,
) -> Result<CompareReport> {
    let states = ReferenceStates::compute(reference, tokens, opts, device, monitor)?;
    compare_with_states(reference, &states, candidate, opts, device, monitor)
}

/// [`compare_tokens`] with the reference's hidden states already computed.
pub fn compare_with_states(
    reference: &Network,
    states: &ReferenceStates,
    candidate: &Network,
    opts: &EvalOptions,
    device: &Device,
    monitor: &Monitor,
) -> Result<CompareReport> {
    compare_with_states_at(reference, states, candidate, Precision::F32, opts, device, monitor)
}

/// [`compare_with_states`] with the candidate's linear layers at `precision` (the reference stays
/// f32): how far a teacher computed in int8 or bf16 is from itself in f32.
pub fn compare_with_states_at(
    reference: &Network,
    states: &ReferenceStates,
    candidate: &Network,
    precision: Precision,
    opts: &EvalOptions,
    device: &Device,
    monitor: &Monitor,
) -> Result<CompareReport> {
    let start = Instant::now();
    let mut acc = CompareAcc::default();
    let total = states.windows.len();
    monitor.report(0, total);
    for (i, (w, hr)) in states.windows.iter().zip(&states.hidden).enumerate() {
        monitor.check()?;
        let ids = Tensor::from_slice(w, (1, w.len()), device)?;
        let first = opts.protocol.first_scored(w.len());
        compare_window(reference, hr, (candidate, precision), &ids, first, &mut acc)?;
        monitor.report(i + 1, total);
    }
    let seconds = start.elapsed().as_secs_f64();
    let n = acc.predicted as f64;
    let fed: usize = states.windows.iter().map(|w| w.len()).sum();
    Ok(CompareReport {
        candidate: EvalReport {
            perplexity: (acc.nll / n).exp(),
            top1_accuracy: acc.correct as f64 / n,
            mean_nll: acc.nll / n,
            predicted_tokens: acc.predicted,
            tokens_per_second: fed as f64 / seconds.max(1e-9),
            windows: total,
            seq_len: opts.seq_len,
            seconds,
        },
        kl: acc.kl / n,
        agreement: acc.agree as f64 / n,
        reference_perplexity: (acc.ref_nll / n).exp(),
    })
}

#[derive(Default)]
struct CompareAcc {
    nll: f64,
    ref_nll: f64,
    kl: f64,
    correct: usize,
    agree: usize,
    predicted: usize,
}

fn compare_window(
    reference: &Network,
    hr: &Tensor,
    (candidate, precision): (&Network, Precision),
    ids: &Tensor,
    first: usize,
    acc: &mut CompareAcc,
) -> Result<()> {
    let t = ids.dim(1)?;
    let inputs = ids.narrow(1, 0, t - 1)?;
    let scored = t - 1 - first;
    let at = |p: Precision| autocast::enter(p);
    let hc = {
        let _candidate = at(precision);
        candidate.hidden_states(&inputs)?
    };
    let hc = hc.reshape((t - 1, hc.dim(D::Minus1)?))?.narrow(0, first, scored)?;
    let hr = hr.narrow(0, first, scored)?;
    let labels = ids.narrow(1, 1 + first, scored)?.flatten_all()?.to_dtype(DType::U32)?;
    for start in (0..scored).step_by(LOGIT_ROWS) {
        let n = LOGIT_ROWS.min(scored - start);
        let lr = {
            let _reference = at(Precision::F32);
            reference.lm_logits(&hr.narrow(0, start, n)?)?.to_dtype(DType::F32)?
        };
        let lc = {
            let _candidate = at(precision);
            candidate.lm_logits(&hc.narrow(0, start, n)?)?.to_dtype(DType::F32)?
        };
        let v = lr.dim(1)?.min(lc.dim(1)?);
        let (lr, lc) = (lr.narrow(1, 0, v)?, lc.narrow(1, 0, v)?);
        let labels = labels.narrow(0, start, n)?;
        let (log_r, log_c) = (log_softmax(&lr, D::Minus1)?, log_softmax(&lc, D::Minus1)?);
        let sum = |x: Tensor| -> Result<f64> { Ok(x.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?) };
        acc.kl += sum((log_r.exp()? * (&log_r - &log_c)?)?)?;
        acc.nll -= sum(log_c.gather(&labels.unsqueeze(1)?, 1)?)?;
        acc.ref_nll -= sum(log_r.gather(&labels.unsqueeze(1)?, 1)?)?;
        let (ar, ac) = (lr.argmax(D::Minus1)?, lc.argmax(D::Minus1)?);
        let count =
            |x: Tensor| -> Result<usize> { Ok(x.to_dtype(DType::U32)?.sum_all()?.to_scalar::<u32>()? as usize) };
        acc.correct += count(ac.eq(&labels)?)?;
        acc.agree += count(ac.eq(&ar)?)?;
        acc.predicted += n;
    }
    Ok(())
}

/// Positions whose logits are materialised at once (keeps `[rows, vocab]` around 100 MB at 49k vocab).
const LOGIT_ROWS: usize = 512;

/// Summed NLL and correct top-1 predictions of tokens `first + 1..` of each row of `ids` `[b, t]`
/// (every position sees the whole window before it).
fn window_stats(network: &Network, ids: &Tensor, first: usize) -> Result<(f64, usize)> {
    let (b, t) = ids.dims2()?;
    let hidden = network.hidden_states(&ids.narrow(1, 0, t - 1)?)?;
    let scored = t - 1 - first;
    let rows = b * scored;
    let h = hidden.dim(D::Minus1)?;
    let hidden = hidden.reshape((b, t - 1, h))?.narrow(1, first, scored)?.reshape((rows, h))?;
    let labels = ids.narrow(1, 1 + first, scored)?.flatten_all()?.to_dtype(DType::U32)?;
    let (mut nll, mut correct) = (0f64, 0usize);
    for start in (0..rows).step_by(LOGIT_ROWS) {
        let n = LOGIT_ROWS.min(rows - start);
        let logits = network.lm_logits(&hidden.narrow(0, start, n)?)?.to_dtype(DType::F32)?;
        let labels = labels.narrow(0, start, n)?;
        let logp = log_softmax(&logits, D::Minus1)?;
        let picked = logp.gather(&labels.unsqueeze(1)?, 1)?;
        nll -= picked.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?;
        let argmax = logits.argmax(D::Minus1)?;
        correct += argmax.eq(&labels)?.to_dtype(DType::U32)?.sum_all()?.to_scalar::<u32>()? as usize;
    }
    Ok((nll, correct))
}
