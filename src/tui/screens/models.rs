//! Models: pick the teacher and the student (a path, a hub id, the local hub cache, hub search, or
//! a student derived from the teacher), then load both and check the pair before anything runs.

use crate::engine::hub::{CachedModel, ModelSummary};
use crate::engine::loader::ModelInfo;
use crate::engine::pair::{gib, PairReport, VocabCheck};
use crate::engine::recipe::teacher_precision::TeacherPrecision;
use crate::engine::recipe::Recipe;
use crate::tui::app::{Action, App};
use crate::tui::fmt;
use crate::tui::input::{Edit, TextInput};
use crate::tui::keymap::{nav, step, Nav};
use crate::tui::recipe_fields;
use crate::tui::screens::{panel, selected};
use crate::tui::work::{self, StudentChoice};
use crossterm::event::{KeyCode, KeyEvent};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::Line;
use ratatui::widgets::Paragraph;
use ratatui::Frame;

/// The recipe keys this screen edits, with their labels.
const ROWS: [(&str, &str); 4] = [
    ("teacher", "teacher.model"),
    ("student", "student.model"),
    ("derive: layers", "student.derive.layers"),
    ("derive: hidden", "student.derive.hidden"),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Focus {
    #[default]
    Fields,
    List,
}

#[derive(Default)]
pub struct State {
    pub focus: Focus,
    pub row: usize,
    pub list_row: usize,
    /// The field being edited (a row's text, or the hub query when `searching`).
    pub input: Option<TextInput>,
    pub searching: bool,
    pub cache: Vec<CachedModel>,
    /// Hub search results; when present the list shows them instead of the cache.
    pub search: Option<Vec<ModelSummary>>,
    pub teacher: Option<ModelInfo>,
    pub student: Option<ModelInfo>,
    pub pair: Option<Result<PairReport, String>>,
}

impl State {
    pub fn editing(&self) -> bool {
        self.input.is_some()
    }

    pub fn set_search(&mut self, found: Vec<ModelSummary>) {
        self.search = Some(found);
        self.focus = Focus::List;
        self.list_row = 0;
    }

    /// Model ids the list shows.
    fn list(&self) -> Vec<String> {
        match &self.search {
            Some(found) => found.iter().map(|m| m.id.clone()).collect(),
            None => self.cache.iter().map(cache_spec).collect(),
        }
    }

    pub fn key(&mut self, key: KeyEvent, recipe: &Recipe) -> Option<Action> {
        if let Some(input) = &mut self.input {
            let edit = input.key(&key);
            let text = input.text.clone();
            return match edit {
                Edit::Changed => None,
                Edit::Cancel => {
                    self.input = None;
                    None
                }
                Edit::Submit => {
                    self.input = None;
                    if std::mem::take(&mut self.searching) {
                        Some(Action::Search(text))
                    } else {
                        Some(Action::SetField { key: ROWS[self.row].1.into(), text })
                    }
                }
            };
        }
        match (self.focus, key.code) {
            (_, KeyCode::Char('/')) => {
                self.searching = true;
                self.input = Some(TextInput::default());
            }
            (_, KeyCode::Char('r')) => return Some(Action::RefreshCache),
            (_, KeyCode::Char('c')) => return Some(Action::CheckPair),
            (Focus::Fields, KeyCode::Enter | KeyCode::Char('e')) => {
                self.input = Some(TextInput::new(recipe_fields::get(recipe, ROWS[self.row].1)));
            }
            (Focus::List, KeyCode::Char(c @ ('t' | 's'))) => {
                let id = self.list().get(self.list_row)?.clone();
                let key = if c == 't' { "teacher.model" } else { "student.model" };
                return Some(Action::SetField { key: key.into(), text: id });
            }
            (Focus::List, KeyCode::Esc) => self.search = None,
            _ => match (self.focus, nav(&key)?) {
                (Focus::Fields, Nav::Right) => self.focus = Focus::List,
                (Focus::List, Nav::Left) => self.focus = Focus::Fields,
                (Focus::Fields, n) => self.row = step(self.row, ROWS.len(), n),
                (Focus::List, n) => self.list_row = step(self.list_row, self.list().len(), n),
            },
        }
        None
    }
}

/// How a cached model is named as a model argument (a GGUF-only repo names its first file).
fn cache_spec(m: &CachedModel) -> String {
    match (&m.has_safetensors, m.gguf_files.first()) {
        (false, Some(f)) => format!("{}:{f}", m.id),
        _ => m.id.clone(),
    }
}

pub fn refresh_cache(app: &mut App) {
    app.spawn("cache", "list the local hub cache".into(), |ctx, out| work::list_cache(ctx, out));
}

pub fn search(app: &mut App, query: String) {
    app.spawn("search", format!("hub search `{query}`"), move |ctx, out| work::search(ctx, out, &query));
}

/// Loads the recipe's teacher and student on a job thread and checks the pair.
pub fn check_pair(app: &mut App) {
    let r = &app.recipe.recipe;
    let Some(teacher) = r.teacher.as_ref().map(|t| app.model_spec(&t.model)).filter(|t| !t.is_empty()) else {
        app.popup = Some(crate::tui::app::Popup::Error("choose a teacher first".into()));
        return;
    };
    let student = match (&r.student.model, &r.student.derive) {
        (Some(m), _) => StudentChoice::Model(app.model_spec(m)),
        (None, Some(d)) => StudentChoice::Derive { shape: d.clone(), seed: r.distill.seed },
        (None, None) => StudentChoice::None,
    };
    let (batch, seq) = (r.distill.batch_size, r.data.seq_len);
    let keep_quantized = matches!(r.distill.teacher_precision, None | Some(TeacherPrecision::Gguf));
    let what = format!("check {}", r.teacher.as_ref().map(|t| t.model.as_str()).unwrap_or_default());
    app.spawn("check", what, move |ctx, out| {
        work::inspect_pair(ctx, out, &teacher, keep_quantized, &student, batch, seq)
    });
}

fn model_lines(role: &str, i: &ModelInfo) -> Vec<Line<'static>> {
    let p = |s: &str| crate::engine::error::printable(s, 80, false);
    vec![
        Line::from(format!("{role}: {}", p(&i.name))),
        Line::from(format!("  {} ({}, {})", p(&i.architecture), p(&i.model_type), i.task)),
        Line::from(format!(
            "  {} params · {} · vocab {} · {}L×{}",
            fmt::params(i.parameters),
            fmt::mb(i.bytes),
            i.dims.vocab,
            i.dims.layers,
            i.dims.hidden
        )),
    ]
}

fn pair_lines(pair: &Result<PairReport, String>) -> Vec<Line<'static>> {
    let r = match pair {
        Ok(r) => r,
        Err(e) => return vec![Line::from(format!("pair: {e}"))],
    };
    let vocab = match &r.vocab {
        VocabCheck::Identical { size } => format!("identical ({size} tokens)"),
        VocabCheck::PaddingOnly { tokenizer_size, .. } => format!("same tokenizer ({tokenizer_size}), padded tables"),
        VocabCheck::Unverified { size, reason } => format!("{size} rows, unverified: {reason}"),
    };
    let mut lines = vec![
        Line::from(format!("pair: vocabulary {vocab}")),
        Line::from(format!("  training memory {:.2} GiB (batch {}×{})", gib(r.memory.total), r.batch_size, r.seq_len)),
        Line::from(format!(
            "  this machine: {:.1} GiB free → {}",
            gib(r.machine_available_bytes),
            if r.fits { "fits" } else { "does NOT fit" }
        )),
    ];
    lines.extend(r.notes.iter().map(|n| Line::from(format!("  note: {n}"))));
    lines
}

pub fn render(f: &mut Frame, area: Rect, app: &App) {
    let s = &app.models;
    let [fields, rest] = Layout::vertical([Constraint::Length(ROWS.len() as u16 + 2), Constraint::Min(0)]).areas(area);
    let lines: Vec<Line> = ROWS
        .iter()
        .enumerate()
        .map(|(i, (label, key))| {
            let on = s.focus == Focus::Fields && i == s.row;
            let value = match (&s.input, on && !s.searching) {
                (Some(input), true) => input.with_cursor(),
                _ => recipe_fields::get(&app.recipe.recipe, key),
            };
            Line::styled(format!("{}{label:<15} {value}", if on { "▶ " } else { "  " }), selected(on))
        })
        .collect();
    f.render_widget(Paragraph::new(lines).block(panel("Teacher & student (Enter edits, c checks the pair)")), fields);
    let [list_area, info_area] =
        Layout::horizontal([Constraint::Percentage(40), Constraint::Percentage(60)]).areas(rest);
    let title = match (&s.search, s.searching) {
        (_, true) => format!("Hub search: {}", s.input.as_ref().map(|i| i.with_cursor()).unwrap_or_default()),
        (Some(found), _) => format!("Hub search ({} found, Esc: cache)", found.len()),
        (None, _) => format!("Local hub cache ({})", s.cache.len()),
    };
    let height = list_area.height.saturating_sub(2) as usize;
    let first = s.list_row.saturating_sub(height.saturating_sub(1));
    let width = list_area.width.saturating_sub(4) as usize;
    let items: Vec<Line> = match &s.search {
        Some(_) => s.list().into_iter().map(|id| (id, String::new())).collect::<Vec<_>>(),
        None => s.cache.iter().map(|m| (cache_spec(m), fmt::mb(m.bytes))).collect(),
    }
    .into_iter()
    .enumerate()
    .skip(first)
    .take(height)
    .map(|(i, (id, size))| {
        let on = s.focus == Focus::List && i == s.list_row;
        let id_width = width.saturating_sub(size.len() + 1);
        Line::styled(format!("{:<id_width$} {size}", fmt::tail(&id, id_width)), selected(on))
    })
    .collect();
    let items = if items.is_empty() && s.search.is_none() {
        vec![Line::from("(empty: models appear here once downloaded)")]
    } else {
        items
    };
    f.render_widget(Paragraph::new(items).block(panel(title)), list_area);
    let mut info = Vec::new();
    match (&s.teacher, &s.student) {
        (None, _) => info.push(Line::from("press c to load the teacher and student and check the pair")),
        (Some(t), student) => {
            info.extend(model_lines("teacher", t));
            if let Some(st) = student {
                info.extend(model_lines("student", st));
                let ratio = st.parameters as f64 / t.parameters.max(1) as f64;
                info.push(Line::from(format!("  {:.1}% of the teacher's parameters", 100.0 * ratio)));
            }
        }
    }
    if let Some(pair) = &s.pair {
        info.extend(pair_lines(pair));
    }
    if let Some(job) = app.jobs.running_of("check") {
        if let Some((stage, done, total, unit)) = &job.progress {
            info.push(Line::from(format!("{stage}: {}", crate::tui::widgets::progress::bar(*done, *total, unit, 20))));
        } else {
            info.push(Line::from("loading…"));
        }
    }
    f.render_widget(
        Paragraph::new(info).wrap(ratatui::widgets::Wrap { trim: false }).block(panel("Models")),
        info_area,
    );
}
