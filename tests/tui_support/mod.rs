//! Helpers for the TUI tests: a recipe over the fixture models, an app wired to real job threads,
//! key presses, waiting for jobs, and rendering into a `TestBackend`.
#![allow(dead_code)]

use crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};
use distill_tui::engine::context::Settings;
use distill_tui::engine::recipe::Recipe;
use distill_tui::tui::app::App;
use distill_tui::tui::tasks::{Msg, Spawner};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;

/// Snapshot settings: `tests/snapshots`, with machine-dependent numbers (rates, ETAs, free memory),
/// temporary paths and job ids masked.
pub fn filters() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path("snapshots");
    s.set_prepend_module_to_snapshot(false);
    for (pattern, replacement) in [
        (r"/tmp/\.tmp[A-Za-z0-9]{6}", "[tmp]"),
        // Rates and ETAs are printed at fixed widths, so masking them keeps the layout.
        (r" *\d+\.\d+ steps/s", " [r] steps/s"),
        (r" *\d+ tok/s", " [r] tok/s"),
        (r"ETA +\S+", "ETA [t]"),
        (r"\d+\.\d GiB free", "[m] GiB free"),
        (r"#\d+ *", "#[id] "),
        (r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}", "[date]"),
        (r"\d+\.\d+ ms/token", "[ms] ms/token"),
        (r"\d+\.\d+ s to make", "[s] s to make"),
        (r"\d+\.\d+ min to make", "[m] min to make"),
        // The Compare table's decode speed and the path's wall time (the columns before the path).
        (r"(\d\.\d{4}) +\d+ +\d+ +\d+(\.\d+)?[sm]  ", "$1 [pp/s] [t/s] [cost]  "),
        (r"(\d\.\d{4}) +\d+ +\d+(\.\d+)?[sm]  ", "$1 [t/s] [cost]  "),
        (r"(\d\.\d{4}) +\d+  ", "$1 [t/s]  "),
    ] {
        s.add_filter(pattern, replacement);
    }
    s
}

pub fn shared_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared")
}

/// A recipe in `dir` distilling the tiny-llama fixture into tiny-llama-student for `steps` steps.
/// Models and data are reached through symlinks beside the recipe, so every path the screens
/// show is short and the same on every checkout.
pub fn fixture_recipe(dir: &Path, steps: usize) -> PathBuf {
    std::os::unix::fs::symlink(shared_dir().join("fixtures/models"), dir.join("models")).unwrap();
    std::os::unix::fs::symlink(shared_dir().join("data/austen"), dir.join("data")).unwrap();
    let text = format!(
        r#"[teacher]
model = "models/tiny-llama"
[student]
model = "models/tiny-llama-student"
[data]
train = "data/persuasion.txt"
eval = "data/northangerabbey.txt"
seq_len = 32
eval_tokens = 1024
[distill]
steps = {steps}
batch_size = 4
lr = 0.003
warmup_steps = 2
eval_every = 4
checkpoint_every = 4
[output]
dir = "{}"
"#,
        dir.join("run").display()
    );
    let path = dir.join("recipe.toml");
    std::fs::write(&path, text).unwrap();
    path
}

pub struct Harness {
    pub app: App,
    pub msgs: UnboundedReceiver<Msg>,
}

impl Harness {
    /// A workbench on `recipe` with the settings of this machine's environment (read, never set).
    pub fn new(recipe: &Path) -> Self {
        Self::with_settings(recipe, Settings::from_env().expect("the environment's settings"))
    }

    /// A workbench on `recipe` whose jobs run with `settings`, its caches and run library in a
    /// `cache` folder beside the recipe (a test's runs never join the user's library).
    pub fn with_settings(recipe: &Path, settings: Settings) -> Self {
        let settings = settings.with_cache_dir(recipe.parent().unwrap().join("cache"));
        Self::opened(recipe, settings)
    }

    /// A workbench on `recipe` whose jobs run with `settings` as they are.
    pub fn opened(recipe: &Path, settings: Settings) -> Self {
        let (spawner, msgs) = Spawner::new(std::sync::Arc::new(settings));
        let mut app = App::new(spawner, Recipe::load(recipe).unwrap());
        app.start();
        let mut h = Self { app, msgs };
        h.settle();
        h
    }

    /// Feeds one key through `handle_event` and `handle_action`, as the event loop does.
    pub fn key(&mut self, code: KeyCode) {
        self.key_with(code, KeyModifiers::NONE);
    }

    pub fn key_with(&mut self, code: KeyCode, modifiers: KeyModifiers) {
        if let Some(action) = self.app.handle_event(Event::Key(KeyEvent::new(code, modifiers))) {
            self.app.handle_action(action);
        }
    }

    pub fn keys(&mut self, codes: &[KeyCode]) {
        codes.iter().for_each(|c| self.key(*c));
    }

    pub fn type_text(&mut self, text: &str) {
        text.chars().for_each(|c| self.key(KeyCode::Char(c)));
    }

    /// On the Temperature screen: replaces the prompt with `text`, runs it and waits for the logits.
    pub fn run_prompt(&mut self, text: &str) {
        self.keys(&[KeyCode::Char('5'), KeyCode::Char('e')]);
        let old = self.app.temperature.prompt.text.chars().count();
        (0..old).for_each(|_| self.key(KeyCode::Backspace));
        self.type_text(text);
        self.key(KeyCode::Enter);
        self.settle();
    }

    /// Applies job messages until no job runs (at most five minutes).
    pub fn settle(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(300);
        while self.app.jobs.running() > 0 {
            assert!(Instant::now() < deadline, "jobs still running after 5 minutes");
            match self.msgs.try_recv() {
                Ok(msg) => self.app.handle_msg(msg),
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        while let Ok(msg) = self.msgs.try_recv() {
            self.app.handle_msg(msg);
        }
    }

    /// Applies job messages until `done` holds.
    pub fn wait_until(&mut self, what: &str, done: impl Fn(&App) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(300);
        while !done(&self.app) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            match self.msgs.try_recv() {
                Ok(msg) => self.app.handle_msg(msg),
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }

    /// The screen as text, `width`×`height`, trailing blanks trimmed.
    pub fn render(&self, width: u16, height: u16) -> String {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|f| distill_tui::tui::ui::draw(f, &self.app)).unwrap();
        let buf = terminal.backend().buffer();
        let mut out = String::new();
        for y in 0..buf.area.height {
            let line: String = (0..buf.area.width).map(|x| buf[(x, y)].symbol()).collect();
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}
