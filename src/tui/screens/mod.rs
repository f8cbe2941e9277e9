//! One module per screen: its state, its keys, and how it draws.

pub mod classify;
pub mod compare;
pub mod export;
pub mod jobs;
pub mod models;
pub mod recipe;
pub mod runs;
pub mod temperature;
pub mod train;

use ratatui::style::{Modifier, Style};
use ratatui::widgets::{Block, Borders};

/// A bordered block with a title; every panel uses it.
pub fn panel(title: impl Into<String>) -> Block<'static> {
    Block::default().borders(Borders::ALL).title(title.into())
}

/// The style of a selected row.
pub fn selected(on: bool) -> Style {
    if on {
        Style::default().add_modifier(Modifier::REVERSED)
    } else {
        Style::default()
    }
}

/// The items of a list that fit in `height` rows with row `selected` in view, with their indices.
pub fn in_view<T>(items: &[T], selected: usize, height: usize) -> impl Iterator<Item = (usize, &T)> {
    let first = selected.saturating_sub(height.saturating_sub(1));
    items.iter().enumerate().skip(first).take(height)
}
