//! `derive-student`: its reports as text (a copied-layers student, or a pruned one).

use crate::engine::derive::DeriveReport;
use crate::engine::prune::PruneReport;

/// The derived student's shape, size and initialisation, as lines for a terminal.
pub(super) fn print_derived(report: &DeriveReport, seed: u64) {
    println!(
        "student: {} layers, hidden {}, {} heads ({} kv), intermediate {}: {} parameters ({:.1}% of the teacher's {})",
        report.layers,
        report.hidden,
        report.heads,
        report.kv_heads,
        report.intermediate,
        report.parameters,
        100.0 * report.parameters as f64 / report.teacher_parameters as f64,
        report.teacher_parameters
    );
    if report.copied_layers.is_empty() {
        println!(
            "init: seeded random (seed {seed}){}",
            if report.embeddings_copied { ", embeddings copied" } else { "" }
        );
    } else {
        println!("init: copied teacher layers {:?} and the embeddings", report.copied_layers);
    }
    println!("saved to {}", report.out.display());
}

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
