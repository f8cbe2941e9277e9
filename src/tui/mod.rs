//! The interactive workbench: `distill-tui` with no arguments on a terminal.
//!
//! `app` is the state machine, `event_loop` feeds it, `ui` and `screens` draw it, `tasks` and
//! `work` run engine work on job threads. Pure logic (`tradeoff`, `history`,
//! `recipe_fields`) has unit tests of its own.

pub mod app;
pub mod event_loop;
pub mod fmt;
pub mod history;
pub mod input;
pub mod keymap;
pub mod recipe_fields;
pub mod screens;
pub mod tasks;
pub mod terminal;
pub use crate::engine::tradeoff;
pub mod ui;
pub mod widgets;
pub mod work;

use crate::engine::recipe::{LoadedRecipe, Recipe};
use std::path::{Path, PathBuf};

/// Where the demo recipe lives in a checkout.
pub const DEMO_RECIPE: &str = "assets/recipes/demo.toml";

/// The recipe the workbench opens on: the demo (from the working directory, else from the
/// checkout this binary was built in), or a starting point to edit when there is no demo.
pub fn default_recipe() -> LoadedRecipe {
    let candidates = [PathBuf::from(DEMO_RECIPE), Path::new(env!("CARGO_MANIFEST_DIR")).join(DEMO_RECIPE)];
    if let Some(loaded) = candidates.iter().filter(|p| p.is_file()).find_map(|p| Recipe::load(p).ok()) {
        return loaded;
    }
    let recipe = Recipe::parse(STARTER, "(starter)").expect("the starter recipe is valid");
    LoadedRecipe { recipe, path: PathBuf::from("recipe.toml"), base_dir: PathBuf::from("."), sweep: None }
}

/// A recipe to edit when no demo is around: the teacher and student are for the user to choose.
const STARTER: &str = r#"
[teacher]
model = "HuggingFaceTB/SmolLM2-135M"
[student.derive]
layers = 8
[data]
train = "corpus/*.txt"
eval = "corpus/eval.txt"
[output]
dir = "runs/starter"
"#;

/// Runs the workbench on this terminal until the user quits.
pub fn run(settings: std::sync::Arc<crate::engine::context::Settings>) -> std::io::Result<()> {
    let (spawner, msgs) = tasks::Spawner::new(settings);
    let mut app = app::App::new(spawner, default_recipe());
    app.start();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut terminal = terminal::enter()?;
    let events = crossterm::event::EventStream::new();
    let result = runtime.block_on(event_loop::run(&mut terminal, &mut app, events, msgs, &mut |_| {}));
    terminal::restore();
    app.jobs.cancel_all();
    result
}
