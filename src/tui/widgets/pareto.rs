//! The accuracy-vs-size scatter: every measured point labelled with its model and format (and, with
//! several runs, the run's number, the legend under the chart naming each run), the Pareto front as
//! a line, and the points meeting the budget marked `$` (so a text capture shows it, not only a
//! colour). Drawn on a canvas so the labels sit at the points; the axes' ranges are in the title.

use crate::engine::tradeoff::{Cost, Metric, Origin, Point};
use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::canvas::{Canvas, Line as Segment, Points};
use ratatui::widgets::Widget;

/// One colour per run (the first for the points of a single run).
const COLORS: [Color; 6] =
    [Color::Cyan, Color::Yellow, Color::Magenta, Color::LightBlue, Color::LightRed, Color::White];

/// One plotted point: where, its label and colour.
struct Mark {
    xy: (f64, f64),
    label: String,
    color: Color,
    /// The model's initial and the format (`s`, `q4_0`), the run's number and the budget mark.
    kind: (char, String),
    tag: String,
    budget: &'static str,
}

/// The chart's data, built once per frame.
pub struct ParetoData {
    marks: Vec<Mark>,
    front: Vec<(f64, f64)>,
    /// The runs in the order they are numbered (empty: one run).
    runs: Vec<String>,
    x: [f64; 2],
    y: [f64; 2],
    cost: Cost,
}

fn initial(o: Origin) -> char {
    o.label().chars().next().unwrap_or('?')
}

/// The character cell (column, row from the top) of the braille dot a canvas of `w`×`h` cells draws
/// for `xy` (ratatui's mapping: the dot rounded on a `2w`×`4h` grid).
fn dot_cell(xy: (f64, f64), x: [f64; 2], y: [f64; 2], w: f64, h: f64) -> (usize, usize) {
    let fx = ((xy.0 - x[0]) / (x[1] - x[0])).clamp(0.0, 1.0);
    let fy = ((y[1] - xy.1) / (y[1] - y[0])).clamp(0.0, 1.0);
    ((fx * (2.0 * w - 1.0)).round() as usize / 2, (fy * (4.0 * h - 1.0)).round() as usize / 4)
}

impl ParetoData {
    pub fn new(points: &[Point], metric: Metric, front: &[bool], meets: &[bool]) -> Self {
        Self::on(points, Cost::Size, metric, front, meets)
    }

    /// The chart against `cost` (size or decode latency); points without a value on it are left
    /// out of the chart (the table keeps them).
    pub fn on(points: &[Point], cost: Cost, metric: Metric, front: &[bool], meets: &[bool]) -> Self {
        let kept: Vec<usize> = (0..points.len()).filter(|&i| cost.of(&points[i]).is_some()).collect();
        let points: Vec<Point> = kept.iter().map(|&i| points[i].clone()).collect();
        let front: Vec<bool> = kept.iter().map(|&i| front[i]).collect();
        let meets: Vec<bool> = kept.iter().map(|&i| meets[i]).collect();
        let (points, front, meets) = (&points[..], &front[..], &meets[..]);
        let xy = |p: &Point| (cost.of(p).unwrap_or(0.0), p.value(metric));
        let mut runs: Vec<String> = Vec::new();
        for p in points.iter().filter(|p| !p.run.is_empty()) {
            if !runs.contains(&p.run) {
                runs.push(p.run.clone());
            }
        }
        let marks = points
            .iter()
            .zip(meets)
            .map(|(p, admitted)| {
                let run = runs.iter().position(|r| *r == p.run);
                let tag = run.map(|i| (i + 1).to_string()).unwrap_or_default();
                let budget = if *admitted { "$" } else { "" };
                Mark {
                    xy: xy(p),
                    label: format!("{budget}{}{tag} {}", initial(p.origin), p.format),
                    kind: (initial(p.origin), p.format.clone()),
                    tag,
                    budget,
                    color: match (admitted, run) {
                        (true, _) => Color::Yellow,
                        (false, Some(i)) => COLORS[i % COLORS.len()],
                        (false, None) => Color::Cyan,
                    },
                }
            })
            .collect::<Vec<_>>();
        let mut on_front: Vec<(f64, f64)> = points.iter().zip(front).filter(|(_, f)| **f).map(|(p, _)| xy(p)).collect();
        on_front.sort_by(|a, b| a.0.total_cmp(&b.0));
        let span = |vals: Vec<f64>| {
            let lo = vals.iter().copied().filter(|v| v.is_finite()).fold(f64::INFINITY, f64::min);
            let hi = vals.iter().copied().filter(|v| v.is_finite()).fold(f64::NEG_INFINITY, f64::max);
            if !lo.is_finite() {
                return [0.0, 1.0];
            }
            let pad = ((hi - lo) * 0.08).max(hi.abs() * 0.02).max(1e-6);
            [(lo - pad).max(0.0), hi + pad]
        };
        let x = span(marks.iter().map(|m| m.xy.0).collect());
        let y = span(marks.iter().map(|m| m.xy.1).collect());
        Self { marks, front: on_front, runs, x, y, cost }
    }

    /// The legend: what the letters and numbers of the labels stand for.
    fn legend(&self) -> Line<'static> {
        let mut spans = vec![Span::styled("─ front ", Style::default().fg(Color::Green))];
        for (i, r) in self.runs.iter().enumerate() {
            spans.push(Span::styled(format!("{} {r} ", i + 1), Style::default().fg(COLORS[i % COLORS.len()])));
        }
        spans.push(Span::raw("· t teacher s student b baseline; $ in budget "));
        Line::from(spans)
    }

    /// The labels as drawn in a chart `area`: points that fall in one character cell share one
    /// label (`s1,2,3 float`), written beside the point (never over a point), on its row or the
    /// nearest free one.
    fn placed_labels(&self, area: Rect) -> Vec<(f64, f64, String, Color)> {
        // The cells the canvas prints a label at (ratatui's mapping: `(W - 1)` columns across the
        // x range, rows counted from the top), inside the panel's border.
        let (w, h) = (area.width.saturating_sub(2).max(2) as f64, area.height.saturating_sub(2).max(2) as f64);
        let (dx, dy) = ((self.x[1] - self.x[0]) / (w - 1.0), (self.y[1] - self.y[0]) / (h - 1.0));
        // A point's dot: the braille grid has 2×4 dots per cell, the dot rounded to the nearest.
        let cell = |m: &Mark| dot_cell(m.xy, self.x, self.y, w, h);
        let mut groups: Vec<((usize, usize), Vec<&Mark>)> = Vec::new();
        for m in &self.marks {
            let c = cell(m);
            match groups.iter_mut().find(|(g, _)| *g == c) {
                Some((_, ms)) => ms.push(m),
                None => groups.push((c, vec![m])),
            }
        }
        // Labels go left to right on the row of their point, or the nearest free row above or
        // below when another label is there; one with no free row nearby is left out (its point
        // stays, and the table names it).
        // Every point's cell, and every cell the front's line crosses, is taken from the start, so
        // no label covers the data.
        let mut taken: Vec<(usize, usize, usize)> = groups.iter().map(|((cx, cy), _)| (*cy, *cx, *cx + 1)).collect();
        for seg in self.front.windows(2) {
            let steps = 8 * (w + h) as usize;
            for i in 0..=steps {
                let t = i as f64 / steps as f64;
                let xy = (seg[0].0 + t * (seg[1].0 - seg[0].0), seg[0].1 + t * (seg[1].1 - seg[0].1));
                let (cx, cy) = dot_cell(xy, self.x, self.y, w, h);
                if !taken.contains(&(cy, cx, cx + 1)) {
                    taken.push((cy, cx, cx + 1));
                }
            }
        }
        let points = taken.len();
        let (cols, rows) = (w as usize, h as usize);
        let mut out = Vec::new();
        for ((cx, cy), ms) in groups {
            let same = ms.iter().all(|m| m.kind == ms[0].kind);
            let label = if same && ms.len() > 1 {
                let tags: Vec<&str> = ms.iter().map(|m| m.tag.as_str()).collect();
                format!("{}{}{} {}", ms[0].budget, ms[0].kind.0, tags.join(","), ms[0].kind.1)
            } else {
                ms.iter().map(|m| m.label.as_str()).collect::<Vec<_>>().join(" ")
            };
            let len = label.chars().count().min(cols);
            // Right of the point, or left of it at the right edge; on its row or the nearest free
            // one (labels keep a column apart from each other).
            let start = if cx + 1 + len <= cols { cx + 1 } else { cx.saturating_sub(len) };
            let free = |row: usize| {
                !taken.iter().enumerate().any(|(i, &(r, a, b))| {
                    let gap = usize::from(i >= points);
                    r == row && start < b + gap && a < start + len + gap
                })
            };
            let row = [0isize, 1, -1, 2, -2]
                .iter()
                .map(|d| cy as isize + d)
                .filter(|r| *r >= 0 && (*r as usize) < rows)
                .map(|r| r as usize)
                .find(|r| free(*r));
            let Some(row) = row else { continue };
            taken.push((row, start, start + len));
            // The cell's own corner (a hair inside it), kept within the bounds the canvas prints in.
            let x = (self.x[0] + (start as f64 + 1e-6) * dx).min(self.x[1]);
            let y = (self.y[1] - (row as f64 + 1e-6) * dy).max(self.y[0]);
            out.push((x, y, label, ms[0].color));
        }
        out
    }

    pub fn chart(&self, metric: Metric, area: Rect) -> impl Widget + '_ {
        let lab = |v: f64| if v >= 100.0 { format!("{v:.0}") } else { format!("{v:.2}") };
        let title = format!(
            "{} {}–{} vs {} {}–{} (x)",
            metric.label(),
            lab(self.y[0]),
            lab(self.y[1]),
            self.cost.label(),
            lab(self.x[0]),
            lab(self.x[1])
        );
        let labels = self.placed_labels(area);
        Canvas::default()
            .block(crate::tui::screens::panel(title).title_bottom(self.legend()))
            .marker(Marker::Braille)
            .x_bounds(self.x)
            .y_bounds(self.y)
            .paint(move |ctx| {
                for w in self.front.windows(2) {
                    let (a, b) = (w[0], w[1]);
                    ctx.draw(&Segment { x1: a.0, y1: a.1, x2: b.0, y2: b.1, color: Color::Green });
                }
                for m in &self.marks {
                    ctx.draw(&Points { coords: &[m.xy], color: m.color });
                }
                ctx.layer();
                for (x, y, label, color) in &labels {
                    ctx.print(*x, *y, Span::styled(label.clone(), Style::default().fg(*color)));
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(run: &str, origin: Origin, format: &str, mb: f64, ppl: f64) -> Point {
        Point { run: run.into(), ..Point::new(origin, format, mb, ppl) }
    }

    #[test]
    fn labels_name_run_and_format_and_never_cover_a_point() {
        let mut points =
            vec![point("", Origin::Teacher, "float", 8.0, 75.0), point("", Origin::Teacher, "q4_0", 1.3, 76.0)];
        for (i, run) in ["T=1", "T=2", "T=5"].iter().enumerate() {
            for (format, mb) in [("float", 4.8), ("q8_0", 1.28), ("q4_0", 0.88)] {
                points.push(point(run, Origin::Student, format, mb, 79.0 + 3.0 * i as f64 + mb / 10.0));
            }
        }
        let front = vec![false; points.len()];
        let data = ParetoData::new(&points, Metric::Perplexity, &front, &vec![false; points.len()]);
        let area = Rect::new(0, 0, 80, 16);
        let labels = data.placed_labels(area);
        let texts: Vec<&str> = labels.iter().map(|l| l.2.as_str()).collect();
        assert!(texts.contains(&"t float") && texts.contains(&"s3 q4_0"), "{texts:?}");
        // The cells of the points and of the labels, as the canvas maps them.
        let (w, h) = (78.0, 14.0);
        let cell = |x: f64, y: f64| {
            (
                ((x - data.x[0]) * (w - 1.0) / (data.x[1] - data.x[0])) as usize,
                ((data.y[1] - y) * (h - 1.0) / (data.y[1] - data.y[0])) as usize,
            )
        };
        let dots: Vec<(usize, usize)> = data.marks.iter().map(|m| dot_cell(m.xy, data.x, data.y, w, h)).collect();
        for (x, y, text, _) in &labels {
            let (c, r) = cell(*x, *y);
            for (dc, dr) in &dots {
                assert!(
                    !(*dr == r && (c..c + text.chars().count()).contains(dc)),
                    "`{text}` covers a point at {dc},{dr}"
                );
            }
        }
        assert!(data.legend().to_string().contains("1 T=1 2 T=2 3 T=5"), "{}", data.legend());
    }
}
