//! Text progress bars: they fit in a table cell or a log line, and read the same in a capture.

/// `█████░░░░░  45% 1.2/2.6 MB` for bytes, `████░░  12/40 steps` otherwise.
pub fn bar(done: u64, total: u64, unit: &str, width: usize) -> String {
    let f = if total == 0 { 0.0 } else { (done as f64 / total as f64).clamp(0.0, 1.0) };
    let full = (f * width as f64).round() as usize;
    let bar = format!("{}{}", "█".repeat(full), "░".repeat(width - full));
    let amount = if unit == "bytes" {
        format!("{:.1}/{:.1} MB", done as f64 / 1e6, total as f64 / 1e6)
    } else {
        format!("{done}/{total} {unit}")
    };
    format!("{bar} {:>3.0}% {amount}", f * 100.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn bar_shapes() {
        assert_eq!(super::bar(1, 4, "steps", 4), "█░░░  25% 1/4 steps");
        assert_eq!(super::bar(3_000_000, 3_000_000, "bytes", 2), "██ 100% 3.0/3.0 MB");
        assert_eq!(super::bar(0, 0, "x", 2), "░░   0% 0/0 x");
    }
}
