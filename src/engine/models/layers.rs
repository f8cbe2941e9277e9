//! Differentiable building blocks shared by the model families.
//!
//! candle's fused `rms_norm`, `layer_norm`, `softmax_last_dim` and `rope` kernels record no gradient,
//! so everything here is composed from elementary ops that do, except where the project's own
//! kernels ([`crate::engine::kernels`]: linear, RMS norm, rope, attention, SwiGLU, each with a
//! backward) take over on the CPU in f32.

use super::recorder::InputRecorder;
use super::weights::Scope;
use crate::engine::kernels::autocast::Precision;
use crate::engine::kernels::{autocast, int8_gemm, linear, qgemm, qgemv, rmsnorm, rope, softmax};
use crate::engine::Result;
use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor, D};
use std::sync::{Arc, OnceLock};

/// A dense layer. `weight` is stored `[out, in]` (torch `nn.Linear`) or `[in, out]` (GPT-2 `Conv1D`),
/// or — when the weight store holds a GGML-quantized version — as a candle `QMatMul` `[out, in]`
/// that multiplies without dequantizing (inference only: it records no gradient). Dense weights
/// multiply at the thread's [`autocast`] precision; under [`Precision::Int8`] a frozen weight (not
/// a `Var`) is quantized and packed on first use and kept with the layer (clones share it).
#[derive(Clone)]
pub struct Linear {
    weight: LinearWeight,
    bias: Option<Tensor>,
    /// Where to record the inputs (an importance matrix), with the weight's name.
    tap: Option<(String, Arc<InputRecorder>)>,
    /// The int8 copy of a frozen dense weight, packed on the first int8 forward.
    int8: Arc<OnceLock<int8_gemm::PackedWeight>>,
    /// A quantized weight multiplies dequantized by candle, in f32 (a reference network).
    reference: bool,
}

#[derive(Clone)]
enum LinearWeight {
    Dense { weight: Tensor, transposed: bool },
    Quantized(QMatMul),
}

impl Linear {
    /// torch `nn.Linear` layout: weight `[out, in]`.
    pub fn load(s: &Scope, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        let weight = Self::load_weight(s, in_dim, out_dim, false)?;
        let bias = if bias { Some(s.get("bias", out_dim)?) } else { None };
        Ok(Self { weight, bias, tap: Self::tap(s), int8: Default::default(), reference: s.dequantized_reference() })
    }

    /// GPT-2 `Conv1D` layout: weight `[in, out]` (a quantized version is stored `[out, in]`).
    pub fn load_conv1d(s: &Scope, in_dim: usize, out_dim: usize) -> Result<Self> {
        let weight = Self::load_weight(s, in_dim, out_dim, true)?;
        let bias = Some(s.get("bias", out_dim)?);
        Ok(Self { weight, bias, tap: Self::tap(s), int8: Default::default(), reference: s.dequantized_reference() })
    }

    fn load_weight(s: &Scope, in_dim: usize, out_dim: usize, transposed: bool) -> Result<LinearWeight> {
        Ok(match s.quantized("weight", (out_dim, in_dim))? {
            Some(q) => LinearWeight::Quantized(QMatMul::from_arc(q)?),
            None if transposed => LinearWeight::Dense { weight: s.get("weight", (in_dim, out_dim))?, transposed },
            None => LinearWeight::Dense { weight: s.get("weight", (out_dim, in_dim))?, transposed },
        })
    }

    fn tap(s: &Scope) -> Option<(String, Arc<InputRecorder>)> {
        s.recorder().map(|r| (s.name("weight"), r))
    }

    /// The head tied to the token embedding `embedding` (`[out, in]`) that `s` loaded: its
    /// GGML-quantized version when the store holds one (a quantized tied model multiplies by the
    /// table in its own format, as llama.cpp does), else the table itself.
    pub fn tied(s: &Scope, embedding: &Embedding) -> Result<Self> {
        match (&embedding.table, embedding.weight()) {
            (EmbeddingTable::Quantized(q), _) => Self::quantized(q.clone(), s.dequantized_reference()),
            (_, Some(dense)) => {
                let (out_dim, in_dim) = dense.dims2()?;
                match s.quantized("weight", (out_dim, in_dim))? {
                    Some(q) => Self::quantized(q, s.dequantized_reference()),
                    None => Ok(Self::from_weight(dense.clone())),
                }
            }
            (EmbeddingTable::Dense(_), None) => unreachable!("a dense table has a weight"),
        }
    }

    fn quantized(q: Arc<QTensor>, reference: bool) -> Result<Self> {
        Ok(Self {
            weight: LinearWeight::Quantized(QMatMul::from_arc(q)?),
            bias: None,
            tap: None,
            int8: Default::default(),
            reference,
        })
    }

    /// A layer that reuses another tensor (tied embeddings), `[out, in]`.
    pub fn from_weight(weight: Tensor) -> Self {
        Self {
            weight: LinearWeight::Dense { weight, transposed: false },
            bias: None,
            tap: None,
            int8: Default::default(),
            reference: false,
        }
    }

    /// The `[out, in]` weight when the layer is a plain dense product (no bias, no input tap).
    pub fn dense_weight(&self) -> Option<&Tensor> {
        match (&self.weight, &self.bias, &self.tap) {
            (LinearWeight::Dense { weight, transposed: false }, None, None) => Some(weight),
            _ => None,
        }
    }

    /// True when the layer multiplies with a GGML-quantized weight.
    pub fn is_quantized(&self) -> bool {
        matches!(self.weight, LinearWeight::Quantized(_))
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let in_dim = *dims.last().expect("linear input has a last dim");
        let rows: usize = dims[..dims.len() - 1].iter().product();
        // A 2-D input is used as it is: a reshape is a node for autograd to fill and add into.
        let x2 = if dims.len() == 2 { x.clone() } else { x.reshape((rows, in_dim))? };
        if let Some((name, recorder)) = &self.tap {
            recorder.record(name, x.id(), &x2)?;
        }
        let y = match &self.weight {
            LinearWeight::Dense { weight, transposed } if self.runs_int8(&x2, weight) => {
                int8_gemm::linear(&x2, self.packed(weight, *transposed, &x2)?)?
            }
            LinearWeight::Dense { weight, transposed: true } => autocast::matmul(&x2, weight)?,
            // f32, and the layers an int8 scope leaves in f32 (trainable, or differentiated through).
            LinearWeight::Dense { weight, transposed: false }
                if autocast::current() != Precision::Bf16 && linear::applies(&x2, weight) =>
            {
                linear::linear(&x2, weight)?
            }
            LinearWeight::Dense { weight, transposed: false } => autocast::matmul(&x2, &weight.t()?)?,
            LinearWeight::Quantized(QMatMul::QTensor(q)) if self.reference => reference_product(&x2, q)?,
            LinearWeight::Quantized(QMatMul::QTensor(q)) if qgemm::applies(&x2, q) => qgemm::matmul(&x2, q)?,
            LinearWeight::Quantized(QMatMul::QTensor(q)) if qgemv::applies(&x2, q) => qgemv::matmul(&x2, q)?,
            LinearWeight::Quantized(q) => q.forward(&x2.contiguous()?)?,
        };
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        if dims.len() == 2 {
            return Ok(y);
        }
        let mut out_dims = dims;
        *out_dims.last_mut().expect("non-empty") = y.dim(1)?;
        Ok(y.reshape(out_dims)?)
    }
}

impl Linear {
    /// True when this product runs in int8: the thread asks for it, nothing differentiates
    /// through it (neither the input nor a trainable weight), and it runs on the CPU in f32.
    fn runs_int8(&self, x: &Tensor, weight: &Tensor) -> bool {
        autocast::current() == Precision::Int8
            && !x.track_op()
            && !weight.is_variable()
            && x.device().is_cpu()
            && x.dtype() == DType::F32
            && weight.dtype() == DType::F32
    }

    /// The int8 copy of `weight`; the first int8 forward packs it, smoothed for its input `x`
    /// (the calibration batch: [`int8_gemm::PackedWeight::calibrated`]).
    fn packed(&self, weight: &Tensor, transposed: bool, x: &Tensor) -> Result<&int8_gemm::PackedWeight> {
        if let Some(p) = self.int8.get() {
            return Ok(p);
        }
        let packed = int8_gemm::PackedWeight::calibrated(weight, transposed, x)?;
        Ok(self.int8.get_or_init(|| packed))
    }
}

/// `x · Wᵀ` with `W` dequantized by candle, a block of at most 4096 weight rows at a time (a
/// 151k-token head is never expanded whole).
fn reference_product(x: &Tensor, w: &QTensor) -> Result<Tensor> {
    const ROWS: usize = 4096;
    let (rows, _) = w.shape().dims2()?;
    if rows <= ROWS {
        return Ok(x.matmul(&w.dequantize(x.device())?.t()?)?);
    }
    let data = w.data()?;
    let row_bytes = data.len() / rows;
    let mut parts = Vec::with_capacity(rows.div_ceil(ROWS));
    for first in (0..rows).step_by(ROWS) {
        let n = ROWS.min(rows - first);
        let bytes = std::borrow::Cow::Borrowed(&data[first * row_bytes..(first + n) * row_bytes]);
        let storage = candle_core::quantized::QStorage::from_data(bytes, &Device::Cpu, w.dtype())?;
        let block = QTensor::new(storage, (n, w.shape().dims()[1]))?;
        parts.push(x.matmul(&block.dequantize(x.device())?.t()?)?);
    }
    Ok(Tensor::cat(&parts, 1)?)
}

/// `x / sqrt(mean(x²) + eps) * w`, computed in f32 like transformers' `LlamaRMSNorm`.
#[derive(Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn load(s: &Scope, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self { weight: s.get("weight", dim)?, eps })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if rmsnorm::applies(x, &self.weight) {
            return rmsnorm::rms_norm(x, &self.weight, self.eps);
        }
        let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = x.broadcast_div(&(ms + self.eps)?.sqrt()?)?;
        Ok(normed.broadcast_mul(&self.weight)?)
    }
}

/// Layer normalisation with affine weight and bias.
#[derive(Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn load(s: &Scope, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self { weight: s.get("weight", dim)?, bias: s.get("bias", dim)?, eps })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let centered = x.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centered.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        Ok(normed.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)?)
    }
}

/// Token embedding table `[vocab, dim]`: dense, or — when the store holds only a GGML-quantized
/// version (a GGUF teacher in its own format) — looked up row by row from the blocks.
#[derive(Clone)]
pub struct Embedding {
    table: EmbeddingTable,
}

#[derive(Clone)]
enum EmbeddingTable {
    Dense(Tensor),
    Quantized(Arc<QTensor>),
}

impl Embedding {
    pub fn load(s: &Scope, vocab: usize, dim: usize) -> Result<Self> {
        if !s.has_dense("weight") {
            if let Some(q) = s.quantized("weight", (vocab, dim))? {
                return Ok(Self { table: EmbeddingTable::Quantized(q) });
            }
        }
        Ok(Self { table: EmbeddingTable::Dense(s.get("weight", (vocab, dim))?) })
    }

    /// The dense table (`None` when it stays quantized).
    pub fn weight(&self) -> Option<&Tensor> {
        match &self.table {
            EmbeddingTable::Dense(w) => Some(w),
            EmbeddingTable::Quantized(_) => None,
        }
    }

    /// The device the looked-up rows come out on (a quantized table is looked up on the CPU).
    pub fn device(&self) -> Device {
        match &self.table {
            EmbeddingTable::Dense(w) => w.device().clone(),
            EmbeddingTable::Quantized(_) => Device::Cpu,
        }
    }

    /// Rows of the table (vocabulary or positions).
    pub fn rows(&self) -> Result<usize> {
        Ok(match &self.table {
            EmbeddingTable::Dense(w) => w.dim(0)?,
            EmbeddingTable::Quantized(q) => q.shape().dims()[0],
        })
    }

    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let dims = ids.dims().to_vec();
        let flat = ids.flatten_all()?;
        let emb = match &self.table {
            EmbeddingTable::Dense(w) => w.index_select(&flat, 0)?,
            EmbeddingTable::Quantized(q) => {
                let ids: Vec<u32> = flat.to_dtype(DType::U32)?.to_vec1()?;
                qgemm::dequantize_rows(q, &ids)?.to_device(flat.device())?
            }
        };
        let mut out = dims;
        out.push(emb.dim(1)?);
        Ok(emb.reshape(out)?)
    }
}

/// Activations named as in Hugging Face configs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Silu,
    /// Exact erf GELU (`gelu`).
    Gelu,
    /// tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    Relu,
}

impl Activation {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "silu" | "swish" => Some(Self::Silu),
            "gelu" => Some(Self::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Self::GeluTanh),
            "relu" => Some(Self::Relu),
            _ => None,
        }
    }

    pub fn forward(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::Silu => x.silu()?,
            Self::Gelu => x.gelu_erf()?,
            Self::GeluTanh => x.gelu()?,
            Self::Relu => x.relu()?,
        })
    }
}

/// Additive causal mask `[t, t]`: 0 on and below the diagonal, -inf above.
pub fn causal_mask(t: usize, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> =
        (0..t).flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
    Ok(Tensor::from_vec(mask, (t, t), device)?)
}

/// Scaled dot-product attention over `[b, heads, t, d]` tensors with grouped key/value heads.
/// `mask` is additive and broadcast to `[b, heads, t, t]`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>, scale: f64) -> Result<Tensor> {
    let (b, heads, t, d) = q.dims4()?;
    let kv_heads = k.dim(1)?;
    let (k, v) = if kv_heads != heads {
        let rep = heads / kv_heads;
        let tk = k.dim(2)?;
        let expand = |x: &Tensor| -> Result<Tensor> {
            Ok(x.unsqueeze(2)?.broadcast_as((b, kv_heads, rep, tk, d))?.reshape((b, heads, tk, d))?)
        };
        (expand(k)?, expand(v)?)
    } else {
        (k.clone(), v.clone())
    };
    let raw = q.contiguous()?.matmul(&k.t()?.contiguous()?)?;
    if let Some(m) = mask.filter(|m| softmax::applies(&raw, m)) {
        let probs = softmax::masked_softmax(&raw, m, scale)?;
        return Ok(probs.matmul(&v.contiguous()?)?);
    }
    let scores = (raw * scale)?;
    let scores = match mask {
        Some(m) => scores.broadcast_add(m)?,
        None => scores,
    };
    let probs = if autocast::fast_inference(&scores) {
        candle_nn::ops::softmax_last_dim(&scores.contiguous()?)?
    } else {
        candle_nn::ops::softmax(&scores, D::Minus1)?
    };
    let _ = t;
    Ok(probs.matmul(&v.contiguous()?)?)
}

/// Rotary position embedding tables for positions `0..t`: `(cos, sin)`, each `[t, head_dim]`.
pub fn rope_tables(inv_freq: &[f32], t: usize, device: &Device) -> Result<(Tensor, Tensor)> {
    rope_tables_from(inv_freq, 0, t, device)
}

/// The rows of [`rope_tables`] for positions `start..start + t` (one decoding step's).
pub fn rope_tables_from(inv_freq: &[f32], start: usize, t: usize, device: &Device) -> Result<(Tensor, Tensor)> {
    let half = inv_freq.len();
    let inv = Tensor::from_slice(inv_freq, (1, half), device)?;
    let end = (start + t) as u32;
    let pos = Tensor::arange(start as u32, end, device)?.to_dtype(DType::F32)?.reshape((t, 1))?;
    let freqs = pos.broadcast_mul(&inv)?;
    let emb = Tensor::cat(&[&freqs, &freqs], 1)?;
    Ok((emb.cos()?, emb.sin()?))
}

/// Applies rotary embedding (the "rotate half" layout of Hugging Face) to `[b, h, t, d]`.
pub fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    if autocast::fast_inference(x) && x.rank() == 4 && x.dtype() == DType::F32 {
        let (c, s) = (rope_half(cos)?, rope_half(sin)?);
        return Ok(candle_nn::rotary_emb::rope(&x.contiguous()?, &c, &s)?);
    }
    rotate_half(x, cos, sin)
}

/// [`apply_rope`] for the `[b, t, h, d]` layout (heads after positions).
pub fn apply_rope_thd(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    if rope::applies(x) {
        return rope::rope_thd(x, cos, sin);
    }
    rotate_half(x, &cos.unsqueeze(1)?, &sin.unsqueeze(1)?)
}

/// The first half of a rope table: the tables repeat it, and candle's kernels take that half.
fn rope_half(table: &Tensor) -> Result<Tensor> {
    let d = table.dim(D::Minus1)?;
    Ok(table.narrow(D::Minus1, 0, d / 2)?.contiguous()?)
}

/// `x · cos + rotate_half(x) · sin`, differentiable; the tables broadcast against `x`.
fn rotate_half(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, d / 2)?;
    let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    Ok((x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?)?)
}
