//! The headless front end: prints a job's events as human lines (stderr-friendly progress on
//! stdout) or, with `--json`, as one JSON object per line. Same events, same order as the TUI.
//! Exit codes: 0 done, 2 bad input, 1 other failure, 130 cancelled (Ctrl-C).

pub mod progress;

use crate::engine::context::Progress;
use crate::engine::error::printable;
use crate::engine::Error;
use crate::jobs::{JobEvent, JobHandle, Role};
use progress::{Output, Reporter};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// The longest error message printed (a message quoting a corrupt file is cut, not dumped).
pub const MESSAGE_CHARS: usize = 2000;

/// Exit code: bad input (a wrong id, a missing file, a bad recipe value).
pub const BAD_INPUT: i32 = 2;
/// Exit code: any other failure.
pub const FAILURE: i32 = 1;
/// Exit code: cancelled (Ctrl-C).
pub const CANCELLED: i32 = 130;

/// The exit code of an engine error.
pub fn exit_code(e: &Error) -> i32 {
    match e {
        Error::Cancelled => CANCELLED,
        e if e.is_bad_input() => BAD_INPUT,
        _ => FAILURE,
    }
}

/// Reports a failure that happened outside a job (a recipe that does not load, a bad flag): the
/// `error:` line on stderr and, with `--json`, the same `failed` line a job's failure prints.
/// Returns the exit code.
pub fn fail(e: &Error, json: bool) -> i32 {
    if json {
        println!("{}", serde_json::json!({ "event": "failed", "error": e.to_string(), "bad_input": e.is_bad_input() }));
    }
    eprintln!("error: {}", printable(&e.to_string(), MESSAGE_CHARS, true));
    exit_code(e)
}

/// The flags Ctrl-C sets: each long command registers its cancel flag.
static ON_INTERRUPT: Mutex<Vec<Arc<AtomicBool>>> = Mutex::new(Vec::new());

/// Ctrl-C sets `flag` (the engine then stops between units of work: exit 130).
pub fn cancel_on_interrupt(flag: Arc<AtomicBool>) {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let _ = ctrlc::set_handler(|| {
            for flag in ON_INTERRUPT.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                flag.store(true, Ordering::Relaxed);
            }
        });
    });
    ON_INTERRUPT.lock().unwrap_or_else(|e| e.into_inner()).push(flag);
}

/// A fresh cancel flag that Ctrl-C sets.
pub fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    cancel_on_interrupt(flag.clone());
    flag
}

/// Output style.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Human,
    Json,
}

/// Streams `handle`'s events to stdout until its terminal event, its progress (stages and training
/// steps) to stderr as `output` says; Ctrl-C cancels the job.
pub fn follow(handle: JobHandle, mode: Mode, output: Output) -> i32 {
    cancel_on_interrupt(handle.cancel_flag());
    let reporter = Reporter::new(output);
    let mut code = 1;
    for event in handle.events.iter() {
        let terminal = event.is_terminal();
        match &event {
            JobEvent::Progress { stage, done, total, unit, .. } => reporter.progress(stage, *done, *total, unit),
            JobEvent::Step { role, step, total_steps, .. } => {
                reporter.progress(&format!("{} steps", role.name()), *step as u64, *total_steps as u64, "steps")
            }
            _ => {}
        }
        let line = match mode {
            Mode::Json => Some(serde_json::to_string(&event).unwrap_or_default()),
            Mode::Human => human_line(&event),
        };
        if let Some(line) = line {
            reporter.suspend(|| {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            });
        }
        if terminal {
            code = match &event {
                JobEvent::Summary { .. } => 0,
                JobEvent::Cancelled { .. } => CANCELLED,
                JobEvent::Failed { bad_input, error, .. } => {
                    reporter.finish();
                    eprintln!("error: {}", printable(error, MESSAGE_CHARS, true));
                    if *bad_input {
                        BAD_INPUT
                    } else {
                        FAILURE
                    }
                }
                _ => FAILURE,
            };
            break;
        }
    }
    handle.join();
    code
}

fn role(r: Role) -> &'static str {
    match r {
        Role::Teacher => "teacher ",
        Role::Student => "student ",
        Role::Baseline => "baseline",
        Role::Pretrain => "model   ",
    }
}

/// The human rendering of an event (`None`: not worth a line).
pub fn human_line(event: &JobEvent) -> Option<String> {
    Some(match event {
        JobEvent::Started { description, .. } => format!("started: {description}"),
        JobEvent::Log { message, .. } => message.clone(),
        // Progress goes to stderr (a bar or plain lines), never to the result on stdout.
        JobEvent::Progress { .. } => return None,
        JobEvent::Step { role: r, step, total_steps, loss, soft_loss, hard_loss, lr, tokens_per_second, .. } => {
            if *step != 1 && step % 10 != 0 && step != total_steps {
                return None;
            }
            format!(
                "{} step {step:>5}/{total_steps}  loss {loss:.4} (soft {soft_loss:.4}, hard {hard_loss:.4})  lr {lr:.2e}  {tokens_per_second:.0} tok/s",
                role(*r)
            )
        }
        JobEvent::Eval { role: r, step, metrics, .. } => {
            let vs = match (metrics.kl_to_teacher, metrics.agreement) {
                (Some(kl), Some(a)) => format!("  KL {kl:.4}  agreement {a:.4}"),
                _ => String::new(),
            };
            match &metrics.classification {
                Some(c) => format!(
                    "{} eval @{step}: accuracy {:.4}  macro-F1 {:.4}  label CE {:.4}{vs}",
                    role(*r),
                    c.accuracy,
                    c.macro_f1,
                    c.cross_entropy
                ),
                None => format!(
                    "{} eval @{step}: perplexity {:.3}  top-1 {:.4}{vs}",
                    role(*r),
                    metrics.perplexity,
                    metrics.top1_accuracy
                ),
            }
        }
        JobEvent::Checkpoint { step, path, role: r, .. } => {
            if *r == Role::Baseline {
                return None;
            }
            format!("checkpoint @{step} → {path}")
        }
        JobEvent::Point { point, .. } => format!(
            "{} {:<10} {:>5.2} bits/weight {:>8.1} MB  {}  KL {:.4}  agreement {:.4}",
            point.model,
            point.format,
            point.bits_per_weight,
            point.bytes as f64 / 1e6,
            point.metrics.headline().replace("ppl", "perplexity"),
            point.kl,
            point.agreement
        ),
        JobEvent::Summary { summary, .. } => match (summary.get("sweep"), summary.get("runs")) {
            (Some(dir), Some(serde_json::Value::Array(runs))) => {
                format!("sweep finished: {} runs in {}", runs.len(), dir.as_str().unwrap_or_default())
            }
            _ => format!("summary: {}", serde_json::to_string_pretty(summary).unwrap_or_default()),
        },
        // The "resuming … at step N" log line says it already.
        JobEvent::Resumed { .. } => return None,
        JobEvent::Failed { .. } => return None,
        JobEvent::Cancelled { .. } => "cancelled; the last checkpoint is kept (continue with --resume)".into(),
    })
}
