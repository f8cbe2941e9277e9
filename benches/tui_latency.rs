//! Key press → redrawn screen latency of the workbench while a distillation run trains.
//!
//! The real event loop (`tui::event_loop::run`) runs with the real `App` and a real training job
//! (`run_recipe` on job threads, both cores); keys go in through the same stream type crossterm's
//! `EventStream` provides, and frames are drawn into ratatui's `TestBackend` (so the terminal's own
//! write time is left out: it is the same with or without training). A key switches screens; its
//! latency is the time from sending it to the end of the first frame that shows the new screen.
//!
//!   cargo bench --bench tui_latency [-- RECIPE]      (default: assets/recipes/demo.toml)

use crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};
use distill_tui::engine::recipe::Recipe;
use distill_tui::tui::app::{Action, App, Screen};
use distill_tui::tui::{event_loop, tasks::Spawner};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::unbounded_channel;

/// Keys measured, and the pause between two of them.
const SAMPLES: usize = 200;
const GAP: Duration = Duration::from_millis(100);

/// A key in flight: when it was sent and the screen it leads to.
type Pending = Arc<Mutex<Option<(Instant, Screen)>>>;

/// CPU seconds this process has used (user + system), from /proc.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    let path = std::env::args().skip(1).find(|a| !a.starts_with('-')).unwrap_or("assets/recipes/demo.toml".into());
    let mut recipe = Recipe::load(std::path::Path::new(&path)).unwrap_or_else(|e| panic!("{e}"));
    let out = std::env::temp_dir().join(format!("distill-tui-bench-{}", std::process::id()));
    recipe.recipe.output.dir = out.display().to_string();
    recipe.recipe.distill.steps = 1_000_000;
    let (spawner, msgs) =
        Spawner::new(Arc::new(distill_tui::engine::context::Settings::from_env().unwrap_or_else(|e| panic!("{e}"))));
    let mut app = App::new(spawner, recipe);
    app.handle_action(Action::Goto(Screen::Train));
    app.handle_action(Action::StartRun);
    assert!(app.popup.is_none(), "{:?}", app.popup);

    let (keys_tx, mut keys_rx) = unbounded_channel::<Event>();
    let events = Box::pin(futures::stream::poll_fn(move |cx| keys_rx.poll_recv(cx).map(|e| e.map(Ok))));
    let pending: Pending = Arc::default();
    let training = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut latencies = Vec::with_capacity(SAMPLES);
    let (p, t) = (pending.clone(), training.clone());
    let injector = std::thread::spawn(move || {
        while !t.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let cpu0 = (cpu_seconds(), Instant::now());
        let cycle = [Screen::Compare, Screen::Train, Screen::Jobs, Screen::Train];
        for i in 0..SAMPLES {
            let target = cycle[i % cycle.len()];
            let digit = char::from(b'1' + target.index() as u8);
            *p.lock().unwrap() = Some((Instant::now(), target));
            let _ = keys_tx.send(Event::Key(KeyEvent::new(KeyCode::Char(digit), KeyModifiers::NONE)));
            std::thread::sleep(GAP);
        }
        let load = (cpu_seconds() - cpu0.0) / cpu0.1.elapsed().as_secs_f64();
        for c in ['q', 'y'] {
            let _ = keys_tx.send(Event::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)));
        }
        load
    });
    let mut terminal = Terminal::new(TestBackend::new(100, 30)).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut on_draw = |app: &App| {
        if app.train.student.last.is_some() {
            training.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let mut p = pending.lock().unwrap();
        if let Some((sent, target)) = *p {
            if app.screen == target {
                latencies.push(sent.elapsed());
                *p = None;
            }
        }
    };
    runtime.block_on(event_loop::run(&mut terminal, &mut app, events, msgs, &mut on_draw)).unwrap();
    let load = injector.join().unwrap();
    let steps = app.train.student.last.as_ref().map(|l| l.step).unwrap_or(0);
    let _ = std::fs::remove_dir_all(&out);
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let q = |f: f64| ms(latencies[((latencies.len() - 1) as f64 * f).round() as usize]);
    println!("recipe {path}: {} keys while training ({steps} student steps done)", latencies.len());
    println!(
        "process CPU while measuring: {load:.2} cores busy of {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    println!("key → redraw latency: median {:.1} ms, p90 {:.1} ms, max {:.1} ms", q(0.5), q(0.9), q(1.0));
}
