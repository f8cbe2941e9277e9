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

/// One line per `(label, probability)`, the label column `label_width` wide. A full bar is the
/// probability `top`: panels drawn side by side share it (the largest probability any of them
/// shows), so a bar of 0.45 has one length everywhere and a softened distribution's bars are
/// visibly shorter, while a flat distribution over 50k tokens still draws something. The printed
/// numbers are the absolute probabilities.
pub fn lines(entries: &[(String, f64)], label_width: usize, bar_width: usize, top: f64) -> Vec<Line<'static>> {
    let top = top.max(1e-12);
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

    use super::*;

    fn bar_cells(line: &Line) -> f64 {
        let text: String = line.spans.iter().map(|s| s.content.as_ref()).collect();
        text.chars()
            .map(|c| match c {
                '█' => 1.0,
                c => PARTS.iter().position(|p| p.starts_with(c)).map_or(0.0, |i| i as f64 / 8.0),
            })
            .sum()
    }

    #[test]
    fn bar_lengths_are_proportional_to_probability_on_one_scale() {
        // Two panels sharing the scale 0.8: the same probability draws the same length in both.
        let cold = lines(&[("cat".into(), 0.8), ("dog".into(), 0.2)], 5, 16, 0.8);
        let warm = lines(&[("cat".into(), 0.45), ("dog".into(), 0.35), ("horse".into(), 0.2)], 5, 16, 0.8);
        assert_eq!(bar_cells(&cold[0]), 16.0);
        assert_eq!(bar_cells(&cold[1]), 4.0);
        assert_eq!(bar_cells(&warm[2]), bar_cells(&cold[1]), "0.2 is one length in both panels");
        assert_eq!(bar_cells(&warm[0]), 9.0, "0.45 of 0.8 of 16 cells");
    }
}
