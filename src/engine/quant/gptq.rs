//! GPTQ (Frantar et al. 2022): rounding with error feedback from calibration activations.
//!
//! A linear layer's output error from a weight error `Δw` (one row) over calibration inputs `X` is
//! `‖Δw Xᵀ‖² = Δw H Δwᵀ` with the Gram matrix `H = Σ x xᵀ` of the layer's inputs. Round-to-nearest
//! minimises `Σ Δw²`; GPTQ rounds the columns one at a time and, after each, moves the rest of the
//! row to absorb that column's rounding error as well as `H` allows (the optimal brain surgeon
//! update): with `U` the upper Cholesky factor of `H⁻¹`, column `j`'s error `e = (w_j − q_j)/U_jj`
//! changes every later column `k` by `−e·U_jk`. Options as in the reference implementation:
//! dampening (`H + λ·mean(diag H)·I`, λ = 0.01), act-order (columns in decreasing `H_jj`, group
//! parameters then fitted on the original weights: "static groups"), and columns no calibration
//! token reached (`H_jj = 0`) rounded plainly without feedback.
//!
//! Rows are independent given `U`, so they run in parallel, in blocks that share each row of `U`
//! while it is in cache. `U` comes from one Cholesky factorisation and one triangular inverse: with
//! `J` the reversal permutation and `J H J = L Lᵀ`, `H⁻¹ = Mᵀ M` where `M = J L⁻¹ J` is upper
//! triangular, i.e. `U = M`.

use super::format::IntFormat;
use super::own::{self, IntTensor};
use crate::engine::kernels::vmath::with_wide_simd;
use crate::engine::{Error, Result};
use rayon::prelude::*;

/// GPTQ's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GptqOptions {
    /// Dampening as a fraction of the mean diagonal of `H`.
    pub damp: f64,
    /// Columns in decreasing order of `H_jj` (their activations' energy).
    pub act_order: bool,
}

impl Default for GptqOptions {
    fn default() -> Self {
        Self { damp: 0.01, act_order: true }
    }
}

/// The Gram matrix `Σ x xᵀ` of a linear layer's inputs over the calibration tokens.
#[derive(Clone, Debug)]
pub struct Hessian {
    /// Input columns.
    pub n: usize,
    /// `[n, n]` row-major.
    pub data: Vec<f64>,
    /// Calibration rows (tokens) summed.
    pub tokens: usize,
}

impl Hessian {
    pub fn diagonal(&self) -> Vec<f64> {
        (0..self.n).map(|j| self.data[j * self.n + j]).collect()
    }

    /// `Σ_rows Δw H Δwᵀ` for `Δ = a − b` (`[rows, n]`): the layer's summed squared output error
    /// over the calibration inputs when `b` replaces `a`.
    pub fn weighted_error(&self, a: &[f32], b: &[f32]) -> f64 {
        let n = self.n;
        a.par_chunks(n)
            .zip(b.par_chunks(n))
            .map(|(ra, rb)| {
                let d: Vec<f64> = ra.iter().zip(rb).map(|(&x, &y)| x as f64 - y as f64).collect();
                (0..n).map(|i| d[i] * dot64(&self.data[i * n..(i + 1) * n], &d)).sum::<f64>()
            })
            .sum()
    }
}

fn dot64(a: &[f64], b: &[f64]) -> f64 {
    // Four accumulators so the compiler can keep them in vector registers.
    let mut acc = [0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..4 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f64>() + ta.iter().zip(tb).map(|(x, y)| x * y).sum::<f64>()
}

/// In place: the lower Cholesky factor of the symmetric `[n, n]` matrix `a` (upper part zeroed).
/// `false` when `a` is not positive definite.
fn cholesky_lower(a: &mut [f64], n: usize) -> bool {
    for j in 0..n {
        let (row_j, below) = a[j * n..].split_at_mut(n);
        let d = row_j[j] - dot64(&row_j[..j], &row_j[..j]);
        if d.is_nan() || d <= 0.0 || !d.is_finite() {
            return false;
        }
        let ljj = d.sqrt();
        row_j[j] = ljj;
        row_j[j + 1..].fill(0.0);
        let lj = &row_j[..j];
        // Column j below the diagonal, rows in parallel (each reads only row j and itself).
        below.par_chunks_mut(n).for_each(|row_i| {
            row_i[j] = (row_i[j] - dot64(&row_i[..j], lj)) / ljj;
        });
    }
    true
}

/// `L⁻¹` of a lower triangular `[n, n]` matrix, columns in parallel.
fn lower_inverse(l: &[f64], n: usize) -> Vec<f64> {
    let columns: Vec<Vec<f64>> = (0..n)
        .into_par_iter()
        .map(|c| {
            // x = L⁻¹ e_c: zero above c, forward substitution below.
            let mut x = vec![0f64; n];
            x[c] = 1.0 / l[c * n + c];
            for i in c + 1..n {
                x[i] = -dot64(&l[i * n + c..i * n + i], &x[c..i]) / l[i * n + i];
            }
            x
        })
        .collect();
    let mut inv = vec![0f64; n * n];
    for (c, x) in columns.iter().enumerate() {
        for i in c..n {
            inv[i * n + c] = x[i];
        }
    }
    inv
}

/// The upper Cholesky factor `U` of `(H + damping)⁻¹` (`[n, n]` row-major, f32), with `h` given
/// in processing order. Dead columns (`H_jj = 0`) get a unit diagonal and so no feedback. If `H` is
/// not positive definite the dampening grows tenfold, up to three times.
pub fn inverse_cholesky_upper(h: &[f64], n: usize, damp: f64) -> Result<Vec<f32>> {
    if h.len() != n * n {
        return Err(Error::Invalid(format!("GPTQ: a Hessian of {} values for {n} columns", h.len())));
    }
    let mean_diag = (0..n).map(|j| h[j * n + j]).sum::<f64>() / n.max(1) as f64;
    let mut lambda = damp * mean_diag;
    for _ in 0..4 {
        // J H J: both orders reversed.
        let mut a = vec![0f64; n * n];
        for i in 0..n {
            for j in 0..n {
                a[(n - 1 - i) * n + (n - 1 - j)] = h[i * n + j];
            }
        }
        for j in 0..n {
            let d = &mut a[j * n + j];
            if *d == 0.0 {
                *d = 1.0;
            }
            *d += lambda;
        }
        if cholesky_lower(&mut a, n) {
            let inv = lower_inverse(&a, n);
            // U = J L⁻¹ J.
            let mut u = vec![0f32; n * n];
            for i in 0..n {
                for j in i..n {
                    u[i * n + j] = inv[(n - 1 - i) * n + (n - 1 - j)] as f32;
                }
            }
            return Ok(u);
        }
        lambda = if lambda > 0.0 { lambda * 10.0 } else { 1e-6 * mean_diag.max(1e-12) };
    }
    Err(Error::Invalid(format!(
        "GPTQ: the calibration Hessian ({n} columns) is not positive definite even with dampening {lambda:.3e}; \
         calibrate on more text"
    )))
}

/// Rows processed together: each row of `U` is read once per block.
const ROW_BLOCK: usize = 8;

/// The error-feedback core. `w` is `[rows, cols]` in processing order and `u` the upper Cholesky
/// factor of `H⁻¹` in the same order. For each column `j` of each row, `round(state, j, row)`
/// returns the value column `j` is stored as, given the row's current values (columns from `j` on
/// carry the feedback so far); the rounding error, divided by `U_jj`, is then spread over the later
/// columns. `states` holds one per row. On return `w` holds the rounded values.
pub fn error_feedback<S: Send>(
    w: &mut [f32],
    cols: usize,
    u: &[f32],
    states: &mut [S],
    round: impl Fn(&mut S, usize, &[f32]) -> f32 + Sync,
) {
    w.par_chunks_mut(cols * ROW_BLOCK).zip(states.par_chunks_mut(ROW_BLOCK)).for_each(|(block, states)| {
        with_wide_simd(
            #[inline(always)]
            || {
                for j in 0..cols {
                    let u_row = &u[j * cols..(j + 1) * cols];
                    let d = u_row[j];
                    for (row, state) in block.chunks_mut(cols).zip(states.iter_mut()) {
                        let q = round(state, j, row);
                        let err = (row[j] - q) / d;
                        row[j] = q;
                        for (x, &uk) in row[j + 1..].iter_mut().zip(&u_row[j + 1..]) {
                            *x -= err * uk;
                        }
                    }
                }
            },
        )
    });
}

/// One row's output in an own integer format.
struct IntRow {
    codes: Vec<u8>,
    scales: Vec<f32>,
    mins: Vec<f32>,
}

/// What GPTQ needs of one Hessian, computed once for every layer that shares it.
pub struct Prepared {
    /// Processing order of the columns (act-order or identity).
    pub perm: Vec<usize>,
    /// Upper Cholesky factor of the dampened `H⁻¹`, in processing order.
    pub u: Vec<f32>,
    /// `H`'s diagonal (the importance the group parameters are fitted with), in column order.
    pub importance: Vec<f32>,
    pub act_order: bool,
}

impl Prepared {
    pub fn new(h: &Hessian, opts: GptqOptions) -> Result<Self> {
        let cols = h.n;
        if h.data.len() != cols * cols {
            return Err(Error::Invalid(format!("GPTQ: a Hessian of {} values for {cols} columns", h.data.len())));
        }
        let diag = h.diagonal();
        let mut perm: Vec<usize> = (0..cols).collect();
        if opts.act_order {
            // Decreasing energy; ties in column order, so the order is deterministic.
            perm.sort_by(|&a, &b| diag[b].total_cmp(&diag[a]).then(a.cmp(&b)));
        }
        let u = if opts.act_order {
            let mut hp = vec![0f64; cols * cols];
            for (i, &pi) in perm.iter().enumerate() {
                for (j, &pj) in perm.iter().enumerate() {
                    hp[i * cols + j] = h.data[pi * cols + pj];
                }
            }
            inverse_cholesky_upper(&hp, cols, opts.damp)?
        } else {
            inverse_cholesky_upper(&h.data, cols, opts.damp)?
        };
        let importance = diag.iter().map(|&d| d as f32).collect();
        Ok(Self { perm, u, importance, act_order: opts.act_order })
    }

    pub fn cols(&self) -> usize {
        self.perm.len()
    }

    /// `w`'s rows (`cols` wide) with their columns in processing order, once the Hessian is
    /// checked to be of `cols` columns.
    pub fn permuted(&self, w: &[f32], cols: usize) -> Result<Vec<f32>> {
        if self.cols() != cols {
            return Err(Error::Invalid(format!(
                "GPTQ: a Hessian of {} columns for a weight with {cols} columns; recalibrate on this model",
                self.cols()
            )));
        }
        let mut wp = vec![0f32; w.len()];
        for (dst, src) in wp.chunks_mut(cols).zip(w.chunks(cols)) {
            for (d, &c) in dst.iter_mut().zip(&self.perm) {
                *d = src[c];
            }
        }
        Ok(wp)
    }
}

/// GPTQ into an own integer format: `w` row-major `[rows, cols]`, `p` prepared from the Gram
/// matrix of its inputs. Group parameters are fitted with the own formats' importance-weighted
/// search (the importance being `H`'s diagonal): on the error-updated weights when a group starts,
/// or, with act-order, on the original weights beforehand.
pub fn quantize_int(w: &[f32], rows: usize, cols: usize, format: IntFormat, p: &Prepared) -> Result<IntTensor> {
    let group = format.group.unwrap_or(cols);
    if w.len() != rows * cols || cols == 0 || !cols.is_multiple_of(group) {
        return Err(Error::Invalid(format!(
            "GPTQ: cannot quantize a [{rows}, {cols}] weight ({} values) with groups of {group}",
            w.len()
        )));
    }
    let mut wp = p.permuted(w, cols)?;
    let (perm, importance) = (&p.perm, &p.importance);
    let groups = cols / group;
    let mut states: Vec<IntRow> = (0..rows)
        .into_par_iter()
        .map(|r| {
            let mut st = IntRow { codes: vec![0; cols], scales: vec![0.0; groups], mins: vec![0.0; groups] };
            if p.act_order {
                // Static groups: fitted on the original weights.
                for g in 0..groups {
                    let span = g * group..(g + 1) * group;
                    let (s, m) = own::fit_group(&w[r * cols..][span.clone()], format, Some(&importance[span]));
                    st.scales[g] = s;
                    st.mins[g] = m;
                }
            }
            st
        })
        .collect();
    error_feedback(&mut wp, cols, &p.u, &mut states, |st, j, row| {
        let c = perm[j];
        let g = c / group;
        if !p.act_order && c % group == 0 {
            // The group starts here (processing order = column order): fit on the current values.
            let span = c..c + group;
            let (s, m) = own::fit_group(&row[j..j + group], format, Some(&importance[span]));
            st.scales[g] = s;
            st.mins[g] = m;
        }
        let code = own::encode_one(row[j], st.scales[g], st.mins[g], format);
        st.codes[c] = code;
        own::decode_one(code, st.scales[g], st.mins[g], format)
    });
    let mut codes = Vec::with_capacity(rows * cols);
    let (mut scales, mut mins) = (Vec::with_capacity(rows * groups), Vec::new());
    for st in states {
        codes.extend_from_slice(&st.codes);
        scales.extend_from_slice(&st.scales);
        if !format.symmetric {
            mins.extend_from_slice(&st.mins);
        }
    }
    Ok(IntTensor { format, shape: (rows, cols), codes, scales, mins })
}
