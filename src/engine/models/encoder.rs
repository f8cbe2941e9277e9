//! BERT-style encoders with a sequence-classification head: `bert` and `distilbert` share one
//! post-norm transformer implementation and differ only in tensor names, embeddings and head.

use super::layers::{attention, Activation, Embedding, LayerNorm, Linear};
use super::weights::Scope;
use crate::engine::{Error, Result};
use candle_core::{DType, Tensor, D};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Which encoder family: decides tensor names, embeddings and the classification head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncoderKind {
    Bert,
    DistilBert,
}

/// An encoder config normalised from `bert` or `distilbert` config.json keys.
#[derive(Clone, Debug)]
pub struct EncoderConfig {
    pub kind: EncoderKind,
    pub vocab_size: usize,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub activation: String,
    pub max_positions: usize,
    pub type_vocab_size: usize,
    pub eps: f64,
    /// Class names by id, from `id2label` (empty for a bare encoder).
    pub labels: Vec<String>,
}

#[derive(Deserialize)]
struct BertJson {
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    #[serde(default = "gelu")]
    hidden_act: String,
    #[serde(default = "positions")]
    max_position_embeddings: usize,
    #[serde(default = "two")]
    type_vocab_size: usize,
    #[serde(default = "bert_eps")]
    layer_norm_eps: f64,
    #[serde(default)]
    id2label: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct DistilBertJson {
    vocab_size: usize,
    dim: usize,
    n_layers: usize,
    n_heads: usize,
    hidden_dim: usize,
    #[serde(default = "gelu")]
    activation: String,
    #[serde(default = "positions")]
    max_position_embeddings: usize,
    #[serde(default)]
    id2label: BTreeMap<String, String>,
}

fn gelu() -> String {
    "gelu".into()
}
fn positions() -> usize {
    512
}
fn two() -> usize {
    2
}
fn bert_eps() -> f64 {
    1e-12
}

fn labels(map: BTreeMap<String, String>) -> Vec<String> {
    let mut v: Vec<(usize, String)> = map.into_iter().filter_map(|(k, l)| k.parse().ok().map(|i| (i, l))).collect();
    v.sort();
    v.into_iter().map(|(_, l)| l).collect()
}

impl EncoderConfig {
    pub fn from_json(kind: EncoderKind, json: &serde_json::Value, path: &Path) -> Result<Self> {
        let mut c = Self::read(kind, json, path)?;
        // A `…ForSequenceClassification` without `id2label` has the classes transformers gives
        // it: `num_labels` (2 by default) named LABEL_0, LABEL_1, … — never a bare encoder.
        let classifier = json["architectures"]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v.as_str().is_some_and(|s| s.ends_with("ForSequenceClassification"))));
        if classifier && c.labels.is_empty() {
            let n = json["num_labels"].as_u64().unwrap_or(2).clamp(1, 1 << 16);
            c.labels = (0..n).map(|i| format!("LABEL_{i}")).collect();
        }
        Ok(c)
    }

    fn read(kind: EncoderKind, json: &serde_json::Value, path: &Path) -> Result<Self> {
        let bad = |e: serde_json::Error| Error::Config { path: path.to_path_buf(), detail: e.to_string() };
        Ok(match kind {
            EncoderKind::Bert => {
                let c: BertJson = serde_json::from_value(json.clone()).map_err(bad)?;
                Self {
                    kind,
                    vocab_size: c.vocab_size,
                    hidden: c.hidden_size,
                    layers: c.num_hidden_layers,
                    heads: c.num_attention_heads,
                    intermediate: c.intermediate_size,
                    activation: c.hidden_act,
                    max_positions: c.max_position_embeddings,
                    type_vocab_size: c.type_vocab_size,
                    eps: c.layer_norm_eps,
                    labels: labels(c.id2label),
                }
            }
            EncoderKind::DistilBert => {
                let c: DistilBertJson = serde_json::from_value(json.clone()).map_err(bad)?;
                Self {
                    kind,
                    vocab_size: c.vocab_size,
                    hidden: c.dim,
                    layers: c.n_layers,
                    heads: c.n_heads,
                    intermediate: c.hidden_dim,
                    activation: c.activation,
                    max_positions: c.max_position_embeddings,
                    type_vocab_size: 0,
                    eps: 1e-12,
                    labels: labels(c.id2label),
                }
            }
        })
    }
}

/// Tensor names inside one encoder layer.
struct LayerNames {
    q: &'static str,
    k: &'static str,
    v: &'static str,
    attn_out: &'static str,
    attn_norm: &'static str,
    ffn_in: &'static str,
    ffn_out: &'static str,
    out_norm: &'static str,
}

const BERT_NAMES: LayerNames = LayerNames {
    q: "attention.self.query",
    k: "attention.self.key",
    v: "attention.self.value",
    attn_out: "attention.output.dense",
    attn_norm: "attention.output.LayerNorm",
    ffn_in: "intermediate.dense",
    ffn_out: "output.dense",
    out_norm: "output.LayerNorm",
};

const DISTILBERT_NAMES: LayerNames = LayerNames {
    q: "attention.q_lin",
    k: "attention.k_lin",
    v: "attention.v_lin",
    attn_out: "attention.out_lin",
    attn_norm: "sa_layer_norm",
    ffn_in: "ffn.lin1",
    ffn_out: "ffn.lin2",
    out_norm: "output_layer_norm",
};

struct Layer {
    q: Linear,
    k: Linear,
    v: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    ffn_in: Linear,
    ffn_out: Linear,
    out_norm: LayerNorm,
}

/// The classification head on top of the first token's hidden state.
enum Head {
    /// BERT: `pooler.dense` + tanh, then `classifier`.
    Pooler { pooler: Linear, classifier: Option<Linear> },
    /// DistilBERT: `pre_classifier` + ReLU, then `classifier`.
    PreClassifier { pre: Linear, classifier: Linear },
    /// A bare encoder: the first token's hidden state.
    None,
}

pub struct Encoder {
    word: Embedding,
    position: Embedding,
    token_type: Option<Embedding>,
    emb_norm: LayerNorm,
    layers: Vec<Layer>,
    head: Head,
    heads: usize,
    act: Activation,
}

impl Encoder {
    /// The device the network computes on.
    pub fn device(&self) -> candle_core::Device {
        self.word.device()
    }

    pub fn load(s: &Scope, c: &EncoderConfig, path: &Path) -> Result<Self> {
        let act = Activation::parse(&c.activation).ok_or_else(|| Error::Config {
            path: path.to_path_buf(),
            detail: format!("activation `{}` is not supported", c.activation),
        })?;
        let (base, names, layer_root) = match c.kind {
            EncoderKind::Bert => {
                let b = if s.contains("bert.embeddings.word_embeddings.weight") { s.pp("bert") } else { s.clone() };
                let layers = b.pp("encoder").pp("layer");
                (b, &BERT_NAMES, layers)
            }
            EncoderKind::DistilBert => {
                let b = if s.contains("distilbert.embeddings.word_embeddings.weight") {
                    s.pp("distilbert")
                } else {
                    s.clone()
                };
                let layers = b.pp("transformer").pp("layer");
                (b, &DISTILBERT_NAMES, layers)
            }
        };
        let (h, eps) = (c.hidden, c.eps);
        let e = base.pp("embeddings");
        let token_type = if c.kind == EncoderKind::Bert {
            Some(Embedding::load(&e.pp("token_type_embeddings"), c.type_vocab_size, h)?)
        } else {
            None
        };
        let layers = (0..c.layers)
            .map(|i| {
                let l = layer_root.pp(i);
                Ok(Layer {
                    q: Linear::load(&l.pp(names.q), h, h, true)?,
                    k: Linear::load(&l.pp(names.k), h, h, true)?,
                    v: Linear::load(&l.pp(names.v), h, h, true)?,
                    attn_out: Linear::load(&l.pp(names.attn_out), h, h, true)?,
                    attn_norm: LayerNorm::load(&l.pp(names.attn_norm), h, eps)?,
                    ffn_in: Linear::load(&l.pp(names.ffn_in), h, c.intermediate, true)?,
                    ffn_out: Linear::load(&l.pp(names.ffn_out), c.intermediate, h, true)?,
                    out_norm: LayerNorm::load(&l.pp(names.out_norm), h, eps)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let n = c.labels.len();
        let head = match c.kind {
            EncoderKind::Bert if base.contains("pooler.dense.weight") => Head::Pooler {
                pooler: Linear::load(&base.pp("pooler").pp("dense"), h, h, true)?,
                classifier: if n > 0 && s.contains("classifier.weight") {
                    Some(Linear::load(&s.pp("classifier"), h, n, true)?)
                } else {
                    None
                },
            },
            EncoderKind::DistilBert if n > 0 && s.contains("pre_classifier.weight") => Head::PreClassifier {
                pre: Linear::load(&s.pp("pre_classifier"), h, h, true)?,
                classifier: Linear::load(&s.pp("classifier"), h, n, true)?,
            },
            _ => Head::None,
        };
        Ok(Self {
            word: Embedding::load(&e.pp("word_embeddings"), c.vocab_size, h)?,
            position: Embedding::load(&e.pp("position_embeddings"), c.max_positions, h)?,
            token_type,
            emb_norm: LayerNorm::load(&e.pp("LayerNorm"), h, eps)?,
            layers,
            head,
            heads: c.heads,
            act,
        })
    }

    /// True when the model ends in a classifier (its output is class logits).
    pub fn has_classifier(&self) -> bool {
        matches!(self.head, Head::Pooler { classifier: Some(_), .. } | Head::PreClassifier { .. })
    }

    /// Hidden states `[b, t, hidden]`; `mask` is `[b, t]` with 1 for real tokens, 0 for padding.
    pub fn hidden_states(&self, ids: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let device = ids.device();
        let positions = Tensor::arange(0u32, t as u32, device)?.unsqueeze(0)?;
        let mut x = self.word.forward(ids)?.broadcast_add(&self.position.forward(&positions)?)?;
        if let Some(tt) = &self.token_type {
            let zeros = Tensor::zeros((1, t), DType::U32, device)?;
            x = x.broadcast_add(&tt.forward(&zeros)?)?;
        }
        let mut x = self.emb_norm.forward(&x)?;
        let additive = match mask {
            Some(m) => Some(((1.0 - m.to_dtype(DType::F32)?)? * -1e9)?.reshape((b, 1, 1, t))?),
            None => None,
        };
        let h = x.dim(D::Minus1)?;
        let hd = h / self.heads;
        for l in &self.layers {
            let split = |y: Tensor| -> Result<Tensor> { Ok(y.reshape((b, t, self.heads, hd))?.transpose(1, 2)?) };
            let a = attention(
                &split(l.q.forward(&x)?)?,
                &split(l.k.forward(&x)?)?,
                &split(l.v.forward(&x)?)?,
                additive.as_ref(),
                1.0 / (hd as f64).sqrt(),
            )?;
            let a = a.transpose(1, 2)?.reshape((b, t, h))?;
            x = l.attn_norm.forward(&(x + l.attn_out.forward(&a)?)?)?;
            let f = l.ffn_out.forward(&self.act.forward(&l.ffn_in.forward(&x)?)?)?;
            x = l.out_norm.forward(&(x + f)?)?;
        }
        Ok(x)
    }

    /// Class logits `[b, classes]` (or the first token's representation for a bare encoder).
    pub fn classify(&self, ids: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        Ok(self.classify_with_hidden(ids, mask)?.0)
    }

    /// Class logits and the last layer's hidden states `[b, t, hidden]` (for a hidden-state loss).
    pub fn classify_with_hidden(&self, ids: &Tensor, mask: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let hidden = self.hidden_states(ids, mask)?;
        let first = hidden.narrow(1, 0, 1)?.squeeze(1)?;
        let logits = match &self.head {
            Head::Pooler { pooler, classifier } => {
                let pooled = pooler.forward(&first)?.tanh()?;
                match classifier {
                    Some(c) => c.forward(&pooled)?,
                    None => pooled,
                }
            }
            Head::PreClassifier { pre, classifier } => classifier.forward(&pre.forward(&first)?.relu()?)?,
            Head::None => first,
        };
        Ok((logits, hidden))
    }
}
