//! The exported model's `README.md`: a Hugging Face model card with the run's metrics table and
//! the recipe that reproduces it.

use super::points::{point_record, points_of, Point};
use serde_json::Value;

fn cell(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}")).unwrap_or_else(|| "–".into())
}

/// The card of `point` (a trained model of the run), from the run's summary and the exported recipe.
pub fn render(point: &Point, summary: &Value, recipe_toml: &str) -> String {
    let teacher = summary["teacher"]["model"].as_str().unwrap_or("the teacher");
    let mut s = String::new();
    s.push_str("---\nlibrary_name: transformers\ntags:\n- distillation\n- distill-tui\n---\n\n");
    s.push_str(&format!("# {} — {}\n\n", point.role, summary["output_dir"].as_str().unwrap_or("distill-tui run")));
    let how = match point.role.as_str() {
        "student" => {
            format!("distilled from `{teacher}` (knowledge distillation: soft teacher targets plus hard labels)")
        }
        "baseline" => "trained on hard labels only, with the student's data, steps and initialisation".into(),
        _ => "trained from scratch".into(),
    };
    s.push_str(&format!(
        "A causal language model {how} by distill-tui {} in {} steps.\n\n",
        env!("CARGO_PKG_VERSION"),
        summary["steps"]
    ));
    s.push_str("## Metrics on the held-out text\n\n");
    s.push_str("KL and agreement are measured against the teacher for models, and against the unquantized model for\n");
    s.push_str("quantized points (`ROLE-FORMAT`).\n\n");
    s.push_str("| point | parameters / bits per weight | perplexity | top-1 | KL | agreement |\n");
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
            cell(m["perplexity"].as_f64(), 3),
            cell(m["top1_accuracy"].as_f64(), 4),
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
