//! Next-token distributions at a temperature, from logits kept in memory: changing T on the
//! Temperature screen recomputes these in microseconds instead of rerunning the model.

/// A softened distribution's summary: its top entries, entropy and top-k mass.
#[derive(Clone, Debug, PartialEq)]
pub struct Softened {
    /// `(index, probability)`, most probable first.
    pub top: Vec<(usize, f64)>,
    /// Entropy in nats.
    pub entropy: f64,
    /// Probability mass of `top`.
    pub top_mass: f64,
}

/// softmax(logits / t), computed in f64 with the max subtracted.
pub fn softmax_at(logits: &[f32], t: f64) -> Vec<f64> {
    let t = t.max(1e-6);
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let exps: Vec<f64> = logits.iter().map(|&l| ((l as f64 - max) / t).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// The top `k` of softmax(logits / t) with its entropy and mass.
pub fn soften(logits: &[f32], t: f64, k: usize) -> Softened {
    let probs = softmax_at(logits, t);
    let entropy = -probs.iter().filter(|&&p| p > 0.0).map(|&p| p * p.ln()).sum::<f64>();
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    let top: Vec<(usize, f64)> = order.into_iter().take(k).map(|i| (i, probs[i])).collect();
    let top_mass = top.iter().map(|e| e.1).sum();
    Softened { top, entropy, top_mass }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temperature_flattens() {
        let logits = [2.0f32, 1.0, 0.0, -1.0];
        let cold = soften(&logits, 1.0, 2);
        let hot = soften(&logits, 5.0, 2);
        assert!(hot.entropy > cold.entropy);
        assert!(hot.top[0].1 < cold.top[0].1);
        assert_eq!(cold.top[0].0, 0);
        let p = softmax_at(&logits, 1.0);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        // softmax([2,1,0,-1]) from numpy: 0.6439142598879722
        assert!((p[0] - 0.6439142598879722).abs() < 1e-12);
    }

    #[test]
    fn uniform_entropy_is_log_n() {
        let s = soften(&[0.0f32; 8], 3.0, 8);
        assert!((s.entropy - 8f64.ln()).abs() < 1e-12);
        assert!((s.top_mass - 1.0).abs() < 1e-12);
    }
}
