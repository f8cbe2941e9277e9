//! The two classification jobs: `finetune` (a teacher from an encoder and labels) and `run`
//! (teacher, then a DistilBERT-style student distilled from it next to a labels-only baseline),
//! each ending in `summary.json` with accuracy, macro-F1, KL, agreement, parameters and speed.

use super::data::{load_labelled_files, LabelledSet};
use super::model::{weights_of, with_head};
use super::recipe::LoadedClassify;
use super::train::{encode, predict, train, Encoded, Teacher, Trained};
use crate::engine::derive::{derive_student, save_hf_folder, StudentShape, TokenizerOut};
use crate::engine::distill::setup::{load, trainable};
use crate::engine::fsutil::write_atomic;
use crate::engine::hub::{DownloadProgress, HubSettings};
use crate::engine::loader::LoadedModel;
use crate::engine::models::Network;
use crate::engine::tokenizer::load_tokenizer;
use crate::engine::{Error, Result};
use crate::jobs::{JobContext, RunRole};
use candle_core::Device;
use serde_json::{json, Value};
use std::path::PathBuf;
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
    let settings = HubSettings::from_env();
    let progress = |p: &DownloadProgress| ctx.progress(&format!("download {}", p.file), p.bytes, p.total, "bytes");
    let train_files = lr.data_files(&d.train, "data.train", &settings, &progress)?;
    let eval_files = lr.data_files(&d.eval, "data.eval", &settings, &progress)?;
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
pub fn prepare_teacher(lr: &LoadedClassify, ctx: &JobContext) -> Result<Prepared> {
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
    let (config, params, path) = match (&base, &r.teacher.config) {
        (Some(b), _) => (b.config_json.clone(), b.params.clone(), b.resolved.path().join("config.json")),
        (None, Some(table)) => {
            let json = serde_json::to_value(table).map_err(|e| Error::Invalid(format!("[teacher] config: {e}")))?;
            (json, Default::default(), lr.path.clone())
        }
        (None, None) => unreachable!("validated: [teacher] has a model or a config"),
    };
    let vocab = tokenizer.get_vocab_size(true);
    if config.get("vocab_size").and_then(|v| v.as_u64()).is_some_and(|v| (v as usize) < vocab) {
        return Err(Error::Invalid(format!("[teacher] vocab_size is smaller than the tokenizer's {vocab} tokens")));
    }
    let (config_json, built) = with_head(&config, &params, &base_labels, &classes, ft.seed, &path)?;
    drop(base);
    ctx.log(format!("fine-tuning the teacher ({} parameters) on the labels", count(&built.vars)));
    let trained = train(&built, &train_enc, &eval_enc, ft, None, RunRole::Pretrain, ctx)?;
    let dir = lr.output_dir().join("teacher");
    let tok = match &tokenizer_file {
        Some(p) => TokenizerOut::File(p),
        None => TokenizerOut::Built(&tokenizer),
    };
    save_hf_folder(&dir, &config_json, &weights_of(&built), tok)?;
    let teacher = load(&dir.display().to_string(), false, &Device::Cpu, ctx)?;
    Ok(Prepared {
        teacher,
        tokenizer,
        tokenizer_file: tokenizer_file.or(Some(dir.join("tokenizer.json"))),
        train: train_enc,
        eval: eval_enc,
        classes,
        finetune_seconds: Some(trained.train_seconds),
    })
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

fn tokenizer_out(p: &Prepared) -> TokenizerOut<'_> {
    match &p.tokenizer_file {
        Some(f) => TokenizerOut::File(f),
        None => TokenizerOut::Built(&p.tokenizer),
    }
}

fn write_summary(lr: &LoadedClassify, summary: &Value) -> Result<()> {
    let out = lr.output_dir();
    std::fs::create_dir_all(&out).map_err(|e| Error::io(format!("creating {}", out.display()), e))?;
    let text = serde_json::to_string_pretty(summary).map_err(|e| Error::Invalid(e.to_string()))?;
    write_atomic(&out.join("summary.json"), text.as_bytes())
}

fn teacher_json(p: &Prepared, logits: &[Vec<f32>], eval_per_s: f64) -> Value {
    let m = super::metrics::class_metrics(logits, &p.eval.labels, None);
    json!({
        "model": p.teacher.info.name,
        "path": p.teacher.resolved.path().display().to_string(),
        "parameters": p.teacher.parameter_count(),
        "layers": p.teacher.config.layers(),
        "accuracy": m.accuracy,
        "macro_f1": m.macro_f1,
        "cross_entropy": m.cross_entropy,
        "eval_examples_per_second": eval_per_s,
        "train_seconds": p.finetune_seconds,
    })
}

/// The `finetune` job: the teacher alone.
pub fn run_finetune(lr: &LoadedClassify, ctx: &JobContext) -> Result<Value> {
    if lr.recipe.finetune.is_none() {
        return Err(Error::Invalid(format!("recipe {}: `finetune` needs a [finetune] section", lr.path.display())));
    }
    let p = prepare_teacher(lr, ctx)?;
    let logits = predict(&p.teacher.network, &p.eval, 32)?;
    let speed = speeds(&[&p.teacher.network], &p.eval)?[0];
    let summary = json!({
        "recipe": lr.path.display().to_string(),
        "classes": p.classes,
        "train_examples": p.train.ids.len(),
        "eval_examples": p.eval.ids.len(),
        "teacher": teacher_json(&p, &logits, speed),
    });
    write_summary(lr, &summary)?;
    Ok(summary)
}

fn trained_json(name: &str, t: &Trained, params: usize, layers: usize, speed: f64, dir: &std::path::Path) -> Value {
    let m = &t.metrics;
    json!({
        "name": name,
        "parameters": params,
        "layers": layers,
        "accuracy": m.accuracy,
        "macro_f1": m.macro_f1,
        "cross_entropy": m.cross_entropy,
        "kl_to_teacher": m.kl_to_teacher,
        "agreement": m.agreement,
        "eval_examples_per_second": speed,
        "train_seconds": t.train_seconds,
        "path": dir.display().to_string(),
    })
}

/// The `run` job: teacher (fine-tuned when the recipe says so), then student and baseline.
pub fn run_classification(lr: &LoadedClassify, ctx: &JobContext) -> Result<Value> {
    let r = &lr.recipe;
    let (Some(student), Some(d)) = (&r.student, &r.distill) else {
        return run_finetune(lr, ctx);
    };
    let p = prepare_teacher(lr, ctx)?;
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
    let mut roles = vec![(RunRole::Student, Some(&teacher))];
    if d.baseline() {
        roles.push((RunRole::Baseline, None));
    }
    let mut models = Vec::new();
    for (role, te) in roles {
        let built = trainable(&derived.config_json, &derived.tensors, &Device::Cpu)?;
        let mut trained = train(&built, &p.train, &p.eval, d, te, role, ctx)?;
        let logits = predict(&built.network, &p.eval, 32)?;
        trained.metrics = super::metrics::class_metrics(&logits, &p.eval.labels, Some(&teacher_eval));
        let name = if role == RunRole::Student { "student" } else { "baseline" };
        let dir = lr.output_dir().join(name);
        save_hf_folder(&dir, &derived.config_json, &weights_of(&built), tokenizer_out(&p))?;
        models.push((name, built, trained, dir));
    }
    ctx.log("timing inference on the eval set (teacher and students in turn)");
    let mut nets = vec![&p.teacher.network];
    nets.extend(models.iter().map(|(_, b, _, _)| &b.network));
    let speed = speeds(&nets, &p.eval)?;
    let mut summary = serde_json::Map::new();
    summary.insert("recipe".into(), json!(lr.path.display().to_string()));
    summary.insert("classes".into(), json!(p.classes));
    summary.insert("train_examples".into(), json!(p.train.ids.len()));
    summary.insert("eval_examples".into(), json!(p.eval.ids.len()));
    let teacher_entry = teacher_json(&p, &teacher_eval, speed[0]);
    let t_acc = teacher_entry["accuracy"].as_f64().unwrap_or(0.0);
    summary.insert("teacher".into(), teacher_entry);
    let t_params = p.teacher.parameter_count() as f64;
    for ((name, built, trained, dir), s) in models.iter().zip(&speed[1..]) {
        let params = count(&built.vars);
        let mut entry = trained_json(name, trained, params, student.layers, *s, dir);
        entry["accuracy_kept"] = json!(trained.metrics.accuracy / t_acc.max(1e-12));
        entry["fewer_parameters"] = json!(1.0 - params as f64 / t_params);
        entry["speedup"] = json!(s / speed[0]);
        summary.insert((*name).into(), entry);
    }
    let summary = Value::Object(summary);
    write_summary(lr, &summary)?;
    Ok(summary)
}
