//! `--target trl`: a Python project that performs the run's distillation with Hugging Face
//! transformers (a `Trainer` subclass) on many GPUs through `accelerate` (FSDP or DeepSpeed). The
//! project gets the teacher (pinned), the student's initial weights, the training windows exactly
//! as distill-tui tokenised them and their order, and every setting; the conventions are in its
//! README (`assets/export/trl/README.md`).

use super::points::FinishedRun;
use super::rebase::{normalize, relative_to};
use crate::engine::context::JobContext;
use crate::engine::data::step_windows;
use crate::engine::derive::{save_hf_folder, TokenizerOut};
use crate::engine::distill::setup::prepare;
use crate::engine::fsutil::{write_atomic, write_atomic_with};
use crate::engine::recipe::LoadedRecipe;
use crate::engine::source::ModelFiles;
use crate::engine::{Error, Result};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};

const TEMPLATE: [(&str, &str); 5] = [
    ("train.py", include_str!("../../../assets/export/trl/train.py")),
    ("README.md", include_str!("../../../assets/export/trl/README.md")),
    ("requirements.txt", include_str!("../../../assets/export/trl/requirements.txt")),
    ("accelerate_fsdp.yaml", include_str!("../../../assets/export/trl/accelerate_fsdp.yaml")),
    ("accelerate_deepspeed.yaml", include_str!("../../../assets/export/trl/accelerate_deepspeed.yaml")),
];

/// The target needs a distillation run (a teacher to distil from).
pub fn check(run: &FinishedRun) -> Result<()> {
    match &run.recipe {
        None => {
            return Err(Error::Invalid(format!(
                "--target trl exports a causal-LM distillation; {} is a classification run",
                run.dir.display()
            )))
        }
        Some(r) if r.teacher.is_none() => {
            return Err(Error::Invalid(format!(
                "--target trl exports a distillation; {} is a pretraining run (no [teacher])",
                run.dir.display()
            )))
        }
        Some(_) => {}
    }
    Ok(())
}

/// Writes the project into `dir` for the exported recipe `lr` (paths relative to the export folder).
pub fn write(lr: &LoadedRecipe, dir: &Path, ctx: &JobContext) -> Result<Vec<PathBuf>> {
    ctx.log("preparing the run's teacher, student and data for the trl project");
    let setup = prepare(lr, None, ctx)?;
    let teacher = setup.teacher.as_ref().ok_or_else(|| Error::Invalid("--target trl needs a [teacher]".into()))?;
    let teacher_json = match (&teacher.resolved.files, &teacher.resolved.hub.hub_id) {
        (ModelFiles::Gguf { file }, _) => {
            return Err(Error::Invalid(format!(
                "--target trl needs a Hugging Face teacher (transformers cannot train against {})",
                file.display()
            )))
        }
        (_, Some(id)) => json!({ "hub_id": id, "revision": teacher.resolved.hub.revision }),
        (ModelFiles::Hf { dir: tdir, .. }, None) => {
            let abs = normalize(&super::provenance::absolute(tdir));
            json!({ "path": relative_to(&abs, &normalize(&super::provenance::absolute(dir))).display().to_string() })
        }
    };
    let mut files = Vec::new();
    let student_dir = dir.join("student_init");
    let tok = TokenizerOut::of(setup.tokenizer_file.as_deref(), &setup.tokenizer);
    save_hf_folder(&student_dir, &setup.student_config, &setup.initial, tok)?;
    files.push(student_dir);
    let r = &lr.recipe;
    let d = &r.distill;
    let order: Vec<u32> = (0..d.steps)
        .flat_map(|s| step_windows(setup.train.len(), d.seed, s, d.batch_size * d.grad_accum))
        .map(|w| w as u32)
        .collect();
    files.push(write_u32(&dir.join("data/train_tokens.u32"), &setup.train.tokens)?);
    files.push(write_u32(&dir.join("data/order.u32"), &order)?);
    let config = json!({
        "teacher": teacher_json,
        "student_init": "student_init",
        "tokens": "data/train_tokens.u32",
        "order": "data/order.u32",
        "windows": setup.train.len(),
        "vocab_size": teacher.config.vocab_size(),
        "seq_len": r.data.seq_len,
        "loss": d.loss,
        "temperature": d.temperature,
        "alpha": d.alpha,
        "jsd_beta": d.jsd_beta,
        "steps": d.steps,
        "batch_size": d.batch_size,
        "grad_accum": d.grad_accum,
        "lr": d.lr,
        "min_lr_ratio": d.min_lr_ratio,
        "warmup_steps": d.warmup_steps,
        "weight_decay": d.weight_decay,
        "grad_clip": d.grad_clip,
        "seed": d.seed,
        "adam": { "beta1": 0.9, "beta2": 0.999, "eps": 1e-8 },
        "distill_tui_cache_top_k": d.cache_top_k,
    });
    let text = serde_json::to_string_pretty(&config).map_err(|e| Error::Invalid(e.to_string()))?;
    files.push(dir.join("kd_config.json"));
    write_atomic(&dir.join("kd_config.json"), text.as_bytes())?;
    for (name, body) in TEMPLATE {
        write_atomic(&dir.join(name), body.as_bytes())?;
        files.push(dir.join(name));
    }
    Ok(files)
}

fn write_u32(path: &Path, values: &[u32]) -> Result<PathBuf> {
    write_atomic_with(path, |f| {
        let mut w = std::io::BufWriter::new(f);
        for v in values {
            w.write_all(&v.to_le_bytes())?;
        }
        w.flush()
    })?;
    Ok(path.to_path_buf())
}
