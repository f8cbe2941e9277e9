//! Everything a run needs before its first step: the teacher, the student (loaded, derived or
//! built from a config), its baseline twin, the tokenizer, the data, all checked up front so a bad
//! recipe fails in seconds with a message naming the problem.

use crate::engine::context::JobContext;
use crate::engine::data::TokenWindows;
use crate::engine::derive::derive_student;
use crate::engine::kernels::autocast::{self, Precision};
use crate::engine::loader::{build_network, load_model, Built, LoadOptions, LoadedModel};
use crate::engine::models::init::InitSource;
use crate::engine::models::weights::TensorSource;
use crate::engine::models::Network;
use crate::engine::pair::check_pair;
use crate::engine::recipe::teacher_precision::TeacherPrecision;
use crate::engine::recipe::LoadedRecipe;
use crate::engine::source::resolve;
use crate::engine::tokenizer::{encode_plain, load_tokenizer};
use crate::engine::{Error, Result};
use candle_core::{Device, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use tokenizers::Tokenizer;

/// A prepared run.
pub struct Setup {
    pub teacher: Option<LoadedModel>,
    /// The student's config.json and its initial weights (the baseline starts from the same).
    pub student_config: serde_json::Value,
    pub initial: BTreeMap<String, Tensor>,
    pub tokenizer: Tokenizer,
    /// Where the tokenizer came from, to save it with the trained models.
    pub tokenizer_file: Option<std::path::PathBuf>,
    pub train: TokenWindows,
    pub eval_tokens: Vec<u32>,
    /// Where the run computes (`DISTILL_DEVICE`; the CPU by default).
    pub device: Device,
    /// Matmul precision of the training steps (`distill.precision`).
    pub precision: Precision,
    /// Matmul precision of the teacher's forward in those steps (`distill.teacher_precision`,
    /// `precision` when absent or a block format).
    pub teacher_precision: Precision,
    /// How the teacher computes, resolved: a GGUF teacher without `teacher_precision` is
    /// [`TeacherPrecision::Gguf`]; a block format to quantize it to is applied by the trainer once
    /// the f32 teacher's reference states exist.
    pub teacher_mode: TeacherPrecision,
    /// The training-memory estimate the run was admitted with (set by the trainer's preflight).
    pub memory_estimate: Option<u64>,
    /// Peak resident size when training ended (set by the trainer).
    pub training_peak: std::cell::Cell<Option<u64>>,
}

/// Loads the frozen teacher as `mode` asks: a GGUF kept in its block formats for
/// [`TeacherPrecision::Gguf`] (refused for other files), f32 otherwise.
fn load_teacher(
    spec: &str,
    mode: Option<TeacherPrecision>,
    fallback: Precision,
    device: &Device,
    ctx: &JobContext,
) -> Result<(LoadedModel, TeacherPrecision)> {
    let progress = |p: &crate::engine::hub::DownloadProgress| {
        ctx.progress(&format!("download {}", p.file), p.bytes, p.total, "bytes")
    };
    let resolved = resolve(spec, ctx.hub(), &progress)?;
    let is_gguf = matches!(resolved.files, crate::engine::source::ModelFiles::Gguf { .. });
    let mode = mode.unwrap_or(if is_gguf { TeacherPrecision::Gguf } else { TeacherPrecision::Compute(fallback) });
    let (mode, why) = mode.on_this_machine(device.is_cpu(), crate::engine::kernels::int8_gemm::available());
    if let Some(why) = why {
        ctx.log(why);
    }
    if mode == TeacherPrecision::Gguf && !is_gguf {
        return Err(Error::Invalid(format!(
            "distill.teacher_precision = \"gguf\" keeps a GGUF teacher's own block formats, but {} is not a GGUF file; \
             pick a block format to quantize it to (q8_0, q6_k, q4_k, …), int8, bf16 or f32",
            resolved.display_name()
        )));
    }
    let keep_quantized = mode == TeacherPrecision::Gguf;
    let model = load_model(&resolved, &LoadOptions { trainable: false, device: device.clone(), keep_quantized })?;
    for note in &model.notes {
        ctx.log(format!("teacher: {note}"));
    }
    Ok((model, mode))
}

pub(crate) fn load(spec: &str, trainable: bool, device: &Device, ctx: &JobContext) -> Result<LoadedModel> {
    let progress = |p: &crate::engine::hub::DownloadProgress| {
        ctx.progress(&format!("download {}", p.file), p.bytes, p.total, "bytes")
    };
    let resolved = resolve(spec, ctx.hub(), &progress)?;
    load_model(&resolved, &LoadOptions { trainable, device: device.clone(), keep_quantized: false })
}

/// Builds a trainable network from a config and tensors, on `device`.
pub fn trainable(config: &serde_json::Value, tensors: &BTreeMap<String, Tensor>, device: &Device) -> Result<Built> {
    let map: HashMap<String, Tensor> =
        tensors.iter().map(|(k, v)| Ok((k.clone(), v.to_device(device)?.detach()))).collect::<Result<_>>()?;
    build_network(
        config,
        Path::new("(student config)"),
        TensorSource::Memory(map),
        &LoadOptions { trainable: true, device: device.clone(), keep_quantized: false },
    )
}

pub fn prepare(
    lr: &LoadedRecipe,
    tokenizer_override: Option<(Tokenizer, std::path::PathBuf)>,
    ctx: &JobContext,
) -> Result<Setup> {
    let r = &lr.recipe;
    let device = ctx.settings().device()?;
    let precision = lr.recipe.distill.precision;
    if device.is_cpu() {
        ctx.log(crate::engine::kernels::isa::describe());
    }
    let (teacher, teacher_mode) = match &r.teacher {
        Some(t) => {
            ctx.log(format!("loading teacher {}", t.model));
            let (model, mode) =
                load_teacher(&lr.model_spec(&t.model), r.distill.teacher_precision, precision, &device, ctx)?;
            if mode == TeacherPrecision::Gguf {
                ctx.log(format!(
                    "teacher in its GGUF block formats ({}): {:.2} GB of weights in memory",
                    model.info.dtype,
                    model.resident_weight_bytes() as f64 / 1e9
                ));
            }
            (Some(model), mode)
        }
        None => (None, r.distill.teacher_precision.unwrap_or(TeacherPrecision::Compute(precision))),
    };
    let (student_config, initial, student_model) = if let Some(spec) = &r.student.model {
        ctx.log(format!("loading student {spec}"));
        let s = load(&lr.model_spec(spec), false, &device, ctx)?;
        let initial = s.params.clone();
        (s.config_json.clone(), initial, Some(s))
    } else if let Some(d) = &r.student.derive {
        let t = teacher.as_ref().ok_or_else(|| Error::Invalid("[student] derive needs a [teacher]".into()))?;
        let s = derive_student(t, d, r.distill.seed)?;
        ctx.log(format!(
            "derived a student: {} layers, hidden {}, {} parameters ({})",
            s.config.layers(),
            s.config.hidden(),
            s.parameters,
            if s.copied_layers.is_empty() {
                "seeded random init".to_string()
            } else {
                format!("teacher layers {:?}", s.copied_layers)
            }
        ));
        (s.config_json, s.tensors, None)
    } else {
        let table =
            r.student.config.clone().ok_or_else(|| Error::Invalid("[student] needs model, derive or config".into()))?;
        let config = serde_json::to_value(table).map_err(|e| Error::Invalid(format!("[student] config: {e}")))?;
        let init =
            InitSource::new(r.distill.seed, config.get("initializer_range").and_then(|v| v.as_f64()).unwrap_or(0.02));
        let built =
            build_network(&config, Path::new("[student] config"), TensorSource::Init(init), &LoadOptions::default())?;
        (config, built.params, None)
    };
    if let (Some(t), Some(s)) = (&teacher, &student_model) {
        check_pair(t, s, r.distill.batch_size, r.data.seq_len)?;
    }
    let (tokenizer, tokenizer_file) = match tokenizer_override {
        Some((t, f)) => (t, Some(f)),
        None => match (&teacher, &student_model) {
            (Some(t), _) => (t.tokenizer()?.clone(), t.resolved.tokenizer.clone()),
            (None, Some(s)) => (s.tokenizer()?.clone(), s.resolved.tokenizer.clone()),
            (None, None) => match r.pretrain.as_ref().and_then(|p| p.tokenizer.as_ref()) {
                Some(path) => {
                    let p = lr.base_dir.join(path);
                    (load_tokenizer(&p)?, Some(p))
                }
                None => {
                    return Err(Error::Invalid(
                        "a pretrain recipe needs pretrain.tokenizer or pretrain.train_tokenizer_vocab".into(),
                    ))
                }
            },
        },
    };
    let built = trainable(&student_config, &initial, &device)?;
    let ctx_len =
        built.config.context_length().min(teacher.as_ref().map(|t| t.config.context_length()).unwrap_or(usize::MAX));
    if r.data.seq_len > ctx_len {
        return Err(Error::Invalid(format!(
            "data.seq_len = {} is longer than the model's context ({ctx_len} positions); lower it to {ctx_len} or less",
            r.data.seq_len
        )));
    }
    let vocab = built.config.vocab_size();
    if let Some(t) = &teacher {
        if t.config.vocab_size() != vocab && r.student.model.is_none() {
            return Err(Error::VocabMismatch {
                detail: format!("teacher {} vs student {vocab} rows", t.config.vocab_size()),
            });
        }
    }
    let train_files = lr.data_files(&r.data.train, "data.train")?;
    let train = TokenWindows::from_files(&train_files, &tokenizer, r.data.seq_len, "training")?;
    let eval_files = lr.data_files(&r.data.eval, "data.eval")?;
    let mut eval_text = String::new();
    for f in &eval_files {
        eval_text.push_str(
            &std::fs::read_to_string(f).map_err(|e| Error::Invalid(format!("cannot read {}: {e}", f.display())))?,
        );
    }
    let mut eval_tokens = encode_plain(&tokenizer, &eval_text)?;
    for ids in [&train.tokens, &eval_tokens] {
        crate::engine::tokenizer::check_ids(ids, vocab, "the student")?;
    }
    eval_tokens.truncate(r.data.eval_tokens);
    if eval_tokens.len() < r.data.seq_len.min(2) || eval_tokens.len() < 2 {
        return Err(Error::Invalid(format!(
            "data.eval ({}) gives {} tokens; evaluation needs at least 2",
            r.data.eval,
            eval_tokens.len()
        )));
    }
    if let Some(max_id) = train.tokens.iter().chain(&eval_tokens).max() {
        if *max_id as usize >= vocab {
            return Err(Error::VocabMismatch {
                detail: format!("the tokenizer produces id {max_id} but the student has {vocab} embedding rows"),
            });
        }
    }
    ctx.log(format!("training data: {} tokens in {} windows of {}", train.tokens.len(), train.len(), r.data.seq_len));
    let teacher_precision = teacher_mode.compute(precision);
    if let (Some(t), Precision::Int8) = (&teacher, teacher_precision) {
        let windows = calibrate_int8(&t.network, &train, &device)?;
        ctx.log(format!(
            "teacher_precision = \"int8\": the teacher's linear layers were quantized, smoothed for the \
             first {windows} training windows (SmoothQuant, alpha {})",
            crate::engine::kernels::int8_gemm::SMOOTHING_ALPHA
        ));
    }
    Ok(Setup {
        teacher,
        student_config,
        initial,
        tokenizer,
        tokenizer_file,
        train,
        eval_tokens,
        device,
        precision,
        teacher_precision,
        teacher_mode,
        memory_estimate: None,
        training_peak: Default::default(),
    })
}

/// Training windows the int8 teacher is calibrated on.
pub const CALIBRATION_WINDOWS: usize = 4;

/// Packs the teacher's linear layers for int8, each smoothed for the activations it sees on the
/// first [`CALIBRATION_WINDOWS`] training windows, fed as the training steps feed them: a fixed
/// batch, so the same recipe always gives the same int8 teacher (a resumed run too). Returns the
/// number of windows used.
fn calibrate_int8(teacher: &Network, train: &TokenWindows, device: &Device) -> Result<usize> {
    let n = CALIBRATION_WINDOWS.min(train.len());
    let t = train.seq_len - 1;
    let flat: Vec<u32> = (0..n).flat_map(|w| train.window(w)[..t].iter().copied()).collect();
    let _int8 = autocast::enter(Precision::Int8);
    let hidden = teacher.hidden_states(&Tensor::from_vec(flat, (n, t), device)?)?;
    let hidden = hidden.reshape((n * t, hidden.dim(2)?))?;
    // The head sees as many rows as one loss chunk (its logits are the large tensor).
    let vocab = teacher.lm_head_weight().map_or(Ok(0), |w| w.dim(0))?;
    teacher.lm_logits(&hidden.narrow(0, 0, (n * t).min(super::step::chunk_rows(vocab)))?)?;
    Ok(n)
}
