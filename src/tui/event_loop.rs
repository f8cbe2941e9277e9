//! The loop: terminal events, job messages and timers through `tokio::select!`. Engine work never
//! runs here (it is on job threads); the loop only updates state and draws. Job messages are
//! drained in a batch before the next frame (coalesced), and frames are capped at [`FRAME`] apart,
//! so a training run emitting thousands of events a second costs at most ~30 redraws.

use crate::tui::app::App;
use crate::tui::tasks::Msg;
use crate::tui::ui;
use crossterm::event::Event;
use futures::{Stream, StreamExt};
use ratatui::backend::Backend;
use ratatui::Terminal;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::{interval, sleep_until, Instant, MissedTickBehavior};

/// Minimum time between two frames (≈ 30 fps).
pub const FRAME: Duration = Duration::from_millis(33);
/// Redraw at least this often while idle, so elapsed times and ETAs move.
const IDLE_REDRAW: Duration = Duration::from_secs(1);

/// Runs until the app quits or the event stream ends. `on_draw` is called after every frame
/// (the latency benchmark uses it).
pub async fn run<B, S>(
    terminal: &mut Terminal<B>,
    app: &mut App,
    mut events: S,
    mut msgs: UnboundedReceiver<Msg>,
    on_draw: &mut dyn FnMut(&App),
) -> std::io::Result<()>
where
    B: Backend,
    B::Error: std::error::Error + Send + Sync + 'static,
    S: Stream<Item = std::io::Result<Event>> + Unpin,
{
    let mut idle = interval(IDLE_REDRAW);
    idle.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut dirty = true;
    let mut last_draw = Instant::now() - FRAME;
    while !app.should_quit {
        tokio::select! {
            biased;
            event = events.next() => match event {
                Some(Ok(event)) => {
                    if let Some(action) = app.handle_event(event) {
                        app.handle_action(action);
                    }
                    dirty = true;
                }
                Some(Err(e)) => return Err(e),
                None => break,
            },
            msg = msgs.recv() => {
                if let Some(msg) = msg {
                    app.handle_msg(msg);
                    while let Ok(more) = msgs.try_recv() {
                        app.handle_msg(more);
                    }
                    dirty = true;
                }
            },
            _ = sleep_until(last_draw + FRAME), if dirty => {
                terminal.draw(|f| ui::draw(f, app)).map_err(std::io::Error::other)?;
                last_draw = Instant::now();
                dirty = false;
                on_draw(app);
            },
            _ = idle.tick() => dirty = true,
        }
    }
    Ok(())
}
