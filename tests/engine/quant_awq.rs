//! AWQ-style scaling (`+awq`): names; the scaled float model computes what the original does (the
//! scales folded into norms, `up_proj` rows and, without grouped-query attention, `v_proj` rows);
//! every group's chosen scale lowers its calibration output error or keeps it (α = 0), and that
//! error is the Hessian-weighted error recomputed independently; `+awq+gptq` lowers it further on
//! every scaled layer; the GGUF holds the folded norms and reads back equal; bad input refused.

use super::common;
use candle_core::{DType, Device, Tensor};
use distill_tui::engine::context::Monitor;
use distill_tui::engine::eval::{compare_tokens, EvalOptions};
use distill_tui::engine::loader::LoadedModel;
use distill_tui::engine::models::weights::{TensorSource, WeightStore};
use distill_tui::engine::models::Network;
use distill_tui::engine::quant::awq::{self, GRID};
use distill_tui::engine::quant::format::AwqBase;
use distill_tui::engine::quant::quantize::quantize_tensor;
use distill_tui::engine::quant::{export, quantize_model, Imatrix, QuantFormat, QuantOptions, TensorRole};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicBool;

static NO_CANCEL: AtomicBool = AtomicBool::new(false);

fn silent() -> Monitor<'static> {
    Monitor::silent(&NO_CANCEL)
}

fn calibrated(model: &LoadedModel) -> Imatrix {
    common::calibrated_on_emma(model, 128, 2048, true)
}

fn network_of(model: &LoadedModel, params: &BTreeMap<String, Tensor>) -> Network {
    let tensors: HashMap<String, Tensor> = params.iter().map(|(n, t)| (n.clone(), t.clone())).collect();
    let store = WeightStore::new(TensorSource::Memory(tensors), false, &Device::Cpu);
    Network::build(&model.config, &store.root(), model.resolved.path()).unwrap()
}

/// tiny-llama with every key/value head repeated for the heads that share it: multi-head
/// attention computing exactly what the grouped-query original computes, so AWQ can scale v → o.
fn without_gqa() -> (tempfile::TempDir, LoadedModel) {
    let (tmp, dir) = common::copy_fixture("tiny-llama");
    let cfg_path = dir.join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    let (heads, kv, head_dim) = (4usize, 2usize, 16usize);
    cfg["num_key_value_heads"] = serde_json::json!(heads);
    std::fs::write(&cfg_path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    let st = dir.join("model.safetensors");
    let mut params = candle_core::safetensors::load(&st, &Device::Cpu).unwrap();
    for (name, t) in params.iter_mut() {
        if name.ends_with("k_proj.weight") || name.ends_with("v_proj.weight") {
            let blocks: Vec<Tensor> =
                (0..heads).map(|h| t.narrow(0, (h / (heads / kv)) * head_dim, head_dim).unwrap()).collect();
            *t = Tensor::cat(&blocks, 0).unwrap();
        }
    }
    candle_core::safetensors::save(&params, &st).unwrap();
    let model = common::load(dir.to_str().unwrap(), false);
    (tmp, model)
}

#[test]
fn awq_names_parse_print_and_refuse_what_it_cannot_precede() {
    for (name, canonical) in [
        ("q4_0+awq", "q4_0+awq"),
        ("INT4-g64+AWQ", "int4-g64+awq"),
        ("q4_k_m+awq", "q4_k_m+awq"),
        ("q4_0+awq+gptq", "q4_0+awq+gptq"),
        ("q4_0+gptq+awq", "q4_0+awq+gptq"),
        ("int3-g32+gptq+awq", "int3-g32+awq+gptq"),
    ] {
        let f = QuantFormat::parse(name).unwrap();
        assert!(matches!(f, QuantFormat::Awq(_)), "{name}: {f:?}");
        assert_eq!(f.name(), canonical);
        assert_eq!(QuantFormat::parse(canonical).unwrap(), f);
        assert!(f.needs_hessians() && f.calibration_need().is_some());
        assert_eq!(f.is_gptq(), canonical.ends_with("+gptq"));
    }
    assert_eq!(
        QuantFormat::parse("q4_0+awq").unwrap(),
        QuantFormat::Awq(AwqBase::Ggml(candle_core::quantized::GgmlDType::Q4_0))
    );
    for bad in ["f32+awq", "f16+awq", "budget-5+awq", "q4_0+awq+awq"] {
        let err = QuantFormat::parse(bad).unwrap_err().to_string();
        assert!(err.contains("AWQ scales the inputs"), "{bad}: {err}");
    }
    // Not of the llama family, or no calibration text: refused with the reason.
    let gpt2 = common::load_fixture("tiny-gpt2", false);
    let err = awq::check(&gpt2).unwrap_err().to_string();
    assert!(err.contains("llama-family") && err.contains("without +awq"), "{err}");
    let model = common::load_fixture("tiny-llama", false);
    let f = QuantFormat::parse("q4_0+awq").unwrap();
    let err = quantize_model(&model, f, &QuantOptions::default(), &silent()).err().expect("refused").to_string();
    assert!(err.contains("--calib") && err.contains("AWQ"), "{err}");
}

/// The search on tiny-llama in int3-g32 (per-channel where 172-wide rows do not fit): the scaled
/// float model equals the original; each group's reported errors are the Hessian-weighted errors
/// of its layers recomputed from the weights in f64; the chosen α is the grid's best; some groups
/// are scaled and the total error falls.
#[test]
fn scaling_keeps_the_float_model_and_lowers_every_groups_output_error() {
    for (model, _tmp) in [(common::load_fixture("tiny-llama", false), None), {
        let (tmp, m) = without_gqa();
        (m, Some(tmp))
    }] {
        let imatrix = calibrated(&model);
        let format = QuantFormat::parse("int3-g32").unwrap();
        let per_layer = |_: &str| format;
        let s = awq::scale(&model, &per_layer, &imatrix, &silent()).unwrap();
        let gqa = model.params["model.layers.0.self_attn.v_proj.weight"].dims()[0] == 32;
        let r = &s.report;
        // Per block: down (into up), o (into v; tied per value head under grouped-query attention),
        // q/k/v (into the input norm), gate/up (into the post-attention norm).
        assert_eq!(r.groups.len(), 4 * 4, "{r:#?}");
        assert!(r.skipped.is_empty(), "{:?}", r.skipped);
        if gqa {
            // Heads 0 and 1 read value head 0, heads 2 and 3 value head 1: one scale per value row.
            for l in 0..4 {
                let Some(so) = s.scales.get(&format!("model.layers.{l}.self_attn.o_proj.weight")) else { continue };
                for d in 0..16 {
                    assert_eq!(so[d], so[16 + d], "layer {l} column {d}");
                    assert_eq!(so[32 + d], so[48 + d], "layer {l} column {d}");
                }
            }
        }
        let ids: Vec<u32> = (0..96).map(|i| (i * 37 % 500) as u32 + 3).collect();
        let x = Tensor::from_slice(&ids, (1, ids.len()), &Device::Cpu).unwrap();
        let before = model.network.forward(&x).unwrap();
        let after = network_of(&model, &s.params).forward(&x).unwrap();
        let diff = common::max_abs_diff(&before, &after);
        assert!(diff < 1e-4, "the scaled float model differs by {diff}");
        for g in &r.groups {
            assert!(g.error_scaled <= g.error_plain, "{g:?}");
            assert!((0.0..1.0).contains(&g.alpha) && (g.alpha * GRID as f64).fract().abs() < 1e-9, "{g:?}");
            // Recomputed: every layer of the group quantized after scaling by rms(x)^α, in f64.
            let recompute = |chosen: bool| -> f64 {
                let h = &imatrix.hessians[&g.layers[0]];
                let sc = match s.scales.get(&g.layers[0]) {
                    Some(sc) if chosen => sc.clone(),
                    _ => vec![1.0; h.n],
                };
                g.layers
                    .iter()
                    .map(|name| {
                        let st = Tensor::from_slice(&sc, (1, sc.len()), &Device::Cpu).unwrap();
                        let imp: Vec<f32> = imatrix.columns[name].iter().zip(&sc).map(|(v, s)| v / (s * s)).collect();
                        // The group's inputs: `w` as the search saw it (up/v rows already divided).
                        let w = scaled_rows(&s, name);
                        let (q, _) = quantize_tensor(
                            name,
                            &w.broadcast_mul(&st).unwrap(),
                            TensorRole::Linear,
                            format,
                            false,
                            Some(&imp),
                            None,
                        )
                        .unwrap();
                        let back = q.dequantize().unwrap().broadcast_div(&st).unwrap();
                        let a: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
                        let b: Vec<f32> = back.flatten_all().unwrap().to_vec1().unwrap();
                        h.weighted_error(&a, &b)
                    })
                    .sum()
            };
            assert_eq!(s.scales.contains_key(&g.layers[0]), g.alpha > 0.0);
            let (plain, chosen) = (recompute(false), recompute(true));
            assert!((plain - g.error_plain).abs() <= 1e-3 * plain, "{g:?}: α = 0 recomputed {plain}");
            assert!((chosen - g.error_scaled).abs() <= 1e-3 * chosen, "{g:?}: α recomputed {chosen}");
        }
        assert!(r.groups.iter().filter(|g| g.alpha > 0.0).count() >= r.groups.len() / 2, "{r:#?}");
        // A randomly initialised fixture has no outlier channels: the gain is small (1–7% a group
        // on tiny-llama) but the search finds it.
        assert!(r.error_scaled < r.error_plain, "{} vs {}", r.error_scaled, r.error_plain);
        if !gqa {
            let o = r.groups.iter().find(|g| g.folded_into.ends_with("v_proj.weight")).unwrap();
            assert_eq!(o.layers, vec!["model.layers.0.self_attn.o_proj.weight".to_string()]);
        }
    }
}

/// `name`'s weight with only the row scaling that groups searched before its own applied (the
/// `down` group divides `up_proj`'s rows, the `o` group `v_proj`'s): recovered from the scaled
/// parameters by undoing the column scale.
fn scaled_rows(s: &awq::Scaled, name: &str) -> Tensor {
    let t = &s.params[name];
    match s.scales.get(name) {
        Some(sc) => t.broadcast_div(&Tensor::from_slice(sc, (1, sc.len()), &Device::Cpu).unwrap()).unwrap(),
        None => t.clone(),
    }
}

/// Through `quantize_model`: q4_0+awq stores the scaled weights in q4_0 with the folded norms,
/// measures closer to the float model than plain q4_0 on held-out text, and its GGUF reads back
/// equal (norms included); +awq+gptq lowers every scaled layer's error below +awq's.
#[test]
fn awq_points_quantize_export_and_gptq_refines_them() {
    let (_tmp, model) = without_gqa();
    let imatrix = calibrated(&model);
    let opts = QuantOptions { imatrix: Some(&imatrix), ..Default::default() };
    let q = quantize_model(&model, QuantFormat::parse("int3-g32+awq").unwrap(), &opts, &silent()).unwrap();
    let a = q.awq.as_ref().expect("an AWQ report");
    assert!(a.summary().contains("groups scaled"), "{}", a.summary());
    let plain = quantize_model(&model, QuantFormat::parse("int3-g32").unwrap(), &opts, &silent()).unwrap();
    assert_eq!(q.size, plain.size, "the same formats, the same bytes");
    let norm = "model.layers.0.input_layernorm.weight";
    let folded = q.dequantized().unwrap()[norm].clone();
    assert!(common::max_abs_diff(&folded, &model.params[norm]) > 0.0, "the norm carries 1/s");
    // Held-out text (Persuasion): the AWQ model is closer to the float one than plain rounding.
    let text = std::fs::read_to_string(common::shared_dir().join("data/austen/persuasion.txt")).unwrap();
    let tokens = distill_tui::engine::tokenizer::encode_plain(model.tokenizer().unwrap(), &text[..20_000]).unwrap();
    let eval = EvalOptions { seq_len: 128, max_tokens: Some(2048), ..Default::default() };
    let kl = |q: &distill_tui::engine::quant::QuantizedModel| {
        compare_tokens(&model.network, &q.network(&model).unwrap(), &tokens, &eval, &Device::Cpu, &silent()).unwrap().kl
    };
    let (kl_awq, kl_plain) = (kl(&q), kl(&plain));
    assert!(kl_awq < kl_plain, "KL with AWQ {kl_awq} vs plain {kl_plain}");

    let g = quantize_model(&model, QuantFormat::parse("int3-g32+awq+gptq").unwrap(), &opts, &silent()).unwrap();
    assert_eq!(g.awq.as_ref().map(|r| &r.groups), q.awq.as_ref().map(|r| &r.groups), "the search rounds to nearest");
    // In the scaled weights' own space (H rescaled to the scaled inputs, the same error as in the
    // original space): GPTQ below round-to-nearest on every scaled layer.
    let per_layer = |_: &str| QuantFormat::parse("int3-g32").unwrap();
    let s = awq::scale(&model, &per_layer, &imatrix, &silent()).unwrap();
    let (dq, dg) = (q.dequantized().unwrap(), g.dequantized().unwrap());
    let values = |t: &Tensor| -> Vec<f32> { t.flatten_all().unwrap().to_vec1().unwrap() };
    let mut layers = 0;
    for name in s.scales.keys() {
        let h = s.hessian(name, &imatrix.hessians[name]).unwrap();
        let w = values(&s.params[name]);
        let (e_awq, e_gptq) = (h.weighted_error(&w, &values(&dq[name])), h.weighted_error(&w, &values(&dg[name])));
        assert!(e_gptq < e_awq, "{name}: +awq+gptq {e_gptq:.4e} vs +awq {e_awq:.4e}");
        layers += 1;
    }
    assert!(layers >= 8, "{layers} scaled layers");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    let q40 = quantize_model(&model, QuantFormat::parse("q4_0+awq").unwrap(), &opts, &silent()).unwrap();
    export(&model, &q40, &path).unwrap();
    let file = distill_tui::engine::gguf::load_gguf(&path, &Device::Cpu).unwrap();
    for (name, t) in &q40.dequantized().unwrap() {
        assert_eq!(common::max_abs_diff(&file.tensors[name], &t.to_dtype(DType::F32).unwrap()), 0.0, "`{name}`");
    }
}
