//! Recipe: every knob of the recipe, edited with the keyboard and validated as it is typed;
//! saved to and opened from a recipe TOML.

use crate::engine::classify::recipe::is_classification;
use crate::engine::fsutil::write_atomic;
use crate::engine::recipe::{LoadedRecipe, Recipe};
use crate::tui::app::{Action, App, Popup};
use crate::tui::input::{Edit, TextInput};
use crate::tui::keymap::{nav, step};
use crate::tui::recipe_fields::{self, FIELDS};
use crate::tui::screens::{panel, selected};
use crossterm::event::{KeyCode, KeyEvent};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::Line;
use ratatui::widgets::Paragraph;
use ratatui::Frame;
use std::path::PathBuf;

/// What the text field is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Editing {
    Field,
    SavePath,
    OpenPath,
}

#[derive(Default)]
pub struct State {
    pub row: usize,
    pub input: Option<(Editing, TextInput)>,
    /// The validation result of the text being typed: `Err` names the key and the rule.
    pub verdict: Option<Result<(), String>>,
    /// The last save or open, for the status line.
    pub status: Option<String>,
}

impl State {
    pub fn editing(&self) -> bool {
        self.input.is_some()
    }

    /// `read_only`: a classification recipe is shown, which only `o` (open another) applies to.
    pub fn key(&mut self, key: KeyEvent, loaded: &LoadedRecipe, read_only: bool) -> Option<Action> {
        if read_only && self.input.is_none() {
            if key.code == KeyCode::Char('o') {
                self.input = Some((Editing::OpenPath, TextInput::default()));
            }
            return None;
        }
        let recipe = &loaded.recipe;
        let field = FIELDS[self.row].key;
        if let Some((what, input)) = &mut self.input {
            let what = *what;
            let edit = input.key(&key);
            let text = input.text.clone();
            match edit {
                Edit::Cancel => {
                    self.input = None;
                    self.verdict = None;
                }
                Edit::Changed if what == Editing::Field => {
                    self.verdict = Some(recipe_fields::set(recipe, field, &text).map(|_| ()));
                }
                Edit::Changed => {}
                Edit::Submit => {
                    if what == Editing::Field {
                        let verdict = recipe_fields::set(recipe, field, &text).map(|_| ());
                        if verdict.is_err() {
                            // Stay in the field with the message until the value is valid or dropped.
                            self.verdict = Some(verdict);
                            return None;
                        }
                    }
                    self.input = None;
                    self.verdict = None;
                    return Some(match what {
                        Editing::Field => Action::SetField { key: field.into(), text },
                        Editing::SavePath => Action::SaveRecipe(PathBuf::from(text.trim())),
                        Editing::OpenPath => Action::LoadRecipe(PathBuf::from(text.trim())),
                    });
                }
            }
            return None;
        }
        match key.code {
            KeyCode::Enter | KeyCode::Char('e') => {
                self.input = Some((Editing::Field, TextInput::new(recipe_fields::get(recipe, field))));
                self.verdict = Some(Ok(()));
            }
            KeyCode::Char('s') => {
                self.input = Some((Editing::SavePath, TextInput::new(loaded.path.display().to_string())))
            }
            KeyCode::Char('o') => self.input = Some((Editing::OpenPath, TextInput::default())),
            // Run the recipe as it stands (a sweep: every member), and watch it on Train.
            KeyCode::Char('r') => return Some(Action::RunFromRecipe),
            _ => self.row = step(self.row, FIELDS.len(), nav(&key)?),
        }
        None
    }
}

/// Writes the recipe TOML atomically; the recipe then lives at `path`.
pub fn save(app: &mut App, path: PathBuf) {
    let result = app.recipe.recipe.to_toml().and_then(|text| write_atomic(&path, text.as_bytes()));
    match result {
        Ok(()) => {
            app.recipe_screen.status = Some(format!("saved {}", path.display()));
            app.recipe.base_dir = path.parent().map(|p| p.to_path_buf()).unwrap_or_default();
            app.recipe.path = path;
        }
        Err(e) => app.popup = Some(Popup::Error(format!("cannot save the recipe: {e}"))),
    }
}

pub fn open(app: &mut App, path: PathBuf) {
    if std::fs::read_to_string(&path).is_ok_and(|text| is_classification(&text)) {
        return super::classify::open(app, path);
    }
    match Recipe::load(&path) {
        Ok(loaded) => {
            app.recipe_screen.status = Some(format!("opened {}", path.display()));
            if app.classify.take().is_some() {
                super::classify::forget_run(app);
            }
            app.recipe = loaded;
        }
        Err(e) => app.popup = Some(Popup::Error(e.to_string())),
    }
}

pub fn render(f: &mut Frame, area: Rect, app: &App) {
    let s = &app.recipe_screen;
    if let Some(c) = &app.classify {
        let typing = s.input.as_ref().map(|(_, input)| format!("open path: {}", input.with_cursor()));
        return super::classify::render_recipe(f, area, c, typing.as_deref().or(s.status.as_deref()));
    }
    let r = &app.recipe.recipe;
    let [list, foot] = Layout::vertical([Constraint::Min(3), Constraint::Length(4)]).areas(area);
    let height = list.height.saturating_sub(2) as usize;
    let key_width = FIELDS.iter().map(|f| f.key.len()).max().unwrap_or(0);
    let wide = list.width as usize > key_width + 60;
    let lines: Vec<Line> = super::in_view(FIELDS, s.row, height)
        .map(|(i, field)| {
            let on = i == s.row;
            let value = match (&s.input, on) {
                (Some((Editing::Field, input)), true) => input.with_cursor(),
                _ => recipe_fields::get(r, field.key),
            };
            let text = if wide {
                format!("{:<key_width$}  {value:<28} {}", field.key, field.help)
            } else {
                format!("{:<key_width$}  {value}", field.key)
            };
            Line::styled(text, selected(on))
        })
        .collect();
    let sweep = match &app.recipe.sweep {
        Some(p) => format!(" · [sweep] of {} runs: s on Train runs them all", p.members.len()),
        None => String::new(),
    };
    let title = format!("Recipe {} ({}/{}){sweep}", app.recipe.path.display(), s.row + 1, FIELDS.len());
    f.render_widget(Paragraph::new(lines).block(panel(title)), list);
    let mut foot_lines = vec![Line::from(format!("{}: {}", FIELDS[s.row].key, FIELDS[s.row].help))];
    match (&s.input, &s.verdict) {
        (Some((Editing::Field, _)), Some(Err(e))) => {
            foot_lines.push(Line::styled(format!("✗ {e}"), Style::default().fg(Color::Red)))
        }
        (Some((Editing::Field, _)), _) => foot_lines.push(Line::from("✓ valid; Enter applies, Esc drops")),
        (Some((what, input)), _) => foot_lines.push(Line::from(format!(
            "{} path: {}",
            if *what == Editing::SavePath { "save to" } else { "open" },
            input.with_cursor()
        ))),
        (None, _) => foot_lines.push(Line::from(s.status.clone().unwrap_or_else(|| match r.validate() {
            Ok(()) if app.recipe.sweep.is_some() => "recipe valid · r runs the sweep · s save · o open".into(),
            Ok(()) => "recipe valid · r runs it · s save · o open".into(),
            Err(e) => format!("recipe invalid: {e}"),
        }))),
    }
    f.render_widget(Paragraph::new(foot_lines).block(panel("Field")), foot);
}
