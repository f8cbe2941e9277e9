//! Quantization-aware training with a straight-through estimator, by swapping weights: before a
//! trainee's step its float ("master") weights are set aside and every tensor the quantizer would
//! round is replaced by its quantized-then-dequantized value, in the format the quantizer's
//! per-tensor plan gives it ([`QuantPolicy`]: linear weights in the requested format, embeddings
//! and the head in its 8-bit sibling, vectors in f32, width fallbacks as in `quantize`). The
//! forward and backward run on those values, so the gradient is ∂L/∂Q(w), taken as ∂L/∂w (the
//! straight-through estimator); the masters are put back before AdamW applies it. Rounding is the
//! quantizer's own ([`quantize_tensor`], no calibration), so the model the steps computed with is
//! exactly what quantizing the saved float weights in that format gives.

use crate::engine::quant::policy::{QuantPolicy, TensorRole};
use crate::engine::quant::quantize::quantize_tensor;
use crate::engine::quant::QuantFormat;
use crate::engine::Result;
use candle_core::{Tensor, Var};
use rayon::prelude::*;
use std::collections::BTreeMap;

/// One rounded tensor of the plan.
#[derive(Clone, Debug)]
struct Planned {
    name: String,
    role: TensorRole,
    format: QuantFormat,
    /// GPT-2 `Conv1D` weights are stored `[in, out]`; the quantizer rounds their transpose.
    transposed: bool,
}

/// The per-tensor plan of a trainee's fake quantization.
#[derive(Clone, Debug)]
pub struct FakeQuant {
    pub format: QuantFormat,
    plan: Vec<Planned>,
}

/// The float weights set aside during a step; [`Masters::restore`] puts them back.
pub struct Masters(Vec<(Var, Tensor)>);

impl FakeQuant {
    /// The plan for `vars` (Hugging Face names) of a model whose embeddings are `tied` and whose
    /// linear weights are `Conv1D` (GPT-2) when `conv1d`.
    pub fn new(format: QuantFormat, vars: &BTreeMap<String, Var>, tied: bool, conv1d: bool) -> Self {
        let policy = QuantPolicy::default();
        let plan = vars
            .iter()
            .filter_map(|(name, v)| {
                let role = TensorRole::of(name, v.dims(), tied);
                let format = policy.format_for(role, format);
                (format != QuantFormat::F32).then(|| Planned {
                    name: name.clone(),
                    role,
                    format,
                    transposed: conv1d && role == TensorRole::Linear,
                })
            })
            .collect();
        Self { format, plan }
    }

    /// How many tensors the plan rounds.
    pub fn tensors(&self) -> usize {
        self.plan.len()
    }

    /// Replaces every planned weight of `vars` with its rounded value; returns the masters.
    pub fn enter(&self, vars: &BTreeMap<String, Var>) -> Result<Masters> {
        let rounded: Vec<(Var, Tensor, Tensor)> = self
            .plan
            .par_iter()
            .filter_map(|p| vars.get(&p.name).map(|v| (p, v)))
            .map(|(p, v)| {
                let master = v.as_tensor().copy()?;
                let (q, _) = quantize_tensor(&p.name, &master, p.role, p.format, p.transposed, None, None)?;
                let q = q.dequantize()?.to_device(master.device())?.to_dtype(master.dtype())?;
                Ok((v.clone(), master, q))
            })
            .collect::<Result<_>>()?;
        let mut masters = Vec::with_capacity(rounded.len());
        for (var, master, q) in rounded {
            var.set(&q)?;
            masters.push((var, master));
        }
        Ok(Masters(masters))
    }
}

impl Masters {
    /// Puts the float weights back.
    pub fn restore(self) -> Result<()> {
        for (var, master) in self.0 {
            var.set(&master)?;
        }
        Ok(())
    }
}
