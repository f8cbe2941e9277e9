//! The accuracy-vs-size scatter: every measured point, the Pareto front as a line, the points
//! meeting the budget as blocks (so a text capture shows them too, not only a colour).

use crate::tui::tradeoff::{Metric, Point};
use ratatui::style::{Color, Style};
use ratatui::symbols::Marker;
use ratatui::text::Span;
use ratatui::widgets::{Axis, Chart, Dataset, GraphType};

/// The chart's data, built once per frame and borrowed by the datasets.
pub struct ParetoData {
    pub all: Vec<(f64, f64)>,
    pub front: Vec<(f64, f64)>,
    pub admitted: Vec<(f64, f64)>,
    x: [f64; 2],
    y: [f64; 2],
}

impl ParetoData {
    pub fn new(points: &[Point], metric: Metric, front: &[bool], meets: &[bool]) -> Self {
        let xy = |p: &Point| (p.megabytes(), p.value(metric));
        let all: Vec<(f64, f64)> = points.iter().map(xy).collect();
        let mut on_front: Vec<(f64, f64)> = points.iter().zip(front).filter(|(_, f)| **f).map(|(p, _)| xy(p)).collect();
        on_front.sort_by(|a, b| a.0.total_cmp(&b.0));
        let admitted = points.iter().zip(meets).filter(|(_, m)| **m).map(|(p, _)| xy(p)).collect();
        let span = |vals: Vec<f64>| {
            let lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if !lo.is_finite() {
                return [0.0, 1.0];
            }
            let pad = ((hi - lo) * 0.08).max(hi.abs() * 0.02).max(1e-6);
            [(lo - pad).max(0.0), hi + pad]
        };
        let x = span(all.iter().map(|p| p.0).collect());
        let y = span(all.iter().map(|p| p.1).collect());
        Self { all, front: on_front, admitted, x, y }
    }

    pub fn chart(&self, metric: Metric) -> Chart<'_> {
        let set = |name: &'static str, marker, kind, color, data| {
            Dataset::default().name(name).marker(marker).graph_type(kind).style(Style::default().fg(color)).data(data)
        };
        let mut sets = vec![
            set("front", Marker::Braille, GraphType::Line, Color::Green, &self.front),
            set("measured", Marker::Dot, GraphType::Scatter, Color::Cyan, &self.all),
        ];
        if !self.admitted.is_empty() {
            sets.push(set("in budget", Marker::Block, GraphType::Scatter, Color::Yellow, &self.admitted));
        }
        let lab = |v: f64| Span::raw(if v >= 100.0 { format!("{v:.0}") } else { format!("{v:.2}") });
        Chart::new(sets)
            .block(crate::tui::screens::panel(format!("{} vs size (MB)", metric.label())))
            .x_axis(Axis::default().bounds(self.x).labels([lab(self.x[0]), lab(self.x[1])]))
            .y_axis(Axis::default().bounds(self.y).labels([lab(self.y[0]), lab(self.y[1])]))
            .legend_position(Some(ratatui::widgets::LegendPosition::TopRight))
    }
}
