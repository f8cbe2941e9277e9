//! GPT-2: learned positions, pre-norm blocks, `Conv1D` weights stored `[in, out]`, tied LM head.

use super::layers::{attention, causal_mask, Activation, Embedding, LayerNorm, Linear};
use super::weights::Scope;
use super::BodyContext;
use crate::engine::{Error, Result};
use candle_core::{Tensor, D};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Gpt2Config {
    pub vocab_size: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    #[serde(default)]
    pub n_inner: Option<usize>,
    pub n_positions: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "default_act")]
    pub activation_function: String,
    #[serde(default = "yes")]
    pub scale_attn_weights: bool,
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
    #[serde(default = "yes")]
    pub tie_word_embeddings: bool,
}

fn default_eps() -> f64 {
    1e-5
}
fn default_act() -> String {
    "gelu_new".into()
}
fn yes() -> bool {
    true
}

impl Gpt2Config {
    pub fn inner(&self) -> usize {
        self.n_inner.unwrap_or(self.n_embd.saturating_mul(4))
    }
}

struct Block {
    ln_1: LayerNorm,
    c_attn: Linear,
    c_proj: Linear,
    ln_2: LayerNorm,
    c_fc: Linear,
    mlp_proj: Linear,
    scale: f64,
}

pub struct Gpt2 {
    wte: Embedding,
    wpe: Embedding,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    lm_head: Linear,
    heads: usize,
    act: Activation,
}

impl Gpt2 {
    /// The device the network computes on.
    pub fn device(&self) -> candle_core::Device {
        self.wte.device()
    }

    pub fn load(s: &Scope, c: &Gpt2Config, path: &Path) -> Result<Self> {
        let act = Activation::parse(&c.activation_function).ok_or_else(|| Error::Config {
            path: path.to_path_buf(),
            detail: format!("activation_function `{}` is not supported", c.activation_function),
        })?;
        // Checkpoints come with and without the `transformer.` prefix.
        let t = if s.contains("transformer.wte.weight") { s.pp("transformer") } else { s.clone() };
        let (h, eps) = (c.n_embd, c.layer_norm_epsilon);
        let wte = Embedding::load(&t.pp("wte"), c.vocab_size, h)?;
        let wpe = Embedding::load(&t.pp("wpe"), c.n_positions, h)?;
        let head_dim = h / c.n_head;
        let blocks = (0..c.n_layer)
            .map(|i| {
                let l = t.pp("h").pp(i);
                let mut scale = if c.scale_attn_weights { 1.0 / (head_dim as f64).sqrt() } else { 1.0 };
                if c.scale_attn_by_inverse_layer_idx {
                    scale /= (i + 1) as f64;
                }
                Ok(Block {
                    ln_1: LayerNorm::load(&l.pp("ln_1"), h, eps)?,
                    c_attn: Linear::load_conv1d(&l.pp("attn").pp("c_attn"), h, 3 * h)?,
                    c_proj: Linear::load_conv1d(&l.pp("attn").pp("c_proj"), h, h)?,
                    ln_2: LayerNorm::load(&l.pp("ln_2"), h, eps)?,
                    c_fc: Linear::load_conv1d(&l.pp("mlp").pp("c_fc"), h, c.inner())?,
                    mlp_proj: Linear::load_conv1d(&l.pp("mlp").pp("c_proj"), c.inner(), h)?,
                    scale,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let ln_f = LayerNorm::load(&t.pp("ln_f"), h, eps)?;
        let lm_head = if c.tie_word_embeddings {
            Linear::tied(&t.pp("wte"), &wte)?
        } else {
            Linear::load(&s.pp("lm_head"), h, c.vocab_size, false)?
        };
        Ok(Self { wte, wpe, blocks, ln_f, lm_head, heads: c.n_head, act })
    }

    /// What the stages of one forward share: the causal mask.
    pub fn body_context(&self, ids: &Tensor) -> Result<BodyContext> {
        let (b, t) = ids.dims2()?;
        Ok(BodyContext { ids: ids.clone(), bt: (b, t), mask: causal_mask(t, ids.device())?, rope: None })
    }

    /// The token and position embeddings, each block, the final norm.
    pub fn stages(&self) -> usize {
        self.blocks.len() + 2
    }

    /// Stage `i` of the body ([`super::Network::stage`]), on `[b, t, hidden]`.
    pub fn stage(&self, i: usize, x: Option<&Tensor>, c: &BodyContext) -> Result<Tensor> {
        let (b, t) = c.bt;
        if i == 0 {
            let positions = Tensor::arange(0u32, t as u32, c.ids.device())?.unsqueeze(0)?;
            return Ok(self.wte.forward(&c.ids)?.broadcast_add(&self.wpe.forward(&positions)?)?);
        }
        let x = c.input(i, x)?;
        let Some(blk) = self.blocks.get(i - 1) else { return self.ln_f.forward(x) };
        let h = x.dim(D::Minus1)?;
        let hd = h / self.heads;
        let qkv = blk.c_attn.forward(&blk.ln_1.forward(x)?)?;
        let split = |i: usize| -> Result<Tensor> {
            Ok(qkv.narrow(D::Minus1, i * h, h)?.reshape((b, t, self.heads, hd))?.transpose(1, 2)?)
        };
        let y = attention(&split(0)?, &split(1)?, &split(2)?, Some(&c.mask), blk.scale)?;
        let y = y.transpose(1, 2)?.reshape((b, t, h))?;
        let x = (x + blk.c_proj.forward(&y)?)?;
        let m = blk.mlp_proj.forward(&self.act.forward(&blk.c_fc.forward(&blk.ln_2.forward(&x)?)?)?)?;
        Ok((x + m)?)
    }

    /// Cached decoding, as [`super::llama::Llama::forward_cached`]: the logits `[b, vocab]` after
    /// the last of `ids`, the keys and values added to `cache`.
    pub fn forward_cached(&self, ids: &Tensor, cache: &mut super::KvCache) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let pos = cache.start(t, self.blocks.len())?;
        let device = ids.device();
        if pos + t > self.wpe.rows()? {
            return Err(Error::Invalid(format!(
                "position {} is past the model's {} learned positions",
                pos + t,
                self.wpe.rows()?
            )));
        }
        let positions = Tensor::arange(pos as u32, (pos + t) as u32, device)?.unsqueeze(0)?;
        let mut x = self.wte.forward(ids)?.broadcast_add(&self.wpe.forward(&positions)?)?;
        let h = x.dim(D::Minus1)?;
        let hd = h / self.heads;
        for (blk, slot) in self.blocks.iter().zip(cache.layers.iter_mut()) {
            let qkv = blk.c_attn.forward(&blk.ln_1.forward(&x)?)?;
            let split =
                |i: usize| -> Result<Tensor> { Ok(qkv.narrow(D::Minus1, i * h, h)?.reshape((b, t, self.heads, hd))?) };
            let y = super::kv::attend_cached(slot, &split(0)?, &split(1)?, &split(2)?, blk.scale)?;
            let y = y.reshape((b, t, h))?;
            x = (x + blk.c_proj.forward(&y)?)?;
            let m = blk.mlp_proj.forward(&self.act.forward(&blk.c_fc.forward(&blk.ln_2.forward(&x)?)?)?)?;
            x = (x + m)?;
        }
        cache.len += t;
        let last = self.ln_f.forward(&x.narrow(1, t - 1, 1)?)?.squeeze(1)?;
        self.logits(&last)
    }

    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        self.lm_head.forward(hidden)
    }

    pub fn lm_head(&self) -> &Linear {
        &self.lm_head
    }
}
