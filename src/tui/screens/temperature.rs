//! Temperature: for a prompt and a position in it, the teacher's next-token distribution at two
//! temperatures side by side, and the student's beside it once one exists: every panel on the same
//! rows (the teacher's T1 ranking) and one probability scale, with entropy, the rows' mass, the KL
//! between the panels, and the rank-vs-probability curve of the whole vocabulary (log-log) at both
//! temperatures, so the flattening shows for 49k tokens as for three classes.
//! For a classifier teacher the sentence is classified whole: the bars are its classes.
//! The logits are kept, so changing T or the position never reruns a model.

use crate::engine::distribution::{temperature_view, Panel, TemperatureView};
use crate::tui::app::{Action, App, Popup};
use crate::tui::input::{Edit, TextInput};
use crate::tui::keymap::{nav, step, Nav};
use crate::tui::screens::panel;
use crate::tui::tasks::Logits;
use crate::tui::widgets::dist_bars::{self, visible};
use crate::tui::widgets::loss_chart::{chart, Series};
use crate::tui::work;
use crossterm::event::{KeyCode, KeyEvent};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Color;
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
    // A recipe that derives its student: that student as derived, before any training.
    let derive = r.student.derive.clone().filter(|_| student.is_none() && app.classify.is_none());
    if let Some(shape) = derive {
        let (model, prompt, spec, seed) =
            (app.loaded.get(&teacher).cloned(), prompt.clone(), teacher.clone(), r.distill.seed);
        app.spawn("prompt", "derived student on the prompt".into(), move |ctx, out| {
            work::derived_prompt_logits(ctx, out, model, &spec, &shape, seed, &prompt)
        });
    }
    for (role, spec) in [("teacher", Some(teacher)), ("student", student)] {
        let Some(spec) = spec else { continue };
        let (model, prompt) = (app.loaded.get(&spec).cloned(), prompt.clone());
        app.spawn("prompt", format!("{role} on the prompt"), move |ctx, out| {
            work::prompt_logits(ctx, out, role, model, &spec, &prompt)
        });
    }
}

/// The row of logits of `l` at `position` (a classifier's one row whatever the position).
fn row(l: &Logits, position: usize) -> Option<&[f32]> {
    if l.labels.is_empty() { l.rows.get(position) } else { l.rows.first() }.map(Vec::as_slice)
}

/// The name of output `i` of `l`: a class, or the decoded token.
fn name(l: &Logits, i: usize) -> String {
    match (l.labels.get(i), l.model.tokenizer.as_ref()) {
        (Some(label), _) => label.clone(),
        (None, Some(tok)) => crate::engine::tokenizer::token_text(tok, i as u32),
        (None, None) => format!("<{i}>"),
    }
}

/// One panel: a model at one temperature, on the view's rows; a full bar is probability `top`.
fn column(v: &TemperatureView, p: &Panel, ti: usize, names: &[String], width: usize, top: f64) -> Vec<Line<'static>> {
    let entries: Vec<(String, f64)> = names.iter().cloned().zip(p.probs[ti].iter().copied()).collect();
    let label_width = 10.min(width / 3);
    let bar_width = width.saturating_sub(label_width + 8).max(1);
    let mut lines = vec![
        Line::from(format!("T={:.1}  H={:.2} nats", v.t[ti], p.entropy[ti])),
        Line::from(format!("these {} hold {:.3}", names.len(), p.mass[ti])),
    ];
    lines.extend(dist_bars::lines(&entries, label_width, bar_width, top));
    lines
}

/// The KL figures under the panels.
fn kl_line(v: &TemperatureView) -> String {
    let mut out = format!("KL(T1‖T2): teacher {:.4}", v.teacher.kl_t1_t2);
    if let Some(s) = &v.student {
        out.push_str(&format!(", student {:.4}", s.kl_t1_t2));
    }
    if let Some([a, b]) = v.kl_teacher_student {
        out.push_str(&format!(" · KL(teacher‖student) at T1 {a:.4}, at T2 {b:.4}"));
    }
    out.push_str(" nats");
    out
}

/// The rank-vs-probability curves of the whole vocabulary at both temperatures, log-log.
fn curves(v: &TemperatureView) -> Vec<Series> {
    let log = |c: &Vec<(usize, f64)>| c.iter().map(|&(r, p)| ((r as f64).log10(), p.max(1e-30).log10())).collect();
    let mut out = vec![
        Series { name: format!("teacher T={:.1}", v.t[0]), color: Color::Cyan, points: log(&v.teacher.curves[0]) },
        Series { name: format!("teacher T={:.1}", v.t[1]), color: Color::Yellow, points: log(&v.teacher.curves[1]) },
    ];
    if let Some(s) = &v.student {
        out.push(Series { name: format!("student T={:.1}", v.t[0]), color: Color::Magenta, points: log(&s.curves[0]) });
        out.push(Series { name: format!("student T={:.1}", v.t[1]), color: Color::Green, points: log(&s.curves[1]) });
    }
    out
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
    let Some(teacher_row) = row(teacher, s.position) else {
        f.render_widget(Paragraph::new("(no position)").block(panel("Distributions")), body);
        return;
    };
    let student_row = s.student.as_ref().and_then(|l| row(l, s.position));
    // The curves need room; on a short terminal the panels keep it.
    let curve_height = if body.height >= 22 { (body.height / 3).min(12) } else { 0 };
    let [panels_area, kl_area, curve_area] =
        Layout::vertical([Constraint::Min(4), Constraint::Length(1), Constraint::Length(curve_height)]).areas(body);
    let k = s.top_k.min(panels_area.height.saturating_sub(4) as usize).max(1);
    let v = temperature_view(teacher_row, student_row, s.t, k);
    let names: Vec<String> = v.ids.iter().map(|&i| name(teacher, i)).collect();
    let derived = s.student.as_ref().is_some_and(|l| l.model.info.name.contains("(derived"));
    let student_name = if derived { "derived student" } else { "student" };
    let panels: Vec<(&str, &Panel)> =
        std::iter::once(("teacher", &v.teacher)).chain(v.student.as_ref().map(|p| (student_name, p))).collect();
    let columns = panels.len() * 2;
    let areas = Layout::horizontal(vec![Constraint::Ratio(1, columns as u32); columns]).split(panels_area);
    // One probability scale for every panel: the largest probability any of them shows.
    let top = panels.iter().flat_map(|(_, p)| p.probs.iter().flatten().copied()).fold(0.0, f64::max);
    for (i, area) in areas.iter().enumerate() {
        let (role, p) = panels[i / 2];
        let ti = i % 2;
        let mark = if ti == s.selected_t { "▸" } else { " " };
        let lines = column(&v, p, ti, &names, area.width.saturating_sub(2) as usize, top);
        f.render_widget(Paragraph::new(lines).block(panel(format!("{mark}{role} T{}", ti + 1))), *area);
    }
    f.render_widget(Paragraph::new(kl_line(&v)), kl_area);
    if curve_height > 0 {
        let series = curves(&v);
        let title = "probability (log10) against rank (log10), the whole vocabulary";
        f.render_widget(chart(title, &series, 0.0), curve_area);
    }
}
