//! Sensitivity probes: the unquantized model's activations on the probe windows, kept, so that the
//! model with one matrix quantized reruns only the stages from that matrix's block on.

use crate::engine::context::Monitor;
use crate::engine::eval::windows;
use crate::engine::models::{BodyContext, Network};
use crate::engine::{Error, Result};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::ops::log_softmax;

/// The body stage a matrix first acts in: the block's for a block's weight, the head alone for an
/// untied head, the embedding (everything) otherwise.
pub(super) fn first_stage(name: &str, stages: usize) -> usize {
    let block = name.strip_prefix("model.layers.").or_else(|| name.strip_prefix("transformer.h."));
    match block.and_then(|r| r.split_once('.')).and_then(|(i, _)| i.parse::<usize>().ok()) {
        Some(i) => i + 1,
        None if name.starts_with("lm_head.") => stages,
        None => 0,
    }
}

/// The unquantized model on the probe windows: every stage's output and the log-probabilities,
/// so that a probe reruns only the stages from its matrix's block on.
pub(super) struct Probes {
    windows: Vec<(BodyContext, Vec<Tensor>, Tensor)>,
    pub(super) stages: usize,
    pub(super) positions: usize,
}

impl Probes {
    pub(super) fn new(net: &Network, tokens: &[u32], seq_len: usize, monitor: &Monitor) -> Result<Self> {
        let stages = net.stages()?;
        let wins = windows(tokens, seq_len);
        let mut out = Vec::with_capacity(wins.len());
        let mut positions = 0;
        monitor.report(0, wins.len());
        for (k, w) in wins.iter().enumerate() {
            let ids = Tensor::from_slice(&w[..w.len() - 1], (1, w.len() - 1), &Device::Cpu)?;
            let ctx = net.body_context(&ids)?;
            let mut outs: Vec<Tensor> = Vec::with_capacity(stages);
            for i in 0..stages {
                let x = net.stage(i, outs.last(), &ctx)?;
                outs.push(x);
            }
            let logp = log_softmax(&Self::logits(net, &outs[stages - 1])?, D::Minus1)?;
            positions += w.len() - 1;
            out.push((ctx, outs, logp));
            monitor.report(k + 1, wins.len());
        }
        Ok(Self { windows: out, stages, positions })
    }

    fn logits(net: &Network, hidden: &Tensor) -> Result<Tensor> {
        let h = hidden.dim(D::Minus1)?;
        // f64 from the logits on: a single tensor's KL can be small enough for f32 log-softmax
        // rounding to matter.
        Ok(net.lm_logits(&hidden.reshape(((), h))?)?.to_dtype(DType::F64)?)
    }

    /// Mean KL(unquantized ‖ `probe`) per position, `probe` differing from the model in stages
    /// `from..` (and the head) only.
    pub(super) fn kl(&self, probe: &Network, from: usize) -> Result<f64> {
        let mut kl = 0.0;
        for (ctx, outs, reference) in &self.windows {
            let mut x = if from == 0 { None } else { Some(outs[from.min(self.stages) - 1].clone()) };
            for i in from..self.stages {
                x = Some(probe.stage(i, x.as_ref(), ctx)?);
            }
            let x = x.ok_or_else(|| Error::Invalid("a probe ran no stage".into()))?;
            let logp = log_softmax(&Self::logits(probe, &x)?, D::Minus1)?;
            let v = logp.dim(1)?.min(reference.dim(1)?);
            let (r, c) = (reference.narrow(1, 0, v)?, logp.narrow(1, 0, v)?);
            kl += (r.exp()? * (&r - &c)?)?.sum_all()?.to_scalar::<f64>()?;
        }
        Ok(kl / self.positions.max(1) as f64)
    }
}
