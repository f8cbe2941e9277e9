//! The TUI's side of background jobs: spawning engine work on job threads, bridging each job's
//! std channel into the event loop's tokio channel, and the bookkeeping the Jobs screen shows.

use crate::engine::hub::{CachedModel, ModelSummary};
use crate::engine::loader::{LoadedModel, ModelInfo};
use crate::engine::pair::PairReport;
use crate::engine::tradeoff::Point;
use crate::jobs::{self, JobContext, JobEvent, JobId, Settings};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// What reaches the event loop from job threads.
pub enum Msg {
    Job(JobEvent),
    /// A typed result a job hands over before its `Summary` (models, logits), too big or too
    /// rich for the JSON summary.
    Output(JobId, Box<Output>),
}

/// Typed job results.
pub enum Output {
    Cache(Vec<CachedModel>),
    Search(Vec<ModelSummary>),
    /// A loaded teacher (and student) with the pair check, or why the check failed.
    Models {
        teacher: ModelInfo,
        student: Option<ModelInfo>,
        pair: Result<PairReport, String>,
    },
    Logits(Logits),
    /// Float points measured by an evaluation (teacher, student, baseline).
    Points(Vec<Point>),
}

/// A model's raw outputs for a prompt, kept so that changing T never reruns the model.
pub struct Logits {
    /// `teacher` or `student`.
    pub role: &'static str,
    pub model: Arc<LoadedModel>,
    /// The prompt's tokens, decoded one by one.
    pub tokens: Vec<String>,
    /// Per position, the next-token logits (causal LM); one row of class logits (classifier).
    pub rows: Vec<Vec<f32>>,
    /// Class names for a classifier; empty for a causal LM.
    pub labels: Vec<String>,
}

/// Sends a job's typed results to the loop.
pub struct Outbox {
    id: JobId,
    tx: UnboundedSender<Msg>,
}

impl Outbox {
    pub fn send(&self, output: Output) {
        let _ = self.tx.send(Msg::Output(self.id, Box::new(output)));
    }
}

/// Starts jobs whose events and outputs arrive on one channel.
#[derive(Clone)]
pub struct Spawner {
    tx: UnboundedSender<Msg>,
    settings: Arc<Settings>,
}

impl Spawner {
    /// A spawner whose jobs run with the engine `settings`.
    pub fn new(settings: Arc<Settings>) -> (Self, UnboundedReceiver<Msg>) {
        let (tx, rx) = unbounded_channel();
        (Self { tx, settings }, rx)
    }

    /// The engine settings jobs run with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Runs `body` on a job thread (never the UI thread or a tokio worker). A forwarding thread
    /// moves the job's events into the loop's channel; if the loop is gone the job is cancelled.
    pub fn spawn<F>(&self, kind: &str, description: String, body: F) -> (JobId, Arc<AtomicBool>)
    where
        F: FnOnce(&JobContext, &Outbox) -> crate::engine::Result<serde_json::Value> + Send + 'static,
    {
        let tx = self.tx.clone();
        let handle =
            jobs::spawn(kind, description, self.settings.clone(), move |ctx| body(ctx, &Outbox { id: ctx.id, tx }));
        let (id, cancel) = (handle.id, handle.cancel_flag());
        let tx = self.tx.clone();
        let forward = std::thread::Builder::new().name(format!("job-{id}-events")).spawn(move || {
            for event in handle.events.iter() {
                if tx.send(Msg::Job(event)).is_err() {
                    handle.cancel();
                    break;
                }
            }
        });
        if let Err(e) = forward {
            // Without the bridge nobody would see the job: stop it and say so.
            cancel.store(true, Ordering::Relaxed);
            let _ = self.tx.send(Msg::Job(JobEvent::Failed {
                job: id,
                error: format!("cannot start the event thread: {e}"),
                bad_input: false,
            }));
        }
        (id, cancel)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Status {
    Running,
    Done,
    Failed(String),
    Cancelled,
}

/// One job as the Jobs screen shows it.
pub struct Entry {
    pub id: JobId,
    pub kind: String,
    pub description: String,
    pub status: Status,
    /// Stage, done, total, unit of the latest progress.
    pub progress: Option<(String, u64, u64, String)>,
    /// A sweep's runs: finished, total.
    pub runs: Option<(u64, u64)>,
    pub started: Instant,
    pub log: VecDeque<String>,
    cancel: Arc<AtomicBool>,
}

const LOG_LINES: usize = 200;

impl Entry {
    pub fn fraction(&self) -> Option<f64> {
        self.progress.as_ref().filter(|p| p.2 > 0).map(|p| (p.1 as f64 / p.2 as f64).clamp(0.0, 1.0))
    }

    /// Seconds left at the average rate so far.
    pub fn eta_s(&self) -> Option<f64> {
        let f = self.fraction().filter(|f| *f > 0.0 && *f < 1.0)?;
        Some(self.started.elapsed().as_secs_f64() * (1.0 - f) / f)
    }

    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    fn push_log(&mut self, line: String) {
        if self.log.len() == LOG_LINES {
            self.log.pop_front();
        }
        self.log.push_back(line);
    }
}

/// Every job of the session, newest last.
#[derive(Default)]
pub struct Jobs {
    pub entries: Vec<Entry>,
}

impl Jobs {
    pub fn add(&mut self, id: JobId, kind: &str, description: String, cancel: Arc<AtomicBool>) {
        self.entries.push(Entry {
            id,
            kind: kind.into(),
            description,
            status: Status::Running,
            progress: None,
            runs: None,
            started: Instant::now(),
            log: VecDeque::new(),
            cancel,
        });
    }

    pub fn get(&self, id: JobId) -> Option<&Entry> {
        self.entries.iter().find(|e| e.id == id)
    }

    pub fn running(&self) -> usize {
        self.entries.iter().filter(|e| e.status == Status::Running).count()
    }

    /// The latest running job of `kind`.
    pub fn running_of(&self, kind: &str) -> Option<&Entry> {
        self.entries.iter().rev().find(|e| e.kind == kind && e.status == Status::Running)
    }

    pub fn cancel_all(&self) {
        self.entries.iter().filter(|e| e.status == Status::Running).for_each(Entry::cancel);
    }

    /// Updates the job's status, progress and log from an event.
    pub fn on_event(&mut self, event: &JobEvent) {
        let Some(e) = self.entries.iter_mut().find(|e| e.id == event.job()) else {
            return;
        };
        match event {
            JobEvent::Progress { done, total, unit, .. } if unit == "runs" => e.runs = Some((*done, *total)),
            JobEvent::Progress { stage, done, total, unit, .. } => {
                e.progress = Some((stage.clone(), *done, *total, unit.clone()))
            }
            JobEvent::Log { message, .. } => e.push_log(message.clone()),
            JobEvent::Step { step, total_steps, role, loss, .. } => {
                e.progress =
                    Some((format!("{role:?} steps").to_lowercase(), *step as u64, *total_steps as u64, "steps".into()));
                if step % 10 == 0 || step == total_steps {
                    e.push_log(format!("{role:?} step {step}/{total_steps} loss {loss:.4}").to_lowercase());
                }
            }
            JobEvent::Eval { role, step, metrics, .. } => {
                e.push_log(format!("{:?} eval at step {step}: ppl {:.3}", role, metrics.perplexity).to_lowercase())
            }
            JobEvent::Checkpoint { path, .. } => e.push_log(format!("checkpoint {path}")),
            JobEvent::Resumed { step, .. } => e.push_log(format!("resumed at step {step}")),
            JobEvent::Point { point, .. } => {
                e.push_log(format!("{} {}: {}", point.model, point.format, point.metrics.headline()))
            }
            JobEvent::Summary { .. } => {
                e.status = Status::Done;
                e.push_log("done".into());
            }
            JobEvent::Failed { error, .. } => {
                e.status = Status::Failed(error.clone());
                e.push_log(format!("failed: {error}"));
            }
            JobEvent::Cancelled { .. } => {
                e.status = Status::Cancelled;
                e.push_log("cancelled".into());
            }
            JobEvent::Started { .. } => e.push_log("started".into()),
        }
    }
}
