//! The training loop: the KD student and its hard-label baseline, step by step on the same
//! batches, with warmup + cosine, clipping, accumulation, periodic held-out evaluation against the
//! teacher, atomic checkpoints and `--resume`. Runs on a job thread and reports `JobEvent`s.

use super::checkpoint::{self, CheckpointState};
use super::optim::{grad_norm, lr_at, AdamW};
use super::setup::{prepare, trainable, Setup};
use super::sparse::SparseTeacher;
use super::step::{accumulate_grads, chunk_rows, LossConfig, LossParts, Targets};
use super::teacher_cache::{default_root, CacheKey, TeacherCache};
use crate::engine::data::step_windows;
use crate::engine::eval::{compare_with_states, compare_with_states_at, evaluate_tokens, EvalOptions, ReferenceStates};
use crate::engine::fsutil::write_atomic;
use crate::engine::kernels::autocast;
use crate::engine::models::Network;
use crate::engine::recipe::LoadedRecipe;
use crate::engine::{Error, Result};
use crate::jobs::{EvalMetrics, JobContext, JobEvent, RunRole};
use candle_core::{Tensor, Var};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Continue from the output directory's last checkpoint.
    pub resume: bool,
}

/// One model being trained.
pub(super) struct Trainee {
    pub(super) role: RunRole,
    pub(super) network: Network,
    pub(super) vars: BTreeMap<String, Var>,
    pub(super) opt: AdamW,
    pub(super) evals: Vec<(usize, EvalMetrics)>,
    pub(super) seconds: f64,
    pub(super) tokens: u64,
}

impl Trainee {
    pub(super) fn name(&self) -> &'static str {
        match self.role {
            RunRole::Student => "student",
            RunRole::Baseline => "baseline",
            RunRole::Pretrain => "model",
        }
    }
}

/// Runs a recipe to the end (or to cancellation) and returns its summary.
pub fn run_recipe(lr: &LoadedRecipe, opts: &RunOptions, ctx: &JobContext) -> Result<serde_json::Value> {
    run_with_tokenizer(lr, opts, None, ctx)
}

/// [`run_recipe`] with a tokenizer supplied by the caller (pretraining trains its own).
pub fn run_with_tokenizer(
    lr: &LoadedRecipe,
    opts: &RunOptions,
    tokenizer: Option<(tokenizers::Tokenizer, std::path::PathBuf)>,
    ctx: &JobContext,
) -> Result<serde_json::Value> {
    let started = Instant::now();
    let r = &lr.recipe;
    let out = lr.output_dir();
    let existing = checkpoint::load_state(&out)?;
    if existing.is_some() && !opts.resume {
        return Err(Error::Invalid(format!(
            "{} already holds a run; pass --resume to continue it, or delete the folder / change output.dir",
            out.display()
        )));
    }
    let quant_formats = super::post_quant::formats(lr)?;
    let provenance = crate::engine::export::provenance::for_run(lr, ctx)?;
    let setup = prepare(lr, tokenizer, ctx)?;
    std::fs::create_dir_all(&out).map_err(|e| Error::io(format!("creating {}", out.display()), e))?;
    remove_stale_temporaries(&out);
    crate::engine::export::provenance::record(lr, &provenance, &out)?;
    write_atomic(&out.join("recipe.toml"), r.to_toml()?.as_bytes())?;
    let d = &r.distill;
    let loss = LossConfig {
        kind: r.soft_loss()?,
        temperature: d.temperature,
        alpha: d.alpha,
        beta: d.jsd_beta,
        chunk_rows: None,
    };
    let roles = match (&setup.teacher, d.baseline) {
        (None, _) => vec![RunRole::Pretrain],
        (Some(_), true) => vec![RunRole::Student, RunRole::Baseline],
        (Some(_), false) => vec![RunRole::Student],
    };
    let mut trainees = roles
        .iter()
        .map(|&role| {
            let built = trainable(&setup.student_config, &setup.initial, &setup.device)?;
            let opt = AdamW::new(&built.vars, d.weight_decay)?;
            Ok(Trainee {
                role,
                network: built.network,
                vars: built.vars,
                opt,
                evals: Vec::new(),
                seconds: 0.0,
                tokens: 0,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if let Some(note) = autocast::emulation_note("precision", d.precision, &setup.device) {
        ctx.log(note);
    }
    if setup.teacher.is_some() && setup.teacher_precision != d.precision {
        if let Some(note) = autocast::emulation_note("teacher_precision", setup.teacher_precision, &setup.device) {
            ctx.log(note);
        }
    }
    let mut start_step = 0;
    if let Some(state) = existing {
        for t in trainees.iter_mut() {
            checkpoint::restore_role(&out, t.name(), state.step, &t.vars, &mut t.opt)?;
            let saved = &state.trainer[t.name()];
            t.evals = serde_json::from_value(saved["evals"].clone()).unwrap_or_default();
            t.seconds = saved["seconds"].as_f64().unwrap_or(0.0);
            t.tokens = saved["tokens"].as_u64().unwrap_or(0);
        }
        start_step = state.step;
        ctx.log(format!("resuming {} at step {start_step}", out.display()));
    }
    let mut cache = match (&setup.teacher, d.cache_top_k) {
        (Some(t), k) if k > 0 => {
            let key = CacheKey::new(
                &t.resolved.weight_files(),
                t.resolved.revision.as_deref(),
                &setup.train.tokens,
                r.data.seq_len,
                k,
                t.config.vocab_size(),
            )
            .at_precision(setup.teacher_precision);
            Some(TeacherCache::open(&default_root(), &key)?)
        }
        _ => None,
    };
    let samples = d.batch_size * d.grad_accum;
    let eval_opts = EvalOptions { seq_len: r.data.seq_len, max_tokens: None, batch_size: None };
    let teacher_metrics = match &setup.teacher {
        Some(t) => Some(evaluate_tokens(
            &t.network,
            &setup.eval_tokens,
            &eval_opts,
            &setup.device,
            &mut |_, _| {},
            ctx.cancel_flag(),
        )?),
        None => None,
    };
    let teacher_states = match &setup.teacher {
        Some(t) => Some(ReferenceStates::compute(
            &t.network,
            &setup.eval_tokens,
            r.data.seq_len,
            &setup.device,
            ctx.cancel_flag(),
        )?),
        None => None,
    };
    // How far the teacher the steps use (int8, bf16) is from the f32 teacher, on the eval text.
    let teacher_fidelity = match (&setup.teacher, &teacher_states) {
        (Some(t), Some(states)) if !setup.teacher_precision.is_f32() => {
            let f = compare_with_states_at(
                &t.network,
                states,
                &t.network,
                setup.teacher_precision,
                &eval_opts,
                &setup.device,
                &mut |_, _| {},
                ctx.cancel_flag(),
            )?;
            ctx.log(format!(
                "teacher at teacher_precision = \"{}\": KL to the f32 teacher {:.4} nats, top-1 agreement {:.1}%, \
                 perplexity {:.3} (f32 {:.3}) on the eval text",
                setup.teacher_precision.name(),
                f.kl,
                100.0 * f.agreement,
                f.candidate.perplexity,
                f.reference_perplexity
            ));
            Some(f)
        }
        _ => None,
    };
    for step in start_step..d.steps {
        let windows = step_windows(setup.train.len(), d.seed, step, samples);
        let lr_now = lr_at(step, d.steps, d.warmup_steps, d.lr, d.min_lr_ratio);
        for t in trainees.iter_mut() {
            ctx.check()?;
            let clock = Instant::now();
            let (parts, grad_norm) = train_step(
                t,
                &setup,
                &windows,
                d.batch_size,
                &loss,
                cache.as_mut(),
                d.grad_clip,
                lr_now,
                d.cache_top_k,
            )
            .map_err(|e| nan_context(e, step, &out))?;
            let secs = clock.elapsed().as_secs_f64();
            let tokens = (samples * r.data.seq_len) as u64;
            t.seconds += secs;
            t.tokens += tokens;
            ctx.emit(JobEvent::Step {
                job: ctx.id,
                role: t.role,
                step: step + 1,
                total_steps: d.steps,
                loss: parts.total,
                soft_loss: parts.soft,
                hard_loss: parts.hard,
                lr: lr_now,
                grad_norm,
                tokens_per_second: tokens as f64 / secs.max(1e-9),
                elapsed_s: t.seconds,
            });
        }
        let done = step + 1;
        if done % d.eval_every == 0 || done == d.steps {
            for t in trainees.iter_mut() {
                let metrics = evaluate(&setup, teacher_states.as_ref(), &t.network, &eval_opts, ctx)?;
                ctx.emit(JobEvent::Eval { job: ctx.id, role: t.role, step: done, metrics: metrics.clone() });
                t.evals.push((done, metrics));
            }
        }
        if done % d.checkpoint_every == 0 || done == d.steps {
            save_checkpoint(&out, done, &trainees, ctx)?;
        }
    }
    super::summary::finish(
        lr,
        &setup,
        &trainees,
        teacher_metrics,
        teacher_fidelity.map(|f| (setup.teacher_precision, f)),
        cache.as_ref(),
        quant_formats.as_deref(),
        started,
        ctx,
    )
}

/// Deletes temporary files a killed process left behind (`.NAME.tmp-PID`, see `fsutil`), so the
/// output directory holds only complete files.
fn remove_stale_temporaries(out: &Path) {
    for dir in [out.to_path_buf(), checkpoint::dir(out)] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.contains(".tmp-") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

fn nan_context(e: Error, step: usize, out: &Path) -> Error {
    match e {
        Error::Invalid(msg) if msg.contains("not finite") => {
            let last = checkpoint::load_state(out).ok().flatten().map(|s| s.step);
            Error::Invalid(format!(
                "{msg} at step {}; the last good checkpoint is {}: lower distill.lr or raise distill.grad_clip, then --resume",
                step + 1,
                last.map(|s| format!("step {s} in {}", checkpoint::dir(out).display())).unwrap_or_else(|| "none yet".into())
            ))
        }
        other => other,
    }
}

/// The teacher's top-k for each window, from the cache or computed (and cached) now; the windows
/// the cache lacks go through the teacher in one batch.
fn sparse_targets(
    setup: &Setup,
    windows: &[usize],
    cache: Option<&mut TeacherCache>,
    k: usize,
) -> Result<SparseTeacher> {
    let teacher = setup.teacher.as_ref().expect("sparse targets need a teacher");
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
        let _precision = autocast::enter(setup.teacher_precision);
        let hidden = teacher.network.hidden_states(&Tensor::from_vec(flat, (missing.len(), t), &setup.device)?)?;
        let hidden = hidden.reshape((missing.len() * t, hidden.dim(2)?))?;
        let step = chunk_rows(teacher.config.vocab_size());
        for (j, &i) in missing.iter().enumerate() {
            let mut blocks = Vec::new();
            for start in (0..t).step_by(step) {
                let n = step.min(t - start);
                let logits = teacher.network.lm_logits(&hidden.narrow(0, j * t + start, n)?)?;
                blocks.push(SparseTeacher::from_logits(&logits, k)?);
            }
            let sp = SparseTeacher::cat(&blocks)?;
            if let Some(c) = cache.as_deref_mut() {
                c.put(windows[i], &sp)?;
            }
            parts[i] = Some(sp);
        }
    }
    SparseTeacher::cat(&parts.into_iter().map(|p| p.expect("every window filled")).collect::<Vec<_>>())
}

#[allow(clippy::too_many_arguments)]
fn train_step(
    t: &mut Trainee,
    setup: &Setup,
    windows: &[usize],
    batch: usize,
    loss: &LossConfig,
    mut cache: Option<&mut TeacherCache>,
    clip: f64,
    lr: f64,
    k: usize,
) -> Result<(LossParts, f64)> {
    // The student's forward and backward run at the recipe's precision, the teacher's forward at
    // its own (`teacher_precision`, the same when absent).
    let _precision = autocast::enter(setup.precision);
    let vars: Vec<&Var> = t.opt.vars();
    let mut acc: Vec<Option<Tensor>> = vec![None; vars.len()];
    let micro: Vec<&[usize]> = windows.chunks(batch).collect();
    let scale = 1.0 / micro.len() as f64;
    let mut total = LossParts::default();
    for mb in micro {
        let flat: Vec<u32> = mb.iter().flat_map(|&w| setup.train.window(w).iter().copied()).collect();
        let ids = Tensor::from_vec(flat, (mb.len(), setup.train.seq_len), &setup.device)?;
        let targets = match (t.role, &setup.teacher) {
            (RunRole::Student, Some(_)) if k > 0 => {
                Targets::Sparse(sparse_targets(setup, mb, cache.as_deref_mut(), k)?)
            }
            (RunRole::Student, Some(teacher)) => {
                let input = ids.narrow(1, 0, setup.train.seq_len - 1)?;
                let h = {
                    let _teacher = autocast::enter(setup.teacher_precision);
                    teacher.network.hidden_states(&input)?
                };
                let n = h.dim(0)? * h.dim(1)?;
                Targets::Dense {
                    teacher: &teacher.network,
                    hidden: h.reshape((n, h.dim(2)?))?,
                    precision: setup.teacher_precision,
                }
            }
            _ => Targets::None,
        };
        let parts = accumulate_grads(&t.network, &vars, &mut acc, &ids, &targets, loss, scale)?;
        total.soft += parts.soft * scale;
        total.hard += parts.hard * scale;
        total.total += parts.total * scale;
    }
    let grads = acc
        .into_iter()
        .zip(&vars)
        .map(|(g, v)| g.map(Ok).unwrap_or_else(|| v.as_tensor().zeros_like()))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let (norm, grad_scale) = grad_norm(&grads, clip)?;
    if !norm.is_finite() {
        return Err(Error::Invalid(format!("the loss is not finite (gradient norm {norm})")));
    }
    t.opt.step_scaled(&grads, lr, grad_scale)?;
    Ok((total, norm))
}

fn evaluate(
    setup: &Setup,
    states: Option<&ReferenceStates>,
    network: &Network,
    opts: &EvalOptions,
    ctx: &JobContext,
) -> Result<EvalMetrics> {
    Ok(match (&setup.teacher, states) {
        (Some(t), Some(states)) => {
            let c = compare_with_states(
                &t.network,
                states,
                network,
                opts,
                &setup.device,
                &mut |_, _| {},
                ctx.cancel_flag(),
            )?;
            EvalMetrics {
                perplexity: c.candidate.perplexity,
                top1_accuracy: c.candidate.top1_accuracy,
                kl_to_teacher: Some(c.kl),
                agreement: Some(c.agreement),
            }
        }
        _ => {
            let e =
                evaluate_tokens(network, &setup.eval_tokens, opts, &setup.device, &mut |_, _| {}, ctx.cancel_flag())?;
            EvalMetrics {
                perplexity: e.perplexity,
                top1_accuracy: e.top1_accuracy,
                kl_to_teacher: None,
                agreement: None,
            }
        }
    })
}

fn save_checkpoint(out: &Path, step: usize, trainees: &[Trainee], ctx: &JobContext) -> Result<()> {
    let mut trainer = serde_json::Map::new();
    for t in trainees {
        checkpoint::save_role(out, t.name(), step, &t.vars, &t.opt)?;
        trainer.insert(t.name().into(), json!({ "evals": t.evals, "seconds": t.seconds, "tokens": t.tokens }));
    }
    let state = CheckpointState {
        step,
        roles: trainees.iter().map(|t| t.name().to_string()).collect(),
        trainer: serde_json::Value::Object(trainer),
    };
    checkpoint::commit(out, &state)?;
    for t in trainees {
        ctx.emit(JobEvent::Checkpoint {
            job: ctx.id,
            role: t.role,
            step,
            path: checkpoint::dir(out).display().to_string(),
        });
    }
    Ok(())
}
