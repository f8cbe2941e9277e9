//! Loading a resolved model: config, weights (safetensors or GGUF), tokenizer, and the facts
//! `inspect` reports. Teachers load frozen; students load with a `Var` per parameter.

use crate::engine::gguf;
use crate::engine::models::weights::{TensorSource, WeightStore};
use crate::engine::models::{ArchConfig, Network};
use crate::engine::source::{HubRef, ModelFiles, ResolvedModel};
use crate::engine::tokenizer::load_tokenizer;
use crate::engine::{Error, Result};
use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor, Var};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokenizers::Tokenizer;

/// How to load a model.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Wrap every parameter in a `Var` (a student); otherwise frozen tensors (a teacher).
    pub trainable: bool,
    pub device: Device,
    /// A frozen GGUF model keeps its matrices in the file's block formats (see
    /// [`gguf::GgufOptions::keep_quantized`]); ignored for trainable models and safetensors.
    pub keep_quantized: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { trainable: false, device: Device::Cpu, keep_quantized: false }
    }
}

/// What `distill-tui inspect` prints.
#[derive(Clone, Debug, Serialize)]
pub struct ModelInfo {
    pub name: String,
    pub architecture: String,
    pub model_type: String,
    /// `causal-lm`, `classifier` or `encoder`.
    pub task: String,
    pub parameters: u64,
    #[serde(flatten)]
    pub dims: Dims,
    /// Stored dtypes with tensor counts, e.g. `F32` or `BF16` or `Q4_1 ×210, F32 ×61`.
    pub dtype: String,
    /// Bytes of the weight files on disk.
    pub bytes: u64,
    pub format: String,
    pub source_path: String,
    #[serde(flatten)]
    pub hub: HubRef,
    pub tokenizer: Option<String>,
    pub labels: Vec<String>,
}

/// An architecture's dimensions (`inspect` prints them beside the model's name and files).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Dims {
    pub layers: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
    pub context_length: usize,
    pub tied_embeddings: bool,
}

impl Dims {
    /// The dimensions `config` describes.
    pub fn of(c: &ArchConfig) -> Self {
        Self {
            layers: c.layers(),
            hidden: c.hidden(),
            intermediate: c.intermediate(),
            heads: c.heads(),
            kv_heads: c.kv_heads(),
            head_dim: c.head_dim(),
            vocab: c.vocab_size(),
            context_length: c.context_length(),
            tied_embeddings: c.tied_embeddings(),
        }
    }
}

/// A model ready to run (and, when trainable, to train).
pub struct LoadedModel {
    pub resolved: ResolvedModel,
    pub config: ArchConfig,
    /// The config.json (for GGUF: the one derived from its metadata).
    pub config_json: serde_json::Value,
    pub network: Network,
    pub tokenizer: Option<Tokenizer>,
    /// Every parameter the network uses, by Hugging Face name (tied weights once).
    pub params: BTreeMap<String, Tensor>,
    /// The same parameters as `Var`s when loaded trainable.
    pub vars: BTreeMap<String, Var>,
    /// Matrices kept in a GGML block format (a GGUF loaded with `keep_quantized`), by HF name;
    /// not in `params`.
    pub quantized: BTreeMap<String, Arc<QTensor>>,
    /// What loading had to change (a block type dequantized because it cannot be multiplied).
    pub notes: Vec<String>,
    pub info: ModelInfo,
}

impl LoadedModel {
    pub fn parameter_count(&self) -> u64 {
        let quantized: u64 = self.quantized.values().map(|q| q.shape().elem_count() as u64).sum();
        self.params.values().map(|t| t.elem_count() as u64).sum::<u64>() + quantized
    }

    /// Bytes the weights hold in memory (f32 parameters, blocks of the quantized ones).
    pub fn resident_weight_bytes(&self) -> u64 {
        let dense: u64 = self.params.values().map(|t| (t.elem_count() * t.dtype().size_in_bytes()) as u64).sum();
        dense + self.quantized.values().map(|q| q.storage_size_in_bytes() as u64).sum::<u64>()
    }

    /// The same network with every quantized matrix multiplied dequantized by candle, in f32 (the
    /// weights are shared, not copied): the f32 reference of a model kept in its block formats.
    pub fn dequantized_reference(&self) -> Result<Network> {
        let dense: HashMap<String, Tensor> = self.params.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let quantized: HashMap<String, Arc<QTensor>> =
            self.quantized.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let store = WeightStore::new(TensorSource::Memory(dense), false, &Device::Cpu)
            .with_quantized(quantized)
            .with_dequantized_reference();
        Network::build(&self.config, &store.root(), self.resolved.path())
    }

    /// Every parameter as an f32 tensor, the quantized ones dequantized (derivation copies them).
    pub fn dense_params(&self) -> Result<BTreeMap<String, Tensor>> {
        let mut all = self.params.clone();
        for (name, q) in &self.quantized {
            all.insert(name.clone(), q.dequantize(&Device::Cpu)?);
        }
        Ok(all)
    }

    /// The tokenizer, or an error that says how to get one.
    pub fn tokenizer(&self) -> Result<&Tokenizer> {
        self.tokenizer.as_ref().ok_or_else(|| Error::MissingTokenizer {
            model: self.info.name.clone(),
            expected: format!("{}/tokenizer.json", self.resolved.path().display()),
        })
    }
}

/// Loads a resolved model.
pub fn load_model(resolved: &ResolvedModel, opts: &LoadOptions) -> Result<LoadedModel> {
    let (mut quantized, mut notes) = (HashMap::new(), Vec::new());
    let (config_json, config_path, source, gguf_tok, format) = match &resolved.files {
        ModelFiles::Hf { config, weights, .. } => {
            let text =
                std::fs::read_to_string(config).map_err(|e| Error::io(format!("reading {}", config.display()), e))?;
            let json: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| Error::Config { path: config.clone(), detail: e.to_string() })?;
            (json, config.clone(), TensorSource::open(weights)?, None, "safetensors".to_string())
        }
        ModelFiles::Gguf { file } => {
            let keep_quantized = opts.keep_quantized && !opts.trainable;
            let g = gguf::load_gguf_with(file, &opts.device, gguf::GgufOptions { keep_quantized })?;
            quantized = g.quantized;
            notes = g.notes;
            (g.config, file.clone(), TensorSource::Memory(g.tensors), g.tokenizer, gguf_dtypes(&g.tensor_types))
        }
    };
    let stored_dtype = match &resolved.files {
        ModelFiles::Gguf { .. } => format,
        ModelFiles::Hf { .. } => dtype_summary(&source),
    };
    let config = ArchConfig::from_json(&config_json, &config_path)?;
    let store = WeightStore::new(source, opts.trainable, &opts.device).with_quantized(quantized.clone());
    let network = Network::build(&config, &store.root(), &config_path)?;
    let (params, vars) = store.into_parts();
    let quantized: BTreeMap<String, Arc<QTensor>> = quantized.into_iter().collect();
    let tokenizer = match (&resolved.tokenizer, gguf_tok) {
        (Some(path), _) => Some(load_tokenizer(path)?),
        (None, Some(t)) => Some(t),
        (None, None) => None,
    };
    let parameters = params.values().map(|t| t.elem_count() as u64).sum::<u64>()
        + quantized.values().map(|q| q.shape().elem_count() as u64).sum::<u64>();
    let info = model_info(resolved, &config_json, &config, parameters, stored_dtype, tokenizer.is_some());
    Ok(LoadedModel {
        resolved: resolved.clone(),
        config,
        config_json,
        network,
        tokenizer,
        params,
        vars,
        quantized,
        notes,
        info,
    })
}

/// What `inspect` reports of a model, from its config and what its weights hold.
pub(crate) fn model_info(
    resolved: &ResolvedModel,
    config_json: &serde_json::Value,
    config: &ArchConfig,
    parameters: u64,
    stored_dtype: String,
    has_tokenizer: bool,
) -> ModelInfo {
    let task = if config.is_causal_lm() {
        "causal-lm"
    } else if config.labels().is_empty() {
        "encoder"
    } else {
        "classifier"
    };
    let gguf = matches!(resolved.files, ModelFiles::Gguf { .. });
    ModelInfo {
        name: resolved.display_name(),
        architecture: config_json
            .get("architectures")
            .and_then(|a| a.get(0))
            .and_then(|a| a.as_str())
            .unwrap_or(config.model_type())
            .to_string(),
        model_type: config.model_type().into(),
        task: task.into(),
        parameters,
        dims: Dims::of(config),
        dtype: stored_dtype,
        bytes: resolved.weight_bytes(),
        format: if gguf { "gguf".into() } else { "safetensors".into() },
        source_path: resolved.path().display().to_string(),
        hub: resolved.hub.clone(),
        tokenizer: resolved
            .tokenizer
            .as_ref()
            .map(|p| p.display().to_string())
            .or_else(|| has_tokenizer.then(|| "built from the GGUF vocabulary".to_string())),
        labels: config.labels().to_vec(),
    }
}

/// A network built from a config and a tensor source, with the parameters it consumed.
pub struct Built {
    pub config: ArchConfig,
    pub network: Network,
    pub params: BTreeMap<String, Tensor>,
    pub vars: BTreeMap<String, Var>,
}

impl Built {
    /// The trainable parameters' current values, as saved.
    pub fn weights(&self) -> BTreeMap<String, Tensor> {
        var_values(&self.vars)
    }
}

/// The current values of `vars`, by name.
pub fn var_values(vars: &BTreeMap<String, Var>) -> BTreeMap<String, Tensor> {
    vars.iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect()
}

/// Builds the network a `config.json` describes from `source` (files, memory or seeded init).
pub fn build_network(
    config_json: &serde_json::Value,
    config_path: &std::path::Path,
    source: TensorSource,
    opts: &LoadOptions,
) -> Result<Built> {
    let config = ArchConfig::from_json(config_json, config_path)?;
    let store = WeightStore::new(source, opts.trainable, &opts.device);
    let network = Network::build(&config, &store.root(), config_path)?;
    let (params, vars) = store.into_parts();
    Ok(Built { config, network, params, vars })
}

fn dtype_summary(source: &TensorSource) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for name in source.names() {
        if let Some(d) = source.dtype(&name) {
            *counts.entry(d).or_default() += 1;
        }
    }
    summarize_counts(counts)
}

pub(crate) fn gguf_dtypes(types: &[(String, String)]) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for (_, t) in types {
        *counts.entry(t.to_uppercase()).or_default() += 1;
    }
    summarize_counts(counts)
}

pub(crate) fn summarize_counts(counts: BTreeMap<String, usize>) -> String {
    if counts.len() == 1 {
        return counts.into_keys().next().unwrap_or_default();
    }
    let mut v: Vec<(String, usize)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1));
    v.iter().map(|(d, n)| format!("{d} ×{n}")).collect::<Vec<_>>().join(", ")
}
