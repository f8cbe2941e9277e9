//! Budget mode (`budget-BITS`): the plan meets the target exactly as the quantizer counts bytes,
//! more bits never predict more KL, one sensitivity measurement serves every target, each tensor's probe equals a full comparison of the model with
//! only that tensor quantized, the GGUF file stores every tensor in its planned type, and targets
//! below every format or without calibration are refused with the reason.

use super::common;
use candle_core::Device;
use distill_tui::engine::context::Monitor;
use distill_tui::engine::eval::{compare_tokens, EvalOptions};
use distill_tui::engine::loader::LoadedModel;
use distill_tui::engine::models::weights::{TensorSource, WeightStore};
use distill_tui::engine::models::Network;
use distill_tui::engine::quant::budget::{self, reachable};
use distill_tui::engine::quant::format::Budget;
use distill_tui::engine::quant::gguf_export::gguf_tensor_name;
use distill_tui::engine::quant::quantize::quantize_tensor;
use distill_tui::engine::quant::{calibrate, export, quantize_model, Imatrix, QuantFormat, QuantOptions, TensorRole};
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;

static NO_CANCEL: AtomicBool = AtomicBool::new(false);

fn silent() -> Monitor<'static> {
    Monitor::silent(&NO_CANCEL)
}

fn calibrated(fixture: &str) -> (LoadedModel, Imatrix) {
    let model = common::load_fixture(fixture, false);
    let text = std::fs::read_to_string(common::shared_dir().join("data/austen/emma.txt")).unwrap();
    let opts = EvalOptions { seq_len: 64, max_tokens: Some(512), ..Default::default() };
    let imatrix = calibrate(&model, &text, &opts, false, &silent()).unwrap();
    (model, imatrix)
}

fn budget(bits: f64) -> QuantFormat {
    QuantFormat::Budget(Budget { centibits: (bits * 100.0).round() as u32, gptq: false })
}

#[test]
fn budget_names_parse_and_print() {
    assert_eq!(QuantFormat::parse("budget-4.5").unwrap(), budget(4.5));
    assert_eq!(QuantFormat::parse("BUDGET4.85").unwrap(), budget(4.85));
    assert_eq!(budget(5.0).name(), "budget-5");
    assert_eq!(budget(4.85).name(), "budget-4.85");
    let g = QuantFormat::parse("budget-5+GPTQ").unwrap();
    assert_eq!(g, QuantFormat::Budget(Budget { centibits: 500, gptq: true }));
    assert!(g.is_gptq() && g.name() == "budget-5+gptq");
    for bad in ["budget", "budget-", "budget-0.5", "budget-x", "budget-40"] {
        let err = QuantFormat::parse(bad).unwrap_err().to_string();
        assert!(err.contains("budget-BITS"), "{bad}: {err}");
    }
}

/// Across the reachable range: the quantized model's size (every parameter, width fallbacks and
/// f32 vectors counted) is what the plan says and never above the target; the predicted KL does
/// not rise with the target; at the smallest size every tensor is in its smallest format and at
/// the largest in q8_0.
#[test]
fn a_budget_meets_its_target_and_more_bits_never_predict_more_kl() {
    let (model, imatrix) = calibrated("tiny-llama");
    let (min, max) = reachable(&model);
    assert!(min < max, "{min} {max}");
    let opts = QuantOptions { imatrix: Some(&imatrix), ..Default::default() };
    let mut last_kl = f64::INFINITY;
    let mut measured: Option<f64> = None;
    let mut seen_formats = std::collections::BTreeSet::new();
    for k in 0..=6 {
        let target = ((min + (max - min) * k as f64 / 6.0) * 100.0).ceil() / 100.0;
        let q = quantize_model(&model, budget(target), &opts, &silent()).unwrap();
        let plan = q.budget.as_ref().expect("a budget's model carries its plan");
        assert!((plan.planned_bits_per_weight - q.size.bits_per_weight).abs() < 1e-9, "{plan:?} vs {:?}", q.size);
        assert!(q.size.bits_per_weight <= target + 1e-9, "target {target}: {:?}", q.size);
        assert!(plan.predicted_kl <= last_kl + 1e-12, "target {target}: KL {} after {last_kl}", plan.predicted_kl);
        last_kl = plan.predicted_kl;
        // One measurement of the sensitivities serves every target on this calibration.
        assert_eq!(*measured.get_or_insert(plan.sensitivity_seconds), plan.sensitivity_seconds);
        for r in &q.report {
            assert_eq!(r.format, r.requested, "{}: a plan asks only for formats that fit the width", r.name);
            if r.role != TensorRole::Vector {
                seen_formats.insert(r.format.clone());
            }
        }
        if k == 0 {
            assert!(q.report.iter().all(|r| r.role == TensorRole::Vector || r.format != "q8_0"), "{:#?}", q.report);
        }
        if k == 6 {
            assert!((q.size.bits_per_weight - max).abs() < 1e-9);
            assert!(q.report.iter().all(|r| r.role == TensorRole::Vector || r.format == "q8_0" || r.format == "f16"));
        }
    }
    // In between, the plans mix formats (64-wide rows: q4_0, q5_0, q5_1, q8_0).
    assert!(seen_formats.len() >= 3, "{seen_formats:?}");
    // Above every format: all at the largest, said in the note.
    let q = quantize_model(&model, budget(max + 1.0), &opts, &silent()).unwrap();
    assert!(q.budget.unwrap().note.unwrap().contains("above every matrix"));
}

/// A probe reruns only the blocks from its tensor's block on, over stored reference activations:
/// its KL equals an ordinary comparison of the model with only that tensor quantized.
#[test]
fn each_probe_equals_a_full_comparison_with_only_its_tensor_quantized() {
    let (model, imatrix) = calibrated("tiny-qwen2");
    let (min, _) = reachable(&model);
    let opts = QuantOptions { imatrix: Some(&imatrix), probe_tokens: Some(128), ..Default::default() };
    let q = quantize_model(&model, budget((min * 100.0).ceil() / 100.0 + 0.5), &opts, &silent()).unwrap();
    let plan = q.budget.unwrap();
    assert_eq!(plan.probe_tokens, 126, "two windows of 64 tokens predict 63 positions each");
    let tokens: Vec<u32> = imatrix.windows.iter().flatten().copied().take(128).collect();
    let eval = EvalOptions { seq_len: 64, ..Default::default() };
    let tied = model.config.tied_embeddings();
    let base: HashMap<String, candle_core::Tensor> = model.params.iter().map(|(n, t)| (n.clone(), t.clone())).collect();
    let mut checked = 0;
    for name in
        ["model.embed_tokens.weight", "model.layers.0.self_attn.v_proj.weight", "model.layers.2.mlp.up_proj.weight"]
    {
        let choice = plan.tensors.iter().find(|c| c.name == name).unwrap();
        let w = &model.params[name];
        let role = TensorRole::of(name, w.dims(), tied);
        let format = QuantFormat::parse(&choice.probe_format).unwrap();
        let imp = imatrix.columns.get(name).map(|v| v.as_slice());
        let (qt, _) = quantize_tensor(name, w, role, format, false, imp, None).unwrap();
        let mut tensors = base.clone();
        tensors.insert(name.to_string(), qt.dequantize().unwrap());
        let store = WeightStore::new(TensorSource::Memory(tensors), false, &Device::Cpu);
        let probe = Network::build(&model.config, &store.root(), model.resolved.path()).unwrap();
        let full = compare_tokens(&model.network, &probe, &tokens, &eval, &Device::Cpu, &silent()).unwrap();
        assert!(choice.probe_kl > 0.0, "{name}: {choice:?} full {}", full.kl);
        // The probe's log-softmax is f64, the comparison's f32 (rounding of a few 1e-8 nats, which
        // shows where a format is nearly exact: iq4_nl's KL here is about 1e-6).
        let diff = (full.kl - choice.probe_kl).abs();
        assert!(diff < 1e-3 * full.kl + 5e-8, "{name}: probe {} vs full comparison {}", choice.probe_kl, full.kl);
        checked += 1;
    }
    assert_eq!(checked, 3);
    // The estimate at the chosen format scales the probe by the output errors: never above it.
    assert!(plan.tensors.iter().all(|c| c.kl <= c.probe_kl * (1.0 + 1e-9)), "{:#?}", plan.tensors);
}

/// The GGUF file of a budget stores each tensor in the type the plan chose, read back through
/// candle's reader (IQ4_NL, which candle lacks, through ours), every tensor equal to our dequantization.
#[test]
fn a_budget_plan_is_exported_to_gguf_in_its_planned_types() {
    let (model, imatrix) = calibrated("tiny-llama");
    let (min, max) = reachable(&model);
    let opts = QuantOptions { imatrix: Some(&imatrix), ..Default::default() };
    let q = quantize_model(&model, budget(((min + max) / 2.0 * 100.0).round() / 100.0), &opts, &silent()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.gguf");
    export(&model, &q, &path).unwrap();
    let stored_types = distill_tui::engine::gguf::tensor_type_names(&path).unwrap();
    let mut types = std::collections::BTreeSet::new();
    for r in &q.report {
        let Some(name) = gguf_tensor_name(&r.name) else { continue };
        let stored = stored_types[&name].clone();
        assert_eq!(stored, r.format, "{name}");
        types.insert(stored);
    }
    assert!(types.len() >= 3, "{types:?}");
    let g = distill_tui::engine::gguf::load_gguf(&path, &Device::Cpu).unwrap();
    for (name, t) in &q.dequantized().unwrap() {
        assert_eq!(common::max_abs_diff(&g.tensors[name], t), 0.0, "`{name}`");
    }
}

#[test]
fn a_target_below_every_format_or_without_calibration_is_refused() {
    let (model, imatrix) = calibrated("tiny-llama");
    let (min, _) = reachable(&model);
    let opts = QuantOptions { imatrix: Some(&imatrix), ..Default::default() };
    let low = ((min - 0.3) * 100.0).floor() / 100.0;
    let err = quantize_model(&model, budget(low), &opts, &silent()).err().unwrap().to_string();
    assert!(err.contains("below what any format reaches") && err.contains(&format!("{min:.3}")), "{err}");
    let err = budget::check_reachable(&model, low).unwrap_err().to_string();
    assert!(err.contains(&format!("budget-{:.2} or more", (min * 100.0).ceil() / 100.0)), "{err}");
    let err = quantize_model(&model, budget(min + 1.0), &QuantOptions::default(), &silent()).err().unwrap().to_string();
    assert!(err.contains("measured sensitivity") && err.contains("--calib FILE"), "{err}");
}

/// `budget-BITS+gptq`: the plan's legacy block formats are rounded by GPTQ (requested `q4_0+gptq`,
/// stored as Q4_0), its sensitivities measured apart from the plain budget's, and its size the same
/// accounting's.
#[test]
fn a_gptq_budget_rounds_its_legacy_blocks_by_gptq() {
    let model = common::load_fixture("tiny-llama", false);
    let text = std::fs::read_to_string(common::shared_dir().join("data/austen/emma.txt")).unwrap();
    let opts = EvalOptions { seq_len: 64, max_tokens: Some(512), ..Default::default() };
    let imatrix = calibrate(&model, &text, &opts, true, &silent()).unwrap();
    let (min, max) = reachable(&model);
    let target = ((min + max) / 2.0 * 100.0).round() / 100.0;
    let opts = QuantOptions { imatrix: Some(&imatrix), ..Default::default() };
    let format = QuantFormat::Budget(Budget { centibits: (target * 100.0).round() as u32, gptq: true });
    let q = quantize_model(&model, format, &opts, &silent()).unwrap();
    assert!(q.size.bits_per_weight <= target + 1e-9);
    let gptq: Vec<_> = q.report.iter().filter(|r| r.requested.ends_with("+gptq")).collect();
    assert!(gptq.len() >= 20, "{:#?}", q.report);
    for r in &gptq {
        assert_eq!(
            format!("{}+gptq", r.format),
            r.requested,
            "{} is stored in the GGML type it was rounded in",
            r.name
        );
    }
    let plain = quantize_model(&model, budget(target), &opts, &silent()).unwrap();
    assert!(plain.report.iter().all(|r| !r.requested.ends_with("+gptq")));
    assert_eq!(imatrix.budget.lock().unwrap().len(), 2, "one measurement each");
}
