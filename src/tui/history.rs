//! A bounded time series for live charts. A long run must not grow memory or redraw cost without
//! bound, so instead of dropping old points (which would hide the start of the curve) the series
//! halves its resolution when full, as burn-train's metric history does: every other point is
//! dropped and from then on only every `stride`-th pushed point is kept.

/// Points `(x, y)` in push order, at most `capacity` of them.
#[derive(Clone, Debug)]
pub struct History {
    points: Vec<(f64, f64)>,
    capacity: usize,
    stride: usize,
    pushed: usize,
    last: Option<(f64, f64)>,
}

impl History {
    /// `capacity` is rounded up to an even number of at least 2.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(2).div_ceil(2) * 2;
        Self { points: Vec::with_capacity(capacity), capacity, stride: 1, pushed: 0, last: None }
    }

    pub fn push(&mut self, x: f64, y: f64) {
        if !y.is_finite() {
            return;
        }
        self.last = Some((x, y));
        self.pushed += 1;
        if !(self.pushed - 1).is_multiple_of(self.stride) {
            return;
        }
        if self.points.len() == self.capacity {
            let kept: Vec<(f64, f64)> = self.points.iter().copied().step_by(2).collect();
            self.points = kept;
            self.stride *= 2;
            if !(self.pushed - 1).is_multiple_of(self.stride) {
                return;
            }
        }
        self.points.push((x, y));
    }

    /// Drops the points past `x` (a run continued from an earlier step replaces what followed it).
    pub fn truncate_after(&mut self, x: f64) {
        if self.last.is_none_or(|(lx, _)| lx <= x) {
            return;
        }
        let kept: Vec<(f64, f64)> = self.points().into_iter().filter(|p| p.0 <= x).collect();
        *self = Self::new(self.capacity);
        for (px, py) in kept {
            self.push(px, py);
        }
    }

    /// The kept points plus the latest one, so the curve always reaches the current step.
    pub fn points(&self) -> Vec<(f64, f64)> {
        let mut out = self.points.clone();
        if let Some(last) = self.last {
            if out.last() != Some(&last) {
                out.push(last);
            }
        }
        out
    }

    pub fn last(&self) -> Option<(f64, f64)> {
        self.last
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_none()
    }

    /// Number of points pushed since the start (not the number kept).
    pub fn pushed(&self) -> usize {
        self.pushed
    }

    /// (min, max) of the y values, or `None` when empty.
    pub fn y_range(&self) -> Option<(f64, f64)> {
        self.points().iter().map(|p| p.1).fold(None, |acc, y| match acc {
            None => Some((y, y)),
            Some((lo, hi)) => Some((lo.min(y), hi.max(y))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_bounded_and_keeps_the_ends() {
        let mut h = History::new(8);
        for i in 0..1000 {
            h.push(i as f64, (i * 2) as f64);
        }
        let p = h.points();
        assert!(p.len() <= 9, "{} points", p.len());
        assert_eq!(p[0], (0.0, 0.0));
        assert_eq!(*p.last().unwrap(), (999.0, 1998.0));
        assert!(p.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(h.pushed(), 1000);
    }

    #[test]
    fn spacing_is_uniform_after_halving() {
        let mut h = History::new(4);
        for i in 0..16 {
            h.push(i as f64, 1.0);
        }
        let xs: Vec<f64> = h.points.iter().map(|p| p.0).collect();
        assert_eq!(xs, vec![0.0, 4.0, 8.0, 12.0]);
    }

    #[test]
    fn truncation_drops_what_a_resumed_run_replaces() {
        let mut h = History::new(16);
        for i in 1..=10 {
            h.push(i as f64, i as f64);
        }
        h.truncate_after(6.0);
        assert_eq!(h.last(), Some((6.0, 6.0)));
        assert_eq!(h.points().len(), 6);
        h.push(7.0, 70.0);
        assert!(h.points().iter().all(|p| p.0 <= 7.0) && h.last() == Some((7.0, 70.0)));
    }

    #[test]
    fn ignores_non_finite_values() {
        let mut h = History::new(4);
        h.push(0.0, f64::NAN);
        assert!(h.is_empty());
        h.push(1.0, 2.0);
        assert_eq!(h.y_range(), Some((2.0, 2.0)));
    }
}
