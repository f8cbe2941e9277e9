//! Pair checks before any run: one tokenizer for teacher and student, supported architectures of
//! the same kind, and the memory the pair needs for training against this machine's memory.

use crate::engine::header::ModelHeader;
use crate::engine::loader::{LoadedModel, ModelInfo};
use crate::engine::models::ArchConfig;
use crate::engine::{Error, Result};
use serde::Serialize;
use std::collections::HashMap;
use tokenizers::Tokenizer;

/// How the two vocabularies relate.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum VocabCheck {
    /// Same tokenizer vocabulary and the same embedding size.
    Identical { size: usize },
    /// Same tokenizer vocabulary; the embedding tables differ only by padding rows past the tokenizer.
    PaddingOnly { tokenizer_size: usize, teacher_rows: usize, student_rows: usize },
    /// A tokenizer is missing, so only the embedding sizes could be compared (they are equal).
    Unverified { size: usize, reason: String },
}

/// Training memory of a teacher/student pair, in bytes (f32 compute).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct MemoryEstimate {
    pub teacher_weights: u64,
    pub student_weights: u64,
    pub student_grads: u64,
    /// AdamW's two moments.
    pub optimizer: u64,
    /// Two full `[batch, seq, vocab]` f32 tensors (the chunked loss keeps no more).
    pub logits: u64,
    /// Student activations kept for the backward pass and their gradients while it runs, plus the
    /// teacher's largest transient.
    pub activations: u64,
    /// Short-lived full-size buffers: AdamW's update writes a parameter's new value and moments
    /// beside the old ones (three copies of the largest parameter, the token table or the head).
    pub transient: u64,
    /// The process itself: code, allocator arenas, thread stacks, the tokenizer, the tokenized
    /// data and the evaluation states ([`RUNTIME_BYTES`] plus the tokenizer's vocabulary).
    pub runtime: u64,
    pub total: u64,
}

/// What a training process holds besides the models and the step's tensors, measured: the demo
/// run's peak resident size less its estimated model memory.
pub const RUNTIME_BYTES: u64 = 160 << 20;
/// A tokenizer's memory per vocabulary entry (token strings, both maps, merges), measured on
/// Qwen2.5's 151 936-token tokenizer.
pub const TOKENIZER_BYTES_PER_TOKEN: u64 = 400;

#[derive(Clone, Debug, Serialize)]
pub struct PairReport {
    pub teacher: String,
    pub student: String,
    pub vocab: VocabCheck,
    pub batch_size: usize,
    pub seq_len: usize,
    pub memory: MemoryEstimate,
    pub machine_total_bytes: u64,
    pub machine_available_bytes: u64,
    pub fits: bool,
    pub notes: Vec<String>,
    /// The kernels a run would take on this CPU ([`crate::engine::kernels::isa::kernels`]): with
    /// `int8 portable`, `teacher_precision = "int8"` falls back to f32.
    pub cpu_kernels: String,
}

/// What the pair check needs of a model: a loaded one, or only its header
/// ([`crate::engine::header::ModelHeader`], nothing loaded).
pub trait PairModel {
    fn info(&self) -> &ModelInfo;
    fn arch(&self) -> &ArchConfig;
    fn tokenizer_ref(&self) -> Option<&Tokenizer>;
    /// Bytes its weights hold in memory as a frozen teacher.
    fn weight_bytes(&self) -> u64;
}

impl PairModel for LoadedModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }
    fn arch(&self) -> &ArchConfig {
        &self.config
    }
    fn tokenizer_ref(&self) -> Option<&Tokenizer> {
        self.tokenizer.as_ref()
    }
    fn weight_bytes(&self) -> u64 {
        self.resident_weight_bytes()
    }
}

impl PairModel for ModelHeader {
    fn info(&self) -> &ModelInfo {
        &self.info
    }
    fn arch(&self) -> &ArchConfig {
        &self.config
    }
    fn tokenizer_ref(&self) -> Option<&Tokenizer> {
        self.tokenizer.as_ref()
    }
    fn weight_bytes(&self) -> u64 {
        self.resident_bytes(self.keep_quantized)
    }
}

/// Checks a teacher/student pair for distillation at `batch_size × seq_len`.
pub fn check_pair(
    teacher: &dyn PairModel,
    student: &dyn PairModel,
    batch_size: usize,
    seq_len: usize,
) -> Result<PairReport> {
    let (t, s) = (teacher.arch(), student.arch());
    let (ti, si) = (teacher.info(), student.info());
    if t.is_causal_lm() != s.is_causal_lm() {
        return Err(Error::Invalid(format!(
            "teacher {} is a {} model and student {} a {} model; distil a causal LM into a causal LM, \
             a classifier into a classifier",
            ti.name, ti.task, si.name, si.task
        )));
    }
    if !t.is_causal_lm() && t.labels() != s.labels() {
        return Err(Error::Invalid(format!(
            "teacher labels {:?} differ from student labels {:?}",
            t.labels(),
            s.labels()
        )));
    }
    let vocab = compare_vocab(teacher, student)?;
    let mut notes = Vec::new();
    let ctx = t.context_length().min(s.context_length());
    if seq_len > ctx {
        notes.push(format!("seq_len {seq_len} exceeds the pair's context length {ctx}"));
    }
    let work = Workload {
        teacher: Some((t, teacher.weight_bytes())),
        student: (s, si.parameters),
        trainees: 1,
        batch: batch_size,
        seq: seq_len,
        checkpointing: false,
    };
    let memory = estimate(&work);
    let (total, available) = machine_memory();
    let fits = memory.total < available;
    if !fits {
        notes.push(refusal(&work, available));
    }
    Ok(PairReport {
        teacher: ti.name.clone(),
        student: si.name.clone(),
        vocab,
        batch_size,
        seq_len,
        memory,
        machine_total_bytes: total,
        machine_available_bytes: available,
        fits,
        notes,
        cpu_kernels: crate::engine::kernels::isa::kernels(),
    })
}

pub fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

fn compare_vocab(teacher: &dyn PairModel, student: &dyn PairModel) -> Result<VocabCheck> {
    let (tv, sv) = (teacher.arch().vocab_size(), student.arch().vocab_size());
    let (tt, st) = match (teacher.tokenizer_ref(), student.tokenizer_ref()) {
        (Some(a), Some(b)) => (a, b),
        _ => {
            if tv != sv {
                return Err(Error::VocabMismatch {
                    detail: format!(
                        "teacher embeds {tv} tokens, student {sv} (and a tokenizer is missing to tell more)"
                    ),
                });
            }
            return Ok(VocabCheck::Unverified { size: tv, reason: "a tokenizer.json is missing".into() });
        }
    };
    let (ta, sa) = (tt.get_vocab(true), st.get_vocab(true));
    if ta != sa {
        return Err(Error::VocabMismatch { detail: describe_difference(&ta, &sa) });
    }
    let tok_size = ta.values().map(|&i| i as usize + 1).max().unwrap_or(0);
    if tok_size > tv.min(sv) {
        return Err(Error::VocabMismatch {
            detail: format!(
                "the tokenizer has ids up to {tok_size} but an embedding table has only {} rows",
                tv.min(sv)
            ),
        });
    }
    Ok(if tv == sv {
        VocabCheck::Identical { size: tv }
    } else {
        VocabCheck::PaddingOnly { tokenizer_size: tok_size, teacher_rows: tv, student_rows: sv }
    })
}

fn describe_difference(t: &HashMap<String, u32>, s: &HashMap<String, u32>) -> String {
    let (ti, si) = (by_id(t), by_id(s));
    let differing = t.iter().filter(|(k, i)| s.get(*k) != Some(i)).count();
    let first = ti.iter().zip(&si).find(|(a, b)| a != b);
    let example = match first {
        Some(((id, a), (_, b))) => format!("; first difference at id {id}: teacher `{a}`, student `{b}`"),
        None => String::new(),
    };
    format!(
        "teacher tokenizer has {} tokens, student {}; {differing} teacher tokens are missing or have other ids in the student{example}",
        t.len(),
        s.len()
    )
}

fn by_id(m: &HashMap<String, u32>) -> Vec<(u32, &str)> {
    let mut v: Vec<(u32, &str)> = m.iter().map(|(k, &i)| (i, k.as_str())).collect();
    v.sort();
    v
}

/// What a training run holds in memory: the teacher (none when pretraining) with the bytes its
/// weights hold, the student with its parameter count, how many students train side by side (the
/// KD student and the baseline), the micro-batch, and whether the student checkpoints its
/// activations per block.
#[derive(Clone, Copy)]
pub struct Workload<'a> {
    pub teacher: Option<(&'a ArchConfig, u64)>,
    pub student: (&'a ArchConfig, u64),
    pub trainees: u64,
    pub batch: usize,
    pub seq: usize,
    pub checkpointing: bool,
}

/// Training memory of a [`Workload`] in f32.
pub fn estimate(w: &Workload) -> MemoryEstimate {
    let Workload { teacher, student, trainees, batch, seq, checkpointing } = *w;
    // In f64, cast back saturating: an absurd batch (1e18) is a huge estimate, never an overflow.
    let f = 4.0;
    let (s, sp) = (student.0, student.1 as f64);
    let (b, t) = (batch as f64, seq as f64);
    let vocab = teacher.map_or(0, |(c, _)| c.vocab_size()).max(s.vocab_size()) as f64;
    let logits = 2.0 * b * t * vocab * f;
    let (h, i, heads, layers) = (s.hidden() as f64, s.intermediate() as f64, s.heads() as f64, s.layers() as f64);
    // Per layer and token: ~16 hidden-sized tensors, 3 intermediate-sized, and 2 attention rows
    // per head kept for the backward pass — twice: candle's backward holds every node of the graph
    // until it ends, while the gradients of those activations are made. Measured: the peak of two
    // fixture runs (21.5M and 6.8M-parameter students, 2 048 tokens a step) over the estimate
    // without the doubling was 1.88× and 1.85× the activation term; with it, +5% and +6%.
    let per_layer = 2.0 * b * t * (16.0 * h + 3.0 * i + 2.0 * heads * t) * f;
    let teacher_transient = teacher.map_or(0.0, |(tc, _)| {
        b * t * (8.0 * tc.hidden() as f64 + 3.0 * tc.intermediate() as f64 + 2.0 * tc.heads() as f64 * t) * f
    });
    let n = trainees as f64;
    let largest = (s.vocab_size().max(s.intermediate()) * s.hidden()) as f64;
    let m = MemoryEstimate {
        teacher_weights: teacher.map_or(0, |(_, bytes)| bytes),
        student_weights: (n * sp * f) as u64,
        student_grads: (n * sp * f) as u64,
        optimizer: (n * 2.0 * sp * f) as u64,
        logits: logits as u64,
        // Checkpointed: each block's input kept, and one block's graph at a time.
        activations: if checkpointing {
            ((layers + 1.0) * b * t * h * f + per_layer + teacher_transient) as u64
        } else {
            (layers * per_layer + teacher_transient) as u64
        },
        transient: (3.0 * largest * f) as u64,
        runtime: RUNTIME_BYTES + TOKENIZER_BYTES_PER_TOKEN * vocab as u64,
        total: 0,
    };
    let total = [
        m.teacher_weights,
        m.student_weights,
        m.student_grads,
        m.optimizer,
        m.logits,
        m.activations,
        m.transient,
        m.runtime,
    ]
    .iter()
    .fold(0u64, |a, &x| a.saturating_add(x));
    MemoryEstimate { total, ..m }
}

/// Refuses, before anything is allocated, a run whose training memory (see [`estimate`]) exceeds
/// `available` bytes: the message names the estimate, the free memory and the largest batch
/// that fits (or a shorter sequence when no batch does).
pub fn preflight(w: &Workload, available: u64) -> Result<MemoryEstimate> {
    let m = estimate(w);
    if m.total <= available {
        return Ok(m);
    }
    Err(Error::Invalid(refusal(w, available)))
}

/// Why `w` does not fit in `available` bytes, and the largest batch (or shorter sequence) that does.
fn refusal(w: &Workload, available: u64) -> String {
    let (batch, seq) = (w.batch, w.seq);
    let need = |b: usize, t: usize| estimate(&Workload { batch: b, seq: t, ..*w }).total;
    let m = estimate(w);
    // The largest batch that fits, by bisection (the estimate grows with the batch).
    let (mut lo, mut hi) = (0usize, batch);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if need(mid, seq) <= available {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let checkpointed = Workload { checkpointing: true, ..*w };
    let advice = if lo > 0 {
        let also = if !w.checkpointing && estimate(&checkpointed).total <= available {
            "; or keep it and set activation_checkpointing = true (each block recomputed in the backward pass)"
        } else {
            ""
        };
        format!("batch_size = {lo} fits (raise grad_accum to keep the effective batch){also}")
    } else {
        let mut t = seq;
        while t > 2 && need(1, t) > available {
            t /= 2;
        }
        if need(1, t) <= available {
            format!("not even batch 1 fits at seq_len {seq}; batch_size = 1 with seq_len = {t} does")
        } else {
            "not even batch 1 fits: pick a smaller student or teacher".to_string()
        }
    };
    format!(
        "training needs about {:.1} GiB at batch_size {batch} × seq_len {seq} but {:.1} GiB of memory is available; {advice}",
        gib(m.total),
        gib(available)
    )
}

/// (total, available) memory of this machine in bytes.
pub fn machine_memory() -> (u64, u64) {
    let mut sys = sysinfo::System::new();
    sys.refresh_memory();
    (sys.total_memory(), sys.available_memory())
}
