//! Progress of long headless work, always on stderr (stdout stays the result, or pure JSON lines
//! with `--json`): an indicatif bar with count, rate and ETA on a terminal; a plain line otherwise,
//! at most every 10 s (the first line, and each stage's last, always) and at least every 30 s while
//! a stage is unfinished; nothing with `--quiet`. `NO_COLOR` drops the bar's colours. Stages may
//! interleave (the KD student and the baseline step in turn; a sweep's point count between its
//! points): each keeps its own bar and start time, and a finished one leaves a single line.

use crate::engine::context::Progress;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
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

/// One stage of work (`eval`, `student steps`, `downloading model.safetensors`).
struct Stage {
    name: String,
    unit: String,
    done: u64,
    /// The count when the stage was first seen (a resumed run starts past 0, and a stage is first
    /// reported after its first unit): the rate counts only what was done since.
    from: u64,
    total: u64,
    started: Instant,
    finished: bool,
    bar: Option<ProgressBar>,
}

impl Stage {
    fn amount(&self, n: u64) -> String {
        if self.unit == "bytes" {
            format!("{:.1} MB", n as f64 / 1e6)
        } else {
            n.to_string()
        }
    }

    /// `name: done/total unit (p%), rate, ETA` for a plain line; `… in 12 s` once finished.
    fn line(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64();
        let (done, total) = (self.done as f64, self.total.max(1) as f64);
        let unit = if self.unit == "bytes" { "" } else { self.unit.as_str() };
        let (d, t) = (self.amount(self.done), self.amount(self.total));
        let head = format!("{}: {d}/{t} {unit} ({:.0}%)", self.name, 100.0 * done / total);
        if self.finished {
            return format!("{head} in {}", human_seconds(secs));
        }
        if self.done <= self.from || secs <= 0.0 {
            return head;
        }
        let rate = (self.done - self.from) as f64 / secs;
        let eta = (total - done).max(0.0) / rate;
        format!("{head}, {rate:.1} {}/s, ETA {}", if unit.is_empty() { "B" } else { unit }, human_seconds(eta))
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

/// The stages seen (several run interleaved: the KD student and the baseline step in turn) and
/// when the last plain line went out.
#[derive(Default)]
struct Shown {
    stages: Vec<Stage>,
    last_line: Option<Instant>,
    /// The stage reported last (what the 30 s heartbeat repeats).
    latest: Option<usize>,
}

impl Shown {
    fn line_due(&self, every: Duration) -> bool {
        self.last_line.is_none_or(|t| t.elapsed() >= every)
    }

    fn print_line(&mut self, i: usize) {
        self.last_line = Some(Instant::now());
        eprintln!("{}", self.stages[i].line());
    }
}

struct Shared {
    mode: Mode,
    color: bool,
    shown: Mutex<Shown>,
    /// The bars (bar mode): live stages draw here, finished ones leave one line above.
    multi: MultiProgress,
    stop: AtomicBool,
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
        let target = if mode == Mode::Bar { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        let shared = Arc::new(Shared {
            mode,
            color,
            shown: Mutex::new(Shown::default()),
            multi: MultiProgress::with_draw_target(target),
            stop: AtomicBool::new(false),
        });
        let heartbeat = (mode == Mode::Lines).then(|| {
            let shared = shared.clone();
            std::thread::spawn(move || {
                while !shared.stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(250));
                    let mut shown = shared.shown.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(i) = shown.latest.filter(|&i| !shown.stages[i].finished) {
                        if shown.line_due(HEARTBEAT) {
                            shown.print_line(i);
                        }
                    }
                }
            })
        });
        Self { shared, heartbeat }
    }

    /// Runs `f` (which prints to stdout or stderr) with the bars out of the way.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.shared.multi.suspend(f)
    }

    /// Ends every bar still drawn (a failure or the end of a command): each leaves its last line.
    pub fn finish(&self) {
        let mut shown = self.shared.shown.lock().unwrap_or_else(|e| e.into_inner());
        for i in 0..shown.stages.len() {
            if !shown.stages[i].finished {
                self.close(&mut shown.stages[i]);
            }
        }
    }

    /// Takes a stage's bar off the live area and leaves its final state above it, drawn as a bar:
    /// `            eval [==============================] 64/64 windows · 97.4/s · 0.7 s`.
    fn close(&self, stage: &mut Stage) {
        if let Some(bar) = stage.bar.take() {
            let secs = stage.started.elapsed().as_secs_f64();
            let filled = if stage.total == 0 { 30 } else { (30 * stage.done.min(stage.total) / stage.total) as usize };
            let unit = if stage.unit == "bytes" { "" } else { stage.unit.as_str() };
            let counted = stage.done.saturating_sub(stage.from);
            let rate =
                if secs > 0.0 && counted > 0 { format!(" · {:.1}/s", counted as f64 / secs) } else { String::new() };
            let line = format!(
                "{:>16} [{}{}] {}/{} {unit}{rate} · {}",
                stage.name,
                "=".repeat(filled),
                " ".repeat(30 - filled),
                stage.amount(stage.done),
                stage.amount(stage.total),
                human_seconds(secs)
            );
            bar.finish_and_clear();
            self.shared.multi.remove(&bar);
            let _ = self.shared.multi.println(line);
        }
    }

    /// A bar for a stage first seen at `done` (its rate and ETA count from there on).
    fn bar(&self, stage: &str, done: u64, total: u64, unit: &str) -> ProgressBar {
        let (name, bar) = if self.shared.color {
            ("{prefix:>16.cyan.bold}", "{bar:30.green/white}")
        } else {
            ("{prefix:>16}", "{bar:30}")
        };
        let counts = if unit == "bytes" {
            "{bytes}/{total_bytes} · {bytes_per_sec}".to_string()
        } else {
            format!("{{pos}}/{{len}} {unit} · {{rate}}")
        };
        let style = ProgressStyle::with_template(&format!("{name} [{bar}] {counts} · ETA {{eta}}"))
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .with_key("rate", |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.1}/s", state.per_sec());
            })
            .progress_chars("=> ");
        let bar = self.shared.multi.add(ProgressBar::new(total));
        bar.set_style(style);
        bar.set_prefix(stage.to_string());
        bar.set_position(done);
        bar.reset_eta();
        bar
    }
}

impl Progress for Reporter {
    fn progress(&self, stage: &str, done: u64, total: u64, unit: &str) {
        let mode = self.shared.mode;
        if mode == Mode::Quiet {
            return;
        }
        let mut shown = self.shared.shown.lock().unwrap_or_else(|e| e.into_inner());
        let found = shown.stages.iter().position(|s| s.name == stage);
        // A stage seen before continues unless it starts over (another unit, or counting from below).
        let fresh = match found {
            Some(i) => {
                let s = &shown.stages[i];
                s.unit != unit || done < s.done
            }
            None => true,
        };
        let i = match (found, fresh) {
            (Some(i), false) => i,
            (found, _) => {
                if let Some(i) = found {
                    let mut old = shown.stages.remove(i);
                    self.close(&mut old);
                }
                let bar = (mode == Mode::Bar).then(|| self.bar(stage, done, total, unit));
                let started = Instant::now();
                shown.stages.push(Stage {
                    name: stage.into(),
                    unit: unit.into(),
                    done,
                    from: done,
                    total,
                    started,
                    finished: false,
                    bar,
                });
                shown.stages.len() - 1
            }
        };
        shown.latest = Some(i);
        let s = &mut shown.stages[i];
        let was_finished = s.finished;
        s.done = done;
        s.total = total;
        s.finished = total > 0 && done >= total;
        let just_finished = s.finished && !was_finished;
        if let Some(bar) = &s.bar {
            bar.set_length(total);
            bar.set_position(done);
            if just_finished {
                self.close(s);
            }
        } else if mode == Mode::Lines && (just_finished || shown.line_due(LINE_EVERY)) {
            shown.print_line(i);
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
            from: 0,
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

    #[test]
    fn the_rate_counts_from_where_the_stage_was_first_seen() {
        // A resumed run's steps, first reported at 276 of 500: no rate (nothing timed yet) ...
        let mut s = Stage {
            name: "student steps".into(),
            unit: "steps".into(),
            done: 276,
            from: 276,
            total: 500,
            started: Instant::now(),
            finished: false,
            bar: None,
        };
        assert_eq!(s.line(), "student steps: 276/500 steps (55%)");
        // ... then 10 steps in 20 s: 0.5 steps/s and 224 steps to go, not 286 steps over 20 s.
        s.started = Instant::now() - Duration::from_secs(20);
        s.done = 286;
        let line = s.line();
        assert!(line.starts_with("student steps: 286/500 steps (57%), 0.5 steps/s, ETA 7 min 8 s"), "{line}");
    }
}
