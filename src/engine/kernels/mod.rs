//! Compute kernels candle does not provide, and the switch that routes the linear layers to them.
//!
//! - [`bf16_gemm`]: a matrix multiply with bf16 inputs and f32 accumulation on AVX512_BF16
//!   (`vdpbf16ps`), about 3× candle's f32 GEMM on the AMD EPYC the project measured it on;
//! - [`attention`]: causal attention with grouped key/value heads as one op, with a backward that
//!   recomputes the probabilities;
//! - [`autocast`]: a thread-local precision scope (like `torch.autocast`) and the differentiable
//!   candle op the linear layers call under it;
//! - [`int8_gemm`]: a frozen layer's `x · Wᵀ` with int8 weights and activations and i32 sums, on
//!   AVX512_VNNI (`vpdpbusd`), for the teacher's forward;
//! - [`linear`]: a dense layer's `x · Wᵀ` as one op whose backward returns both gradients;
//! - [`rmsnorm`] and [`rope`]: RMS normalisation and rotary embedding in one pass each, with their
//!   backward (candle's fused versions record no gradient);
//! - [`softmax`]: attention's masked, scaled softmax in one pass, with its own backward;
//! - [`swiglu`]: the gated MLP's `silu(gate) ⊙ up` in one pass, with its own backward;
//! - [`vmath`]: vectorizable `exp` and row reductions for fused losses.

pub mod attention;
pub mod autocast;
pub mod bf16_gemm;
pub mod cpu;
pub mod int8_gemm;
pub mod linear;
pub mod rmsnorm;
pub mod rope;
pub mod softmax;
pub mod swiglu;
pub mod vmath;
