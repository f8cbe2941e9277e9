//! Draws a frame: the tab bar, the current screen, and the help or popup over it.

use crate::tui::app::{App, Popup, Screen};
use crate::tui::keymap::{screen_help, GLOBAL_HELP};
use crate::tui::screens::{self, panel};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph, Tabs, Wrap};
use ratatui::Frame;

/// The smallest terminal the screens are laid out for; below it a note says so (nothing is lost:
/// the state, unsaved Recipe edits included, is drawn again once the terminal grows).
pub const MIN_SIZE: (u16, u16) = (20, 5);

pub fn draw(f: &mut Frame, app: &App) {
    let area = f.area();
    if area.width < MIN_SIZE.0 || area.height < MIN_SIZE.1 {
        let note = format!("terminal too small ({}×{}); needs {}×{}", area.width, area.height, MIN_SIZE.0, MIN_SIZE.1);
        f.render_widget(Paragraph::new(note).wrap(ratatui::widgets::Wrap { trim: true }), area);
        return;
    }
    let [tabs_area, body, status_area] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(0), Constraint::Length(1)]).areas(f.area());
    let titles: Vec<String> = Screen::ALL.iter().enumerate().map(|(i, s)| format!("{} {}", i + 1, s.title())).collect();
    let tabs = Tabs::new(titles)
        .select(app.screen.index())
        .highlight_style(Style::default().add_modifier(Modifier::REVERSED | Modifier::BOLD))
        .divider("│");
    // Below 90 columns the tabs drop their padding, so all eight fit in 80.
    let tabs = if area.width < 90 { tabs.padding("", "") } else { tabs };
    f.render_widget(tabs, tabs_area);
    match app.screen {
        Screen::Models => screens::models::render(f, body, app),
        Screen::Recipe => screens::recipe::render(f, body, app),
        Screen::Train => screens::train::render(f, body, app),
        Screen::Compare => screens::compare::render(f, body, app),
        Screen::Temperature => screens::temperature::render(f, body, app),
        Screen::Jobs => screens::jobs::render(f, body, app),
        Screen::Export => screens::export::render(f, body, app),
        Screen::Runs => screens::runs::render(f, body, app),
    }
    let running = app.jobs.running();
    let status = format!(
        " ? keys · Tab screens · q quit{}",
        if running > 0 { format!(" · {running} job(s) running") } else { String::new() }
    );
    f.render_widget(Paragraph::new(Span::styled(status, Style::default().add_modifier(Modifier::DIM))), status_area);
    if app.help {
        help(f, app.screen);
    }
    if let Some(popup) = &app.popup {
        draw_popup(f, popup);
    }
}

/// A rectangle `w`×`h` centred in `area`, clipped to it.
fn centred(area: Rect, w: u16, h: u16) -> Rect {
    let (w, h) = (w.min(area.width), h.min(area.height));
    Rect::new(area.x + (area.width - w) / 2, area.y + (area.height - h) / 2, w, h)
}

fn help(f: &mut Frame, screen: Screen) {
    let mut lines =
        vec![Line::styled(format!("{} screen", screen.title()), Style::default().add_modifier(Modifier::BOLD))];
    let row = |(k, v): &(&str, &str)| Line::from(format!("  {k:<16} {v}"));
    lines.extend(screen_help(screen).iter().map(row));
    lines.push(Line::styled("Everywhere", Style::default().add_modifier(Modifier::BOLD)));
    lines.extend(GLOBAL_HELP.iter().map(row));
    let area = centred(f.area(), 72, lines.len() as u16 + 2);
    f.render_widget(Clear, area);
    f.render_widget(Paragraph::new(lines).block(panel("Keys (any key closes)")), area);
}

fn draw_popup(f: &mut Frame, popup: &Popup) {
    let (title, text) = match popup {
        Popup::Error(msg) => ("Error (Esc closes)", crate::engine::error::printable(msg, 600, true)),
        Popup::ConfirmQuit => ("Quit?", "Jobs are running. Quit and cancel them? y / n".to_string()),
    };
    let width = 64u16;
    let lines = (text.chars().count() as u16).div_ceil(width - 4) + 2;
    let area = centred(f.area(), width, lines + 2);
    f.render_widget(Clear, area);
    f.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }).block(panel(title)), area);
}
