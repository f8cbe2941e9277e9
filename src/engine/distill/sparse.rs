//! The teacher's distribution kept as its top-k logits plus the remaining probability mass.
//!
//! What is stored per position: the k largest logits and their token ids (ties broken by id, so
//! the choice is deterministic), and three statistics of the other V−k logits (the tail): its
//! log-partition f(β) = log Σ_tail e^{β z} at β = 1 (`tail_lse`), ½ and 2 (`tail_lse_at`).
//! Nothing is stored at a temperature: one record serves every T. From these the loss builds a
//! (k+1)-bucket distribution — the k tokens plus one "rest" bucket — for both models, renormalised
//! so each sums to one:
//! - teacher at temperature T: a_i = z_i / T for the k tokens and a_rest = f(1/T) for the rest
//!   bucket; log p = a − logsumexp(a). f is exact at T = 1, 2 and ½ and interpolated elsewhere
//!   ([`TailPartition`]);
//! - student at T: its full softmax, gathered at the k ids, and q_rest = 1 − Σ_k q_i.
//!
//! The divergences are then computed between these bucket distributions. At T = 1, 2 and ½ this is
//! the exact KL between the coarse-grained distributions (a lower bound on the full KL, by the
//! data-processing inequality); with k = V it equals the full loss exactly (tested). MSE on logits
//! compares the k cached logits only. Runs use this representation whether the teacher was just
//! computed or read from the cache, so a cached run equals an uncached one bit for bit.

use super::losses::{jsd_from_log_probs, kl_from_log_probs, SoftLoss};
use crate::engine::Result;
use candle_core::{DType, Device, Tensor, D};
use candle_nn::ops::log_softmax;
use rayon::prelude::*;

/// Top-k teacher logits of `n` positions.
#[derive(Clone, Debug)]
pub struct SparseTeacher {
    /// `[n, k]` u32 token ids.
    pub indices: Tensor,
    /// `[n, k]` f32 logits at T = 1.
    pub logits: Tensor,
    /// `[n]` f32 log-sum-exp of the logits outside the top k (floored for an empty tail mass).
    pub tail_lse: Tensor,
    /// `[n, 2]` f32 log Σ_tail e^{βz} at β = ½ and 2 (the tail at T = 2 and T = ½).
    pub tail_lse_at: Tensor,
    /// Vocabulary size of the teacher's logits.
    pub vocab: usize,
}

/// Floor of the rest bucket's probability (keeps logs finite when the top k hold all the mass).
pub(super) const MIN_TAIL: f64 = 1e-30;

impl SparseTeacher {
    /// Extracts the top `k` of each row of `logits` `[n, vocab]` (rows in parallel; each row's
    /// numbers do not depend on the others or on the thread count).
    pub fn from_logits(logits: &Tensor, k: usize) -> Result<Self> {
        let (n, vocab) = logits.dims2()?;
        let k = k.min(vocab);
        let data: Vec<f32> = logits.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let (mut idx, mut val) = (vec![0u32; n * k], vec![0f32; n * k]);
        let (mut tail, mut more) = (vec![0f32; n], vec![0f32; 2 * n]);
        let tail_count = vocab - k;
        data.par_chunks_exact(vocab.max(1))
            .zip(
                idx.par_chunks_mut(k.max(1))
                    .zip(val.par_chunks_mut(k.max(1)))
                    .zip(tail.par_iter_mut().zip(more.par_chunks_mut(2))),
            )
            .for_each_init(
                || Vec::with_capacity(vocab),
                |order: &mut Vec<u32>, (row, ((idx, val), (tail, more)))| {
                    order.clear();
                    order.extend(0..vocab as u32);
                    let by_value = |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b));
                    if k < vocab {
                        order.select_nth_unstable_by(k, by_value);
                    }
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
                    // The tail's sums at β = 1, ½ and 2 (relative to the row's maximum), summed directly.
                    let (mut s1, mut sh, mut s2, mut all) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
                    for &i in &order[k..] {
                        let d = row[i as usize] as f64 - max;
                        s1 += d.exp();
                        sh += (0.5 * d).exp();
                        s2 += (2.0 * d).exp();
                    }
                    let top = &mut order[..k];
                    top.sort_unstable();
                    all += s1 + top.iter().map(|&i| ((row[i as usize] as f64) - max).exp()).sum::<f64>();
                    let rest = s1 / all;
                    let ln_m = (tail_count.max(1) as f64).ln();
                    // A flat tail's log-partition, f(β) = ln m + β (f(1) − ln m): for what underflows.
                    let flat = |l1: f64, beta: f64| ln_m + beta * (l1 - ln_m);
                    let l1 = if rest >= MIN_TAIL { max + s1.ln() } else { max + all.ln() + MIN_TAIL.ln() };
                    *tail = l1 as f32;
                    let (lh, l2) = if rest >= MIN_TAIL && s2 > 0.0 {
                        (0.5 * max + sh.ln(), 2.0 * max + s2.ln())
                    } else {
                        // An empty (or vanishing) tail mass: floored, and taken as flat.
                        (flat(l1, 0.5), flat(l1, 2.0))
                    };
                    more[0] = lh as f32;
                    more[1] = l2 as f32;
                    for ((slot, value), &i) in idx.iter_mut().zip(val.iter_mut()).zip(top.iter()) {
                        *slot = i;
                        *value = row[i as usize];
                    }
                },
            );
        let dev = logits.device();
        Ok(Self {
            indices: Tensor::from_vec(idx, (n, k), dev)?,
            logits: Tensor::from_vec(val, (n, k), dev)?,
            tail_lse: Tensor::from_vec(tail, n, dev)?,
            tail_lse_at: Tensor::from_vec(more, (n, 2), dev)?,
            vocab,
        })
    }

    pub fn k(&self) -> usize {
        self.indices.dim(1).unwrap_or(0)
    }

    pub fn positions(&self) -> usize {
        self.indices.dim(0).unwrap_or(0)
    }

    fn tail_count(&self) -> usize {
        self.vocab - self.k()
    }

    /// Mean probability mass of the top k at T = 1 (how much of the teacher the cache keeps).
    pub fn mean_top_mass(&self) -> Result<f64> {
        let lse_top = self.logits.to_dtype(DType::F64)?.exp()?.sum(1)?.log()?;
        let lse_tail = self.tail_lse.to_dtype(DType::F64)?;
        // top mass = e^{lse_top} / (e^{lse_top} + e^{lse_tail})
        let frac = (lse_tail - &lse_top)?.exp()?.affine(1.0, 1.0)?.recip()?;
        Ok(frac.mean_all()?.to_scalar::<f64>()?)
    }

    /// Rows `start..start + len`.
    pub fn narrow(&self, start: usize, len: usize) -> Result<Self> {
        Ok(Self {
            indices: self.indices.narrow(0, start, len)?,
            logits: self.logits.narrow(0, start, len)?,
            tail_lse: self.tail_lse.narrow(0, start, len)?,
            tail_lse_at: self.tail_lse_at.narrow(0, start, len)?,
            vocab: self.vocab,
        })
    }

    pub fn to_device(&self, device: &Device) -> Result<Self> {
        Ok(Self {
            indices: self.indices.to_device(device)?,
            logits: self.logits.to_device(device)?,
            tail_lse: self.tail_lse.to_device(device)?,
            tail_lse_at: self.tail_lse_at.to_device(device)?,
            vocab: self.vocab,
        })
    }

    /// Stacks several position blocks (e.g. the windows of a batch) in order.
    pub fn cat(parts: &[SparseTeacher]) -> Result<Self> {
        let vocab = parts.first().map(|p| p.vocab).unwrap_or(0);
        let cat = |f: fn(&SparseTeacher) -> &Tensor| -> Result<Tensor> {
            Ok(Tensor::cat(&parts.iter().map(f).collect::<Vec<_>>(), 0)?)
        };
        Ok(Self {
            indices: cat(|p| &p.indices)?,
            logits: cat(|p| &p.logits)?,
            tail_lse: cat(|p| &p.tail_lse)?,
            tail_lse_at: cat(|p| &p.tail_lse_at)?,
            vocab,
        })
    }

    /// The rest bucket's teacher logit at temperature `t` for every position: log Σ_tail e^{z/t}
    /// (see [`TailPartition`]). Empty when the top k are the whole vocabulary.
    pub fn rest_logits(&self, t: f64) -> Result<Vec<f64>> {
        let m = self.tail_count();
        if m == 0 {
            return Ok(Vec::new());
        }
        let l1 = self.tail_lse.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let at = self.tail_lse_at.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        // The smallest cached logit bounds every tail logit from above.
        let floor = self.logits.to_dtype(DType::F32)?.min(1)?.to_vec1::<f32>()?;
        let ln_m = (m as f64).ln();
        Ok((0..l1.len())
            .map(|r| {
                let known = TailPartition { ln_m, half: at[r][0] as f64, one: l1[r] as f64, two: at[r][1] as f64 };
                known.at(1.0 / t, floor[r] as f64)
            })
            .collect())
    }

    /// Teacher bucket log-probabilities `[n, k(+1)]` at temperature `t`.
    fn bucket_log_probs(&self, t: f64) -> Result<Tensor> {
        let a_top = (&self.logits / t)?;
        let a = match self.tail_count() {
            0 => a_top,
            _ => {
                let rest: Vec<f32> = self.rest_logits(t)?.into_iter().map(|x| x as f32).collect();
                let a_rest = Tensor::from_vec(rest, (self.positions(), 1), self.logits.device())?;
                Tensor::cat(&[&a_top, &a_rest], 1)?
            }
        };
        Ok(log_softmax(&a, D::Minus1)?)
    }

    /// Student bucket log-probabilities `[n, k(+1)]` at temperature `t` from full logits `[n, V]`.
    fn student_bucket_log_probs(&self, student: &Tensor, t: f64) -> Result<Tensor> {
        let s = student.to_dtype(DType::F32)?;
        let s = if t == 1.0 { s } else { (s / t)? };
        let log_q = log_softmax(&s, D::Minus1)?;
        let log_top = log_q.gather(&self.indices, 1)?;
        if self.tail_count() == 0 {
            return Ok(log_top);
        }
        let rest = log_top.exp()?.sum_keepdim(1)?.affine(-1.0, 1.0)?.clamp(MIN_TAIL, 1.0)?.log()?;
        Ok(Tensor::cat(&[&log_top, &rest], 1)?)
    }
}

/// The tail's log-partition f(β) = log Σ_tail e^{β z} known at β = 0 (ln m, m tail tokens), ½, 1
/// and 2. f is convex and its slope never exceeds the largest tail logit, which the smallest cached
/// logit bounds from above. Between the known points f is the quadratic through the three nearest
/// (exact at T = ½, 1, 2; below the chords, as a convex f is); beyond β = 2 (T < ½) it is the
/// quadratic's continuation capped by the tangent bound f(β) ≤ f(2) + (β − 2)·z_top_min.
#[derive(Clone, Copy, Debug)]
pub struct TailPartition {
    pub ln_m: f64,
    pub half: f64,
    pub one: f64,
    pub two: f64,
}

impl TailPartition {
    pub fn at(&self, beta: f64, z_top_min: f64) -> f64 {
        let known = [(0.0, self.ln_m), (0.5, self.half), (1.0, self.one), (2.0, self.two)];
        if let Some(&(_, f)) = known.iter().find(|(b, _)| *b == beta) {
            return f;
        }
        let pts = if beta < 1.0 { [known[0], known[1], known[2]] } else { [known[1], known[2], known[3]] };
        // Lagrange's quadratic through the three points.
        let quad: f64 = (0..3)
            .map(|i| {
                let (bi, fi) = pts[i];
                let w: f64 = (0..3).filter(|&j| j != i).map(|j| (beta - pts[j].0) / (bi - pts[j].0)).product();
                fi * w
            })
            .sum();
        if beta > 2.0 {
            quad.min(self.two + (beta - 2.0) * z_top_min)
        } else {
            quad
        }
    }
}

impl SoftLoss {
    /// The soft loss against a top-k teacher, summed over positions, T²-scaled like [`SoftLoss::sum`].
    pub fn sum_sparse(self, student: &Tensor, teacher: &SparseTeacher, temperature: f64, beta: f64) -> Result<Tensor> {
        let t2 = temperature * temperature;
        if self == SoftLoss::MseLogits {
            let picked = student.to_dtype(DType::F32)?.gather(&teacher.indices, 1)?;
            let k = teacher.k() as f64;
            return Ok(((picked - &teacher.logits)?.sqr()?.sum_all()? / k)?);
        }
        let log_p = teacher.bucket_log_probs(temperature)?;
        let log_q = teacher.student_bucket_log_probs(student, temperature)?;
        let raw = match self {
            SoftLoss::ForwardKl => kl_from_log_probs(&log_p, &log_q)?,
            SoftLoss::ReverseKl => kl_from_log_probs(&log_q, &log_p)?,
            SoftLoss::Jsd => jsd_from_log_probs(&log_p, &log_q, beta)?,
            SoftLoss::MseLogits => unreachable!("handled above"),
        };
        Ok((raw * t2)?)
    }
}
