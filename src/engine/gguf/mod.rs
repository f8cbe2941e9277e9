//! GGUF files: metadata, tensors (dequantized, HF names), tokenizer from the GGUF vocabulary.
//!
//! A `llama` or `qwen2` GGUF as written by llama.cpp loads as an HF-layout model: every tensor is
//! dequantized to f32 and renamed (`blk.3.attn_q.weight` → `model.layers.3.self_attn.q_proj.weight`),
//! llama's Q/K rows are put back in HF order, the metadata becomes an HF `config.json`, and a
//! byte-level BPE vocabulary becomes a `tokenizers::Tokenizer`. The result equals what the reference
//! converter `scripts/gguf_to_hf.py` writes, with three deliberate differences that only show on
//! files the script mishandles: llama Q/K *biases* are un-permuted too (llama.cpp permutes them),
//! a missing `rope.freq_base` becomes llama.cpp's default 10000, and `head_dim` / `rope_scaling`
//! are added when the metadata has `attention.key_length` / `rope.scaling.*`.

mod metadata;
pub mod scan;
mod tokenizer;

pub use metadata::gguf_metadata_summary;
use metadata::{config_from_metadata, meta_req_u64, meta_str, meta_u64};
pub use tokenizer::{tokenizer_from_gguf, tokenizer_json_from_gguf};

use crate::engine::{Error, Result};
use candle_core::quantized::gguf_file::Content;
use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{DType, Device, Tensor};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

/// What [`open_gguf`] reads tensors through.
pub type GgufReader = scan::Retyped<BufReader<std::fs::File>>;

/// `general.architecture` values this loader understands.
pub const SUPPORTED_ARCHS: &[&str] = &["llama", "qwen2"];

/// A GGUF teacher, dequantized to f32 with Hugging Face tensor names.
pub struct GgufModel {
    /// `general.architecture`: `llama` or `qwen2`.
    pub arch: String,
    /// An HF-style `config.json` built from the GGUF metadata.
    pub config: serde_json::Value,
    /// Every tensor of the file, f32, HF names, on the requested device — except those kept in
    /// their GGML format (see [`GgufOptions::keep_quantized`]).
    pub tensors: HashMap<String, Tensor>,
    /// Matrices kept in their GGML block format (HF names, Q/K rows in HF order), CPU.
    pub quantized: HashMap<String, Arc<QTensor>>,
    /// Tensors that could not stay quantized (a block type candle cannot multiply), with why.
    pub notes: Vec<String>,
    /// (HF name, GGML storage type such as `q4_1`) in file order.
    pub tensor_types: Vec<(String, String)>,
    /// Built from the GGUF vocabulary (byte-level BPE), or a `tokenizer.json` beside the file
    /// when the vocabulary cannot be converted (sentencepiece); `None` when neither exists.
    pub tokenizer: Option<tokenizers::Tokenizer>,
}

impl std::fmt::Debug for GgufModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufModel")
            .field("arch", &self.arch)
            .field("config", &self.config)
            .field("tensors", &self.tensors.len())
            .field("tokenizer", &self.tokenizer.is_some())
            .finish()
    }
}

/// How to read a GGUF's tensors.
#[derive(Clone, Copy, Debug, Default)]
pub struct GgufOptions {
    /// Keep the matrices (linear weights, the token table, the head) in the block format the file
    /// stores them in, as llama.cpp runs them, instead of dequantizing to f32: the memory is what
    /// the file holds. Norms and biases are dequantized (they are small). A block type the
    /// project's kernels cannot multiply is dequantized, with a note.
    pub keep_quantized: bool,
}

/// Loads a llama.cpp GGUF (`llama` or `qwen2`) as f32 HF tensors, an HF config and a tokenizer.
pub fn load_gguf(path: &Path, device: &Device) -> Result<GgufModel> {
    load_gguf_with(path, device, GgufOptions::default())
}

/// [`load_gguf`], with matrices kept in their block format when `opts` asks for it.
pub fn load_gguf_with(path: &Path, device: &Device, opts: GgufOptions) -> Result<GgufModel> {
    let (content, mut reader, iq4nl) = open_gguf(path)?;
    let arch = architecture(&content, path)?;
    let n_head = meta_req_u64(&content, path, &format!("{arch}.attention.head_count"))? as usize;
    let n_kv_head =
        meta_u64(&content, path, &format!("{arch}.attention.head_count_kv"))?.map_or(n_head, |v| v as usize);

    let infos = tensor_infos(&content, path, &arch)?;

    let mut tensors = HashMap::with_capacity(infos.len());
    let mut quantized = HashMap::new();
    let mut notes = Vec::new();
    let mut tensor_types = Vec::with_capacity(infos.len());
    for (name, info) in infos {
        let hf = hf_tensor_name(name).expect("checked above");
        let q = info
            .read(&mut reader, content.tensor_data_offset, &Device::Cpu)
            .map_err(|e| corrupt(path, &format!("tensor `{name}`: {e}")))?;
        // llama.cpp permutes the rows (weights and biases) of Q and K for its interleaved rope.
        let heads = match arch.as_str() {
            "llama" if name.contains(".attn_q.") => Some(n_head),
            "llama" if name.contains(".attn_k.") => Some(n_kv_head),
            _ => None,
        };
        let is_iq4nl = iq4nl.contains(name.as_str());
        if is_iq4nl && !opts.keep_quantized {
            tensor_types.push((hf.clone(), "iq4_nl".to_string()));
            let mut w = iq4nl_blocks(&q)
                .and_then(|t| Ok(Tensor::from_vec(t.dequantize(), (t.rows, t.cols), &Device::Cpu)?))
                .map_err(|e| corrupt(path, &format!("tensor `{name}`: {e}")))?;
            if let Some(heads) = heads {
                w = unpermute_qk_from_gguf(&w, heads).map_err(|e| bad(path, &format!("tensor `{name}`: {e}")))?;
            }
            tensors.insert(hf, w.to_device(device)?);
            continue;
        }
        // Kept in its blocks, IQ4_NL runs as the Q8_0 it converts to exactly.
        let q = match is_iq4nl {
            true => {
                notes.push(format!(
                    "`{name}` (iq4_nl) runs as q8_0, the same values: candle has no IQ4_NL kernel (34 bytes per 32 weights instead of 18)"
                ));
                iq4nl_blocks(&q)
                    .and_then(|t| t.to_q8_0())
                    .map_err(|e| corrupt(path, &format!("tensor `{name}`: {e}")))?
            }
            false => q,
        };
        tensor_types.push((hf.clone(), if is_iq4nl { "iq4_nl" } else { ggml_dtype_name(q.dtype()) }.to_string()));
        if opts.keep_quantized && q.shape().rank() == 2 && !matches!(q.dtype(), GgmlDType::F32) {
            match crate::engine::kernels::qgemm::multiplies(q.dtype()) {
                Ok(()) => {
                    let q = match heads {
                        Some(h) => {
                            permute_block_rows(&q, h, false).map_err(|e| bad(path, &format!("tensor `{name}`: {e}")))?
                        }
                        None => q,
                    };
                    quantized.insert(hf, Arc::new(q));
                    continue;
                }
                Err(why) => {
                    notes.push(format!("`{name}` ({}) is dequantized to f32: {why}", ggml_dtype_name(q.dtype())))
                }
            }
        }
        let mut w = q.dequantize(&Device::Cpu)?.to_dtype(DType::F32)?;
        if let Some(heads) = heads {
            w = unpermute_qk_from_gguf(&w, heads).map_err(|e| bad(path, &format!("tensor `{name}`: {e}")))?;
        }
        tensors.insert(hf, w.to_device(device)?);
    }

    let shapes: HashMap<String, Vec<usize>> = tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.dims().to_vec()))
        .chain(quantized.iter().map(|(n, q)| (n.clone(), q.shape().dims().to_vec())))
        .collect();
    let config = config_from_metadata(&content, path, &arch, &shapes)?;
    check_required_tensors(&shapes, &config)?;
    let tokenizer = gguf_tokenizer(&content, path)?;
    Ok(GgufModel { arch, config, tensors, quantized, notes, tensor_types, tokenizer })
}

/// Every tensor's storage type as the file says it (`q4_k`, `iq4_nl`, …), by GGUF tensor name.
pub fn tensor_type_names(path: &Path) -> Result<std::collections::BTreeMap<String, String>> {
    let (content, _, iq4nl) = open_gguf(path)?;
    Ok(content
        .tensor_infos
        .iter()
        .map(|(name, info)| {
            let t = if iq4nl.contains(name) { "iq4_nl" } else { ggml_dtype_name(info.ggml_dtype) };
            (name.clone(), t.to_string())
        })
        .collect())
}

/// The blocks of an IQ4_NL matrix that candle read as Q4_0 (the same bytes).
fn iq4nl_blocks(q: &QTensor) -> Result<crate::engine::quant::iq4nl::Iq4NlTensor> {
    let &[rows, cols] = q.shape().dims() else {
        return Err(Error::Invalid(format!("an IQ4_NL tensor of shape {:?}, not a matrix", q.shape().dims())));
    };
    crate::engine::quant::iq4nl::Iq4NlTensor::from_bytes(q.data()?.into_owned(), rows, cols)
}

/// A GGUF's facts without its tensor data: what a pair check and a memory estimate need.
pub struct GgufHeader {
    pub arch: String,
    /// The HF `config.json` [`load_gguf`] would build.
    pub config: serde_json::Value,
    /// (HF name, storage type, shape) in file order. IQ4_NL tensors read as Q4_0 here (candle
    /// has no IQ4_NL type; the blocks are the same size): `iq4nl` names them.
    pub tensors: Vec<(String, GgmlDType, Vec<usize>)>,
    /// HF names of the IQ4_NL tensors (the loader keeps them as the Q8_0 they convert to exactly,
    /// or dequantizes them to f32).
    pub iq4nl: HashSet<String>,
    pub tokenizer: Option<tokenizers::Tokenizer>,
}

/// Reads a GGUF's metadata and tensor headers (no tensor data).
pub fn read_gguf_header(path: &Path) -> Result<GgufHeader> {
    let (content, _, iq4nl) = open_gguf(path)?;
    let arch = architecture(&content, path)?;
    let iq4nl = iq4nl.iter().filter_map(|n| hf_tensor_name(n)).collect();
    let tensors: Vec<(String, GgmlDType, Vec<usize>)> = tensor_infos(&content, path, &arch)?
        .into_iter()
        .map(|(name, info)| (hf_tensor_name(name).expect("checked"), info.ggml_dtype, info.shape.dims().to_vec()))
        .collect();
    let shapes: HashMap<String, Vec<usize>> = tensors.iter().map(|(n, _, s)| (n.clone(), s.clone())).collect();
    let config = config_from_metadata(&content, path, &arch, &shapes)?;
    check_required_tensors(&shapes, &config)?;
    let tokenizer = gguf_tokenizer(&content, path)?;
    Ok(GgufHeader { arch, config, tensors, iq4nl, tokenizer })
}

fn architecture(content: &Content, path: &Path) -> Result<String> {
    let arch = meta_str(content, "general.architecture")
        .ok_or_else(|| bad(path, "GGUF metadata lacks `general.architecture`"))?
        .to_string();
    if !SUPPORTED_ARCHS.contains(&arch.as_str()) {
        return Err(Error::UnsupportedArch {
            model_type: arch,
            path: path.display().to_string(),
            supported: SUPPORTED_ARCHS.join(", "),
        });
    }
    Ok(arch)
}

/// The tensor headers in file order, every name one this loader maps.
fn tensor_infos<'a>(
    content: &'a Content,
    path: &Path,
    arch: &str,
) -> Result<Vec<(&'a String, &'a candle_core::quantized::gguf_file::TensorInfo)>> {
    let mut infos: Vec<_> = content.tensor_infos.iter().collect();
    infos.sort_by_key(|(_, info)| info.offset);
    let unknown: Vec<&str> =
        infos.iter().filter(|(name, _)| hf_tensor_name(name).is_none()).map(|(name, _)| name.as_str()).collect();
    if !unknown.is_empty() {
        return Err(bad(
            path,
            &format!(
                "unknown GGUF tensor name(s) for `{arch}`: {}; this loader maps token_embd, output_norm, \
                 output and blk.N.{{attn_norm,ffn_norm,attn_q,attn_k,attn_v,attn_output,ffn_gate,ffn_up,\
                 ffn_down}}.{{weight,bias}}",
                unknown.join(", ")
            ),
        ));
    }
    Ok(infos)
}

/// The tokenizer of a byte-level BPE vocabulary, else a `tokenizer.json` beside the file.
fn gguf_tokenizer(content: &Content, path: &Path) -> Result<Option<tokenizers::Tokenizer>> {
    match meta_str(content, "tokenizer.ggml.model") {
        Some("gpt2") => Ok(Some(tokenizer_from_gguf(content)?)),
        _ => tokenizer_beside(path),
    }
}

/// Opens a GGUF file and reads its header: `BadSource` when it is not GGUF at all,
/// `CorruptWeights` when the header is cut short or malformed.
///
/// IQ4_NL tensors (type 20), which candle's reader does not know, are shown to it as Q4_0 (the same
/// block size and bytes); their names are returned so that the caller reads their bytes as IQ4_NL.
pub fn open_gguf(path: &Path) -> Result<(Content, GgufReader, HashSet<String>)> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let mut reader = BufReader::new(file);
    let mut magic = Vec::with_capacity(4);
    (&mut reader).take(4).read_to_end(&mut magic).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    if magic != b"GGUF" {
        return Err(bad(
            path,
            &format!("not a GGUF file (it starts with bytes {magic:02x?}, a GGUF file starts with \"GGUF\")"),
        ));
    }
    reader.seek(SeekFrom::Start(0)).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let len = reader.get_ref().metadata().map_err(|e| Error::io(format!("reading {}", path.display()), e))?.len();
    let entries = scan::scan(&mut reader, len).map_err(|e| corrupt(path, &e))?;
    let iq4nl_type = crate::engine::quant::iq4nl::GGML_TYPE_ID;
    let iq4nl: Vec<&scan::TensorEntry> = entries.iter().filter(|e| e.ggml_type == iq4nl_type).collect();
    let patches = iq4nl.iter().map(|e| (e.type_pos, crate::engine::quant::iq4nl::GGML_Q4_0_ID)).collect();
    let iq4nl = iq4nl.into_iter().map(|e| e.name.clone()).collect();
    let mut reader = scan::Retyped::new(reader, patches);
    reader.seek(SeekFrom::Start(0)).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let content = Content::read(&mut reader).map_err(|e| {
        let msg = e.to_string();
        if msg.contains("unknown dtype") {
            bad(
                path,
                &format!("uses a GGML tensor type this build cannot read ({msg}); supported: f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0, q8_1, q2_k..q8_k, iq4_nl"),
            )
        } else {
            corrupt(path, &msg)
        }
    })?;
    scan::check_extents(&content, len).map_err(|e| corrupt(path, &e))?;
    Ok((content, reader, iq4nl))
}

/// HF name of a llama.cpp tensor name, `None` when it is not one this loader maps.
pub fn hf_tensor_name(gguf_name: &str) -> Option<String> {
    match gguf_name {
        "token_embd.weight" => return Some("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Some("model.norm.weight".into()),
        "output.weight" => return Some("lm_head.weight".into()),
        _ => {}
    }
    let mut parts = gguf_name.split('.');
    let (blk, layer, part, kind) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if blk != "blk" || parts.next().is_some() || layer.parse::<usize>().is_err() {
        return None;
    }
    if kind != "weight" && kind != "bias" {
        return None;
    }
    let hf = match part {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{kind}"))
}

/// HF → GGUF row order of a llama Q or K projection (weight or bias), as llama.cpp's converter does:
/// `w.reshape(n_head, 2, rows/n_head/2, ..).transpose(1, 2).reshape(w.shape)`.
pub fn permute_qk_for_gguf(w: &Tensor, n_head: usize) -> Result<Tensor> {
    permute_rows(w, n_head, true)
}

/// GGUF → HF row order of a llama Q or K projection; the inverse of [`permute_qk_for_gguf`]:
/// `w.reshape(n_head, rows/n_head/2, 2, ..).transpose(1, 2).reshape(w.shape)`.
pub fn unpermute_qk_from_gguf(w: &Tensor, n_head: usize) -> Result<Tensor> {
    permute_rows(w, n_head, false)
}

fn permute_rows(w: &Tensor, n_head: usize, to_gguf: bool) -> Result<Tensor> {
    let dims = w.dims().to_vec();
    let rows = *dims.first().ok_or_else(|| Error::Invalid("cannot permute the rows of a scalar".into()))?;
    if n_head == 0 || rows % (2 * n_head) != 0 {
        return Err(Error::Invalid(format!(
            "cannot permute Q/K rows: {rows} rows do not split into {n_head} heads of an even size"
        )));
    }
    let rest: usize = dims[1..].iter().product();
    let half = rows / n_head / 2;
    let split = if to_gguf { w.reshape((n_head, 2, half, rest))? } else { w.reshape((n_head, half, 2, rest))? };
    Ok(split.transpose(1, 2)?.contiguous()?.reshape(dims)?)
}

/// llama.cpp's name of a GGML storage type (`q4_1`, `q6_k`, `f32`...).
pub fn ggml_dtype_name(dtype: GgmlDType) -> &'static str {
    match dtype {
        GgmlDType::F32 => "f32",
        GgmlDType::F16 => "f16",
        GgmlDType::BF16 => "bf16",
        GgmlDType::Q4_0 => "q4_0",
        GgmlDType::Q4_1 => "q4_1",
        GgmlDType::Q5_0 => "q5_0",
        GgmlDType::Q5_1 => "q5_1",
        GgmlDType::Q8_0 => "q8_0",
        GgmlDType::Q8_1 => "q8_1",
        GgmlDType::Q2K => "q2_k",
        GgmlDType::Q3K => "q3_k",
        GgmlDType::Q4K => "q4_k",
        GgmlDType::Q5K => "q5_k",
        GgmlDType::Q6K => "q6_k",
        GgmlDType::Q8K => "q8_k",
    }
}

/// llama's Q/K row permutation applied to whole rows of GGML blocks (a row's blocks move
/// together, so no value is requantized): to GGUF order, or back to HF order.
pub fn permute_block_rows(q: &QTensor, heads: usize, to_gguf: bool) -> Result<QTensor> {
    let rows = q.shape().dims()[0];
    let index = Tensor::arange(0f32, rows as f32, &Device::Cpu)?.reshape((rows, 1))?;
    let order: Vec<f32> = permute_rows(&index, heads, to_gguf)?.flatten_all()?.to_vec1()?;
    let data = q.data()?;
    let row_bytes = data.len() / rows;
    let mut out = Vec::with_capacity(data.len());
    for src in order {
        let src = src as usize;
        out.extend_from_slice(&data[src * row_bytes..(src + 1) * row_bytes]);
    }
    Ok(QTensor::new(QStorage::from_data(Cow::Owned(out), &Device::Cpu, q.dtype())?, q.shape().clone())?)
}

/// Every tensor the HF llama/qwen2 layout needs must be present.
fn check_required_tensors(tensors: &HashMap<String, Vec<usize>>, cfg: &serde_json::Value) -> Result<()> {
    let layers = cfg["num_hidden_layers"].as_u64().unwrap_or(0);
    let mut required = vec!["model.embed_tokens.weight".to_string(), "model.norm.weight".to_string()];
    for l in 0..layers {
        for part in [
            "input_layernorm",
            "post_attention_layernorm",
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.o_proj",
            "mlp.gate_proj",
            "mlp.up_proj",
            "mlp.down_proj",
        ] {
            required.push(format!("model.layers.{l}.{part}.weight"));
        }
    }
    match required.into_iter().find(|n| !tensors.contains_key(n)) {
        Some(name) => Err(Error::MissingTensor { name, context: format!("GGUF with {layers} blocks") }),
        None => Ok(()),
    }
}

/// A `tokenizer.json` beside the GGUF file, for vocabularies that are not byte-level BPE.
fn tokenizer_beside(path: &Path) -> Result<Option<tokenizers::Tokenizer>> {
    let tj = path.with_file_name("tokenizer.json");
    if !tj.is_file() {
        return Ok(None);
    }
    tokenizers::Tokenizer::from_file(&tj)
        .map(Some)
        .map_err(|e| Error::Tokenizer { path: tj.display().to_string(), detail: e.to_string() })
}

fn bad(path: &Path, detail: &str) -> Error {
    Error::BadSource { path: path.to_path_buf(), detail: detail.to_string() }
}

fn corrupt(path: &Path, detail: &str) -> Error {
    Error::CorruptWeights { path: path.to_path_buf(), detail: detail.to_string() }
}
