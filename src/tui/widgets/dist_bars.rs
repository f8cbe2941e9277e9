//! Horizontal probability bars for a distribution's top entries: `token ████▌  0.412`.

use ratatui::text::Line;

/// Eighth-block characters for sub-cell bar ends.
const PARTS: [&str; 8] = ["", "▏", "▎", "▍", "▌", "▋", "▊", "▉"];

/// A bar `p` of `width` cells long, in eighths.
pub fn bar(p: f64, width: usize) -> String {
    let eighths = (p.clamp(0.0, 1.0) * width as f64 * 8.0).round() as usize;
    format!("{}{}", "█".repeat(eighths / 8), PARTS[eighths % 8])
}

/// Shows a token so whitespace and control characters stay visible.
pub fn visible(token: &str) -> String {
    token
        .chars()
        .map(|c| match c {
            ' ' => '␣',
            '\n' => '⏎',
            '\t' => '⇥',
            c if c.is_control() => '·',
            c => c,
        })
        .collect()
}

/// One line per `(label, probability)`, the label column `label_width` wide. Bars are scaled to
/// the largest probability shown (a flat distribution over 50k tokens would otherwise draw
/// nothing); the printed numbers are the absolute probabilities.
pub fn lines(entries: &[(String, f64)], label_width: usize, bar_width: usize) -> Vec<Line<'static>> {
    let top = entries.iter().map(|e| e.1).fold(0.0, f64::max).max(1e-12);
    entries
        .iter()
        .map(|(label, p)| {
            let label: String = visible(label).chars().take(label_width).collect();
            let b = bar(*p / top, bar_width);
            Line::from(format!("{label:<label_width$} {b:<bar_width$} {p:.3}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn bars_round_to_eighths() {
        assert_eq!(super::bar(0.5, 4), "██");
        assert_eq!(super::bar(1.0 / 16.0, 4), "▎");
        assert_eq!(super::visible(" a\n"), "␣a⏎");
    }
}
