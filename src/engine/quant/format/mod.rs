//! Quantization formats: what each stores, nominal bits, what it needs (calibration, Hessians)
//! and the per-tensor fallback rule. Names and parsing: `names.rs`.
//!
//! Two families: llama.cpp's GGML block formats (stored and multiplied by candle, exported to GGUF)
//! and the project's own round-to-nearest integer formats (`int4-g64` …), which are evaluated
//! through dequantized weights and exported as packed safetensors.

use crate::engine::{Error, Result};
use candle_core::quantized::GgmlDType;

pub use super::mix::Mix;
use super::mix::MIXES;

mod names;
pub use names::valid_names;

/// The GGML block formats a sweep can use, in the order `valid_names` lists them.
const GGML_FORMATS: &[GgmlDType] = &[
    GgmlDType::Q8_0,
    GgmlDType::Q6K,
    GgmlDType::Q5_1,
    GgmlDType::Q5_0,
    GgmlDType::Q5K,
    GgmlDType::Q4_1,
    GgmlDType::Q4_0,
    GgmlDType::Q4K,
    GgmlDType::Q3K,
    GgmlDType::Q2K,
];

/// Group sizes of the own formats (columns per scale); `None` in [`IntFormat::group`] is per-channel.
pub const INT_GROUPS: &[usize] = &[32, 64, 128];
/// Bit widths of the own formats.
pub const INT_BITS: &[u8] = &[8, 4, 3, 2];

/// One of the project's own integer formats: `bits`-bit codes, one scale (and, asymmetric, one
/// minimum) per `group` consecutive weights of a row, or per row when `group` is `None`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IntFormat {
    pub bits: u8,
    pub group: Option<usize>,
    /// Symmetric: `w ≈ s·(q − 2^(b−1))`, one f16 scale. Asymmetric: `w ≈ s·q + m`, f16 scale and minimum.
    pub symmetric: bool,
    /// Rounded by GPTQ from calibration activations ([`super::gptq`]; name suffix `+gptq`) instead
    /// of to nearest. The stored layout is the same.
    pub gptq: bool,
}

impl IntFormat {
    /// Scale/minimum bytes per group or row: f16 each.
    pub fn meta_bytes_per_group(&self) -> usize {
        if self.symmetric {
            2
        } else {
            4
        }
    }
}

/// A weight storage format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantFormat {
    /// Unquantized f32 (the reference point of a sweep).
    F32,
    /// IEEE half precision, stored as GGML F16.
    F16,
    /// A GGML block format (Q8_0 … Q2K).
    Ggml(GgmlDType),
    /// llama.cpp's non-linear 4-bit blocks (GGML type 20, which candle lacks; [`super::iq4nl`]).
    Iq4Nl,
    /// IQ4_NL rounded by GPTQ (`iq4_nl+gptq`; [`super::gptq_blocks`]).
    Iq4NlGptq,
    /// An own round-to-nearest integer format.
    Int(IntFormat),
    /// A per-tensor mix of GGML formats ([`Mix`]).
    Mix(Mix),
    /// A mix whose every GGML tensor is rounded by GPTQ (`q4_k_m+gptq`; see [`Self::GgmlGptq`]).
    MixGptq(Mix),
    /// A GGML block format rounded by GPTQ from calibration activations (`q4_0+gptq`, `q4_k+gptq`):
    /// the legacy blocks through their own-format twin ([`int_twin`]), the K-quants inside their
    /// super-blocks ([`super::gptq_blocks`]); stored as that GGML type.
    GgmlGptq(GgmlDType),
    /// A target size: per-tensor GGML formats chosen by measured sensitivity
    /// ([`super::budget`]; needs a calibration text).
    Budget(Budget),
    /// A format whose linear weights are first scaled by their inputs' measured activations
    /// ([`super::awq`]; `q4_0+awq`, `int4-g64+awq`, `q4_k_m+awq`, `q4_0+awq+gptq`; needs a
    /// calibration text).
    Awq(AwqBase),
}

/// The formats AWQ's scaling can precede: one GGML block format, a mix, or an own int format,
/// each optionally rounded by GPTQ afterwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AwqBase {
    Ggml(GgmlDType),
    GgmlGptq(GgmlDType),
    Int(IntFormat),
    Mix(Mix),
    MixGptq(Mix),
    Iq4Nl,
    Iq4NlGptq,
}

impl AwqBase {
    /// The format the scaled weights are quantized in.
    pub fn format(self) -> QuantFormat {
        match self {
            Self::Ggml(d) => QuantFormat::Ggml(d),
            Self::GgmlGptq(d) => QuantFormat::GgmlGptq(d),
            Self::Int(f) => QuantFormat::Int(f),
            Self::Mix(m) => QuantFormat::Mix(m),
            Self::MixGptq(m) => QuantFormat::MixGptq(m),
            Self::Iq4Nl => QuantFormat::Iq4Nl,
            Self::Iq4NlGptq => QuantFormat::Iq4NlGptq,
        }
    }

    fn of(f: QuantFormat) -> Option<Self> {
        match f {
            QuantFormat::Ggml(d) => Some(Self::Ggml(d)),
            QuantFormat::GgmlGptq(d) => Some(Self::GgmlGptq(d)),
            QuantFormat::Int(f) => Some(Self::Int(f)),
            QuantFormat::Mix(m) => Some(Self::Mix(m)),
            QuantFormat::MixGptq(m) => Some(Self::MixGptq(m)),
            QuantFormat::Iq4Nl => Some(Self::Iq4Nl),
            QuantFormat::Iq4NlGptq => Some(Self::Iq4NlGptq),
            QuantFormat::F32 | QuantFormat::F16 | QuantFormat::Budget(_) | QuantFormat::Awq(_) => None,
        }
    }
}

/// A bits/weight target over every parameter, in hundredths of a bit (`budget-4.5` is 450).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Budget {
    pub centibits: u32,
    /// Every format of the plan rounded by GPTQ (`budget-5+gptq`).
    pub gptq: bool,
}

impl Budget {
    pub fn bits(self) -> f64 {
        self.centibits as f64 / 100.0
    }
}

impl QuantFormat {
    /// Weights per block (GGML), per group (own group-wise), 1 otherwise. A row's width must be a
    /// multiple of it for the format to apply to the tensor as is.
    pub fn block_size(&self) -> usize {
        match self {
            Self::F32 | Self::F16 => 1,
            Self::Ggml(d) | Self::GgmlGptq(d) => d.block_size(),
            Self::Iq4Nl | Self::Iq4NlGptq => super::iq4nl::BLOCK,
            Self::Mix(m) | Self::MixGptq(m) => m.base().block_size(),
            Self::Budget(_) => GgmlDType::Q8_0.block_size(),
            Self::Awq(b) => b.format().block_size(),
            Self::Int(f) => f.group.unwrap_or(1),
        }
    }

    /// Nominal bits per weight of a tensor of rows `width` wide (scales and minima included).
    pub fn bits_per_weight(&self, width: usize) -> f64 {
        match self {
            Self::F32 => 32.0,
            Self::F16 => 16.0,
            Self::Ggml(d) | Self::GgmlGptq(d) => 8.0 * d.type_size() as f64 / d.block_size() as f64,
            Self::Iq4Nl | Self::Iq4NlGptq => 8.0 * super::iq4nl::BLOCK_BYTES as f64 / super::iq4nl::BLOCK as f64,
            Self::Mix(m) | Self::MixGptq(m) => Self::Ggml(m.base()).bits_per_weight(width),
            Self::Budget(b) => b.bits(),
            Self::Awq(b) => b.format().bits_per_weight(width),
            Self::Int(f) => {
                let per = f.group.unwrap_or(width.max(1));
                f.bits as f64 + 8.0 * f.meta_bytes_per_group() as f64 / per as f64
            }
        }
    }

    /// True for a format rounded by GPTQ (`+gptq`: own int, GGML blocks, IQ4_NL, a mix, a budget,
    /// under AWQ or not): it needs calibration activations.
    pub fn is_gptq(&self) -> bool {
        match self {
            Self::Awq(b) => b.format().is_gptq(),
            _ => matches!(
                self,
                Self::Int(IntFormat { gptq: true, .. })
                    | Self::GgmlGptq(_)
                    | Self::MixGptq(_)
                    | Self::Iq4NlGptq
                    | Self::Budget(Budget { gptq: true, .. })
            ),
        }
    }

    /// The same storage rounded to nearest: GPTQ's error feedback dropped (what AWQ's search
    /// rounds its candidates with, and what a calibration-free path can offer instead).
    pub fn rounded_to_nearest(self) -> Self {
        match self {
            Self::Int(f) => Self::Int(IntFormat { gptq: false, ..f }),
            Self::GgmlGptq(d) => Self::Ggml(d),
            Self::Iq4NlGptq => Self::Iq4Nl,
            Self::MixGptq(m) => Self::Mix(m),
            Self::Budget(b) => Self::Budget(Budget { gptq: false, ..b }),
            f => f,
        }
    }

    /// True when calibration must collect the Gram matrices of the linear layers' inputs: GPTQ
    /// rounds with them, AWQ measures its scales' effect with them.
    pub fn needs_hessians(&self) -> bool {
        self.is_gptq() || matches!(self, Self::Awq(_))
    }

    /// GPTQ formats and budgets cannot be made without a calibration text: why, for an error.
    pub fn calibration_need(&self) -> Option<&'static str> {
        match self {
            Self::Int(IntFormat { gptq: true, .. }) | Self::GgmlGptq(_) | Self::MixGptq(_) | Self::Iq4NlGptq => {
                Some("rounds with calibration activations (GPTQ)")
            }
            Self::Budget(_) => Some("chooses each tensor's format by its measured sensitivity on calibration text"),
            Self::Awq(_) => Some("scales each linear layer's inputs by their measured activations (AWQ)"),
            _ => None,
        }
    }

    /// True for the K-quants, the GGML formats candle can quantize with an importance matrix.
    pub fn supports_imatrix(&self) -> bool {
        matches!(
            self,
            Self::Int(_)
                | Self::Mix(_)
                | Self::MixGptq(_)
                | Self::Budget(_)
                | Self::Awq(_)
                | Self::Iq4Nl
                | Self::Iq4NlGptq
                | Self::GgmlGptq(_)
                | Self::Ggml(GgmlDType::Q2K | GgmlDType::Q3K | GgmlDType::Q4K | GgmlDType::Q5K | GgmlDType::Q6K)
        )
    }

    /// The format a tensor whose rows are `width` wide actually gets: `self` when the width is a
    /// multiple of the block size, otherwise llama.cpp's fallback (K-quants to a 32-weight format of
    /// about the same size: Q2K/Q3K → IQ4_NL, Q4K → Q5_0, Q5K → Q5_1, Q6K → Q8_0; legacy formats to
    /// F16), and per-channel scales of the same bit width for a group-wise own format.
    pub fn for_width(&self, width: usize) -> QuantFormat {
        match self {
            Self::Mix(m) => return Self::Ggml(m.base()).for_width(width),
            Self::MixGptq(m) => return Self::GgmlGptq(m.base()).for_width(width),
            Self::Budget(_) => return *self,
            Self::Awq(b) => return b.format().for_width(width),
            _ => {}
        }
        if width.is_multiple_of(self.block_size()) {
            return *self;
        }
        let next = match self {
            Self::Ggml(GgmlDType::Q2K | GgmlDType::Q3K) => Self::Iq4Nl,
            Self::Ggml(GgmlDType::Q4K) => Self::Ggml(GgmlDType::Q5_0),
            Self::Ggml(GgmlDType::Q5K) => Self::Ggml(GgmlDType::Q5_1),
            Self::Ggml(GgmlDType::Q6K) => Self::Ggml(GgmlDType::Q8_0),
            // GPTQ keeps rounding in the fallback where the fallback has a GPTQ form.
            Self::GgmlGptq(GgmlDType::Q4K) => Self::GgmlGptq(GgmlDType::Q5_0),
            Self::GgmlGptq(GgmlDType::Q5K) => Self::GgmlGptq(GgmlDType::Q5_1),
            Self::GgmlGptq(GgmlDType::Q6K) => Self::GgmlGptq(GgmlDType::Q8_0),
            Self::GgmlGptq(GgmlDType::Q2K | GgmlDType::Q3K) => Self::Iq4NlGptq,
            Self::Ggml(_) | Self::GgmlGptq(_) | Self::Iq4Nl | Self::Iq4NlGptq => Self::F16,
            Self::Int(f) => Self::Int(IntFormat { group: None, ..*f }),
            Self::F32 | Self::F16 | Self::Mix(_) | Self::MixGptq(_) | Self::Budget(_) | Self::Awq(_) => *self,
        };
        next.for_width(width)
    }

    /// The format this (possibly mixed) format asks of the linear weight `name` of a model of
    /// `layers` blocks, before any width fallback.
    pub fn for_linear(&self, name: &str, layers: usize) -> QuantFormat {
        match self {
            Self::Mix(m) => m.linear_format(name, layers),
            Self::MixGptq(m) => match m.linear_format(name, layers) {
                Self::Ggml(t) => Self::GgmlGptq(t),
                f => f,
            },
            Self::Awq(b) => b.format().for_linear(name, layers),
            other => *other,
        }
    }

    /// The 8-bit format of the same family: what embeddings and the output head get by default,
    /// as llama.cpp keeps them at higher precision.
    pub fn high_precision(&self) -> QuantFormat {
        match self {
            Self::F32 | Self::F16 => *self,
            Self::Awq(b) => b.format().high_precision(),
            Self::Ggml(_)
            | Self::GgmlGptq(_)
            | Self::Iq4Nl
            | Self::Iq4NlGptq
            | Self::Mix(_)
            | Self::MixGptq(_)
            | Self::Budget(_) => Self::Ggml(GgmlDType::Q8_0),
            Self::Int(_) => Self::Int(IntFormat { bits: 8, group: None, symmetric: true, gptq: false }),
        }
    }
}

/// The own format whose groups are a GGML legacy block's: the same codes, offset and f16
/// parameters (`w = d·(q − 8)` is Q4_0's, `w = d·q + m` Q4_1's, …), so GPTQ can round in it and
/// the result be packed into the GGML blocks exactly.
pub fn int_twin(d: GgmlDType) -> Option<IntFormat> {
    let (bits, symmetric) = match d {
        GgmlDType::Q4_0 => (4, true),
        GgmlDType::Q4_1 => (4, false),
        GgmlDType::Q5_0 => (5, true),
        GgmlDType::Q5_1 => (5, false),
        GgmlDType::Q8_0 => (8, true),
        _ => return None,
    };
    Some(IntFormat { bits, group: Some(32), symmetric, gptq: true })
}
