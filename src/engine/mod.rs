//! The engine: models, hub, data, evaluation. No terminal dependency; usable as a library.

pub mod classify;
pub mod data;
pub mod derive;
pub mod device;
pub mod distill;
pub mod error;
pub mod eval;
pub mod export;
pub mod fsutil;
pub mod gguf;
pub mod hub;
pub mod kernels;
pub mod loader;
pub mod models;
pub mod pair;
pub mod pretrain;
pub mod quant;
pub mod recipe;
pub mod source;
pub mod tokenizer;

pub use error::{Error, Result};
