//! Student derivation: a smaller model of the teacher's family, initialised DistilBERT-style.
//!
//! The student keeps the teacher's vocabulary and tokenizer. Its layer `j` of `n` copies teacher
//! layer `⌊j·L/n⌋` (for n = L/2: layers 0, 2, 4, … as in DistilBERT) when every layer shape matches
//! (same hidden size, heads, kv heads and intermediate size); embeddings, final norm and head are
//! copied when the hidden size matches. Everything else is drawn from a seeded N(0, 0.02²).

use crate::engine::fsutil::write_atomic;
use crate::engine::loader::{build_network, Dims, LoadOptions, LoadedModel};
use crate::engine::models::init::InitSource;
use crate::engine::models::weights::TensorSource;
use crate::engine::models::ArchConfig;
use crate::engine::{Error, Result};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The student's shape; `None` keeps the teacher's value (intermediate scales with hidden). The
/// one shape type: a recipe's `[student.derive]`, `derive-student`'s flags, the workbench's check.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudentShape {
    pub layers: usize,
    pub hidden: Option<usize>,
    pub heads: Option<usize>,
    pub kv_heads: Option<usize>,
    pub intermediate: Option<usize>,
}

/// A derived student, ready to save or train.
pub struct DerivedStudent {
    pub config_json: Value,
    pub config: ArchConfig,
    /// Parameters by Hugging Face name.
    pub tensors: BTreeMap<String, Tensor>,
    /// For each student layer, the teacher layer it was copied from (empty when drawn randomly).
    pub copied_layers: Vec<usize>,
    pub embeddings_copied: bool,
    pub parameters: u64,
}

/// What `derive-student` reports.
#[derive(Debug, Serialize)]
pub struct DeriveReport {
    pub out: PathBuf,
    pub parameters: u64,
    pub teacher_parameters: u64,
    pub layers: usize,
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub intermediate: usize,
    pub copied_layers: Vec<usize>,
    pub embeddings_copied: bool,
}

/// Teacher layer copied into each of `n` student layers out of `l`: evenly spaced, starting at 0.
pub fn layer_map(l: usize, n: usize) -> Vec<usize> {
    (0..n).map(|j| j * l / n).collect()
}

/// The student's config.json: the teacher's with the shape keys of its family replaced.
pub fn student_config(teacher_json: &Value, teacher: &ArchConfig, shape: &StudentShape) -> Result<Value> {
    if shape.layers == 0 {
        return Err(Error::Invalid("a student needs at least one layer (--layers N)".into()));
    }
    if shape.layers > teacher.layers() {
        return Err(Error::Invalid(format!(
            "a student of {} layers is larger than its {}-layer teacher; derive at most {} layers",
            shape.layers,
            teacher.layers(),
            teacher.layers()
        )));
    }
    for (flag, value) in [("--hidden", shape.hidden), ("--intermediate", shape.intermediate)] {
        if value == Some(0) {
            return Err(Error::Invalid(format!("{flag} 0: a student needs a positive size")));
        }
    }
    let hidden = shape.hidden.unwrap_or(teacher.hidden());
    let heads = shape.heads.unwrap_or(teacher.heads());
    let kv_heads = shape.kv_heads.unwrap_or_else(|| {
        if shape.heads.is_some() {
            heads.min(teacher.kv_heads())
        } else {
            teacher.kv_heads()
        }
    });
    let intermediate = shape.intermediate.unwrap_or_else(|| {
        if hidden == teacher.hidden() {
            teacher.intermediate()
        } else {
            let scaled = teacher.intermediate() as f64 * hidden as f64 / teacher.hidden() as f64;
            ((scaled / 8.0).round() as usize).max(1) * 8
        }
    });
    if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 {
        return Err(Error::Invalid(format!("heads ({heads}) must be a positive multiple of kv heads ({kv_heads})")));
    }
    let keeps_head_dim = matches!(teacher, ArchConfig::Llama(c) if c.head_dim.is_some() && c.model_type == "qwen3");
    if hidden % heads != 0 && !keeps_head_dim {
        return Err(Error::Invalid(format!("hidden size {hidden} is not divisible by {heads} heads")));
    }
    let mut c = teacher_json.clone();
    let obj = c.as_object_mut().ok_or_else(|| Error::Invalid("teacher config.json is not an object".into()))?;
    let keys: [&str; 5] = match teacher {
        ArchConfig::Llama(_) => {
            ["num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "num_key_value_heads"]
        }
        ArchConfig::Gpt2(_) => ["n_layer", "n_embd", "n_head", "n_inner", ""],
        ArchConfig::Encoder(e) => match e.kind {
            crate::engine::models::encoder::EncoderKind::Bert => {
                ["num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", ""]
            }
            crate::engine::models::encoder::EncoderKind::DistilBert => ["n_layers", "dim", "n_heads", "hidden_dim", ""],
        },
    };
    if !matches!(teacher, ArchConfig::Llama(_)) && kv_heads != heads {
        return Err(Error::Invalid(format!(
            "{} has no grouped-query attention: kv heads must equal heads",
            teacher.model_type()
        )));
    }
    for (key, value) in keys.iter().zip([shape.layers, hidden, heads, intermediate, kv_heads]) {
        if !key.is_empty() {
            obj.insert((*key).into(), json!(value));
        }
    }
    if let ArchConfig::Llama(_) = teacher {
        if obj.contains_key("head_dim") && !keeps_head_dim {
            obj.insert("head_dim".into(), json!(hidden / heads));
        }
        // transformers 5 checks that per-layer lists match the layer count.
        if let Some(types) = obj.get("layer_types").and_then(|v| v.as_array()).cloned() {
            let first = types.first().cloned().unwrap_or(json!("full_attention"));
            obj.insert("layer_types".into(), Value::Array(vec![first; shape.layers]));
        }
        if obj.contains_key("max_window_layers") {
            obj.insert("max_window_layers".into(), json!(shape.layers));
        }
    }
    Ok(c)
}

/// Derives a student from a loaded teacher.
pub fn derive_student(teacher: &LoadedModel, shape: &StudentShape, seed: u64) -> Result<DerivedStudent> {
    let config_json = student_config(&teacher.config_json, &teacher.config, shape)?;
    let path = teacher.resolved.path().join("config.json");
    let student = ArchConfig::from_json(&config_json, &path)?;
    let t = &teacher.config;
    let same_width = student.hidden() == t.hidden() && student.vocab_size() == t.vocab_size();
    let same_layers = same_width
        && student.heads() == t.heads()
        && student.kv_heads() == t.kv_heads()
        && student.head_dim() == t.head_dim()
        && student.intermediate() == t.intermediate();
    let map = layer_map(t.layers(), student.layers());
    let std = teacher.config_json.get("initializer_range").and_then(|v| v.as_f64()).unwrap_or(0.02);
    let mut init = InitSource::new(seed, std);
    for (name, tensor) in &teacher.dense_params()? {
        match split_layer(name) {
            Some((prefix, idx, rest)) if same_layers => {
                for (j, &src) in map.iter().enumerate() {
                    if src == idx {
                        init.overlay.insert(format!("{prefix}{j}{rest}"), tensor.detach());
                    }
                }
            }
            Some(_) => {}
            None if same_width => {
                init.overlay.insert(name.clone(), tensor.detach());
            }
            None => {}
        }
    }
    let built = build_network(&config_json, &path, TensorSource::Init(init), &LoadOptions::default())?;
    let parameters = built.params.values().map(|t| t.elem_count() as u64).sum();
    Ok(DerivedStudent {
        config_json,
        config: built.config,
        tensors: built.params,
        copied_layers: if same_layers { map } else { Vec::new() },
        embeddings_copied: same_width,
        parameters,
    })
}

/// Splits `model.layers.3.mlp.up_proj.weight` into (`model.layers.`, 3, `.mlp.up_proj.weight`);
/// also `transformer.h.N.`, `encoder.layer.N.`, `transformer.layer.N.`.
fn split_layer(name: &str) -> Option<(String, usize, String)> {
    let parts: Vec<&str> = name.split('.').collect();
    let i = parts.iter().position(|p| matches!(*p, "layers" | "h" | "layer"))?;
    let idx: usize = parts.get(i + 1)?.parse().ok()?;
    Some((format!("{}.", parts[..=i].join(".")), idx, format!(".{}", parts[i + 2..].join("."))))
}

/// Writes `tensors` as a `model.safetensors` that transformers loads (metadata `format = pt`).
pub fn save_safetensors(path: &Path, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
    let data: BTreeMap<String, Tensor> =
        tensors.iter().map(|(k, v)| Ok((k.clone(), v.detach().contiguous()?))).collect::<Result<_>>()?;
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    crate::engine::fsutil::write_safetensors(path, &data, Some(meta))
}

/// Where a saved model's tokenizer comes from.
pub enum TokenizerOut<'a> {
    /// Copy this tokenizer.json byte for byte (and its sibling tokenizer/generation configs).
    File(&'a Path),
    /// Serialise an in-memory tokenizer (e.g. one built from a GGUF vocabulary, or just trained).
    Built(&'a tokenizers::Tokenizer),
}

impl<'a> TokenizerOut<'a> {
    /// The tokenizer file a model came with, else the tokenizer in memory.
    pub fn of(file: Option<&'a Path>, tokenizer: &'a tokenizers::Tokenizer) -> Self {
        file.map_or(Self::Built(tokenizer), Self::File)
    }
}

/// Saves a Hugging Face folder: config.json, model.safetensors and tokenizer.json, each atomically.
pub fn save_hf_folder(
    dir: &Path,
    config_json: &Value,
    tensors: &BTreeMap<String, Tensor>,
    tokenizer: TokenizerOut,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    save_safetensors(&dir.join("model.safetensors"), tensors)?;
    let text = serde_json::to_string_pretty(config_json).map_err(|e| Error::Invalid(e.to_string()))?;
    write_atomic(&dir.join("config.json"), text.as_bytes())?;
    match tokenizer {
        TokenizerOut::File(tok) => {
            copy_file(tok, &dir.join("tokenizer.json"))?;
            if let Some(src) = tok.parent() {
                for extra in ["tokenizer_config.json", "special_tokens_map.json", "generation_config.json"] {
                    if src.join(extra).is_file() {
                        copy_file(&src.join(extra), &dir.join(extra))?;
                    }
                }
            }
        }
        TokenizerOut::Built(tok) => {
            let text = tok.to_string(false).map_err(|e| Error::Invalid(e.to_string()))?;
            write_atomic(&dir.join("tokenizer.json"), text.as_bytes())?;
        }
    }
    Ok(())
}

/// The tokenizer of a loaded model, as something [`save_hf_folder`] can write.
pub fn tokenizer_of(model: &LoadedModel) -> Result<TokenizerOut<'_>> {
    Ok(match &model.resolved.tokenizer {
        Some(path) => TokenizerOut::File(path),
        None => TokenizerOut::Built(model.tokenizer()?),
    })
}

fn copy_file(from: &Path, to: &Path) -> Result<()> {
    let bytes = std::fs::read(from).map_err(|e| Error::io(format!("reading {}", from.display()), e))?;
    write_atomic(to, &bytes)
}

/// Derives and saves a student; the `derive-student` command.
pub fn derive_and_save(teacher: &LoadedModel, shape: &StudentShape, seed: u64, out: &Path) -> Result<DeriveReport> {
    let inputs = teacher.resolved.input_files();
    let inputs: Vec<&Path> = inputs.iter().map(|p| p.as_path()).collect();
    crate::engine::fsutil::refuse_overwriting_input(out, &inputs, "--out")?;
    let s = derive_student(teacher, shape, seed)?;
    save_hf_folder(out, &s.config_json, &s.tensors, tokenizer_of(teacher)?)?;
    Ok(DeriveReport {
        out: out.to_path_buf(),
        parameters: s.parameters,
        teacher_parameters: teacher.parameter_count(),
        layers: s.config.layers(),
        hidden: s.config.hidden(),
        heads: s.config.heads(),
        kv_heads: s.config.kv_heads(),
        intermediate: s.config.intermediate(),
        copied_layers: s.copied_layers,
        embeddings_copied: s.embeddings_copied,
    })
}
/// A student derived in memory, loaded like a model from disk (the teacher's tokenizer).
pub fn derive_loaded(teacher: &LoadedModel, shape: &StudentShape, seed: u64) -> Result<LoadedModel> {
    let d = derive_student(teacher, shape, seed)?;
    let layers = d.config.layers();
    in_memory(teacher, d.config_json, d.tensors, &format!("derived, {layers} layers"))
}

/// A student of `teacher` built from `config_json` and `tensors` in memory, loaded like a model
/// from disk (the teacher's tokenizer); its name says `how` it was made.
pub fn in_memory(
    teacher: &LoadedModel,
    config_json: Value,
    tensors: BTreeMap<String, Tensor>,
    how: &str,
) -> Result<LoadedModel> {
    let path = teacher.resolved.path().join("config.json");
    let parameters = tensors.values().map(|t| t.elem_count() as u64).sum();
    let built = build_network(
        &config_json,
        &path,
        TensorSource::Memory(tensors.into_iter().collect()),
        &LoadOptions::default(),
    )?;
    let mut info = teacher.info.clone();
    info.name = format!("{} ({how})", teacher.info.name);
    info.parameters = parameters;
    info.dims = Dims::of(&built.config);
    info.bytes = parameters * 4;
    info.dtype = "F32 (not saved yet)".into();
    info.hub = Default::default();
    Ok(LoadedModel {
        resolved: teacher.resolved.clone(),
        config: built.config,
        config_json,
        network: built.network,
        tokenizer: teacher.tokenizer.clone(),
        params: built.params,
        vars: built.vars,
        quantized: Default::default(),
        notes: Vec::new(),
        info,
    })
}
