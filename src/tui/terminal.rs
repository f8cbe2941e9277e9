//! Entering and leaving the terminal's full-screen mode. The terminal is restored on every exit
//! path: normal return, error, and panic (the hook restores it before the panic is printed).

use crossterm::event::{DisableBracketedPaste, EnableBracketedPaste};
use crossterm::execute;
use crossterm::terminal::{disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;
use std::io::{stdout, Stdout};

pub type Term = Terminal<CrosstermBackend<Stdout>>;

/// Raw mode, alternate screen, hidden cursor; installs the panic hook first.
pub fn enter() -> std::io::Result<Term> {
    install_panic_hook();
    enable_raw_mode()?;
    execute!(stdout(), EnterAlternateScreen, EnableBracketedPaste)?;
    let mut terminal = Terminal::new(CrosstermBackend::new(stdout()))?;
    terminal.hide_cursor()?;
    terminal.clear()?;
    Ok(terminal)
}

/// Leaves raw mode and the alternate screen and shows the cursor; safe to call twice.
pub fn restore() {
    let _ = disable_raw_mode();
    let _ = execute!(stdout(), DisableBracketedPaste, LeaveAlternateScreen, crossterm::cursor::Show);
}

/// Installs the workbench's panic hook (once per run of the workbench; tests call it too).
pub fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // Job threads catch their own panics (they become `Failed` events, shown in the popup):
        // nothing is printed over the screen. Only a panic on the UI thread ends the app, and
        // then the terminal must be usable for the message.
        if std::thread::current().name().is_some_and(|n| n.starts_with("job-")) {
            crate::jobs::note_panic(info.to_string());
            return;
        }
        restore();
        previous(info);
    }));
}
