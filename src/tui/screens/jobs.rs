//! Jobs: every background task of the session with its progress, ETA and log tail; cancel.

use crate::tui::app::{Action, App};
use crate::tui::fmt;
use crate::tui::keymap::{nav, step};
use crate::tui::screens::{panel, selected};
use crate::tui::tasks::{Jobs, Status};
use crate::tui::widgets::progress::bar;
use crossterm::event::{KeyCode, KeyEvent};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::Line;
use ratatui::widgets::Paragraph;
use ratatui::Frame;

#[derive(Default)]
pub struct State {
    pub row: usize,
}

impl State {
    pub fn key(&mut self, key: KeyEvent, jobs: &Jobs) -> Option<Action> {
        if key.code == KeyCode::Char('x') {
            return jobs.entries.get(self.row).map(|e| Action::CancelJob(e.id));
        }
        self.row = step(self.row, jobs.entries.len(), nav(&key)?);
        None
    }
}

fn status(s: &Status) -> String {
    match s {
        Status::Running => "running".into(),
        Status::Done => "done".into(),
        Status::Failed(_) => "failed".into(),
        Status::Cancelled => "cancelled".into(),
    }
}

pub fn render(f: &mut Frame, area: Rect, app: &App) {
    let jobs = &app.jobs.entries;
    let row = app.jobs_screen.row.min(jobs.len().saturating_sub(1));
    let [list, log] = Layout::vertical([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(area);
    let height = list.height.saturating_sub(2) as usize;
    let bar_width = (list.width as usize).saturating_sub(60).clamp(6, 30);
    let lines: Vec<Line> = super::in_view(jobs, row, height)
        .map(|(i, e)| {
            let progress = match (&e.progress, e.status == Status::Running) {
                (Some((_, done, total, unit)), _) => bar(*done, *total, unit, bar_width),
                (None, _) => " ".repeat(bar_width),
            };
            let eta = e.eta_s().filter(|_| e.status == Status::Running).map(fmt::duration).unwrap_or_default();
            let runs =
                e.runs.map(|(done, total)| format!("run {}/{total} · ", (done + 1).min(total))).unwrap_or_default();
            Line::styled(
                format!(
                    "#{:<3} {:<7} {:<9} {} {eta}  {runs}{}",
                    e.id,
                    e.kind,
                    status(&e.status),
                    progress,
                    e.description
                ),
                selected(i == row),
            )
        })
        .collect();
    let title = format!("Jobs ({} running; x cancels the selected)", app.jobs.running());
    f.render_widget(Paragraph::new(lines).block(panel(title)), list);
    let tail: Vec<Line> = match jobs.get(row) {
        Some(e) => {
            let n = log.height.saturating_sub(2) as usize;
            let mut out: Vec<Line> =
                e.log.iter().skip(e.log.len().saturating_sub(n)).map(|l| Line::from(l.clone())).collect();
            if let Status::Failed(err) = &e.status {
                out.push(Line::from(format!("error: {err}")));
            }
            out
        }
        None => vec![Line::from("no jobs yet")],
    };
    f.render_widget(Paragraph::new(tail).wrap(ratatui::widgets::Wrap { trim: false }).block(panel("Log")), log);
}
