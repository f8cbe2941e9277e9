//! Autoregressive generation with a KV cache: the prompt in one prefill pass, then one position per
//! new token, greedy or sampled (temperature, top-k, top-p, a seed), timed the way llama-bench
//! reports it (prefill tokens/s, decode tokens/s, ms per token).

use crate::engine::context::Monitor;
use crate::engine::loader::LoadedModel;
use crate::engine::models::KvCache;
use crate::engine::tokenizer::encode_plain;
use crate::engine::{Error, Result};
use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::time::Instant;

/// How the next token is chosen.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampling {
    /// 0: greedy (the most probable token); else softmax(logits / temperature).
    pub temperature: f64,
    /// Keep the `k` most probable tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches `p` (1: all).
    pub top_p: f64,
    pub seed: u64,
}

impl Sampling {
    pub fn greedy() -> Self {
        Self { temperature: 0.0, top_k: 0, top_p: 1.0, seed: 0 }
    }

    pub fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(Error::Invalid(format!("--temperature {}: give 0 (greedy) or more", self.temperature)));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::Invalid(format!("--top-p {}: give a probability in (0, 1]", self.top_p)));
        }
        Ok(())
    }
}

/// A generation and its timing.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Generation {
    pub prompt_tokens: usize,
    /// The new tokens' ids and their text.
    pub tokens: Vec<u32>,
    pub text: String,
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
    /// Why it stopped: `max_new_tokens` or `context` (the model's context length).
    pub stopped: &'static str,
}

impl Generation {
    pub fn prefill_tokens_per_second(&self) -> f64 {
        self.prompt_tokens as f64 / self.prefill_seconds.max(1e-9)
    }

    /// Decode speed over the tokens after the first (the first comes from the prefill's logits).
    pub fn decode_tokens_per_second(&self) -> f64 {
        self.tokens.len().saturating_sub(1) as f64 / self.decode_seconds.max(1e-9)
    }
}

/// The next token from `logits` (`[vocab]`).
pub fn pick(logits: &[f32], s: &Sampling, rng: &mut rand_chacha::ChaCha8Rng) -> u32 {
    let argmax = || logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i as u32).unwrap_or(0);
    if s.temperature == 0.0 {
        return argmax();
    }
    let probs = crate::engine::distribution::softmax_at(logits, s.temperature);
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    if s.top_k > 0 {
        order.truncate(s.top_k);
    }
    let mut kept = Vec::with_capacity(order.len());
    let mut mass = 0.0;
    for i in order {
        kept.push(i);
        mass += probs[i];
        if mass >= s.top_p {
            break;
        }
    }
    let total: f64 = kept.iter().map(|&i| probs[i]).sum();
    let mut u = rng.random::<f64>() * total;
    for &i in &kept {
        u -= probs[i];
        if u <= 0.0 {
            return i as u32;
        }
    }
    *kept.last().unwrap_or(&0) as u32
}

/// Generates up to `max_new` tokens after `prompt` (its last context-length tokens), on the CPU.
pub fn generate(
    model: &LoadedModel,
    prompt: &str,
    max_new: usize,
    sampling: &Sampling,
    monitor: &Monitor,
) -> Result<Generation> {
    sampling.validate()?;
    if !model.config.is_causal_lm() {
        return Err(Error::Invalid(format!(
            "{} is a classifier; generation needs a causal language model",
            model.info.name
        )));
    }
    let tok = model.tokenizer()?;
    let ctx_len = model.config.context_length();
    let ids = encode_plain(tok, prompt)?;
    let ids = ids[ids.len().saturating_sub(ctx_len.saturating_sub(1).max(1))..].to_vec();
    if ids.is_empty() {
        return Err(Error::Invalid("the prompt gives no tokens; type some text".into()));
    }
    crate::engine::tokenizer::check_ids(&ids, model.config.vocab_size(), &model.info.name)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(sampling.seed);
    let mut cache = KvCache::new();
    let row = |t: Tensor| -> Result<Vec<f32>> { Ok(t.to_dtype(DType::F32)?.squeeze(0)?.to_vec1::<f32>()?) };
    let clock = Instant::now();
    let input = Tensor::from_slice(&ids, (1, ids.len()), &Device::Cpu)?;
    let mut logits = row(model.network.forward_cached(&input, &mut cache)?)?;
    let prefill_seconds = clock.elapsed().as_secs_f64();
    let clock = Instant::now();
    let mut out = Vec::with_capacity(max_new);
    let mut stopped = "max_new_tokens";
    for i in 0..max_new {
        monitor.check()?;
        let next = pick(&logits, sampling, &mut rng);
        out.push(next);
        monitor.report(i + 1, max_new);
        if i + 1 == max_new {
            break;
        }
        if cache.len >= ctx_len {
            stopped = "context";
            break;
        }
        let input = Tensor::from_slice(&[next], (1, 1), &Device::Cpu)?;
        logits = row(model.network.forward_cached(&input, &mut cache)?)?;
    }
    let decode_seconds = clock.elapsed().as_secs_f64();
    let text = tok.decode(&out, false).map_err(|e| Error::Invalid(format!("decoding the tokens: {e}")))?;
    Ok(Generation { prompt_tokens: ids.len(), tokens: out, text, prefill_seconds, decode_seconds, stopped })
}

/// Continues equal-length `prompts` (`[b][p]`) by `new` tokens each with `net` and its KV cache,
/// the rows in one batch, row `i` sampled with `rngs[i]` (so a row's tokens do not depend on the
/// others). Returns the new tokens per row.
pub fn continue_batch(
    net: &crate::engine::models::Network,
    prompts: &[Vec<u32>],
    new: usize,
    sampling: &Sampling,
    rngs: &mut [rand_chacha::ChaCha8Rng],
    device: &Device,
) -> Result<Vec<Vec<u32>>> {
    let (b, p) = (prompts.len(), prompts.first().map_or(0, Vec::len));
    if b == 0 || new == 0 {
        return Ok(vec![Vec::new(); b]);
    }
    if prompts.iter().any(|r| r.len() != p) || p == 0 || rngs.len() != b {
        return Err(Error::Invalid(format!(
            "continue_batch: {b} prompts of unequal or zero length, {} RNGs",
            rngs.len()
        )));
    }
    let flat: Vec<u32> = prompts.iter().flatten().copied().collect();
    let mut cache = KvCache::new();
    let mut logits = net.forward_cached(&Tensor::from_vec(flat, (b, p), device)?, &mut cache)?;
    let mut out: Vec<Vec<u32>> = vec![Vec::with_capacity(new); b];
    for i in 0..new {
        let rows: Vec<Vec<f32>> = logits.to_dtype(DType::F32)?.to_vec2()?;
        let next: Vec<u32> = rows.iter().zip(rngs.iter_mut()).map(|(row, rng)| pick(row, sampling, rng)).collect();
        for (o, &n) in out.iter_mut().zip(&next) {
            o.push(n);
        }
        if i + 1 < new {
            logits = net.forward_cached(&Tensor::from_vec(next, (b, 1), device)?, &mut cache)?;
        }
    }
    Ok(out)
}

/// How a model's own samples read to a judge (the teacher): prompts cut from held-out text, each
/// continued by the model, and the judge's perplexity of the continuations alone.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct SampleScore {
    /// exp(mean negative log-likelihood the judge gives the sampled tokens).
    pub judge_perplexity: f64,
    pub prompts: usize,
    pub prompt_tokens: usize,
    pub new_tokens: usize,
    pub temperature: f64,
}

/// [`SampleScore`] of `writer` judged by `judge`: `prompts` prompts of `prompt_len` tokens spread
/// evenly over `text`, `new` tokens each, sampled at `temperature` from seeds derived from `seed`.
pub fn score_samples(
    writer: &crate::engine::models::Network,
    judge: &crate::engine::models::Network,
    text: &[u32],
    (prompts, prompt_len, new): (usize, usize, usize),
    temperature: f64,
    seed: u64,
    device: &Device,
) -> Result<SampleScore> {
    let span = prompt_len + new;
    if text.len() < span || prompts == 0 || prompt_len == 0 || new == 0 {
        return Err(Error::Invalid(format!(
            "scoring samples needs at least {span} tokens of held-out text ({} given)",
            text.len()
        )));
    }
    let stride = ((text.len() - span) / prompts.max(1)).max(1);
    let starts: Vec<usize> = (0..prompts).map(|i| (i * stride).min(text.len() - span)).collect();
    let rows: Vec<Vec<u32>> = starts.iter().map(|&s| text[s..s + prompt_len].to_vec()).collect();
    let sampling = Sampling { temperature, top_k: 0, top_p: 1.0, seed };
    let mut rngs: Vec<rand_chacha::ChaCha8Rng> = (0..prompts)
        .map(|i| rand_chacha::ChaCha8Rng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(i as u64)))
        .collect();
    let written = continue_batch(writer, &rows, new, &sampling, &mut rngs, device)?;
    let full: Vec<u32> = rows.iter().zip(&written).flat_map(|(p, w)| p.iter().chain(w).copied()).collect();
    let ids = Tensor::from_vec(full, (prompts, span), device)?;
    // Position j predicts token j + 1: the written tokens are predicted at prompt_len − 1 .. span − 2.
    let logits = judge.forward(&ids.narrow(1, 0, span - 1)?)?.narrow(1, prompt_len - 1, new)?.contiguous()?;
    let log_p = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, candle_core::D::Minus1)?;
    let targets = ids.narrow(1, prompt_len, new)?.to_dtype(DType::U32)?.unsqueeze(2)?.contiguous()?;
    let nll = log_p.gather(&targets, 2)?.sum_all()?.to_scalar::<f32>()? as f64;
    let mean = -nll / (prompts * new) as f64;
    Ok(SampleScore { judge_perplexity: mean.exp(), prompts, prompt_tokens: prompt_len, new_tokens: new, temperature })
}

/// How a point's speed is measured: a prompt of `prefill` tokens, then `decode` new tokens, each
/// phase timed `repeats` times and the median kept (llama-bench's pp512 / tg128 by default).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct LatencyOptions {
    pub prefill: usize,
    pub decode: usize,
    pub repeats: usize,
}

impl Default for LatencyOptions {
    fn default() -> Self {
        Self { prefill: 512, decode: 128, repeats: 3 }
    }
}

/// The measured speed of a network as it would serve: prefill and decode tokens/s (medians), on
/// this machine's threads.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Latency {
    /// Prompt tokens of the prefill (the asked length, cut to the text and the context).
    pub prefill_tokens: usize,
    pub prefill_tokens_per_second: f64,
    pub decode_tokens: usize,
    pub decode_tokens_per_second: f64,
    pub ms_per_token: f64,
    pub threads: usize,
    pub repeats: usize,
    /// Bytes of the key/value cache once the prompt and the decoded tokens are in it.
    #[serde(default)]
    pub kv_cache_bytes: u64,
    /// Peak resident memory of the process while it served (Linux; the peak is reset before the
    /// timing, so this is what was resident then — everything else the process holds included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss_bytes: Option<u64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Times `network` on `tokens` (the prompt is their start): prefill, then greedy decoding with the
/// KV cache; the medians of `opts.repeats` runs.
pub fn measure_latency(
    network: &crate::engine::models::Network,
    tokens: &[u32],
    context: usize,
    opts: &LatencyOptions,
    monitor: &Monitor,
) -> Result<Latency> {
    if tokens.is_empty() {
        return Err(Error::Invalid("no tokens to time the model on".into()));
    }
    // A short context keeps the decode length (at most half the context) and cuts the prompt.
    let decode = opts.decode.min(context / 2).max(1);
    let prefill = opts.prefill.min(tokens.len()).min(context.saturating_sub(decode)).max(1);
    let reset = crate::engine::usage::reset_peak_rss();
    let device = network.device();
    let mut kv_cache_bytes = 0;
    let (mut pp, mut tg) = (Vec::new(), Vec::new());
    let row = |t: Tensor| -> Result<Vec<f32>> { Ok(t.to_dtype(DType::F32)?.squeeze(0)?.to_vec1::<f32>()?) };
    for r in 0..opts.repeats.max(1) {
        monitor.check()?;
        monitor.report(r, opts.repeats.max(1));
        let mut cache = KvCache::new();
        let clock = Instant::now();
        let input = Tensor::from_slice(&tokens[..prefill], (1, prefill), &device)?;
        let mut logits = row(network.forward_cached(&input, &mut cache)?)?;
        pp.push(prefill as f64 / clock.elapsed().as_secs_f64().max(1e-9));
        let clock = Instant::now();
        for _ in 0..decode {
            let next = logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i as u32).unwrap_or(0);
            let input = Tensor::from_slice(&[next], (1, 1), &device)?;
            logits = row(network.forward_cached(&input, &mut cache)?)?;
        }
        tg.push(decode as f64 / clock.elapsed().as_secs_f64().max(1e-9));
        kv_cache_bytes = cache.bytes() as u64;
    }
    monitor.report(opts.repeats.max(1), opts.repeats.max(1));
    let decode_tps = median(tg);
    Ok(Latency {
        prefill_tokens: prefill,
        prefill_tokens_per_second: median(pp),
        decode_tokens: decode,
        decode_tokens_per_second: decode_tps,
        ms_per_token: 1000.0 / decode_tps.max(1e-9),
        threads: rayon::current_num_threads(),
        repeats: opts.repeats.max(1),
        kv_cache_bytes,
        peak_rss_bytes: if reset { crate::engine::usage::peak_rss_since_reset() } else { None },
    })
}
