//! Calibration for activation-aware quantization: an importance matrix from activations.
//!
//! A linear layer's output error from a weight error `Δw` is `Δw·x`; over a text its expected
//! square is `Σⱼ Δwⱼ² E[xⱼ²]` for uncorrelated inputs. So the importance of input column `j` of a
//! layer is the mean square of its input activations, measured by running the unquantized model
//! on a calibration text — the quantity llama.cpp's `imatrix` tool collects. K-quants use it through
//! candle's `QTensor::quantize_imatrix`, the own formats through weighted rounding.

use super::gptq::Hessian;
use super::policy::TensorRole;
use crate::engine::context::Monitor;
use crate::engine::eval::{windows, EvalOptions};
use crate::engine::loader::LoadedModel;
use crate::engine::models::recorder::InputRecorder;
use crate::engine::models::weights::{TensorSource, WeightStore};
use crate::engine::models::Network;
use crate::engine::tokenizer::encode_plain;
use crate::engine::{Error, Result};
use candle_core::{Device, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// Per-column importance of every linear weight, by the weight's Hugging Face name.
#[derive(Clone, Debug, Default)]
pub struct Imatrix {
    /// Mean square input activation per input column.
    pub columns: BTreeMap<String, Vec<f32>>,
    /// Tokens the model was run on.
    pub tokens: usize,
    /// Input Gram matrices `Σ x xᵀ` for GPTQ, by weight name (shared by the layers that read the
    /// same input); empty unless calibration was asked for them.
    pub hessians: BTreeMap<String, Arc<Hessian>>,
    /// The calibration windows the model ran on (a budget's sensitivity probes reuse the first).
    pub windows: Vec<Vec<u32>>,
    /// Budgets' sensitivity measurements on this calibration, by (probe tokens, GPTQ): measured
    /// by the first budget, reused by the others.
    pub budget: Arc<Mutex<Vec<((usize, bool), Arc<super::budget::Sensitivity>)>>>,
}

/// Calibration tokens when nobody says otherwise: on SmolLM2-135M q4_k the importance matrix of
/// this many tokens of *Emma* is within 1% of the whole novel's in KL, at a seventh of the time
/// (docs/quantization.md, "How much calibration text").
pub const DEFAULT_CALIB_TOKENS: usize = 32_768;

/// Runs `model` (a causal LM) over `text` — windows of `opts.seq_len`, at most `opts.max_tokens`
/// tokens — and records the input of every named linear layer. A tied head has no weight of its
/// own and gets no entry (it is quantized plainly). Says on `monitor` how many tokens it uses
/// before it starts and, after the first window, about how long it will take. With `hessians`, it
/// also sums every linear layer's input Gram matrix (what GPTQ needs).
pub fn calibrate(
    model: &LoadedModel,
    text: &str,
    opts: &EvalOptions,
    hessians: bool,
    monitor: &Monitor,
) -> Result<Imatrix> {
    if !model.config.is_causal_lm() {
        return Err(Error::Invalid(format!(
            "{} is a {} model; calibration runs a causal language model over text",
            model.info.name, model.info.task
        )));
    }
    let mut tokens = encode_plain(model.tokenizer()?, text)?;
    crate::engine::tokenizer::check_ids(&tokens, model.config.vocab_size(), &model.info.name)?;
    let available = tokens.len();
    if let Some(max) = opts.max_tokens {
        tokens.truncate(max);
    }
    let seq_len = opts.seq_len.min(model.config.context_length()).max(2);
    if hessians && tokens.len() < seq_len {
        return Err(Error::Invalid(format!(
            "the calibration text gives {} token(s), less than one window of {seq_len}; GPTQ needs at least one \
             full window (a longer --calib text, or a smaller --seq-len)",
            tokens.len()
        )));
    }
    if hessians {
        check_gram_memory(&model.info.name, gram_bytes_upper_bound(model), crate::engine::pair::machine_memory().1)?;
    }
    let wins = windows(&tokens, seq_len);
    if wins.is_empty() {
        return Err(Error::Invalid(format!(
            "the calibration text gives {} token(s); calibration needs at least 2",
            tokens.len()
        )));
    }
    let used: usize = wins.iter().map(|w| w.len()).sum();
    let of = if used < available { format!(" of the text's {available}") } else { String::new() };
    monitor.note(format!(
        "importance matrix: {used} calibration tokens{of} in {} windows of {seq_len} (--calib-tokens sets the bound)",
        wins.len()
    ));
    let recorder = Arc::new(if hessians { InputRecorder::with_gram() } else { InputRecorder::default() });
    let network = recording_network(model, recorder.clone())?;
    let start = std::time::Instant::now();
    monitor.report(0, wins.len());
    for (i, w) in wins.iter().enumerate() {
        monitor.check()?;
        let ids = Tensor::from_slice(w, (1, w.len()), &Device::Cpu)?;
        network.forward(&ids)?;
        monitor.report(i + 1, wins.len());
        if i == 0 && wins.len() > 1 {
            let per_token = start.elapsed().as_secs_f64() / w.len() as f64;
            monitor
                .note(format!("importance matrix: about {:.0} s at the first window's speed", per_token * used as f64));
        }
    }
    Ok(Imatrix {
        columns: recorder.means(),
        tokens: used,
        hessians: recorder.hessians(),
        windows: wins.iter().map(|w| w.to_vec()).collect(),
        budget: Default::default(),
    })
}

/// An upper bound of what GPTQ's calibration holds: one f64 `n × n` Gram matrix per linear weight
/// of input width `n` (layers that read one input share a matrix, so the true figure is lower).
pub fn gram_bytes_upper_bound(model: &LoadedModel) -> u64 {
    let tied = model.config.tied_embeddings();
    let conv1d = model.config.model_type() == "gpt2";
    model
        .params
        .iter()
        .filter_map(|(name, t)| {
            let role = TensorRole::of(name, t.dims(), tied);
            let dims = t.dims();
            let n = match role {
                TensorRole::Linear if conv1d => dims[0],
                TensorRole::Linear | TensorRole::Head => dims[1],
                _ => return None,
            };
            Some(8 * (n * n) as u64)
        })
        .sum()
}

/// Refuses GPTQ's calibration when its Gram matrices (`need` bytes, at most) would take more than
/// half of the `free` memory.
pub fn check_gram_memory(name: &str, need: u64, free: u64) -> Result<()> {
    if need <= free / 2 {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "GPTQ keeps one n x n Gram matrix per linear layer's input during calibration: up to {:.2} GB for {name}, \
         more than half of the {:.2} GB of free memory; quantize without +gptq (round-to-nearest with the \
         importance matrix) or on a machine with more memory",
        need as f64 / 1e9,
        free as f64 / 1e9
    )))
}

/// The same network over the same (shared, not copied) tensors, with every linear layer recording.
fn recording_network(model: &LoadedModel, recorder: Arc<InputRecorder>) -> Result<Network> {
    let tensors: HashMap<String, Tensor> = model
        .params
        .iter()
        .map(|(n, t)| Ok((n.clone(), t.detach().to_device(&Device::Cpu)?)))
        .collect::<Result<_>>()?;
    let store = WeightStore::new(TensorSource::Memory(tensors), false, &Device::Cpu).with_recorder(recorder);
    Network::build(&model.config, &store.root(), model.resolved.path())
}
