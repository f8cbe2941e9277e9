//! KD losses against PyTorch (`../shared/fixtures/kd`): forward KL·T², reverse KL·T², JSD(β=0.5),
//! hard CE, at T = 1, 2, 5, within 1e-5; the fused and top-k forms against the composed ones; and
//! properties of every divergence over seeds, temperatures and mixes (JSD between 0 and the binary
//! entropy of β, the KLs at β = 0 and 1, zero for identical inputs, finite for -inf logits, f32
//! for bf16 inputs).

use crate::common;

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

#[test]
fn top_k_teacher_with_the_whole_vocabulary_equals_the_dense_loss() {
    use distill_tui::engine::distill::sparse::SparseTeacher;
    let (s, t, _, _) = inputs();
    let v = t.dim(1).unwrap();
    let full = SparseTeacher::from_logits(&t, v).unwrap();
    for kind in [SoftLoss::ForwardKl, SoftLoss::ReverseKl, SoftLoss::Jsd, SoftLoss::MseLogits] {
        for temp in [1.0, 2.0, 5.0] {
            let dense = scalar(kind.sum(&s, &t, temp, 0.5).unwrap());
            let sparse = scalar(kind.sum_sparse(&s, &full, temp, 0.5).unwrap());
            assert!((dense - sparse).abs() <= 1e-4 * dense.abs().max(1.0), "{kind:?} T={temp}: {dense} vs {sparse}");
        }
    }
}

#[test]
fn top_k_teacher_at_t1_is_the_exact_kl_between_bucketed_distributions() {
    use distill_tui::engine::distill::sparse::SparseTeacher;
    let (s, t, _, _) = inputs();
    let k = 8;
    let sparse = SparseTeacher::from_logits(&t, k).unwrap();
    assert_eq!(sparse.k(), k);
    // Dense reference: group every id outside the teacher's top 8 into one bucket, per row.
    let (n, v) = t.dims2().unwrap();
    let tl: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
    let sl: Vec<f32> = s.flatten_all().unwrap().to_vec1().unwrap();
    let idx: Vec<u32> = sparse.indices.flatten_all().unwrap().to_vec1().unwrap();
    let softmax = |row: &[f32]| {
        let m = row.iter().copied().fold(f32::MIN, f32::max) as f64;
        let z: f64 = row.iter().map(|&x| (x as f64 - m).exp()).sum();
        row.iter().map(|&x| (x as f64 - m).exp() / z).collect::<Vec<f64>>()
    };
    let mut want = 0.0;
    for r in 0..n {
        let (p, q) = (softmax(&tl[r * v..(r + 1) * v]), softmax(&sl[r * v..(r + 1) * v]));
        let top = &idx[r * k..(r + 1) * k];
        let (mut pr, mut qr) = (1.0, 1.0);
        for &i in top {
            let (pi, qi) = (p[i as usize], q[i as usize]);
            want += pi * (pi / qi).ln();
            pr -= pi;
            qr -= qi;
        }
        want += pr * (pr / qr).ln();
        // The top k really are the largest teacher probabilities.
        let min_top = top.iter().map(|&i| p[i as usize]).fold(1.0, f64::min);
        let max_rest = (0..v).filter(|i| !top.contains(&(*i as u32))).map(|i| p[i]).fold(0.0, f64::max);
        assert!(min_top >= max_rest);
    }
    let got = scalar(SoftLoss::ForwardKl.sum_sparse(&s, &sparse, 1.0, 0.5).unwrap());
    assert!((got - want).abs() < 1e-3 * want, "bucketed KL {got} vs {want}");
    let dense = scalar(SoftLoss::ForwardKl.sum(&s, &t, 1.0, 0.5).unwrap());
    assert!(got <= dense + 1e-4, "coarse-graining cannot increase KL: {got} > {dense}");
    let mass = sparse.mean_top_mass().unwrap();
    assert!(mass > 0.0 && mass < 1.0, "top-8 mass {mass}");
}

/// Loss values and student gradients of the fused op against the composed candle forms.
#[test]
fn fused_kl_and_cross_entropy_equal_the_composed_losses() {
    use candle_core::Var;
    use distill_tui::engine::distill::fused_loss::soft_and_hard;
    let (s, t, labels, exp) = inputs();
    let n = s.dim(0).unwrap() as f64;
    // Wider logits too, with a vocabulary that is not a multiple of the 16 lanes.
    let wide_s = (Tensor::randn(0f32, 3.0, (37, 1003), &Device::Cpu).unwrap()).contiguous().unwrap();
    let wide_t = (Tensor::randn(0f32, 3.0, (37, 1003), &Device::Cpu).unwrap()).contiguous().unwrap();
    let wide_labels = Tensor::arange(0u32, 37, &Device::Cpu).unwrap().affine(27.0, 5.0).unwrap();
    for (what, s, t, labels) in [("fixture", &s, &t, &labels), ("random 37x1003", &wide_s, &wide_t, &wide_labels)] {
        for kind in [SoftLoss::ForwardKl, SoftLoss::ReverseKl] {
            for temp in [1.0, 2.0, 5.0] {
                let sv = Var::from_tensor(s).unwrap();
                let both = soft_and_hard(sv.as_tensor(), Some(t), labels, kind, temp).unwrap();
                let (soft, hard) = (scalar(both.get(0).unwrap()), scalar(both.get(1).unwrap()));
                let want_soft = scalar(kind.sum(s, t, temp, 0.5).unwrap());
                let want_hard = scalar(losses::hard_ce_sum(s, labels).unwrap());
                let rows = s.dim(0).unwrap() as f64;
                assert!((soft - want_soft).abs() / rows <= 1e-5, "{what} {kind:?} T={temp}: {soft} vs {want_soft}");
                assert!((hard - want_hard).abs() / rows <= 1e-5, "{what} CE: {hard} vs {want_hard}");
                // Gradient of 0.7·soft + 0.3·hard, both ways.
                let loss = ((both.get(0).unwrap() * 0.7).unwrap() + (both.get(1).unwrap() * 0.3).unwrap()).unwrap();
                let g = loss.backward().unwrap().get(sv.as_tensor()).unwrap().clone();
                let sv2 = Var::from_tensor(s).unwrap();
                let composed = ((kind.sum(sv2.as_tensor(), t, temp, 0.5).unwrap() * 0.7).unwrap()
                    + (losses::hard_ce_sum(sv2.as_tensor(), labels).unwrap() * 0.3).unwrap())
                .unwrap();
                let want_g = composed.backward().unwrap().get(sv2.as_tensor()).unwrap().clone();
                let diff = (g - &want_g).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap();
                let diff = diff.to_scalar::<f32>().unwrap();
                assert!(diff <= 1e-5, "{what} {kind:?} T={temp}: gradient differs by {diff}");
            }
        }
    }
    // Against PyTorch directly, like the composed forms.
    let both = soft_and_hard(&s, Some(&t), &labels, SoftLoss::ForwardKl, 2.0).unwrap();
    let fkl = scalar(both.get(0).unwrap()) / n;
    let want = exp["T2"]["forward_kl_t2"].as_f64().unwrap();
    assert!((fkl - want).abs() <= 1e-5, "fused forward KL {fkl} vs PyTorch {want}");
    let ce = scalar(both.get(1).unwrap()) / n;
    assert!((ce - exp["hard_ce"].as_f64().unwrap()).abs() <= 1e-5, "fused CE {ce}");
    // Hard labels alone (the baseline), and a NaN logit that must surface as a NaN loss.
    // The baseline of a recipe whose soft loss is not fused (JSD, MSE) still gets its cross-entropy.
    for kind in [SoftLoss::ForwardKl, SoftLoss::Jsd, SoftLoss::MseLogits] {
        let hard_only = soft_and_hard(&s, None, &labels, kind, 2.0).unwrap();
        assert_eq!(scalar(hard_only.get(0).unwrap()), 0.0);
        assert!((scalar(hard_only.get(1).unwrap()) / n - exp["hard_ce"].as_f64().unwrap()).abs() <= 1e-5);
    }
    let mut bad: Vec<f32> = wide_s.flatten_all().unwrap().to_vec1().unwrap();
    bad[1003 * 3 + 17] = f32::NAN;
    let bad = Tensor::from_vec(bad, (37, 1003), &Device::Cpu).unwrap();
    let both = soft_and_hard(&bad, Some(&wide_t), &wide_labels, SoftLoss::ForwardKl, 2.0).unwrap();
    assert!(scalar(both.get(0).unwrap()).is_nan() && scalar(both.get(1).unwrap()).is_nan(), "NaN is kept");
    // Bad operands are named.
    let err = soft_and_hard(&s, Some(&wide_t), &labels, SoftLoss::ForwardKl, 2.0).unwrap_err().to_string();
    assert!(err.contains("teacher"), "{err}");
    let err = soft_and_hard(&s, Some(&t), &labels, SoftLoss::Jsd, 2.0).unwrap_err().to_string();
    assert!(err.contains("not fused"), "{err}");
}

/// The fused top-k op against the composed top-k loss and cross-entropy: values and gradients,
/// with a rest bucket (k < V) and without (k = V), at several temperatures, on logits with
/// masked (-inf) tokens; bad operands are refused.
#[test]
fn fused_top_k_kl_and_cross_entropy_equal_the_composed_losses() {
    use candle_core::Var;
    use distill_tui::engine::distill::fused_sparse::soft_and_hard;
    use distill_tui::engine::distill::sparse::SparseTeacher;
    let (rows, vocab) = (23, 1003);
    let labels = Tensor::arange(0u32, rows as u32, &Device::Cpu).unwrap().affine(41.0, 3.0).unwrap();
    let mut masked: Vec<f32> = logits(rows, vocab, 33, 4.0).flatten_all().unwrap().to_vec1().unwrap();
    for r in 0..rows {
        masked[r * vocab + 500 + r] = f32::NEG_INFINITY;
    }
    let masked = Tensor::from_vec(masked, (rows, vocab), &Device::Cpu).unwrap();
    let cases =
        [("spread 3", logits(rows, vocab, 31, 3.0), logits(rows, vocab, 32, 3.0)), ("masked", masked.clone(), masked)];
    for (what, s, t) in &cases {
        for k in [1, 16, 64, vocab] {
            let sparse = SparseTeacher::from_logits(t, k).unwrap();
            for kind in [SoftLoss::ForwardKl, SoftLoss::ReverseKl] {
                for temp in [1.0, 2.0, 5.0] {
                    let sv = Var::from_tensor(s).unwrap();
                    let both = soft_and_hard(sv.as_tensor(), &sparse, &labels, kind, temp).unwrap();
                    let (soft, hard) = (scalar(both.get(0).unwrap()), scalar(both.get(1).unwrap()));
                    let want_soft = scalar(kind.sum_sparse(s, &sparse, temp, 0.5).unwrap());
                    let want_hard = scalar(losses::hard_ce_sum(s, &labels).unwrap());
                    let case = format!("{what} k={k} {kind:?} T={temp}");
                    assert!((soft - want_soft).abs() / rows as f64 <= 1e-5, "{case}: {soft} vs {want_soft}");
                    assert!((hard - want_hard).abs() / rows as f64 <= 1e-5, "{case} CE: {hard} vs {want_hard}");
                    let loss = ((both.get(0).unwrap() * 0.7).unwrap() + (both.get(1).unwrap() * 0.3).unwrap()).unwrap();
                    let g = loss.backward().unwrap().get(sv.as_tensor()).unwrap().clone();
                    let sv2 = Var::from_tensor(s).unwrap();
                    let composed = ((kind.sum_sparse(sv2.as_tensor(), &sparse, temp, 0.5).unwrap() * 0.7).unwrap()
                        + (losses::hard_ce_sum(sv2.as_tensor(), &labels).unwrap() * 0.3).unwrap())
                    .unwrap();
                    let want_g = composed.backward().unwrap().get(sv2.as_tensor()).unwrap().clone();
                    let scale =
                        want_g.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
                    let diff = (g - &want_g).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap();
                    let diff = diff.to_scalar::<f32>().unwrap();
                    assert!(diff <= 1e-5 * scale.max(1.0), "{case}: gradient differs by {diff} (scale {scale})");
                }
            }
        }
    }
    let (s, t) = (&cases[0].1, &cases[0].2);
    let sparse = SparseTeacher::from_logits(t, 8).unwrap();
    let err = soft_and_hard(s, &sparse.narrow(0, 5).unwrap(), &labels, SoftLoss::ForwardKl, 2.0).unwrap_err();
    assert!(err.to_string().contains("positions"), "{err}");
    let err = soft_and_hard(s, &sparse, &labels, SoftLoss::Jsd, 2.0).unwrap_err();
    assert!(err.to_string().contains("not fused"), "{err}");
    let mut bad: Vec<f32> = s.flatten_all().unwrap().to_vec1().unwrap();
    bad[vocab * 3 + 17] = f32::NAN;
    let bad = Tensor::from_vec(bad, (rows, vocab), &Device::Cpu).unwrap();
    let both = soft_and_hard(&bad, &sparse, &labels, SoftLoss::ForwardKl, 2.0).unwrap();
    assert!(scalar(both.get(0).unwrap()).is_nan() && scalar(both.get(1).unwrap()).is_nan(), "NaN is kept");
}

/// Seeded logits `[rows, vocab]` with spread `scale`.
fn logits(rows: usize, vocab: usize, seed: u64, scale: f64) -> Tensor {
    let v = common::spread_values(rows * vocab, seed, 1.0).iter().map(|x| (*x as f64 * scale) as f32).collect();
    Tensor::from_vec(v, (rows, vocab), &Device::Cpu).unwrap()
}

#[test]
fn every_divergence_keeps_its_properties_over_seeds_temperatures_and_mixes() {
    use distill_tui::engine::distill::sparse::SparseTeacher;
    for seed in 1..=12u64 {
        let (rows, vocab) = (5, 3 + (seed as usize * 7) % 40);
        let scale = [0.5, 2.0, 8.0][seed as usize % 3];
        let (s, t) = (logits(rows, vocab, seed, scale), logits(rows, vocab, seed + 100, scale));
        let full = SparseTeacher::from_logits(&t, vocab).unwrap();
        for temp in [0.5, 1.0, 2.0, 5.0] {
            let t2 = temp * temp;
            let fkl = scalar(SoftLoss::ForwardKl.sum(&s, &t, temp, 0.5).unwrap());
            let rkl = scalar(SoftLoss::ReverseKl.sum(&s, &t, temp, 0.5).unwrap());
            assert!(fkl >= -1e-6 && rkl >= -1e-6, "seed {seed} T={temp}: KLs {fkl}, {rkl}");
            for beta in [0.1, 0.3, 0.5, 0.9] {
                let jsd = scalar(SoftLoss::Jsd.sum(&s, &t, temp, beta).unwrap()) / t2;
                // 0 ≤ JSD_β ≤ the binary entropy of β, per position.
                let h = -beta * f64::ln(beta) - (1.0 - beta) * f64::ln(1.0 - beta);
                assert!(jsd >= -1e-6 && jsd <= rows as f64 * h + 1e-5, "seed {seed} T={temp} β={beta}: JSD {jsd}");
                let sparse = scalar(SoftLoss::Jsd.sum_sparse(&s, &full, temp, beta).unwrap()) / t2;
                assert!((sparse - jsd).abs() <= 1e-4 * jsd.max(1.0), "sparse JSD {sparse} vs {jsd}");
            }
            // At the ends, JSD is the corresponding KL (TRL's convention), dense and sparse.
            for (beta, kl) in [(0.0, fkl), (1.0, rkl)] {
                let jsd = scalar(SoftLoss::Jsd.sum(&s, &t, temp, beta).unwrap());
                let sparse = scalar(SoftLoss::Jsd.sum_sparse(&s, &full, temp, beta).unwrap());
                assert!((jsd - kl).abs() <= 1e-5 * kl.max(1.0), "seed {seed} T={temp} β={beta}: {jsd} vs KL {kl}");
                assert!((sparse - kl).abs() <= 1e-4 * kl.max(1.0), "sparse β={beta}: {sparse} vs KL {kl}");
            }
            // Identical inputs: every divergence vanishes.
            for kind in [SoftLoss::ForwardKl, SoftLoss::ReverseKl, SoftLoss::Jsd, SoftLoss::MseLogits] {
                for beta in [0.0, 0.5, 1.0] {
                    let same = scalar(kind.sum(&t, &t, temp, beta).unwrap());
                    assert!(same.abs() < 1e-5, "{kind:?} T={temp} β={beta} of identical inputs: {same}");
                }
            }
        }
    }
}

#[test]
fn masked_tokens_with_minus_infinity_logits_give_finite_losses_in_every_form() {
    use distill_tui::engine::distill::fused_loss::soft_and_hard;
    use distill_tui::engine::distill::sparse::SparseTeacher;
    let (rows, vocab, masked) = (4, 40, [3usize, 17, 39]);
    let (s, t) = (logits(rows, vocab, 7, 3.0), logits(rows, vocab, 8, 3.0));
    let mask = |x: &Tensor, cols: &[usize]| {
        let mut v: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        for r in 0..rows {
            for &c in cols {
                v[r * vocab + c] = f32::NEG_INFINITY;
            }
        }
        Tensor::from_vec(v, (rows, vocab), &Device::Cpu).unwrap()
    };
    // The same tokens masked in both: the loss over the vocabulary without them.
    let kept: Vec<u32> = (0..vocab as u32).filter(|c| !masked.contains(&(*c as usize))).collect();
    let keep = |x: &Tensor| x.index_select(&Tensor::new(kept.as_slice(), &Device::Cpu).unwrap(), 1).unwrap();
    let (ms, mt) = (mask(&s, &masked), mask(&t, &masked));
    let labels = Tensor::new(&[0u32, 1, 2, 4], &Device::Cpu).unwrap();
    for temp in [1.0, 2.0] {
        for kind in [SoftLoss::ForwardKl, SoftLoss::ReverseKl, SoftLoss::Jsd] {
            for beta in [0.0, 0.5, 1.0] {
                let got = scalar(kind.sum(&ms, &mt, temp, beta).unwrap());
                let want = scalar(kind.sum(&keep(&s), &keep(&t), temp, beta).unwrap());
                assert!(
                    got.is_finite() && (got - want).abs() <= 1e-5 * want.max(1.0),
                    "{kind:?} β={beta}: {got} vs {want}"
                );
                let sparse = SparseTeacher::from_logits(&mt, 8).unwrap();
                let got = scalar(kind.sum_sparse(&ms, &sparse, temp, beta).unwrap());
                assert!(got.is_finite(), "sparse {kind:?} β={beta}: {got}");
            }
        }
        for kind in [SoftLoss::ForwardKl, SoftLoss::ReverseKl] {
            let both = soft_and_hard(&ms, Some(&mt), &labels, kind, temp).unwrap();
            let want = scalar(kind.sum(&keep(&s), &keep(&t), temp, 0.5).unwrap());
            let got = scalar(both.get(0).unwrap());
            assert!(got.is_finite() && (got - want).abs() <= 1e-4 * want.max(1.0), "fused {kind:?}: {got} vs {want}");
            let g =
                soft_and_hard(&candle_core::Var::from_tensor(&ms).unwrap(), Some(&mt), &labels, kind, temp).unwrap();
            assert!(scalar(g.get(0).unwrap()).is_finite());
        }
    }
    // Masked on one side only: the teacher's zeros weigh nothing in forward KL, the student's in
    // reverse KL.
    let fkl = scalar(SoftLoss::ForwardKl.sum(&s, &mt, 2.0, 0.5).unwrap());
    let rkl = scalar(SoftLoss::ReverseKl.sum(&ms, &t, 2.0, 0.5).unwrap());
    assert!(fkl.is_finite() && fkl > 0.0 && rkl.is_finite() && rkl > 0.0, "{fkl} {rkl}");
    let fused = soft_and_hard(&s, Some(&mt), &labels, SoftLoss::ForwardKl, 2.0).unwrap();
    assert!((scalar(fused.get(0).unwrap()) - fkl).abs() <= 1e-4 * fkl, "fused one-sided forward KL");
    let fused = soft_and_hard(&ms, Some(&t), &labels, SoftLoss::ReverseKl, 2.0).unwrap();
    assert!((scalar(fused.get(0).unwrap()) - rkl).abs() <= 1e-4 * rkl, "fused one-sided reverse KL");
}

#[test]
fn losses_are_computed_in_f32_whatever_the_logits_dtype() {
    let (s, t) = (logits(6, 50, 21, 4.0), logits(6, 50, 22, 4.0));
    let (sb, tb) = (s.to_dtype(DType::BF16).unwrap(), t.to_dtype(DType::BF16).unwrap());
    // The bf16 values, widened: what the losses must compute on.
    let (sw, tw) = (sb.to_dtype(DType::F32).unwrap(), tb.to_dtype(DType::F32).unwrap());
    for kind in [SoftLoss::ForwardKl, SoftLoss::ReverseKl, SoftLoss::Jsd, SoftLoss::MseLogits] {
        let low = kind.sum(&sb, &tb, 2.0, 0.5).unwrap();
        assert_eq!(low.dtype(), DType::F32, "{kind:?}");
        let (got, want) = (scalar(low), scalar(kind.sum(&sw, &tw, 2.0, 0.5).unwrap()));
        assert!((got - want).abs() <= 1e-6 * want.abs().max(1.0), "{kind:?}: {got} vs {want}");
    }
    let labels = Tensor::new(&[1u32, 2, 3, 4, 5, 6], &Device::Cpu).unwrap();
    let ce = losses::hard_ce_sum(&sb, &labels).unwrap();
    assert_eq!(ce.dtype(), DType::F32);
    assert!((scalar(ce) - scalar(losses::hard_ce_sum(&sw, &labels).unwrap())).abs() < 1e-5);
}

/// One cache serves a temperature sweep: the cache keeps the teacher's top-k logits and its tail's
/// log-partition at β = 1 and ½ (no temperature applied), and a run at T rebuilds the rest bucket
/// from them (`sparse::tail_log_partition`). Compared with a capture at T itself (top k of z/T, the
/// tail's exact mass): the top-k sets agree; at T = 2 the losses are equal; at other T the rest
/// bucket's log-mass is interpolated (3, 5) or extrapolated (0.5) and the loss differs by what that
/// bucket carries — nothing at k = V, less as k grows. The old rule (the tail's mass spread evenly)
/// is shown for scale: it is what the interpolation improves on.
#[test]
fn a_cache_captured_at_t1_serves_other_temperatures_within_the_rest_bucket_approximation() {
    use distill_tui::engine::distill::sparse::SparseTeacher;
    let (rows, vocab) = (24, 256);
    // Peaked teachers like a language model's: a few large logits over a long tail.
    let t = (logits(rows, vocab, 7, 2.0).sqr().unwrap() * 1.5).unwrap();
    let s = logits(rows, vocab, 8, 3.0);
    // (T, bound on the relative loss gap at k = 8, 32, 128) — the documented approximation.
    let cases: [(f64, [f64; 3]); 7] = [
        (2.0, [1e-4; 3]),
        (0.5, [1e-4; 3]),
        (1.5, [0.03, 0.01, 0.001]),
        (3.0, [0.04, 0.012, 0.001]),
        (5.0, [0.05, 0.02, 0.001]),
        (0.7, [0.08, 0.04, 0.002]),
        (0.3, [0.4, 0.2, 0.01]),
    ];
    for kind in [SoftLoss::ForwardKl, SoftLoss::ReverseKl, SoftLoss::Jsd] {
        for (temp, bounds) in cases {
            for (j, k) in [8, 32, 128, vocab].into_iter().enumerate() {
                let captured_at_1 = SparseTeacher::from_logits(&t, k).unwrap();
                let captured_at_t = SparseTeacher::from_logits(&(&t / temp).unwrap(), k).unwrap();
                assert_eq!(
                    captured_at_1.indices.to_vec2::<u32>().unwrap(),
                    captured_at_t.indices.to_vec2::<u32>().unwrap(),
                    "the top k do not depend on T"
                );
                let reused = scalar(kind.sum_sparse(&s, &captured_at_1, temp, 0.5).unwrap());
                // The T-capture's buckets are already at T: score them at T = 1 against the student
                // at T, and scale by T² as the loss does.
                let at_t = scalar(kind.sum_sparse(&(&s / temp).unwrap(), &captured_at_t, 1.0, 0.5).unwrap());
                let at_t = at_t * temp * temp;
                let gap = (reused - at_t).abs() / at_t;
                if k == vocab {
                    assert!(gap < 1e-4, "{kind:?} k=V T={temp}: {reused} vs {at_t}");
                    continue;
                }
                // The old rule, a flat tail, for scale.
                let mut flat = captured_at_1.clone();
                let ln_m = ((vocab - k) as f64).ln();
                let l1 = flat.tail_lse.unsqueeze(1).unwrap();
                let at = |beta: f64| (l1.affine(beta, (1.0 - beta) * ln_m)).unwrap();
                flat.tail_lse_at = Tensor::cat(&[at(0.5), at(2.0)], 1).unwrap();
                let flat = scalar(kind.sum_sparse(&s, &flat, temp, 0.5).unwrap());
                let flat_gap = (flat - at_t).abs() / at_t;
                assert!(
                    gap <= bounds[j],
                    "{kind:?} k={k} T={temp}: reused {reused} vs captured at T {at_t} ({gap:.4})"
                );
                assert!(gap <= flat_gap + 1e-6, "{kind:?} k={k} T={temp}: worse than a flat tail");
            }
        }
    }
}

/// Positions labelled `IGNORE` (tokens the student sampled itself, in on-policy distillation) leave
/// the hard-label loss and its gradient — in the composed form and both fused ops — while the soft
/// loss still covers them.
#[test]
fn ignored_labels_leave_the_hard_loss_in_every_form() {
    use candle_core::Var;
    use distill_tui::engine::distill::losses::IGNORE;
    use distill_tui::engine::distill::sparse::SparseTeacher;
    use distill_tui::engine::distill::{fused_loss, fused_sparse};
    let (rows, vocab) = (9, 131);
    let (s, t) = (logits(rows, vocab, 41, 3.0), logits(rows, vocab, 42, 3.0));
    let labels: Vec<u32> =
        (0..rows as u32).map(|r| if r % 3 == 1 { IGNORE } else { (r * 17) % vocab as u32 }).collect();
    let kept: Vec<u32> = (0..rows as u32).filter(|r| r % 3 != 1).collect();
    let keep_idx = Tensor::new(kept.as_slice(), &Device::Cpu).unwrap();
    let label_t = Tensor::new(labels.as_slice(), &Device::Cpu).unwrap();
    let kept_labels =
        Tensor::new(kept.iter().map(|&r| labels[r as usize]).collect::<Vec<u32>>().as_slice(), &Device::Cpu).unwrap();
    // The composed hard loss over the kept rows alone.
    let want_hard = scalar(losses::hard_ce_sum(&s.index_select(&keep_idx, 0).unwrap(), &kept_labels).unwrap());
    let composed = scalar(losses::hard_ce_sum(&s, &label_t).unwrap());
    assert!((composed - want_hard).abs() < 1e-4, "composed {composed} vs kept rows {want_hard}");
    let sparse = SparseTeacher::from_logits(&t, 16).unwrap();
    for kind in [SoftLoss::ForwardKl, SoftLoss::ReverseKl] {
        for (form, fused) in [("dense", true), ("top-k", false)] {
            let sv = Var::from_tensor(&s).unwrap();
            let both = if fused {
                fused_loss::soft_and_hard(sv.as_tensor(), Some(&t), &label_t, kind, 2.0).unwrap()
            } else {
                fused_sparse::soft_and_hard(sv.as_tensor(), &sparse, &label_t, kind, 2.0).unwrap()
            };
            let hard = scalar(both.get(1).unwrap());
            assert!((hard - want_hard).abs() < 1e-4, "{form} {kind:?}: hard {hard} vs {want_hard}");
            let soft_all = if fused {
                scalar(kind.sum(&s, &t, 2.0, 0.5).unwrap())
            } else {
                scalar(kind.sum_sparse(&s, &sparse, 2.0, 0.5).unwrap())
            };
            assert!(
                (scalar(both.get(0).unwrap()) - soft_all).abs() < 1e-4 * soft_all.max(1.0),
                "{form}: soft covers every row"
            );
            // The hard gradient of an ignored row is zero; the others match the composed form.
            let g = both.get(1).unwrap().backward().unwrap().get(sv.as_tensor()).unwrap().clone();
            let sv2 = Var::from_tensor(&s).unwrap();
            let want_g = losses::hard_ce_sum(sv2.as_tensor(), &label_t).unwrap().backward().unwrap();
            let want_g = want_g.get(sv2.as_tensor()).unwrap();
            assert!(common::max_abs_diff(&g, want_g) < 1e-5, "{form} {kind:?}: hard gradient");
            let ignored = g.get(1).unwrap().abs().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
            assert_eq!(ignored, 0.0, "{form}: an ignored row has no hard gradient");
        }
    }
}
