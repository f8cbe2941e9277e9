//! `summary.json`: the one record of a finished run, whatever its task. Runs write it; the TUI,
//! `export` and `run --verify` read it back through [`RunSummary::read`]. The field names are those
//! the files of earlier versions have, so an older file reads as it is; fields a task does not
//! measure are left out of the file.

use crate::engine::events::{QuantPoint, Role, TaskMetrics};
use crate::engine::fsutil::write_atomic;
use crate::engine::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Which task a run was.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// Causal-LM distillation or pretraining (the metrics: perplexity, top-1, KL, agreement).
    #[default]
    CausalLm,
    /// Sequence classification (accuracy, macro-F1, label cross-entropy, KL, agreement).
    Classification,
}

/// A finished run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// Absent in files written before it was recorded: then `classes` tells a classification run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskKind>,
    pub recipe: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_dir: Option<String>,
    /// Optimizer steps of the trained models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
    /// Classification: the class names by id and the size of each split.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_examples: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_examples: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher: Option<ModelSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub student: Option<ModelSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<ModelSummary>,
    /// The model of a pretraining run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelSummary>,
    /// Training throughput of the first trained model (tokens/s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_second: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher_cache: Option<CacheSummary>,
    /// `[distill.on_policy]`: micro-batches by writer, tokens sampled and sampling's time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_policy: Option<crate::engine::distill::on_policy::OnPolicySummary>,
    /// The `[quantize]` sweep's points, in sweep order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quantize: Vec<QuantPoint>,
    /// Peak resident size of the process over the whole run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_memory_bytes: Option<u64>,
    /// Peak resident size when the last training step ended (before evaluation, latency and
    /// quantization): what the memory estimate predicts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_peak_memory_bytes: Option<u64>,
    /// The pair check's training-memory estimate the run was admitted with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_estimate_bytes: Option<u64>,
    /// Wall time of the whole run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    /// CPU seconds of the whole run, every thread (user + system).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_seconds: Option<f64>,
    /// Tokens each trained model saw: steps × batch × accumulation × sequence length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_tokens: Option<u64>,
}

/// One model of a run: what it is and how it measured on the held-out data.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelSummary {
    /// The teacher's name as given (hub id, folder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The classification students' role name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Where the model is saved (a Hugging Face folder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub parameters: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers: Option<usize>,
    #[serde(flatten)]
    pub metrics: TaskMetrics,
    /// KL(teacher ‖ model) and top-1 agreement with the teacher (students and baselines).
    #[serde(default)]
    pub kl_to_teacher: Option<f64>,
    #[serde(default)]
    pub agreement: Option<f64>,
    /// Training throughput (LM) and training time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_second: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_seconds: Option<f64>,
    /// Classification: inference speed and the comparison with the teacher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_examples_per_second: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy_kept: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fewer_parameters: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speedup: Option<f64>,
    /// The model's own samples judged by the teacher: continuations of held-out prompts and the
    /// teacher's perplexity of them (on-policy quality; lower is more teacher-like).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<crate::engine::generate::SampleScore>,
    /// Serving speed of the float model (prefill, KV-cache decode) on this machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<crate::engine::generate::Latency>,
    /// The teacher as the training steps computed it (`teacher_precision` int8 or bf16), against
    /// itself in f32.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_training_precision: Option<Fidelity>,
}

/// A teacher at a lower training precision against itself in f32.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Fidelity {
    pub precision: String,
    pub perplexity: f64,
    pub top1_accuracy: f64,
    pub kl_to_f32: f64,
    pub agreement_with_f32: f64,
}

/// The teacher-logit cache a run used.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheSummary {
    pub dir: String,
    pub windows: usize,
    pub bytes: u64,
    pub hits: usize,
    pub misses: usize,
    pub top_k: usize,
}

impl RunSummary {
    /// Reads `DIR/summary.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join("summary.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        serde_json::from_str(&text).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
    }

    /// Writes `DIR/summary.json` atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        write_atomic(&dir.join("summary.json"), self.to_json_text()?.as_bytes())
    }

    pub fn to_json_text(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| Error::Invalid(e.to_string()))
    }

    /// The summary as a JSON value (the `Summary` event's payload).
    pub fn to_value(&self) -> Result<serde_json::Value> {
        serde_json::to_value(self).map_err(|e| Error::Invalid(e.to_string()))
    }

    /// A summary from a JSON value (a `Summary` event's payload).
    pub fn from_value(v: &serde_json::Value) -> Result<Self> {
        serde_json::from_value(v.clone()).map_err(|e| Error::Invalid(format!("not a run summary: {e}")))
    }

    /// The task, as recorded or (older files) as the fields tell.
    pub fn task(&self) -> TaskKind {
        self.task.unwrap_or(if self.classes.is_empty() { TaskKind::CausalLm } else { TaskKind::Classification })
    }

    /// The record of `role`'s model.
    pub fn role(&self, role: Role) -> Option<&ModelSummary> {
        match role {
            Role::Teacher => self.teacher.as_ref(),
            Role::Student => self.student.as_ref(),
            Role::Baseline => self.baseline.as_ref(),
            Role::Pretrain => self.model.as_ref(),
        }
    }

    /// The slot of `role`'s model.
    pub fn role_mut(&mut self, role: Role) -> &mut Option<ModelSummary> {
        match role {
            Role::Teacher => &mut self.teacher,
            Role::Student => &mut self.student,
            Role::Baseline => &mut self.baseline,
            Role::Pretrain => &mut self.model,
        }
    }

    /// The roles whose models the run recorded, in the order teacher, student, baseline, model.
    pub fn roles(&self) -> Vec<Role> {
        [Role::Teacher, Role::Student, Role::Baseline, Role::Pretrain]
            .into_iter()
            .filter(|r| self.role(*r).is_some())
            .collect()
    }

    /// The role a quantized point belongs to: the sweep names a trained model by its folder
    /// (`student`, `baseline`, `model`) and the teacher by its name.
    pub fn quant_role(q: &QuantPoint) -> Role {
        match Role::parse(&q.model) {
            Some(r) if r != Role::Teacher => r,
            _ => Role::Teacher,
        }
    }
}
