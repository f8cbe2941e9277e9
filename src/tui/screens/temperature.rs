//! Temperature: for a prompt and a position in it, the teacher's next-token distribution at two
//! temperatures side by side (entropy, top-k mass), and the student's beside it once one exists.
//! For a classifier teacher the sentence is classified whole: the bars are its classes.
//! The logits are kept, so changing T or the position never reruns a model.

use crate::engine::distribution::{soften, Softened};
use crate::tui::app::{Action, App, Popup};
use crate::tui::input::{Edit, TextInput};
use crate::tui::keymap::{nav, step, Nav};
use crate::tui::screens::panel;
use crate::tui::tasks::Logits;
use crate::tui::widgets::dist_bars::{self, visible};
use crate::tui::work;
use crossterm::event::{KeyCode, KeyEvent};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::Line;
use ratatui::widgets::{Paragraph, Wrap};
use ratatui::Frame;

pub const DEFAULT_PROMPT: &str = "It is a truth universally acknowledged, that a single man";
const T_STEP: f64 = 0.5;
const T_MIN: f64 = 0.1;

pub struct State {
    pub prompt: TextInput,
    pub editing: bool,
    /// The position whose next-token distribution is shown.
    pub position: usize,
    pub t: [f64; 2],
    /// Which of the two temperatures `+`/`-` change.
    pub selected_t: usize,
    pub top_k: usize,
    pub teacher: Option<Logits>,
    pub student: Option<Logits>,
    /// The student a finished run saved; preferred over the recipe's starting student.
    pub trained_student: Option<String>,
    /// The teacher a finished classification run fine-tuned.
    pub trained_teacher: Option<String>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            prompt: TextInput::new(DEFAULT_PROMPT),
            editing: false,
            position: 0,
            t: [1.0, 5.0],
            selected_t: 1,
            top_k: 10,
            teacher: None,
            student: None,
            trained_student: None,
            trained_teacher: None,
        }
    }
}

impl State {
    pub fn editing(&self) -> bool {
        self.editing
    }

    fn positions(&self) -> usize {
        self.teacher.as_ref().map(|l| l.rows.len()).unwrap_or(0)
    }

    pub fn set_logits(&mut self, logits: Logits) {
        let last = logits.rows.len().saturating_sub(1);
        if logits.role == "teacher" {
            self.position = last;
            self.teacher = Some(logits);
        } else {
            self.student = Some(logits);
        }
    }

    pub fn key(&mut self, key: KeyEvent) -> Option<Action> {
        if self.editing {
            match self.prompt.key(&key) {
                Edit::Changed => {}
                Edit::Cancel => self.editing = false,
                Edit::Submit => {
                    self.editing = false;
                    return Some(Action::RunPrompt);
                }
            }
            return None;
        }
        match key.code {
            KeyCode::Enter | KeyCode::Char('e') => self.editing = true,
            KeyCode::Char('t') => self.selected_t = 1 - self.selected_t,
            KeyCode::Char('+') | KeyCode::Char('=') => self.t[self.selected_t] += T_STEP,
            KeyCode::Char('-') => self.t[self.selected_t] = (self.t[self.selected_t] - T_STEP).max(T_MIN),
            _ => match nav(&key)? {
                n @ (Nav::Left | Nav::Right | Nav::Top | Nav::Bottom) => {
                    self.position = step(self.position, self.positions(), n)
                }
                _ => return None,
            },
        }
        None
    }
}

/// Runs the teacher (and the recipe's student, if it names one) on the prompt, on job threads.
pub fn run(app: &mut App) {
    let r = &app.recipe.recipe;
    let teacher = match &app.classify {
        // A classification recipe's teacher: the one its run fine-tuned, else its own classifier.
        Some(c) => app.temperature.trained_teacher.clone().or_else(|| {
            c.recipe.teacher.model.as_ref().filter(|_| c.recipe.finetune.is_none()).map(|m| c.model_spec(m))
        }),
        None => r.teacher.as_ref().map(|t| app.model_spec(&t.model)).filter(|t| !t.is_empty()),
    };
    let Some(teacher) = teacher else {
        let msg = match app.classify {
            Some(_) => "the classification recipe's teacher is trained by its run: s on Train first",
            None => "choose a teacher on the Models screen first",
        };
        app.popup = Some(Popup::Error(msg.into()));
        return;
    };
    let recipe_student = r.student.model.as_ref().filter(|_| app.classify.is_none()).map(|m| app.model_spec(m));
    let student = app.temperature.trained_student.clone().or(recipe_student);
    let prompt = app.temperature.prompt.text.clone();
    app.temperature.student = None;
    for (role, spec) in [("teacher", Some(teacher)), ("student", student)] {
        let Some(spec) = spec else { continue };
        let (model, prompt) = (app.loaded.get(&spec).cloned(), prompt.clone());
        app.spawn("prompt", format!("{role} on the prompt"), move |ctx, out| {
            work::prompt_logits(ctx, out, role, model, &spec, &prompt)
        });
    }
}

/// The softened distribution of one model at one temperature, at the position shown.
fn softened(l: &Logits, position: usize, t: f64, k: usize) -> Option<Softened> {
    let row = if l.labels.is_empty() { l.rows.get(position) } else { l.rows.first() }?;
    Some(soften(row, t, k.min(row.len())))
}

/// The bars, entropy and mass of one model at one temperature; a full bar is probability `top`.
fn column(l: &Logits, position: usize, t: f64, k: usize, width: usize, top: f64) -> Vec<Line<'static>> {
    let Some(s) = softened(l, position, t, k) else { return vec![Line::from("(no position)")] };
    let k = s.top.len();
    let tok = l.model.tokenizer.as_ref();
    let name = |i: usize| match (l.labels.get(i), tok) {
        (Some(label), _) => label.clone(),
        (None, Some(tok)) => crate::engine::tokenizer::token_text(tok, i as u32),
        (None, None) => format!("<{i}>"),
    };
    let entries: Vec<(String, f64)> = s.top.iter().map(|&(i, p)| (name(i), p)).collect();
    let label_width = 10.min(width / 3);
    let bar_width = width.saturating_sub(label_width + 8).max(1);
    let mut lines = vec![
        Line::from(format!("T={t:.1}  H={:.2} nats", s.entropy)),
        Line::from(format!("top-{k} mass {:.3}", s.top_mass)),
    ];
    lines.extend(dist_bars::lines(&entries, label_width, bar_width, top));
    lines
}

pub fn render(f: &mut Frame, area: Rect, app: &App) {
    let s = &app.temperature;
    let [prompt_area, body] = Layout::vertical([Constraint::Length(4), Constraint::Min(4)]).areas(area);
    let mut prompt_lines = vec![Line::from(if s.editing { s.prompt.with_cursor() } else { s.prompt.text.clone() })];
    if let Some(t) = s.teacher.as_ref().filter(|t| !t.labels.is_empty()) {
        let classes = t.labels.join(", ");
        prompt_lines = vec![
            Line::from(format!(
                "classifier: {} classes ({classes}), sentence of {} tokens:",
                t.labels.len(),
                t.tokens.len()
            )),
            Line::from(s.prompt.text.clone()),
        ];
    } else if let Some(t) = &s.teacher {
        let tokens: Vec<String> = t
            .tokens
            .iter()
            .enumerate()
            .map(|(i, tok)| if i == s.position { format!("[{}]", visible(tok)) } else { visible(tok) })
            .collect();
        prompt_lines =
            vec![Line::from(format!("position {}/{} (←→): {}", s.position + 1, t.tokens.len(), tokens.join("")))];
    }
    let title = if s.editing { "Prompt (Enter runs, Esc keeps the last)" } else { "Prompt (e edits)" };
    f.render_widget(Paragraph::new(prompt_lines).wrap(Wrap { trim: false }).block(panel(title)), prompt_area);
    let Some(teacher) = &s.teacher else {
        let msg = "e to type a prompt, Enter to run the teacher (and the student) on it";
        f.render_widget(Paragraph::new(msg).block(panel("Distributions")), body);
        return;
    };
    let models: Vec<(&str, &Logits)> =
        std::iter::once(("teacher", teacher)).chain(s.student.as_ref().map(|l| ("student", l))).collect();
    let columns = models.len() * 2;
    let areas = Layout::horizontal(vec![Constraint::Ratio(1, columns as u32); columns]).split(body);
    let k = s.top_k.min(body.height.saturating_sub(3) as usize).max(1);
    // One probability scale for every panel: the largest probability any of them shows.
    let top = models
        .iter()
        .flat_map(|(_, l)| s.t.iter().filter_map(|&t| softened(l, s.position, t, k)))
        .flat_map(|d| d.top.into_iter().map(|(_, p)| p))
        .fold(0.0, f64::max);
    for (i, area) in areas.iter().enumerate() {
        let (role, logits) = models[i / 2];
        let ti = i % 2;
        let mark = if ti == s.selected_t { "▸" } else { " " };
        let lines = column(logits, s.position, s.t[ti], k, area.width.saturating_sub(2) as usize, top);
        f.render_widget(Paragraph::new(lines).block(panel(format!("{mark}{role} T{}", ti + 1))), *area);
    }
}
