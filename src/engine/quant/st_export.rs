//! Safetensors export for the float formats and the own integer formats.
//!
//! Layout (documented in docs/quantization.md): every tensor left in f32 keeps its Hugging Face
//! name; an `f16` model stores its weights as F16 under their names (a file transformers loads).
//! A tensor in an own integer format `NAME` becomes
//!
//! * `NAME.qweight` — U8, the codes of the `[out, in]` weight, row-major, packed LSB-first
//!   (`ceil(out·in·bits/8)` bytes);
//! * `NAME.scales` — F16 `[out, in/group]` (`[out, 1]` per-channel);
//! * `NAME.mins` — F16, same shape, asymmetric formats only;
//!
//! and the file metadata `distill_tui.quant` maps each such name to `{format, shape, transposed}`
//! (`transposed`: the codes hold the transpose of the Hugging Face tensor, GPT-2 `Conv1D`).
//! Dequantization: asymmetric `w = scale·q + min`, symmetric `w = scale·(q − 2^(bits−1))`.

use super::format::QuantFormat;
use super::own::IntTensor;
use super::quantize::{QuantData, QuantizedModel};
use crate::engine::fsutil::write_atomic;
use crate::engine::{Error, Result};
use candle_core::{DType, Device, Tensor};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The metadata key that describes the integer tensors.
pub const QUANT_METADATA_KEY: &str = "distill_tui.quant";

/// Writes `q` as one safetensors file, atomically.
pub fn export_safetensors(q: &QuantizedModel, path: &Path) -> Result<()> {
    let mut data: HashMap<String, Tensor> = HashMap::new();
    let mut described = serde_json::Map::new();
    for (name, t) in &q.tensors {
        match &t.data {
            QuantData::Float(w) => {
                data.insert(name.clone(), w.contiguous()?);
            }
            QuantData::Ggml(_) if t.format() == QuantFormat::F16 => {
                data.insert(name.clone(), t.dequantize()?.to_dtype(DType::F16)?);
            }
            QuantData::Ggml(_) | QuantData::Iq4Nl(_) => {
                return Err(Error::Invalid(format!(
                    "tensor `{name}` is in the GGML format {}, which safetensors does not describe; \
                     export it with --out FILE.gguf",
                    t.format()
                )))
            }
            QuantData::Int(i) => {
                let groups = i.scales.len() / i.shape.0;
                let f16 = |v: &[f32]| -> Result<Tensor> {
                    Ok(Tensor::from_slice(v, (i.shape.0, groups), &Device::Cpu)?.to_dtype(DType::F16)?)
                };
                let packed = i.packed_codes();
                let len = packed.len();
                data.insert(format!("{name}.qweight"), Tensor::from_vec(packed, len, &Device::Cpu)?);
                data.insert(format!("{name}.scales"), f16(&i.scales)?);
                if !i.mins.is_empty() {
                    data.insert(format!("{name}.mins"), f16(&i.mins)?);
                }
                described.insert(
                    name.clone(),
                    json!({"format": t.format().name(), "shape": [i.shape.0, i.shape.1], "transposed": t.transposed}),
                );
            }
        }
    }
    let meta = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        (QUANT_METADATA_KEY.to_string(), serde_json::Value::Object(described).to_string()),
    ]);
    let bytes = safetensors::tensor::serialize(&data, Some(meta))
        .map_err(|e| Error::Invalid(format!("serializing {}: {e}", path.display())))?;
    write_atomic(path, &bytes)
}

/// Reads a file written by [`export_safetensors`] back as dequantized f32 tensors by Hugging Face name.
pub fn read_safetensors_dequantized(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let corrupt = |detail: String| Error::CorruptWeights { path: path.to_path_buf(), detail };
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let described: serde_json::Map<String, serde_json::Value> = match header.metadata() {
        Some(m) => match m.get(QUANT_METADATA_KEY) {
            Some(s) => serde_json::from_str(s).map_err(|e| corrupt(format!("{QUANT_METADATA_KEY}: {e}")))?,
            None => Default::default(),
        },
        None => Default::default(),
    };
    let raw = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)?;
    let mut out = BTreeMap::new();
    for (name, d) in &described {
        let format = match QuantFormat::parse(d["format"].as_str().unwrap_or(""))? {
            QuantFormat::Int(f) => f,
            other => return Err(corrupt(format!("`{name}` is described as {other}, not an integer format"))),
        };
        let dim =
            |i: usize| d["shape"][i].as_u64().map(|v| v as usize).ok_or_else(|| corrupt(format!("`{name}` shape")));
        let (rows, cols) = (dim(0)?, dim(1)?);
        let get = |suffix: &str| -> Result<Vec<f32>> {
            match raw.get(&format!("{name}.{suffix}")) {
                Some(t) => Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?),
                None => Ok(Vec::new()),
            }
        };
        let packed: Vec<u8> = raw
            .get(&format!("{name}.qweight"))
            .ok_or_else(|| corrupt(format!("`{name}.qweight` is missing")))?
            .to_vec1()?;
        let t = IntTensor::from_packed(format, rows, cols, &packed, get("scales")?, get("mins")?)?;
        let w = Tensor::from_vec(t.dequantize(), (rows, cols), &Device::Cpu)?;
        let transposed = d["transposed"].as_bool().unwrap_or(false);
        out.insert(name.clone(), if transposed { w.t()?.contiguous()? } else { w });
    }
    for (name, t) in raw {
        let is_part = [".qweight", ".scales", ".mins"]
            .iter()
            .any(|s| name.strip_suffix(s).is_some_and(|base| described.contains_key(base)));
        if !is_part {
            out.insert(name, t.to_dtype(DType::F32)?);
        }
    }
    Ok(out)
}
