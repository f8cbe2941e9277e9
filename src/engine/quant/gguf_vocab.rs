//! The `tokenizer.ggml.*` metadata of a byte-level BPE tokenizer, as llama.cpp's converter writes it.

use crate::engine::{Error, Result};
use candle_core::quantized::gguf_file::Value;
use serde_json::Value as Json;

/// llama.cpp token types.
const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;

/// `tokenizer.ggml.{model, pre, tokens, token_type, merges}` for `tok`, padded with `[PAD{id}]`
/// (type unused) up to `vocab_size` rows of the embedding, as llama.cpp needs one token per row.
/// `pre` is `qwen2` for Qwen2's split regex, `smollm` for single digits before byte level (the
/// two pre-tokenizers `load_gguf` rebuilds), `gpt2` otherwise.
pub fn tokenizer_metadata(tok: &tokenizers::Tokenizer, vocab_size: usize) -> Result<Vec<(String, Value)>> {
    let json: Json =
        serde_json::from_str(&tok.to_string(false).map_err(|e| err(e.to_string()))?).map_err(|e| err(e.to_string()))?;
    let model = &json["model"];
    if model["type"].as_str() != Some("BPE") {
        return Err(err(format!(
            "the tokenizer is {}, not byte-level BPE; GGUF export writes BPE vocabularies only",
            model["type"].as_str().unwrap_or("of unknown type")
        )));
    }
    let mut tokens: Vec<Option<(String, i32)>> = Vec::new();
    let mut put = |id: u64, text: &str, ty: i32| {
        let id = id as usize;
        if tokens.len() <= id {
            tokens.resize(id + 1, None);
        }
        tokens[id] = Some((text.to_string(), ty));
    };
    for (text, id) in model["vocab"].as_object().ok_or_else(|| err("the BPE model has no vocab".into()))? {
        put(id.as_u64().ok_or_else(|| err(format!("token `{text}` has no integer id")))?, text, NORMAL);
    }
    for added in json["added_tokens"].as_array().into_iter().flatten() {
        let (Some(id), Some(text)) = (added["id"].as_u64(), added["content"].as_str()) else { continue };
        put(id, text, if added["special"].as_bool() == Some(true) { CONTROL } else { USER_DEFINED });
    }
    if tokens.len() > vocab_size {
        return Err(err(format!(
            "the tokenizer has {} tokens but the model's embedding only {vocab_size} rows",
            tokens.len()
        )));
    }
    tokens.resize(vocab_size, None);
    let (texts, types): (Vec<Value>, Vec<Value>) = tokens
        .into_iter()
        .enumerate()
        .map(|(id, t)| {
            let (text, ty) = t.unwrap_or_else(|| (format!("[PAD{id}]"), UNUSED));
            (Value::String(text), Value::I32(ty))
        })
        .unzip();
    let merges = model["merges"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| match m {
            Json::String(s) => Ok(Value::String(s.clone())),
            Json::Array(pair) if pair.len() == 2 => {
                Ok(Value::String(format!("{} {}", pair[0].as_str().unwrap_or(""), pair[1].as_str().unwrap_or(""))))
            }
            other => Err(err(format!("unreadable merge {other}"))),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(vec![
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String(pre_name(&json["pre_tokenizer"]).into())),
        ("tokenizer.ggml.tokens".into(), Value::Array(texts)),
        ("tokenizer.ggml.token_type".into(), Value::Array(types)),
        ("tokenizer.ggml.merges".into(), Value::Array(merges)),
    ])
}

fn pre_name(pre: &Json) -> &'static str {
    let text = pre.to_string();
    if text.contains(r"\\p{N}]?\\p{L}+") {
        "qwen2"
    } else if text.contains("\"Digits\"") && text.contains("\"individual_digits\":true") {
        "smollm"
    } else {
        "gpt2"
    }
}

fn err(detail: String) -> Error {
    Error::Tokenizer { path: "GGUF export".into(), detail }
}
