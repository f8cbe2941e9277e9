//! Train: live curves of a distillation run (soft loss, hard CE, total; eval perplexity and KL on
//! their own axes) for the student and the hard-label baseline, with step rate, tokens/s and ETA.
//! A classification run adds the teacher's fine-tuning, and plots eval accuracy for perplexity.
//! A run reopened from the library is its event log fed to the same state, so its curves are the
//! ones drawn live; several reopened runs are overlaid, one colour each, the legend naming what
//! tells them apart. Legends sit under the charts, never over the data.

use crate::engine::distill::trainer::run_recipe;
use crate::engine::tradeoff::Point;
use crate::engine::train::checkpoint;
use crate::engine::train::RunOptions;
use crate::jobs::{JobEvent, JobId, Role};
use crate::tui::app::{Action, App, Popup};
use crate::tui::fmt;
use crate::tui::history::History;
use crate::tui::widgets::loss_chart::{chart, Series};
use crossterm::event::{KeyCode, KeyEvent};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Color;
use ratatui::text::Line;
use ratatui::widgets::Paragraph;
use ratatui::Frame;

/// Points kept per curve; enough for a wide terminal's braille resolution.
const CAPACITY: usize = 512;

/// The latest optimizer step of one model.
#[derive(Clone, Debug, PartialEq)]
pub struct StepInfo {
    pub step: usize,
    pub total_steps: usize,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens_per_second: f64,
    pub elapsed_s: f64,
}

impl StepInfo {
    pub fn steps_per_second(&self) -> f64 {
        self.step as f64 / self.elapsed_s.max(1e-9)
    }

    /// Seconds left at the job's wall-clock pace so far (which includes the other model's steps
    /// and the evaluations, unlike `elapsed_s`, the model's own training time).
    pub fn eta_s(&self, wall_s: f64) -> f64 {
        self.total_steps.saturating_sub(self.step) as f64 * wall_s / self.step.max(1) as f64
    }
}

/// The curves of one model of the run.
pub struct RunSeries {
    pub loss: History,
    pub soft: History,
    pub hard: History,
    pub perplexity: History,
    pub accuracy: History,
    pub kl: History,
    pub last: Option<StepInfo>,
}

impl RunSeries {
    /// Drops every point past step `x`.
    pub fn truncate_after(&mut self, x: f64) {
        for h in
            [&mut self.loss, &mut self.soft, &mut self.hard, &mut self.perplexity, &mut self.accuracy, &mut self.kl]
        {
            h.truncate_after(x);
        }
        if self.last.as_ref().is_some_and(|l| l.step as f64 > x) {
            self.last = None;
        }
    }
}

impl Default for RunSeries {
    fn default() -> Self {
        let h = || History::new(CAPACITY);
        Self { loss: h(), soft: h(), hard: h(), perplexity: h(), accuracy: h(), kl: h(), last: None }
    }
}

#[derive(Default)]
pub struct State {
    pub job: Option<JobId>,
    /// The teacher's own training (a classification run's fine-tuning).
    pub teacher: RunSeries,
    pub student: RunSeries,
    pub baseline: RunSeries,
    /// Paused: the run was stopped after a checkpoint and resumes from it.
    pub paused: bool,
    /// How the last run ended.
    pub outcome: Option<String>,
    /// Runs reopened side by side (their label and replayed state), drawn instead of the above.
    pub overlay: Vec<(String, State)>,
}

/// One colour per overlaid run, in order.
pub const PALETTE: [Color; 8] =
    [Color::Cyan, Color::Yellow, Color::Magenta, Color::Green, Color::Red, Color::Blue, Color::White, Color::LightRed];

impl State {
    /// The state a run's events (its event log) leave, as if they had arrived live.
    pub fn replay(events: &[JobEvent]) -> Self {
        let mut s = Self::default();
        for e in events {
            s.on_event(e);
        }
        s.outcome = events.iter().rev().find(|e| e.is_terminal()).map(|e| match e {
            JobEvent::Summary { .. } => "finished".to_string(),
            JobEvent::Failed { error, .. } => format!("failed: {error}"),
            _ => "cancelled".to_string(),
        });
        s
    }

    pub fn on_event(&mut self, event: &JobEvent) {
        match event {
            JobEvent::Resumed { step, roles, .. } => {
                for r in roles {
                    self.series(*r).truncate_after(*step as f64);
                }
            }
            JobEvent::Step {
                role,
                step,
                total_steps,
                loss,
                soft_loss,
                hard_loss,
                lr,
                grad_norm,
                tokens_per_second,
                elapsed_s,
                ..
            } => {
                let s = self.series(*role);
                let x = *step as f64;
                if s.last.as_ref().is_some_and(|l| l.step >= *step) {
                    // A run started over in the same folder: its steps replace the earlier ones.
                    s.truncate_after(x - 1.0);
                }
                s.loss.push(x, *loss);
                s.soft.push(x, *soft_loss);
                s.hard.push(x, *hard_loss);
                s.last = Some(StepInfo {
                    step: *step,
                    total_steps: *total_steps,
                    loss: *loss,
                    lr: *lr,
                    grad_norm: *grad_norm,
                    tokens_per_second: *tokens_per_second,
                    elapsed_s: *elapsed_s,
                });
            }
            JobEvent::Eval { role, step, metrics, .. } => {
                let s = self.series(*role);
                s.perplexity.push(*step as f64, metrics.perplexity);
                s.accuracy.push(*step as f64, metrics.top1_accuracy);
                if let Some(kl) = metrics.kl_to_teacher {
                    s.kl.push(*step as f64, kl);
                }
            }
            _ => {}
        }
    }

    fn series(&mut self, role: Role) -> &mut RunSeries {
        match role {
            Role::Baseline => &mut self.baseline,
            Role::Student => &mut self.student,
            Role::Pretrain | Role::Teacher => &mut self.teacher,
        }
    }

    fn total_steps(&self) -> f64 {
        [&self.teacher, &self.student, &self.baseline]
            .iter()
            .filter_map(|s| s.last.as_ref())
            .map(|l| l.total_steps as f64)
            .fold(0.0, f64::max)
    }
}

pub fn key(key: KeyEvent) -> Option<Action> {
    match key.code {
        KeyCode::Char('s') => Some(Action::StartRun),
        KeyCode::Char('p') => Some(Action::PauseRun),
        KeyCode::Char('x') => Some(Action::CancelRun),
        _ => None,
    }
}

fn running(app: &App) -> bool {
    app.train.job.is_some_and(|id| app.jobs.get(id).is_some_and(|e| e.status == crate::tui::tasks::Status::Running))
}

/// Starts the recipe's run (or resumes it from its last checkpoint).
pub fn start(app: &mut App, resume: bool) {
    if running(app) {
        app.popup = Some(Popup::Error("a run is already going; x cancels it, p pauses it".into()));
        return;
    }
    if let Some(c) = app.classify.clone() {
        return crate::tui::screens::classify::start(app, c, resume);
    }
    if let Err(e) = app.recipe.recipe.validate() {
        app.popup = Some(Popup::Error(format!("fix the recipe first: {e}")));
        return;
    }
    let out = app.recipe.output_dir();
    // A finished run's folder gets a new numbered run beside it (the engine picks it); an
    // unfinished one is resumed, not replaced.
    let unfinished = matches!(checkpoint::load_state(&out), Ok(Some(_))) && !crate::engine::library::finished(&out);
    if !resume && unfinished && app.recipe.sweep.is_none() {
        app.popup = Some(Popup::Error(format!(
            "{} holds an unfinished run: p resumes it, or change output.dir on the Recipe screen",
            out.display()
        )));
        // What the message promises: `p` resumes the run the folder holds.
        app.train.paused = true;
        return;
    }
    if !resume {
        app.train = State::default();
    }
    let recipe = app.recipe.clone();
    let what = match (&app.recipe.sweep, resume) {
        (Some(p), true) => format!("resume sweep ({} runs)", p.members.len()),
        (Some(p), false) => format!("sweep ({} runs)", p.members.len()),
        (None, true) => "resume".into(),
        (None, false) => "run".into(),
    };
    let name = recipe.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let id =
        app.spawn("distill", format!("{what} {name}"), move |ctx, _| run_recipe(&recipe, &RunOptions { resume }, ctx));
    app.train.job = Some(id);
    app.train.paused = false;
    app.train.outcome = None;
}

pub fn pause_or_resume(app: &mut App) {
    if running(app) {
        app.train.paused = true;
        cancel(app);
    } else if app.train.paused {
        start(app, true);
    }
}

pub fn cancel(app: &mut App) {
    if let Some(e) = app.train.job.and_then(|id| app.jobs.get(id)) {
        e.cancel();
    }
}

/// Records how the run ended.
pub fn on_job_end(app: &mut App, event: &JobEvent) {
    if app.train.job != Some(event.job()) {
        return;
    }
    let t = &app.train;
    let at = t.student.last.as_ref().or(t.teacher.last.as_ref()).map(|l| l.step).unwrap_or(0);
    app.train.outcome = Some(match (event, app.train.paused) {
        (JobEvent::Cancelled { .. }, true) => format!("paused at step {at}: p resumes from the last checkpoint"),
        (JobEvent::Cancelled { .. }, false) => format!("cancelled at step {at}"),
        (JobEvent::Failed { error, .. }, _) => format!("failed: {error}"),
        _ => format!("finished: {at} steps"),
    });
    if let JobEvent::Summary { summary, .. } = event {
        let points = summary_points(summary);
        if !points.is_empty() {
            // Every point of the run as its summary has it: the float models, and the quantized
            // points again with their cost now known (the run's time plus quantizing).
            app.compare.set_run_points(points);
        }
        if let Some(path) = summary.pointer("/student/path").and_then(|p| p.as_str()) {
            app.temperature.trained_student = Some(path.to_string());
        }
        if app.classify.is_some() {
            // A teacher fine-tuned by the run lives in its output folder.
            app.temperature.trained_teacher =
                summary.pointer("/teacher/path").and_then(|p| p.as_str()).map(str::to_string);
        }
    }
}

/// Every point a finished run measured: the teacher, the KD student and the baseline, then its
/// `[quantize]` points (see [`Point::of_run`]); none when the summary is not a run's.
pub fn summary_points(summary: &serde_json::Value) -> Vec<Point> {
    crate::engine::summary::RunSummary::from_value(summary).map(|s| Point::of_run(&s)).unwrap_or_default()
}

fn status_line(name: &str, s: &RunSeries, wall_s: f64) -> Line<'static> {
    match &s.last {
        None => Line::from(format!("{name:<8} waiting for the first step")),
        Some(l) => Line::from(format!(
            "{name:<8} {}/{} · loss {:.4} · {:>6.2} steps/s · {:>7.0} tok/s · ETA {:>5} · lr {:.1e}",
            l.step,
            l.total_steps,
            l.loss,
            l.steps_per_second(),
            l.tokens_per_second,
            fmt::duration(l.eta_s(wall_s)),
            l.lr
        )),
    }
}

pub fn render(f: &mut Frame, area: Rect, app: &App) {
    let t = &app.train;
    if !t.overlay.is_empty() {
        return render_overlay(f, area, t);
    }
    let classify = app.classify.is_some();
    let wall = t.job.and_then(|id| app.jobs.get(id)).map(|e| e.started.elapsed().as_secs_f64()).unwrap_or(0.0);
    let mut head = Vec::new();
    if classify {
        head.push(status_line("teacher", &t.teacher, wall));
    }
    head.extend([status_line("student", &t.student, wall), status_line("baseline", &t.baseline, wall)]);
    head.push(Line::from(match (running(app), &t.outcome) {
        (true, _) => "running · p pause · x cancel".to_string(),
        (false, Some(o)) => o.clone(),
        (false, None) if classify => "s starts the classification recipe's run (teacher, student, baseline)".into(),
        (false, None) => "s starts the recipe's run".to_string(),
    }));
    let head_height = head.len() as u16 + 2;
    let [top, charts] = Layout::vertical([Constraint::Length(head_height), Constraint::Min(6)]).areas(area);
    f.render_widget(Paragraph::new(head).block(crate::tui::screens::panel("Run")), top);
    let [left, right] = Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(charts);
    let [eval_area, kl_area] = Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(right);
    let x_max = t.total_steps();
    let s = |name: &str, color: Color, h: &History| Series { name: name.into(), color, points: h.points() };
    let mut losses = vec![
        s("total", Color::White, &t.student.loss),
        s("soft", Color::Cyan, &t.student.soft),
        s("hard CE", Color::Yellow, &t.student.hard),
        s("baseline", Color::Red, &t.baseline.hard),
    ];
    if classify {
        losses.push(s("teacher", Color::Green, &t.teacher.hard));
        f.render_widget(chart("loss (student; baseline and teacher CE)", &losses, x_max), left);
        let acc = [
            s("teacher", Color::Green, &t.teacher.accuracy),
            s("student", Color::Cyan, &t.student.accuracy),
            s("baseline", Color::Red, &t.baseline.accuracy),
        ];
        f.render_widget(chart("eval accuracy", &acc, x_max), eval_area);
    } else {
        f.render_widget(chart("loss (student; baseline hard CE)", &losses, x_max), left);
        let ppl = [s("student", Color::Cyan, &t.student.perplexity), s("baseline", Color::Red, &t.baseline.perplexity)];
        f.render_widget(chart("eval perplexity", &ppl, x_max), eval_area);
    }
    let kl = [s("student", Color::Cyan, &t.student.kl), s("baseline", Color::Red, &t.baseline.kl)];
    f.render_widget(chart("eval KL to teacher", &kl, x_max), kl_area);
}

/// The series an overlaid run is drawn with: the KD student, else the model of a pretraining run
/// or the teacher a classification recipe fine-tunes.
fn main_series(s: &State) -> &RunSeries {
    [&s.student, &s.teacher, &s.baseline].into_iter().find(|r| r.last.is_some()).unwrap_or(&s.student)
}

/// Several reopened runs: one line each, and each run's loss, eval perplexity and KL in its colour.
fn render_overlay(f: &mut Frame, area: Rect, t: &State) {
    let shown = t.overlay.len().min(PALETTE.len());
    let mut head: Vec<Line> = t.overlay[..shown]
        .iter()
        .enumerate()
        .map(|(i, (label, s))| {
            let m = main_series(s);
            let step = m.last.as_ref().map(|l| format!("{}/{}", l.step, l.total_steps)).unwrap_or_else(|| "-".into());
            let last = |h: &History| h.last().map(|(_, y)| format!("{y:.4}")).unwrap_or_else(|| "-".into());
            Line::styled(
                format!(
                    "■ {label:<24} steps {step:<9} loss {:<8} eval ppl {:<9} KL {}",
                    last(&m.loss),
                    last(&m.perplexity),
                    last(&m.kl)
                ),
                ratatui::style::Style::default().fg(PALETTE[i]),
            )
        })
        .collect();
    if t.overlay.len() > shown {
        head.push(Line::from(format!(
            "(+{} more runs not drawn: open at most {shown} at once)",
            t.overlay.len() - shown
        )));
    }
    head.push(Line::from(t.outcome.clone().unwrap_or_default()));
    let head_height = (head.len() as u16 + 2).min(area.height / 2);
    let [top, charts] = Layout::vertical([Constraint::Length(head_height), Constraint::Min(6)]).areas(area);
    f.render_widget(Paragraph::new(head).block(crate::tui::screens::panel("Runs side by side")), top);
    let [left, right] = Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(charts);
    let [eval_area, kl_area] = Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(right);
    let series = |pick: fn(&RunSeries) -> &History| -> Vec<Series> {
        t.overlay[..shown]
            .iter()
            .enumerate()
            .map(|(i, (label, s))| Series {
                name: label.clone(),
                color: PALETTE[i],
                points: pick(main_series(s)).points(),
            })
            .collect()
    };
    let x_max = t.overlay.iter().map(|(_, s)| s.total_steps()).fold(0.0, f64::max);
    let (loss, ppl, kl) = (series(|r| &r.loss), series(|r| &r.perplexity), series(|r| &r.kl));
    f.render_widget(chart("loss", &loss, x_max), left);
    f.render_widget(chart("eval perplexity", &ppl, x_max), eval_area);
    f.render_widget(chart("eval KL to teacher", &kl, x_max), kl_area);
}
