//! What the KD student's soft loss compares it with, for one micro-batch: the teacher's hidden
//! states (its dense logits are computed chunk by chunk in the step) or its top-k, from the
//! teacher-logit cache or computed now.

use super::setup::Setup;
use super::sparse::SparseTeacher;
use super::step::{chunk_rows, Targets};
use super::teacher_cache::TeacherCache;
use crate::engine::kernels::autocast;
use crate::engine::Result;
use candle_core::Tensor;

/// The teacher's top-k for each window, from the cache or computed (and cached) now; the windows
/// the cache lacks go through the teacher in one batch.
pub(super) fn sparse_targets(
    setup: &Setup,
    windows: &[usize],
    cache: Option<&mut TeacherCache>,
    k: usize,
) -> Result<SparseTeacher> {
    let mut cache = cache;
    let mut parts: Vec<Option<SparseTeacher>> = Vec::with_capacity(windows.len());
    for &w in windows {
        parts.push(match cache.as_deref_mut() {
            Some(c) => c.get(w, &setup.device)?,
            None => None,
        });
    }
    let missing: Vec<usize> = (0..windows.len()).filter(|&i| parts[i].is_none()).collect();
    if !missing.is_empty() {
        let t = setup.train.seq_len - 1;
        let flat: Vec<u32> =
            missing.iter().flat_map(|&i| setup.train.window(windows[i])[..t].iter().copied()).collect();
        let all = teacher_top_k(setup, &Tensor::from_vec(flat, (missing.len(), t), &setup.device)?, k)?;
        for (j, &i) in missing.iter().enumerate() {
            let sp = all.narrow(j * t, t)?;
            if let Some(c) = cache.as_deref_mut() {
                c.put(windows[i], &sp)?;
            }
            parts[i] = Some(sp);
        }
    }
    SparseTeacher::cat(&parts.into_iter().map(|p| p.expect("every window filled")).collect::<Vec<_>>())
}

/// The teacher's hidden states at every position of `input` (`[b, t]`), at its precision: its
/// dense logits are computed from them chunk by chunk in the step.
pub(super) fn dense_targets<'a>(setup: &'a Setup, input: &Tensor) -> Result<Targets<'a>> {
    let teacher = setup.teacher.as_ref().expect("dense targets need a teacher");
    let h = {
        let _teacher = autocast::enter(setup.teacher_precision);
        teacher.network.hidden_states(input)?
    };
    let n = h.dim(0)? * h.dim(1)?;
    Ok(Targets::Dense {
        teacher: &teacher.network,
        hidden: h.reshape((n, h.dim(2)?))?,
        precision: setup.teacher_precision,
    })
}

/// The teacher's top-k at every position of `input` (`[b, t]`), rows in order: its head in chunks
/// of rows across the windows (fewer, larger products), at the teacher's precision.
pub(super) fn teacher_top_k(setup: &Setup, input: &Tensor, k: usize) -> Result<SparseTeacher> {
    let teacher = setup.teacher.as_ref().expect("top-k targets need a teacher");
    let _precision = autocast::enter(setup.teacher_precision);
    let hidden = teacher.network.hidden_states(input)?;
    let rows = hidden.dim(0)? * hidden.dim(1)?;
    let hidden = hidden.reshape((rows, hidden.dim(2)?))?;
    let step = chunk_rows(teacher.config.vocab_size());
    let mut blocks = Vec::new();
    for start in (0..rows).step_by(step) {
        let logits = teacher.network.lm_logits(&hidden.narrow(0, start, step.min(rows - start))?)?;
        blocks.push(SparseTeacher::from_logits(&logits, k)?);
    }
    SparseTeacher::cat(&blocks)
}
