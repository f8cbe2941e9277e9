//! The engine: models, hub, data, training, quantization, evaluation. No terminal dependency; usable as a
//! library. It is handed its [`context::Settings`] and a [`context::JobContext`] monitor; it never
//! imports `jobs` or a front end.

pub mod advisor;
pub mod classify;
pub mod context;
pub mod data;
pub mod derive;
pub mod device;
pub mod distill;
pub mod distribution;
pub mod error;
pub mod eval;
pub mod events;
pub mod export;
pub mod fsutil;
pub mod generate;
pub mod gguf;
pub mod header;
pub mod hub;
pub mod kernels;
pub mod library;
pub mod loader;
pub mod models;
pub mod pair;
pub mod pretrain;
pub mod prompt;
pub mod prune;
pub mod quant;
pub mod recipe;
pub mod source;
pub mod summary;
pub mod tokenizer;
pub mod tradeoff;
pub mod train;
pub mod usage;

pub use error::{Error, Result};
