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

/// One measured point of a quantization sweep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuantPoint {
    pub model: String,
    pub format: String,
    pub bits_per_weight: f64,
    pub bytes: u64,
    pub perplexity: f64,
    pub top1_accuracy: f64,
    /// KL(unquantized ‖ quantized).
    pub kl: f64,
    /// Top-1 agreement with the unquantized model.
    pub agreement: f64,
    /// KL(teacher ‖ quantized), when the sweep had a teacher to measure against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl_to_teacher: Option<f64>,
    /// Top-1 agreement with the teacher, when the sweep had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement_with_teacher: Option<f64>,
    pub tokens_per_second: f64,
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
