//! The one training loop, for every task. A [`Task`] owns what differs between tasks — its
//! micro-batches, the loss of one micro-batch, its held-out metrics — and [`train`] owns the rest:
//! warmup + cosine schedule, gradient accumulation, clipping, AdamW, the precision of the steps,
//! `Step` and `Eval` events, the NaN stop, cancellation, atomic checkpoints and exact `--resume`.
//!
//! Causal-LM distillation and pretraining ([`crate::engine::distill`]) and sequence classification
//! (fine-tuning a teacher, distilling a student: [`crate::engine::classify`]) are its tasks. Every
//! role of a run (KD student, hard-label baseline) takes the same micro-batches at each step.

pub mod checkpoint;
pub mod fake_quant;
pub mod optim;

use crate::engine::context::JobContext;
use crate::engine::events::{EvalMetrics, JobEvent, Role};
use crate::engine::kernels::autocast::{self, Precision};
use crate::engine::loader::Built;
use crate::engine::models::Network;
use crate::engine::{Error, Result};
use candle_core::{backprop::GradStore, Tensor, Var};
use checkpoint::CheckpointState;
use optim::{grad_norm, lr_at, AdamW};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

/// How a run starts.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Continue from the output directory's last checkpoint.
    pub resume: bool,
}

/// The optimizer's schedule and the loop's cadence.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    pub steps: usize,
    pub warmup_steps: usize,
    pub lr: f64,
    /// The cosine decay ends at `lr * min_lr_ratio`.
    pub min_lr_ratio: f64,
    pub weight_decay: f64,
    /// Global gradient-norm clip (0: off).
    pub grad_clip: f64,
    /// Held-out evaluation every N steps (0: at the end only); always at the end.
    pub eval_every: usize,
    /// Checkpoint every N steps (0: at the end only); always at the end.
    pub checkpoint_every: usize,
    /// Matmul precision of the training steps.
    pub precision: Precision,
    /// The recipe section these settings come from (named in error messages: `distill`, `finetune`).
    pub section: &'static str,
}

/// Mean losses per predicted position (LM) or example (classification) of one step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LossParts {
    pub soft: f64,
    pub hard: f64,
    pub total: f64,
}

/// What differs between tasks.
pub trait Task {
    /// One micro-batch.
    type Batch;
    /// Held-out metrics of one model, as the task names them.
    type Metrics: Clone + Serialize + DeserializeOwned;

    /// The micro-batches of optimizer step `step` (0-based), the same for every role; their
    /// gradients are averaged (gradient accumulation).
    fn batches(&mut self, step: usize) -> Result<Vec<Self::Batch>>;

    /// Tokens the step's micro-batches hold (for throughput).
    fn tokens(&self, batches: &[Self::Batch]) -> u64;

    /// Forward and backward of one micro-batch for `role`: adds its gradients, weighted by
    /// `grads.scale`, into `grads` and returns its (unweighted) losses.
    fn accumulate(&mut self, role: Role, net: &Network, grads: &mut Grads, batch: &Self::Batch) -> Result<LossParts>;

    /// Held-out metrics of `network` (trained as `role`) after `step` steps.
    fn evaluate(&mut self, role: Role, network: &Network, step: usize, ctx: &JobContext) -> Result<Self::Metrics>;

    /// The metrics as an `Eval` event carries them.
    fn event_metrics(&self, m: &Self::Metrics) -> EvalMetrics;
}

/// The gradients of one optimizer step, summed over its micro-batches.
pub struct Grads<'v> {
    /// The trainable variables, in the optimizer's order.
    pub vars: Vec<&'v Var>,
    /// One slot per variable (`None`: no gradient yet).
    pub acc: Vec<Option<Tensor>>,
    /// The weight of the current micro-batch: 1 / the number of micro-batches.
    pub scale: f64,
}

impl Grads<'_> {
    /// Adds the gradients `store` holds for the variables.
    pub fn add(&mut self, store: &GradStore) -> Result<()> {
        add_grads(&mut self.acc, &self.vars, store)
    }
}

/// One model being trained.
pub struct Trainee<M> {
    pub role: Role,
    pub network: Network,
    pub vars: BTreeMap<String, Var>,
    pub opt: AdamW,
    /// (step, metrics) of every held-out evaluation so far.
    pub evals: Vec<(usize, M)>,
    /// Seconds spent in this model's steps.
    pub seconds: f64,
    pub tokens: u64,
    /// Quantization-aware training: the steps compute on the weights rounded by this plan.
    pub fake_quant: Option<fake_quant::FakeQuant>,
}

impl<M> Trainee<M> {
    /// A fresh trainee from a trainable network, with the schedule's AdamW.
    pub fn new(role: Role, built: Built, schedule: &Schedule) -> Result<Self> {
        let opt = AdamW::new(&built.vars, schedule.weight_decay)?;
        Ok(Self {
            role,
            network: built.network,
            vars: built.vars,
            opt,
            evals: Vec::new(),
            seconds: 0.0,
            tokens: 0,
            fake_quant: None,
        })
    }

    pub fn name(&self) -> &'static str {
        self.role.name()
    }

    /// The last held-out metrics.
    pub fn last(&self) -> Option<&M> {
        self.evals.last().map(|(_, m)| m)
    }

    /// Trained tokens per second.
    pub fn tokens_per_second(&self) -> f64 {
        self.tokens as f64 / self.seconds.max(1e-9)
    }

    pub fn parameters(&self) -> usize {
        self.vars.values().map(|v| v.elem_count()).sum()
    }

    /// The current weights.
    pub fn weights(&self) -> BTreeMap<String, Tensor> {
        crate::engine::loader::var_values(&self.vars)
    }
}

/// The last checkpoint under `root` (its `checkpoint/` folder): `None` for a fresh folder, an error
/// naming the folder when it holds a run and `resume` is false.
pub fn existing_run(root: &Path, resume: bool) -> Result<Option<CheckpointState>> {
    let state = checkpoint::load_state(root)?;
    if state.is_some() && !resume {
        return Err(Error::Invalid(format!(
            "{} already holds a run; pass --resume to continue it, or delete the folder / change output.dir",
            root.display()
        )));
    }
    Ok(state)
}

/// Deletes temporary files a killed process left behind (`.NAME.tmp-PID`, see `fsutil`), so the
/// folder and its checkpoints hold only complete files.
pub fn remove_stale_temporaries(root: &Path) {
    for dir in [root.to_path_buf(), checkpoint::dir(root)] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.contains(".tmp-") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Trains `trainees` side by side on `task` to `schedule.steps`, from `resume` (a checkpoint of
/// [`existing_run`]) or from step 0, checkpointing under `root`.
pub fn train<T: Task>(
    task: &mut T,
    trainees: &mut [Trainee<T::Metrics>],
    schedule: &Schedule,
    root: &Path,
    resume: Option<CheckpointState>,
    ctx: &JobContext,
) -> Result<()> {
    let s = schedule;
    let mut start = 0;
    if let Some(state) = resume {
        for t in trainees.iter_mut() {
            checkpoint::restore_role(root, t.name(), state.step, &t.vars, &mut t.opt)?;
            let saved = &state.trainer[t.name()];
            t.evals = serde_json::from_value(saved["evals"].clone()).unwrap_or_default();
            t.seconds = saved["seconds"].as_f64().unwrap_or(0.0);
            t.tokens = saved["tokens"].as_u64().unwrap_or(0);
        }
        start = state.step;
        ctx.log(format!("resuming {} at step {start}", root.display()));
        ctx.emit(JobEvent::Resumed { job: ctx.id, step: start, roles: trainees.iter().map(|t| t.role).collect() });
    }
    for step in start..s.steps {
        let batches = task.batches(step)?;
        let tokens = task.tokens(&batches);
        let lr = lr_at(step, s.steps, s.warmup_steps, s.lr, s.min_lr_ratio);
        for t in trainees.iter_mut() {
            ctx.check()?;
            let clock = Instant::now();
            let (parts, grad_norm) =
                optimizer_step(task, t, &batches, lr, s).map_err(|e| nan_context(e, step, root, s.section))?;
            let secs = clock.elapsed().as_secs_f64();
            t.seconds += secs;
            t.tokens += tokens;
            ctx.emit(JobEvent::Step {
                job: ctx.id,
                role: t.role,
                step: step + 1,
                total_steps: s.steps,
                loss: parts.total,
                soft_loss: parts.soft,
                hard_loss: parts.hard,
                lr,
                grad_norm,
                tokens_per_second: tokens as f64 / secs.max(1e-9),
                elapsed_s: t.seconds,
            });
        }
        let done = step + 1;
        if due(done, s.eval_every, s.steps) {
            for t in trainees.iter_mut() {
                let metrics = task.evaluate(t.role, &t.network, done, ctx)?;
                ctx.emit(JobEvent::Eval {
                    job: ctx.id,
                    role: t.role,
                    step: done,
                    metrics: task.event_metrics(&metrics),
                });
                t.evals.push((done, metrics));
            }
        }
        if due(done, s.checkpoint_every, s.steps) {
            save_checkpoint(root, done, trainees, ctx)?;
        }
    }
    // The last checkpoint holds the moments; what follows (evaluation, latency, export) does not
    // need them.
    for t in trainees.iter_mut() {
        t.opt.release_moments()?;
    }
    Ok(())
}

/// `slot += g` (`slot = g` when empty).
pub fn add_into(slot: &mut Option<Tensor>, g: &Tensor) -> Result<()> {
    *slot = Some(match slot.take() {
        Some(prev) => (prev + g)?,
        None => g.clone(),
    });
    Ok(())
}

/// Adds the gradients `store` holds for `vars` into `acc` (aligned with `vars`).
pub fn add_grads(acc: &mut [Option<Tensor>], vars: &[&Var], store: &GradStore) -> Result<()> {
    for (slot, var) in acc.iter_mut().zip(vars) {
        if let Some(g) = store.get(var.as_tensor()) {
            add_into(slot, g)?;
        }
    }
    Ok(())
}

/// True at every `every`-th step and at the last (`every` = 0: the last only).
fn due(done: usize, every: usize, steps: usize) -> bool {
    done == steps || (every > 0 && done % every == 0)
}

/// One optimizer step of one trainee: its micro-batches' gradients averaged, clipped, applied.
fn optimizer_step<T: Task>(
    task: &mut T,
    t: &mut Trainee<T::Metrics>,
    batches: &[T::Batch],
    lr: f64,
    s: &Schedule,
) -> Result<(LossParts, f64)> {
    let _precision = autocast::enter(s.precision);
    // Quantization-aware training computes on the rounded weights; AdamW updates the masters.
    let masters = t.fake_quant.as_ref().map(|f| f.enter(&t.vars)).transpose()?;
    let computed = step_grads(task, t, batches);
    if let Some(m) = masters {
        m.restore()?;
    }
    let (total, grads) = computed?;
    let (norm, grad_scale) = grad_norm(&grads, s.grad_clip)?;
    if !norm.is_finite() {
        return Err(Error::Invalid(format!("the loss is not finite (gradient norm {norm})")));
    }
    t.opt.step_scaled(&grads, lr, grad_scale)?;
    Ok((total, norm))
}

/// The micro-batches' gradients of one step, averaged, and their mean losses.
fn step_grads<T: Task>(
    task: &mut T,
    t: &Trainee<T::Metrics>,
    batches: &[T::Batch],
) -> Result<(LossParts, Vec<Tensor>)> {
    let vars: Vec<&Var> = t.opt.vars();
    let scale = 1.0 / batches.len().max(1) as f64;
    let mut g = Grads { acc: vec![None; vars.len()], vars, scale };
    let mut total = LossParts::default();
    for b in batches {
        let parts = task.accumulate(t.role, &t.network, &mut g, b)?;
        total.soft += parts.soft * scale;
        total.hard += parts.hard * scale;
        total.total += parts.total * scale;
    }
    let grads = g
        .acc
        .into_iter()
        .zip(&g.vars)
        .map(|(g, v)| g.map(Ok).unwrap_or_else(|| v.as_tensor().zeros_like()))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok((total, grads))
}

fn nan_context(e: Error, step: usize, root: &Path, section: &str) -> Error {
    match e {
        Error::Invalid(msg) if msg.contains("not finite") => {
            let last = checkpoint::load_state(root).ok().flatten().map(|s| s.step);
            Error::Invalid(format!(
                "{msg} at step {}; the last good checkpoint is {}: lower {section}.lr or raise {section}.grad_clip, then --resume",
                step + 1,
                last.map(|s| format!("step {s} in {}", checkpoint::dir(root).display())).unwrap_or_else(|| "none yet".into())
            ))
        }
        other => other,
    }
}

fn save_checkpoint<M: Serialize>(root: &Path, step: usize, trainees: &[Trainee<M>], ctx: &JobContext) -> Result<()> {
    let mut trainer = serde_json::Map::new();
    for t in trainees {
        checkpoint::save_role(root, t.name(), step, &t.vars, &t.opt)?;
        trainer.insert(t.name().into(), json!({ "evals": t.evals, "seconds": t.seconds, "tokens": t.tokens }));
    }
    let state = CheckpointState {
        step,
        roles: trainees.iter().map(|t| t.name().to_string()).collect(),
        trainer: serde_json::Value::Object(trainer),
    };
    checkpoint::commit(root, &state)?;
    for t in trainees {
        ctx.emit(JobEvent::Checkpoint {
            job: ctx.id,
            role: t.role,
            step,
            path: checkpoint::dir(root).display().to_string(),
        });
    }
    Ok(())
}
