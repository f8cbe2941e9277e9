//! The CPU kernels against candle's composed ops (values and gradients), and the one switch between them.

#[path = "../common/mod.rs"]
mod common;

mod bf16_matmul;
mod decode;
mod fused_block;
mod fused_softmax;
mod int8_gemm;
