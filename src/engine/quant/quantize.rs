//! A model's parameters → quantized tensors, a per-tensor report and true sizes, and the network
//! that runs them.
//!
//! Quantization blocks run along a weight's input dimension (each row of `[out, in]`), as in
//! llama.cpp. GPT-2's `Conv1D` weights are stored `[in, out]`, so for that family every block
//! linear weight is transposed before quantizing (its embeddings and any untied head are not).

use super::awq::{self, AwqReport, Scaled};
use super::budget::{self, BudgetReport};
use super::format::{IntFormat, QuantFormat};
use super::gptq::{self, GptqOptions, Hessian, Prepared};
use super::imatrix::Imatrix;
use super::iq4nl::Iq4NlTensor;
use super::own::IntTensor;
use super::policy::{QuantPolicy, TensorRole};
use crate::engine::context::Monitor;
use crate::engine::loader::LoadedModel;
use crate::engine::models::weights::{TensorSource, WeightStore};
use crate::engine::models::Network;
use crate::engine::{Error, Result};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

/// The stored form of one tensor.
#[derive(Clone, Debug)]
pub enum QuantData {
    /// Unquantized f32, in the Hugging Face orientation.
    Float(Tensor),
    /// GGML blocks (including the F16 fallback), `[out, in]`.
    Ggml(Arc<QTensor>),
    /// An own integer format, `[out, in]`.
    Int(IntTensor),
    /// IQ4_NL blocks, `[out, in]` (candle has no such type).
    Iq4Nl(Iq4NlTensor),
}

/// One quantized parameter.
#[derive(Clone, Debug)]
pub struct QuantTensor {
    pub role: TensorRole,
    /// The Hugging Face shape.
    pub shape: Vec<usize>,
    /// The quantized form holds the transpose of the Hugging Face tensor (GPT-2 `Conv1D`).
    pub transposed: bool,
    pub data: QuantData,
}

impl QuantTensor {
    /// The format the tensor was stored in.
    pub fn format(&self) -> QuantFormat {
        match &self.data {
            QuantData::Float(_) => QuantFormat::F32,
            QuantData::Ggml(q) => match q.dtype() {
                GgmlDType::F32 => QuantFormat::F32,
                GgmlDType::F16 => QuantFormat::F16,
                d => QuantFormat::Ggml(d),
            },
            QuantData::Int(t) => QuantFormat::Int(t.format),
            QuantData::Iq4Nl(_) => QuantFormat::Iq4Nl,
        }
    }

    /// Bytes as stored: blocks, or packed codes plus scales and minima, or 4 per f32 value.
    pub fn bytes(&self) -> u64 {
        match &self.data {
            QuantData::Float(t) => 4 * t.elem_count() as u64,
            QuantData::Ggml(q) => q.storage_size_in_bytes() as u64,
            QuantData::Int(t) => t.storage_bytes(),
            QuantData::Iq4Nl(t) => t.storage_bytes(),
        }
    }

    /// The dequantized f32 tensor in the Hugging Face orientation.
    pub fn dequantize(&self) -> Result<Tensor> {
        let t = match &self.data {
            QuantData::Float(t) => return Ok(t.clone()),
            QuantData::Ggml(q) => q.dequantize(&Device::Cpu)?,
            QuantData::Int(t) => Tensor::from_vec(t.dequantize(), t.shape, &Device::Cpu)?,
            QuantData::Iq4Nl(t) => Tensor::from_vec(t.dequantize(), (t.rows, t.cols), &Device::Cpu)?,
        };
        Ok(if self.transposed { t.t()?.contiguous()? } else { t })
    }
}

/// What one tensor got; `quantize` prints these.
#[derive(Clone, Debug, Serialize)]
pub struct TensorReport {
    pub name: String,
    pub role: TensorRole,
    pub shape: Vec<usize>,
    /// The format the policy asked for.
    pub requested: String,
    /// The format it got (differs after a block-size fallback).
    pub format: String,
    pub bytes: u64,
    pub bits_per_weight: f64,
    /// Quantized with the importance matrix.
    pub imatrix: bool,
    /// Why the format differs from the requested one.
    pub note: Option<String>,
}

/// Sizes over every parameter: quantized weights with their scales, and everything left f32.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SizeReport {
    pub parameters: u64,
    pub bytes: u64,
    pub bits_per_weight: f64,
    /// The same parameters in f32.
    pub f32_bytes: u64,
    /// Tensors that fell back to another format because of their width.
    pub fallbacks: usize,
}

/// A quantized model: every parameter of the source model, by Hugging Face name.
pub struct QuantizedModel {
    pub format: QuantFormat,
    pub tensors: BTreeMap<String, QuantTensor>,
    pub report: Vec<TensorReport>,
    pub size: SizeReport,
    /// An importance matrix was applied to at least one tensor.
    pub imatrix: bool,
    /// Wall time of quantization (a budget's search included).
    pub seconds: f64,
    /// A budget's plan: target, predicted KL, each matrix's choice.
    pub budget: Option<BudgetReport>,
    /// AWQ's scales: each group's exponent and output error.
    pub awq: Option<AwqReport>,
}

/// How to quantize.
#[derive(Clone, Copy, Debug, Default)]
pub struct QuantOptions<'a> {
    pub policy: QuantPolicy,
    /// Per-column importance from calibration; used where the format supports it.
    pub imatrix: Option<&'a Imatrix>,
    /// A budget's sensitivity probes run on this many calibration tokens (default
    /// [`budget::PROBE_TOKENS`]).
    pub probe_tokens: Option<usize>,
}

/// Quantizes every parameter of `model` according to `format` and the policy.
pub fn quantize_model(
    model: &LoadedModel,
    format: QuantFormat,
    opts: &QuantOptions,
    monitor: &Monitor,
) -> Result<QuantizedModel> {
    let start = Instant::now();
    let tied = model.config.tied_embeddings();
    let conv1d = model.config.model_type() == "gpt2";
    let calibrated =
        opts.imatrix.is_some_and(
            |m| {
                if format.needs_hessians() {
                    !m.hessians.is_empty()
                } else {
                    !m.windows.is_empty()
                }
            },
        );
    if let Some(why) = format.calibration_need().filter(|_| !calibrated) {
        return Err(Error::Invalid(format!("{format} {why}: give a calibration text with --calib FILE")));
    }
    let plan = match (format, opts.imatrix) {
        (QuantFormat::Budget(b), Some(m)) => {
            Some(budget::plan(model, b, m, opts.probe_tokens.unwrap_or(budget::PROBE_TOKENS), monitor)?)
        }
        _ => None,
    };
    // AWQ scales the weights first; what follows quantizes the scaled weights in the base format.
    let (base, scaled) = match (format, opts.imatrix) {
        (QuantFormat::Awq(b), Some(m)) => {
            let linear = |name: &str| b.format().for_linear(name, model.config.layers());
            (b.format(), Some(awq::scale(model, &linear, m, &monitor.stage("AWQ scales"))?))
        }
        _ => (format, None),
    };
    let params = scaled.as_ref().map_or(&model.params, |s| &s.params);
    let mut tensors = BTreeMap::new();
    let mut report = Vec::with_capacity(params.len());
    // One factorisation per Hessian, however many layers share it (q, k, v; gate, up).
    let mut prepared: HashMap<*const Hessian, Arc<Prepared>> = HashMap::new();
    let monitor = monitor.unit("tensors");
    monitor.report(0, params.len());
    for (i, (name, t)) in params.iter().enumerate() {
        monitor.check()?;
        let role = TensorRole::of(name, t.dims(), tied);
        let requested = match (&plan, role) {
            (Some(p), _) => p.formats.get(name).copied().unwrap_or(QuantFormat::F32),
            (None, TensorRole::Linear) => base.for_linear(name, model.config.layers()),
            (None, _) => opts.policy.format_for(role, base),
        };
        let transposed = conv1d && role == TensorRole::Linear;
        let rescaled_importance = match (&scaled, opts.imatrix) {
            (Some(s), Some(m)) => s.importance(name, m),
            _ => None,
        };
        let importance = match &rescaled_importance {
            Some(v) => Some(v.as_slice()),
            None => opts.imatrix.and_then(|m| m.columns.get(name)).map(|v| v.as_slice()),
        };
        let hessian = match requested.is_gptq() {
            true => opts.imatrix.and_then(|m| m.hessians.get(name)),
            false => None,
        };
        let prep = hessian.map(|h| prepare(name, h, scaled.as_ref(), &mut prepared)).transpose()?;
        let (q, r) = quantize_tensor(name, t, role, requested, transposed, importance, prep.as_deref())?;
        tensors.insert(name.clone(), q);
        report.push(r);
        monitor.report(i + 1, params.len());
    }
    let parameters: u64 = model.params.values().map(|t| t.elem_count() as u64).sum();
    let bytes: u64 = report.iter().map(|r| r.bytes).sum();
    let size = SizeReport {
        parameters,
        bytes,
        bits_per_weight: 8.0 * bytes as f64 / parameters.max(1) as f64,
        f32_bytes: 4 * parameters,
        fallbacks: report.iter().filter(|r| r.note.is_some()).count(),
    };
    let imatrix = report.iter().any(|r| r.imatrix);
    let budget = plan.map(|p| p.report);
    let awq = scaled.map(|s| s.report);
    Ok(QuantizedModel { format, tensors, report, size, imatrix, seconds: start.elapsed().as_secs_f64(), budget, awq })
}

/// GPTQ's factorisation of `h`, once per Hessian however many layers share it (q, k, v; gate, up;
/// AWQ scales every layer of such a group alike, so the key stays the original Hessian). With AWQ's
/// scales, `h` is first rescaled to the scaled inputs.
pub(super) fn prepare(
    name: &str,
    h: &Arc<Hessian>,
    scaled: Option<&Scaled>,
    prepared: &mut HashMap<*const Hessian, Arc<Prepared>>,
) -> Result<Arc<Prepared>> {
    if let Some(p) = prepared.get(&Arc::as_ptr(h)) {
        return Ok(p.clone());
    }
    let rescaled = scaled.and_then(|s| s.hessian(name, h));
    let p = Prepared::new(rescaled.as_ref().unwrap_or(h), GptqOptions::default())
        .map_err(|e| Error::Invalid(format!("{name}: {e}")))?;
    let p = Arc::new(p);
    prepared.insert(Arc::as_ptr(h), p.clone());
    Ok(p)
}

/// Quantizes one parameter, falling back per tensor when its width does not fit the blocks. A
/// `+gptq` int format rounds with GPTQ from `gptq` (the prepared Hessian of the tensor's inputs);
/// without one (no calibration activation reaches the tensor) it rounds to nearest, with a note.
pub fn quantize_tensor(
    name: &str,
    t: &Tensor,
    role: TensorRole,
    requested: QuantFormat,
    transposed: bool,
    importance: Option<&[f32]>,
    gptq: Option<&Prepared>,
) -> Result<(QuantTensor, TensorReport)> {
    let shape = t.dims().to_vec();
    let t = t.detach().to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
    let w = if transposed { t.t()?.contiguous()? } else { t.contiguous()? };
    let width = *w.dims().last().unwrap_or(&1);
    // A mix asked of a whole tensor (an embedding under the `same` rule) is its base format.
    let requested = match requested {
        QuantFormat::Mix(m) => QuantFormat::Ggml(m.base()),
        QuantFormat::MixGptq(m) => QuantFormat::GgmlGptq(m.base()),
        f => f,
    };
    let applied = if w.rank() == 2 { requested.for_width(width) } else { QuantFormat::F32 };
    let use_imatrix = importance.is_some() && applied.supports_imatrix();
    let imp = importance.filter(|_| use_imatrix);
    let (data, transposed) = match applied {
        QuantFormat::F32 => (QuantData::Float(t), false),
        QuantFormat::Mix(_) | QuantFormat::MixGptq(_) | QuantFormat::Budget(_) | QuantFormat::Awq(_) => {
            return Err(Error::Invalid(format!("{name}: {applied} is applied to a model, not to one tensor")))
        }
        QuantFormat::F16 => (QuantData::Ggml(Arc::new(QTensor::quantize(&w, GgmlDType::F16)?)), transposed),
        QuantFormat::Ggml(d) => {
            let q = match imp {
                Some(imp) => QTensor::quantize_imatrix(&w, imp, d)?,
                None => QTensor::quantize(&w, d)?,
            };
            (QuantData::Ggml(Arc::new(q)), transposed)
        }
        QuantFormat::Iq4Nl => {
            let (rows, cols) = w.dims2()?;
            let values: Vec<f32> = w.flatten_all()?.to_vec1()?;
            (QuantData::Iq4Nl(Iq4NlTensor::quantize(&values, rows, cols, imp)?), transposed)
        }
        QuantFormat::Iq4NlGptq => {
            let (rows, cols) = w.dims2()?;
            let values: Vec<f32> = w.flatten_all()?.to_vec1()?;
            let q = match gptq {
                Some(p) => super::gptq_blocks::quantize_iq4nl(&values, rows, cols, p)?,
                None => Iq4NlTensor::quantize(&values, rows, cols, imp)?,
            };
            (QuantData::Iq4Nl(q), transposed)
        }
        QuantFormat::GgmlGptq(d) => {
            let q = match (gptq, super::format::int_twin(d)) {
                (Some(p), Some(twin)) => {
                    let (rows, cols) = w.dims2()?;
                    let values: Vec<f32> = w.flatten_all()?.to_vec1()?;
                    super::ggml_blocks::pack(&gptq::quantize_int(&values, rows, cols, twin, p)?, d)?
                }
                (Some(p), None) => {
                    let (rows, cols) = w.dims2()?;
                    let values: Vec<f32> = w.flatten_all()?.to_vec1()?;
                    super::gptq_blocks::quantize_kquant(&values, rows, cols, d, p)?
                }
                (None, _) => QTensor::quantize(&w, d)?,
            };
            (QuantData::Ggml(Arc::new(q)), transposed)
        }
        QuantFormat::Int(f) => {
            let (rows, cols) = w.dims2()?;
            let values: Vec<f32> = w.flatten_all()?.to_vec1()?;
            let q = match gptq {
                Some(p) if f.gptq => gptq::quantize_int(&values, rows, cols, f, p)?,
                _ => IntTensor::quantize(&values, rows, cols, IntFormat { gptq: false, ..f }, imp)?,
            };
            (QuantData::Int(q), transposed)
        }
    };
    let mut note = (applied != requested && w.rank() == 2).then(|| {
        format!(
            "rows are {width} wide, not a multiple of {requested}'s block of {}: stored as {applied}",
            requested.block_size()
        )
    });
    if applied.is_gptq() && gptq.is_none() {
        note = Some("no calibration activation reaches this tensor: rounded to nearest, not by GPTQ".into());
    }
    let q = QuantTensor { role, shape: shape.clone(), transposed, data };
    let bytes = q.bytes();
    let numel: usize = shape.iter().product();
    let r = TensorReport {
        name: name.to_string(),
        role,
        shape,
        requested: requested.name(),
        format: q.format().name(),
        bytes,
        bits_per_weight: 8.0 * bytes as f64 / numel.max(1) as f64,
        imatrix: use_imatrix,
        note,
    };
    Ok((q, r))
}

impl QuantizedModel {
    /// The network of `model`'s family running these weights: GGML-quantized linear weights, and
    /// a tied head, multiply in their format (F16 fallbacks are dequantized by candle; IQ4_NL as
    /// the Q8_0 it converts to exactly); embedding lookups and the own integer formats use the
    /// dequantized f32 values.
    pub fn network(&self, model: &LoadedModel) -> Result<Network> {
        let mut dense = HashMap::new();
        let mut quantized = HashMap::new();
        for (name, t) in &self.tensors {
            match &t.data {
                QuantData::Ggml(q) if t.role.is_matmul() && q.dtype() != GgmlDType::F16 => {
                    quantized.insert(name.clone(), q.clone());
                }
                // A tied table: its rows looked up from the blocks, the head multiplied in its format.
                QuantData::Ggml(q) if t.role == TensorRole::TiedHead && q.dtype() != GgmlDType::F16 => {
                    quantized.insert(name.clone(), q.clone());
                }
                // IQ4_NL as the Q8_0 blocks it converts to exactly (candle has no IQ4_NL type).
                QuantData::Iq4Nl(b) if t.role.is_matmul() || t.role == TensorRole::TiedHead => {
                    quantized.insert(name.clone(), Arc::new(b.to_q8_0()?));
                }
                _ => {
                    dense.insert(name.clone(), t.dequantize()?);
                }
            }
        }
        let store = WeightStore::new(TensorSource::Memory(dense), false, &Device::Cpu).with_quantized(quantized);
        Network::build(&model.config, &store.root(), model.resolved.path())
    }

    /// Every parameter dequantized, by Hugging Face name.
    pub fn dequantized(&self) -> Result<BTreeMap<String, Tensor>> {
        self.tensors.iter().map(|(n, t)| Ok((n.clone(), t.dequantize()?))).collect()
    }
}
