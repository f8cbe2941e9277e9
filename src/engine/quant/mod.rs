//! Post-training quantization: formats, policy, quantized models with honest sizes, calibration,
//! sweeps measured against the unquantized model, and export (GGUF for llama.cpp, packed
//! safetensors for the own integer formats).

pub mod format;
pub mod imatrix;
pub mod own;
pub mod policy;
pub mod quantize;

pub use format::{IntFormat, QuantFormat};
pub use imatrix::{calibrate, Imatrix};
pub use policy::{QuantPolicy, TensorRole, TensorRule};
pub use quantize::{quantize_model, QuantData, QuantOptions, QuantTensor, QuantizedModel, SizeReport, TensorReport};
