//! The workbench's state machine: terminal events become [`Action`]s (`handle_event`), actions and
//! job messages change the state (`handle_action`, `handle_msg`). Nothing here touches a terminal
//! or blocks, so tests drive it with key events and real engine jobs alone.

use crate::engine::classify::recipe::LoadedClassify;
use crate::engine::loader::LoadedModel;
use crate::engine::recipe::{LoadedRecipe, Recipe};
use crate::jobs::{JobEvent, JobId};
use crate::tui::keymap::is_ctrl_c;
use crate::tui::screens::{compare, export, jobs, models, recipe, runs, temperature, train};
use crate::tui::tasks::{Jobs, Msg, Output, Spawner};
use crossterm::event::{Event, KeyCode, KeyEvent, KeyEventKind};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// The screens, in Tab order; the number keys 1–8 pick them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Screen {
    Models,
    Recipe,
    Train,
    Compare,
    Temperature,
    Jobs,
    Export,
    Runs,
}

impl Screen {
    pub const ALL: [Screen; 8] = [
        Self::Models,
        Self::Recipe,
        Self::Train,
        Self::Compare,
        Self::Temperature,
        Self::Jobs,
        Self::Export,
        Self::Runs,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Self::Models => "Models",
            Self::Recipe => "Recipe",
            Self::Train => "Train",
            Self::Compare => "Compare",
            Self::Temperature => "Temperature",
            Self::Jobs => "Jobs",
            Self::Export => "Export",
            Self::Runs => "Runs",
        }
    }

    pub fn index(self) -> usize {
        Self::ALL.iter().position(|s| *s == self).unwrap_or(0)
    }

    fn offset(self, by: isize) -> Self {
        let n = Self::ALL.len() as isize;
        Self::ALL[((self.index() as isize + by).rem_euclid(n)) as usize]
    }
}

/// A modal box over the screen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Popup {
    Error(String),
    ConfirmQuit,
}

/// Everything that changes the state beyond a screen's own cursor.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Quit,
    ConfirmQuit,
    Goto(Screen),
    NextScreen,
    PrevScreen,
    ToggleHelp,
    ClosePopup,
    /// A terminal resize: nothing to change, only to redraw.
    Redraw,
    Error(String),
    SetField {
        key: String,
        text: String,
    },
    RefreshCache,
    Search(String),
    CheckPair,
    SaveRecipe(PathBuf),
    LoadRecipe(PathBuf),
    StartRun,
    /// Start the run (or sweep) from the Recipe screen and show it on Train.
    RunFromRecipe,
    PauseRun,
    CancelRun,
    Measure,
    Quantize,
    RunPrompt,
    CancelJob(JobId),
    Export(crate::engine::export::ExportRequest),
    /// Reopen runs of the library (one: its curves and points; several: side by side).
    OpenRuns(Vec<PathBuf>),
    /// Continue an unfinished run of the library.
    ResumeRun(PathBuf),
    RefreshRuns,
}

pub struct App {
    pub screen: Screen,
    pub help: bool,
    pub popup: Option<Popup>,
    pub should_quit: bool,
    pub recipe: LoadedRecipe,
    /// A classification recipe opened on the Recipe screen; while set, Train runs it instead.
    pub classify: Option<LoadedClassify>,
    pub jobs: Jobs,
    pub models: models::State,
    pub recipe_screen: recipe::State,
    pub train: train::State,
    pub compare: compare::State,
    pub temperature: temperature::State,
    pub jobs_screen: jobs::State,
    pub export: export::State,
    pub runs: runs::State,
    /// Models loaded this session, by the spec they were loaded from.
    pub loaded: HashMap<String, Arc<LoadedModel>>,
    spawner: Spawner,
}

impl App {
    pub fn new(spawner: Spawner, recipe: LoadedRecipe) -> Self {
        let export = export::State::new(&recipe);
        Self {
            screen: Screen::Models,
            help: false,
            popup: None,
            should_quit: false,
            recipe,
            classify: None,
            jobs: Jobs::default(),
            models: models::State::default(),
            recipe_screen: recipe::State::default(),
            train: train::State::default(),
            compare: compare::State::default(),
            temperature: temperature::State::default(),
            jobs_screen: jobs::State::default(),
            export,
            runs: runs::State::default(),
            loaded: HashMap::new(),
            spawner,
        }
    }

    /// Work to do as the workbench opens: list the local hub cache and the run library; with past
    /// runs, open on the Runs screen.
    pub fn start(&mut self) {
        self.handle_action(Action::RefreshCache);
        self.runs.refresh(self.spawner.settings());
        if !self.runs.entries.is_empty() {
            self.screen = Screen::Runs;
        }
    }

    /// Whether the current screen is editing text (then letters go to the field, not to keys).
    fn editing(&self) -> bool {
        match self.screen {
            Screen::Models => self.models.editing(),
            Screen::Recipe => self.recipe_screen.editing(),
            Screen::Compare => self.compare.editing(),
            Screen::Temperature => self.temperature.editing(),
            Screen::Export => self.export.editing(),
            Screen::Train | Screen::Jobs | Screen::Runs => false,
        }
    }

    /// Maps a terminal event to an action; a screen's own cursor moves happen here too.
    pub fn handle_event(&mut self, event: Event) -> Option<Action> {
        let key = match event {
            Event::Key(key) if key.kind != KeyEventKind::Release => key,
            Event::Resize(..) => return Some(Action::Redraw),
            _ => return None,
        };
        if is_ctrl_c(&key) {
            return Some(Action::ConfirmQuit);
        }
        if let Some(popup) = &self.popup {
            return match (popup, key.code) {
                (Popup::ConfirmQuit, KeyCode::Char('y') | KeyCode::Char('q')) => Some(Action::ConfirmQuit),
                _ => Some(Action::ClosePopup),
            };
        }
        if self.help {
            return Some(Action::ToggleHelp);
        }
        if !self.editing() {
            if let Some(action) = global_key(&key) {
                return Some(action);
            }
        }
        self.screen_key(key)
    }

    fn screen_key(&mut self, key: KeyEvent) -> Option<Action> {
        let recipe = &self.recipe.recipe;
        match self.screen {
            Screen::Models => self.models.key(key, recipe),
            Screen::Recipe => self.recipe_screen.key(key, &self.recipe, self.classify.is_some()),
            Screen::Train => train::key(key),
            Screen::Compare => self.compare.key(key),
            Screen::Temperature => self.temperature.key(key),
            Screen::Jobs => self.jobs_screen.key(key, &self.jobs),
            Screen::Export => self.export.key(key),
            Screen::Runs => self.runs.key(key),
        }
    }

    pub fn handle_action(&mut self, action: Action) {
        let before = self.screen;
        self.apply(action);
        if self.screen == Screen::Export && before != Screen::Export {
            // The run may have finished since: read its points as the screen opens.
            self.export.refresh();
        }
    }

    fn apply(&mut self, action: Action) {
        match action {
            Action::Quit if self.jobs.running() > 0 => self.popup = Some(Popup::ConfirmQuit),
            Action::Quit | Action::ConfirmQuit => {
                self.jobs.cancel_all();
                self.should_quit = true;
            }
            Action::Goto(s) => self.screen = s,
            Action::NextScreen => self.screen = self.screen.offset(1),
            Action::PrevScreen => self.screen = self.screen.offset(-1),
            Action::ToggleHelp => self.help = !self.help,
            Action::ClosePopup => self.popup = None,
            Action::Redraw => {}
            Action::Error(msg) => self.popup = Some(Popup::Error(msg)),
            Action::SetField { key, text } => match crate::tui::recipe_fields::set(&self.recipe.recipe, &key, &text) {
                Ok(r) => self.set_recipe(r),
                Err(e) => self.popup = Some(Popup::Error(e)),
            },
            Action::RefreshCache => models::refresh_cache(self),
            Action::Search(q) => models::search(self, q),
            Action::CheckPair => models::check_pair(self),
            Action::SaveRecipe(path) | Action::LoadRecipe(path) if path.as_os_str().is_empty() => {
                self.popup = Some(Popup::Error("give a file name".into()))
            }
            Action::SaveRecipe(path) => recipe::save(self, path),
            Action::LoadRecipe(path) => recipe::open(self, path),
            Action::StartRun => train::start(self, false),
            Action::RunFromRecipe => {
                self.screen = Screen::Train;
                train::start(self, false);
            }
            Action::PauseRun => train::pause_or_resume(self),
            Action::CancelRun => train::cancel(self),
            Action::Measure | Action::Quantize if self.classify.is_some() => {
                self.popup = Some(Popup::Error(
                    "Compare shows a classification run's teacher, student and baseline; measuring and \
                     quantizing work on language-model recipes (o on the Recipe screen opens one)"
                        .into(),
                ))
            }
            Action::Measure => compare::measure(self),
            Action::Quantize => compare::quantize(self),
            Action::RunPrompt => temperature::run(self),
            Action::Export(req) => export::start(self, req),
            Action::OpenRuns(dirs) => runs::open(self, dirs),
            Action::ResumeRun(dir) => runs::resume(self, dir),
            Action::RefreshRuns => self.runs.refresh(self.spawner.settings()),
            Action::CancelJob(id) => {
                if let Some(e) = self.jobs.get(id) {
                    e.cancel();
                }
            }
        }
    }

    /// Replaces the recipe's contents (its path and base folder stay); a `[sweep]`'s members are
    /// built again on the changed recipe (a change that breaks one of them is refused).
    pub fn set_recipe(&mut self, recipe: Recipe) {
        if let Some(plan) = &self.recipe.sweep {
            let origin = self.recipe.path.display().to_string();
            let rebuilt = recipe.to_toml().and_then(|base| {
                crate::engine::library::sweep::Plan::build(plan.sweep.clone(), &base, &plan.text, |t| {
                    Recipe::parse(t, &origin)
                })
            });
            match rebuilt {
                Ok(p) => self.recipe.sweep = Some(p),
                Err(e) => {
                    self.popup = Some(Popup::Error(format!("not applied: {e}")));
                    return;
                }
            }
        }
        self.recipe.recipe = recipe;
    }

    /// Starts a job and registers it on the Jobs screen.
    pub fn spawn<F>(&mut self, kind: &str, description: String, body: F) -> JobId
    where
        F: FnOnce(&crate::jobs::JobContext, &crate::tui::tasks::Outbox) -> crate::engine::Result<serde_json::Value>
            + Send
            + 'static,
    {
        let (id, cancel) = self.spawner.spawn(kind, description.clone(), body);
        self.jobs.add(id, kind, description, cancel);
        id
    }

    /// A model argument of the recipe, resolved against the recipe's folder.
    pub fn model_spec(&self, spec: &str) -> String {
        self.recipe.model_spec(spec)
    }

    /// Applies one message from a job thread.
    pub fn handle_msg(&mut self, msg: Msg) {
        match msg {
            Msg::Job(event) => {
                self.jobs.on_event(&event);
                match &event {
                    JobEvent::Step { .. } | JobEvent::Eval { .. } => self.train.on_event(&event),
                    JobEvent::Point { point, .. } => self.compare.add_quant_point(point),
                    JobEvent::Failed { job, error, .. } => {
                        let kind = self.jobs.get(*job).map(|e| e.kind.clone()).unwrap_or_default();
                        self.popup = Some(Popup::Error(format!("{kind} failed: {error}")));
                    }
                    _ => {}
                }
                if event.is_terminal() {
                    train::on_job_end(self, &event);
                    // A run (or a sweep member) may have joined the library.
                    self.runs.refresh(self.spawner.settings());
                }
            }
            Msg::Output(_, output) => self.on_output(*output),
        }
    }

    fn on_output(&mut self, output: Output) {
        match output {
            Output::Cache(list) => self.models.cache = list,
            Output::Search(list) => self.models.set_search(list),
            Output::Models { teacher, student, pair } => {
                self.models.teacher = Some(teacher);
                self.models.student = student;
                self.models.pair = Some(pair);
            }
            Output::Logits(logits) => {
                self.loaded.insert(logits.model.resolved.spec.clone(), logits.model.clone());
                self.temperature.set_logits(logits);
            }
            Output::Points(points) => self.compare.set_float_points(points),
        }
    }
}

/// Keys that mean the same on every screen.
fn global_key(key: &KeyEvent) -> Option<Action> {
    Some(match key.code {
        KeyCode::Char('q') => Action::Quit,
        KeyCode::Char('?') => Action::ToggleHelp,
        KeyCode::Tab => Action::NextScreen,
        KeyCode::BackTab => Action::PrevScreen,
        KeyCode::Char(c @ '1'..='8') => Action::Goto(Screen::ALL[c as usize - '1' as usize]),
        _ => return None,
    })
}
