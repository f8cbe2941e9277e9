//! GGUF export that llama.cpp (and candle's `quantized_llama`) can read: llama.cpp tensor names,
//! the architecture keys, the tokenizer vocabulary and merges, and llama's Q/K row permutation.
//!
//! The inverse of `engine::gguf::load_gguf` for `llama` and `qwen2`. Quantized GGML tensors are
//! written block for block as quantized (Q/K rows are permuted by moving whole rows of blocks, which
//! is exact because blocks never span rows); f32 tensors stay f32. The own integer formats have no
//! GGML type and are refused with a pointer to the safetensors export.

use super::quantize::{QuantData, QuantizedModel};
use crate::engine::fsutil::write_atomic_with;
use crate::engine::gguf::{hf_tensor_name, permute_block_rows, permute_qk_for_gguf, SUPPORTED_ARCHS};
use crate::engine::loader::LoadedModel;
use crate::engine::models::llama::LlamaConfig;
use crate::engine::models::ArchConfig;
use crate::engine::{Error, Result};
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{DType, Device};
use std::borrow::Cow;
use std::path::Path;

/// llama.cpp's block-level tensor names; `hf_tensor_name` says which Hugging Face name each maps to.
const GGUF_BLOCK_PARTS: &[&str] =
    &["attn_norm", "ffn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"];

/// llama.cpp's name of a Hugging Face llama/qwen2 tensor name (the inverse of `hf_tensor_name`).
pub fn gguf_tensor_name(hf: &str) -> Option<String> {
    let mut candidates = vec!["token_embd.weight".to_string(), "output_norm.weight".into(), "output.weight".into()];
    if let Some(rest) = hf.strip_prefix("model.layers.") {
        let layer = rest.split('.').next()?;
        let kind = hf.rsplit('.').next()?;
        candidates.extend(GGUF_BLOCK_PARTS.iter().map(|p| format!("blk.{layer}.{p}.{kind}")));
    }
    candidates.into_iter().find(|c| hf_tensor_name(c).as_deref() == Some(hf))
}

/// Writes `q` (quantized from `model`) as a GGUF file at `path`, atomically.
/// True when the model's family can be written as GGUF (llama.cpp's llama and qwen2).
pub fn supports(model: &LoadedModel) -> bool {
    matches!(model.config, ArchConfig::Llama(_)) && SUPPORTED_ARCHS.contains(&model.config.model_type())
}

pub fn export_gguf(model: &LoadedModel, q: &QuantizedModel, path: &Path) -> Result<()> {
    let arch = model.config.model_type().to_string();
    let ArchConfig::Llama(cfg) = &model.config else {
        return Err(unsupported(&arch));
    };
    if !SUPPORTED_ARCHS.contains(&arch.as_str()) {
        return Err(unsupported(&arch));
    }
    let mut tensors = Vec::with_capacity(q.tensors.len());
    // IQ4_NL tensors go through candle's writer as Q4_0 (the same 18-byte blocks of 32) and get
    // their own type id (20) in the header afterwards.
    let mut iq4nl = std::collections::HashSet::new();
    for (name, t) in &q.tensors {
        let gguf = gguf_tensor_name(name).ok_or_else(|| {
            Error::Invalid(format!("tensor `{name}` has no llama.cpp name; GGUF export maps llama/qwen2 tensors only"))
        })?;
        let heads = match (arch.as_str(), name.contains(".self_attn.q_proj."), name.contains(".self_attn.k_proj.")) {
            ("llama", true, _) => Some(cfg.num_attention_heads),
            ("llama", _, true) => Some(cfg.kv_heads()),
            _ => None,
        };
        let qt = match &t.data {
            QuantData::Float(w) => {
                let w = match heads {
                    Some(h) => permute_qk_for_gguf(w, h)?,
                    None => w.clone(),
                };
                QTensor::quantize(&w.to_dtype(DType::F32)?, GgmlDType::F32)?
            }
            QuantData::Ggml(g) => match heads {
                Some(h) => permute_block_rows(g, h, true)?,
                None => QTensor::new(QStorage::from_data(g.data()?, &Device::Cpu, g.dtype())?, g.shape().clone())?,
            },
            QuantData::Iq4Nl(b) => {
                iq4nl.insert(gguf.clone());
                let storage = QStorage::from_data(Cow::Borrowed(&b.data), &Device::Cpu, GgmlDType::Q4_0)?;
                let g = QTensor::new(storage, (b.rows, b.cols))?;
                match heads {
                    Some(h) => permute_block_rows(&g, h, true)?,
                    None => g,
                }
            }
            QuantData::Int(_) => {
                return Err(Error::Invalid(format!(
                    "tensor `{name}` is in the own format {}, which GGUF cannot hold; export it with \
                     --out FILE.safetensors, or pick a GGML format (q8_0, q4_k, …) for GGUF",
                    t.format()
                )))
            }
        };
        tensors.push((gguf, qt));
    }
    let metadata = metadata(model, cfg, &arch)?;
    let md: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    if iq4nl.is_empty() {
        return write_atomic_with(path, |f| {
            gguf_file::write(f, &md, &ts).map_err(|e| std::io::Error::other(e.to_string()))
        });
    }
    // The type ids are rewritten in memory (the atomic writer's file is write-only).
    let mut buf = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut buf, &md, &ts)?;
    let mut bytes = buf.into_inner();
    retype(&mut bytes, &iq4nl)?;
    write_atomic_with(path, |f| std::io::Write::write_all(f, &bytes))
}

/// Writes IQ4_NL's type id over the Q4_0 one of the tensors named in `iq4nl`.
fn retype(bytes: &mut [u8], iq4nl: &std::collections::HashSet<String>) -> Result<()> {
    let entries = crate::engine::gguf::scan::scan(std::io::Cursor::new(&*bytes), bytes.len() as u64)
        .map_err(|e| Error::Invalid(format!("GGUF export: the written header: {e}")))?;
    let mut done = 0;
    for e in entries.iter().filter(|e| iq4nl.contains(&e.name)) {
        let at = e.type_pos as usize;
        bytes[at..at + 4].copy_from_slice(&super::iq4nl::GGML_TYPE_ID.to_le_bytes());
        done += 1;
    }
    if done != iq4nl.len() {
        return Err(Error::Invalid(format!(
            "GGUF export: {} IQ4_NL tensor(s) not found in the written header",
            iq4nl.len() - done
        )));
    }
    Ok(())
}

fn unsupported(arch: &str) -> Error {
    Error::UnsupportedArch {
        model_type: arch.to_string(),
        path: "GGUF export".into(),
        supported: format!("{} (use --out FILE.safetensors for other families)", SUPPORTED_ARCHS.join(", ")),
    }
}

/// The architecture keys llama.cpp reads, plus the tokenizer.
fn metadata(model: &LoadedModel, c: &LlamaConfig, arch: &str) -> Result<Vec<(String, Value)>> {
    let u32v = |n: usize| Value::U32(n as u32);
    let key = |k: &str| format!("{arch}.{k}");
    let mut md = vec![
        ("general.architecture".to_string(), Value::String(arch.into())),
        ("general.name".into(), Value::String(model.info.name.clone())),
        ("general.quantization_version".into(), Value::U32(2)),
        ("general.alignment".into(), Value::U32(32)),
        (key("context_length"), u32v(c.max_position_embeddings)),
        (key("embedding_length"), u32v(c.hidden_size)),
        (key("block_count"), u32v(c.num_hidden_layers)),
        (key("feed_forward_length"), u32v(c.intermediate_size)),
        (key("attention.head_count"), u32v(c.num_attention_heads)),
        (key("attention.head_count_kv"), u32v(c.kv_heads())),
        (key("attention.key_length"), u32v(c.head_dim())),
        (key("attention.value_length"), u32v(c.head_dim())),
        (key("attention.layer_norm_rms_epsilon"), Value::F32(c.rms_norm_eps as f32)),
        (key("rope.freq_base"), Value::F32(c.rope_theta() as f32)),
        (key("rope.dimension_count"), u32v(c.head_dim())),
        (key("vocab_size"), u32v(c.vocab_size)),
    ];
    let scaling = c
        .rope_scaling
        .as_ref()
        .or(c.rope_parameters.as_ref())
        .filter(|r| r.rope_type.as_deref().is_some_and(|t| t != "default"));
    if let Some(r) = scaling {
        let kind = r.rope_type.clone().unwrap_or_default();
        if kind != "linear" {
            return Err(Error::Invalid(format!(
                "rope scaling `{kind}` is not exported to GGUF (only linear); export --out FILE.safetensors instead"
            )));
        }
        md.push((key("rope.scaling.type"), Value::String(kind)));
        md.push((key("rope.scaling.factor"), Value::F32(r.factor.unwrap_or(1.0) as f32)));
    }
    for (k, id) in
        ["bos_token_id", "eos_token_id"].iter().zip(["tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"])
    {
        if let Some(v) = model.config_json.get(k).and_then(|v| v.as_u64().or_else(|| v.get(0)?.as_u64())) {
            md.push((id.to_string(), Value::U32(v as u32)));
        }
    }
    md.extend(super::gguf_vocab::tokenizer_metadata(model.tokenizer()?, c.vocab_size)?);
    Ok(md)
}
