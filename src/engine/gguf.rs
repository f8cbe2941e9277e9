//! GGUF files: metadata, tensors (dequantized, HF names), tokenizer from the GGUF vocabulary.
// TEMPORARY stub (replaced by the gguf branch).
pub struct GgufModel { pub arch: String, pub config: serde_json::Value, pub tensors: std::collections::HashMap<String, candle_core::Tensor>, pub tensor_types: Vec<(String, String)>, pub tokenizer: Option<tokenizers::Tokenizer> }
pub fn load_gguf(_p: &std::path::Path, _d: &candle_core::Device) -> crate::engine::Result<GgufModel> { unimplemented!() }
