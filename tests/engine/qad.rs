//! Quantization-aware distillation's weight swap (`train::fake_quant`): while it is entered the
//! student computes exactly what the quantized model of the sweep computes, every parameter still
//! gets a gradient (straight through), and leaving it restores the float weights bit for bit.

use crate::common;
use candle_core::DType;
use distill_tui::engine::context::Monitor;
use distill_tui::engine::distill::losses::{hard_ce_sum, SoftLoss};
use distill_tui::engine::quant::{quantize_model, QuantFormat, QuantOptions};
use distill_tui::engine::train::fake_quant::FakeQuant;
use std::sync::atomic::AtomicBool;

static NO_CANCEL: AtomicBool = AtomicBool::new(false);

#[test]
fn qad_steps_compute_on_exactly_the_quantized_model_and_every_parameter_gets_a_gradient() {
    let teacher = common::load_fixture("tiny-llama", false);
    for (name, format) in [("tiny-llama", "int3-g32"), ("tiny-gpt2", "int4-g32"), ("tiny-qwen2", "int4")] {
        let format = QuantFormat::parse(format).unwrap();
        let student = common::load_fixture(name, true);
        let frozen = common::load_fixture(name, false);
        let cfg = &student.config;
        let fq = FakeQuant::new(format, &student.vars, cfg.tied_embeddings(), cfg.model_type() == "gpt2");
        let matrices = student.vars.values().filter(|v| v.rank() == 2).count();
        assert_eq!(fq.tensors(), matrices, "{name}: every matrix is rounded, no vector");
        let before: Vec<Vec<f32>> =
            student.vars.values().map(|v| v.as_tensor().flatten_all().unwrap().to_vec1().unwrap()).collect();

        let masters = fq.enter(&student.vars).unwrap();
        // The forward is the quantized model's (the sweep's network of the same format).
        let q = quantize_model(&frozen, format, &QuantOptions::default(), &Monitor::silent(&NO_CANCEL)).unwrap();
        let quantized = q.network(&frozen).unwrap();
        let (ids, _) = common::golden(&common::fixture(name));
        let got = student.network.forward(&ids).unwrap();
        let want = quantized.forward(&ids).unwrap();
        let float = frozen.network.forward(&ids).unwrap();
        let diff = common::max_abs_diff(&got, &want);
        assert!(diff < 1e-4, "{name} {format}: fake-quantized forward differs from the quantized model by {diff}");
        assert!(common::max_abs_diff(&got, &float) > 100.0 * diff.max(1e-6), "{name}: the weights were rounded");

        // Straight through: every parameter gets a finite, non-zero gradient.
        let v = got.dim(2).unwrap();
        let t = ids.dim(1).unwrap();
        let s = got.narrow(1, 0, t - 1).unwrap().reshape(((), v)).unwrap();
        if name != "tiny-gpt2" {
            let te = teacher.network.forward(&ids).unwrap();
            let te = te.narrow(1, 0, t - 1).unwrap().reshape(((), v)).unwrap();
            let labels = ids.narrow(1, 1, t - 1).unwrap().flatten_all().unwrap();
            let loss =
                (SoftLoss::ForwardKl.sum(&s, &te, 2.0, 0.5).unwrap() + hard_ce_sum(&s, &labels).unwrap()).unwrap();
            let grads = loss.backward().unwrap();
            for (pname, var) in &student.vars {
                let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{name} {pname}: no gradient"));
                let max = g.to_dtype(DType::F32).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap();
                let max = max.to_scalar::<f32>().unwrap();
                assert!(max > 0.0 && max.is_finite(), "{name} {pname}: gradient max {max}");
            }
        }

        masters.restore().unwrap();
        let after: Vec<Vec<f32>> =
            student.vars.values().map(|v| v.as_tensor().flatten_all().unwrap().to_vec1().unwrap()).collect();
        assert!(before == after, "{name}: the float weights come back bit for bit");
        let again = student.network.forward(&ids).unwrap();
        assert_eq!(common::max_abs_diff(&again, &float), 0.0);
    }
}
