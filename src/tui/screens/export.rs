//! Export: writes the chosen configuration. Until the export engine lands, that is the recipe TOML
//! (which reproduces the run and its measurements).

use crate::engine::recipe::LoadedRecipe;
use crate::tui::app::{Action, App};
use crate::tui::input::{Edit, TextInput};
use crate::tui::screens::panel;
use crossterm::event::{KeyCode, KeyEvent};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::Line;
use ratatui::widgets::Paragraph;
use ratatui::Frame;

pub struct State {
    pub path: TextInput,
    pub editing: bool,
}

impl State {
    pub fn new(recipe: &LoadedRecipe) -> Self {
        let dir = std::path::Path::new(&recipe.recipe.output.dir);
        Self { path: TextInput::new(dir.join("recipe.toml").display().to_string()), editing: false }
    }

    pub fn editing(&self) -> bool {
        self.editing
    }

    pub fn key(&mut self, key: KeyEvent) -> Option<Action> {
        if self.editing {
            if self.path.key(&key) != Edit::Changed {
                self.editing = false;
            }
            return None;
        }
        match key.code {
            KeyCode::Enter | KeyCode::Char('e') => self.editing = true,
            KeyCode::Char('w') => return Some(Action::SaveRecipe(self.path.text.trim().into())),
            _ => {}
        }
        None
    }
}

pub fn render(f: &mut Frame, area: Rect, app: &App) {
    let s = &app.export;
    let [top, preview] = Layout::vertical([Constraint::Length(4), Constraint::Min(3)]).areas(area);
    let path = if s.editing { s.path.with_cursor() } else { s.path.text.clone() };
    let status = app.recipe_screen.status.clone().unwrap_or_else(|| "w writes the recipe TOML to this path".into());
    f.render_widget(
        Paragraph::new(vec![Line::from(format!("path: {path}")), Line::from(status)]).block(panel("Export")),
        top,
    );
    let text = app.recipe.recipe.to_toml().unwrap_or_else(|e| e.to_string());
    let lines: Vec<Line> = text.lines().map(|l| Line::from(l.to_string())).collect();
    f.render_widget(Paragraph::new(lines).block(panel("recipe TOML")), preview);
}
