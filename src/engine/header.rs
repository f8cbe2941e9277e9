//! A model's facts without its weights — config, tensor headers, tokenizer — for the pair check
//! and the memory estimate, which must not load a 7 GB teacher to say it does not fit.

use crate::engine::derive::{student_config, StudentShape};
use crate::engine::gguf::{self, read_gguf_header};
use crate::engine::kernels::qgemm;
use crate::engine::loader::{build_network, gguf_dtypes, model_info, summarize_counts, LoadOptions, ModelInfo};
use crate::engine::models::weights::TensorSource;
use crate::engine::models::ArchConfig;
use crate::engine::source::{ModelFiles, ResolvedModel};
use crate::engine::tokenizer::load_tokenizer;
use crate::engine::{Error, Result};
use candle_core::quantized::GgmlDType;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use tokenizers::Tokenizer;

/// What a model is, read from its config and tensor headers.
pub struct ModelHeader {
    pub resolved: ResolvedModel,
    pub config: ArchConfig,
    pub config_json: serde_json::Value,
    pub tokenizer: Option<Tokenizer>,
    pub info: ModelInfo,
    /// Bytes of the weights loaded frozen in f32 (parameters × 4).
    pub f32_bytes: u64,
    /// Bytes of the weights of a GGUF kept in its block formats (matrices as stored, the rest
    /// in f32); `None` for safetensors.
    pub block_bytes: Option<u64>,
    /// As a teacher, a GGUF stays in its block formats (the default; `teacher_precision`
    /// may say otherwise).
    pub keep_quantized: bool,
}

impl ModelHeader {
    /// Bytes the weights take as a frozen model loaded with `keep_quantized` (a GGUF teacher's
    /// default) or not.
    pub fn resident_bytes(&self, keep_quantized: bool) -> u64 {
        match (keep_quantized, self.block_bytes) {
            (true, Some(b)) => b,
            _ => self.f32_bytes,
        }
    }
}

/// Reads the config, the tensor headers and the tokenizer of a resolved model; no tensor data.
pub fn read_header(resolved: &ResolvedModel) -> Result<ModelHeader> {
    let (config_json, config_path, tokenizer, parameters, dtype, block_bytes) = match &resolved.files {
        ModelFiles::Hf { config, weights, .. } => {
            let text =
                std::fs::read_to_string(config).map_err(|e| Error::io(format!("reading {}", config.display()), e))?;
            let json: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| Error::Config { path: config.clone(), detail: e.to_string() })?;
            let tied = ArchConfig::from_json(&json, config)?.tied_embeddings();
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            let mut parameters = 0u64;
            for file in weights {
                for (name, dtype, shape) in safetensors_header(file)? {
                    // A tied checkpoint may still store the head; the network uses the table.
                    if tied && name == "lm_head.weight" {
                        continue;
                    }
                    *counts.entry(dtype).or_default() += 1;
                    parameters += shape.iter().product::<usize>() as u64;
                }
            }
            let tokenizer = resolved.tokenizer.as_deref().map(load_tokenizer).transpose()?;
            (json, config.clone(), tokenizer, parameters, summarize_counts(counts), None)
        }
        ModelFiles::Gguf { file } => {
            let h = read_gguf_header(file)?;
            let mut parameters = 0u64;
            let mut blocks = 0u64;
            for (name, dtype, shape) in &h.tensors {
                let n = shape.iter().product::<usize>() as u64;
                parameters += n;
                // IQ4_NL reads as Q4_0 here; the loader keeps it as the Q8_0 it converts to.
                let dtype = if h.iq4nl.contains(name) { &GgmlDType::Q8_0 } else { dtype };
                blocks += if shape.len() == 2 && *dtype != GgmlDType::F32 && qgemm::multiplies(*dtype).is_ok() {
                    n / dtype.block_size() as u64 * dtype.type_size() as u64
                } else {
                    4 * n
                };
            }
            let type_name =
                |n: &String, d: GgmlDType| if h.iq4nl.contains(n) { "iq4_nl" } else { gguf::ggml_dtype_name(d) };
            let types: Vec<(String, String)> =
                h.tensors.iter().map(|(n, d, _)| (n.clone(), type_name(n, *d).to_string())).collect();
            let tokenizer = match (&resolved.tokenizer, h.tokenizer) {
                (Some(path), _) => Some(load_tokenizer(path)?),
                (None, t) => t,
            };
            (h.config, file.clone(), tokenizer, parameters, gguf_dtypes(&types), Some(blocks))
        }
    };
    let config = ArchConfig::from_json(&config_json, &config_path)?;
    let info = model_info(resolved, &config_json, &config, parameters, dtype, tokenizer.is_some());
    Ok(ModelHeader {
        resolved: resolved.clone(),
        config,
        config_json,
        tokenizer,
        info,
        f32_bytes: 4 * parameters,
        block_bytes,
        keep_quantized: true,
    })
}

/// The header of the student `shape` derives from `teacher` (nothing is initialised).
pub fn derived_header(teacher: &ModelHeader, shape: &StudentShape) -> Result<ModelHeader> {
    let config_json = student_config(&teacher.config_json, &teacher.config, shape)?;
    config_header(teacher, config_json)
}

/// The header of a student built from `config_json` that shares `teacher`'s files and tokenizer.
pub fn config_header(teacher: &ModelHeader, config_json: serde_json::Value) -> Result<ModelHeader> {
    let path = teacher.resolved.path().join("config.json");
    let config = ArchConfig::from_json(&config_json, &path)?;
    let parameters = parameter_count(&config_json, &path)?;
    let mut info = model_info(&teacher.resolved, &config_json, &config, parameters, "F32 (not saved yet)".into(), true);
    info.bytes = 4 * parameters;
    info.hub = Default::default();
    info.tokenizer = teacher.info.tokenizer.clone();
    Ok(ModelHeader {
        resolved: teacher.resolved.clone(),
        config,
        config_json,
        tokenizer: teacher.tokenizer.clone(),
        info,
        f32_bytes: 4 * parameters,
        block_bytes: None,
        keep_quantized: false,
    })
}

/// Parameters of the network `config_json` describes, counted without allocating them.
pub fn parameter_count(config_json: &serde_json::Value, path: &Path) -> Result<u64> {
    let built = build_network(config_json, path, TensorSource::Shapes, &LoadOptions::default())?;
    Ok(built.params.values().map(|t| t.elem_count() as u64).sum())
}

/// (name, dtype, shape) of every tensor in a safetensors file's header.
fn safetensors_header(path: &Path) -> Result<Vec<(String, String, Vec<usize>)>> {
    let corrupt = |detail: String| Error::CorruptWeights { path: path.to_path_buf(), detail };
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let len = f.metadata().map_err(|e| Error::io(format!("reading {}", path.display()), e))?.len();
    let mut n = [0u8; 8];
    f.read_exact(&mut n).map_err(|_| corrupt(format!("only {len} bytes")))?;
    let n = u64::from_le_bytes(n);
    if n > len.saturating_sub(8) || n > 100 << 20 {
        return Err(corrupt(format!("the header claims {n} bytes in a file of {len}")));
    }
    let mut text = vec![0u8; n as usize];
    f.read_exact(&mut text).map_err(|e| corrupt(e.to_string()))?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&text).map_err(|e| corrupt(format!("header: {e}")))?;
    let mut out = Vec::with_capacity(header.len());
    for (name, v) in header {
        if name == "__metadata__" {
            continue;
        }
        let dtype = v.get("dtype").and_then(|d| d.as_str()).ok_or_else(|| corrupt(format!("`{name}` has no dtype")))?;
        let shape: Vec<usize> = v
            .get("shape")
            .and_then(|s| s.as_array())
            .and_then(|s| s.iter().map(|d| d.as_u64().map(|d| d as usize)).collect())
            .ok_or_else(|| corrupt(format!("`{name}` has no shape")))?;
        out.push((name, dtype.to_string(), shape));
    }
    Ok(out)
}
