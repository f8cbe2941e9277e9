//! Post-training quantization: formats, policy, quantized models with honest sizes, calibration,
//! sweeps measured against the unquantized model, and export (GGUF for llama.cpp, packed
//! safetensors for the own integer formats).

pub mod awq;
pub mod budget;
pub mod export;
pub mod format;
pub mod ggml_blocks;
pub mod gguf_export;
mod gguf_vocab;
pub mod gptq;
pub mod gptq_blocks;
pub mod imatrix;
pub mod iq4nl;
mod mix;
pub mod own;
pub mod policy;
pub mod quantize;
pub mod st_export;
pub mod sweep;

pub use export::{export, ExportKind, ExportReport};
pub use format::{IntFormat, QuantFormat};
pub use imatrix::{calibrate, Imatrix};
pub use policy::{QuantPolicy, TensorRole, TensorRule};
pub use quantize::{quantize_model, QuantData, QuantOptions, QuantTensor, QuantizedModel, SizeReport, TensorReport};
pub use sweep::{sweep, SweepOptions, SweepRequest};
