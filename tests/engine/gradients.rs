//! Acceptance: every parameter of each causal-LM fixture (and of qwen3 and the BERT classifier)
//! receives a finite, non-zero gradient from a KD-style loss.

use crate::common;

use candle_core::{DType, Device, Tensor, Var};
use distill_tui::engine::distill::losses::{hard_ce_sum, SoftLoss};
use distill_tui::engine::loader::{build_network, LoadOptions};
use distill_tui::engine::models::init::InitSource;
use distill_tui::engine::models::weights::TensorSource;
use std::collections::BTreeMap;

/// Asserts a gradient on every var; returns how many were checked.
fn assert_all_grads(name: &str, vars: &BTreeMap<String, Var>, loss: &Tensor) -> usize {
    assert!(!vars.is_empty(), "{name}: no trainable parameters");
    let grads = loss.backward().unwrap();
    let mut missing = Vec::new();
    for (pname, var) in vars {
        match grads.get(var.as_tensor()) {
            Some(g) => {
                let g = g.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
                let max = g.abs().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
                if !(max > 0.0 && max.is_finite()) {
                    missing.push(format!("{pname} (max |grad| = {max})"));
                }
            }
            None => missing.push(format!("{pname} (no gradient)")),
        }
    }
    assert!(missing.is_empty(), "{name}: parameters without a usable gradient:\n{}", missing.join("\n"));
    vars.len()
}

/// α·T²·KL(teacher‖student) + (1−α)·CE, averaged over positions — the KD loss of Hinton et al.
fn kd_loss(student: &Tensor, teacher: &Tensor, ids: &Tensor) -> Tensor {
    let v = student.dim(2).unwrap();
    let t = ids.dim(1).unwrap();
    let s = student.narrow(1, 0, t - 1).unwrap().reshape(((), v)).unwrap();
    let te = teacher.narrow(1, 0, t - 1).unwrap().reshape(((), v)).unwrap();
    let labels = ids.narrow(1, 1, t - 1).unwrap().flatten_all().unwrap();
    let n = s.dim(0).unwrap() as f64;
    let soft = SoftLoss::ForwardKl.sum(&s, &te, 2.0, 0.5).unwrap();
    let hard = hard_ce_sum(&s, &labels).unwrap();
    ((soft * 0.7).unwrap() + (hard * 0.3).unwrap()).unwrap().affine(1.0 / n, 0.0).unwrap()
}

#[test]
fn every_causal_fixture_parameter_gets_a_kd_gradient() {
    let teacher = common::load_fixture("tiny-llama", false);
    let mut checked = Vec::new();
    for name in ["tiny-llama", "tiny-llama-student", "tiny-qwen2", "tiny-gpt2"] {
        let student = common::load_fixture(name, true);
        assert!(student.config.is_causal_lm());
        let (ids, _) = common::golden(&common::fixture(name));
        let t_logits = teacher.network.forward(&ids).unwrap();
        let s_logits = student.network.forward(&ids).unwrap();
        let n = assert_all_grads(name, &student.vars, &kd_loss(&s_logits, &t_logits, &ids));
        assert_eq!(n, student.params.len(), "{name}: every consumed parameter is a Var");
        checked.push(format!("{name}: {n}"));
    }
    println!("parameters with gradients: {}", checked.join(", "));
}

fn random_model(config: serde_json::Value) -> distill_tui::engine::loader::Built {
    let opts = LoadOptions { trainable: true, ..LoadOptions::default() };
    build_network(&config, std::path::Path::new("(test config)"), TensorSource::Init(InitSource::new(7, 0.02)), &opts)
        .unwrap()
}

#[test]
fn qwen3_with_qk_norm_and_llama3_rope_train_end_to_end() {
    let qwen3 = serde_json::json!({
        "model_type": "qwen3", "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 64,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": true, "max_position_embeddings": 64
    });
    let llama3 = serde_json::json!({
        "model_type": "llama", "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 1, "vocab_size": 64, "tie_word_embeddings": false,
        "rope_parameters": {"rope_theta": 500000.0, "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                            "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
        "max_position_embeddings": 64
    });
    let ids = Tensor::new(&[[1u32, 5, 9, 13, 2, 7, 40, 63], [3, 3, 8, 21, 34, 55, 1, 0]], &Device::Cpu).unwrap();
    for (name, cfg) in [("qwen3", qwen3), ("llama3-rope", llama3)] {
        let teacher = random_model(cfg.clone());
        let student = random_model(cfg);
        let t_logits = teacher.network.forward(&ids).unwrap().detach();
        // Same seed, same weights: a zero soft loss; perturb through CE so every parameter moves.
        let s_logits = student.network.forward(&ids).unwrap();
        assert_eq!(s_logits.dims(), &[2, 8, 64]);
        assert_all_grads(name, &student.vars, &kd_loss(&s_logits, &t_logits, &ids));
    }
    let q3 = random_model(serde_json::json!({
        "model_type": "qwen3", "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 1,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 64
    }));
    assert!(q3.params.contains_key("model.layers.0.self_attn.q_norm.weight"));
    assert!(q3.params.contains_key("lm_head.weight"), "qwen3 unties embeddings by default");
}

#[test]
fn bert_classifier_parameters_get_a_gradient_from_cross_entropy() {
    let model = common::load_fixture("tiny-bert-cls", true);
    let (ids, _) = common::golden(&common::fixture("tiny-bert-cls"));
    let logits = model.network.forward(&ids).unwrap();
    let labels = Tensor::new(&[0u32, 2], &Device::Cpu).unwrap();
    let loss = hard_ce_sum(&logits, &labels).unwrap();
    // The pooler and classifier see only the first token; every encoder weight still gets a gradient.
    let n = assert_all_grads("tiny-bert-cls", &model.vars, &loss);
    assert!(n >= 69, "bert classifier has {n} parameter tensors");
}
