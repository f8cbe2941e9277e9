//! Causal-LM distillation (and pretraining) as a [`Task`] of the one training loop: the KD student
//! and its hard-label baseline on the same windows, the teacher's distribution dense or as a cached
//! top-k, held-out evaluation against the teacher. Around the loop: the run's setup, the teacher's
//! own metrics (and its fidelity at `teacher_precision`), and the summary with the `[quantize]` sweep.

use super::on_policy::{OnPolicy, Writer};
use super::setup::{prepare, trainable, Setup};
use super::step::{accumulate_grads, accumulate_grads_labelled, LossConfig, Targets};
use super::targets::{dense_targets, sparse_targets, teacher_top_k};
use super::teacher_cache::{CacheKey, TeacherCache};
use crate::engine::context::JobContext;
use crate::engine::data::step_windows;
use crate::engine::eval::{compare_with_states, evaluate_tokens, EvalOptions, ReferenceStates};
use crate::engine::events::{EvalMetrics, Role};
use crate::engine::fsutil::write_atomic;
use crate::engine::fsutil::FolderLock;
use crate::engine::kernels::autocast;
use crate::engine::library;
use crate::engine::models::Network;
use crate::engine::recipe::teacher_precision::TeacherPrecision;
use crate::engine::recipe::LoadedRecipe;
use crate::engine::train::{
    existing_run, remove_stale_temporaries, train, Grads, LossParts, RunOptions, Schedule, Task, Trainee,
};
use crate::engine::{Error, Result};
use candle_core::Tensor;

/// Runs a recipe to the end (or to cancellation) and returns its summary: a run of the library,
/// in the recipe's `output.dir` (or, when that holds a finished run, a new numbered folder beside
/// it); a recipe with a `[sweep]` runs each of its members.
pub fn run_recipe(lr: &LoadedRecipe, opts: &RunOptions, ctx: &JobContext) -> Result<serde_json::Value> {
    let dir = library::fresh_dir(&lr.output_dir(), opts.resume)?;
    let lr = &library::redirect(lr, &dir, ctx);
    if let Some(plan) = &lr.sweep {
        return library::sweep::run(lr, plan, &dir, ctx);
    }
    let _lock = FolderLock::acquire(&dir, "distill-tui run")?;
    let record = library::RunRecord::new("distill", &lr.path, &lr.recipe.to_toml()?);
    library::recorded(ctx, &dir, record, |ctx| run_with_tokenizer(lr, opts, None, ctx))
}

/// The LM task: windows of the training text, the KD loss for the student, labels for the rest.
struct LmTask<'a> {
    setup: &'a Setup,
    loss: LossConfig,
    cache: Option<TeacherCache>,
    /// Top-k of the teacher's distribution the steps use (0: the dense distribution).
    top_k: usize,
    batch_size: usize,
    /// Windows per optimizer step (batch × accumulation).
    samples: usize,
    seed: u64,
    teacher_states: Option<ReferenceStates>,
    eval_opts: EvalOptions,
    /// `[distill.on_policy]`: micro-batches continued by the student or the teacher.
    on_policy: Option<OnPolicy>,
    /// The optimizer step being computed (0-based).
    step: usize,
}

impl Task for LmTask<'_> {
    type Batch = Vec<usize>;
    type Metrics = EvalMetrics;

    fn batches(&mut self, step: usize) -> Result<Vec<Vec<usize>>> {
        self.step = step;
        let windows = step_windows(self.setup.train.len(), self.seed, step, self.samples);
        Ok(windows.chunks(self.batch_size).map(<[usize]>::to_vec).collect())
    }

    fn tokens(&self, batches: &[Vec<usize>]) -> u64 {
        (batches.iter().map(Vec::len).sum::<usize>() * self.eval_opts.seq_len) as u64
    }

    fn accumulate(&mut self, role: Role, net: &Network, grads: &mut Grads, mb: &Vec<usize>) -> Result<LossParts> {
        let setup = self.setup;
        if let (Some(policy), Role::Student) = (self.on_policy.as_mut(), role) {
            match policy.writer(self.step, mb[0]) {
                Writer::Text => policy.count_text(),
                writer => return self.accumulate_written(writer, net, grads, mb),
            }
        }
        let flat: Vec<u32> = mb.iter().flat_map(|&w| setup.train.window(w).iter().copied()).collect();
        let ids = Tensor::from_vec(flat, (mb.len(), setup.train.seq_len), &setup.device)?;
        // The student's forward and backward run at the recipe's precision (entered by the loop),
        // the teacher's forward at its own (`teacher_precision`, the same when absent).
        // At alpha = 0 the soft loss weighs nothing: no teacher forward, no cache read (the student
        // trains on hard labels exactly as the baseline does, e.g. a baseline run of its own).
        let targets = match (role, &setup.teacher) {
            (Role::Student, Some(_)) if self.loss.alpha == 0.0 => Targets::None,
            (Role::Student, Some(_)) if self.top_k > 0 => {
                Targets::Sparse(sparse_targets(setup, mb, self.cache.as_mut(), self.top_k)?)
            }
            (Role::Student, Some(_)) => dense_targets(setup, &ids.narrow(1, 0, setup.train.seq_len - 1)?)?,
            _ => Targets::None,
        };
        accumulate_grads(net, &grads.vars, &mut grads.acc, &ids, &targets, &self.loss, grads.scale)
    }

    fn evaluate(&mut self, _role: Role, network: &Network, _step: usize, ctx: &JobContext) -> Result<EvalMetrics> {
        // (the KD student's on-policy micro-batches are in `accumulate_written`)
        evaluate(self.setup, self.teacher_states.as_ref(), network, &self.eval_opts, ctx)
    }

    fn event_metrics(&self, m: &EvalMetrics) -> EvalMetrics {
        m.clone()
    }
}

impl LmTask<'_> {
    /// The KD student's micro-batch with each window continued after its prompt by `writer` (the
    /// student itself, or the teacher): the teacher's distribution on that sequence (dense or its
    /// top k, computed now: the cache holds the text's windows), hard labels but for the tokens
    /// the student wrote.
    fn accumulate_written(
        &mut self,
        writer: Writer,
        net: &Network,
        grads: &mut Grads,
        mb: &[usize],
    ) -> Result<LossParts> {
        let setup = self.setup;
        let teacher = setup.teacher.as_ref().expect("on-policy distillation has a teacher");
        let policy = self.on_policy.as_mut().expect("an on-policy task");
        let t = setup.train.seq_len;
        let tokens: Vec<&[u32]> = mb.iter().map(|&w| setup.train.window(w)).collect();
        let (flat, labels) = match writer {
            Writer::Teacher => {
                let _teacher = autocast::enter(setup.teacher_precision);
                policy.continue_windows(&teacher.network, writer, self.step, mb, &tokens, &setup.device)?
            }
            _ => policy.continue_windows(net, writer, self.step, mb, &tokens, &setup.device)?,
        };
        let ids = Tensor::from_vec(flat, (mb.len(), t), &setup.device)?;
        let labels = Tensor::from_vec(labels, mb.len() * (t - 1), &setup.device)?;
        let input = ids.narrow(1, 0, t - 1)?;
        let targets = if self.top_k > 0 {
            Targets::Sparse(teacher_top_k(setup, &input, self.top_k)?)
        } else {
            dense_targets(setup, &input)?
        };
        accumulate_grads_labelled(
            net,
            &grads.vars,
            &mut grads.acc,
            &ids,
            Some(&labels),
            &targets,
            &self.loss,
            grads.scale,
        )
    }
}

/// Refuses, before anything is loaded, a recipe whose training memory exceeds what this machine
/// has free: the estimate comes from the models' configs and tensor headers
/// ([`crate::engine::header`]), the refusal names it, the free memory and a batch that fits.
fn preflight(lr: &LoadedRecipe, ctx: &JobContext) -> Result<Option<u64>> {
    use crate::engine::header::{config_header, derived_header, parameter_count, read_header};
    let r = &lr.recipe;
    let header = |spec: &str| {
        let progress = |p: &crate::engine::hub::DownloadProgress| {
            ctx.progress(&format!("download {}", p.file), p.bytes, p.total, "bytes")
        };
        read_header(&crate::engine::source::resolve(&lr.model_spec(spec), ctx.hub(), &progress)?)
    };
    let mut teacher = r.teacher.as_ref().map(|t| header(&t.model)).transpose()?;
    if let Some(t) = teacher.as_mut() {
        t.keep_quantized = matches!(r.distill.teacher_precision, None | Some(TeacherPrecision::Gguf));
    }
    let student = match (&r.student.model, &r.student.derive, &teacher) {
        (Some(spec), _, _) => Some(header(spec)?),
        (None, Some(shape), Some(t)) => Some(derived_header(t, shape)?),
        (None, None, Some(t)) => match &r.student.config {
            Some(table) => Some(config_header(
                t,
                serde_json::to_value(table).map_err(|e| Error::Invalid(format!("[student] config: {e}")))?,
            )?),
            None => None,
        },
        _ => None,
    };
    // A pretraining student (no teacher) is counted from its config alone.
    let (config, params) = match (&student, &r.student.config) {
        (Some(s), _) => (s.config.clone(), s.info.parameters),
        (None, Some(table)) => {
            let json = serde_json::to_value(table).map_err(|e| Error::Invalid(format!("[student] config: {e}")))?;
            let path = std::path::Path::new("[student] config");
            (crate::engine::models::ArchConfig::from_json(&json, path)?, parameter_count(&json, path)?)
        }
        // Checked with a clear message by `prepare`.
        (None, None) => return Ok(None),
    };
    let trainees = if teacher.is_some() && r.distill.baseline { 2 } else { 1 };
    let (_, available) = crate::engine::pair::machine_memory();
    let work = crate::engine::pair::Workload {
        teacher: teacher.as_ref().map(|t| (&t.config, t.resident_bytes(t.keep_quantized))),
        student: (&config, params),
        trainees,
        batch: r.distill.batch_size,
        seq: r.data.seq_len,
        checkpointing: r.distill.activation_checkpointing,
    };
    let m = crate::engine::pair::preflight(&work, available)?;
    ctx.log(format!(
        "memory estimate {:.2} GiB at batch {} × {} ({:.1} GiB available)",
        crate::engine::pair::gib(m.total),
        r.distill.batch_size,
        r.data.seq_len,
        crate::engine::pair::gib(available)
    ));
    Ok(Some(m.total))
}

/// [`run_recipe`] with a tokenizer supplied by the caller (pretraining trains its own); the caller
/// holds the output folder's lock.
pub fn run_with_tokenizer(
    lr: &LoadedRecipe,
    opts: &RunOptions,
    tokenizer: Option<(tokenizers::Tokenizer, std::path::PathBuf)>,
    ctx: &JobContext,
) -> Result<serde_json::Value> {
    let started = crate::engine::usage::Stopwatch::start();
    let r = &lr.recipe;
    let out = lr.output_dir();
    let existing = existing_run(&out, opts.resume)?;
    if existing.is_some() {
        crate::engine::recipe::resume::check_unchanged(&out, &r.to_toml()?)?;
    }
    let quant_formats = super::post_quant::formats(lr)?;
    let provenance = crate::engine::export::provenance::for_run(lr, ctx)?;
    let estimate = preflight(lr, ctx)?;
    let mut setup = prepare(lr, tokenizer, ctx)?;
    setup.memory_estimate = estimate;
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
        activation_checkpointing: d.activation_checkpointing,
    };
    let roles = match (&setup.teacher, d.baseline) {
        (None, _) => vec![Role::Pretrain],
        (Some(_), true) => vec![Role::Student, Role::Baseline],
        (Some(_), false) => vec![Role::Student],
    };
    let schedule = Schedule {
        steps: d.steps,
        warmup_steps: d.warmup_steps,
        lr: d.lr,
        min_lr_ratio: d.min_lr_ratio,
        weight_decay: d.weight_decay,
        grad_clip: d.grad_clip,
        eval_every: d.eval_every,
        checkpoint_every: d.checkpoint_every,
        precision: setup.precision,
        section: "distill",
    };
    let mut trainees = roles
        .iter()
        .map(|&role| Trainee::new(role, trainable(&setup.student_config, &setup.initial, &setup.device)?, &schedule))
        .collect::<Result<Vec<_>>>()?;
    // Each trainee holds its own copy; the initial weights would be one more student in memory.
    setup.initial.clear();
    if let Some(format) = r.qad_format()? {
        let cfg = crate::engine::models::ArchConfig::from_json(&setup.student_config, &out.join("config.json"))?;
        for t in trainees.iter_mut().filter(|t| t.role == Role::Student) {
            let plan = crate::engine::train::fake_quant::FakeQuant::new(
                format,
                &t.vars,
                cfg.tied_embeddings(),
                cfg.model_type() == "gpt2",
            );
            ctx.log(format!(
                "quantization-aware distillation: the student's steps compute on {} of its tensors rounded to {format} (straight-through)",
                plan.tensors()
            ));
            t.fake_quant = Some(plan);
        }
    }
    if let Some(note) = autocast::emulation_note("precision", d.precision, &setup.device) {
        ctx.log(note);
    }
    if setup.teacher.is_some() && setup.teacher_precision != d.precision {
        if let Some(note) = autocast::emulation_note("teacher_precision", setup.teacher_precision, &setup.device) {
            ctx.log(note);
        }
    }
    if let Some(t) = setup.teacher.as_ref().filter(|t| d.cache_top_k >= t.config.vocab_size()) {
        return Err(Error::Invalid(format!(
            "distill.cache_top_k = {} keeps at least the teacher's whole vocabulary ({} tokens); use a smaller k (32 to 64 is typical) or 0 for no cache",
            d.cache_top_k,
            t.config.vocab_size()
        )));
    }
    let cache = match (&setup.teacher, d.cache_top_k) {
        (Some(t), k) if k > 0 && d.alpha > 0.0 => {
            let key = CacheKey::new(
                &t.resolved.weight_files(),
                t.resolved.hub.revision.as_deref(),
                &setup.train.tokens,
                r.data.seq_len,
                k,
                t.config.vocab_size(),
            )
            .at_precision(setup.teacher_precision)
            .in_format(match setup.teacher_mode {
                TeacherPrecision::Compute(_) => None,
                mode => Some(mode.name()),
            });
            Some(TeacherCache::open(&ctx.settings().cache_dir, &key)?)
        }
        _ => None,
    };
    let eval_opts = EvalOptions { seq_len: r.data.seq_len, ..Default::default() };
    let reference = super::teacher_ref::prepare(&mut setup, &eval_opts, ctx)?;
    let (teacher_metrics, teacher_states, teacher_fidelity) = match reference {
        Some(t) => (Some(t.metrics), Some(t.states), t.fidelity),
        None => (None, None, None),
    };
    let mut task = LmTask {
        setup: &setup,
        loss,
        cache,
        top_k: d.cache_top_k,
        batch_size: d.batch_size,
        samples: d.batch_size * d.grad_accum,
        seed: d.seed,
        teacher_states,
        eval_opts,
        on_policy: on_policy(lr, &setup)?,
        step: 0,
    };
    train(&mut task, &mut trainees, &schedule, &out, existing, ctx)?;
    let on_policy = task.on_policy.as_ref().map(|p| {
        let mut stats = p.stats.clone();
        let student_seconds = trainees.iter().find(|t| t.role == Role::Student).map(|t| t.seconds);
        stats.share_of_step_time = student_seconds.filter(|s| *s > 0.0).map(|s| stats.sampling_seconds / s);
        ctx.log(format!(
            "on-policy: {} of {} micro-batches continued by the student, {} by the teacher; {} tokens sampled in {:.1} s ({:.0}% of the student's step time)",
            stats.student_batches,
            stats.student_batches + stats.teacher_batches + stats.text_batches,
            stats.teacher_batches,
            stats.generated_tokens,
            stats.sampling_seconds,
            100.0 * stats.share_of_step_time.unwrap_or(0.0)
        ));
        stats
    });
    setup.training_peak.set(crate::engine::usage::peak_rss_bytes());
    super::finish::finish(
        lr,
        &setup,
        &trainees,
        teacher_metrics,
        teacher_fidelity,
        task.cache.as_ref(),
        quant_formats.as_deref(),
        on_policy,
        &started,
        ctx,
    )
}

/// The recipe's `[distill.on_policy]`, with its prompts file read and tokenized.
fn on_policy(lr: &LoadedRecipe, setup: &Setup) -> Result<Option<OnPolicy>> {
    let (r, d) = (&lr.recipe, &lr.recipe.distill);
    let Some(section) = d.on_policy.as_ref().filter(|_| setup.teacher.is_some()) else { return Ok(None) };
    let policy = OnPolicy::new(section, r.data.seq_len, d.seed);
    let Some(file) = &section.prompts else { return Ok(Some(policy)) };
    let mut lines = Vec::new();
    for path in lr.data_files(file, "distill.on_policy.prompts")? {
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            lines.push(crate::engine::tokenizer::encode_plain(&setup.tokenizer, line)?);
        }
    }
    Ok(Some(policy.with_prompts(lines, file)?))
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
            let c = compare_with_states(&t.network, states, network, opts, &setup.device, &ctx.quiet())?;
            EvalMetrics {
                perplexity: c.candidate.perplexity,
                top1_accuracy: c.candidate.top1_accuracy,
                kl_to_teacher: Some(c.kl),
                agreement: Some(c.agreement),
                classification: None,
            }
        }
        _ => {
            let e = evaluate_tokens(network, &setup.eval_tokens, opts, &setup.device, &ctx.quiet())?;
            EvalMetrics {
                perplexity: e.perplexity,
                top1_accuracy: e.top1_accuracy,
                kl_to_teacher: None,
                agreement: None,
                classification: None,
            }
        }
    })
}
