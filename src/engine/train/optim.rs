//! AdamW (PyTorch semantics, decoupled weight decay, none on norms and biases), the warmup + cosine
//! schedule, and global-norm gradient clipping. candle has neither a scheduler nor clipping, and its
//! AdamW keeps its moments private, so resuming a run needs this one.

use crate::engine::Result;
use candle_core::{DType, Tensor, Var};
use std::collections::BTreeMap;

/// One trainable parameter with its optimizer state.
struct Slot {
    name: String,
    var: Var,
    decay: bool,
    m: Tensor,
    v: Tensor,
}

pub struct AdamW {
    slots: Vec<Slot>,
    /// Optimizer steps taken (for bias correction).
    pub t: usize,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl AdamW {
    /// Parameters in name order; matrices and embeddings decay, 1-D tensors (norms, biases) do not.
    pub fn new(vars: &BTreeMap<String, Var>, weight_decay: f64) -> Result<Self> {
        let slots = vars
            .iter()
            .map(|(name, var)| {
                let zeros = var.as_tensor().zeros_like()?;
                Ok(Slot { name: name.clone(), var: var.clone(), decay: var.rank() >= 2, m: zeros.clone(), v: zeros })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { slots, t: 0, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay })
    }

    /// The parameters, in the order `step` expects their gradients.
    pub fn vars(&self) -> Vec<&Var> {
        self.slots.iter().map(|s| &s.var).collect()
    }

    /// Applies one update with gradients aligned to [`AdamW::vars`].
    pub fn step(&mut self, grads: &[Tensor], lr: f64) -> Result<()> {
        self.step_scaled(grads, lr, 1.0)
    }

    /// [`AdamW::step`] with every gradient multiplied by `grad_scale` first (the clipping factor
    /// of [`grad_norm`]), without materialising the scaled gradients.
    pub fn step_scaled(&mut self, grads: &[Tensor], lr: f64, grad_scale: f64) -> Result<()> {
        self.t += 1;
        let (b1, b2) = (self.beta1, self.beta2);
        let bc1 = 1.0 - b1.powi(self.t as i32);
        let bc2 = 1.0 - b2.powi(self.t as i32);
        for (slot, g) in self.slots.iter_mut().zip(grads) {
            let decay = (slot.decay && self.weight_decay > 0.0).then_some(1.0 - lr * self.weight_decay);
            let c = Coefficients { b1, b2, bc1, bc2, eps: self.eps, lr, decay, grad_scale };
            if let Some((m, v, p)) = fused_update(slot, g, &c)? {
                slot.m = m;
                slot.v = v;
                slot.var.set(&p)?;
                continue;
            }
            let scaled;
            let g = if grad_scale != 1.0 {
                scaled = (g * grad_scale)?;
                &scaled
            } else {
                g
            };
            slot.m = ((&slot.m * b1)? + (g * (1.0 - b1))?)?;
            slot.v = ((&slot.v * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let p = slot.var.as_tensor();
            let p = match decay {
                Some(keep) => (p * keep)?,
                None => p.clone(),
            };
            let update = ((&slot.m / bc1)? / ((&slot.v / bc2)?.sqrt()? + self.eps)?)?;
            slot.var.set(&(p - (update * lr)?)?)?;
        }
        Ok(())
    }

    /// Drops the moments (training is over and the last checkpoint holds them): the memory of two
    /// more copies of the model goes back before the final evaluations and latency measurements.
    pub fn release_moments(&mut self) -> Result<()> {
        for s in &mut self.slots {
            let empty = Tensor::zeros(0, s.m.dtype(), s.m.device())?;
            s.m = empty.clone();
            s.v = empty;
        }
        Ok(())
    }

    /// Moments by name (`m.NAME`, `v.NAME`) for a checkpoint.
    pub fn state(&self) -> BTreeMap<String, Tensor> {
        let mut out = BTreeMap::new();
        for s in &self.slots {
            out.insert(format!("m.{}", s.name), s.m.clone());
            out.insert(format!("v.{}", s.name), s.v.clone());
        }
        out
    }

    /// Restores moments saved by [`AdamW::state`] and the step count.
    pub fn load_state(&mut self, state: &BTreeMap<String, Tensor>, t: usize) -> Result<()> {
        for s in &mut self.slots {
            let get = |k: String| {
                state.get(&k).cloned().ok_or_else(|| crate::engine::Error::MissingTensor {
                    name: k,
                    context: "optimizer state of the checkpoint".into(),
                })
            };
            s.m = get(format!("m.{}", s.name))?;
            s.v = get(format!("v.{}", s.name))?;
        }
        self.t = t;
        Ok(())
    }
}

/// The scalars of one update.
struct Coefficients {
    b1: f64,
    b2: f64,
    bc1: f64,
    bc2: f64,
    eps: f64,
    lr: f64,
    /// `1 - lr·weight_decay` for decayed parameters.
    decay: Option<f64>,
    /// Factor on the gradient (clipping).
    grad_scale: f64,
}

/// Runs `f` on the contiguous f32 data of a CPU tensor (`None`: another dtype, device or layout).
fn with_cpu_slice<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    let (storage, layout) = t.storage_and_layout();
    match (&*storage, layout.contiguous_offsets()) {
        (candle_core::Storage::Cpu(candle_core::CpuStorage::F32(v)), Some((a, b))) => Some(f(&v[a..b])),
        _ => None,
    }
}

/// The AdamW update of one f32 CPU parameter in a single parallel pass that reads the parameter,
/// its moments and its gradient where they are and writes the three new tensors (`None`: another
/// dtype, device or layout, left to the candle ops). Every element goes through the same f32
/// operations, in the same order, as the candle expression it replaces (candle's `x * s` is
/// `x · f32(s) + 0`), so the results are bit-identical; it only skips a dozen full-size temporaries.
fn fused_update(slot: &Slot, g: &Tensor, c: &Coefficients) -> Result<Option<(Tensor, Tensor, Tensor)>> {
    use crate::engine::kernels::vmath;
    use rayon::prelude::*;
    let p = slot.var.as_tensor();
    if p.dtype() != DType::F32 || g.dtype() != DType::F32 || !p.device().is_cpu() {
        return Ok(None);
    }
    let f = |x: f64| x as f32;
    let (b1, nb1, b2, nb2) = (f(c.b1), f(1.0 - c.b1), f(c.b2), f(1.0 - c.b2));
    let (ibc1, ibc2, eps, lr) = (f(1.0 / c.bc1), f(1.0 / c.bc2), f(c.eps), f(c.lr));
    let (keep, gs) = (c.decay.map(f), (c.grad_scale != 1.0).then(|| f(c.grad_scale)));
    let n = p.elem_count();
    // New tensors, not zero-filled: every element is written once below.
    let (mut pn, mut mn, mut vn) =
        (Vec::<f32>::with_capacity(n), Vec::<f32>::with_capacity(n), Vec::<f32>::with_capacity(n));
    const CHUNK: usize = 1 << 14;
    let done = with_cpu_slice(p, |pv| {
        with_cpu_slice(&slot.m, |mv| {
            with_cpu_slice(&slot.v, |vv| {
                with_cpu_slice(g, |gv| {
                    if [mv.len(), vv.len(), gv.len()] != [n; 3] {
                        return false;
                    }
                    let (pu, mu, vu) = (
                        &mut pn.spare_capacity_mut()[..n],
                        &mut mn.spare_capacity_mut()[..n],
                        &mut vn.spare_capacity_mut()[..n],
                    );
                    (pu.par_chunks_mut(CHUNK).zip(mu.par_chunks_mut(CHUNK)).zip(vu.par_chunks_mut(CHUNK)))
                        .zip(pv.par_chunks(CHUNK).zip(mv.par_chunks(CHUNK)).zip(vv.par_chunks(CHUNK)))
                        .zip(gv.par_chunks(CHUNK))
                        .for_each(|((((pn, mn), vn), ((pv, mv), vv)), gv)| {
                            vmath::with_wide_simd(
                                #[inline(always)]
                                || {
                                    for i in 0..pn.len() {
                                        let g = match gs {
                                            Some(s) => gv[i] * s + 0.0,
                                            None => gv[i],
                                        };
                                        let m = (mv[i] * b1 + 0.0) + (g * nb1 + 0.0);
                                        let v = (vv[i] * b2 + 0.0) + ((g * g) * nb2 + 0.0);
                                        let decayed = match keep {
                                            Some(k) => pv[i] * k + 0.0,
                                            None => pv[i],
                                        };
                                        let update = (m * ibc1 + 0.0) / ((v * ibc2 + 0.0).sqrt() * 1.0 + eps);
                                        mn[i].write(m);
                                        vn[i].write(v);
                                        pn[i].write(decayed - (update * lr + 0.0));
                                    }
                                },
                            )
                        });
                    true
                })
            })
        })
    });
    if done.flatten().flatten().flatten() != Some(true) {
        return Ok(None);
    }
    // SAFETY: the pass above wrote all n elements of each.
    unsafe {
        pn.set_len(n);
        mn.set_len(n);
        vn.set_len(n);
    }
    let (shape, dev) = (p.shape().clone(), p.device());
    Ok(Some((
        Tensor::from_vec(mn, shape.clone(), dev)?,
        Tensor::from_vec(vn, shape.clone(), dev)?,
        Tensor::from_vec(pn, shape, dev)?,
    )))
}

/// Learning rate at `step` (0-based): linear warmup to `lr`, then cosine decay to `lr * min_ratio`.
/// A warmup longer than the run (`--set distill.steps=4` on a recipe warming up for 50) ramps
/// until the end and never decays, as transformers' schedulers do.
pub fn lr_at(step: usize, steps: usize, warmup: usize, lr: f64, min_ratio: f64) -> f64 {
    if step < warmup {
        return lr * (step + 1) as f64 / warmup as f64;
    }
    let span = (steps - warmup).max(1) as f64;
    let progress = ((step - warmup) as f64 / span).min(1.0);
    let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
    lr * (min_ratio + (1.0 - min_ratio) * cosine)
}

/// The global L2 norm of `grads` and the factor that brings it down to `max_norm` (> 0; 1 when the
/// norm is within it or clipping is off). Sums of squares of f32 CPU gradients are taken in one
/// parallel pass each, in f64.
pub fn grad_norm(grads: &[Tensor], max_norm: f64) -> Result<(f64, f64)> {
    use crate::engine::kernels::vmath;
    use rayon::prelude::*;
    let mut sq = 0f64;
    for g in grads {
        let fast = with_cpu_slice(g, |x| {
            x.par_chunks(1 << 14)
                .map(|c| {
                    vmath::with_wide_simd(
                        #[inline(always)]
                        || vmath::sum_map(c, |v| v * v),
                    )
                })
                .sum::<f64>()
        });
        sq += match fast {
            Some(s) => s,
            None => g.sqr()?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?,
        };
    }
    let norm = sq.sqrt();
    let scale = if max_norm > 0.0 && norm > max_norm { max_norm / (norm + 1e-6) } else { 1.0 };
    Ok((norm, scale))
}
