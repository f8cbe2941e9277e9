//! Model families, one file each, behind one config type and one network type.
//!
//! Every family returns logits for every position (causal LMs) or class logits (encoders), and is
//! built from differentiable ops so a student trains with a gradient on every parameter.

pub mod encoder;
pub mod gpt2;
pub mod init;
pub mod kv;
pub mod layers;
pub mod llama;
pub mod recorder;
pub mod weights;

pub use kv::KvCache;

use crate::engine::{Error, Result};
use candle_core::Tensor;
use encoder::{Encoder, EncoderConfig, EncoderKind};
use gpt2::{Gpt2, Gpt2Config};
use llama::{Llama, LlamaConfig};
use std::path::Path;
use weights::Scope;

/// The `model_type` values this build can run.
pub const SUPPORTED_MODEL_TYPES: &[&str] = &["llama", "qwen2", "qwen3", "gpt2", "bert", "distilbert"];

/// A parsed `config.json`, by family.
#[derive(Clone, Debug)]
pub enum ArchConfig {
    Llama(LlamaConfig),
    Gpt2(Gpt2Config),
    Encoder(EncoderConfig),
}

/// The largest dimension, layer count or vocabulary a config may give.
const MAX_SIZE: usize = 1 << 24;

impl ArchConfig {
    pub fn from_json(json: &serde_json::Value, path: &Path) -> Result<Self> {
        let model_type = json.get("model_type").and_then(|v| v.as_str()).unwrap_or("");
        let bad = |e: serde_json::Error| Error::Config { path: path.to_path_buf(), detail: e.to_string() };
        let config = match model_type {
            "llama" | "qwen2" | "qwen3" => Self::Llama(serde_json::from_value(json.clone()).map_err(bad)?),
            "gpt2" => Self::Gpt2(serde_json::from_value(json.clone()).map_err(bad)?),
            "bert" => Self::Encoder(EncoderConfig::from_json(EncoderKind::Bert, json, path)?),
            "distilbert" => Self::Encoder(EncoderConfig::from_json(EncoderKind::DistilBert, json, path)?),
            other => {
                return Err(Error::UnsupportedArch {
                    model_type: if other.is_empty() { "(missing)".into() } else { other.into() },
                    path: path.display().to_string(),
                    supported: SUPPORTED_MODEL_TYPES.join(", "),
                })
            }
        };
        config.validate().map_err(|detail| Error::Config { path: path.to_path_buf(), detail })?;
        Ok(config)
    }

    /// The checks a config must pass before anything is built from it: positive sizes, heads that
    /// divide the width, finite positive epsilons and rotary bases, a known activation. A config
    /// that fails would panic in a reshape or print NaN perplexities.
    fn validate(&self) -> std::result::Result<(), String> {
        let sizes = [
            ("vocab_size", self.vocab_size()),
            ("the number of layers", self.layers()),
            ("the hidden size", self.hidden()),
            ("the intermediate size", self.intermediate()),
            ("the number of attention heads", self.heads()),
            ("the number of key/value heads", self.kv_heads()),
            ("the context length (max_position_embeddings)", self.context_length()),
        ];
        for (name, value) in sizes {
            if value == 0 {
                return Err(format!("{name} is 0; a model needs at least 1"));
            }
            // No real model comes near; a size this large is a corrupt file, not a request for
            // terabytes of memory.
            if value > MAX_SIZE {
                return Err(format!("{name} is {value}, beyond any model this tool can hold (at most {MAX_SIZE})"));
            }
        }
        if !self.heads().is_multiple_of(self.kv_heads()) {
            return Err(format!(
                "{} attention heads cannot share {} key/value heads (heads must be a multiple of kv heads)",
                self.heads(),
                self.kv_heads()
            ));
        }
        let explicit_head_dim = matches!(self, Self::Llama(c) if c.head_dim.is_some());
        if !explicit_head_dim && !self.hidden().is_multiple_of(self.heads()) {
            return Err(format!("hidden size {} is not a multiple of {} attention heads", self.hidden(), self.heads()));
        }
        if self.head_dim() == 0 {
            return Err("head_dim is 0".into());
        }
        let (eps_name, eps, act_name, act) = match self {
            Self::Llama(c) => ("rms_norm_eps", c.rms_norm_eps, "hidden_act", c.hidden_act.as_str()),
            Self::Gpt2(c) => {
                ("layer_norm_epsilon", c.layer_norm_epsilon, "activation_function", c.activation_function.as_str())
            }
            Self::Encoder(c) => ("layer_norm_eps", c.eps, "hidden_act", c.activation.as_str()),
        };
        if !(eps.is_finite() && eps > 0.0) {
            return Err(format!("{eps_name} = {eps} must be a finite positive number (typically 1e-5 or 1e-6)"));
        }
        if let Self::Llama(c) = self {
            let theta = c.rope_theta();
            if !(theta.is_finite() && theta > 0.0) {
                return Err(format!("rope_theta = {theta} must be a finite positive number (typically 10000 or 1e6)"));
            }
        }
        if layers::Activation::parse(act).is_none() {
            return Err(format!("{act_name} `{act}` is not supported"));
        }
        Ok(())
    }

    pub fn model_type(&self) -> &str {
        match self {
            Self::Llama(c) => &c.model_type,
            Self::Gpt2(_) => "gpt2",
            Self::Encoder(c) => match c.kind {
                EncoderKind::Bert => "bert",
                EncoderKind::DistilBert => "distilbert",
            },
        }
    }

    pub fn is_causal_lm(&self) -> bool {
        !matches!(self, Self::Encoder(_))
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            Self::Llama(c) => c.vocab_size,
            Self::Gpt2(c) => c.vocab_size,
            Self::Encoder(c) => c.vocab_size,
        }
    }

    pub fn layers(&self) -> usize {
        match self {
            Self::Llama(c) => c.num_hidden_layers,
            Self::Gpt2(c) => c.n_layer,
            Self::Encoder(c) => c.layers,
        }
    }

    pub fn hidden(&self) -> usize {
        match self {
            Self::Llama(c) => c.hidden_size,
            Self::Gpt2(c) => c.n_embd,
            Self::Encoder(c) => c.hidden,
        }
    }

    pub fn intermediate(&self) -> usize {
        match self {
            Self::Llama(c) => c.intermediate_size,
            Self::Gpt2(c) => c.inner(),
            Self::Encoder(c) => c.intermediate,
        }
    }

    pub fn heads(&self) -> usize {
        match self {
            Self::Llama(c) => c.num_attention_heads,
            Self::Gpt2(c) => c.n_head,
            Self::Encoder(c) => c.heads,
        }
    }

    pub fn kv_heads(&self) -> usize {
        match self {
            Self::Llama(c) => c.kv_heads(),
            _ => self.heads(),
        }
    }

    pub fn head_dim(&self) -> usize {
        match self {
            Self::Llama(c) => c.head_dim(),
            _ => self.hidden() / self.heads(),
        }
    }

    /// The longest sequence the model accepts.
    pub fn context_length(&self) -> usize {
        match self {
            Self::Llama(c) => c.max_position_embeddings,
            Self::Gpt2(c) => c.n_positions,
            Self::Encoder(c) => c.max_positions,
        }
    }

    pub fn tied_embeddings(&self) -> bool {
        match self {
            Self::Llama(c) => c.tied(),
            Self::Gpt2(c) => c.tie_word_embeddings,
            Self::Encoder(_) => false,
        }
    }

    /// Class names for a classifier, empty otherwise.
    pub fn labels(&self) -> &[String] {
        match self {
            Self::Encoder(c) => &c.labels,
            _ => &[],
        }
    }
}

/// What every stage of one forward through a causal LM's body reads besides its input (see
/// [`Network::stage`]): the ids and their shape, the causal mask and, for llama, the rotary tables.
pub struct BodyContext {
    ids: Tensor,
    bt: (usize, usize),
    mask: Tensor,
    rope: Option<(Tensor, Tensor)>,
}

impl BodyContext {
    /// The input of stage `i` (every stage after the embedding takes one).
    fn input<'a>(&self, i: usize, x: Option<&'a Tensor>) -> Result<&'a Tensor> {
        x.ok_or_else(|| Error::Invalid(format!("stage {i} of the body takes the previous stage's output")))
    }
}

/// A runnable network of any supported family.
pub enum Network {
    Llama(Llama),
    Gpt2(Gpt2),
    Encoder(Encoder),
}

impl Network {
    pub fn build(config: &ArchConfig, s: &Scope, path: &Path) -> Result<Self> {
        Ok(match config {
            ArchConfig::Llama(c) => Self::Llama(Llama::load(s, c, path)?),
            ArchConfig::Gpt2(c) => Self::Gpt2(Gpt2::load(s, c, path)?),
            ArchConfig::Encoder(c) => Self::Encoder(Encoder::load(s, c, path)?),
        })
    }

    fn not_causal() -> Error {
        Error::Invalid("this model is an encoder/classifier, not a causal language model".into())
    }

    /// The device the network computes on (where its inputs go).
    pub fn device(&self) -> candle_core::Device {
        match self {
            Self::Llama(m) => m.device(),
            Self::Gpt2(m) => m.device(),
            Self::Encoder(m) => m.device(),
        }
    }

    /// Final hidden states `[b, t, hidden]` of a causal LM: the body's stages in turn.
    pub fn hidden_states(&self, ids: &Tensor) -> Result<Tensor> {
        match self {
            Self::Encoder(_) => Err(Self::not_causal()),
            _ => {
                let c = self.body_context(ids)?;
                let mut x = self.stage(0, None, &c)?;
                for i in 1..self.stages()? {
                    x = self.stage(i, Some(&x), &c)?;
                }
                Ok(x)
            }
        }
    }

    /// The number of stages of a causal LM's body: the embedding, one per block, the final norm.
    /// [`Self::hidden_states`] is their composition; activation checkpointing keeps only each
    /// stage's input and recomputes the stage in the backward pass.
    pub fn stages(&self) -> Result<usize> {
        match self {
            Self::Llama(m) => Ok(m.stages()),
            Self::Gpt2(m) => Ok(m.stages()),
            Self::Encoder(_) => Err(Self::not_causal()),
        }
    }

    /// What the stages of one forward on `ids` `[b, t]` share.
    pub fn body_context(&self, ids: &Tensor) -> Result<BodyContext> {
        match self {
            Self::Llama(m) => m.body_context(ids),
            Self::Gpt2(m) => m.body_context(ids),
            Self::Encoder(_) => Err(Self::not_causal()),
        }
    }

    /// Stage `i` of the body on the previous stage's output `x` (none for stage 0, which embeds
    /// the context's ids); the last stage returns the final hidden states `[b, t, hidden]`.
    pub fn stage(&self, i: usize, x: Option<&Tensor>, ctx: &BodyContext) -> Result<Tensor> {
        match self {
            Self::Llama(m) => m.stage(i, x, ctx),
            Self::Gpt2(m) => m.stage(i, x, ctx),
            Self::Encoder(_) => Err(Self::not_causal()),
        }
    }

    /// Cached decoding: the next-token logits `[b, vocab]` after `ids`, the cache extended.
    pub fn forward_cached(&self, ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        match self {
            Self::Llama(m) => m.forward_cached(ids, cache),
            Self::Gpt2(m) => m.forward_cached(ids, cache),
            Self::Encoder(_) => Err(Self::not_causal()),
        }
    }

    /// LM-head logits `[.., vocab]` from hidden states; lets losses work on chunks of positions.
    pub fn lm_logits(&self, hidden: &Tensor) -> Result<Tensor> {
        match self {
            Self::Llama(m) => m.logits(hidden),
            Self::Gpt2(m) => m.logits(hidden),
            Self::Encoder(_) => Err(Self::not_causal()),
        }
    }

    /// The LM head's `[vocab, hidden]` weight when the head is a plain dense product.
    pub fn lm_head_weight(&self) -> Option<&Tensor> {
        match self {
            Self::Llama(m) => m.lm_head().dense_weight(),
            Self::Gpt2(m) => m.lm_head().dense_weight(),
            Self::Encoder(_) => None,
        }
    }

    /// Causal LM: logits `[b, t, vocab]` for every position. Encoder: class logits `[b, classes]`.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        match self {
            Self::Encoder(m) => m.classify(ids, None),
            _ => self.lm_logits(&self.hidden_states(ids)?),
        }
    }

    /// Encoder class logits and last hidden states `[b, t, hidden]`, with a padding mask.
    pub fn classify_with_hidden(&self, ids: &Tensor, mask: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        match self {
            Self::Encoder(m) => m.classify_with_hidden(ids, mask),
            _ => Err(Error::Invalid("this model is a causal language model, not a classifier".into())),
        }
    }

    /// Encoder classification with a padding mask `[b, t]` (1 = token, 0 = padding).
    pub fn classify(&self, ids: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        match self {
            Self::Encoder(m) => m.classify(ids, mask),
            _ => Err(Error::Invalid("this model is a causal language model, not a classifier".into())),
        }
    }
}
