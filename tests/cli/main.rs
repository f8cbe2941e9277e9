//! The headless command line end to end: runs, resume after kill -9, classification, export and verify, pretraining, bad input.

#[path = "../common/mod.rs"]
mod common;

mod bad_input;
mod classify;
mod config_guards;
mod export;
mod gguf_teacher;
mod guards;
mod headless_ux;
mod library;
mod memory_estimate;
mod on_policy;
mod pretrain;
mod qad;
mod quant_bad_input;
mod temperature;
mod trainer;
