//! The orders of the points table (a column, best first) and the points of several runs in one
//! list, each labelled with its run.

use super::{Origin, Point};
use serde::Serialize;

/// A column of the points table, in the order the table shows them; the Compare screen and
/// `distill-tui compare --sort` sort by any of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Column {
    Run,
    Point,
    Size,
    Perplexity,
    Top1,
    Kl,
    Agreement,
    Decode,
    Cost,
    Path,
}

impl Column {
    pub const ALL: [Column; 10] = [
        Self::Run,
        Self::Point,
        Self::Size,
        Self::Perplexity,
        Self::Top1,
        Self::Kl,
        Self::Agreement,
        Self::Decode,
        Self::Cost,
        Self::Path,
    ];

    /// The column's name as the table heads it and `--sort` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Run => "run",
            Self::Point => "point",
            Self::Size => "size",
            Self::Perplexity => "ppl",
            Self::Top1 => "top1",
            Self::Kl => "kl",
            Self::Agreement => "agree",
            Self::Decode => "decode",
            Self::Cost => "cost",
            Self::Path => "path",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name().eq_ignore_ascii_case(name.trim()))
    }

    pub fn next(self) -> Self {
        let i = Self::ALL.iter().position(|c| *c == self).unwrap_or(0);
        Self::ALL[(i + 1) % Self::ALL.len()]
    }

    /// The natural order of the column: best first for the quality columns (lower perplexity and
    /// KL, higher top-1 and agreement), smallest first for size, alphabetical for names.
    fn compare(self, a: &Point, b: &Point) -> std::cmp::Ordering {
        match self {
            Self::Run => a.run.cmp(&b.run).then(a.origin.cmp(&b.origin)).then(b.bytes.cmp(&a.bytes)),
            Self::Point => a.origin.cmp(&b.origin).then(a.format.cmp(&b.format)).then(a.run.cmp(&b.run)),
            Self::Size => a.bytes.cmp(&b.bytes),
            Self::Perplexity => a.perplexity.total_cmp(&b.perplexity),
            Self::Top1 => b.top1_accuracy.total_cmp(&a.top1_accuracy),
            Self::Kl => a.kl.total_cmp(&b.kl),
            Self::Agreement => b.agreement.total_cmp(&a.agreement),
            // Fastest first; unmeasured last.
            Self::Decode => {
                b.decode_tokens_per_second.unwrap_or(-1.0).total_cmp(&a.decode_tokens_per_second.unwrap_or(-1.0))
            }
            Self::Cost => a.cost_seconds.unwrap_or(f64::INFINITY).total_cmp(&b.cost_seconds.unwrap_or(f64::INFINITY)),
            Self::Path => a.path().cmp(b.path()),
        }
    }
}

/// Sorts `points` by `column` (its natural order, reversed with `reverse`); ties keep their order.
pub fn sort_points(points: &mut [Point], column: Column, reverse: bool) {
    points.sort_by(|a, b| {
        let o = column.compare(a, b);
        if reverse {
            o.reverse()
        } else {
            o
        }
    });
}

/// The points of several runs in one list, each labelled with its run; the float teacher and its
/// quantized points, measured identically by every run of a sweep, are kept once (unlabelled).
pub fn merge_runs(runs: &[(String, Vec<Point>)]) -> Vec<Point> {
    let mut out: Vec<Point> = Vec::new();
    for (label, points) in runs {
        for p in points {
            let shared = p.origin == Origin::Teacher
                && out.iter().any(|q| {
                    q.origin == Origin::Teacher
                        && q.format == p.format
                        && q.bytes == p.bytes
                        && q.perplexity.to_bits() == p.perplexity.to_bits()
                });
            if shared {
                continue;
            }
            let run = if p.origin == Origin::Teacher && runs.iter().all(|(_, ps)| same_teacher(ps, p)) {
                String::new()
            } else {
                label.clone()
            };
            out.push(Point { run, ..p.clone() });
        }
    }
    out
}

/// Whether `points` hold the same teacher point as `p` (or no teacher point in `p`'s format).
fn same_teacher(points: &[Point], p: &Point) -> bool {
    points
        .iter()
        .filter(|q| q.origin == Origin::Teacher && q.format == p.format)
        .all(|q| q.bytes == p.bytes && q.perplexity.to_bits() == p.perplexity.to_bits())
}
