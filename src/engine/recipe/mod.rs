//! Recipes: everything a distillation (or pretraining) run needs, in TOML. Unknown keys are
//! rejected with the key and its line. Input paths (models given as paths, data files) are relative
//! to the recipe file's folder, so a recipe travels with its data; `output.dir` is relative to the
//! working directory. The format is documented in `docs/recipe.md`.

pub mod on_policy;
pub mod overrides;
pub mod quantize;
pub mod records;
pub mod resume;
pub mod teacher_precision;

use crate::engine::derive::StudentShape;
use crate::engine::distill::losses::SoftLoss;
use crate::engine::{Error, Result};
pub use on_policy::OnPolicySection;
pub use overrides::Override;
pub use quantize::QuantizeSection;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Absent in a `pretrain` recipe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher: Option<TeacherSection>,
    pub student: StudentSection,
    pub data: DataSection,
    #[serde(default)]
    pub distill: DistillSection,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretrain: Option<PretrainSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantize: Option<QuantizeSection>,
    pub output: OutputSection,
    /// The exact inputs of the run an export was made from (sha256 per file); checked before a run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<records::Provenance>,
    /// The metrics that run measured; `distill-tui run --verify` compares a rerun with them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<records::Expected>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeacherSection {
    /// Hub id, folder or .gguf (see `distill-tui inspect`).
    pub model: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudentSection {
    /// An existing student model; or `derive` from the teacher; or `config` for pretraining.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derive: Option<StudentShape>,
    /// A Hugging Face `config.json` object (inline table) for a model built from scratch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<toml::Table>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// A file or a glob (`corpus/*.txt`).
    pub train: String,
    /// Held-out text for evaluation.
    pub eval: String,
    #[serde(default = "n::<256>")]
    pub seq_len: usize,
    /// Tokens of the eval text used for each evaluation (the first N).
    #[serde(default = "n::<16_384>")]
    pub eval_tokens: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DistillSection {
    pub loss: String,
    pub temperature: f64,
    /// Weight of the soft loss; `1 - alpha` weighs the hard-label cross-entropy.
    pub alpha: f64,
    /// JSD's mixing weight β (only for `loss = "jsd"`).
    pub jsd_beta: f64,
    pub steps: usize,
    pub batch_size: usize,
    /// Micro-batches accumulated per optimizer step.
    pub grad_accum: usize,
    pub lr: f64,
    /// The cosine schedule ends at `lr * min_lr_ratio`.
    pub min_lr_ratio: f64,
    pub warmup_steps: usize,
    pub weight_decay: f64,
    pub grad_clip: f64,
    pub eval_every: usize,
    pub seed: u64,
    /// Also train the same student on hard labels only, with the same steps and data.
    pub baseline: bool,
    /// Teacher-logit cache: keep the teacher's top-k logits per position (0 = no cache).
    pub cache_top_k: usize,
    pub checkpoint_every: usize,
    /// Arithmetic of the linear layers' matmuls during training (teacher and student):
    /// `f32`, or `bf16` inputs with f32 accumulation (autocast). Evaluation always runs f32.
    pub precision: crate::engine::kernels::autocast::Precision,
    /// Arithmetic of the frozen teacher's linear layers during training (absent: a GGUF teacher
    /// in its own block formats, any other at `precision`); `int8` quantizes its weights per row
    /// and its activations per row as they arrive; `gguf` keeps a GGUF teacher's block formats;
    /// `q8_0`, `q4_k`, … quantize an f32 teacher once at load.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub teacher_precision: Option<teacher_precision::TeacherPrecision>,
    /// Activation checkpointing per block: the student keeps each block's input only and
    /// recomputes the block in the backward pass (less memory, about a third more student compute).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub activation_checkpointing: bool,
    /// Quantization-aware distillation: the student's forward and backward run on its weights
    /// rounded to this format (`int3-g32`, `q4_0`, …; the quantizer's own per-tensor plan), the
    /// gradient passes straight through to the float weights AdamW updates, and the run's
    /// `[quantize]` sweep measures the student in this format as the `distill+QAD` point.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qad: Option<String>,
    /// On-policy and mixed-policy distillation (GKD): `[distill.on_policy]`; absent: every
    /// micro-batch is the training text (off-policy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_policy: Option<OnPolicySection>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainSection {
    /// Train a byte-level BPE tokenizer on the training text with this vocabulary size
    /// (absent: use `tokenizer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_tokenizer_vocab: Option<usize>,
    /// An existing tokenizer.json (relative to the recipe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSection {
    pub dir: String,
}

/// Weight decay and gradient clip of every training section, unless a recipe says otherwise.
pub const D_WEIGHT_DECAY: f64 = 0.01;
pub const D_GRAD_CLIP: f64 = 1.0;

/// `N`: a `#[serde(default = "…::n::<N>")]` integer default.
pub(crate) fn n<const N: usize>() -> usize {
    N
}
pub(crate) fn weight_decay() -> f64 {
    D_WEIGHT_DECAY
}
pub(crate) fn grad_clip() -> f64 {
    D_GRAD_CLIP
}

impl Default for DistillSection {
    /// Every key's default (a recipe may leave out the whole section).
    fn default() -> Self {
        Self {
            loss: "forward_kl".into(),
            temperature: 2.0,
            alpha: 0.9,
            jsd_beta: 0.5,
            steps: 500,
            batch_size: 8,
            grad_accum: 1,
            lr: 5e-4,
            min_lr_ratio: 0.1,
            warmup_steps: 50,
            weight_decay: D_WEIGHT_DECAY,
            grad_clip: D_GRAD_CLIP,
            eval_every: 50,
            seed: 0,
            baseline: true,
            cache_top_k: 64,
            checkpoint_every: 100,
            precision: Default::default(),
            teacher_precision: None,
            activation_checkpointing: false,
            qad: None,
            on_policy: None,
        }
    }
}

/// Deserialises recipe text (unknown keys are errors with their line) and checks it with
/// `validate`; every error names `origin`.
pub(crate) fn parse_checked<T: serde::de::DeserializeOwned>(
    text: &str,
    origin: &str,
    validate: impl FnOnce(&T) -> std::result::Result<(), String>,
) -> Result<T> {
    let recipe: T =
        toml::from_str(text).map_err(|e| Error::Invalid(format!("recipe {origin}: {}", e.to_string().trim_end())))?;
    validate(&recipe).map_err(|e| Error::Invalid(format!("recipe {origin}: {e}")))?;
    Ok(recipe)
}

/// A recipe file's text and the folder its relative paths are resolved against.
pub(crate) fn read_recipe(path: &Path) -> Result<(String, PathBuf)> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Invalid(format!("cannot read recipe {}: {e}", path.display())))?;
    Ok((text, path.parent().map(Path::to_path_buf).unwrap_or_default()))
}

/// A recipe with the folder its relative input paths are resolved against.
#[derive(Clone, Debug)]
pub struct LoadedRecipe {
    pub recipe: Recipe,
    pub path: PathBuf,
    pub base_dir: PathBuf,
    /// The recipe's `[sweep]`, its members built and validated: `run` trains each of them.
    pub sweep: Option<crate::engine::library::sweep::Plan>,
}

impl Recipe {
    /// Parses and validates recipe text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        parse_checked(text, origin, Recipe::validate)
    }

    /// Loads a recipe file.
    pub fn load(path: &Path) -> Result<LoadedRecipe> {
        Self::load_with(path, &[])
    }

    /// Loads a recipe file with `--set` overrides applied (each validated as the file is); a
    /// `[sweep]` section's members are built and validated too.
    pub fn load_with(path: &Path, overrides: &[Override]) -> Result<LoadedRecipe> {
        let (written, base_dir) = read_recipe(path)?;
        let origin = path.display().to_string();
        let (text, sweep) = crate::engine::library::sweep::split(&written, &origin)?;
        let parse = |t: &str| Self::parse(t, &origin);
        let (text, recipe) = overrides::apply(&text, overrides, parse)?;
        let sweep = sweep.map(|s| crate::engine::library::sweep::Plan::build(s, &text, &written, parse)).transpose()?;
        Ok(LoadedRecipe { recipe, path: path.to_path_buf(), base_dir, sweep })
    }

    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| Error::Invalid(format!("writing recipe: {e}")))
    }

    pub fn soft_loss(&self) -> Result<SoftLoss> {
        SoftLoss::parse(&self.distill.loss)
    }

    /// Checks every value a run depends on; the message names the key and the valid range.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let d = &self.distill;
        let s = &self.student;
        let sources = [s.model.is_some(), s.derive.is_some(), s.config.is_some()].iter().filter(|x| **x).count();
        if sources != 1 {
            return Err("[student] needs exactly one of `model`, `derive` or `config`".into());
        }
        if s.derive.is_some() && self.teacher.is_none() {
            return Err("[student] derive needs a [teacher] to derive from".into());
        }
        if self.teacher.is_none() && self.pretrain.is_none() {
            return Err("a recipe needs a [teacher] (distillation) or a [pretrain] section".into());
        }
        SoftLoss::parse(&d.loss).map_err(|e| format!("distill.loss: {e}"))?;
        let checks: [(bool, &str); 12] = [
            (!self.output.dir.trim().is_empty(), "output.dir is empty; name a folder for the run (e.g. runs/NAME)"),
            (d.temperature > 0.0 && d.temperature.is_finite(), "distill.temperature must be > 0"),
            ((0.0..=1.0).contains(&d.alpha), "distill.alpha must be in [0, 1]"),
            ((0.0..=1.0).contains(&d.jsd_beta), "distill.jsd_beta must be in [0, 1]"),
            (d.steps > 0, "distill.steps must be > 0"),
            (d.batch_size > 0, "distill.batch_size must be > 0"),
            (d.grad_accum > 0, "distill.grad_accum must be > 0"),
            (d.lr > 0.0 && d.lr.is_finite(), "distill.lr must be > 0"),
            ((0.0..=1.0).contains(&d.min_lr_ratio), "distill.min_lr_ratio must be in [0, 1]"),
            (d.weight_decay >= 0.0, "distill.weight_decay must be >= 0"),
            (d.grad_clip >= 0.0, "distill.grad_clip must be >= 0 (0 disables clipping)"),
            (self.data.seq_len >= 2, "data.seq_len must be at least 2"),
        ];
        if let Some((_, msg)) = checks.iter().find(|(ok, _)| !ok) {
            return Err((*msg).into());
        }
        if d.precision == crate::engine::kernels::autocast::Precision::Int8 {
            return Err("distill.precision = \"int8\" has no gradient, so the student cannot train in it; \
                        valid: f32, bf16. For the frozen teacher use distill.teacher_precision = \"int8\""
                .into());
        }
        if d.eval_every == 0 || d.checkpoint_every == 0 {
            return Err("distill.eval_every and distill.checkpoint_every must be > 0".into());
        }
        if let Some(q) = &self.quantize {
            q.parsed_formats().map_err(|e| e.to_string())?;
        }
        self.qad_format().map_err(|e| e.to_string())?;
        if let Some(p) = &d.on_policy {
            p.validate(self.data.seq_len)?;
            if self.teacher.is_none() {
                return Err("[distill.on_policy] distils on sampled continuations: it needs a [teacher]".into());
            }
        }
        Ok(())
    }
}

impl LoadedRecipe {
    /// A model argument: paths are taken relative to the recipe; hub ids pass through.
    pub fn model_spec(&self, spec: &str) -> String {
        model_spec_in(&self.base_dir, spec)
    }

    /// A data path or glob relative to the recipe, expanded to existing files (sorted).
    pub fn data_files(&self, pattern: &str, key: &str) -> Result<Vec<PathBuf>> {
        local_data_files(&self.path, &self.base_dir, pattern, key)
    }

    /// The output directory (relative to the working directory).
    pub fn output_dir(&self) -> PathBuf {
        PathBuf::from(&self.recipe.output.dir)
    }
}

/// A model argument relative to `base_dir` when it names a path there; hub ids pass through.
pub fn model_spec_in(base_dir: &Path, spec: &str) -> String {
    let local = base_dir.join(spec);
    if !Path::new(spec).is_absolute() && (spec.starts_with('.') || local.exists()) {
        local.display().to_string()
    } else {
        spec.to_string()
    }
}

/// A data path or glob of the recipe `recipe` (`key` names it in errors), relative to `base_dir`,
/// expanded to the existing files it matches (sorted); matching none is an error.
pub fn local_data_files(recipe: &Path, base_dir: &Path, pattern: &str, key: &str) -> Result<Vec<PathBuf>> {
    let full = if Path::new(pattern).is_absolute() { PathBuf::from(pattern) } else { base_dir.join(pattern) };
    let files = expand_glob(&full)?;
    if files.is_empty() {
        return Err(Error::Invalid(format!(
            "recipe {}: {key} = \"{pattern}\" matches no file (looked for {})",
            recipe.display(),
            full.display()
        )));
    }
    Ok(files)
}

/// Expands a glob (`corpus/*.txt`) to the existing files it matches, sorted; a plain path is itself.
pub fn expand_glob(path: &Path) -> Result<Vec<PathBuf>> {
    let pattern = path.to_string_lossy();
    let paths = glob::glob(&pattern).map_err(|e| Error::Invalid(format!("bad file pattern `{pattern}`: {e}")))?;
    let mut out: Vec<PathBuf> = paths.filter_map(|p| p.ok()).filter(|p| p.is_file()).collect();
    out.sort();
    Ok(out)
}
