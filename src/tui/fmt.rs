//! Number formats shared by the screens.

/// `1.2M`, `135.0M`, `1.2B` parameters.
pub fn params(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.2}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}k", n as f64 / 1e3),
        n => n.to_string(),
    }
}

/// Megabytes (10^6 bytes) with precision that suits the size.
pub fn mb(bytes: u64) -> String {
    let m = bytes as f64 / 1e6;
    if m >= 100.0 {
        format!("{m:.0} MB")
    } else if m >= 1.0 {
        format!("{m:.2} MB")
    } else {
        format!("{m:.3} MB")
    }
}

/// `1h02m`, `3m05s`, `12s`.
pub fn duration(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "–".into();
    }
    let s = seconds.round() as u64;
    match s {
        s if s >= 3600 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s if s >= 60 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

/// Shortens `text` to `width` characters, keeping its end (paths end in the useful part).
pub fn tail(text: &str, width: usize) -> String {
    let n = text.chars().count();
    if n <= width || width < 2 {
        return text.to_string();
    }
    let kept: String = text.chars().skip(n - (width - 1)).collect();
    format!("…{kept}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(params(134_515_008), "134.52M");
        assert_eq!(mb(862_296), "0.862 MB");
        assert_eq!(duration(3725.0), "1h02m");
        assert_eq!(tail("abcdef", 4), "…def");
    }
}
