//! Export: a point of the finished run (the recipe's output directory) as a reproducible recipe,
//! the model and its quantized file, optionally with the trl and llama.cpp projects — the same
//! engine function as `distill-tui export`, run as a job.

use crate::engine::export::points::{metrics_of, FinishedRun};
use crate::engine::export::{export_run, ExportRequest, Target};
use crate::engine::recipe::LoadedRecipe;
use crate::tui::app::{Action, App};
use crate::tui::input::{Edit, TextInput};
use crate::tui::screens::panel;
use crossterm::event::{KeyCode, KeyEvent};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::Line;
use ratatui::widgets::Paragraph;
use ratatui::Frame;
use std::path::PathBuf;

const FIELDS: [&str; 3] = ["run", "point", "out"];

pub struct State {
    /// run directory, point, output folder.
    pub fields: [TextInput; 3],
    pub row: usize,
    pub editing: bool,
    pub trl: bool,
    pub llama_cpp: bool,
    /// The run's points with their metrics, read when the run field changes (or on `r`).
    pub points: Vec<String>,
    pub status: Option<String>,
}

impl State {
    pub fn new(recipe: &LoadedRecipe) -> Self {
        let run = PathBuf::from(&recipe.recipe.output.dir);
        let out = run.with_file_name(format!(
            "{}-export",
            run.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "run".into())
        ));
        let fields = [
            TextInput::new(run.display().to_string()),
            TextInput::new("student"),
            TextInput::new(out.display().to_string()),
        ];
        let mut s =
            Self { fields, row: 1, editing: false, trl: false, llama_cpp: false, points: Vec::new(), status: None };
        s.refresh();
        s
    }

    pub fn editing(&self) -> bool {
        self.editing
    }

    /// Reads the run directory's points (a small JSON file; only on a key press, never per frame).
    pub fn refresh(&mut self) {
        self.points = match FinishedRun::open(std::path::Path::new(self.fields[0].text.trim())) {
            Ok(run) => {
                let metrics = metrics_of(&run.summary);
                run.points()
                    .iter()
                    .map(|p| {
                        let ppl = metrics.get(&format!("{}.perplexity", p.name));
                        let kl = metrics
                            .get(&format!("{}.kl_to_teacher", p.name))
                            .or(metrics.get(&format!("{}.kl", p.name)));
                        let f = |v: Option<&f64>| v.map(|x| format!("{x:.4}")).unwrap_or_else(|| "–".into());
                        format!("{:<24} perplexity {:>12}  KL {:>10}", p.name, f(ppl), f(kl))
                    })
                    .collect()
            }
            Err(e) => vec![e.to_string()],
        };
    }

    pub fn request(&self) -> ExportRequest {
        let text = |i: usize| self.fields[i].text.trim().to_string();
        let mut targets = Vec::new();
        if self.trl {
            targets.push(Target::Trl);
        }
        if self.llama_cpp {
            targets.push(Target::LlamaCpp);
        }
        ExportRequest { run_dir: text(0).into(), point: text(1), out: text(2).into(), targets }
    }

    pub fn key(&mut self, key: KeyEvent) -> Option<Action> {
        if self.editing {
            if self.fields[self.row].key(&key) != Edit::Changed {
                self.editing = false;
                if self.row == 0 {
                    self.refresh();
                }
            }
            return None;
        }
        match key.code {
            KeyCode::Up | KeyCode::Char('k') => self.row = self.row.saturating_sub(1),
            KeyCode::Down | KeyCode::Char('j') => self.row = (self.row + 1).min(FIELDS.len() - 1),
            KeyCode::Enter | KeyCode::Char('e') => self.editing = true,
            KeyCode::Char('t') => self.trl = !self.trl,
            KeyCode::Char('l') => self.llama_cpp = !self.llama_cpp,
            KeyCode::Char('r') => self.refresh(),
            KeyCode::Char('x') => return Some(Action::Export(self.request())),
            _ => {}
        }
        None
    }
}

/// Starts the export job; its progress and result are on the Jobs screen, a failure in a popup.
pub fn start(app: &mut App, req: ExportRequest) {
    let description = format!("export {} of {} to {}", req.point, req.run_dir.display(), req.out.display());
    app.export.status = Some(format!("started: {description} (progress on the Jobs screen)"));
    app.spawn("export", description, move |ctx, _| export_run(&req, ctx));
}

pub fn render(f: &mut Frame, area: Rect, app: &App) {
    let s = &app.export;
    let [top, points] = Layout::vertical([Constraint::Length(8), Constraint::Min(3)]).areas(area);
    let mut lines: Vec<Line> = FIELDS
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let value = if s.editing && s.row == i { s.fields[i].with_cursor() } else { s.fields[i].text.clone() };
            let marker = if s.row == i { "›" } else { " " };
            Line::from(format!("{marker} {name:<6} {value}"))
        })
        .collect();
    let check = |on: bool| if on { "[x]" } else { "[ ]" };
    lines.push(Line::from(format!("  also   {} trl (t)   {} llama.cpp (l)", check(s.trl), check(s.llama_cpp))));
    lines.push(Line::from(""));
    lines.push(Line::from(
        s.status.clone().unwrap_or_else(|| "x exports the point: recipe.toml, model/, the quantized file".into()),
    ));
    f.render_widget(Paragraph::new(lines).block(panel("Export")), top);
    let rows: Vec<Line> = s.points.iter().map(|p| Line::from(p.clone())).collect();
    f.render_widget(Paragraph::new(rows).block(panel("points of the run (r re-reads)")), points);
}
