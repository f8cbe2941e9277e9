//! A classification recipe's `[quantize]` section: every target classifier (teacher, student,
//! baseline) quantized to each format and measured on the held-out examples — accuracy, macro-F1,
//! label cross-entropy, KL and agreement to its float self and to the teacher, size and speed.
//! Each point is also a `Point` event (the accuracy-vs-size view: class accuracy stands for top-1,
//! exp(label cross-entropy) for perplexity, as for the float points).

use super::metrics::class_metrics;
use super::train::{predict, Encoded};
use crate::engine::context::JobContext;
use crate::engine::events::{JobEvent, QuantPoint, Role};
use crate::engine::loader::LoadedModel;
use crate::engine::quant::{quantize_model, QuantFormat, QuantOptions};
use crate::engine::summary::{QuantSummary, TaskMetrics};
use crate::engine::Result;
use std::time::Instant;

/// One model to sweep: its role, the model, and its float logits on the eval set.
pub struct Target<'a> {
    pub role: Role,
    pub model: &'a LoadedModel,
    pub float_logits: &'a [Vec<f32>],
}

impl Target<'_> {
    /// The name points give the model: the role's folder, or the teacher's own name.
    fn name(&self) -> String {
        match self.role {
            Role::Teacher => self.model.info.name.clone(),
            other => other.name().to_string(),
        }
    }
}

/// Quantizes each target to each format and measures every point against `eval`'s labels, the
/// target's float logits and the teacher's.
pub fn sweep(
    targets: &[Target],
    teacher_logits: &[Vec<f32>],
    formats: &[QuantFormat],
    eval: &Encoded,
    ctx: &JobContext,
) -> Result<Vec<QuantSummary>> {
    let total = (targets.len() * formats.len()) as u64;
    let mut out = Vec::with_capacity(total as usize);
    for t in targets {
        for &format in formats {
            ctx.check()?;
            let q = quantize_model(t.model, format, &QuantOptions::default(), ctx.cancel_flag())?;
            let network = q.network(t.model)?;
            let clock = Instant::now();
            let logits = predict(&network, eval, 32)?;
            let per_second = eval.ids.len() as f64 / clock.elapsed().as_secs_f64().max(1e-9);
            let own = class_metrics(&logits, &eval.labels, Some(t.float_logits));
            let to_teacher = class_metrics(&logits, &eval.labels, Some(teacher_logits));
            let point = QuantSummary {
                model: t.name(),
                format: format.name(),
                bits_per_weight: q.size.bits_per_weight,
                bytes: q.size.bytes,
                metrics: TaskMetrics::classification(own.accuracy, own.macro_f1, own.cross_entropy),
                kl: own.kl_to_teacher.unwrap_or_default(),
                agreement: own.agreement.unwrap_or_default(),
                kl_to_teacher: to_teacher.kl_to_teacher,
                agreement_with_teacher: to_teacher.agreement,
                eval_examples_per_second: Some(per_second),
                quantize_seconds: Some(q.seconds),
                fallbacks: Some(q.size.fallbacks),
                ..QuantSummary::default()
            };
            ctx.log(format!(
                "{} {}: {:.2} bits/weight, accuracy {:.4}, KL to float {:.5}",
                point.model, point.format, point.bits_per_weight, own.accuracy, point.kl
            ));
            ctx.emit(JobEvent::Point { job: ctx.id, point: event_point(&point, t.role) });
            out.push(point);
            ctx.progress("sweep", out.len() as u64, total, "points");
        }
    }
    Ok(out)
}

/// The point as the accuracy-vs-size view takes it.
fn event_point(p: &QuantSummary, role: Role) -> QuantPoint {
    let (kl, agreement) = match role {
        // The teacher's own points are measured against the teacher.
        Role::Teacher => (Some(p.kl), Some(p.agreement)),
        _ => (p.kl_to_teacher, p.agreement_with_teacher),
    };
    QuantPoint {
        model: p.model.clone(),
        format: p.format.clone(),
        bits_per_weight: p.bits_per_weight,
        bytes: p.bytes,
        perplexity: p.metrics.cross_entropy.unwrap_or_default().exp(),
        top1_accuracy: p.metrics.accuracy.unwrap_or_default(),
        kl: p.kl,
        agreement: p.agreement,
        kl_to_teacher: kl,
        agreement_with_teacher: agreement,
        tokens_per_second: p.eval_examples_per_second.unwrap_or_default(),
    }
}
