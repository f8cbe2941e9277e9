//! Runs: the library (every run and sweep started on this machine, from `runs.json` under the
//! cache root) with task, status, settings, result and date. Enter reopens the run under the cursor
//! (or every marked run) on Train and Compare, its curves replayed from its event log; p resumes
//! an unfinished run; space marks runs to see side by side, a marks a sweep's members.

use crate::engine::library::{self, sweep::SweepRecord, RunEntry, Status};
use crate::engine::tradeoff::{merge_runs, Point};
use crate::tui::app::{Action, App, Popup, Screen};
use crate::tui::keymap::{nav, step};
use crate::tui::screens::{panel, selected};
use crossterm::event::{KeyCode, KeyEvent};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::Line;
use ratatui::widgets::Paragraph;
use ratatui::Frame;
use std::collections::BTreeSet;
use std::path::PathBuf;

#[derive(Default)]
pub struct State {
    pub entries: Vec<RunEntry>,
    pub row: usize,
    /// Rows marked to open together.
    pub marked: BTreeSet<usize>,
}

impl State {
    /// Reads the library again (keeping the cursor on the same run).
    pub fn refresh(&mut self, settings: &crate::engine::context::Settings) {
        let at = self.entries.get(self.row).map(|e| e.dir.clone());
        let marked: Vec<PathBuf> =
            self.marked.iter().filter_map(|i| self.entries.get(*i)).map(|e| e.dir.clone()).collect();
        self.entries = library::list(settings);
        self.row = at.and_then(|d| self.entries.iter().position(|e| e.dir == d)).unwrap_or(0);
        self.marked = marked.iter().filter_map(|d| self.entries.iter().position(|e| &e.dir == d)).collect();
    }

    pub fn key(&mut self, key: KeyEvent) -> Option<Action> {
        match key.code {
            KeyCode::Char(' ') if !self.entries.is_empty() => {
                if !self.marked.remove(&self.row) {
                    self.marked.insert(self.row);
                }
                self.row = (self.row + 1).min(self.entries.len() - 1);
            }
            KeyCode::Char('a') => self.mark_sweep(),
            KeyCode::Char('r') => return Some(Action::RefreshRuns),
            KeyCode::Enter => {
                let rows: Vec<usize> =
                    if self.marked.is_empty() { vec![self.row] } else { self.marked.iter().copied().collect() };
                let dirs: Vec<PathBuf> =
                    rows.iter().filter_map(|i| self.entries.get(*i)).map(|e| e.dir.clone()).collect();
                return (!dirs.is_empty()).then_some(Action::OpenRuns(dirs));
            }
            KeyCode::Char('p') => return self.entries.get(self.row).map(|e| Action::ResumeRun(e.dir.clone())),
            _ => self.row = step(self.row, self.entries.len(), nav(&key)?),
        }
        None
    }

    /// Marks the members of the sweep under the cursor (the sweep's row, or one of its members).
    fn mark_sweep(&mut self) {
        let Some(e) = self.entries.get(self.row) else { return };
        let sweep = match e.record.as_ref().and_then(|r| r.sweep.clone()) {
            Some(s) => PathBuf::from(s),
            None => e.dir.clone(),
        };
        let members: Vec<usize> = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, m)| m.record.as_ref().and_then(|r| r.sweep.as_deref()) == Some(&*sweep.to_string_lossy()))
            .map(|(i, _)| i)
            .collect();
        self.marked = members.into_iter().collect();
    }
}

/// The runs `dirs` stand for (a sweep: its members), read from their folders.
fn expand(dirs: &[PathBuf]) -> Vec<RunEntry> {
    let mut out: Vec<RunEntry> = Vec::new();
    for d in dirs {
        let members = match SweepRecord::read(d) {
            Ok(s) => s.dirs(d),
            Err(_) => vec![d.clone()],
        };
        for m in members.iter().filter_map(|m| RunEntry::read(m)) {
            if !out.iter().any(|e| e.dir == m.dir) {
                out.push(m);
            }
        }
    }
    out
}

/// Reopens runs: one run replaces Train's curves and Compare's points with its own (replayed from
/// its event log); several are overlaid on Train and plotted together on Compare, each labelled by
/// what tells it apart.
pub fn open(app: &mut App, dirs: Vec<PathBuf>) {
    let runs = expand(&dirs);
    if runs.is_empty() {
        app.popup = Some(Popup::Error("nothing to open: the folder holds no run any more (r reloads the list)".into()));
        return;
    }
    let labels = if runs.len() == 1 { vec![String::new()] } else { library::differences(&runs) };
    let mut per_run: Vec<(String, Vec<Point>)> = Vec::new();
    let mut overlay = Vec::new();
    for (run, label) in runs.iter().zip(&labels) {
        let events = match library::log::read_events(&run.dir) {
            Ok(e) => e,
            Err(e) => {
                app.popup = Some(Popup::Error(e.to_string()));
                return;
            }
        };
        let replayed = crate::tui::screens::train::State::replay(&events);
        let mut points = run.summary.as_ref().map(Point::of_run).unwrap_or_default();
        if points.is_empty() {
            // An unfinished run: the points its log holds.
            points = events
                .iter()
                .filter_map(|e| match e {
                    crate::jobs::JobEvent::Point { point, .. } => Some(Point::from_quant(point)),
                    _ => None,
                })
                .collect();
        }
        per_run.push((label.clone(), points));
        overlay.push((if label.is_empty() { run.name.clone() } else { label.clone() }, replayed));
    }
    app.compare.points.clear();
    for p in merge_runs(&per_run) {
        app.compare.points.push(p);
    }
    app.compare.resort();
    if runs.len() == 1 {
        let (_, mut state) = overlay.pop().expect("one run");
        let r = &runs[0];
        state.outcome = Some(format!(
            "reopened {}: {}{} · s starts the recipe again",
            r.name,
            r.status.name(),
            r.checkpoint_step
                .filter(|_| r.status != Status::Finished)
                .map(|s| format!(" at step {s} (p on Runs resumes)"))
                .unwrap_or_default()
        ));
        app.train = state;
        if let Some(path) = r.summary.as_ref().and_then(|s| s.student.as_ref()).and_then(|m| m.path.clone()) {
            app.temperature.trained_student = Some(path);
        }
    } else {
        app.train = crate::tui::screens::train::State::default();
        app.train.outcome = Some(format!("{} runs side by side · s starts the recipe's run", runs.len()));
        app.train.overlay = overlay;
    }
    app.screen = Screen::Train;
}

/// Resumes the unfinished run in `dir` with the recipe it recorded.
pub fn resume(app: &mut App, dir: PathBuf) {
    let Some(entry) = RunEntry::read(&dir) else {
        app.popup = Some(Popup::Error(format!("{} holds no run any more (r reloads the list)", dir.display())));
        return;
    };
    if !entry.status.resumable() || entry.checkpoint_step.is_none() {
        let why = match entry.status {
            Status::Finished => "it finished; Enter reopens it, s on Train starts a new run".to_string(),
            Status::Running => "it is running".to_string(),
            _ => "it has no checkpoint to continue from".to_string(),
        };
        app.popup = Some(Popup::Error(format!("{} cannot be resumed: {why}", entry.name)));
        return;
    }
    let task = entry.task();
    if task != "distill" && task != "pretrain" {
        app.popup = Some(Popup::Error(format!(
            "{} is a {task} run: continue it with `distill-tui run RECIPE --resume` (the workbench resumes distillation runs)",
            entry.name
        )));
        return;
    }
    let recorded = dir.join("recipe.toml");
    let recipe_path = entry.record.as_ref().map(|r| PathBuf::from(&r.recipe)).unwrap_or(recorded.clone());
    let text = match std::fs::read_to_string(&recorded) {
        Ok(t) => t,
        Err(e) => {
            app.popup = Some(Popup::Error(format!("reading {}: {e}", recorded.display())));
            return;
        }
    };
    match crate::engine::recipe::Recipe::parse(&text, &recorded.display().to_string()) {
        Ok(mut recipe) => {
            recipe.output.dir = dir.display().to_string();
            let base_dir = recipe_path.parent().map(PathBuf::from).unwrap_or_default();
            app.recipe = crate::engine::recipe::LoadedRecipe { recipe, path: recipe_path, base_dir, sweep: None };
            app.classify = None;
            open(app, vec![dir]);
            crate::tui::screens::train::start(app, true);
        }
        Err(e) => app.popup = Some(Popup::Error(e.to_string())),
    }
}

pub fn render(f: &mut Frame, area: Rect, app: &App) {
    let s = &app.runs;
    let [list, foot] = Layout::vertical([Constraint::Min(3), Constraint::Length(4)]).areas(area);
    if s.entries.is_empty() {
        let msg = "no runs yet: s on Train starts the recipe's run; every run and sweep is listed here, \
                   also after the workbench is closed and opened again";
        f.render_widget(Paragraph::new(msg).wrap(ratatui::widgets::Wrap { trim: true }).block(panel("Runs")), list);
    } else {
        let height = list.height.saturating_sub(3) as usize;
        let name_w = s.entries.iter().map(|e| e.name.chars().count()).max().unwrap_or(4).clamp(4, 26);
        // The date only where it fits.
        let dated = list.width >= 118;
        let mut lines = vec![Line::from(format!(
            "    {:<name_w$} {:<8} {:<12} {:<20} {:<24} {}",
            "run",
            "task",
            "status",
            "settings",
            "result",
            if dated { "date" } else { "" }
        ))];
        lines.extend(super::in_view(&s.entries, s.row, height).map(|(i, e)| {
            let status = match (e.status.resumable(), e.checkpoint_step) {
                (true, Some(step)) => format!("{} @{step}", e.status.name()),
                _ => e.status.name().to_string(),
            };
            let settings = e.record.as_ref().and_then(|r| r.label.clone()).unwrap_or_else(|| {
                let s = e.settings();
                ["T", "alpha", "loss", "layers"]
                    .iter()
                    .filter_map(|k| s.get(*k).map(|v| format!("{k}={v}")))
                    .collect::<Vec<_>>()
                    .join(" ")
            });
            let member = e.record.as_ref().is_some_and(|r| r.sweep.is_some());
            let name: String = e.name.chars().rev().take(name_w).collect::<Vec<_>>().into_iter().rev().collect();
            Line::styled(
                format!(
                    "{}{} {:<name_w$} {:<8} {:<12} {:<20} {:<24} {}",
                    if s.marked.contains(&i) { '●' } else { ' ' },
                    if member { " └" } else { "  " },
                    name,
                    e.task(),
                    status,
                    clip(&settings, 20),
                    clip(&e.best(), 24),
                    if dated { e.date() } else { String::new() }
                ),
                selected(i == s.row),
            )
        }));
        let title = format!("Runs ({}; {} marked)", s.entries.len(), s.marked.len());
        f.render_widget(Paragraph::new(lines).block(panel(title)), list);
    }
    let help = "Enter reopens the run (or the marked runs side by side) · space marks · a marks a sweep · \
                p resumes an unfinished run · r reloads";
    f.render_widget(Paragraph::new(help).wrap(ratatui::widgets::Wrap { trim: true }).block(panel("")), foot);
}

fn clip(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(width - 1).collect::<String>())
    }
}
