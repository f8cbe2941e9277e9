//! The teacher a run is measured against and the teacher its steps compute with.
//!
//! "The teacher" of the summary and of the students' KL is the f32 model: its f32 weights, or a
//! GGUF's blocks dequantized. The steps may compute another one (`teacher_precision`): int8 or
//! bf16 matmuls, the GGUF's blocks through the quantized kernels, or the f32 teacher quantized
//! once at load to a block format (its f32 weights then released). How far that one is from the
//! f32 teacher on the eval text is the run's teacher fidelity.

use super::setup::Setup;
use crate::engine::context::JobContext;
use crate::engine::eval::{
    compare_with_states_at, evaluate_tokens, CompareReport, EvalOptions, EvalReport, ReferenceStates,
};
use crate::engine::quant::format::QuantFormat;
use crate::engine::quant::quantize::{quantize_model, QuantOptions};
use crate::engine::recipe::teacher_precision::TeacherPrecision;
use crate::engine::Result;

/// The f32 teacher's metrics and states, and the fidelity of the teacher the steps use.
pub(super) struct TeacherReference {
    pub metrics: EvalReport,
    pub states: ReferenceStates,
    /// (what the steps compute with, e.g. `int8` or `gguf (Q4_K ×168, …)`, its comparison with f32).
    pub fidelity: Option<(String, CompareReport)>,
}

/// Measures the f32 teacher on the eval text, applies a pending block-format quantization
/// (`teacher_precision = "q8_0"`, …) to `setup.teacher`, and measures the teacher the steps use.
pub(super) fn prepare(setup: &mut Setup, opts: &EvalOptions, ctx: &JobContext) -> Result<Option<TeacherReference>> {
    let (device, tokens, mode, precision) =
        (setup.device.clone(), setup.eval_tokens.clone(), setup.teacher_mode, setup.teacher_precision);
    let Some(teacher) = setup.teacher.as_mut() else { return Ok(None) };
    let quiet = ctx.quiet();
    let reference = match mode {
        TeacherPrecision::Gguf => Some(teacher.dequantized_reference()?),
        _ => None,
    };
    let f32_net = reference.as_ref().unwrap_or(&teacher.network);
    let metrics = evaluate_tokens(f32_net, &tokens, opts, &device, &quiet)?;
    let states = ReferenceStates::compute(f32_net, &tokens, opts, &device, &quiet)?;
    let (label, fidelity) = match mode {
        TeacherPrecision::Compute(p) if p.is_f32() => {
            return Ok(Some(TeacherReference { metrics, states, fidelity: None }))
        }
        TeacherPrecision::Compute(p) => (
            p.name().to_string(),
            compare_with_states_at(f32_net, &states, &teacher.network, p, opts, &device, &quiet)?,
        ),
        TeacherPrecision::Gguf => (
            format!("gguf ({})", teacher.info.dtype),
            compare_with_states_at(f32_net, &states, &teacher.network, precision, opts, &device, &quiet)?,
        ),
        TeacherPrecision::Ggml(d) => {
            let format = QuantFormat::Ggml(d);
            let monitor = ctx.monitor(format!("quantizing the teacher to {}", format.name()));
            let q = quantize_model(teacher, format, &QuantOptions::default(), &monitor)?;
            let network = q.network(teacher)?;
            let c = compare_with_states_at(&teacher.network, &states, &network, precision, opts, &device, &quiet)?;
            ctx.log(format!(
                "teacher quantized to {} at load: {:.2} GB of weights ({:.2} bits/weight) in place of {:.2} GB of f32",
                format.name(),
                q.size.bytes as f64 / 1e9,
                q.size.bits_per_weight,
                teacher.resident_weight_bytes() as f64 / 1e9
            ));
            // The f32 weights go; the students are measured against the teacher they learn from.
            teacher.network = network;
            teacher.params.clear();
            let states = ReferenceStates::compute(&teacher.network, &tokens, opts, &device, &quiet)?;
            let label = format.name();
            log_fidelity(ctx, &label, &c);
            return Ok(Some(TeacherReference { metrics, states, fidelity: Some((label, c)) }));
        }
    };
    log_fidelity(ctx, &label, &fidelity);
    Ok(Some(TeacherReference { metrics, states, fidelity: Some((label, fidelity)) }))
}

fn log_fidelity(ctx: &JobContext, label: &str, f: &CompareReport) {
    ctx.log(format!(
        "teacher at teacher_precision = \"{label}\": KL to the f32 teacher {:.4} nats, top-1 agreement {:.1}%, \
         perplexity {:.3} (f32 {:.3}) on the eval text",
        f.kl,
        100.0 * f.agreement,
        f.candidate.perplexity,
        f.reference_perplexity
    ));
}
