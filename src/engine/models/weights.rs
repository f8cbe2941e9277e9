//! Named weights for model construction: frozen tensors for a teacher, `Var`s for a student.
//!
//! Every model file asks a [`Scope`] for its tensors by Hugging Face name. The store checks the
//! shape, converts to the compute dtype, and — when trainable — wraps each tensor in a `Var` so the
//! optimizer and the gradient checks see exactly the parameters the model uses (tied weights once).

use super::init::InitSource;
use super::recorder::InputRecorder;
use crate::engine::{Error, Result};
use candle_core::quantized::QTensor;
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Shape, Tensor, Var};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where tensors come from: memory (GGUF), memory-mapped safetensors files read lazily (a tensor
/// the model does not use is never loaded), or seeded initialisation (any name exists).
pub enum TensorSource {
    Memory(HashMap<String, Tensor>),
    Init(InitSource),
    /// Any name exists as a zero-cost broadcast of one zero: a network built only to count its
    /// parameters (never run).
    Shapes,
    Files {
        files: Vec<(PathBuf, MmapedSafetensors)>,
        index: HashMap<String, usize>,
    },
}

impl TensorSource {
    /// Opens (sharded) safetensors files; a corrupt or truncated file is named in the error.
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for (i, path) in paths.iter().enumerate() {
            let st = open_safetensors(path)?;
            for (name, _) in st.tensors() {
                index.insert(name, i);
            }
            files.push((path.clone(), st));
        }
        Ok(Self::Files { files, index })
    }

    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = match self {
            Self::Memory(m) => m.keys().cloned().collect(),
            Self::Init(i) => i.overlay.keys().cloned().collect(),
            Self::Shapes => Vec::new(),
            Self::Files { index, .. } => index.keys().cloned().collect(),
        };
        v.sort();
        v
    }

    pub fn contains(&self, name: &str) -> bool {
        match self {
            Self::Memory(m) => m.contains_key(name),
            Self::Init(_) | Self::Shapes => true,
            Self::Files { index, .. } => index.contains_key(name),
        }
    }

    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        match self {
            Self::Memory(m) => m.get(name).map(|t| t.dims().to_vec()),
            Self::Init(_) | Self::Shapes => None,
            Self::Files { files, index } => {
                let (_, st) = &files[*index.get(name)?];
                st.get(name).ok().map(|v| v.shape().to_vec())
            }
        }
    }

    /// The stored dtype of a tensor, as its safetensors name (F32, BF16, …).
    pub fn dtype(&self, name: &str) -> Option<String> {
        match self {
            Self::Memory(m) => m.get(name).map(|t| format!("{:?}", t.dtype()).to_uppercase()),
            Self::Init(_) | Self::Shapes => Some("F32".into()),
            Self::Files { files, index } => {
                let (_, st) = &files[*index.get(name)?];
                st.get(name).ok().map(|v| format!("{:?}", v.dtype()))
            }
        }
    }

    fn load(&self, name: &str, device: &Device) -> Result<Tensor> {
        match self {
            Self::Memory(m) => Ok(m[name].to_device(device)?),
            Self::Init(_) | Self::Shapes => unreachable!("drawn by shape in WeightStore::get"),
            Self::Files { files, index } => {
                let (path, st) = &files[index[name]];
                st.load(name, device)
                    .map_err(|e| Error::CorruptWeights { path: path.clone(), detail: format!("tensor `{name}`: {e}") })
            }
        }
    }
}

fn open_safetensors(path: &Path) -> Result<MmapedSafetensors> {
    let len = std::fs::metadata(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?.len();
    if len < 8 {
        return Err(Error::CorruptWeights { path: path.into(), detail: format!("only {len} bytes") });
    }
    // SAFETY: the file is opened read-only; the engine never writes to a file it has mapped.
    unsafe { MmapedSafetensors::new(path) }
        .map_err(|e| Error::CorruptWeights { path: path.into(), detail: e.to_string() })
}

/// Tensors by name plus the record of which ones a model consumed.
pub struct WeightStore {
    source: TensorSource,
    trainable: bool,
    dtype: DType,
    device: Device,
    used: RefCell<BTreeMap<String, Tensor>>,
    vars: RefCell<BTreeMap<String, Var>>,
    /// GGML-quantized linear weights (`[out, in]`) that layers use instead of a dense tensor.
    quantized: HashMap<String, Arc<QTensor>>,
    /// Records the inputs of every linear layer (calibration for activation-aware quantization).
    recorder: Option<Arc<InputRecorder>>,
    /// Quantized linear layers multiply by their weight dequantized by candle, in f32.
    reference: bool,
}

impl WeightStore {
    pub fn new(source: TensorSource, trainable: bool, device: &Device) -> Self {
        Self {
            source,
            trainable,
            dtype: DType::F32,
            device: device.clone(),
            used: RefCell::new(BTreeMap::new()),
            vars: RefCell::new(BTreeMap::new()),
            quantized: HashMap::new(),
            recorder: None,
            reference: false,
        }
    }

    /// Linear weights by name that layers multiply in quantized form (see `Linear::load`).
    pub fn with_quantized(mut self, quantized: HashMap<String, Arc<QTensor>>) -> Self {
        self.quantized = quantized;
        self
    }

    /// Makes every GGML-quantized linear layer built from this store multiply by its weight
    /// dequantized with candle's ops, in f32: the reference that a network running the same
    /// blocks through the quantized kernels is measured against.
    pub fn with_dequantized_reference(mut self) -> Self {
        self.reference = true;
        self
    }

    /// Makes every linear layer built from this store record its inputs into `recorder`.
    pub fn with_recorder(mut self, recorder: Arc<InputRecorder>) -> Self {
        self.recorder = Some(recorder);
        self
    }

    pub fn root(&self) -> Scope<'_> {
        Scope { store: self, prefix: String::new() }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// True when the store has the tensor, dense or GGML-quantized (a quantized classifier's head
    /// is in the quantized map only).
    pub fn contains(&self, name: &str) -> bool {
        self.source.contains(name) || self.quantized.contains_key(name)
    }

    pub fn source(&self) -> &TensorSource {
        &self.source
    }

    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        if let Some(t) = self.used.borrow().get(name) {
            return Ok(t.clone());
        }
        let loaded = match &self.source {
            TensorSource::Init(init) => init.tensor(name, shape, &self.device)?,
            TensorSource::Shapes => Tensor::zeros((), DType::F32, &self.device)?.broadcast_as(shape)?,
            _ => self.load_checked(name, shape)?,
        };
        let t = loaded.to_dtype(self.dtype)?;
        let t = if self.trainable {
            let var = Var::from_tensor(&t)?;
            let t = var.as_tensor().clone();
            self.vars.borrow_mut().insert(name.to_string(), var);
            t
        } else {
            t
        };
        self.used.borrow_mut().insert(name.to_string(), t.clone());
        Ok(t)
    }

    fn load_checked(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let found = self.source.shape(name).ok_or_else(|| Error::MissingTensor {
            name: name.to_string(),
            context: format!("expected shape {shape:?}"),
        })?;
        if found != shape {
            return Err(Error::MissingTensor {
                name: name.to_string(),
                context: format!("found shape {found:?}, the config implies {shape:?}"),
            });
        }
        self.source.load(name, &self.device)
    }

    /// The parameters a model consumed, by name (sorted). Empty for a frozen store.
    pub fn into_parts(self) -> (BTreeMap<String, Tensor>, BTreeMap<String, Var>) {
        (self.used.into_inner(), self.vars.into_inner())
    }
}

/// A name prefix into a [`WeightStore`], like `model.layers.3`.
#[derive(Clone)]
pub struct Scope<'a> {
    store: &'a WeightStore,
    prefix: String,
}

impl<'a> Scope<'a> {
    pub fn pp(&self, name: impl std::fmt::Display) -> Scope<'a> {
        let prefix = if self.prefix.is_empty() { name.to_string() } else { format!("{}.{name}", self.prefix) };
        Scope { store: self.store, prefix }
    }

    fn full(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    pub fn get(&self, name: &str, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape: Shape = shape.into();
        self.store.get(&self.full(name), shape.dims())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.store.contains(&self.full(name))
    }

    /// True when the store has a dense (not only a GGML-quantized) version of the tensor.
    pub fn has_dense(&self, name: &str) -> bool {
        self.store.source.contains(&self.full(name))
    }

    /// The full name of `name` under this scope, e.g. `model.layers.3.mlp.up_proj.weight`.
    pub fn name(&self, name: &str) -> String {
        self.full(name)
    }

    /// The GGML-quantized version of a weight, if the store holds one; its shape must be `shape`.
    pub fn quantized(&self, name: &str, shape: impl Into<Shape>) -> Result<Option<Arc<QTensor>>> {
        let full = self.full(name);
        let Some(q) = self.store.quantized.get(&full) else { return Ok(None) };
        let shape: Shape = shape.into();
        if q.shape() != &shape {
            return Err(Error::MissingTensor {
                name: full,
                context: format!("quantized shape {:?}, the config implies {:?}", q.shape().dims(), shape.dims()),
            });
        }
        Ok(Some(q.clone()))
    }

    /// True when quantized layers built here multiply dequantized (a reference network).
    pub fn dequantized_reference(&self) -> bool {
        self.store.reference
    }

    /// The input recorder of the store, if calibration is on.
    pub fn recorder(&self) -> Option<Arc<InputRecorder>> {
        self.store.recorder.clone()
    }

    pub fn device(&self) -> &Device {
        self.store.device()
    }
}
