//! A classification recipe's `[quantize]` section: every target classifier (teacher, student,
//! baseline) quantized to each format and measured on the held-out examples — accuracy, macro-F1,
//! label cross-entropy, KL and agreement to its float self and to the teacher, size and speed.
//! Each point is also a `Point` event (the accuracy-vs-size view).

use super::metrics::class_metrics;
use super::train::{predict, Encoded};
use crate::engine::context::JobContext;
use crate::engine::events::{JobEvent, QuantPoint, Role, TaskMetrics};
use crate::engine::loader::LoadedModel;
use crate::engine::quant::{quantize_model, QuantFormat, QuantOptions};
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
) -> Result<Vec<QuantPoint>> {
    let total = (targets.len() * formats.len()) as u64;
    let mut out = Vec::with_capacity(total as usize);
    for t in targets {
        for &format in formats {
            ctx.check()?;
            let q = quantize_model(
                t.model,
                format,
                &QuantOptions::default(),
                &ctx.monitor(format!("quantizing {}", format.name())),
            )?;
            let network = q.network(t.model)?;
            let clock = Instant::now();
            let logits = predict(&network, eval, 32)?;
            let per_second = eval.ids.len() as f64 / clock.elapsed().as_secs_f64().max(1e-9);
            let own = class_metrics(&logits, &eval.labels, Some(t.float_logits));
            let to_teacher = class_metrics(&logits, &eval.labels, Some(teacher_logits));
            let mut point = QuantPoint {
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
                ..QuantPoint::default()
            };
            ctx.log(format!(
                "{} {}: {:.2} bits/weight, accuracy {:.4}, KL to float {:.5}",
                point.model, point.format, point.bits_per_weight, own.accuracy, point.kl
            ));
            if t.role == Role::Teacher {
                // The teacher's own points are measured against the teacher.
                (point.kl_to_teacher, point.agreement_with_teacher) = (Some(point.kl), Some(point.agreement));
            }
            ctx.emit(JobEvent::Point { job: ctx.id, point: point.clone() });
            out.push(point);
            ctx.progress("sweep", out.len() as u64, total, "points");
        }
    }
    Ok(out)
}
