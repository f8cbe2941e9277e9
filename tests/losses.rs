//! KD losses against PyTorch (`../shared/fixtures/kd`): forward KL·T², reverse KL·T², JSD(β=0.5),
//! hard CE, at T = 1, 2, 5, within 1e-5.

mod common;

use candle_core::{DType, Device, Tensor};
use distill_tui::engine::distill::losses::{self, SoftLoss};

fn inputs() -> (Tensor, Tensor, Tensor, serde_json::Value) {
    let dir = common::shared_dir().join("fixtures/kd");
    let t = candle_core::safetensors::load(dir.join("kd_inputs.safetensors"), &Device::Cpu).unwrap();
    let names: Vec<_> = t.keys().cloned().collect();
    let get = |k: &str| t.get(k).unwrap_or_else(|| panic!("kd_inputs lacks {k}; has {names:?}")).clone();
    let flat = |x: Tensor| {
        let v = x.dim(2).unwrap();
        x.reshape(((), v)).unwrap()
    };
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("kd_expected.json")).unwrap()).unwrap();
    (flat(get("student_logits")), flat(get("teacher_logits")), get("labels").flatten_all().unwrap(), expected)
}

fn scalar(t: Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

#[test]
fn losses_match_pytorch() {
    let (s, t, labels, exp) = inputs();
    let n = s.dim(0).unwrap() as f64;
    let mut checked = 0;
    for (key, temp) in [("T1", 1.0), ("T2", 2.0), ("T5", 5.0)] {
        let e = &exp[key];
        let cases = [
            ("forward_kl_t2", scalar(SoftLoss::ForwardKl.sum(&s, &t, temp, 0.5).unwrap()) / n),
            ("reverse_kl_t2", scalar(SoftLoss::ReverseKl.sum(&s, &t, temp, 0.5).unwrap()) / n),
            ("jsd_beta0.5_unscaled", scalar(losses::jsd_sum(&s, &t, temp, 0.5).unwrap()) / n),
        ];
        for (name, ours) in cases {
            let want = e[name].as_f64().unwrap();
            assert!((ours - want).abs() <= 1e-5, "{key} {name}: ours {ours} vs PyTorch {want}");
            checked += 1;
        }
    }
    let ce = scalar(losses::hard_ce_sum(&s, &labels).unwrap()) / n;
    let want = exp["hard_ce"].as_f64().unwrap();
    assert!((ce - want).abs() <= 1e-5, "hard CE: ours {ce} vs PyTorch {want}");
    assert_eq!(checked, 9);
}

#[test]
fn divergences_vanish_for_identical_distributions_and_are_positive_otherwise() {
    let (s, t, _, _) = inputs();
    for kind in [SoftLoss::ForwardKl, SoftLoss::ReverseKl, SoftLoss::Jsd, SoftLoss::MseLogits] {
        let same = scalar(kind.sum(&t, &t, 2.0, 0.5).unwrap());
        let diff = scalar(kind.sum(&s, &t, 2.0, 0.5).unwrap());
        assert!(same.abs() < 1e-4, "{kind:?} of identical inputs = {same}");
        assert!(diff > 1e-2, "{kind:?} of different inputs = {diff}");
    }
    assert!(SoftLoss::parse("kl").unwrap_err().to_string().contains("forward_kl"));
}
