//! Classification metrics on class logits: accuracy, macro-F1, KL to the teacher and agreement
//! with it (both at T = 1), and the mean cross-entropy of the labels.

use serde::{Deserialize, Serialize};

/// Held-out metrics of one classifier.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    pub accuracy: f64,
    /// Mean over classes of F1 (a class never predicted nor present counts 0).
    pub macro_f1: f64,
    /// Mean cross-entropy of the true labels (nats).
    pub cross_entropy: f64,
    /// Mean KL(teacher ‖ model) per example; absent without a teacher.
    pub kl_to_teacher: Option<f64>,
    /// Share of examples where model and teacher predict the same class; absent without a teacher.
    pub agreement: Option<f64>,
}

/// Index of the largest value (the first on ties).
pub fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().fold(0, |best, (i, &v)| if v > row[best] { i } else { best })
}

/// log-softmax of one row, in f64.
pub fn log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let lse = max + row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
    row.iter().map(|&v| v as f64 - lse).collect()
}

/// Macro-averaged F1 of `predicted` against `labels` over `classes` classes.
pub fn macro_f1(predicted: &[usize], labels: &[usize], classes: usize) -> f64 {
    if classes == 0 {
        return 0.0;
    }
    let mut f1 = 0.0;
    for c in 0..classes {
        let tp = predicted.iter().zip(labels).filter(|(p, l)| **p == c && **l == c).count() as f64;
        let fp = predicted.iter().zip(labels).filter(|(p, l)| **p == c && **l != c).count() as f64;
        let fn_ = predicted.iter().zip(labels).filter(|(p, l)| **p != c && **l == c).count() as f64;
        if tp > 0.0 {
            f1 += 2.0 * tp / (2.0 * tp + fp + fn_);
        }
    }
    f1 / classes as f64
}

/// Metrics of `logits` (one row per example) against `labels`, and against `teacher` logits.
pub fn class_metrics(logits: &[Vec<f32>], labels: &[usize], teacher: Option<&[Vec<f32>]>) -> ClassMetrics {
    let n = logits.len().max(1) as f64;
    let classes = logits.first().map(Vec::len).unwrap_or(0);
    let predicted: Vec<usize> = logits.iter().map(|r| argmax(r)).collect();
    let correct = predicted.iter().zip(labels).filter(|(p, l)| p == l).count() as f64;
    let cross_entropy = logits.iter().zip(labels).map(|(r, &l)| -log_softmax(r)[l]).sum::<f64>() / n;
    let (kl_to_teacher, agreement) = match teacher {
        Some(t) => {
            let kl: f64 = t
                .iter()
                .zip(logits)
                .map(|(tr, sr)| {
                    let (lt, ls) = (log_softmax(tr), log_softmax(sr));
                    lt.iter().zip(&ls).map(|(a, b)| a.exp() * (a - b)).sum::<f64>()
                })
                .sum();
            let same = t.iter().zip(&predicted).filter(|(tr, p)| argmax(tr) == **p).count() as f64;
            (Some(kl / n), Some(same / n))
        }
        None => (None, None),
    };
    ClassMetrics {
        accuracy: correct / n,
        macro_f1: macro_f1(&predicted, labels, classes),
        cross_entropy,
        kl_to_teacher,
        agreement,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macro_f1_matches_a_hand_count() {
        // class 0: tp 1, fp 1, fn 1 → 0.5; class 1: tp 1, fp 0, fn 1 → 2/3; class 2: tp 1, fp 1, fn 0 → 2/3.
        let f1 = macro_f1(&[0, 0, 1, 2, 2], &[0, 1, 1, 2, 0], 3);
        assert!((f1 - (0.5 + 2.0 / 3.0 + 2.0 / 3.0) / 3.0).abs() < 1e-12, "{f1}");
    }

    #[test]
    fn identical_logits_have_zero_kl_and_full_agreement() {
        let l = vec![vec![2.0, 0.5, -1.0], vec![0.0, 3.0, 1.0]];
        let m = class_metrics(&l, &[0, 2], Some(&l));
        assert!(m.kl_to_teacher.unwrap().abs() < 1e-12);
        assert_eq!(m.agreement, Some(1.0));
        assert_eq!(m.accuracy, 0.5);
        let other = vec![vec![0.0, 0.0, 0.0], vec![0.0, 3.0, 1.0]];
        let m = class_metrics(&other, &[0, 2], Some(&l));
        assert!(m.kl_to_teacher.unwrap() > 0.1);
    }
}
