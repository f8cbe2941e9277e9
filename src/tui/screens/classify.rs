//! Classification recipes (`task = "classification"`) in the workbench: opened from the Recipe
//! screen and shown there read-only (they are edited as files), run from Train (the teacher's
//! fine-tuning, then the KD student and the labels-only baseline, on one job thread), their summary
//! feeding Compare and the Temperature screen's class bars.

use crate::engine::classify::pipeline::{finetune_root, run_classification};
use crate::engine::classify::recipe::{ClassifyRecipe, LoadedClassify, TrainSection};
use crate::engine::train::{checkpoint, RunOptions};
use crate::tui::app::{App, Popup};
use crate::tui::screens::panel;
use ratatui::layout::Rect;
use ratatui::text::Line;
use ratatui::widgets::{Paragraph, Wrap};
use ratatui::Frame;
use std::path::PathBuf;

/// Opens a classification recipe: the workbench switches to it until another recipe is opened.
pub fn open(app: &mut App, path: PathBuf) {
    match ClassifyRecipe::load(&path) {
        Ok(loaded) => {
            app.recipe_screen.status =
                Some(format!("opened classification recipe {}: s on Train runs it", path.display()));
            app.classify = Some(loaded);
            forget_run(app);
        }
        Err(e) => app.popup = Some(Popup::Error(e.to_string())),
    }
}

/// Drops what the last run left on Train and Temperature (the recipe type changed).
pub fn forget_run(app: &mut App) {
    app.train = Default::default();
    app.temperature.trained_student = None;
    app.temperature.trained_teacher = None;
}

/// Starts the recipe's run (teacher, then student and baseline), or resumes it from its last
/// checkpoint (`p` after a pause).
pub fn start(app: &mut App, loaded: LoadedClassify, resume: bool) {
    let out = loaded.output_dir();
    let holds_run =
        [out.clone(), finetune_root(&loaded)].iter().any(|root| matches!(checkpoint::load_state(root), Ok(Some(_))));
    if !resume && holds_run {
        app.popup = Some(Popup::Error(format!(
            "{} already holds a run: p resumes it, or change output.dir in the recipe file",
            out.display()
        )));
        app.train.paused = true;
        return;
    }
    let name = loaded.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if !resume {
        app.train = Default::default();
    }
    let what = if resume { "resume" } else { "classify" };
    let id = app.spawn("classify", format!("{what} {name}"), move |ctx, _| {
        run_classification(&loaded, &RunOptions { resume }, ctx)
    });
    app.train.job = Some(id);
    app.train.paused = false;
    app.train.outcome = None;
}

fn stage(s: &TrainSection) -> String {
    let every = if s.eval_every > 0 { format!("every {}", s.eval_every) } else { "at the end".into() };
    format!(
        "{} steps × {}, lr {:e}, warmup {}, weight decay {}, clip {}, eval {every}, seed {}",
        s.steps, s.batch_size, s.lr, s.warmup_steps, s.weight_decay, s.grad_clip, s.seed
    )
}

fn teacher_line(l: &LoadedClassify) -> String {
    let t = &l.recipe.teacher;
    match (&t.model, &t.config) {
        (Some(m), _) => m.clone(),
        (None, Some(c)) => {
            let get = |k: &str| c.get(k).map(|v| v.to_string()).unwrap_or_else(|| "?".into());
            format!(
                "from scratch: {} with {} layers, hidden {}",
                get("model_type").trim_matches('"'),
                get("num_hidden_layers"),
                get("hidden_size")
            )
        }
        (None, None) => "(none)".into(),
    }
}

/// The recipe's settings, one line a key, as the Recipe screen shows them.
pub fn summary_lines(l: &LoadedClassify) -> Vec<(String, String)> {
    let r = &l.recipe;
    let d = &r.data;
    let mut rows = vec![
        ("task".to_string(), "classification (edit the file; o opens another recipe)".to_string()),
        ("teacher".into(), teacher_line(l)),
    ];
    if let Some(t) = &r.teacher.tokenizer {
        rows.push(("teacher.tokenizer".into(), t.clone()));
    }
    rows.push(("data.train".into(), d.train.clone()));
    rows.push(("data.eval".into(), d.eval.clone()));
    rows.push((
        "data columns".into(),
        format!("text `{}`, label `{}`, max_len {}", d.text_column, d.label_column, d.max_len),
    ));
    rows.push(("finetune".into(), r.finetune.as_ref().map_or("(none: the teacher classifies already)".into(), stage)));
    if let (Some(s), Some(d)) = (&r.student, &r.distill) {
        rows.push(("student".into(), format!("{} layers copied from the teacher's, evenly spaced", s.layers)));
        rows.push(("distill".into(), stage(d)));
        rows.push((
            "distill loss".into(),
            format!(
                "alpha {} · KL(T = {})·T² + {} · CE + {} · cosine; baseline {}",
                d.alpha(),
                d.temperature(),
                1.0 - d.alpha(),
                d.cosine(),
                if d.baseline() { "yes" } else { "no" }
            ),
        ));
    } else {
        rows.push(("student".into(), "(none: the run fine-tunes the teacher only)".into()));
    }
    rows.push(("output.dir".into(), r.output.dir.clone()));
    rows
}

/// The Recipe screen for a classification recipe.
pub fn render_recipe(f: &mut Frame, area: Rect, l: &LoadedClassify, status: Option<&str>) {
    let rows = summary_lines(l);
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut lines: Vec<Line> = rows.iter().map(|(k, v)| Line::from(format!("{k:<width$}  {v}"))).collect();
    lines.push(Line::from(""));
    lines.push(Line::from(status.unwrap_or("o opens a recipe · s on Train runs this one").to_string()));
    let title = format!("Recipe {} (classification, read-only)", l.path.display());
    f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }).block(panel(title)), area);
}
