//! Compute kernels candle does not provide, and the switch that routes the linear layers to them.
//!
//! - [`bf16_gemm`]: a matrix multiply with bf16 inputs and f32 accumulation on AVX512_BF16
//!   (`vdpbf16ps`), about 3× candle's f32 GEMM on the AMD EPYC the project measured it on;
//! - [`autocast`]: a thread-local precision scope (like `torch.autocast`) and the differentiable
//!   candle op the linear layers call under it;
//! - [`softmax`]: attention's masked, scaled softmax in one pass, with its own backward;
//! - [`vmath`]: vectorizable `exp` and row reductions for fused losses.

pub mod autocast;
pub mod bf16_gemm;
pub mod softmax;
pub mod vmath;
