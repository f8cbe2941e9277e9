//! Jobs: long work on dedicated threads (never a tokio worker or the UI thread), typed events over a
//! channel, cooperative cancellation. A job ends with exactly one terminal event: `Summary`,
//! `Failed` or `Cancelled`.

pub use crate::engine::context::{JobContext, Settings};
pub use crate::engine::events::{EvalMetrics, JobEvent, JobId, QuantPoint, Role};

use crate::engine::{Error, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

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
pub fn spawn<F>(kind: &str, description: String, settings: Arc<Settings>, body: F) -> JobHandle
where
    F: FnOnce(&JobContext) -> Result<serde_json::Value> + Send + 'static,
{
    let (tx, rx) = channel();
    let cancel = Arc::new(AtomicBool::new(false));
    let ctx = JobContext::new(tx, cancel.clone(), settings);
    let id = ctx.id;
    let kind = kind.to_string();
    let thread = std::thread::Builder::new()
        .name(format!("job-{id}-{kind}"))
        .spawn(move || run_body(&ctx, &kind, description, body))
        .expect("spawning a job thread");
    JobHandle { id, events: rx, cancel, thread: Some(thread) }
}

thread_local! {
    /// The panic message and location a front end's panic hook noted for this job thread.
    static LAST_PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Keeps a job thread's panic report (message and location) for its `Failed` event; the TUI's
/// panic hook calls it instead of printing over the screen.
pub fn note_panic(report: String) {
    LAST_PANIC.with(|p| *p.borrow_mut() = Some(report));
}

/// Runs a job body on the current thread with the same event protocol as [`spawn`].
pub fn run_body<F>(ctx: &JobContext, kind: &str, description: String, body: F)
where
    F: FnOnce(&JobContext) -> Result<serde_json::Value>,
{
    ctx.emit(JobEvent::Started { job: ctx.id, kind: kind.into(), description });
    let _kernels = crate::engine::kernels::enter(ctx.settings().kernels);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(ctx)));
    let event = match outcome {
        Ok(Ok(summary)) => JobEvent::Summary { job: ctx.id, summary },
        Ok(Err(Error::Cancelled)) => JobEvent::Cancelled { job: ctx.id },
        Ok(Err(e)) => JobEvent::Failed { job: ctx.id, bad_input: e.is_bad_input(), error: e.to_string() },
        Err(panic) => {
            let msg = LAST_PANIC.with(|p| p.borrow_mut().take()).unwrap_or_else(|| {
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into())
            });
            JobEvent::Failed {
                job: ctx.id,
                error: format!("internal error (please report it): {msg}"),
                bad_input: false,
            }
        }
    };
    ctx.emit(event);
}
