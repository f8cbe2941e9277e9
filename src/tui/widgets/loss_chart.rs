//! Line charts of training series (losses, eval perplexity, KL), bounds fitted to the data. The
//! legend is written in the bottom border, so it never hides a curve.

use ratatui::style::{Color, Style};
use ratatui::symbols::Marker;
use ratatui::text::Span;
use ratatui::widgets::{Axis, Chart, Dataset, GraphType};

/// One named curve.
pub struct Series {
    pub name: String,
    pub color: Color,
    pub points: Vec<(f64, f64)>,
}

fn bounds(values: impl Iterator<Item = f64>) -> Option<[f64; 2]> {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if !lo.is_finite() {
        return None;
    }
    let pad = ((hi - lo) * 0.05).max(hi.abs() * 1e-3).max(1e-9);
    // Losses and perplexities are never negative: keep the axis from dipping below zero.
    Some([if lo >= 0.0 { (lo - pad).max(0.0) } else { lo - pad }, hi + pad])
}

fn label(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// The x axis's end: a step count as it is, a fraction (a log10 rank) to one decimal.
fn x_label(x: f64) -> String {
    if x.fract() != 0.0 && x < 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.0}")
    }
}

/// The legend of `series` (those with data) as one line of coloured names.
pub fn legend(series: &[Series]) -> ratatui::text::Line<'static> {
    let mut spans = Vec::new();
    for s in series.iter().filter(|s| !s.points.is_empty()) {
        spans.push(Span::styled(format!("─ {} ", s.name), Style::default().fg(s.color)));
    }
    ratatui::text::Line::from(spans)
}

/// A chart of `series` against step; `x_max` keeps the x axis at the run's length.
pub fn chart<'a>(title: &str, series: &'a [Series], x_max: f64) -> Chart<'a> {
    let datasets: Vec<Dataset> = series
        .iter()
        .filter(|s| !s.points.is_empty())
        .map(|s| {
            Dataset::default()
                .name(s.name.clone())
                .marker(Marker::Braille)
                .graph_type(if s.points.len() == 1 { GraphType::Scatter } else { GraphType::Line })
                .style(Style::default().fg(s.color))
                .data(&s.points)
        })
        .collect();
    let ys = bounds(series.iter().flat_map(|s| s.points.iter().map(|p| p.1))).unwrap_or([0.0, 1.0]);
    let x_hi = series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).fold(x_max, f64::max).max(1.0);
    Chart::new(datasets)
        .block(crate::tui::screens::panel(title).title_bottom(legend(series)))
        .x_axis(Axis::default().bounds([0.0, x_hi]).labels([Span::raw("0"), Span::raw(x_label(x_hi))]))
        .y_axis(Axis::default().bounds(ys).labels([Span::raw(label(ys[0])), Span::raw(label(ys[1]))]))
        .legend_position(None)
}

#[cfg(test)]
mod tests {
    #[test]
    fn bounds_pad_and_handle_flat_data() {
        let b = super::bounds([2.0, 2.0].into_iter()).unwrap();
        assert!(b[0] < 2.0 && b[1] > 2.0);
        assert!(super::bounds(std::iter::empty()).is_none());
    }
}
