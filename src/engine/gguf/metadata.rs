//! GGUF metadata: typed reads, a short summary, and the HF `config.json` it implies.

use super::bad;
use crate::engine::Result;
use candle_core::quantized::gguf_file::{Content, Value};
use serde_json::json;
use std::collections::HashMap;
use std::path::Path;

/// Every metadata entry as (key, short value), sorted by key; arrays read `[N items]`,
/// long strings are cut to 60 characters.
pub fn gguf_metadata_summary(content: &Content) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = content.metadata.iter().map(|(k, v)| (k.clone(), short_value(v))).collect();
    out.sort();
    out
}

fn short_value(v: &Value) -> String {
    match v {
        Value::U8(x) => x.to_string(),
        Value::I8(x) => x.to_string(),
        Value::U16(x) => x.to_string(),
        Value::I16(x) => x.to_string(),
        Value::U32(x) => x.to_string(),
        Value::I32(x) => x.to_string(),
        Value::U64(x) => x.to_string(),
        Value::I64(x) => x.to_string(),
        Value::F32(x) => x.to_string(),
        Value::F64(x) => x.to_string(),
        Value::Bool(x) => x.to_string(),
        Value::String(s) if s.chars().count() > 60 => {
            format!("{}…", s.chars().take(60).collect::<String>())
        }
        Value::String(s) => s.clone(),
        Value::Array(items) => format!("[{} items]", items.len()),
    }
}

/// The HF `config.json` the reference converter writes for this GGUF.
pub(super) fn config_from_metadata(
    content: &Content,
    path: &Path,
    arch: &str,
    tensors: &HashMap<String, Vec<usize>>,
) -> Result<serde_json::Value> {
    let key = |k: &str| format!("{arch}.{k}");
    let n_head = meta_req_u64(content, path, &key("attention.head_count"))?;
    let vocab_size = match content.metadata.get("tokenizer.ggml.tokens") {
        Some(Value::Array(tokens)) => tokens.len(),
        _ => match tensors.get("model.embed_tokens.weight") {
            Some(shape) => shape[0],
            None => return Err(bad(path, "GGUF has neither `tokenizer.ggml.tokens` nor `token_embd.weight`")),
        },
    };
    let mut cfg = json!({
        "architectures": [if arch == "llama" { "LlamaForCausalLM" } else { "Qwen2ForCausalLM" }],
        "model_type": arch,
        "hidden_size": meta_req_u64(content, path, &key("embedding_length"))?,
        "intermediate_size": meta_req_u64(content, path, &key("feed_forward_length"))?,
        "num_hidden_layers": meta_req_u64(content, path, &key("block_count"))?,
        "num_attention_heads": n_head,
        "num_key_value_heads": meta_u64(content, path, &key("attention.head_count_kv"))?.unwrap_or(n_head),
        "rms_norm_eps": meta_req_f64(content, path, &key("attention.layer_norm_rms_epsilon"))?,
        // llama.cpp's default when the key is absent.
        "rope_theta": meta_f64(content, path, &key("rope.freq_base"))?.unwrap_or(10_000.0),
        "max_position_embeddings": meta_req_u64(content, path, &key("context_length"))?,
        "vocab_size": vocab_size,
        "tie_word_embeddings": !tensors.contains_key("lm_head.weight"),
        "hidden_act": "silu",
        "bos_token_id": meta_u64(content, path, "tokenizer.ggml.bos_token_id")?,
        "eos_token_id": meta_u64(content, path, "tokenizer.ggml.eos_token_id")?,
        "torch_dtype": "float32",
    });
    if let Some(head_dim) = meta_u64(content, path, &key("attention.key_length"))? {
        cfg["head_dim"] = json!(head_dim);
    }
    if let Some(scaling) = rope_scaling(content, path, arch)? {
        cfg["rope_scaling"] = scaling;
    }
    Ok(cfg)
}

/// HF `rope_scaling` from `{arch}.rope.scaling.*` (or the older `rope.scale_linear`).
fn rope_scaling(content: &Content, path: &Path, arch: &str) -> Result<Option<serde_json::Value>> {
    let key = |k: &str| format!("{arch}.rope.{k}");
    let factor = meta_f64(content, path, &key("scaling.factor"))?;
    let kind = match meta_str(content, &key("scaling.type")) {
        Some("none") => return Ok(None),
        Some(kind) => kind.to_string(),
        None => match meta_f64(content, path, &key("scale_linear"))? {
            Some(f) if f != 1.0 => return Ok(Some(json!({"type": "linear", "rope_type": "linear", "factor": f}))),
            _ if factor.is_some() => "linear".to_string(),
            _ => return Ok(None),
        },
    };
    let mut s = json!({"type": kind, "rope_type": kind});
    if let Some(f) = factor {
        s["factor"] = json!(f);
    }
    if let Some(n) = meta_u64(content, path, &key("scaling.original_context_length"))? {
        s["original_max_position_embeddings"] = json!(n);
    }
    if let Some(a) = meta_f64(content, path, &key("scaling.attn_factor"))? {
        s["attention_factor"] = json!(a);
    }
    Ok(Some(s))
}

pub(super) fn meta_str<'a>(content: &'a Content, key: &str) -> Option<&'a str> {
    match content.metadata.get(key) {
        Some(Value::String(s)) => Some(s.as_str()),
        _ => None,
    }
}

pub(super) fn meta_u64(content: &Content, path: &Path, key: &str) -> Result<Option<u64>> {
    let Some(v) = content.metadata.get(key) else {
        return Ok(None);
    };
    let n = match *v {
        Value::U8(x) => Some(x as u64),
        Value::U16(x) => Some(x as u64),
        Value::U32(x) => Some(x as u64),
        Value::U64(x) => Some(x),
        Value::I8(x) => u64::try_from(x).ok(),
        Value::I16(x) => u64::try_from(x).ok(),
        Value::I32(x) => u64::try_from(x).ok(),
        Value::I64(x) => u64::try_from(x).ok(),
        _ => None,
    };
    n.map(Some).ok_or_else(|| bad(path, &format!("GGUF metadata `{key}` is {v:?}, expected a non-negative integer")))
}

fn meta_f64(content: &Content, path: &Path, key: &str) -> Result<Option<f64>> {
    match content.metadata.get(key) {
        None => Ok(None),
        Some(Value::F32(x)) => Ok(Some(*x as f64)),
        Some(Value::F64(x)) => Ok(Some(*x)),
        Some(_) => meta_u64(content, path, key).map(|n| n.map(|n| n as f64)),
    }
}

pub(super) fn meta_req_u64(content: &Content, path: &Path, key: &str) -> Result<u64> {
    meta_u64(content, path, key)?.ok_or_else(|| bad(path, &format!("GGUF metadata lacks `{key}`")))
}

fn meta_req_f64(content: &Content, path: &Path, key: &str) -> Result<f64> {
    meta_f64(content, path, key)?.ok_or_else(|| bad(path, &format!("GGUF metadata lacks `{key}`")))
}
