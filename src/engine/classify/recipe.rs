//! Classification recipes (`task = "classification"`): labelled data, a teacher (a classifier, or
//! an encoder to fine-tune with a new head, or a config to train from scratch), a student derived
//! DistilBERT-style, and the training settings of each stage. Documented in `docs/classification.md`.

use super::data::Columns;
use crate::engine::hub::{fetch_uri, is_hf_uri, DownloadProgress, HubSettings};
use crate::engine::kernels::autocast::Precision;
use crate::engine::recipe::records::Expected;
use crate::engine::recipe::{local_data_files, model_spec_in, OutputSection, Override, QuantizeSection};
use crate::engine::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The value of the top-level `task` key that selects this recipe type.
pub const TASK: &str = "classification";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifyRecipe {
    pub task: String,
    pub data: ClassData,
    pub teacher: ClassTeacher,
    /// Fine-tune the teacher on the labels first (needed when it has no classification head).
    #[serde(default)]
    pub finetune: Option<TrainSection>,
    #[serde(default)]
    pub student: Option<ClassStudent>,
    #[serde(default)]
    pub distill: Option<TrainSection>,
    /// Quantize the run's classifiers after training and measure every point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantize: Option<QuantizeSection>,
    pub output: OutputSection,
    /// The metrics an exported run measured (`distill-tui run RECIPE --verify` reproduces them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<Expected>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassData {
    /// CSV, TSV, JSON lines or Parquet: a path or glob relative to the recipe, or an `hf://` URI.
    pub train: String,
    pub eval: String,
    #[serde(default = "d_text")]
    pub text_column: String,
    #[serde(default = "d_label")]
    pub label_column: String,
    /// Tokens per example, special tokens included; longer texts are cut.
    #[serde(default = "crate::engine::recipe::n::<128>")]
    pub max_len: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassTeacher {
    /// Hub id or folder of a `bert`/`distilbert` classifier or bare encoder.
    #[serde(default)]
    pub model: Option<String>,
    /// Or a `config.json` (inline table) for an encoder trained from scratch; needs `tokenizer`.
    #[serde(default)]
    pub config: Option<toml::Table>,
    #[serde(default)]
    pub tokenizer: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassStudent {
    /// Layers of the student; it copies teacher layers 0, L/n, 2L/n, … (every other one for L/2).
    pub layers: usize,
}

/// One training stage. `alpha`, `temperature`, `cosine` and `baseline` belong to `[distill]` only.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    pub steps: usize,
    #[serde(default = "crate::engine::recipe::n::<16>")]
    pub batch_size: usize,
    /// Micro-batches accumulated per optimizer step.
    #[serde(default = "crate::engine::recipe::n::<1>")]
    pub grad_accum: usize,
    pub lr: f64,
    #[serde(default)]
    pub warmup_steps: usize,
    #[serde(default = "crate::engine::recipe::weight_decay")]
    pub weight_decay: f64,
    #[serde(default = "crate::engine::recipe::grad_clip")]
    pub grad_clip: f64,
    /// Evaluate every N steps (0: at the end only).
    #[serde(default)]
    pub eval_every: usize,
    /// Checkpoint every N steps (0: at the end only), for `--resume`.
    #[serde(default = "crate::engine::recipe::n::<100>")]
    pub checkpoint_every: usize,
    /// Arithmetic of the linear layers' matmuls during training: `f32` or `bf16` (autocast).
    #[serde(default)]
    pub precision: Precision,
    #[serde(default)]
    pub seed: u64,
    /// Weight of the soft (KD) term; the hard-label CE gets 1 − alpha.
    #[serde(default)]
    pub alpha: Option<f64>,
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Weight of the cosine loss between student and teacher last hidden states (DistilBERT).
    #[serde(default)]
    pub cosine: Option<f64>,
    /// Also train the same student on labels alone.
    #[serde(default)]
    pub baseline: Option<bool>,
}

fn d_text() -> String {
    "text".into()
}
fn d_label() -> String {
    "label".into()
}

impl TrainSection {
    pub fn alpha(&self) -> f64 {
        self.alpha.unwrap_or(0.5)
    }
    pub fn temperature(&self) -> f64 {
        self.temperature.unwrap_or(2.0)
    }
    pub fn cosine(&self) -> f64 {
        self.cosine.unwrap_or(0.0)
    }
    pub fn baseline(&self) -> bool {
        self.baseline.unwrap_or(true)
    }

    fn validate(&self, name: &str) -> std::result::Result<(), String> {
        let checks = [
            (self.steps > 0, "steps must be > 0"),
            (self.batch_size > 0, "batch_size must be > 0"),
            (self.grad_accum > 0, "grad_accum must be > 0"),
            (self.precision != Precision::Int8, "precision = \"int8\" has no gradient; valid: f32, bf16"),
            (self.lr > 0.0 && self.lr.is_finite(), "lr must be > 0"),
            (self.weight_decay >= 0.0, "weight_decay must be >= 0"),
            (self.grad_clip >= 0.0, "grad_clip must be >= 0 (0 disables clipping)"),
            ((0.0..=1.0).contains(&self.alpha()), "alpha must be in [0, 1]"),
            (self.temperature() > 0.0 && self.temperature().is_finite(), "temperature must be > 0"),
            (self.cosine() >= 0.0, "cosine must be >= 0"),
        ];
        if let Some((_, msg)) = checks.iter().find(|(ok, _)| !ok) {
            return Err(format!("{name}.{msg}"));
        }
        if name == "finetune" {
            let extra = [
                ("alpha", self.alpha.is_some()),
                ("temperature", self.temperature.is_some()),
                ("cosine", self.cosine.is_some()),
                ("baseline", self.baseline.is_some()),
            ];
            if let Some((key, _)) = extra.iter().find(|(_, set)| *set) {
                return Err(format!("finetune.{key} belongs to [distill]: fine-tuning trains on labels only"));
            }
        }
        Ok(())
    }
}

/// A classification recipe with the folder its relative paths are resolved against.
#[derive(Clone, Debug)]
pub struct LoadedClassify {
    pub recipe: ClassifyRecipe,
    pub path: PathBuf,
    pub base_dir: PathBuf,
}

impl ClassifyRecipe {
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        crate::engine::recipe::parse_checked(text, origin, Self::validate)
    }

    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| Error::Invalid(format!("writing recipe: {e}")))
    }

    pub fn load(path: &Path) -> Result<LoadedClassify> {
        Self::load_with(path, &[])
    }

    /// Loads a recipe file with `--set` overrides applied (each validated as the file is).
    pub fn load_with(path: &Path, overrides: &[Override]) -> Result<LoadedClassify> {
        let (text, base_dir) = crate::engine::recipe::read_recipe(path)?;
        let origin = path.display().to_string();
        let (_, recipe) = crate::engine::recipe::overrides::apply(&text, overrides, |t| Self::parse(t, &origin))?;
        Ok(LoadedClassify { recipe, path: path.to_path_buf(), base_dir })
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if self.output.dir.trim().is_empty() {
            return Err("output.dir is empty; name a folder for the run (e.g. runs/NAME)".into());
        }
        if self.task != TASK {
            return Err(format!("task = \"{}\" is not known here; this recipe type is task = \"{TASK}\"", self.task));
        }
        let t = &self.teacher;
        if t.model.is_some() == t.config.is_some() {
            return Err("[teacher] needs exactly one of `model` or `config`".into());
        }
        if t.config.is_some() && (t.tokenizer.is_none() || self.finetune.is_none()) {
            return Err("[teacher] config (a model from scratch) needs `tokenizer` and a [finetune] section".into());
        }
        if self.data.max_len < 2 {
            return Err("data.max_len must be at least 2".into());
        }
        if let Some(f) = &self.finetune {
            f.validate("finetune")?;
        }
        if let Some(q) = &self.quantize {
            if q.imatrix {
                return Err("quantize.imatrix needs a text corpus; classification recipes quantize without one".into());
            }
            q.parsed_formats().map_err(|e| e.to_string())?;
        }
        match (&self.student, &self.distill) {
            (Some(s), Some(d)) if s.layers > 0 => d.validate("distill"),
            (Some(_), Some(_)) => Err("student.layers must be > 0".into()),
            (None, None) => Ok(()),
            _ => Err("[student] and [distill] come together".into()),
        }
    }
}

/// True when a recipe text selects the classification path (`task = "classification"`).
pub fn is_classification(text: &str) -> bool {
    toml::from_str::<toml::Table>(text).ok().and_then(|t| t.get("task").and_then(|v| v.as_str().map(|s| s == TASK)))
        == Some(true)
}

impl LoadedClassify {
    /// A path relative to the recipe's folder (absolute paths pass through).
    pub fn input(&self, p: &str) -> PathBuf {
        if Path::new(p).is_absolute() {
            PathBuf::from(p)
        } else {
            self.base_dir.join(p)
        }
    }

    /// A model argument: paths relative to the recipe; hub ids pass through.
    pub fn model_spec(&self, spec: &str) -> String {
        model_spec_in(&self.base_dir, spec)
    }

    /// The files of a data entry (`key` names it in errors): a path or glob relative to the recipe
    /// (every match, sorted), or an `hf://` URI of a file or glob in a hub repository, fetched
    /// through the hub cache with `settings`.
    pub fn data_files(
        &self,
        p: &str,
        key: &str,
        settings: &HubSettings,
        progress: &dyn Fn(&DownloadProgress),
    ) -> Result<Vec<PathBuf>> {
        if !is_hf_uri(p) {
            return local_data_files(&self.path, &self.base_dir, p, key);
        }
        fetch_uri(settings, p, progress).map_err(|e| match e {
            Error::Invalid(m) => Error::Invalid(format!("recipe {}: {key}: {m}", self.path.display())),
            other => other,
        })
    }

    pub fn columns(&self) -> Columns {
        Columns { text: self.recipe.data.text_column.clone(), label: self.recipe.data.label_column.clone() }
    }

    pub fn output_dir(&self) -> PathBuf {
        PathBuf::from(&self.recipe.output.dir)
    }
}
