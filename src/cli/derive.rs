//! `derive-student --prune`: the report as text.

use crate::engine::prune::PruneReport;

/// The pruned student's shape, size and score before training, as lines for a terminal.
pub(super) fn print_pruned(report: &PruneReport) {
    let p = &report.plan;
    println!(
        "pruned student: {} layers (teacher blocks {:?}), {} heads ({} kv), intermediate {}: {} parameters ({:.1}% of the teacher's {})",
        p.layers.len(),
        p.layers,
        report.heads,
        p.kv_groups,
        p.intermediate,
        report.parameters,
        100.0 * report.parameters as f64 / report.teacher_parameters as f64,
        report.teacher_parameters
    );
    println!(
        "before training, on {} calibration tokens: perplexity {:.2} (teacher {:.2}); {} shapes measured",
        report.calibration_tokens,
        report.perplexity_before_training,
        report.teacher_perplexity,
        report.candidates.len().max(1)
    );
    println!("saved {}", report.out.display());
}
