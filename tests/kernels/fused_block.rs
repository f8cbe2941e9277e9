//! The fused kernels of the llama block against the same computation composed from candle ops:
//! causal attention with grouped key/value heads (values and the gradients of q, k and v), the
//! gated MLP's `silu(gate) ⊙ up`, RMS norm and rotary embedding (values and every gradient).

use crate::common;

use candle_core::{DType, Device, Tensor, Var};
use distill_tui::engine::kernels::{attention, rmsnorm, rope, swiglu};
use distill_tui::engine::models::layers::{apply_rope, attention as composed_attention, causal_mask, rope_tables};

/// Values with a wide range from a fixed formula (no RNG), scaled by `amp`.
fn values(shape: &[usize], phase: f32, amp: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|i| amp * ((i as f32 * 0.377 + phase).sin() + 0.3 * ((i % 5) as f32 - 2.0))).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    max_abs(&(a - b).unwrap())
}

/// The composed attention on the `[b, t, heads, d]` layout: transpose to `[b, heads, t, d]`, the
/// layers' attention with a causal mask, transpose back.
fn reference(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Tensor {
    let t = q.dim(1).unwrap();
    let bhtd = |x: &Tensor| x.transpose(1, 2).unwrap();
    let mask = causal_mask(t, &Device::Cpu).unwrap();
    composed_attention(&bhtd(q), &bhtd(k), &bhtd(v), Some(&mask), scale).unwrap().transpose(1, 2).unwrap()
}

#[test]
fn fused_attention_matches_the_composed_form_in_value_and_gradients() {
    // (b, t, heads, kv_heads, d): GQA and plain heads; t below, at and across the 64-row blocks.
    for (b, t, heads, kv, d) in [(2, 130, 6, 2, 16), (1, 64, 4, 4, 8), (3, 1, 2, 1, 8), (1, 200, 9, 3, 64)] {
        let q = Var::from_tensor(&values(&[b, t, heads, d], 0.1, 1.5)).unwrap();
        let k = Var::from_tensor(&values(&[b, t, kv, d], 0.7, 1.5)).unwrap();
        let v = Var::from_tensor(&values(&[b, t, kv, d], 1.3, 1.0)).unwrap();
        let scale = 1.0 / (d as f64).sqrt();
        assert!(attention::applies(q.as_tensor()));
        let fused = attention::causal_attention(&q, &k, &v, scale).unwrap();
        let expected = reference(&q, &k, &v, scale);
        assert_eq!(fused.dims(), [b, t, heads, d]);
        let dv = max_abs_diff(&fused, &expected);
        assert!(dv < 2e-5, "{:?}: |Δy| = {dv}", (b, t, heads, kv, d));
        // The first position attends to itself only: its output is its value row.
        let first = fused.narrow(1, 0, 1).unwrap();
        let rep = heads / kv;
        let v0 = v.as_tensor().narrow(1, 0, 1).unwrap();
        let v0 = v0.unsqueeze(3).unwrap().broadcast_as((b, 1, kv, rep, d)).unwrap().reshape((b, 1, heads, d)).unwrap();
        assert!(max_abs_diff(&first, &v0) < 1e-6);
        // The same weighted loss through both: every input's gradient agrees.
        let w = values(&[b, t, heads, d], 2.1, 1.0);
        let g_fused = (fused * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let g_ref = (expected * &w).unwrap().sum_all().unwrap().backward().unwrap();
        for (name, x) in [("q", &q), ("k", &k), ("v", &v)] {
            let (gf, gr) = (g_fused.get(x.as_tensor()).unwrap(), g_ref.get(x.as_tensor()).unwrap());
            let (diff, size) = (max_abs_diff(gf, gr), max_abs(gr));
            // With one position the softmax is constant: q and k get no gradient, correctly.
            assert!(size > 1e-3 || (t == 1 && name != "v"), "{name}: the gradient is not trivial ({size})");
            assert!(diff < 1e-4 * size.max(1.0), "{:?}: |Δ∂{name}| = {diff} (max {size})", (b, t, heads, kv, d));
        }
    }
}

#[test]
fn fused_attention_never_looks_ahead() {
    // Changing the last position's key and value leaves every earlier output unchanged.
    let (b, t, heads, kv, d) = (1, 70, 4, 2, 8);
    let q = values(&[b, t, heads, d], 0.2, 1.0);
    let (k, v) = (values(&[b, t, kv, d], 0.4, 1.0), values(&[b, t, kv, d], 0.9, 1.0));
    let y = attention::causal_attention(&q, &k, &v, 0.3).unwrap();
    let bump = |x: &Tensor| {
        let head = x.narrow(1, 0, t - 1).unwrap();
        let last = (x.narrow(1, t - 1, 1).unwrap() + 5.0).unwrap();
        Tensor::cat(&[&head, &last], 1).unwrap()
    };
    let y2 = attention::causal_attention(&q, &bump(&k), &bump(&v), 0.3).unwrap();
    assert_eq!(max_abs_diff(&y.narrow(1, 0, t - 1).unwrap(), &y2.narrow(1, 0, t - 1).unwrap()), 0.0);
    assert!(max_abs_diff(&y.narrow(1, t - 1, 1).unwrap(), &y2.narrow(1, t - 1, 1).unwrap()) > 0.1);
}

#[test]
fn fused_attention_refuses_what_it_does_not_take() {
    let q = values(&[1, 8, 6, 4], 0.0, 1.0);
    // 6 query heads cannot share 4 key/value heads.
    let k = values(&[1, 8, 4, 4], 0.0, 1.0);
    let err = attention::causal_attention(&q, &k, &k, 0.5).unwrap_err().to_string();
    assert!(err.contains("kv_heads"), "{err}");
    assert!(!attention::applies(&q.to_dtype(DType::F64).unwrap()));
    assert!(!attention::applies(&q.flatten_all().unwrap()));
}

#[test]
fn fused_swiglu_matches_silu_times_up_in_value_and_gradients() {
    for shape in [vec![3, 5], vec![2, 17, 1536], vec![1]] {
        let g = Var::from_tensor(&values(&shape, 0.3, 6.0)).unwrap();
        let u = Var::from_tensor(&values(&shape, 1.1, 2.0)).unwrap();
        let fused = swiglu::swiglu(&g, &u).unwrap();
        let expected = (g.as_tensor().silu().unwrap() * u.as_tensor()).unwrap();
        let d = max_abs_diff(&fused, &expected);
        assert!(d < 1e-5 * max_abs(&expected).max(1.0), "{shape:?}: |Δy| = {d}");
        let w = values(&shape, 2.5, 1.0);
        let gf = (fused * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let gr = (expected * &w).unwrap().sum_all().unwrap().backward().unwrap();
        for (name, x) in [("gate", &g), ("up", &u)] {
            let (a, b) = (gf.get(x.as_tensor()).unwrap(), gr.get(x.as_tensor()).unwrap());
            let (diff, size) = (max_abs_diff(a, b), max_abs(b));
            assert!(diff < 1e-5 * size.max(1.0), "{shape:?}: |Δ∂{name}| = {diff} (max {size})");
        }
    }
    let err = swiglu::swiglu(&values(&[2, 3], 0.0, 1.0), &values(&[3, 2], 0.0, 1.0)).unwrap_err().to_string();
    assert!(err.contains("one shape"), "{err}");
}

/// Asserts that the gradients of `x` in two stores agree to `tol` relative to their size.
fn assert_grad_close(
    name: &str,
    x: &Var,
    fused: &candle_core::backprop::GradStore,
    composed: &candle_core::backprop::GradStore,
    tol: f32,
) {
    let (a, b) = (fused.get(x.as_tensor()).unwrap(), composed.get(x.as_tensor()).unwrap());
    let (diff, size) = (max_abs_diff(a, b), max_abs(b));
    assert!(size > 1e-4, "{name}: the gradient is not trivial ({size})");
    assert!(diff < tol * size.max(1.0), "|Δ∂{name}| = {diff} (max {size})");
}

#[test]
fn fused_rms_norm_matches_the_composed_form_in_value_and_gradients() {
    for shape in [vec![4, 576], vec![2, 3, 7, 64], vec![1, 5]] {
        let n = *shape.last().unwrap();
        let x = Var::from_tensor(&values(&shape, 0.4, 3.0)).unwrap();
        let w = Var::from_tensor(&(values(&[n], 0.9, 0.5) + 1.0).unwrap()).unwrap();
        let eps = 1e-5;
        assert!(rmsnorm::applies(&x, &w));
        let fused = rmsnorm::rms_norm(&x, &w, eps).unwrap();
        let ms = x.sqr().unwrap().mean_keepdim(candle_core::D::Minus1).unwrap();
        let expected = x.broadcast_div(&(ms + eps).unwrap().sqrt().unwrap()).unwrap().broadcast_mul(&w).unwrap();
        let d = max_abs_diff(&fused, &expected);
        assert!(d < 1e-5 * max_abs(&expected), "{shape:?}: |Δy| = {d}");
        let wt = values(&shape, 1.7, 1.0);
        let gf = (fused * &wt).unwrap().sum_all().unwrap().backward().unwrap();
        let gr = (expected * &wt).unwrap().sum_all().unwrap().backward().unwrap();
        assert_grad_close("x", &x, &gf, &gr, 1e-5);
        assert_grad_close("w", &w, &gf, &gr, 1e-5);
    }
    let err = rmsnorm::rms_norm(&values(&[2, 4], 0.0, 1.0), &values(&[3], 0.0, 1.0), 1e-6).unwrap_err();
    assert!(err.to_string().contains("as wide as"), "{err}");
}

#[test]
fn fused_rope_matches_the_layers_rope_in_value_and_gradient() {
    let (b, t, heads, d) = (2, 37, 3, 16);
    let inv_freq: Vec<f32> = (0..d / 2).map(|i| 1.0 / 10_000f32.powf(2.0 * i as f32 / d as f32)).collect();
    // Tables longer than the sequence, as a model's context is.
    let (cos, sin) = rope_tables(&inv_freq, t + 5, &Device::Cpu).unwrap();
    let x = Var::from_tensor(&values(&[b, t, heads, d], 0.2, 2.0)).unwrap();
    assert!(rope::applies(&x));
    let fused = rope::rope_thd(&x, &cos, &sin).unwrap();
    // The layers' rope on [b, heads, t, d] with tables cut to t, transposed back.
    let (c, s) = (cos.narrow(0, 0, t).unwrap(), sin.narrow(0, 0, t).unwrap());
    let expected = apply_rope(&x.transpose(1, 2).unwrap(), &c, &s).unwrap().transpose(1, 2).unwrap();
    let dv = max_abs_diff(&fused, &expected);
    assert!(dv < 1e-5, "|Δy| = {dv}");
    // Position 0 is not rotated; the rotation keeps every pair's length.
    assert!(max_abs_diff(&fused.narrow(1, 0, 1).unwrap(), &x.narrow(1, 0, 1).unwrap()) < 1e-7);
    let norm = |y: &Tensor| y.sqr().unwrap().sum_keepdim(3).unwrap();
    assert!(max_abs_diff(&norm(&fused), &norm(&x)) < 1e-4);
    let w = values(&[b, t, heads, d], 1.9, 1.0);
    let gf = (fused * &w).unwrap().sum_all().unwrap().backward().unwrap();
    let gr = (expected * &w).unwrap().sum_all().unwrap().backward().unwrap();
    assert_grad_close("x", &x, &gf, &gr, 1e-5);
    let err = rope::rope_thd(&values(&[1, 4, 2, 6], 0.0, 1.0), &cos, &sin).unwrap_err();
    assert!(err.to_string().contains("fused rope"), "{err}");
}

#[test]
fn fused_linear_matches_x_times_w_transposed_in_value_and_gradients() {
    use distill_tui::engine::kernels::linear;
    for (n, k, out) in [(7, 5, 3), (130, 64, 96), (1, 33, 1)] {
        let x = Var::from_tensor(&values(&[n, k], 0.6, 1.0)).unwrap();
        let w = Var::from_tensor(&values(&[out, k], 1.4, 0.3)).unwrap();
        assert!(linear::applies(&x, &w));
        let fused = linear::linear(&x, &w).unwrap();
        let expected = x.matmul(&w.t().unwrap()).unwrap();
        let d = max_abs_diff(&fused, &expected);
        assert!(d < 1e-5 * max_abs(&expected).max(1.0), "{:?}: |Δy| = {d}", (n, k, out));
        let wt = values(&[n, out], 2.2, 1.0);
        let gf = (fused * &wt).unwrap().sum_all().unwrap().backward().unwrap();
        let gr = (expected * &wt).unwrap().sum_all().unwrap().backward().unwrap();
        assert_grad_close("x", &x, &gf, &gr, 1e-5);
        assert_grad_close("w", &w, &gf, &gr, 1e-5);
    }
    let err = linear::linear(&values(&[2, 3], 0.0, 1.0), &values(&[4, 5], 0.0, 1.0)).unwrap_err().to_string();
    assert!(err.contains("fused linear"), "{err}");
}

/// The one switch: inside `kernels::reference()` every fused kernel declines (candle's composed
/// ops run), and a whole KD step — forward, the fused loss, the hand-written head backward and
/// every kernel's backward — gives the reference's loss and gradients.
#[test]
fn a_kd_step_on_the_fused_kernels_equals_it_on_the_reference_path() {
    use distill_tui::engine::distill::losses::SoftLoss;
    use distill_tui::engine::distill::step::{accumulate_grads, LossConfig, Targets};
    use distill_tui::engine::kernels::autocast::Precision;
    use distill_tui::engine::kernels::{self, linear, softmax};

    let q = values(&[1, 4, 2, 8], 0.0, 1.0);
    let (w, mask) = (values(&[8, 8], 0.5, 1.0), Tensor::zeros((4, 4), DType::F32, &Device::Cpu).unwrap());
    let x2 = values(&[4, 8], 0.2, 1.0);
    assert!(attention::applies(&q) && linear::applies(&x2, &w) && softmax::applies(&mask, &mask));
    {
        let _reference = kernels::reference();
        assert!(!attention::applies(&q) && !linear::applies(&x2, &w) && !softmax::applies(&mask, &mask));
        assert!(!rmsnorm::applies(&x2, &values(&[8], 0.1, 1.0)) && !rope::applies(&q) && !swiglu::applies(&x2, &x2));
    }
    assert!(attention::applies(&q), "the scope ends with its guard");

    for (teacher_name, student_name) in [("tiny-llama", "tiny-llama-student"), ("tiny-qwen2", "tiny-qwen2")] {
        let teacher = common::load_fixture(teacher_name, false);
        let student = common::load_fixture(student_name, true);
        let (ids, _) = common::golden(&common::fixture(teacher_name));
        let t = ids.dim(1).unwrap();
        let input = ids.narrow(1, 0, t - 1).unwrap();
        let vars: Vec<&Var> = student.vars.values().collect();
        let cfg = LossConfig {
            kind: SoftLoss::ForwardKl,
            temperature: 2.0,
            alpha: 0.7,
            beta: 0.5,
            chunk_rows: Some(9),
            activation_checkpointing: false,
        };
        let step = || {
            let hidden = teacher.network.hidden_states(&input).unwrap();
            let n = hidden.dim(0).unwrap() * hidden.dim(1).unwrap();
            let h = hidden.dim(2).unwrap();
            let targets = Targets::Dense {
                teacher: &teacher.network,
                hidden: hidden.reshape((n, h)).unwrap(),
                precision: Precision::F32,
            };
            let mut acc = vec![None; vars.len()];
            let parts = accumulate_grads(&student.network, &vars, &mut acc, &ids, &targets, &cfg, 1.0).unwrap();
            let logits = student.network.forward(&input).unwrap();
            (parts, acc, logits)
        };
        let (fused, fused_grads, fused_logits) = step();
        let (reference, reference_grads, reference_logits) = {
            let _reference = kernels::reference();
            step()
        };
        assert!(max_abs_diff(&fused_logits, &reference_logits) < 1e-4, "{student_name}: logits");
        assert!((fused.total - reference.total).abs() < 1e-5 * reference.total.abs(), "{fused:?} vs {reference:?}");
        for ((name, f), r) in student.vars.keys().zip(&fused_grads).zip(&reference_grads) {
            let (f, r) = (f.as_ref().unwrap(), r.as_ref().unwrap());
            let scale = max_abs(r).max(1e-12);
            let diff = max_abs_diff(f, r);
            assert!(diff <= 1e-3 * scale, "{student_name} {name}: gradient differs by {diff} (scale {scale})");
        }
    }
}
