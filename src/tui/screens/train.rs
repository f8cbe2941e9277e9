//! Train: live curves of a distillation run (soft loss, hard CE, total; eval perplexity and KL on
//! their own axes) for the student and the hard-label baseline, with step rate, tokens/s and ETA.
//! A classification run adds the teacher's fine-tuning, and plots eval accuracy for perplexity.

use crate::engine::distill::trainer::run_recipe;
use crate::engine::train::checkpoint;
use crate::engine::train::RunOptions;
use crate::jobs::{JobEvent, JobId, Role};
use crate::tui::app::{Action, App, Popup};
use crate::tui::fmt;
use crate::tui::history::History;
use crate::tui::tradeoff::{Origin, Point};
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
}

impl State {
    pub fn on_event(&mut self, event: &JobEvent) {
        match event {
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
    if !resume && matches!(checkpoint::load_state(&out), Ok(Some(_))) {
        app.popup = Some(Popup::Error(format!(
            "{} already holds a run: p resumes it, or change output.dir on the Recipe screen",
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
    let what = if resume { "resume" } else { "run" };
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
            app.compare.set_float_points(points);
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

/// The float points a finished run measured: the teacher, the KD student and the baseline. A
/// classification summary's class accuracy stands for top-1 accuracy and exp(cross-entropy) of
/// the labels for perplexity.
pub fn summary_points(summary: &serde_json::Value) -> Vec<Point> {
    let point = |key: &str, origin: Origin| {
        let m = summary.get(key)?;
        let f = |k: &str| m.get(k).and_then(|v| v.as_f64());
        let teacher = origin == Origin::Teacher;
        Some(Point {
            origin,
            format: "float".into(),
            bytes: m.get("parameters")?.as_u64()? * 4,
            perplexity: f("perplexity").or_else(|| f("cross_entropy").map(f64::exp))?,
            top1_accuracy: f("top1_accuracy").or_else(|| f("accuracy"))?,
            kl: if teacher { 0.0 } else { f("kl_to_teacher")? },
            agreement: if teacher { 1.0 } else { f("agreement")? },
        })
    };
    [("teacher", Origin::Teacher), ("student", Origin::Student), ("baseline", Origin::Baseline)]
        .into_iter()
        .filter_map(|(k, o)| point(k, o))
        .collect()
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
