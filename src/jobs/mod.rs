//! Jobs: long work on dedicated threads (never a tokio worker or the UI thread), typed events over a
//! channel, cooperative cancellation. A job ends with exactly one terminal event: `Summary`,
//! `Failed` or `Cancelled`.

pub mod events;

pub use events::{EvalMetrics, JobEvent, JobId, QuantPoint, RunRole};

use crate::engine::{Error, Result};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// What a running job uses to report and to notice cancellation.
#[derive(Clone)]
pub struct JobContext {
    pub id: JobId,
    tx: Sender<JobEvent>,
    cancel: Arc<AtomicBool>,
}

impl JobContext {
    /// A context whose events go to `tx` (for running a job body on the current thread).
    pub fn new(tx: Sender<JobEvent>, cancel: Arc<AtomicBool>) -> Self {
        Self { id: NEXT_ID.fetch_add(1, Ordering::Relaxed), tx, cancel }
    }

    /// Sends an event; a front end that went away is not an error for the job.
    pub fn emit(&self, event: JobEvent) {
        let _ = self.tx.send(event);
    }

    pub fn log(&self, message: impl Into<String>) {
        self.emit(JobEvent::Log { job: self.id, message: message.into() });
    }

    pub fn progress(&self, stage: &str, done: u64, total: u64, unit: &str) {
        self.emit(JobEvent::Progress { job: self.id, stage: stage.into(), done, total, unit: unit.into() });
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// `Err(Cancelled)` once cancellation was requested: call between units of work.
    pub fn check(&self) -> Result<()> {
        if self.is_cancelled() {
            Err(Error::Cancelled)
        } else {
            Ok(())
        }
    }

    /// The cancellation flag, for engine functions that take one.
    pub fn cancel_flag(&self) -> &AtomicBool {
        &self.cancel
    }
}

/// A job running on its own thread.
pub struct JobHandle {
    pub id: JobId,
    pub events: Receiver<JobEvent>,
    cancel: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl JobHandle {
    /// Asks the job to stop at its next check; it then sends `Cancelled`.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }

    /// Waits for the thread to end.
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Spawns `body` on a named thread. Its `Ok(summary)` becomes a `Summary` event, an error a
/// `Failed` (or `Cancelled`) event; a panic is reported as `Failed` too.
pub fn spawn<F>(kind: &str, description: String, body: F) -> JobHandle
where
    F: FnOnce(&JobContext) -> Result<serde_json::Value> + Send + 'static,
{
    let (tx, rx) = channel();
    let cancel = Arc::new(AtomicBool::new(false));
    let ctx = JobContext::new(tx, cancel.clone());
    let id = ctx.id;
    let kind = kind.to_string();
    let thread = std::thread::Builder::new()
        .name(format!("job-{id}-{kind}"))
        .spawn(move || run_body(&ctx, &kind, description, body))
        .expect("spawning a job thread");
    JobHandle { id, events: rx, cancel, thread: Some(thread) }
}

/// Runs a job body on the current thread with the same event protocol as [`spawn`].
pub fn run_body<F>(ctx: &JobContext, kind: &str, description: String, body: F)
where
    F: FnOnce(&JobContext) -> Result<serde_json::Value>,
{
    ctx.emit(JobEvent::Started { job: ctx.id, kind: kind.into(), description });
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(ctx)));
    let event = match outcome {
        Ok(Ok(summary)) => JobEvent::Summary { job: ctx.id, summary },
        Ok(Err(Error::Cancelled)) => JobEvent::Cancelled { job: ctx.id },
        Ok(Err(e)) => JobEvent::Failed { job: ctx.id, bad_input: e.is_bad_input(), error: e.to_string() },
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            JobEvent::Failed { job: ctx.id, error: format!("internal error: {msg}"), bad_input: false }
        }
    };
    ctx.emit(event);
}
