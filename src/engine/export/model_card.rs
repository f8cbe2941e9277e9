//! The exported model's `README.md`: a Hugging Face model card with the run's metrics table and
//! the recipe that reproduces it.

use super::points::{point_record, points_of, Point};
use crate::engine::events::Role;
use crate::engine::summary::{RunSummary, TaskKind};

fn cell(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}")).unwrap_or_else(|| "–".into())
}

/// The card of `point` (a trained model of the run), from the run's summary and the exported recipe.
pub fn render(point: &Point, summary: &RunSummary, recipe_toml: &str) -> String {
    let teacher = summary.teacher.as_ref().and_then(|t| t.model.as_deref()).unwrap_or("the teacher");
    let classify = summary.task() == TaskKind::Classification;
    let mut s = String::new();
    s.push_str("---\nlibrary_name: transformers\ntags:\n- distillation\n- distill-tui\n---\n\n");
    s.push_str(&format!(
        "# {} — {}\n\n",
        point.role.name(),
        summary.output_dir.as_deref().unwrap_or("distill-tui run")
    ));
    let how = match point.role {
        Role::Student => {
            format!("distilled from `{teacher}` (knowledge distillation: soft teacher targets plus hard labels)")
        }
        Role::Baseline => "trained on hard labels only, with the student's data, steps and initialisation".into(),
        Role::Teacher => "fine-tuned on the labels".into(),
        Role::Pretrain => "trained from scratch".into(),
    };
    let kind = if classify { "sequence classifier" } else { "causal language model" };
    let steps = summary.steps.map(|n| format!(" in {n} steps")).unwrap_or_default();
    s.push_str(&format!("A {kind} {how} by distill-tui {}{steps}.\n\n", env!("CARGO_PKG_VERSION")));
    s.push_str(if classify {
        "## Metrics on the held-out examples\n\n"
    } else {
        "## Metrics on the held-out text\n\n"
    });
    s.push_str("KL and agreement are measured against the teacher for models, and against the unquantized model for\n");
    s.push_str("quantized points (`ROLE-FORMAT`).\n\n");
    let (a, b) = if classify {
        (("accuracy", "accuracy"), ("macro-F1", "macro_f1"))
    } else {
        (("perplexity", "perplexity"), ("top-1", "top1_accuracy"))
    };
    s.push_str(&format!("| point | parameters / bits per weight | {} | {} | KL | agreement |\n", a.0, b.0));
    s.push_str("| --- | ---: | ---: | ---: | ---: | ---: |\n");
    for p in points_of(summary) {
        let m = point_record(summary, &p);
        let size = match p.format {
            None => m["parameters"].as_u64().map(|n| format!("{:.2}M", n as f64 / 1e6)).unwrap_or_default(),
            Some(_) => cell(m["bits_per_weight"].as_f64(), 2),
        };
        let kl = m["kl_to_teacher"].as_f64().or(m["kl"].as_f64());
        let marker = if p.name == point.name { " (this model)" } else { "" };
        s.push_str(&format!(
            "| {}{marker} | {size} | {} | {} | {} | {} |\n",
            p.name,
            cell(m[a.1].as_f64(), if classify { 4 } else { 3 }),
            cell(m[b.1].as_f64(), 4),
            cell(kl, 4),
            cell(m["agreement"].as_f64(), 4)
        ));
    }
    s.push_str("\n## Reproduce\n\n");
    s.push_str(
        "Save the recipe below as `recipe.toml` (the export folder holds it, with the paths it names) and run\n",
    );
    s.push_str("`distill-tui run recipe.toml --verify`: it checks the sha256 of every input, reruns the recipe and\n");
    s.push_str("compares every metric with the `[expected]` values.\n\n");
    s.push_str("```toml\n");
    s.push_str(recipe_toml);
    s.push_str("```\n");
    s
}
