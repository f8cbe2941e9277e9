//! Importance-based pruning of a Llama-family teacher into a student (NVIDIA's Minitron recipe, in
//! its calibration-only form): what each part of the teacher does on calibration text decides what
//! the student keeps.
//!
//! - **Blocks** (depth): a block's importance is how much it changes its input, 1 − the mean cosine
//!   similarity between the hidden states entering and leaving it (ShortGPT's block influence, the
//!   depth criterion Minitron uses). The student keeps the most important blocks, in order.
//! - **MLP channels** (width): the mean square activation entering `down_proj`, per channel; each kept
//!   block keeps its most active channels (rows of `gate_proj`/`up_proj`, columns of `down_proj`).
//! - **Attention heads** (width): grouped-query attention prunes whole key/value groups (a kv head and
//!   the query heads that read it): a group's importance is the mean square activation its query heads
//!   feed into `o_proj`; each kept block keeps its most active groups.
//!
//! The hidden size is kept (the embeddings, norms and head are copied). With a parameter target the
//! shape is chosen by measurement: every (kv groups, MLP width) pair, with as many blocks as fit the
//! target, is pruned and scored by perplexity on the calibration text, and the best is kept.

use crate::engine::context::Monitor;
use crate::engine::eval::{evaluate_tokens, EvalOptions};
use crate::engine::loader::LoadedModel;
use crate::engine::models::ArchConfig;
use crate::engine::quant::imatrix::calibrate;
use crate::engine::tokenizer::encode_plain;
use crate::engine::{Error, Result};
use candle_core::{DType, Device, Tensor, D};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// What calibration measured of each teacher block.
#[derive(Clone, Debug, Serialize)]
pub struct Importance {
    /// Per block: 1 − mean cos(input, output).
    pub blocks: Vec<f64>,
    /// Per block, per MLP channel: mean square activation entering `down_proj`.
    #[serde(skip)]
    pub channels: Vec<Vec<f32>>,
    /// Per block, per key/value group: the summed mean square activation of its query heads entering `o_proj`.
    #[serde(skip)]
    pub groups: Vec<Vec<f32>>,
    pub tokens: usize,
}

/// What a pruned student keeps.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PrunePlan {
    /// Teacher blocks kept, in order.
    pub layers: Vec<usize>,
    /// Key/value groups kept per block.
    pub kv_groups: usize,
    /// MLP channels kept per block.
    pub intermediate: usize,
}

/// One shape tried for a parameter target, and its calibration perplexity before any training.
#[derive(Clone, Debug, Serialize)]
pub struct Candidate {
    pub plan: PrunePlan,
    pub parameters: u64,
    pub perplexity: f64,
}

fn llama(teacher: &LoadedModel) -> Result<&crate::engine::models::llama::LlamaConfig> {
    match &teacher.config {
        ArchConfig::Llama(c) => Ok(c),
        other => Err(Error::Invalid(format!(
            "pruning supports the Llama family (llama, qwen2, qwen3); {} is {}: derive it by copying layers instead (no --prune)",
            teacher.info.name,
            other.model_type()
        ))),
    }
}

fn column_importance(imatrix: &crate::engine::quant::imatrix::Imatrix, name: &str) -> Result<Vec<f32>> {
    imatrix
        .columns
        .get(name)
        .cloned()
        .ok_or_else(|| Error::Invalid(format!("calibration recorded no input for {name}")))
}

/// Measures the teacher's blocks, MLP channels and attention groups on `text` (windows of
/// `seq_len`, at most `max_tokens`).
pub fn importance(
    teacher: &LoadedModel,
    text: &str,
    seq_len: usize,
    max_tokens: usize,
    monitor: &Monitor,
) -> Result<Importance> {
    let c = llama(teacher)?;
    let opts = EvalOptions { seq_len, max_tokens: Some(max_tokens), ..Default::default() };
    let imatrix = calibrate(teacher, text, &opts, false, monitor)?;
    let (layers, heads, kv, hd) = (c.num_hidden_layers, c.num_attention_heads, c.kv_heads(), c.head_dim());
    let per_group = heads / kv;
    let mut channels = Vec::with_capacity(layers);
    let mut groups = Vec::with_capacity(layers);
    for i in 0..layers {
        channels.push(column_importance(&imatrix, &format!("model.layers.{i}.mlp.down_proj.weight"))?);
        let o = column_importance(&imatrix, &format!("model.layers.{i}.self_attn.o_proj.weight"))?;
        groups.push((0..kv).map(|g| o[g * per_group * hd..(g + 1) * per_group * hd].iter().sum()).collect());
    }
    // Block influence from the hidden states around each block, window by window.
    let mut tokens = encode_plain(teacher.tokenizer()?, text)?;
    tokens.truncate(max_tokens);
    let seq = seq_len.min(c.max_position_embeddings.max(2));
    let windows = tokens.len() / seq;
    if windows == 0 {
        return Err(Error::Invalid(format!(
            "the calibration text gives {} tokens, less than one window of {seq}: give a longer --calib text",
            tokens.len()
        )));
    }
    let net = &teacher.network;
    let mut sums = vec![0f64; layers];
    let mut positions = 0usize;
    for w in 0..windows {
        monitor.check()?;
        let ids = Tensor::from_slice(&tokens[w * seq..(w + 1) * seq], (1, seq), &Device::Cpu)?;
        let ctx = net.body_context(&ids)?;
        let mut x = net.stage(0, None, &ctx)?;
        for (i, sum) in sums.iter_mut().enumerate() {
            let y = net.stage(i + 1, Some(&x), &ctx)?;
            let dot = (&x * &y)?.sum(D::Minus1)?;
            let norms = (x.sqr()?.sum(D::Minus1)?.sqrt()? * y.sqr()?.sum(D::Minus1)?.sqrt()?)?;
            let cos = (dot / norms.clamp(1e-12, f64::MAX)?)?;
            *sum += cos.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?;
            x = y;
        }
        positions += seq;
        monitor.report(w + 1, windows);
    }
    let blocks = sums.iter().map(|s| 1.0 - s / positions as f64).collect();
    Ok(Importance { blocks, channels, groups, tokens: imatrix.tokens })
}

/// The indices of the `k` largest `values`, in ascending index order (ties to the lower index).
fn top_k<T: Copy + PartialOrd>(values: &[T], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[b].partial_cmp(&values[a]).unwrap_or(std::cmp::Ordering::Equal).then(a.cmp(&b)));
    order.truncate(k);
    order.sort_unstable();
    order
}

/// The plan keeping the `layers` most important blocks, `kv_groups` groups and `intermediate` channels.
pub fn plan(imp: &Importance, layers: usize, kv_groups: usize, intermediate: usize) -> PrunePlan {
    PrunePlan { layers: top_k(&imp.blocks, layers), kv_groups, intermediate }
}

/// The pruned student's config.json and weights.
pub fn prune(teacher: &LoadedModel, imp: &Importance, p: &PrunePlan) -> Result<(Value, BTreeMap<String, Tensor>)> {
    let c = llama(teacher)?;
    let (heads, kv, hd) = (c.num_attention_heads, c.kv_heads(), c.head_dim());
    let per_group = heads / kv;
    if p.layers.is_empty() || p.layers.iter().any(|&l| l >= c.num_hidden_layers) {
        return Err(Error::Invalid(format!("keep between 1 and {} layers", c.num_hidden_layers)));
    }
    if p.kv_groups == 0 || p.kv_groups > kv {
        return Err(Error::Invalid(format!("keep between 1 and {kv} key/value heads (--kv-heads)")));
    }
    if p.intermediate == 0 || p.intermediate > c.intermediate_size {
        return Err(Error::Invalid(format!(
            "keep between 1 and {} MLP channels (--intermediate)",
            c.intermediate_size
        )));
    }
    let mut config = teacher.config_json.clone();
    let obj = config.as_object_mut().ok_or_else(|| Error::Invalid("teacher config.json is not an object".into()))?;
    let n = p.layers.len();
    obj.insert("num_hidden_layers".into(), json!(n));
    obj.insert("num_attention_heads".into(), json!(p.kv_groups * per_group));
    obj.insert("num_key_value_heads".into(), json!(p.kv_groups));
    obj.insert("intermediate_size".into(), json!(p.intermediate));
    obj.insert("head_dim".into(), json!(hd));
    if let Some(types) = obj.get("layer_types").and_then(|v| v.as_array()).cloned() {
        obj.insert("layer_types".into(), Value::Array(p.layers.iter().map(|&l| types[l].clone()).collect()));
    }
    if obj.contains_key("max_window_layers") {
        obj.insert("max_window_layers".into(), json!(n));
    }
    let index = |v: Vec<usize>| -> Result<Tensor> {
        Ok(Tensor::from_vec(v.iter().map(|&i| i as u32).collect::<Vec<u32>>(), v.len(), &Device::Cpu)?)
    };
    let mut out = BTreeMap::new();
    for (name, t) in &teacher.dense_params()? {
        let Some(rest) = name.strip_prefix("model.layers.") else {
            out.insert(name.clone(), t.detach());
            continue;
        };
        let (idx, suffix) = rest.split_once('.').ok_or_else(|| Error::Invalid(format!("unexpected tensor {name}")))?;
        let idx: usize = idx.parse().map_err(|_| Error::Invalid(format!("unexpected tensor {name}")))?;
        let Some(j) = p.layers.iter().position(|&l| l == idx) else { continue };
        let groups = top_k(&imp.groups[idx], p.kv_groups);
        let q_rows: Vec<usize> =
            groups.iter().flat_map(|&g| (g * per_group * hd)..((g + 1) * per_group * hd)).collect();
        let kv_rows: Vec<usize> = groups.iter().flat_map(|&g| (g * hd)..((g + 1) * hd)).collect();
        let channels = top_k(&imp.channels[idx], p.intermediate);
        let t = t.detach();
        let kept = match suffix {
            "self_attn.q_proj.weight" | "self_attn.q_proj.bias" => t.index_select(&index(q_rows)?, 0)?,
            "self_attn.k_proj.weight"
            | "self_attn.k_proj.bias"
            | "self_attn.v_proj.weight"
            | "self_attn.v_proj.bias" => t.index_select(&index(kv_rows)?, 0)?,
            "self_attn.o_proj.weight" => t.index_select(&index(q_rows)?, 1)?,
            "mlp.gate_proj.weight" | "mlp.up_proj.weight" => t.index_select(&index(channels)?, 0)?,
            "mlp.down_proj.weight" => t.index_select(&index(channels)?, 1)?,
            _ => t,
        };
        out.insert(format!("model.layers.{j}.{suffix}"), kept.contiguous()?);
    }
    Ok((config, out))
}

/// The pruned student as a network, loaded like a model (the teacher's tokenizer).
pub fn pruned_model(teacher: &LoadedModel, config: &Value, tensors: &BTreeMap<String, Tensor>) -> Result<LoadedModel> {
    let layers = config.get("num_hidden_layers").and_then(Value::as_u64).unwrap_or(0);
    crate::engine::derive::in_memory(teacher, config.clone(), tensors.clone(), &format!("pruned, {layers} layers"))
}

/// Parameters of a pruned student of `teacher` with `layers` blocks, `kv_groups` groups and
/// `intermediate` channels (from the teacher's own tensors: biases and norms included).
pub fn parameters(teacher: &LoadedModel, layers: usize, kv_groups: usize, intermediate: usize) -> Result<u64> {
    let c = llama(teacher)?;
    let (heads, kv, hd, h) = (c.num_attention_heads, c.kv_heads(), c.head_dim(), c.hidden_size);
    let per_group = heads / kv;
    let mut outside = 0u64;
    let mut block = 0u64;
    for (name, t) in &teacher.params {
        let Some(rest) = name.strip_prefix("model.layers.0.") else {
            if !name.starts_with("model.layers.") {
                outside += t.elem_count() as u64;
            }
            continue;
        };
        let (q, k) = ((kv_groups * per_group * hd) as u64, (kv_groups * hd) as u64);
        block += match rest {
            "self_attn.q_proj.weight" | "self_attn.o_proj.weight" => q * h as u64,
            "self_attn.q_proj.bias" => q,
            "self_attn.k_proj.weight" | "self_attn.v_proj.weight" => k * h as u64,
            "self_attn.k_proj.bias" | "self_attn.v_proj.bias" => k,
            "mlp.gate_proj.weight" | "mlp.up_proj.weight" | "mlp.down_proj.weight" => (intermediate * h) as u64,
            _ => t.elem_count() as u64,
        };
    }
    Ok(outside + layers as u64 * block)
}

/// Prunes to at most `target` parameters: every (kv groups, MLP width in eighths) pair with as many
/// blocks as fit — or exactly `layers` blocks when given (a latency target fixes the depth) —
/// scored by perplexity on `calib_tokens` before any training; the best first.
pub fn search(
    teacher: &LoadedModel,
    imp: &Importance,
    target: u64,
    layers: Option<usize>,
    calib_tokens: &[u32],
    seq_len: usize,
    monitor: &Monitor,
) -> Result<Vec<Candidate>> {
    let c = llama(teacher)?;
    let mut shapes = Vec::new();
    for g in 1..=c.kv_heads() {
        for eighth in 1..=8 {
            let inter = (c.intermediate_size * eighth / 8).max(1);
            let per_block = parameters(teacher, 1, g, inter)? - parameters(teacher, 0, g, inter)?;
            let outside = parameters(teacher, 0, g, inter)?;
            if outside >= target {
                continue;
            }
            let fit = (((target - outside) / per_block.max(1)) as usize).min(c.num_hidden_layers);
            match layers {
                Some(n) if n >= 1 && n <= fit => shapes.push((n, g, inter)),
                None if fit >= 1 => shapes.push((fit, g, inter)),
                _ => {}
            }
        }
    }
    if shapes.is_empty() {
        let n = layers.unwrap_or(1);
        let least = parameters(teacher, n, 1, (c.intermediate_size / 8).max(1))?;
        return Err(Error::Invalid(format!(
            "--target-params {target}: the smallest pruned student ({n} block(s), 1 kv head, 1/8 of the MLP) has {least} parameters"
        )));
    }
    let opts = EvalOptions { seq_len, ..Default::default() };
    let mut out = Vec::with_capacity(shapes.len());
    for (i, &(n, g, inter)) in shapes.iter().enumerate() {
        monitor.check()?;
        let p = plan(imp, n, g, inter);
        let (config, tensors) = prune(teacher, imp, &p)?;
        let parameters = tensors.values().map(|t| t.elem_count() as u64).sum();
        let model = pruned_model(teacher, &config, &tensors)?;
        let e = evaluate_tokens(
            &model.network,
            calib_tokens,
            &opts,
            &Device::Cpu,
            &Monitor::silent(monitor.cancel_flag()),
        )?;
        out.push(Candidate { plan: p, parameters, perplexity: e.perplexity });
        monitor.report(i + 1, shapes.len());
    }
    out.sort_by(|a, b| a.perplexity.total_cmp(&b.perplexity));
    Ok(out)
}

/// How `derive-student --prune` prunes.
#[derive(Clone, Debug)]
pub struct PruneOptions {
    /// At most this many parameters (the shape is searched); else the shape below.
    pub target_params: Option<u64>,
    pub layers: Option<usize>,
    pub kv_heads: Option<usize>,
    pub intermediate: Option<usize>,
    /// Calibration windows and token budget.
    pub seq_len: usize,
    pub calib_tokens: usize,
}

/// What `derive-student --prune` reports.
#[derive(Debug, Serialize)]
pub struct PruneReport {
    pub out: std::path::PathBuf,
    pub parameters: u64,
    pub teacher_parameters: u64,
    pub plan: PrunePlan,
    pub heads: usize,
    /// Perplexity on the calibration text before any training: the teacher's, and the student's.
    pub teacher_perplexity: f64,
    pub perplexity_before_training: f64,
    pub calibration_tokens: usize,
    /// Per teacher block, 1 − mean cos(input, output).
    pub block_importance: Vec<f64>,
    /// The shapes tried for a parameter target, best first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<Candidate>,
}

/// Prunes `teacher` by the importance measured on `calib` and saves the student as a Hugging Face
/// folder at `out`.
pub fn prune_and_save(
    teacher: &LoadedModel,
    calib: &str,
    opts: &PruneOptions,
    out: &std::path::Path,
    monitor: &Monitor,
) -> Result<PruneReport> {
    let c = llama(teacher)?.clone();
    let inputs = teacher.resolved.input_files();
    let inputs: Vec<&std::path::Path> = inputs.iter().map(|p| p.as_path()).collect();
    crate::engine::fsutil::refuse_overwriting_input(out, &inputs, "--out")?;
    if opts.target_params.is_none() && opts.layers.is_none() {
        return Err(Error::Invalid("--prune needs --target-params N or a shape (--layers N)".into()));
    }
    let imp = importance(teacher, calib, opts.seq_len, opts.calib_tokens, &monitor.stage("calibration"))?;
    let mut tokens = encode_plain(teacher.tokenizer()?, calib)?;
    tokens.truncate(opts.calib_tokens);
    let eval = EvalOptions { seq_len: opts.seq_len, ..Default::default() };
    let teacher_ppl =
        evaluate_tokens(&teacher.network, &tokens, &eval, &Device::Cpu, &Monitor::silent(monitor.cancel_flag()))?;
    let (chosen, candidates) = match opts.target_params {
        Some(target) => {
            let all = search(
                teacher,
                &imp,
                target,
                opts.layers,
                &tokens,
                opts.seq_len,
                &monitor.stage("pruned shapes").unit("shapes"),
            )?;
            (all[0].clone(), all)
        }
        None => {
            let layers = opts.layers.unwrap_or(c.num_hidden_layers);
            if layers == 0 || layers > c.num_hidden_layers {
                return Err(Error::Invalid(format!(
                    "--layers {layers}: keep between 1 and {} layers",
                    c.num_hidden_layers
                )));
            }
            let p = plan(
                &imp,
                layers,
                opts.kv_heads.unwrap_or(c.kv_heads()),
                opts.intermediate.unwrap_or(c.intermediate_size),
            );
            let (config, tensors) = prune(teacher, &imp, &p)?;
            let model = pruned_model(teacher, &config, &tensors)?;
            let e =
                evaluate_tokens(&model.network, &tokens, &eval, &Device::Cpu, &Monitor::silent(monitor.cancel_flag()))?;
            (Candidate { plan: p, parameters: model.info.parameters, perplexity: e.perplexity }, Vec::new())
        }
    };
    let (config, tensors) = prune(teacher, &imp, &chosen.plan)?;
    crate::engine::derive::save_hf_folder(out, &config, &tensors, crate::engine::derive::tokenizer_of(teacher)?)?;
    Ok(PruneReport {
        out: out.to_path_buf(),
        parameters: chosen.parameters,
        teacher_parameters: teacher.parameter_count(),
        heads: chosen.plan.kv_groups * c.num_attention_heads / c.kv_heads(),
        plan: chosen.plan,
        teacher_perplexity: teacher_ppl.perplexity,
        perplexity_before_training: chosen.perplexity,
        calibration_tokens: imp.tokens,
        block_importance: imp.blocks,
        candidates,
    })
}
