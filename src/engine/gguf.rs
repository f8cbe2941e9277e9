//! GGUF files: metadata, tensors (dequantized, HF names), tokenizer from the GGUF vocabulary.
