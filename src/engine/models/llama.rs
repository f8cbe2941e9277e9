//! The llama family: `llama` (GQA, tied or untied embeddings, llama3 rope scaling), `qwen2`
//! (q/k/v bias) and `qwen3` (per-head q/k RMS norm, explicit head_dim) in one trainable implementation.

use super::layers::{
    apply_rope, apply_rope_thd, attention, causal_mask, rope_tables, rope_tables_from, Activation, Embedding, Linear,
    RmsNorm,
};
use super::weights::Scope;
use super::BodyContext;
use crate::engine::kernels::{attention, swiglu};
use crate::engine::{Error, Result};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Rope scaling as written either in `rope_parameters` (transformers 5) or `rope_scaling` (older).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct RopeParameters {
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default, alias = "type")]
    pub rope_type: Option<String>,
    #[serde(default)]
    pub factor: Option<f64>,
    #[serde(default)]
    pub low_freq_factor: Option<f64>,
    #[serde(default)]
    pub high_freq_factor: Option<f64>,
    #[serde(default)]
    pub original_max_position_embeddings: Option<usize>,
}

/// The fields of a llama/qwen2/qwen3 `config.json` this implementation reads.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct LlamaConfig {
    pub model_type: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default)]
    pub head_dim: Option<usize>,
    pub vocab_size: usize,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub rope_parameters: Option<RopeParameters>,
    #[serde(default)]
    pub rope_scaling: Option<RopeParameters>,
    #[serde(default = "default_ctx")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub tie_word_embeddings: Option<bool>,
    #[serde(default)]
    pub attention_bias: Option<bool>,
    #[serde(default)]
    pub mlp_bias: Option<bool>,
    #[serde(default = "default_act")]
    pub hidden_act: String,
}

fn default_eps() -> f64 {
    1e-6
}
fn default_ctx() -> usize {
    2048
}
fn default_act() -> String {
    "silu".into()
}

impl LlamaConfig {
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    pub fn tied(&self) -> bool {
        self.tie_word_embeddings.unwrap_or(false)
    }

    /// q/k/v projections carry a bias (always for qwen2, by `attention_bias` otherwise).
    pub fn qkv_bias(&self) -> bool {
        self.model_type == "qwen2" || self.attention_bias.unwrap_or(false)
    }

    pub fn o_bias(&self) -> bool {
        self.model_type != "qwen2" && self.attention_bias.unwrap_or(false)
    }

    pub fn qk_norm(&self) -> bool {
        self.model_type == "qwen3"
    }

    fn rope(&self) -> RopeParameters {
        let mut p = self.rope_parameters.clone().or_else(|| self.rope_scaling.clone()).unwrap_or_default();
        if p.rope_theta.is_none() {
            p.rope_theta = self.rope_theta;
        }
        p
    }

    pub fn rope_theta(&self) -> f64 {
        self.rope().rope_theta.unwrap_or(10_000.0)
    }

    /// Inverse frequencies of the rotary embedding, with `linear` or `llama3` scaling applied.
    pub fn inv_freq(&self, path: &Path) -> Result<Vec<f32>> {
        let p = self.rope();
        let theta = p.rope_theta.unwrap_or(10_000.0);
        let d = self.head_dim();
        let base: Vec<f64> = (0..d / 2).map(|i| 1.0 / theta.powf(2.0 * i as f64 / d as f64)).collect();
        let kind = p.rope_type.clone().unwrap_or_else(|| "default".into());
        let bad =
            |what: &str| Error::Config { path: path.to_path_buf(), detail: format!("rope `{kind}` needs {what}") };
        let freqs = match kind.as_str() {
            "default" => base,
            "linear" => {
                let f = p.factor.ok_or_else(|| bad("factor"))?;
                base.iter().map(|x| x / f).collect()
            }
            "llama3" => {
                let f = p.factor.ok_or_else(|| bad("factor"))?;
                let lo = p.low_freq_factor.ok_or_else(|| bad("low_freq_factor"))?;
                let hi = p.high_freq_factor.ok_or_else(|| bad("high_freq_factor"))?;
                let old =
                    p.original_max_position_embeddings.ok_or_else(|| bad("original_max_position_embeddings"))? as f64;
                let (lo_wavelen, hi_wavelen) = (old / lo, old / hi);
                base.iter()
                    .map(|&freq| {
                        let wavelen = 2.0 * std::f64::consts::PI / freq;
                        if wavelen < hi_wavelen {
                            freq
                        } else if wavelen > lo_wavelen {
                            freq / f
                        } else {
                            let smooth = (old / wavelen - lo) / (hi - lo);
                            (1.0 - smooth) * freq / f + smooth * freq
                        }
                    })
                    .collect()
            }
            other => {
                return Err(Error::Config {
                    path: path.to_path_buf(),
                    detail: format!("rope type `{other}` is not supported (supported: default, linear, llama3)"),
                })
            }
        };
        Ok(freqs.into_iter().map(|x| x as f32).collect())
    }
}

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl Attention {
    fn load(s: &Scope, c: &LlamaConfig) -> Result<Self> {
        let (h, hd, nh, nkv) = (c.hidden_size, c.head_dim(), c.num_attention_heads, c.kv_heads());
        let bias = c.qkv_bias();
        let (q_norm, k_norm) = if c.qk_norm() {
            (
                Some(RmsNorm::load(&s.pp("q_norm"), hd, c.rms_norm_eps)?),
                Some(RmsNorm::load(&s.pp("k_norm"), hd, c.rms_norm_eps)?),
            )
        } else {
            (None, None)
        };
        Ok(Self {
            q: Linear::load(&s.pp("q_proj"), h, nh * hd, bias)?,
            k: Linear::load(&s.pp("k_proj"), h, nkv * hd, bias)?,
            v: Linear::load(&s.pp("v_proj"), h, nkv * hd, bias)?,
            o: Linear::load(&s.pp("o_proj"), nh * hd, h, c.o_bias())?,
            q_norm,
            k_norm,
            heads: nh,
            kv_heads: nkv,
            head_dim: hd,
        })
    }

    /// q, k, v of `x` (`[b·t, hidden]`) as `[b, t, heads, d]` (the layout the projections
    /// produce), q and k normed per head (qwen3).
    fn qkv(&self, x: &Tensor, (b, t): (usize, usize)) -> Result<(Tensor, Tensor, Tensor)> {
        let heads = |y: Tensor, n: usize| -> Result<Tensor> { Ok(y.reshape((b, t, n, self.head_dim))?) };
        let mut q = heads(self.q.forward(x)?, self.heads)?;
        let mut k = heads(self.k.forward(x)?, self.kv_heads)?;
        let v = heads(self.v.forward(x)?, self.kv_heads)?;
        if let (Some(qn), Some(kn)) = (&self.q_norm, &self.k_norm) {
            q = qn.forward(&q)?;
            k = kn.forward(&k)?;
        }
        Ok((q, k, v))
    }

    /// `x` holds the rows of `b` sequences of `t` positions, `[b·t, hidden]`; so does the result.
    fn forward(&self, x: &Tensor, (b, t): (usize, usize), cos: &Tensor, sin: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let (q, k, v) = self.qkv(x, (b, t))?;
        let y = if attention::applies(x) {
            // One fused op over that layout (CPU, f32).
            let (q, k) = (apply_rope_thd(&q, cos, sin)?, apply_rope_thd(&k, cos, sin)?);
            attention::causal_attention(&q, &k, &v, scale)?
        } else {
            let bhtd = |y: &Tensor| -> Result<Tensor> { Ok(y.transpose(1, 2)?) };
            let (q, k) = (apply_rope(&bhtd(&q)?, cos, sin)?, apply_rope(&bhtd(&k)?, cos, sin)?);
            bhtd(&attention(&q, &k, &bhtd(&v)?, Some(mask), scale)?)?
        };
        self.o.forward(&y.reshape((b * t, self.heads * self.head_dim))?)
    }
}

impl Attention {
    /// One step of cached decoding (or the prefill of an empty cache): `x` holds `[b·t, hidden]`
    /// at positions `pos..pos + t`, `cos`/`sin` their rope rows; the keys and values join `slot`.
    fn forward_cached(
        &self,
        x: &Tensor,
        (b, t): (usize, usize),
        cos: &Tensor,
        sin: &Tensor,
        slot: &mut super::kv::KvSlot,
    ) -> Result<Tensor> {
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let (q, k, v) = self.qkv(x, (b, t))?;
        let (q, k) = (apply_rope_thd(&q, cos, sin)?, apply_rope_thd(&k, cos, sin)?);
        let y = super::kv::attend_cached(slot, &q, &k, &v, scale)?;
        self.o.forward(&y.reshape((b * t, self.heads * self.head_dim))?)
    }
}

struct Mlp {
    gate: Linear,
    up: Linear,
    down: Linear,
    act: Activation,
}

impl Mlp {
    fn load(s: &Scope, c: &LlamaConfig, act: Activation) -> Result<Self> {
        let (h, i, bias) = (c.hidden_size, c.intermediate_size, c.mlp_bias.unwrap_or(false));
        Ok(Self {
            gate: Linear::load(&s.pp("gate_proj"), h, i, bias)?,
            up: Linear::load(&s.pp("up_proj"), h, i, bias)?,
            down: Linear::load(&s.pp("down_proj"), i, h, bias)?,
            act,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (gate, up) = (self.gate.forward(x)?, self.up.forward(x)?);
        let gated = if self.act == Activation::Silu && swiglu::applies(&gate, &up) {
            swiglu::swiglu(&gate, &up)?
        } else {
            (self.act.forward(&gate)? * up)?
        };
        self.down.forward(&gated)
    }
}

struct Block {
    input_norm: RmsNorm,
    attn: Attention,
    post_norm: RmsNorm,
    mlp: Mlp,
}

impl Block {
    /// One pre-norm block on the rows `[b·t, hidden]`: attention, then the MLP, each added back.
    fn forward(&self, x: &Tensor, bt: (usize, usize), cos: &Tensor, sin: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let h = self.attn.forward(&self.input_norm.forward(x)?, bt, cos, sin, mask)?;
        let x = (x + h)?;
        let h = self.mlp.forward(&self.post_norm.forward(&x)?)?;
        Ok((x + h)?)
    }
}

/// A llama-family causal LM returning logits for every position.
pub struct Llama {
    embed: Embedding,
    blocks: Vec<Block>,
    norm: RmsNorm,
    lm_head: Linear,
    inv_freq: Vec<f32>,
}

impl Llama {
    /// The device the network computes on.
    pub fn device(&self) -> candle_core::Device {
        self.embed.device()
    }

    pub fn load(s: &Scope, c: &LlamaConfig, path: &Path) -> Result<Self> {
        let act = Activation::parse(&c.hidden_act).ok_or_else(|| Error::Config {
            path: path.to_path_buf(),
            detail: format!("hidden_act `{}` is not supported for {}", c.hidden_act, c.model_type),
        })?;
        let m = s.pp("model");
        let embed = Embedding::load(&m.pp("embed_tokens"), c.vocab_size, c.hidden_size)?;
        let blocks = (0..c.num_hidden_layers)
            .map(|i| {
                let l = m.pp("layers").pp(i);
                Ok(Block {
                    input_norm: RmsNorm::load(&l.pp("input_layernorm"), c.hidden_size, c.rms_norm_eps)?,
                    attn: Attention::load(&l.pp("self_attn"), c)?,
                    post_norm: RmsNorm::load(&l.pp("post_attention_layernorm"), c.hidden_size, c.rms_norm_eps)?,
                    mlp: Mlp::load(&l.pp("mlp"), c, act)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::load(&m.pp("norm"), c.hidden_size, c.rms_norm_eps)?;
        // Some checkpoints with tie_word_embeddings still store lm_head.weight; the tie wins, as in transformers.
        let lm_head = if c.tied() {
            Linear::tied(&m.pp("embed_tokens"), &embed)?
        } else {
            Linear::load(&s.pp("lm_head"), c.hidden_size, c.vocab_size, false)?
        };
        Ok(Self { embed, blocks, norm, lm_head, inv_freq: c.inv_freq(path)? })
    }

    /// What the stages of one forward share: the rotary tables and the causal mask.
    pub fn body_context(&self, ids: &Tensor) -> Result<BodyContext> {
        let (b, t) = ids.dims2()?;
        let device = ids.device();
        Ok(BodyContext {
            ids: ids.clone(),
            bt: (b, t),
            mask: causal_mask(t, device)?,
            rope: Some(rope_tables(&self.inv_freq, t, device)?),
        })
    }

    /// The embedding, each block, the final norm.
    pub fn stages(&self) -> usize {
        self.blocks.len() + 2
    }

    /// Stage `i` of the body ([`super::Network::stage`]). All positions are the rows of one
    /// `[b·t, hidden]` matrix until the last stage: the layers' products take it as it is (each
    /// reshape would be one more node for autograd to fill with zeros and add into).
    pub fn stage(&self, i: usize, x: Option<&Tensor>, c: &BodyContext) -> Result<Tensor> {
        if i == 0 {
            return self.embed.forward(&c.ids.flatten_all()?);
        }
        let x = c.input(i, x)?;
        match (self.blocks.get(i - 1), &c.rope) {
            (Some(block), Some((cos, sin))) => block.forward(x, c.bt, cos, sin, &c.mask),
            (Some(_), None) => Err(Error::Invalid("a llama block needs the rotary tables of its body context".into())),
            (None, _) => Ok(self.norm.forward(x)?.reshape((c.bt.0, c.bt.1, x.dim(1)?))?),
        }
    }

    /// Cached decoding: the logits `[b, vocab]` after the last of `ids` (`[b, t]`, at positions
    /// `cache.len..`), the keys and values added to `cache`. Several tokens only into an empty cache
    /// (the prefill), then one at a time.
    pub fn forward_cached(&self, ids: &Tensor, cache: &mut super::KvCache) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let pos = cache.start(t, self.blocks.len())?;
        let device = ids.device();
        let (cos, sin) = rope_tables_from(&self.inv_freq, pos, t, device)?;
        let mut x = self.embed.forward(&ids.flatten_all()?)?;
        for (block, slot) in self.blocks.iter().zip(cache.layers.iter_mut()) {
            let h = block.attn.forward_cached(&block.input_norm.forward(&x)?, (b, t), &cos, &sin, slot)?;
            x = (x + h)?;
            let h = block.mlp.forward(&block.post_norm.forward(&x)?)?;
            x = (x + h)?;
        }
        cache.len += t;
        let hidden = x.dim(1)?;
        let last = self.norm.forward(&x)?.reshape((b, t, hidden))?.narrow(1, t - 1, 1)?.squeeze(1)?;
        self.logits(&last)
    }

    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        self.lm_head.forward(hidden)
    }

    pub fn lm_head(&self) -> &Linear {
        &self.lm_head
    }
}
