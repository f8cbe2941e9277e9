//! Attention's fused masked softmax against the same softmax composed from candle ops: values and
//! the gradient with respect to the scores, on causal masks with and without a key offset.

use candle_core::{Device, Tensor, Var, D};
use distill_tui::engine::kernels::softmax::{applies, masked_softmax};

/// Additive causal mask `[t, tk]`: query i sees keys 0..=i + (tk - t).
fn causal(t: usize, tk: usize) -> Tensor {
    let off = tk - t;
    let m: Vec<f32> =
        (0..t).flat_map(|i| (0..tk).map(move |j| if j > i + off { f32::NEG_INFINITY } else { 0.0 })).collect();
    Tensor::from_vec(m, (t, tk), &Device::Cpu).unwrap()
}

/// Scores with a wide range (some rows with large logits) from a fixed formula.
fn scores(shape: (usize, usize, usize, usize)) -> Tensor {
    let n = shape.0 * shape.1 * shape.2 * shape.3;
    let v: Vec<f32> = (0..n).map(|i| ((i as f32 * 0.618).sin() * 9.0) + ((i % 7) as f32 - 3.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

fn composed(x: &Tensor, mask: &Tensor, scale: f64) -> Tensor {
    let s = (x * scale).unwrap().broadcast_add(mask).unwrap();
    candle_nn::ops::softmax(&s, D::Minus1).unwrap()
}

#[test]
fn fused_softmax_matches_the_composed_form_in_value_and_gradient() {
    for (shape, tk_extra) in [((2, 3, 17, 17), 0), ((1, 2, 5, 40), 35), ((2, 9, 64, 64), 0), ((1, 1, 1, 300), 299)] {
        let (b, h, t, tk) = shape;
        assert_eq!(tk - t, tk_extra);
        let mask = causal(t, tk);
        let x = Var::from_tensor(&scores((b, h, t, tk))).unwrap();
        assert!(applies(x.as_tensor(), &mask));
        let scale = 0.125;
        let fused = masked_softmax(x.as_tensor(), &mask, scale).unwrap();
        let reference = composed(x.as_tensor(), &mask, scale);
        let d = max_abs_diff(&fused, &reference);
        assert!(d < 2e-6, "{shape:?}: |Δp| = {d}");
        // Masked entries are exactly zero, every row sums to one.
        let p: Vec<f32> = fused.flatten_all().unwrap().to_vec1().unwrap();
        for (r, row) in p.chunks(tk).enumerate() {
            let i = r % t;
            assert!(row[i + tk_extra + 1..].iter().all(|&v| v == 0.0), "{shape:?}: row {r} sees the future");
            let sum: f32 = row.iter().sum();
            assert!((sum - 1.0).abs() < 1e-5, "{shape:?}: row {r} sums to {sum}");
        }
        // The same weighted loss through both: gradients with respect to the scores agree.
        let w = scores((b, h, t, tk)).cos().unwrap();
        let g_fused = (fused * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let g_ref = (reference * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let (gf, gr) = (g_fused.get(x.as_tensor()).unwrap(), g_ref.get(x.as_tensor()).unwrap());
        let d = max_abs_diff(gf, gr);
        assert!(d < 2e-6, "{shape:?}: |Δgrad| = {d}");
        let gmax = gr.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(gmax > 1e-3, "{shape:?}: the gradient is not trivial ({gmax})");
    }
}

#[test]
fn fused_softmax_refuses_what_it_does_not_take() {
    let x = scores((1, 2, 4, 4));
    // A padding mask [b, 1, 1, t] (the encoder's) is not a [t, tk] table.
    let pad = Tensor::zeros((1, 1, 1, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(!applies(&x, &pad));
    let err = masked_softmax(&x, &pad, 1.0).unwrap_err().to_string();
    assert!(err.contains("[t, tk] mask"), "{err}");
    assert!(!applies(&x.to_dtype(candle_core::DType::F64).unwrap(), &causal(4, 4)));
}
