//! Which tensors get which format.
//!
//! Linear weights always take the requested format. Embedding tables and the output head are
//! configurable: by default they get the 8-bit format of the same family, as llama.cpp keeps them
//! at higher precision (they are the most sensitive tensors and, in small models, a large share of
//! the parameters). Vectors — norms and biases — stay f32; they are a negligible share of the bytes.

use super::format::QuantFormat;
use crate::engine::Result;
use serde::Serialize;

/// What a tensor is, for the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TensorRole {
    /// A projection matrix of a block.
    Linear,
    /// A token, position or token-type embedding table.
    Embedding,
    /// The output head (a linear layer of its own).
    Head,
    /// The token embedding a tied head shares: llama.cpp quantizes it as the head.
    TiedHead,
    /// A norm weight, a bias, or any other vector: kept f32.
    Vector,
}

impl TensorRole {
    /// True when a linear layer multiplies with the tensor (so it can stay quantized in memory);
    /// embedding tables, tied or not, are looked up and used dequantized.
    pub fn is_matmul(self) -> bool {
        matches!(self, Self::Linear | Self::Head)
    }

    /// The role of a parameter from its Hugging Face name and shape.
    pub fn of(name: &str, dims: &[usize], tied_embeddings: bool) -> Self {
        if dims.len() != 2 {
            return Self::Vector;
        }
        let token_embedding = name.ends_with("embed_tokens.weight")
            || name.ends_with("wte.weight")
            || name.ends_with("word_embeddings.weight");
        if name.starts_with("lm_head.") {
            Self::Head
        } else if token_embedding && tied_embeddings {
            Self::TiedHead
        } else if token_embedding || name.contains("embed") || name.ends_with("wpe.weight") {
            Self::Embedding
        } else {
            Self::Linear
        }
    }
}

/// What an embedding table or the head gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorRule {
    /// Unquantized f32.
    Keep,
    /// The requested format, like a linear weight.
    Same,
    /// The 8-bit format of the requested format's family (Q8_0, or per-channel int8).
    High,
    /// A specific format.
    Format(QuantFormat),
}

impl TensorRule {
    /// `keep`, `same`, `high` or a format name.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "keep" => Self::Keep,
            "same" => Self::Same,
            "high" => Self::High,
            other => Self::Format(QuantFormat::parse(other)?),
        })
    }

    fn resolve(&self, requested: QuantFormat) -> QuantFormat {
        match self {
            Self::Keep => QuantFormat::F32,
            Self::Same => requested,
            Self::High => requested.high_precision(),
            Self::Format(f) => *f,
        }
    }
}

/// The quantization policy: rules for embeddings and the head (linear weights always follow the
/// requested format, vectors always stay f32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuantPolicy {
    pub embeddings: TensorRule,
    pub head: TensorRule,
}

impl Default for QuantPolicy {
    fn default() -> Self {
        Self { embeddings: TensorRule::High, head: TensorRule::High }
    }
}

impl QuantPolicy {
    /// The format a tensor of `role` is asked to take before any width fallback.
    pub fn format_for(&self, role: TensorRole, requested: QuantFormat) -> QuantFormat {
        match role {
            TensorRole::Linear => requested,
            TensorRole::Embedding => self.embeddings.resolve(requested),
            TensorRole::Head | TensorRole::TiedHead => self.head.resolve(requested),
            TensorRole::Vector => QuantFormat::F32,
        }
    }
}
