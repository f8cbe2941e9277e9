//! Progress of long headless work, always on stderr (stdout stays the result, or pure JSON lines
//! with `--json`): an indicatif bar with count, rate and ETA on a terminal; a plain line otherwise,
//! at most every 10 s (the first, and each stage's last, always) and at least every 30 s while a
//! stage is unfinished; nothing with `--quiet`. `NO_COLOR` drops the bar's colours. A stage that
//! comes back (a sweep's point count between its points) keeps its start time.

use crate::engine::context::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the headless commands show progress (`--quiet`, `NO_COLOR`; read by `main`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Output {
    pub quiet: bool,
    pub color: bool,
}

impl Default for Output {
    fn default() -> Self {
        Self { quiet: false, color: true }
    }
}

/// Plain lines: the most often one is printed while a stage runs.
const LINE_EVERY: Duration = Duration::from_secs(10);
/// Plain lines: the longest silence while a stage is unfinished.
const HEARTBEAT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Bar,
    Lines,
    Quiet,
}

/// The stage being shown.
struct Stage {
    name: String,
    unit: String,
    done: u64,
    total: u64,
    started: Instant,
    finished: bool,
    bar: Option<ProgressBar>,
}

impl Stage {
    /// `name: done/total unit (p%), rate, ETA` for a plain line.
    fn line(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64();
        let (done, total) = (self.done as f64, self.total.max(1) as f64);
        let amount = |n: u64| if self.unit == "bytes" { format!("{:.1} MB", n as f64 / 1e6) } else { n.to_string() };
        let unit = if self.unit == "bytes" { "" } else { self.unit.as_str() };
        let head = format!(
            "{}: {}/{} {unit} ({:.0}%)",
            self.name,
            amount(self.done),
            amount(self.total),
            100.0 * done / total
        );
        if self.finished {
            return format!("{head} in {}", human_seconds(secs));
        }
        if self.done == 0 || secs <= 0.0 {
            return head;
        }
        let eta = secs / done * (total - done);
        format!("{head}, {:.1} {}/s, ETA {}", done / secs, if unit.is_empty() { "B" } else { unit }, human_seconds(eta))
    }
}

fn human_seconds(s: f64) -> String {
    if s < 90.0 {
        format!("{s:.0} s")
    } else if s < 5400.0 {
        format!("{:.0} min {:.0} s", (s / 60.0).floor(), s % 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

struct Shared {
    mode: Mode,
    color: bool,
    stage: Mutex<Shown>,
    stop: AtomicBool,
}

/// What is on screen: the current stage, when each stage started, when the last plain line went out.
#[derive(Default)]
struct Shown {
    stage: Option<Stage>,
    starts: std::collections::HashMap<String, Instant>,
    last_line: Option<Instant>,
}

impl Shown {
    fn line_due(&self, every: Duration) -> bool {
        self.last_line.is_none_or(|t| t.elapsed() >= every)
    }

    fn print_line(&mut self) {
        if let Some(s) = &self.stage {
            self.last_line = Some(Instant::now());
            eprintln!("{}", s.line());
        }
    }
}

/// Shows progress and notes of long work on stderr; see the module's documentation.
pub struct Reporter {
    shared: Arc<Shared>,
    heartbeat: Option<std::thread::JoinHandle<()>>,
}

impl Reporter {
    /// A bar when stderr is a terminal, plain lines when not, nothing when quiet.
    pub fn new(output: Output) -> Self {
        let mode = match (output.quiet, std::io::stderr().is_terminal()) {
            (true, _) => Mode::Quiet,
            (false, true) => Mode::Bar,
            (false, false) => Mode::Lines,
        };
        Self::with_mode(mode, output.color)
    }

    fn with_mode(mode: Mode, color: bool) -> Self {
        let shared =
            Arc::new(Shared { mode, color, stage: Mutex::new(Shown::default()), stop: AtomicBool::new(false) });
        let heartbeat = (mode == Mode::Lines).then(|| {
            let shared = shared.clone();
            std::thread::spawn(move || {
                while !shared.stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(250));
                    let mut shown = shared.stage.lock().unwrap_or_else(|e| e.into_inner());
                    if shown.stage.as_ref().is_some_and(|s| !s.finished) && shown.line_due(HEARTBEAT) {
                        shown.print_line();
                    }
                }
            })
        });
        Self { shared, heartbeat }
    }

    /// Runs `f` (which prints to stdout or stderr) with the bar out of the way.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        let shown = self.shared.stage.lock().unwrap_or_else(|e| e.into_inner());
        match shown.stage.as_ref().and_then(|s| s.bar.as_ref()).filter(|b| !b.is_finished()) {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }

    /// Ends the current stage's bar, leaving its last state on screen.
    pub fn finish(&self) {
        let mut shown = self.shared.stage.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = shown.stage.as_mut() {
            if let Some(bar) = &s.bar {
                bar.finish();
            }
            s.finished = true;
        }
    }

    fn style(&self, unit: &str) -> ProgressStyle {
        let (name, bar) = if self.shared.color {
            ("{prefix:>16.cyan.bold}", "{bar:30.green/white}")
        } else {
            ("{prefix:>16}", "{bar:30}")
        };
        let counts = if unit == "bytes" {
            "{bytes}/{total_bytes} · {bytes_per_sec}".to_string()
        } else {
            format!("{{pos}}/{{len}} {unit} · {{per_sec}}")
        };
        ProgressStyle::with_template(&format!("{name} [{bar}] {counts} · ETA {{eta}}"))
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ")
    }
}

impl Progress for Reporter {
    fn progress(&self, stage: &str, done: u64, total: u64, unit: &str) {
        let mode = self.shared.mode;
        if mode == Mode::Quiet {
            return;
        }
        let mut shown = self.shared.stage.lock().unwrap_or_else(|e| e.into_inner());
        let fresh =
            !matches!(&shown.stage, Some(s) if s.name == stage && s.unit == unit && !(s.finished && done < s.done));
        if fresh {
            if let Some(bar) = shown.stage.as_ref().and_then(|s| s.bar.as_ref()) {
                bar.finish();
            }
            let now = Instant::now();
            // A stage seen before and not starting over keeps its start (rate and ETA stay honest).
            let started = match shown.starts.get(stage) {
                Some(t) if done > 0 => *t,
                _ => now,
            };
            shown.starts.insert(stage.to_string(), started);
            let bar = (mode == Mode::Bar).then(|| {
                let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
                    .with_elapsed(now.duration_since(started));
                bar.set_style(self.style(unit));
                bar.set_prefix(stage.to_string());
                bar
            });
            shown.stage =
                Some(Stage { name: stage.into(), unit: unit.into(), done, total, started, finished: false, bar });
        }
        let Some(s) = shown.stage.as_mut() else { return };
        let was_finished = s.finished;
        s.done = done;
        s.total = total;
        s.finished = total > 0 && done >= total;
        let just_finished = s.finished && !was_finished;
        if let Some(bar) = &s.bar {
            bar.set_length(total);
            bar.set_position(done);
            if s.finished {
                bar.finish();
            }
        } else if just_finished || shown.line_due(LINE_EVERY) {
            shown.print_line();
        }
    }

    fn note(&self, message: &str) {
        if self.shared.mode == Mode::Quiet {
            return;
        }
        self.suspend(|| {
            eprintln!("{message}");
            let _ = std::io::stderr().flush();
        });
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.finish();
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.heartbeat.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_name_the_stage_its_counts_and_an_eta() {
        let started = Instant::now() - Duration::from_secs(10);
        let mut s = Stage {
            name: "eval".into(),
            unit: "windows".into(),
            done: 4,
            total: 16,
            started,
            finished: false,
            bar: None,
        };
        let line = s.line();
        assert!(line.starts_with("eval: 4/16 windows (25%), 0.4 windows/s, ETA 30 s"), "{line}");
        s.done = 16;
        s.finished = true;
        assert!(s.line().starts_with("eval: 16/16 windows (100%) in 10 s"), "{}", s.line());
        s.unit = "bytes".into();
        s.total = 2_500_000;
        s.done = 2_500_000;
        assert!(s.line().starts_with("eval: 2.5 MB/2.5 MB  (100%)"), "{}", s.line());
        assert_eq!(human_seconds(125.0), "2 min 5 s");
    }
}
