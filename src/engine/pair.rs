//! Pair checks before any run: one tokenizer for teacher and student, supported architectures of
//! the same kind, and the memory the pair needs for training against this machine's memory.

use crate::engine::loader::LoadedModel;
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
    let f = 4u64;
    let (tp, sp) = (teacher.parameter_count(), student.parameter_count());
    let (b, t) = (batch as u64, seq as u64);
    let s = &student.config;
    let vocab = s.vocab_size().max(teacher.config.vocab_size()) as u64;
    let logits = 2 * b * t * vocab * f;
    let (h, i, heads, layers) = (s.hidden() as u64, s.intermediate() as u64, s.heads() as u64, s.layers() as u64);
    // Per layer and token: ~16 hidden-sized tensors, 3 intermediate-sized, and 2 attention rows per head.
    let per_layer = b * t * (16 * h + 3 * i + 2 * heads * t) * f;
    let tc = &teacher.config;
    let teacher_transient =
        b * t * (8 * tc.hidden() as u64 + 3 * tc.intermediate() as u64 + 2 * tc.heads() as u64 * t) * f;
    let activations = layers * per_layer + teacher_transient;
    let m = MemoryEstimate {
        teacher_weights: tp * f,
        student_weights: sp * f,
        student_grads: sp * f,
        optimizer: 2 * sp * f,
        logits,
        activations,
        total: 0,
    };
    MemoryEstimate {
        total: m.teacher_weights + m.student_weights + m.student_grads + m.optimizer + m.logits + m.activations,
        ..m
    }
}

/// (total, available) memory of this machine in bytes.
pub fn machine_memory() -> (u64, u64) {
    let mut sys = sysinfo::System::new();
    sys.refresh_memory();
    (sys.total_memory(), sys.available_memory())
}
