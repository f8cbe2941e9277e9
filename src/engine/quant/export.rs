//! Choosing the export by the output file's extension: `.gguf` for the GGML formats (llama.cpp),
//! `.safetensors` for the float and own integer formats.

use super::gguf_export::export_gguf;
use super::quantize::QuantizedModel;
use super::st_export::export_safetensors;
use crate::engine::loader::LoadedModel;
use crate::engine::{Error, Result};
use serde::Serialize;
use std::path::Path;

/// The container an output path asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportKind {
    Gguf,
    Safetensors,
}

impl ExportKind {
    /// From the extension; anything else is refused before any work is done.
    pub fn from_path(path: &Path) -> Result<Self> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("gguf") => Ok(Self::Gguf),
            Some("safetensors") => Ok(Self::Safetensors),
            _ => Err(Error::Invalid(format!(
                "output {}: name a .gguf file (GGML formats) or a .safetensors file (float and int formats)",
                path.display()
            ))),
        }
    }
}

/// What an export wrote.
#[derive(Clone, Debug, Serialize)]
pub struct ExportReport {
    pub path: String,
    pub bytes: u64,
    pub tensors: usize,
    pub format: String,
}

/// Refuses an output path that is one of the files (or the folder) `model` was read from.
pub fn check_output(model: &LoadedModel, path: &Path) -> Result<()> {
    let inputs = model.resolved.input_files();
    let inputs: Vec<&Path> = inputs.iter().map(|p| p.as_path()).collect();
    crate::engine::fsutil::refuse_overwriting_input(path, &inputs, "--out")
}

/// Writes `q` (quantized from `model`) to `path` in the container its extension names, atomically:
/// on any error nothing is left at `path`.
pub fn export(model: &LoadedModel, q: &QuantizedModel, path: &Path) -> Result<ExportReport> {
    check_output(model, path)?;
    match ExportKind::from_path(path)? {
        ExportKind::Gguf => export_gguf(model, q, path)?,
        ExportKind::Safetensors => export_safetensors(q, path)?,
    }
    let bytes = std::fs::metadata(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?.len();
    Ok(ExportReport { path: path.display().to_string(), bytes, tensors: q.tensors.len(), format: q.format.name() })
}
