//! Compute kernels candle does not provide, and the switch that routes the linear layers to them.
//!
//! - [`bf16_gemm`]: a matrix multiply with bf16 inputs and f32 accumulation on AVX512_BF16
//!   (`vdpbf16ps`), about 3× candle's f32 GEMM on the AMD EPYC the project measured it on, and its
//!   emulation elsewhere (rounded copies, the f32 GEMM);
//! - [`attention`]: causal attention with grouped key/value heads as one op, with a backward that
//!   recomputes the probabilities;
//! - [`autocast`]: a thread-local precision scope (like `torch.autocast`) and the differentiable
//!   candle op the linear layers call under it;
//! - [`int8_gemm`]: a frozen layer's `x · Wᵀ` with int8 weights and activations and i32 sums, on
//!   AVX512_VNNI (`vpdpbusd`) or AVX2 (`vpmaddwd`), for the teacher's forward;
//! - [`kv_cache`]: generation's keys and values appended in place, and a decoding step's
//!   attention read from them;
//! - [`linear`]: a dense layer's `x · Wᵀ` as one op whose backward returns both gradients;
//! - [`qgemm`]: many-row products with a GGML-quantized weight, dequantized a block of rows at
//!   a time into f32 GEMMs;
//! - [`qgemv`]: a decoding step's product with a Q8_0 or Q4_0 weight, four weight rows at a time
//!   in integer block dot products (AVX2 or portable);
//! - [`rmsnorm`] and [`rope`]: RMS normalisation and rotary embedding in one pass each, with their
//!   backward (candle's fused versions record no gradient);
//! - [`softmax`]: attention's masked, scaled softmax in one pass, with its own backward;
//! - [`swiglu`]: the gated MLP's `silu(gate) ⊙ up` in one pass, with its own backward;
//! - [`vmath`]: vectorizable `exp` and row reductions for fused losses.
//!
//! **One switch.** Every f32 kernel above (attention, linear, rmsnorm, rope, softmax, swiglu, the
//! frozen-forward fast paths) and the fused loss and hand-written head backward of the LM step ask
//! [`enabled`] before they take an op; inside a [`reference()`] scope they all decline, and candle's
//! composed ops (with candle's autograd) compute the same thing. Tests run a model both ways to
//! check the kernels against the reference; `kernels = "reference"` under `[distill]` or
//! `DISTILL_KERNELS=reference` runs a whole job on the reference path (slower: a debugging aid).
//! The bf16 and int8 GEMMs are chosen by precision, not by this switch: their emulated and
//! portable twins are tested against them directly.

pub mod attention;
pub mod autocast;
pub mod bf16_gemm;
pub mod cpu;
pub mod int8_gemm;
pub mod isa;
pub mod kv_cache;
pub mod linear;
pub mod qgemm;
pub mod qgemv;
pub mod rmsnorm;
pub mod rope;
pub mod softmax;
pub mod swiglu;
pub mod vmath;

use serde::{Deserialize, Serialize};
use std::cell::Cell;

/// Which implementation the ops take.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kernels {
    /// The project's fused CPU kernels wherever they apply.
    #[default]
    Fused,
    /// candle's composed ops only.
    Reference,
}

impl Kernels {
    /// `fused` or `reference`.
    pub fn parse(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "fused" | "" => Some(Self::Fused),
            "reference" => Some(Self::Reference),
            _ => None,
        }
    }
}

thread_local! {
    static CURRENT: Cell<Kernels> = const { Cell::new(Kernels::Fused) };
}

/// The error of a kernel called with what it does not take: `takes` says what it takes, then the
/// shapes and dtypes it got (or that this thread runs on the reference path).
pub(crate) fn refused(takes: &str, got: &[&candle_core::Tensor]) -> crate::engine::Error {
    if !enabled() {
        return crate::engine::Error::Invalid(format!("{takes}; this thread runs candle's ops (kernels::reference)"));
    }
    let got: Vec<String> = got.iter().map(|t| format!("{:?} {:?}", t.dims(), t.dtype())).collect();
    crate::engine::Error::Invalid(format!("{takes}, got {}", got.join(" and ")))
}

/// True when this thread may use the fused kernels (outside a [`reference()`] scope).
pub fn enabled() -> bool {
    CURRENT.with(|c| c.get()) == Kernels::Fused
}

/// Restores the previous choice when dropped.
pub struct Scope(Kernels);

impl Drop for Scope {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.0));
    }
}

/// Runs this thread's ops on `kernels` until the returned scope is dropped.
pub fn enter(kernels: Kernels) -> Scope {
    Scope(CURRENT.with(|c| c.replace(kernels)))
}

/// Runs this thread's ops on candle's composed ops until the returned scope is dropped.
pub fn reference() -> Scope {
    enter(Kernels::Reference)
}
