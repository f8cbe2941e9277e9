//! AWQ-style activation-aware scaling before quantization (Lin et al., "AWQ", MLSys 2024).
//!
//! A linear layer `y = W x` computes the same with `W' = W·diag(s)` and `x' = x / s` for any
//! positive scale `s` per input column. Quantizing `W'` instead of `W` gives the columns that `s`
//! enlarges finer steps relative to their weights: with `s = rms(x)^α` the columns whose inputs
//! carry the most energy — AWQ's salient weights — lose the least, without mixed precision. `1/s`
//! is folded into what produces `x`: the RMSNorm weight before q/k/v and before gate/up, the rows
//! of `up_proj` before `down_proj`, and the rows (and bias) of `v_proj` before `o_proj`. With
//! grouped-query attention several heads read one value head, so their columns of `o_proj` share
//! that value head's scale (its statistic the mean energy over those columns); AWQ's reference
//! skips that pair for such models. The float model computes what it computed before; an exported GGUF holds the folded norms, so llama.cpp runs it as any
//! other file of its types.
//!
//! α is searched per group of layers sharing an input, over `0, 1/20, …, 19/20` (α = 0 is no
//! scaling, so the search never does worse than plain rounding on its objective). The objective
//! is the group's summed output error over every calibration token, `Σ tr(ΔW H ΔWᵀ)` with
//! `ΔW = Q(W·diag(s))·diag(1/s) − W` and `H = Σ x xᵀ` the Gram matrix that GPTQ's calibration
//! collects: what AWQ measures on a calibration batch, at the cost of one `[rows, n] × [n, n]`
//! product per candidate. Differences from AWQ's reference: the activation statistic is the root
//! mean square (from `H`'s diagonal) rather than the mean absolute value, the error is that of the
//! group's linear outputs rather than of the whole attention or MLP module, and AWQ's second search
//! (clipping each group's weight range) is not done. Candidates round as the final format does
//! (with the importance matrix where the format takes one, rescaled to the scaled inputs); a
//! `+gptq` base is searched with round-to-nearest and then rounded by GPTQ with `H` rescaled the
//! same way.

use super::format::QuantFormat;
use super::gptq::Hessian;
use super::imatrix::Imatrix;
use super::policy::TensorRole;
use super::quantize::quantize_tensor;
use crate::engine::context::Monitor;
use crate::engine::loader::LoadedModel;
use crate::engine::models::ArchConfig;
use crate::engine::{Error, Result};
use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

/// Candidates of α: `0, 1/GRID, …, (GRID−1)/GRID`, as AWQ's `n_grid = 20`.
pub const GRID: usize = 20;

/// One group's search.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct AwqGroup {
    /// The linear weights scaled (Hugging Face names).
    pub layers: Vec<String>,
    /// Where `1/s` went: a norm weight, or the weight whose rows produce the group's input.
    pub folded_into: String,
    /// The chosen exponent (0: unscaled).
    pub alpha: f64,
    /// `Σ tr(ΔW H ΔWᵀ)` of the group rounded unscaled, and with the chosen scales.
    pub error_plain: f64,
    pub error_scaled: f64,
}

/// What the scaling did, for the report.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct AwqReport {
    pub groups: Vec<AwqGroup>,
    /// Pairs of layers AWQ could not scale, and why (a v → o pair with no head layout).
    pub skipped: Vec<String>,
    /// Summed over the groups: the output error unscaled and scaled (the search's objective).
    pub error_plain: f64,
    pub error_scaled: f64,
    pub seconds: f64,
}

/// The model's parameters with the scales applied, and each scaled linear weight's input scale.
pub struct Scaled {
    pub params: BTreeMap<String, Tensor>,
    /// `s` of every scaled linear weight, by name: its inputs are now `x / s`.
    pub scales: HashMap<String, Vec<f32>>,
    pub report: AwqReport,
}

impl Scaled {
    /// The importance matrix column of `name` for its scaled inputs: `E[(x/s)²] = E[x²]/s²`.
    pub fn importance(&self, name: &str, imatrix: &Imatrix) -> Option<Vec<f32>> {
        let imp = imatrix.columns.get(name)?;
        Some(match self.scales.get(name) {
            Some(s) => imp.iter().zip(s).map(|(v, s)| v / (s * s)).collect(),
            None => imp.clone(),
        })
    }

    /// `h` for `name`'s scaled inputs, `diag(1/s) H diag(1/s)`; `None` when `name` is unscaled.
    pub fn hessian(&self, name: &str, h: &Hessian) -> Option<Hessian> {
        self.scales.get(name).map(|s| rescaled(h, s))
    }
}

fn rescaled(h: &Hessian, s: &[f32]) -> Hessian {
    let n = h.n;
    let mut data = h.data.clone();
    for (i, row) in data.chunks_mut(n).enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v /= s[i] as f64 * s[j] as f64;
        }
    }
    Hessian { n, data, tokens: h.tokens }
}

/// Where a group's `1/s` is folded.
enum Fold {
    /// A norm weight (per input column).
    Norm(String),
    /// The rows of a linear weight `[n, in]` and its bias, if any.
    Rows(String, Option<String>),
}

impl Fold {
    fn name(&self) -> &str {
        match self {
            Self::Norm(n) | Self::Rows(n, _) => n,
        }
    }
}

struct Group {
    fold: Fold,
    layers: Vec<String>,
    /// For each input column of the layers, the fold's row it comes from, where several columns
    /// share one (grouped-query attention: `o_proj`'s columns of every head reading one value
    /// head); `None` when column `j` comes from row `j`.
    tie: Option<Vec<usize>>,
}

impl Group {
    fn plain(fold: Fold, layers: Vec<String>) -> Self {
        Self { fold, layers, tie: None }
    }

    /// `rms(x)^α` per fold row — over the columns a tied row feeds — normalised as AWQ does
    /// (`s / sqrt(max s · min s)`): (the fold's scales, the layers' input scales).
    fn scales(&self, h: &Hessian, alpha: f64) -> (Vec<f32>, Vec<f32>) {
        let Some(tie) = &self.tie else {
            let s = scales_for(h, alpha);
            return (s.clone(), s);
        };
        let rows = tie.iter().max().map_or(0, |m| m + 1);
        let (mut energy, mut count) = (vec![0f64; rows], vec![0usize; rows]);
        for (j, d) in h.diagonal().iter().enumerate() {
            energy[tie[j]] += d;
            count[tie[j]] += 1;
        }
        let mean: Vec<f64> = energy.iter().zip(&count).map(|(e, &c)| e / c.max(1) as f64).collect();
        let fold = normalised(&mean, h.tokens, alpha);
        let input = tie.iter().map(|&r| fold[r]).collect();
        (fold, input)
    }
}

/// The groups of a llama-family model in the order they are searched: each block's `down_proj`
/// (folded into `up_proj`) and `o_proj` (into `v_proj`) before the norms' groups, so that `up_proj`
/// and `v_proj` are searched with the rows they will be quantized with.
fn groups(model: &LoadedModel, skipped: &mut Vec<String>) -> Result<Vec<Group>> {
    let ArchConfig::Llama(cfg) = &model.config else {
        return Err(Error::Invalid(format!(
            "{}: AWQ folds its scales into the RMSNorm weights and projections of llama-family models (llama, \
             qwen2, qwen3); {} is not one — quantize it without +awq",
            model.info.name,
            model.config.model_type()
        )));
    };
    let has = |n: &str| model.params.contains_key(n);
    let mut out = Vec::new();
    for i in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{i}.");
        let n = |s: &str| format!("{p}{s}");
        out.push(Group::plain(Fold::Rows(n("mlp.up_proj.weight"), None), vec![n("mlp.down_proj.weight")]));
        let v = &model.params[&n("self_attn.v_proj.weight")];
        let o = &model.params[&n("self_attn.o_proj.weight")];
        let (v_rows, o_cols) = (v.dims()[0], o.dims()[1]);
        let heads = cfg.num_attention_heads;
        let head_dim = cfg.head_dim.unwrap_or(cfg.hidden_size / heads.max(1)).max(1);
        let kv = v_rows / head_dim;
        let bias = Some(n("self_attn.v_proj.bias")).filter(|b| has(b));
        let fold = Fold::Rows(n("self_attn.v_proj.weight"), bias);
        let layers = vec![n("self_attn.o_proj.weight")];
        if v_rows == o_cols {
            out.push(Group::plain(fold, layers));
        } else if kv > 0 && v_rows == kv * head_dim && o_cols == heads * head_dim && heads % kv == 0 {
            // Head `h` reads value head `h / (heads / kv)` (transformers' `repeat_kv`): its columns
            // of o_proj share that value head's rows, hence one scale.
            let per = heads / kv;
            let tie = (0..o_cols).map(|c| (c / head_dim / per) * head_dim + c % head_dim).collect();
            out.push(Group { fold, layers, tie: Some(tie) });
        } else {
            skipped.push(format!(
                "{p}self_attn: v_proj ({v_rows} rows) → o_proj ({o_cols} columns) not scaled: no head layout maps one onto the other"
            ));
        }
        out.push(Group::plain(
            Fold::Norm(n("input_layernorm.weight")),
            ["q_proj", "k_proj", "v_proj"].iter().map(|l| n(&format!("self_attn.{l}.weight"))).collect(),
        ));
        out.push(Group::plain(
            Fold::Norm(n("post_attention_layernorm.weight")),
            ["gate_proj", "up_proj"].iter().map(|l| n(&format!("mlp.{l}.weight"))).collect(),
        ));
    }
    for g in &out {
        for name in g.layers.iter().chain([&g.fold.name().to_string()]) {
            if !has(name) {
                return Err(Error::Invalid(format!("{}: AWQ needs {name}, which the model lacks", model.info.name)));
            }
        }
    }
    Ok(out)
}

/// Refuses a model AWQ cannot scale (not of the llama family, or missing a weight), before any
/// calibration.
pub fn check(model: &LoadedModel) -> Result<()> {
    groups(model, &mut Vec::new()).map(|_| ())
}

impl AwqReport {
    /// One line: groups scaled, the objective's change, the exponents chosen.
    pub fn summary(&self) -> String {
        let mut alphas: Vec<f64> = self.groups.iter().map(|g| g.alpha).collect();
        alphas.sort_by(f64::total_cmp);
        let scaled = alphas.iter().filter(|&&a| a > 0.0).count();
        let median = alphas.get(alphas.len() / 2).copied().unwrap_or(0.0);
        let change = if self.error_plain > 0.0 { 100.0 * (self.error_scaled / self.error_plain - 1.0) } else { 0.0 };
        let skipped = match self.skipped.len() {
            0 => String::new(),
            n => format!("; {n} v→o pair(s) not scaled (no head layout)"),
        };
        format!(
            "{scaled} of {} groups scaled (median α {median:.2}); calibration output error {change:+.1}% against \
             unscaled rounding, searched in {:.1} s{skipped}",
            self.groups.len(),
            self.seconds
        )
    }
}

/// Searches every group's scale for `format` (the format each linear weight will be quantized in,
/// before its width fallback, by name) and returns the scaled parameters. `imatrix` must hold the
/// Gram matrices (calibration with Hessians).
pub fn scale(
    model: &LoadedModel,
    format: &(dyn Fn(&str) -> QuantFormat + Sync),
    imatrix: &Imatrix,
    monitor: &Monitor,
) -> Result<Scaled> {
    let start = Instant::now();
    let mut skipped = Vec::new();
    let groups = groups(model, &mut skipped)?;
    let mut params = model.params.clone();
    for g in &groups {
        for name in g.layers.iter().chain([&g.fold.name().to_string()]) {
            let t = params[name].to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
            params.insert(name.clone(), t);
        }
    }
    let mut scales = HashMap::new();
    let mut report = Vec::with_capacity(groups.len());
    let monitor = monitor.unit("AWQ groups");
    monitor.report(0, groups.len());
    for (i, g) in groups.iter().enumerate() {
        monitor.check()?;
        let h = imatrix.hessians.get(&g.layers[0]).ok_or_else(|| {
            Error::Invalid(format!(
                "AWQ: no calibration activations reach {} (calibrate with Gram matrices)",
                g.layers[0]
            ))
        })?;
        let (alpha, error_plain, error_scaled) = search(&params, g, h, imatrix, format)?;
        if alpha > 0.0 {
            let (fold, input) = g.scales(h, alpha);
            apply(&mut params, g, &fold, &input)?;
            for l in &g.layers {
                scales.insert(l.clone(), input.clone());
            }
        }
        report.push(AwqGroup {
            layers: g.layers.clone(),
            folded_into: g.fold.name().to_string(),
            alpha,
            error_plain,
            error_scaled,
        });
        monitor.report(i + 1, groups.len());
    }
    let report = AwqReport {
        error_plain: report.iter().map(|g| g.error_plain).sum(),
        error_scaled: report.iter().map(|g| g.error_scaled).sum(),
        groups: report,
        skipped,
        seconds: start.elapsed().as_secs_f64(),
    };
    Ok(Scaled { params, scales, report })
}

/// `rms(x)^α`, normalised as AWQ does (`s / sqrt(max s · min s)`), from `H`'s diagonal.
pub fn scales_for(h: &Hessian, alpha: f64) -> Vec<f32> {
    normalised(&h.diagonal(), h.tokens, alpha)
}

/// `rms^α` from summed squares over `tokens`, normalised.
fn normalised(sum_sq: &[f64], tokens: usize, alpha: f64) -> Vec<f32> {
    let tokens = tokens.max(1) as f64;
    let s: Vec<f64> = sum_sq.iter().map(|d| (d / tokens).max(0.0).sqrt().max(1e-4).powf(alpha)).collect();
    let (lo, hi) = s.iter().fold((f64::MAX, 0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let norm = (lo * hi).sqrt();
    s.iter().map(|v| (v / norm) as f32).collect()
}

/// The best α of group `g`: (α, the error at α = 0, the error at α).
fn search(
    params: &BTreeMap<String, Tensor>,
    g: &Group,
    h: &Hessian,
    imatrix: &Imatrix,
    format: &(dyn Fn(&str) -> QuantFormat + Sync),
) -> Result<(f64, f64, f64)> {
    let n = h.n;
    let hf = Tensor::from_vec(h.data.iter().map(|&v| v as f32).collect::<Vec<f32>>(), (n, n), &Device::Cpu)?;
    let errors: Vec<(f64, f64)> = (0..GRID)
        .into_par_iter()
        .map(|k| {
            let alpha = k as f64 / GRID as f64;
            let (_, s) = g.scales(h, alpha);
            let mut err = 0.0;
            for name in &g.layers {
                err += output_error(name, &params[name], &s, &hf, imatrix, format(name))?;
            }
            Ok((alpha, err))
        })
        .collect::<Result<_>>()?;
    let plain = errors[0].1;
    let (alpha, best) = errors
        .into_iter()
        .filter(|e| e.1.is_finite())
        .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.total_cmp(&b.0)))
        .ok_or_else(|| Error::Invalid(format!("AWQ: no finite output error for {}", g.layers.join(", "))))?;
    Ok((alpha, plain, best))
}

/// `tr(ΔW H ΔWᵀ)` of `w` quantized in `format` after scaling its columns by `s`.
fn output_error(name: &str, w: &Tensor, s: &[f32], h: &Tensor, imatrix: &Imatrix, format: QuantFormat) -> Result<f64> {
    let n = s.len();
    let st = Tensor::from_slice(s, (1, n), &Device::Cpu)?;
    let scaled = w.broadcast_mul(&st)?;
    let imp: Option<Vec<f32>> =
        imatrix.columns.get(name).map(|imp| imp.iter().zip(s).map(|(v, s)| v / (s * s)).collect());
    // Candidates round to nearest: GPTQ (when asked) comes after the search.
    let rtn = format.rounded_to_nearest();
    let (q, _) = quantize_tensor(name, &scaled, TensorRole::Linear, rtn, false, imp.as_deref(), None)?;
    let d = q.dequantize()?.broadcast_div(&st)?.sub(w)?;
    Ok(d.matmul(h)?.mul(&d)?.sum_all()?.to_scalar::<f32>()? as f64)
}

/// Scales the group's weights' columns by `input` and divides its fold by `fold` (the same
/// scales, one per fold row, unless the group is tied).
fn apply(params: &mut BTreeMap<String, Tensor>, g: &Group, fold: &[f32], input: &[f32]) -> Result<()> {
    let row = Tensor::from_slice(input, (1, input.len()), &Device::Cpu)?;
    let (n, s) = (fold.len(), fold);
    let col = Tensor::from_slice(s, (n, 1), &Device::Cpu)?;
    for name in &g.layers {
        let w = params[name].broadcast_mul(&row)?;
        params.insert(name.clone(), w);
    }
    match &g.fold {
        Fold::Norm(name) => {
            let w = params[name].broadcast_div(&Tensor::from_slice(s, n, &Device::Cpu)?)?;
            params.insert(name.clone(), w);
        }
        Fold::Rows(name, bias) => {
            let w = params[name].broadcast_div(&col)?;
            params.insert(name.clone(), w);
            if let Some(b) = bias {
                let v = params[b].to_dtype(DType::F32)?.broadcast_div(&Tensor::from_slice(s, n, &Device::Cpu)?)?;
                params.insert(b.clone(), v);
            }
        }
    }
    Ok(())
}
