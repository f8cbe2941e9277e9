//! The key/value cache of generation for f32 on the CPU: per layer, keys and values in host
//! buffers laid out `[b, kv_heads, capacity, d]` that grow by doubling and are appended in place,
//! and one decoding step's attention read straight from them (one task per sequence and query
//! head: scores against every cached key, softmax, the weighted sum of the values).
//!
//! Through candle ops every decoded token concatenated each layer's whole cache into fresh tensors
//! (a copy of everything seen so far, on pages the kernel had to zero), copied the key/value heads
//! out to every query head, and ran two one-row products per head: at a 512-token context that
//! was most of a decoding step.

use super::vmath;
use rayon::prelude::*;

/// Multiply-adds of one attention step from which its heads are split over the threads.
const PARALLEL_WORK: usize = 1 << 18;

/// One layer's cached keys and values.
#[derive(Clone, Debug)]
pub struct HostKv {
    b: usize,
    kv: usize,
    d: usize,
    cap: usize,
    len: usize,
    k: Vec<f32>,
    v: Vec<f32>,
}

impl HostKv {
    /// An empty cache for `b` sequences of `kv` key/value heads of width `d`.
    pub fn new(b: usize, kv: usize, d: usize) -> Self {
        Self { b, kv, d, cap: 0, len: 0, k: Vec::new(), v: Vec::new() }
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The shape this cache holds: `(b, kv_heads, d)`.
    pub fn dims(&self) -> (usize, usize, usize) {
        (self.b, self.kv, self.d)
    }

    /// Bytes of the buffers (their capacity, keys and values).
    pub fn bytes(&self) -> usize {
        2 * self.b * self.kv * self.cap * self.d * std::mem::size_of::<f32>()
    }

    /// Offset of position `pos` of head `h` in sequence `s`.
    fn at(&self, s: usize, h: usize, pos: usize) -> usize {
        ((s * self.kv + h) * self.cap + pos) * self.d
    }

    fn grow(&mut self, need: usize) {
        let cap = need.max(2 * self.cap).max(16);
        let (b, kv, d) = (self.b, self.kv, self.d);
        let mut k = vec![0f32; b * kv * cap * d];
        let mut v = vec![0f32; b * kv * cap * d];
        for s in 0..b {
            for h in 0..kv {
                let (from, to) = (self.at(s, h, 0), ((s * kv + h) * cap) * d);
                let n = self.len * d;
                k[to..to + n].copy_from_slice(&self.k[from..from + n]);
                v[to..to + n].copy_from_slice(&self.v[from..from + n]);
            }
        }
        (self.k, self.v, self.cap) = (k, v, cap);
    }

    /// Appends `t` positions of keys and values, each given `[b, t, kv_heads, d]` row-major.
    pub fn append(&mut self, k: &[f32], v: &[f32], t: usize) {
        let (b, kv, d) = (self.b, self.kv, self.d);
        assert_eq!(k.len(), b * t * kv * d, "keys [b, t, kv_heads, d]");
        assert_eq!(v.len(), k.len(), "values like the keys");
        if self.len + t > self.cap {
            self.grow(self.len + t);
        }
        for s in 0..b {
            for i in 0..t {
                for h in 0..kv {
                    let from = ((s * t + i) * kv + h) * d;
                    let to = self.at(s, h, self.len + i);
                    self.k[to..to + d].copy_from_slice(&k[from..from + d]);
                    self.v[to..to + d].copy_from_slice(&v[from..from + d]);
                }
            }
        }
        self.len += t;
    }

    /// Causal attention of the queries of the last `t` positions (`q` `[b, t, heads, d]`, `heads`
    /// a multiple of the cache's key/value heads) against every position cached: query `i` sees
    /// positions `0..=len - t + i`. Returns `[b, t, heads, d]`.
    pub fn attend(&self, q: &[f32], t: usize, heads: usize, scale: f32) -> Vec<f32> {
        let (b, kv, d) = (self.b, self.kv, self.d);
        assert!(t <= self.len && heads % kv == 0, "attend: {t} queries, {} cached, {heads} heads", self.len);
        assert_eq!(q.len(), b * t * heads * d, "queries [b, t, heads, d]");
        let rep = heads / kv;
        let one = |task: usize| -> Vec<f32> {
            let (s, h) = (task / heads, task % heads);
            let base = self.at(s, h / rep, 0);
            let mut out = vec![0f32; t * d];
            let mut scores = vec![0f32; self.len];
            vmath::with_wide_simd(
                #[inline(always)]
                || {
                    for (i, row) in out.chunks_exact_mut(d).enumerate() {
                        let qi = &q[((s * t + i) * heads + h) * d..][..d];
                        let seen = self.len - t + i + 1;
                        let scores = &mut scores[..seen];
                        for (j, x) in scores.iter_mut().enumerate() {
                            let kj = &self.k[base + j * d..][..d];
                            *x = vmath::sum_map2(qi, kj, |a, b| a * b) as f32 * scale;
                        }
                        let max = vmath::max(scores);
                        for x in scores.iter_mut() {
                            *x = vmath::exp(*x - max);
                        }
                        let inv = 1.0 / vmath::sum_map(scores, |x| x) as f32;
                        for (j, &p) in scores.iter().enumerate() {
                            let vj = &self.v[base + j * d..][..d];
                            let p = p * inv;
                            for (o, &x) in row.iter_mut().zip(vj) {
                                *o += p * x;
                            }
                        }
                    }
                },
            );
            out
        };
        // A short cache is a few microseconds of work: the thread pool would cost more.
        let per_task: Vec<Vec<f32>> = if b * heads * t * self.len * d >= PARALLEL_WORK {
            (0..b * heads).into_par_iter().map(one).collect()
        } else {
            (0..b * heads).map(one).collect()
        };
        let mut out = vec![0f32; b * t * heads * d];
        for (task, rows) in per_task.iter().enumerate() {
            let (s, h) = (task / heads, task % heads);
            for (i, row) in rows.chunks_exact(d).enumerate() {
                out[((s * t + i) * heads + h) * d..][..d].copy_from_slice(row);
            }
        }
        out
    }
}
