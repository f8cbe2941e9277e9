//! A `tokenizers::Tokenizer` from a GGUF vocabulary (`tokenizer.ggml.*`).
//!
//! Builds the very `tokenizer.json` that the reference converter `scripts/gguf_to_hf.py` writes
//! and parses it, so both agree token for token.

use super::metadata::meta_str;
use crate::engine::{Error, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use serde_json::{json, Map};
use std::str::FromStr;

/// Where tokenizer errors say they come from.
const SOURCE: &str = "GGUF vocabulary (tokenizer.ggml.*)";

/// The pre-tokenizer regex llama.cpp uses for `tokenizer.ggml.pre == "qwen2"`.
const QWEN2_PATTERN: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The tokenizer of a GGUF file's own vocabulary. Byte-level BPE (`tokenizer.ggml.model == "gpt2"`)
/// is supported; sentencepiece (`llama`) vocabularies are refused with a hint to add a
/// `tokenizer.json` beside the file.
pub fn tokenizer_from_gguf(content: &Content) -> Result<tokenizers::Tokenizer> {
    let json = tokenizer_json_from_gguf(content)?;
    tokenizers::Tokenizer::from_str(&json.to_string()).map_err(|e| tok_err(e.to_string()))
}

/// The `tokenizer.json` (as JSON) for a GGUF byte-level BPE vocabulary: vocab from
/// `tokenizer.ggml.tokens`, merges from `tokenizer.ggml.merges`, token type 3 (control) as added
/// special tokens, the pre-tokenizer chosen by `tokenizer.ggml.pre`, a ByteLevel decoder.
pub fn tokenizer_json_from_gguf(content: &Content) -> Result<serde_json::Value> {
    match meta_str(content, "tokenizer.ggml.model") {
        Some("gpt2") => {}
        Some("llama") => {
            return Err(tok_err(
                "the GGUF carries a sentencepiece (`llama`) vocabulary, which is not converted; \
                 put the model's tokenizer.json beside the .gguf file"
                    .into(),
            ))
        }
        Some(other) => {
            return Err(tok_err(format!(
                "tokenizer.ggml.model `{other}` is not supported (only byte-level BPE `gpt2`); \
                 put the model's tokenizer.json beside the .gguf file"
            )))
        }
        None => {
            return Err(Error::MissingTokenizer {
                model: "GGUF file".into(),
                expected: "`tokenizer.ggml.model` and `tokenizer.ggml.tokens` in its metadata".into(),
            })
        }
    }
    let tokens = string_array(content, "tokenizer.ggml.tokens")?;
    let merges = string_array(content, "tokenizer.ggml.merges")?;
    let types = match content.metadata.get("tokenizer.ggml.token_type") {
        Some(Value::Array(items)) => items.iter().map(int_value).collect::<Vec<_>>(),
        Some(_) => return Err(tok_err("`tokenizer.ggml.token_type` is not an array".into())),
        None => vec![None; tokens.len()],
    };
    if types.len() != tokens.len() {
        return Err(tok_err(format!("{} token types for {} tokens", types.len(), tokens.len())));
    }

    let mut vocab = Map::new();
    for (id, tok) in tokens.iter().enumerate() {
        vocab.insert(tok.to_string(), json!(id));
    }
    let added: Vec<_> = tokens
        .iter()
        .zip(&types)
        .enumerate()
        .filter(|(_, (_, ty))| **ty == Some(3))
        .map(|(id, (tok, _))| {
            json!({"id": id, "content": tok, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": true})
        })
        .collect();
    let pre_tokenizer = match meta_str(content, "tokenizer.ggml.pre") {
        Some("qwen2") => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_PATTERN}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}]}),
        // smollm and everything else, as the reference converter: single digits, then GPT-2 byte level.
        _ => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}]}),
    };
    Ok(json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": null, "pre_tokenizer": pre_tokenizer, "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": false, "vocab": vocab, "merges": merges},
    }))
}

fn string_array<'a>(content: &'a Content, key: &str) -> Result<Vec<&'a str>> {
    match content.metadata.get(key) {
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.as_str()),
                other => Err(tok_err(format!("`{key}` holds {other:?}, expected strings"))),
            })
            .collect(),
        Some(_) => Err(tok_err(format!("`{key}` is not an array"))),
        None => Err(tok_err(format!("the GGUF metadata lacks `{key}`"))),
    }
}

fn int_value(v: &Value) -> Option<i64> {
    match *v {
        Value::I8(x) => Some(x.into()),
        Value::U8(x) => Some(x.into()),
        Value::I16(x) => Some(x.into()),
        Value::U16(x) => Some(x.into()),
        Value::I32(x) => Some(x.into()),
        Value::U32(x) => Some(x.into()),
        Value::I64(x) => Some(x),
        Value::U64(x) => i64::try_from(x).ok(),
        _ => None,
    }
}

fn tok_err(detail: String) -> Error {
    Error::Tokenizer { path: SOURCE.into(), detail }
}
