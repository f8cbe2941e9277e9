//! Budget mode: given a bits/weight target over every parameter, choose each matrix's GGML format
//! by its measured sensitivity.
//!
//! 1. Every matrix (linear weights, embeddings, the head) may take any format of [`LADDER`] after
//!    its width fallback (rows 576 wide cannot hold 256-weight K-quant blocks: `q2_k` and `q3_k`
//!    become `iq4_nl`, `q4_k` becomes `q5_0` as in `quantize`); vectors stay f32. Sizes are exact, so the smallest and largest
//!    reachable sizes are known before any measurement and a target outside them is refused (below)
//!    or met with every matrix in `q8_0` (above, with a note).
//! 2. Each matrix is quantized in each of its formats (with the importance matrix where the format
//!    takes one) and its activation-weighted error `Σᵢⱼ E[xⱼ²]·Δwᵢⱼ²` — the expected square error of
//!    its output on the calibration text — is computed.
//! 3. Sensitivity is measured: for each matrix, the model with only that matrix in its smallest
//!    format is compared with the unquantized model on the first calibration windows (mean KL per
//!    position). Its KL at another format is that measured KL scaled by the ratio of output errors
//!    (the KL of a small perturbation is quadratic in it).
//! 4. Allocation: every matrix starts in its smallest format; upgrades along each matrix's lower
//!    convex hull of (bytes, KL) are taken in order of KL removed per byte while they fit the
//!    target (greedy multiple-choice knapsack). The KL of the plan is predicted as the sum of the
//!    matrices' KLs; `sweep` measures the real one.

use super::format::{Budget, QuantFormat};
use super::gptq::{Hessian, Prepared};
use super::imatrix::Imatrix;
use super::policy::TensorRole;
use super::quantize::prepare;
use super::quantize::quantize_tensor;
use crate::engine::context::Monitor;
use crate::engine::loader::LoadedModel;
use crate::engine::models::weights::{TensorSource, WeightStore};
use crate::engine::models::Network;
use crate::engine::{Error, Result};
use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

mod knapsack;
mod probes;
use knapsack::allocate;
use probes::{first_stage, Probes};

/// The formats a budget chooses from, smallest first: GGML formats only, so that the plan exports
/// to one GGUF file llama.cpp runs. Q4_0 sits beside Q4_K and IQ4_NL (what Q2_K and Q3_K fall
/// back to on narrow rows) at the same 4.5 bits/weight; the measurement decides between them (with
/// `+gptq`, each rounded by GPTQ).
pub const LADDER: &[GgmlDType] =
    &[GgmlDType::Q2K, GgmlDType::Q3K, GgmlDType::Q4_0, GgmlDType::Q4K, GgmlDType::Q5K, GgmlDType::Q6K, GgmlDType::Q8_0];

/// Calibration tokens the sensitivity probes run on by default (the first of the calibration
/// windows): one probe per matrix, so this bounds the cost of the search.
pub const PROBE_TOKENS: usize = 256;

/// A budget's plan and how it was reached; printed by `quantize`, kept on the quantized model.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct BudgetReport {
    pub target_bits_per_weight: f64,
    /// The plan's size over every parameter, width fallbacks and f32 vectors included.
    pub planned_bits_per_weight: f64,
    /// Every matrix in its smallest and its largest format.
    pub smallest_bits_per_weight: f64,
    pub largest_bits_per_weight: f64,
    /// Sum of the matrices' estimated KLs at their chosen formats (nats per position).
    pub predicted_kl: f64,
    pub probe_tokens: usize,
    /// Sensitivity probes run (one per matrix with more than one format to choose from).
    pub probes: usize,
    /// Time the probes took (once per calibration: later targets reuse them).
    pub sensitivity_seconds: f64,
    /// Time this plan took (the probes included when it ran them).
    pub seconds: f64,
    pub note: Option<String>,
    pub tensors: Vec<BudgetChoice>,
}

/// What one matrix got.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct BudgetChoice {
    pub name: String,
    pub format: String,
    pub bytes: u64,
    /// The format it was probed in and the KL measured with only it quantized so.
    pub probe_format: String,
    pub probe_kl: f64,
    /// Its estimated KL in the chosen format.
    pub kl: f64,
}

/// The per-tensor formats of a budget, by Hugging Face name (vectors absent: f32).
#[derive(Clone, Debug)]
pub struct BudgetPlan {
    pub formats: BTreeMap<String, QuantFormat>,
    pub report: BudgetReport,
}

/// One matrix of the search.
#[derive(Debug)]
struct Candidate {
    name: String,
    role: TensorRole,
    transposed: bool,
    /// Distinct formats after the width fallback, smallest first, with exact bytes.
    options: Vec<(QuantFormat, u64)>,
}

/// Exact bytes of `numel` weights in rows `width` wide.
fn bytes_of(format: QuantFormat, numel: usize) -> u64 {
    match format {
        QuantFormat::F32 => 4 * numel as u64,
        QuantFormat::F16 => 2 * numel as u64,
        QuantFormat::Ggml(d) => (numel / d.block_size() * d.type_size()) as u64,
        other => (numel as f64 * other.bits_per_weight(0) / 8.0).ceil() as u64,
    }
}

/// The matrices and their options, and the bytes of everything kept f32. With `gptq` every format
/// of the ladder (legacy blocks, K-quants and the IQ4_NL they fall back to) is rounded by GPTQ.
fn candidates(model: &LoadedModel, gptq: bool) -> (Vec<Candidate>, u64, u64) {
    let tied = model.config.tied_embeddings();
    let conv1d = model.config.model_type() == "gpt2";
    let (mut out, mut fixed, mut params) = (Vec::new(), 0u64, 0u64);
    for (name, t) in &model.params {
        let numel = t.elem_count();
        params += numel as u64;
        let role = TensorRole::of(name, t.dims(), tied);
        if role == TensorRole::Vector {
            fixed += 4 * numel as u64;
            continue;
        }
        let transposed = conv1d && role == TensorRole::Linear;
        let width = if transposed { t.dims()[0] } else { t.dims()[1] };
        let mut options: Vec<(QuantFormat, u64)> = Vec::new();
        for d in LADDER {
            let f = match QuantFormat::Ggml(*d).for_width(width) {
                QuantFormat::Ggml(l) if gptq && l != GgmlDType::F16 => QuantFormat::GgmlGptq(l),
                QuantFormat::Iq4Nl if gptq => QuantFormat::Iq4NlGptq,
                f => f,
            };
            if !options.iter().any(|(g, _)| *g == f) {
                options.push((f, bytes_of(f, numel)));
            }
        }
        options.sort_by_key(|o| o.1);
        out.push(Candidate { name: name.clone(), role, transposed, options });
    }
    (out, fixed, params)
}

fn bits(bytes: u64, params: u64) -> f64 {
    8.0 * bytes as f64 / params.max(1) as f64
}

/// The smallest and largest sizes a budget can reach on `model`, in bits/weight.
pub fn reachable(model: &LoadedModel) -> (f64, f64) {
    let (cands, fixed, params) = candidates(model, false);
    let min: u64 = cands.iter().map(|c| c.options[0].1).sum::<u64>() + fixed;
    let max: u64 = cands.iter().map(|c| c.options[c.options.len() - 1].1).sum::<u64>() + fixed;
    (bits(min, params), bits(max, params))
}

/// Refuses a target below what every matrix in its smallest format reaches.
pub fn check_reachable(model: &LoadedModel, target: f64) -> Result<()> {
    let (min, _) = reachable(model);
    if target + 1e-9 >= min {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "budget-{target} asks for {target:.2} bits/weight, below what any format reaches on {}: every matrix in its \
         smallest format (q2_k, or its width fallback) and the norms and biases in f32 is {min:.3} bits/weight; ask \
         for budget-{:.2} or more",
        model.info.name,
        (min * 100.0).ceil() / 100.0
    )))
}

/// What the probes measured: every matrix's options with their estimated KLs. It depends on the
/// model and the calibration only, so one measurement serves every target (kept with the
/// calibration, [`Imatrix::budget`]).
#[derive(Debug)]
pub struct Sensitivity {
    cands: Vec<Candidate>,
    fixed: u64,
    params: u64,
    probe_kl: Vec<f64>,
    kls: Vec<Vec<f64>>,
    positions: usize,
    probes: usize,
    seconds: f64,
}

/// Plans `target` bits/weight for `model` from its calibration (`imatrix`: column importances and
/// the windows the probes run on), measuring the sensitivities once per calibration and probe size.
pub fn plan(
    model: &LoadedModel,
    budget: Budget,
    imatrix: &Imatrix,
    probe_tokens: usize,
    monitor: &Monitor,
) -> Result<BudgetPlan> {
    let target = budget.bits();
    check_reachable(model, target)?;
    let start = Instant::now();
    let sens = {
        let mut cache = imatrix.budget.lock().unwrap_or_else(|e| e.into_inner());
        let key = (probe_tokens, budget.gptq);
        match cache.iter().find(|(k, _)| *k == key) {
            Some((_, s)) => s.clone(),
            None => {
                let s = std::sync::Arc::new(measure(model, imatrix, probe_tokens, budget.gptq, monitor)?);
                cache.push((key, s.clone()));
                s
            }
        }
    };
    let Sensitivity { cands, fixed, params, probe_kl, kls, .. } = &*sens;
    let (fixed, params) = (*fixed, *params);

    // 4. Allocation.
    let target_bytes = (target * params as f64 / 8.0).floor() as u64;
    let chosen = allocate(cands, kls, target_bytes.saturating_sub(fixed));
    let mut formats = BTreeMap::new();
    let mut tensors = Vec::with_capacity(cands.len());
    let (mut bytes, mut predicted) = (fixed, 0.0);
    for (i, c) in cands.iter().enumerate() {
        let (f, b) = c.options[chosen[i]];
        formats.insert(c.name.clone(), f);
        bytes += b;
        predicted += kls[i][chosen[i]];
        tensors.push(BudgetChoice {
            name: c.name.clone(),
            format: f.name(),
            bytes: b,
            probe_format: c.options[0].0.name(),
            probe_kl: probe_kl[i],
            kl: kls[i][chosen[i]],
        });
    }
    let (smallest, largest) = reachable(model);
    let note = (target > largest + 1e-9).then(|| {
        format!("the target is above every matrix in its largest format ({largest:.3} bits/weight): all take it")
    });
    Ok(BudgetPlan {
        formats,
        report: BudgetReport {
            target_bits_per_weight: target,
            planned_bits_per_weight: bits(bytes, params),
            smallest_bits_per_weight: smallest,
            largest_bits_per_weight: largest,
            predicted_kl: predicted,
            probe_tokens: sens.positions,
            probes: sens.probes,
            sensitivity_seconds: sens.seconds,
            seconds: start.elapsed().as_secs_f64(),
            note,
            tensors,
        },
    })
}

/// Steps 2 and 3: every option's output error, one probe per matrix, the KL table.
fn measure(
    model: &LoadedModel,
    imatrix: &Imatrix,
    probe_tokens: usize,
    gptq: bool,
    monitor: &Monitor,
) -> Result<Sensitivity> {
    let start = Instant::now();
    let (cands, fixed, params) = candidates(model, gptq);
    // GPTQ's factorisations, for the matrices calibration reached.
    let mut shared = HashMap::new();
    let mut prepared: HashMap<&str, Arc<Prepared>> = HashMap::new();
    if gptq {
        for c in &cands {
            if let Some(h) = imatrix.hessians.get(&c.name) {
                prepared.insert(c.name.as_str(), prepare(&c.name, h, None, &mut shared)?);
            }
        }
    }
    let cpu = Device::Cpu;

    // 2. Output errors of every option.
    let stage = monitor.stage("budget: errors per format").unit("tensors");
    stage.report(0, cands.len());
    let errors: Vec<Vec<f64>> = cands
        .par_iter()
        .map(|c| {
            stage.check()?;
            let w = &model.params[&c.name];
            let imp = imatrix.columns.get(&c.name).map(|v| v.as_slice());
            // The exact error needs the Gram matrix, recorded for GPTQ; a plain budget uses the
            // diagonal whether or not calibration also recorded it, so its plan does not depend on
            // what else was calibrated for.
            let hess = imatrix.hessians.get(&c.name).filter(|_| gptq);
            let prep = prepared.get(c.name.as_str());
            let calib = Calib { imp, hess: hess.map(|h| &**h), prep: prep.map(|p| &**p) };
            c.options.iter().map(|(f, _)| output_error(w, c, *f, &calib)).collect::<Result<Vec<f64>>>()
        })
        .collect::<Result<_>>()?;
    stage.report(cands.len(), cands.len());

    // 3. Sensitivity probes.
    let mut tokens: Vec<u32> = imatrix.windows.iter().flatten().copied().collect();
    tokens.truncate(probe_tokens);
    let seq_len = imatrix.windows.first().map_or(0, |w| w.len()).min(tokens.len());
    if seq_len < 2 {
        return Err(Error::Invalid(
            "a budget measures each tensor's sensitivity on the calibration text, which gave fewer than 2 tokens; \
             give a longer --calib text"
                .into(),
        ));
    }
    let probes_set = Probes::new(&model.network, &tokens, seq_len, &monitor.stage("budget: reference"))?;
    let probes_set_positions = probes_set.positions;
    let base: HashMap<String, Tensor> =
        model.params.iter().map(|(n, t)| Ok((n.clone(), t.detach().to_device(&cpu)?))).collect::<Result<_>>()?;
    let probed: Vec<usize> = (0..cands.len()).filter(|&i| cands[i].options.len() > 1).collect();
    let stage = monitor.stage("budget: sensitivity probes").unit("tensors");
    monitor.note(format!(
        "budget: {} tensors probed on {} calibration tokens, each with only itself quantized",
        probed.len(),
        probes_set.positions
    ));
    let mut probe_kl = vec![0f64; cands.len()];
    stage.report(0, probed.len());
    for (k, &i) in probed.iter().enumerate() {
        stage.check()?;
        let c = &cands[i];
        let w = &model.params[&c.name];
        let imp = imatrix.columns.get(&c.name).map(|v| v.as_slice());
        let prep = prepared.get(c.name.as_str()).map(|p| &**p);
        let (q, _) = quantize_tensor(&c.name, w, c.role, c.options[0].0, c.transposed, imp, prep)?;
        let mut tensors = base.clone();
        tensors.insert(c.name.clone(), q.dequantize()?.to_dtype(w.dtype())?);
        let store = WeightStore::new(TensorSource::Memory(tensors), false, &cpu);
        let probe = Network::build(&model.config, &store.root(), model.resolved.path())?;
        let kl = probes_set.kl(&probe, first_stage(&c.name, probes_set.stages))?;
        if !kl.is_finite() {
            return Err(Error::Invalid(format!(
                "{}: the model with only {} in {} gives a non-finite KL; the weights hold NaN or infinity",
                model.info.name, c.name, c.options[0].0
            )));
        }
        probe_kl[i] = kl.max(0.0);
        stage.report(k + 1, probed.len());
    }

    // KL of every option: the probe's, scaled by the ratio of output errors.
    let kls: Vec<Vec<f64>> = cands
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let e0 = errors[i][0];
            (0..c.options.len()).map(|j| if e0 > 0.0 { probe_kl[i] * errors[i][j] / e0 } else { 0.0 }).collect()
        })
        .collect();

    let probes = probed.len();
    Ok(Sensitivity {
        cands,
        fixed,
        params,
        probe_kl,
        kls,
        positions: probes_set_positions,
        probes,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// What calibration gives one matrix: column importances, its inputs' Gram matrix and GPTQ's
/// factorisation of it (with `+gptq`).
struct Calib<'a> {
    imp: Option<&'a [f32]>,
    hess: Option<&'a Hessian>,
    prep: Option<&'a Prepared>,
}

/// The summed squared output error over the calibration inputs, `Σ Δw H Δwᵀ`, where the Gram
/// matrix `H` was recorded; otherwise its diagonal estimate `Σᵢⱼ impⱼ·Δwᵢⱼ²` (`imp` 1 where
/// calibration recorded no input: a tied head). In the quantizer's orientation (rows along the input).
fn output_error(w: &Tensor, c: &Candidate, f: QuantFormat, calib: &Calib) -> Result<f64> {
    let (q, _) = quantize_tensor(&c.name, w, c.role, f, c.transposed, calib.imp, calib.prep)?;
    let imp = calib.imp;
    let orient = |t: Tensor| -> Result<Tensor> {
        let t = t.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
        Ok(if c.transposed { t.t()?.contiguous()? } else { t })
    };
    let (w, d) = (orient(w.detach())?, orient(q.dequantize()?)?);
    let width = w.dim(1)?;
    let (w, d): (Vec<f32>, Vec<f32>) = (w.flatten_all()?.to_vec1()?, d.flatten_all()?.to_vec1()?);
    if let Some(h) = calib.hess.filter(|h| h.n == width) {
        return Ok(h.weighted_error(&w, &d));
    }
    let imp = imp.filter(|v| v.len() == width);
    Ok(w.chunks(width)
        .zip(d.chunks(width))
        .map(|(wr, dr)| {
            wr.iter()
                .zip(dr)
                .enumerate()
                .map(|(j, (a, b))| {
                    let e = (*b - *a) as f64;
                    e * e * imp.map_or(1.0, |v| v[j] as f64)
                })
                .sum::<f64>()
        })
        .sum())
}
