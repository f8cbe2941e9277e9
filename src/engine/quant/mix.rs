//! llama.cpp's `_M` mixes of the K-quants: a GGML format per linear weight, as llama.cpp's
//! `llama_tensor_get_type` assigns it.

use super::format::QuantFormat;
use candle_core::quantized::GgmlDType;

/// llama.cpp's `_M` mixes of the K-quants (`llama_tensor_get_type`): the base format for most
/// linear weights, more bits where quantization hurts most — `attn_v` and `ffn_down` in the first and
/// last eighth of the blocks and every third block between (`use_more_bits`), and for Q3_K_M the
/// attention output. Embeddings and the head follow the policy as for any format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mix {
    Q3KM,
    Q4KM,
    Q5KM,
}

/// Mix names, as `valid_names` lists them.
pub(super) const MIXES: &[Mix] = &[Mix::Q5KM, Mix::Q4KM, Mix::Q3KM];

/// llama.cpp's `use_more_bits(i_layer, n_layers)`.
fn use_more_bits(i: usize, n: usize) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// What a linear weight of a block does, from its Hugging Face name.
fn linear_kind(name: &str) -> Option<(&'static str, usize)> {
    let rest = name.strip_prefix("model.layers.").or_else(|| name.strip_prefix("transformer.h."))?;
    let (idx, suffix) = rest.split_once('.')?;
    let kind = match suffix {
        "self_attn.v_proj.weight" => "attn_v",
        "mlp.down_proj.weight" | "mlp.c_proj.weight" => "ffn_down",
        "self_attn.o_proj.weight" | "attn.c_proj.weight" => "attn_output",
        _ => "other",
    };
    Some((kind, idx.parse().ok()?))
}

impl Mix {
    pub fn name(self) -> &'static str {
        match self {
            Self::Q3KM => "q3_k_m",
            Self::Q4KM => "q4_k_m",
            Self::Q5KM => "q5_k_m",
        }
    }

    pub fn base(self) -> GgmlDType {
        match self {
            Self::Q3KM => GgmlDType::Q3K,
            Self::Q4KM => GgmlDType::Q4K,
            Self::Q5KM => GgmlDType::Q5K,
        }
    }

    /// The format of the linear weight `name` in a model of `layers` blocks (before any width
    /// fallback), as llama.cpp's mix assigns it.
    pub fn linear_format(self, name: &str, layers: usize) -> QuantFormat {
        use GgmlDType::*;
        let base = self.base();
        let t = match (self, linear_kind(name)) {
            (Self::Q3KM, Some(("attn_v", i))) => {
                if i < 2 {
                    Q5K
                } else {
                    Q4K
                }
            }
            (Self::Q3KM, Some(("ffn_down", i))) => {
                if i < layers / 16 {
                    Q5K
                } else {
                    Q4K
                }
            }
            (Self::Q3KM, Some(("attn_output", _))) => Q4K,
            (Self::Q4KM | Self::Q5KM, Some(("attn_v" | "ffn_down", i))) if use_more_bits(i, layers) => Q6K,
            _ => base,
        };
        QuantFormat::Ggml(t)
    }
}
