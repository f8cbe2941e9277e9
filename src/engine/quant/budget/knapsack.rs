//! The allocation of a budget: which option each matrix takes so that the bytes fit and the summed
//! KL is least (a greedy multiple-choice knapsack over each matrix's lower convex hull).

use super::Candidate;
use crate::engine::quant::QuantFormat;

/// Greedy multiple-choice knapsack: option indices per matrix whose extra bytes over the smallest
/// options fit `room`, taking upgrades along each matrix's lower convex hull of (bytes, KL) in
/// order of KL removed per byte.
pub(super) fn allocate(cands: &[Candidate], kls: &[Vec<f64>], room: u64) -> Vec<usize> {
    let hulls: Vec<Vec<usize>> = cands.iter().zip(kls).map(|(c, k)| hull(&c.options, k)).collect();
    let mut at = vec![0usize; cands.len()]; // position on the hull
    let base: u64 = cands.iter().map(|c| c.options[0].1).sum();
    let mut left = room.saturating_sub(base);
    let mut open: Vec<bool> = hulls.iter().map(|h| h.len() > 1).collect();
    loop {
        let mut best: Option<(usize, f64)> = None;
        for i in 0..cands.len() {
            if !open[i] {
                continue;
            }
            let (a, b) = (hulls[i][at[i]], hulls[i][at[i] + 1]);
            let db = cands[i].options[b].1 - cands[i].options[a].1;
            let gain = (kls[i][a] - kls[i][b]) / db.max(1) as f64;
            if best.is_none_or(|(_, g)| gain > g) {
                best = Some((i, gain));
            }
        }
        let Some((i, _)) = best else { break };
        let (a, b) = (hulls[i][at[i]], hulls[i][at[i] + 1]);
        let db = cands[i].options[b].1 - cands[i].options[a].1;
        if db <= left {
            left -= db;
            at[i] += 1;
            open[i] = at[i] + 1 < hulls[i].len();
        } else {
            open[i] = false;
        }
    }
    (0..cands.len()).map(|i| hulls[i][at[i]]).collect()
}

/// Indices of the options on the lower convex hull of (bytes, KL), smallest first: each step on it
/// removes less KL per byte than the one before, and no option off it is worth its bytes.
fn hull(options: &[(QuantFormat, u64)], kls: &[f64]) -> Vec<usize> {
    let mut h: Vec<usize> = Vec::new();
    for j in 0..options.len() {
        // An option worse than a cheaper one on the hull is never worth taking (an equal one is, last,
        // when bytes are left).
        if h.last().is_some_and(|&l| kls[j] > kls[l]) {
            continue;
        }
        let gain = |a: usize, b: usize| (kls[a] - kls[b]) / (options[b].1 - options[a].1).max(1) as f64;
        while h.len() >= 2 && gain(h[h.len() - 2], h[h.len() - 1]) <= gain(h[h.len() - 1], j) {
            h.pop();
        }
        h.push(j);
    }
    h
}
