//! Engine tests: models against transformers' logits, loading (hub, cache, GGUF), evaluation, quantization formats, losses, classification data, jobs.

#[path = "../common/mod.rs"]
mod common;

mod classify_demo_data;
mod classify_parquet;
mod classify_real;
mod derive_student;
mod eval_protocol;
mod fuzz;
mod generate;
mod gguf_load;
mod gguf_teacher;
mod golden_logits;
mod gradients;
mod hub_dataset;
mod hub_download;
mod jobs;
mod losses;
mod pair_check;
mod qad;
mod quant_awq;
mod quant_budget;
mod quant_formats;
mod quant_gguf;
mod quant_gptq;
mod quant_gptq_blocks;
mod quant_iq4nl;
mod quant_real;
mod real_models;
