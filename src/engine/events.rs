//! Typed events every job reports. Front ends (the TUI, the headless CLI) consume the same events
//! in the same order; `--json` prints them one per line, tagged by `"event"`.

use serde::{Deserialize, Serialize};

/// Identifies a job within one process.
pub type JobId = u64;

/// Which model: the one identity of a model in events, checkpoints, the run summary and the
/// points (a point is a role at a precision: `student`, `student-q4_0`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The model distilled from; trained here only when a recipe fine-tunes it (classification).
    Teacher,
    /// The student trained on the teacher's distribution (KD).
    Student,
    /// The same student trained on hard labels only.
    Baseline,
    /// A model trained from scratch (`pretrain`).
    Pretrain,
}

impl Role {
    /// The name used in files and folders (`student/`, `checkpoint/student-40.*`, `summary.json`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Teacher => "teacher",
            Self::Student => "student",
            Self::Baseline => "baseline",
            Self::Pretrain => "model",
        }
    }

    /// The role a name stands for (the inverse of [`Role::name`]).
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Teacher, Self::Student, Self::Baseline, Self::Pretrain].into_iter().find(|r| r.name() == name)
    }
}

/// Held-out metrics of a model, measured against the teacher when there is one.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    pub perplexity: f64,
    pub top1_accuracy: f64,
    /// Mean KL(teacher ‖ model) per position at T = 1; absent without a teacher.
    pub kl_to_teacher: Option<f64>,
    /// Top-1 agreement with the teacher; absent without a teacher.
    pub agreement: Option<f64>,
    /// A classifier's metrics by their names (its `top1_accuracy` and `perplexity` above carry the
    /// accuracy and exp(label cross-entropy), the curves the Train screen plots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification: Option<ClassEval>,
}

/// A classifier's held-out accuracy, macro-F1 and label cross-entropy (nats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClassEval {
    pub accuracy: f64,
    pub macro_f1: f64,
    pub cross_entropy: f64,
}

/// A model's held-out metrics, named by task: perplexity and top-1 next-token accuracy (causal LM),
/// accuracy, macro-F1 and the mean cross-entropy of the labels (classification).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskMetrics {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perplexity: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top1_accuracy: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub macro_f1: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cross_entropy: Option<f64>,
}

impl TaskMetrics {
    /// A language model's perplexity and top-1 accuracy.
    pub fn lm(perplexity: f64, top1_accuracy: f64) -> Self {
        Self { perplexity: Some(perplexity), top1_accuracy: Some(top1_accuracy), ..Self::default() }
    }

    /// The task's main figure: `ppl 12.345` (language model) or `accuracy 0.9000` (classifier).
    pub fn headline(&self) -> String {
        match (self.perplexity, self.accuracy) {
            (Some(p), _) => format!("ppl {p:.3}"),
            (None, Some(a)) => format!("accuracy {a:.4}"),
            (None, None) => "no metrics".into(),
        }
    }

    /// A classifier's accuracy, macro-F1 and label cross-entropy.
    pub fn classification(accuracy: f64, macro_f1: f64, cross_entropy: f64) -> Self {
        Self {
            accuracy: Some(accuracy),
            macro_f1: Some(macro_f1),
            cross_entropy: Some(cross_entropy),
            ..Self::default()
        }
    }
}

/// One measured point of a quantization sweep: a model in a format, against its float self (`kl`,
/// `agreement`) and the teacher. The `Point` event and `summary.json`'s `quantize` entries.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct QuantPoint {
    /// `student`, `baseline`, `model`, or the teacher's name.
    pub model: String,
    pub format: String,
    pub bits_per_weight: f64,
    pub bytes: u64,
    #[serde(flatten)]
    pub metrics: TaskMetrics,
    /// KL(float ‖ quantized) and top-1 agreement with the float model.
    pub kl: f64,
    pub agreement: f64,
    /// The student trained quantization-aware in this format (`distill.qad`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub qad: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl_to_teacher: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement_with_teacher: Option<f64>,
    /// Speed of what runs (LM: tokens/s; classification: eval examples/s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_second: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_examples_per_second: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantize_seconds: Option<f64>,
    /// CPU seconds of quantizing (every thread).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantize_cpu_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mparams_per_second: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallbacks: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imatrix: Option<bool>,
    /// The float model's perplexity on the same windows (LM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_perplexity: Option<f64>,
    /// Serving speed in this format (prefill, KV-cache decode), on this machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<crate::engine::generate::Latency>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum JobEvent {
    Started {
        job: JobId,
        kind: String,
        description: String,
    },
    /// Generic progress: downloads (`bytes`), evaluation windows, sweep points.
    Progress {
        job: JobId,
        stage: String,
        done: u64,
        total: u64,
        unit: String,
    },
    Log {
        job: JobId,
        message: String,
    },
    /// One optimizer step.
    Step {
        job: JobId,
        role: Role,
        step: usize,
        total_steps: usize,
        loss: f64,
        soft_loss: f64,
        hard_loss: f64,
        lr: f64,
        grad_norm: f64,
        tokens_per_second: f64,
        elapsed_s: f64,
    },
    /// A periodic held-out evaluation.
    Eval {
        job: JobId,
        role: Role,
        step: usize,
        metrics: EvalMetrics,
    },
    /// A checkpoint was written (atomically).
    Checkpoint {
        job: JobId,
        role: Role,
        step: usize,
        path: String,
    },
    /// Training continues from a checkpoint: what the roles did after `step` (in an earlier,
    /// interrupted attempt) is replaced by what follows.
    Resumed {
        job: JobId,
        step: usize,
        roles: Vec<Role>,
    },
    /// A finished quantization point.
    Point {
        job: JobId,
        point: QuantPoint,
    },
    /// The job's result: every metric it produced.
    Summary {
        job: JobId,
        summary: serde_json::Value,
    },
    Failed {
        job: JobId,
        error: String,
        bad_input: bool,
    },
    Cancelled {
        job: JobId,
    },
}

impl JobEvent {
    pub fn job(&self) -> JobId {
        match self {
            Self::Started { job, .. }
            | Self::Progress { job, .. }
            | Self::Log { job, .. }
            | Self::Step { job, .. }
            | Self::Eval { job, .. }
            | Self::Checkpoint { job, .. }
            | Self::Point { job, .. }
            | Self::Resumed { job, .. }
            | Self::Summary { job, .. }
            | Self::Failed { job, .. }
            | Self::Cancelled { job } => *job,
        }
    }

    /// True for the last event a job sends.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Summary { .. } | Self::Failed { .. } | Self::Cancelled { .. })
    }
}
