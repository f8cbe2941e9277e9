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

/// KL(p ‖ q) in nats (terms where p is 0 count 0; a q of 0 under a positive p is infinite).
pub fn kl(p: &[f64], q: &[f64]) -> f64 {
    p.iter().zip(q).filter(|(pi, _)| **pi > 0.0).map(|(pi, qi)| pi * (pi / qi).ln()).sum()
}

fn entropy(p: &[f64]) -> f64 {
    -p.iter().filter(|&&x| x > 0.0).map(|&x| x * x.ln()).sum::<f64>()
}

/// The probabilities of `p` sorted (largest first) and read at about `points` log-spaced ranks
/// from 1 to the vocabulary size: `(rank, probability)`, 1-based, the last rank included.
pub fn rank_curve(p: &[f64], points: usize) -> Vec<(usize, f64)> {
    let mut sorted = p.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let n = sorted.len();
    if n == 0 {
        return Vec::new();
    }
    let steps = points.max(2) - 1;
    let mut ranks: Vec<usize> =
        (0..=steps).map(|i| ((n as f64).powf(i as f64 / steps as f64)).round().clamp(1.0, n as f64) as usize).collect();
    ranks.dedup();
    ranks.into_iter().map(|r| (r, sorted[r - 1])).collect()
}

/// One model at two temperatures, read on a fixed set of outputs.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Panel {
    /// The probability of each of the view's outputs at T1 and at T2.
    pub probs: [Vec<f64>; 2],
    /// Entropy (nats) of the whole distribution at each temperature.
    pub entropy: [f64; 2],
    /// Probability mass of the view's outputs at each temperature.
    pub mass: [f64; 2],
    /// KL(P_T1 ‖ P_T2): how far the softening moves the distribution.
    pub kl_t1_t2: f64,
    /// The rank-vs-probability curve of the whole distribution at each temperature.
    pub curves: [Vec<(usize, f64)>; 2],
}

/// What the Temperature screen and `distill-tui temperature` show: the teacher (and a student) at
/// two temperatures on the same outputs, the teacher's T1 ranking, so a row is one token in every
/// panel.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct TemperatureView {
    pub t: [f64; 2],
    /// The teacher's `k` most probable outputs at T1, most probable first.
    pub ids: Vec<usize>,
    pub teacher: Panel,
    pub student: Option<Panel>,
    /// KL(teacher ‖ student) at T1 and at T2 (when both have the same outputs).
    pub kl_teacher_student: Option<[f64; 2]>,
}

/// Rank-curve points per temperature.
const CURVE_POINTS: usize = 48;

fn panel(logits: &[f32], t: [f64; 2], ids: &[usize]) -> (Panel, [Vec<f64>; 2]) {
    let full = [softmax_at(logits, t[0]), softmax_at(logits, t[1])];
    let at = |p: &Vec<f64>| ids.iter().map(|&i| p.get(i).copied().unwrap_or(0.0)).collect::<Vec<f64>>();
    let probs = [at(&full[0]), at(&full[1])];
    let panel = Panel {
        entropy: [entropy(&full[0]), entropy(&full[1])],
        mass: [probs[0].iter().sum(), probs[1].iter().sum()],
        kl_t1_t2: kl(&full[0], &full[1]),
        curves: [rank_curve(&full[0], CURVE_POINTS), rank_curve(&full[1], CURVE_POINTS)],
        probs,
    };
    (panel, full)
}

/// The view of `teacher`'s logits (and `student`'s) at temperatures `t`, on the teacher's top `k`
/// outputs at T1.
pub fn temperature_view(teacher: &[f32], student: Option<&[f32]>, t: [f64; 2], k: usize) -> TemperatureView {
    let ids: Vec<usize> = soften(teacher, t[0], k.min(teacher.len())).top.into_iter().map(|(i, _)| i).collect();
    let (tp, tfull) = panel(teacher, t, &ids);
    let student = student.map(|s| panel(s, t, &ids));
    let kl_teacher_student = student
        .as_ref()
        .filter(|(_, sfull)| sfull[0].len() == tfull[0].len())
        .map(|(_, sfull)| [kl(&tfull[0], &sfull[0]), kl(&tfull[1], &sfull[1])]);
    TemperatureView { t, ids, teacher: tp, student: student.map(|(p, _)| p), kl_teacher_student }
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
    fn the_view_keeps_the_teachers_t1_rows_and_measures_the_flattening() {
        // The example the workbench exists to show: cat 97%, dog 2%… against cat 45%, dog 35%….
        let teacher = [5.0f32, 1.1, 0.3, -2.0];
        let student = [4.0f32, 1.5, 0.0, -1.0];
        let v = temperature_view(&teacher, Some(&student), [1.0, 5.0], 3);
        assert_eq!(v.ids, vec![0, 1, 2], "the teacher's T1 ranking");
        let t = &v.teacher;
        assert!(t.probs[0][0] > 0.95 && t.probs[1][0] < 0.5, "{:?}", t.probs);
        assert!(t.entropy[1] > t.entropy[0]);
        let p1 = softmax_at(&teacher, 1.0);
        let p5 = softmax_at(&teacher, 5.0);
        assert!((t.kl_t1_t2 - kl(&p1, &p5)).abs() < 1e-15 && t.kl_t1_t2 > 0.0);
        // numpy: sum(p1 * log(p1 / p5)) for these logits
        let expected: f64 = p1.iter().zip(&p5).map(|(a, b)| a * (a / b).ln()).sum();
        assert!((t.kl_t1_t2 - expected).abs() < 1e-15);
        let s = v.student.as_ref().unwrap();
        assert_eq!(s.probs[0].len(), 3, "the student is read on the teacher's rows");
        let [k1, k5] = v.kl_teacher_student.unwrap();
        assert!(k1 > 0.0 && k5 > 0.0 && k5 < k1, "softened distributions are closer: {k1} {k5}");
        assert_eq!(kl(&p1, &p1), 0.0);
    }

    #[test]
    fn the_rank_curve_spans_the_vocabulary_on_a_log_scale() {
        let logits: Vec<f32> = (0..49_152).map(|i| -(i as f32).sqrt() / 20.0).collect();
        let p = softmax_at(&logits, 1.0);
        let c = rank_curve(&p, 48);
        assert_eq!(c.first().unwrap().0, 1);
        assert_eq!(c.last().unwrap().0, 49_152);
        assert!(c.len() > 30 && c.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 >= w[1].1));
        let hot = rank_curve(&softmax_at(&logits, 5.0), 48);
        assert!(hot[0].1 < c[0].1 && hot.last().unwrap().1 > c.last().unwrap().1, "T=5 is flatter");
    }

    #[test]
    fn uniform_entropy_is_log_n() {
        let s = soften(&[0.0f32; 8], 3.0, 8);
        assert!((s.entropy - 8f64.ln()).abs() < 1e-12);
        assert!((s.top_mass - 1.0).abs() < 1e-12);
    }
}
