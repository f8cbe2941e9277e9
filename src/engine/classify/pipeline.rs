//! The two classification jobs: `finetune` (a teacher from an encoder and labels) and `run`
//! (teacher, then a DistilBERT-style student distilled from it next to a labels-only baseline),
//! each ending in `summary.json` with accuracy, macro-F1, KL, agreement, parameters and speed.
//! Both stages run on the one training loop ([`crate::engine::train`]): the teacher's fine-tuning
//! checkpoints under `OUTPUT/finetune/checkpoint`, the students' under `OUTPUT/checkpoint`, so a
//! killed run continues with `--resume` (a fine-tuned teacher already saved is reused).

use super::data::{load_labelled_files, LabelledSet};
use super::metrics::ClassMetrics;
use super::model::with_head;
use super::quantize::{sweep, Target};
use super::recipe::LoadedClassify;
use super::train::{encode, measure, predict, schedule, ClassTask, Encoded, Teacher};
use crate::engine::context::JobContext;
use crate::engine::derive::{derive_student, save_hf_folder, StudentShape, TokenizerOut};
use crate::engine::distill::setup::{load, trainable};
use crate::engine::events::Role;
use crate::engine::events::{QuantPoint, TaskMetrics};
use crate::engine::export::provenance::absolute;
use crate::engine::fsutil::write_atomic;
use crate::engine::fsutil::FolderLock;
use crate::engine::hub::DownloadProgress;
use crate::engine::library::RunRecord;
use crate::engine::loader::LoadedModel;
use crate::engine::models::Network;
use crate::engine::quant::QuantFormat;
use crate::engine::summary::{ModelSummary, RunSummary, TaskKind};
use crate::engine::tokenizer::load_tokenizer;
use crate::engine::train::{existing_run, remove_stale_temporaries, train, RunOptions, Trainee};
use crate::engine::{Error, Result};
use candle_core::Device;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tokenizers::Tokenizer;

/// A teacher classifier ready to distil from, with the data it was judged on.
pub struct Prepared {
    pub teacher: LoadedModel,
    pub tokenizer: Tokenizer,
    pub tokenizer_file: Option<PathBuf>,
    pub train: Encoded,
    pub eval: Encoded,
    pub classes: Vec<String>,
    /// Fine-tuning time, when the teacher was trained here.
    pub finetune_seconds: Option<f64>,
}

fn read_sets(lr: &LoadedClassify, classes: Option<&[String]>, ctx: &JobContext) -> Result<(LabelledSet, LabelledSet)> {
    let d = &lr.recipe.data;
    let progress = |p: &DownloadProgress| ctx.progress(&format!("download {}", p.file), p.bytes, p.total, "bytes");
    let train_files = lr.data_files(&d.train, "data.train", ctx.hub(), &progress)?;
    let eval_files = lr.data_files(&d.eval, "data.eval", ctx.hub(), &progress)?;
    let train = load_labelled_files(&train_files, &lr.columns(), classes)?;
    // Errors about the whole set name its one file, or else the entry as the recipe writes it.
    let origin = match train_files.as_slice() {
        [one] => one.clone(),
        _ => PathBuf::from(&d.train),
    };
    train.require_every_class(&origin)?;
    let eval = load_labelled_files(&eval_files, &lr.columns(), Some(&train.classes))?;
    Ok((train, eval))
}

/// Loads (or builds) the teacher and, with `[finetune]`, trains its head and encoder on the labels
/// and saves it to `OUTPUT/teacher`.
pub fn prepare_teacher(lr: &LoadedClassify, resume: bool, ctx: &JobContext) -> Result<Prepared> {
    let r = &lr.recipe;
    let base = r.teacher.model.as_ref().map(|m| load(&lr.model_spec(m), false, &Device::Cpu, ctx)).transpose()?;
    let (tokenizer, tokenizer_file) = match (&r.teacher.tokenizer, &base) {
        (Some(p), _) => (load_tokenizer(&lr.input(p))?, Some(lr.input(p))),
        (None, Some(b)) => (b.tokenizer()?.clone(), b.resolved.tokenizer.clone()),
        (None, None) => return Err(Error::Invalid("[teacher] needs a model or a tokenizer".into())),
    };
    let base_labels: Vec<String> = base.as_ref().map(|b| b.config.labels().to_vec()).unwrap_or_default();
    if r.finetune.is_none() && base_labels.is_empty() {
        return Err(Error::Invalid(format!(
            "teacher `{}` has no classification head (no id2label in its config); add a [finetune] section",
            r.teacher.model.as_deref().unwrap_or("(config)")
        )));
    }
    let (train_set, eval_set) = read_sets(lr, Some(&base_labels), ctx)?;
    let classes = train_set.classes.clone();
    ctx.log(format!(
        "{} classes ({}); {} train / {} eval examples; per class {:?}",
        classes.len(),
        classes.join(", "),
        train_set.examples.len(),
        eval_set.examples.len(),
        train_set.counts()
    ));
    let train_enc = encode(&train_set, &tokenizer, r.data.max_len)?;
    let eval_enc = encode(&eval_set, &tokenizer, r.data.max_len)?;
    let Some(ft) = &r.finetune else {
        let teacher = base.expect("checked: a teacher without [finetune] is a loaded classifier");
        return Ok(Prepared {
            teacher,
            tokenizer,
            tokenizer_file,
            train: train_enc,
            eval: eval_enc,
            classes,
            finetune_seconds: None,
        });
    };
    let root = finetune_root(lr);
    let state = existing_run(&root, resume)?;
    let dir = lr.output_dir().join("teacher");
    let done = state.as_ref().filter(|st| st.step >= ft.steps && dir.join("config.json").is_file());
    let seconds = match done {
        Some(st) => {
            ctx.log(format!("the teacher was fine-tuned already (step {}): reusing {}", st.step, dir.display()));
            st.trainer["teacher"]["seconds"].as_f64().unwrap_or(0.0)
        }
        None => {
            let (config, params, path) = match (&base, &r.teacher.config) {
                (Some(b), _) => (b.config_json.clone(), b.params.clone(), b.resolved.path().join("config.json")),
                (None, Some(table)) => {
                    let json =
                        serde_json::to_value(table).map_err(|e| Error::Invalid(format!("[teacher] config: {e}")))?;
                    (json, Default::default(), lr.path.clone())
                }
                (None, None) => unreachable!("validated: [teacher] has a model or a config"),
            };
            let vocab = tokenizer.get_vocab_size(true);
            if config.get("vocab_size").and_then(|v| v.as_u64()).is_some_and(|v| (v as usize) < vocab) {
                return Err(Error::Invalid(format!(
                    "[teacher] vocab_size is smaller than the tokenizer's {vocab} tokens"
                )));
            }
            let (config_json, built) = with_head(&config, &params, &base_labels, &classes, ft.seed, &path)?;
            drop(base);
            ctx.log(format!("fine-tuning the teacher ({} parameters) on the labels", count(&built.vars)));
            std::fs::create_dir_all(&root).map_err(|e| Error::io(format!("creating {}", root.display()), e))?;
            remove_stale_temporaries(&root);
            let plan = schedule(ft, "finetune");
            let mut trainees = vec![Trainee::new(Role::Teacher, built, &plan)?];
            let mut task = ClassTask::new(&train_enc, &eval_enc, ft, None);
            train(&mut task, &mut trainees, &plan, &root, state, ctx)?;
            let tok = TokenizerOut::of(tokenizer_file.as_deref(), &tokenizer);
            save_hf_folder(&dir, &config_json, &trainees[0].weights(), tok)?;
            trainees[0].seconds
        }
    };
    let teacher = load(&dir.display().to_string(), false, &Device::Cpu, ctx)?;
    Ok(Prepared {
        teacher,
        tokenizer,
        tokenizer_file: tokenizer_file.or(Some(dir.join("tokenizer.json"))),
        train: train_enc,
        eval: eval_enc,
        classes,
        finetune_seconds: Some(seconds),
    })
}

/// Where the teacher's fine-tuning keeps its checkpoints (`OUTPUT/finetune/checkpoint`).
pub fn finetune_root(lr: &LoadedClassify) -> PathBuf {
    lr.output_dir().join("finetune")
}

fn count(vars: &std::collections::BTreeMap<String, candle_core::Var>) -> usize {
    vars.values().map(|v| v.elem_count()).sum()
}

/// Inference speed (eval examples per second) of each network: three rounds that time every network
/// in turn, best round per network, so a change in machine load hits all of them alike.
fn speeds(nets: &[&Network], eval: &Encoded) -> Result<Vec<f64>> {
    let mut best = vec![f64::INFINITY; nets.len()];
    for _ in 0..3 {
        for (b, net) in best.iter_mut().zip(nets) {
            let start = Instant::now();
            predict(net, eval, 32)?;
            *b = b.min(start.elapsed().as_secs_f64());
        }
    }
    Ok(best.iter().map(|s| eval.ids.len() as f64 / s.max(1e-9)).collect())
}

/// The summary's frame: the run, its classes and the size of each split.
fn summary_of(lr: &LoadedClassify, p: &Prepared, steps: Option<usize>) -> RunSummary {
    RunSummary {
        task: Some(TaskKind::Classification),
        // Absolute, so that `export` finds the recipe's folder from anywhere.
        recipe: absolute(&lr.path).display().to_string(),
        output_dir: Some(lr.output_dir().display().to_string()),
        steps,
        classes: p.classes.clone(),
        train_examples: Some(p.train.ids.len()),
        eval_examples: Some(p.eval.ids.len()),
        ..RunSummary::default()
    }
}

/// A classifier's record: what it is, its metrics and its speed.
fn model_summary(m: &ClassMetrics, parameters: usize, layers: usize, speed: f64, path: &Path) -> ModelSummary {
    ModelSummary {
        path: Some(path.display().to_string()),
        parameters: parameters as u64,
        layers: Some(layers),
        metrics: TaskMetrics::classification(m.accuracy, m.macro_f1, m.cross_entropy),
        kl_to_teacher: m.kl_to_teacher,
        agreement: m.agreement,
        eval_examples_per_second: Some(speed),
        ..ModelSummary::default()
    }
}

fn teacher_summary(p: &Prepared, logits: &[Vec<f32>], speed: f64) -> ModelSummary {
    let m = super::metrics::class_metrics(logits, &p.eval.labels, None);
    let t = &p.teacher;
    ModelSummary {
        model: Some(t.info.name.clone()),
        train_seconds: p.finetune_seconds,
        ..model_summary(&m, t.parameter_count() as usize, t.config.layers(), speed, &t.resolved.path())
    }
}

/// Writes the run's recipe into its output folder (what `export` reads back).
fn record_recipe(lr: &LoadedClassify) -> Result<()> {
    let out = lr.output_dir();
    std::fs::create_dir_all(&out).map_err(|e| Error::io(format!("creating {}", out.display()), e))?;
    remove_stale_temporaries(&out);
    write_atomic(&out.join("recipe.toml"), lr.recipe.to_toml()?.as_bytes())
}

/// Locks the run's folder and, on `--resume`, checks that the recipe is the one it was started with.
fn own_output(lr: &LoadedClassify, opts: &RunOptions, what: &str) -> Result<FolderLock> {
    let lock = FolderLock::acquire(&lr.output_dir(), what)?;
    if opts.resume {
        crate::engine::recipe::resume::check_unchanged(&lr.output_dir(), &lr.recipe.to_toml()?)?;
    }
    Ok(lock)
}

/// The `finetune` job: the teacher alone.
pub fn run_finetune(lr: &LoadedClassify, opts: &RunOptions, ctx: &JobContext) -> Result<Value> {
    let _lock = own_output(lr, opts, "distill-tui finetune")?;
    let record = RunRecord::new("finetune", &lr.path, &lr.recipe.to_toml()?);
    crate::engine::library::recorded(ctx, &lr.output_dir(), record, |ctx| finetune(lr, opts, ctx))
}

fn finetune(lr: &LoadedClassify, opts: &RunOptions, ctx: &JobContext) -> Result<Value> {
    let Some(ft) = &lr.recipe.finetune else {
        return Err(Error::Invalid(format!("recipe {}: `finetune` needs a [finetune] section", lr.path.display())));
    };
    let p = prepare_teacher(lr, opts.resume, ctx)?;
    record_recipe(lr)?;
    let logits = predict(&p.teacher.network, &p.eval, 32)?;
    let speed = speeds(&[&p.teacher.network], &p.eval)?[0];
    let mut summary = summary_of(lr, &p, Some(ft.steps));
    summary.teacher = Some(teacher_summary(&p, &logits, speed));
    summary.write(&lr.output_dir())?;
    summary.to_value()
}

/// The `run` job: teacher (fine-tuned when the recipe says so), then student and baseline, then
/// the `[quantize]` sweep.
pub fn run_classification(lr: &LoadedClassify, opts: &RunOptions, ctx: &JobContext) -> Result<Value> {
    let _lock = own_output(lr, opts, "distill-tui run")?;
    let record = RunRecord::new("classification", &lr.path, &lr.recipe.to_toml()?);
    crate::engine::library::recorded(ctx, &lr.output_dir(), record, |ctx| classification(lr, opts, ctx))
}

fn classification(lr: &LoadedClassify, opts: &RunOptions, ctx: &JobContext) -> Result<Value> {
    let r = &lr.recipe;
    let (Some(student), Some(d)) = (&r.student, &r.distill) else {
        return finetune(lr, opts, ctx);
    };
    let formats = r.quantize.as_ref().map(|q| q.parsed_formats()).transpose()?;
    let started = crate::engine::usage::Stopwatch::start();
    let out = lr.output_dir();
    let existing = existing_run(&out, opts.resume)?;
    let p = prepare_teacher(lr, opts.resume, ctx)?;
    record_recipe(lr)?;
    let teacher_eval = predict(&p.teacher.network, &p.eval, 32)?;
    ctx.log("teacher logits of the training set (computed once)");
    let teacher_train = predict(&p.teacher.network, &p.train, 32)?;
    let shape = StudentShape { layers: student.layers, ..Default::default() };
    let derived = derive_student(&p.teacher, &shape, d.seed)?;
    ctx.log(format!(
        "student: {} layers copied from teacher layers {:?}, {} parameters",
        student.layers, derived.copied_layers, derived.parameters
    ));
    let teacher = Teacher { network: &p.teacher.network, train_logits: &teacher_train, eval_logits: &teacher_eval };
    let plan = schedule(d, "distill");
    let mut roles = vec![Role::Student];
    if d.baseline() {
        roles.push(Role::Baseline);
    }
    let mut trainees = roles
        .into_iter()
        .map(|role| Trainee::new(role, trainable(&derived.config_json, &derived.tensors, &Device::Cpu)?, &plan))
        .collect::<Result<Vec<_>>>()?;
    let mut task = ClassTask::new(&p.train, &p.eval, d, Some(&teacher));
    train(&mut task, &mut trainees, &plan, &out, existing, ctx)?;
    let mut models = Vec::new();
    for t in &trainees {
        let metrics = measure(&t.network, &p.eval, Some(&teacher_eval), 32)?;
        let dir = out.join(t.name());
        save_hf_folder(
            &dir,
            &derived.config_json,
            &t.weights(),
            TokenizerOut::of(p.tokenizer_file.as_deref(), &p.tokenizer),
        )?;
        models.push((t, metrics, dir));
    }
    ctx.log("timing inference on the eval set (teacher and students in turn)");
    let mut nets = vec![&p.teacher.network];
    nets.extend(trainees.iter().map(|t| &t.network));
    let speed = speeds(&nets, &p.eval)?;
    let mut summary = summary_of(lr, &p, Some(d.steps));
    let teacher_entry = teacher_summary(&p, &teacher_eval, speed[0]);
    let t_acc = teacher_entry.metrics.accuracy.unwrap_or(0.0);
    summary.teacher = Some(teacher_entry);
    let t_params = p.teacher.parameter_count() as f64;
    for ((t, metrics, dir), s) in models.iter().zip(&speed[1..]) {
        let params = t.parameters();
        *summary.role_mut(t.role) = Some(ModelSummary {
            name: Some(t.name().to_string()),
            train_seconds: Some(t.seconds),
            accuracy_kept: Some(metrics.accuracy / t_acc.max(1e-12)),
            fewer_parameters: Some(1.0 - params as f64 / t_params),
            speedup: Some(s / speed[0]),
            ..model_summary(metrics, params, student.layers, *s, dir)
        });
    }
    if let (Some(formats), Some(q)) = (formats, &r.quantize) {
        summary.quantize = quantize(lr, &p, &teacher_eval, &q.targets, &formats, ctx)?;
    }
    // The cost of the path: the whole run, the teacher's fine-tuning included.
    summary.seconds = Some(started.wall_seconds());
    summary.cpu_seconds = started.cpu_seconds();
    summary.peak_memory_bytes = crate::engine::usage::peak_rss_bytes();
    summary.write(&out)?;
    summary.to_value()
}

/// The `[quantize]` sweep over the run's saved classifiers (and the teacher).
fn quantize(
    lr: &LoadedClassify,
    p: &Prepared,
    teacher_eval: &[Vec<f32>],
    targets: &[String],
    formats: &[QuantFormat],
    ctx: &JobContext,
) -> Result<Vec<QuantPoint>> {
    let mut loaded = Vec::new();
    for name in targets {
        match Role::parse(name) {
            Some(Role::Teacher) => {}
            Some(role) if lr.output_dir().join(name).join("config.json").is_file() => {
                let m = load(&lr.output_dir().join(name).display().to_string(), false, &Device::Cpu, ctx)?;
                let logits = predict(&m.network, &p.eval, 32)?;
                loaded.push((role, m, logits));
            }
            _ => ctx.log(format!("no {name} to quantize (the recipe trains none)")),
        }
    }
    let mut sweep_targets = Vec::new();
    if targets.iter().any(|t| t == "teacher") {
        sweep_targets.push(Target { role: Role::Teacher, model: &p.teacher, float_logits: teacher_eval });
    }
    sweep_targets.extend(loaded.iter().map(|(role, model, logits)| Target {
        role: *role,
        model,
        float_logits: logits,
    }));
    ctx.log(format!("quantizing {} classifier(s) × {} format(s)", sweep_targets.len(), formats.len()));
    sweep(&sweep_targets, teacher_eval, formats, &p.eval, ctx)
}
