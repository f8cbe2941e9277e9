//! Pair checks before any run: one tokenizer for teacher and student, supported architectures of
//! the same kind, and the memory the pair needs for training against this machine's memory.

use crate::engine::loader::LoadedModel;
use crate::engine::models::ArchConfig;
use crate::engine::{Error, Result};
use serde::Serialize;
use std::collections::HashMap;

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
    /// Student activations kept for the backward pass plus the teacher's largest transient.
    pub activations: u64,
    pub total: u64,
}

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
}

/// Checks a teacher/student pair for distillation at `batch_size × seq_len`.
pub fn check_pair(
    teacher: &LoadedModel,
    student: &LoadedModel,
    batch_size: usize,
    seq_len: usize,
) -> Result<PairReport> {
    let (t, s) = (&teacher.config, &student.config);
    if t.is_causal_lm() != s.is_causal_lm() {
        return Err(Error::Invalid(format!(
            "teacher {} is a {} model and student {} a {} model; distil a causal LM into a causal LM, \
             a classifier into a classifier",
            teacher.info.name, teacher.info.task, student.info.name, student.info.task
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
    let memory = estimate_memory(teacher, student, batch_size, seq_len);
    let (total, available) = machine_memory();
    let fits = memory.total < available;
    if !fits {
        notes.push(format!(
            "training needs about {:.1} GiB but {:.1} GiB is available; lower batch_size or seq_len, or pick a smaller pair",
            gib(memory.total),
            gib(available)
        ));
    }
    Ok(PairReport {
        teacher: teacher.info.name.clone(),
        student: student.info.name.clone(),
        vocab,
        batch_size,
        seq_len,
        memory,
        machine_total_bytes: total,
        machine_available_bytes: available,
        fits,
        notes,
    })
}

pub fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

fn compare_vocab(teacher: &LoadedModel, student: &LoadedModel) -> Result<VocabCheck> {
    let (tv, sv) = (teacher.config.vocab_size(), student.config.vocab_size());
    let (tt, st) = match (&teacher.tokenizer, &student.tokenizer) {
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

/// Memory for distilling `student` from `teacher` at `batch × seq` in f32.
pub fn estimate_memory(teacher: &LoadedModel, student: &LoadedModel, batch: usize, seq: usize) -> MemoryEstimate {
    let teacher = Some((&teacher.config, teacher.parameter_count()));
    let student = (&student.config, student.parameter_count());
    estimate(&Workload { teacher, student, trainees: 1, batch, seq })
}

/// What a training run holds in memory: the teacher (none when pretraining) and the student, each
/// with its parameter count, how many students train side by side (the KD student and the
/// baseline), and the micro-batch.
#[derive(Clone, Copy)]
pub struct Workload<'a> {
    pub teacher: Option<(&'a ArchConfig, u64)>,
    pub student: (&'a ArchConfig, u64),
    pub trainees: u64,
    pub batch: usize,
    pub seq: usize,
}

/// Training memory of a [`Workload`] in f32.
pub fn estimate(w: &Workload) -> MemoryEstimate {
    let Workload { teacher, student, trainees, batch, seq } = *w;
    // In f64, cast back saturating: an absurd batch (1e18) is a huge estimate, never an overflow.
    let f = 4.0;
    let (s, sp) = (student.0, student.1 as f64);
    let (b, t) = (batch as f64, seq as f64);
    let vocab = teacher.map_or(0, |(c, _)| c.vocab_size()).max(s.vocab_size()) as f64;
    let logits = 2.0 * b * t * vocab * f;
    let (h, i, heads, layers) = (s.hidden() as f64, s.intermediate() as f64, s.heads() as f64, s.layers() as f64);
    // Per layer and token: ~16 hidden-sized tensors, 3 intermediate-sized, and 2 attention rows per head.
    let per_layer = b * t * (16.0 * h + 3.0 * i + 2.0 * heads * t) * f;
    let teacher_transient = teacher.map_or(0.0, |(tc, _)| {
        b * t * (8.0 * tc.hidden() as f64 + 3.0 * tc.intermediate() as f64 + 2.0 * tc.heads() as f64 * t) * f
    });
    let n = trainees as f64;
    let m = MemoryEstimate {
        teacher_weights: teacher.map_or(0.0, |(_, tp)| tp as f64 * f) as u64,
        student_weights: (n * sp * f) as u64,
        student_grads: (n * sp * f) as u64,
        optimizer: (n * 2.0 * sp * f) as u64,
        logits: logits as u64,
        activations: (layers * per_layer + teacher_transient) as u64,
        total: 0,
    };
    let total = [m.teacher_weights, m.student_weights, m.student_grads, m.optimizer, m.logits, m.activations]
        .iter()
        .fold(0u64, |a, &x| a.saturating_add(x));
    MemoryEstimate { total, ..m }
}

/// Refuses, before anything is allocated, a run whose training memory (see [`estimate`]) exceeds
/// `available` bytes: the message names the estimate, the free memory and the largest batch
/// that fits (or a shorter sequence when no batch does).
pub fn preflight(w: &Workload, available: u64) -> Result<MemoryEstimate> {
    let (batch, seq) = (w.batch, w.seq);
    let need = |b: usize, t: usize| estimate(&Workload { batch: b, seq: t, ..*w }).total;
    let m = estimate(w);
    if m.total <= available {
        return Ok(m);
    }
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
    let advice = if lo > 0 {
        format!("batch_size = {lo} fits (raise grad_accum to keep the effective batch)")
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
    Err(Error::Invalid(format!(
        "training needs about {:.1} GiB at batch_size {batch} × seq_len {seq} but {:.1} GiB of memory is available; {advice}",
        gib(m.total),
        gib(available)
    )))
}

/// (total, available) memory of this machine in bytes.
pub fn machine_memory() -> (u64, u64) {
    let mut sys = sysinfo::System::new();
    sys.refresh_memory();
    (sys.total_memory(), sys.available_memory())
}
