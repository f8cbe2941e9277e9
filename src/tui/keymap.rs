//! Keys: the global ones, arrow/vim navigation shared by every screen, and the help text `?` shows.

use crate::tui::app::Screen;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// A navigation key, from arrows or their vim twins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nav {
    Up,
    Down,
    Left,
    Right,
    Top,
    Bottom,
}

/// Arrows, hjkl, Home/End and g/G.
pub fn nav(key: &KeyEvent) -> Option<Nav> {
    Some(match key.code {
        KeyCode::Up | KeyCode::Char('k') => Nav::Up,
        KeyCode::Down | KeyCode::Char('j') => Nav::Down,
        KeyCode::Left | KeyCode::Char('h') => Nav::Left,
        KeyCode::Right | KeyCode::Char('l') => Nav::Right,
        KeyCode::Home | KeyCode::Char('g') => Nav::Top,
        KeyCode::End | KeyCode::Char('G') => Nav::Bottom,
        _ => return None,
    })
}

/// Moves a selection index within `len` rows.
pub fn step(index: usize, len: usize, nav: Nav) -> usize {
    if len == 0 {
        return 0;
    }
    match nav {
        Nav::Up | Nav::Left => index.saturating_sub(1),
        Nav::Down | Nav::Right => (index + 1).min(len - 1),
        Nav::Top => 0,
        Nav::Bottom => len - 1,
    }
}

pub fn is_ctrl_c(key: &KeyEvent) -> bool {
    key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c')
}

/// Keys that work on every screen (outside text fields).
pub const GLOBAL_HELP: &[(&str, &str)] = &[
    ("Tab / Shift-Tab", "next / previous screen"),
    ("1 … 8", "go to a screen"),
    ("?", "this help"),
    ("q", "quit (asks while jobs run)"),
    ("Ctrl-C", "quit at once, cancelling jobs"),
];

/// The keys of one screen.
pub fn screen_help(screen: Screen) -> &'static [(&'static str, &'static str)] {
    match screen {
        Screen::Models => &[
            ("↑↓ / j k", "choose a field"),
            ("Enter / e", "edit the field (Enter applies, Esc drops)"),
            ("→ / l, ← / h", "into / out of the model list"),
            ("t / s", "in the list: use as teacher / student"),
            ("/", "search the hub (online)"),
            ("r", "reload the local hub cache"),
            ("c", "load both models and check the pair"),
        ],
        Screen::Recipe => &[
            ("↑↓ / j k", "choose a knob"),
            ("Enter / e", "edit (validated as you type; Enter applies)"),
            ("s", "save the recipe TOML"),
            ("o", "open a recipe TOML"),
            ("r", "run the recipe (a [sweep]: every run of it), shown on Train"),
        ],
        Screen::Runs => &[
            ("↑↓ / j k", "choose a run"),
            ("Enter", "reopen it (or the marked runs, side by side) on Train and Compare"),
            ("space", "mark / unmark a run"),
            ("a", "mark every run of the sweep under the cursor"),
            ("p", "resume an unfinished run"),
            ("r", "reload the library"),
        ],
        Screen::Train => &[
            ("s", "start the run of the recipe (a sweep: all its runs)"),
            ("p", "pause (checkpoint and stop) / resume"),
            ("x", "cancel the run"),
        ],
        Screen::Compare => &[
            ("e", "measure the float teacher and student"),
            ("z", "quantize: sweep the recipe's formats over its targets"),
            ("m", "switch the quality axis: perplexity, KL, agreement"),
            ("x", "switch the cost axis: size or decode ms/token (the front follows)"),
            ("b", "budget: max size in MB"),
            ("d", "budget: max perplexity increase over the teacher, %"),
            ("s / f", "budget: max decode ms/token / min prefill tokens/s"),
            ("v / a", "budget: max KL to the teacher / min agreement with it"),
            ("t", "budget: max training minutes"),
            ("o / O", "sort the table by the next column / reverse the order"),
            ("↑↓ / j k", "select a row"),
        ],
        Screen::Temperature => &[
            ("Enter / e", "edit the prompt; Enter runs the models"),
            ("← → / h l", "position in the prompt"),
            ("t", "select T1 or T2"),
            ("+ / -", "raise / lower the selected temperature"),
        ],
        Screen::Jobs => &[("↑↓ / j k", "select a job"), ("x", "cancel the selected job")],
        Screen::Export => &[
            ("↑↓ / j k", "select run directory, point or output folder"),
            ("Enter / e", "edit it"),
            ("t / l", "also write the trl / llama.cpp project"),
            ("r", "re-read the run's points"),
            ("x", "export the point"),
        ],
    }
}
