//! Numbers as people read them: three significant digits and a unit.

/// `v` with three significant digits, trailing zeros dropped (`3.1`, `45.6`,
/// `412`); integers of four or more digits are shown whole.
pub fn sig3(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let magnitude = v.abs().log10().floor() as i32;
    let decimals = (2 - magnitude).clamp(0, 6) as usize;
    let text = format!("{v:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// `v` scaled by the largest step of `units` it reaches (after rounding, so
/// 999.96 reads `1M`, not `1000k`).
pub fn scaled(v: f64, base: f64, units: &[&str], sep: &str) -> String {
    let mut value = v;
    let mut unit = 0;
    while unit + 1 < units.len() && value.abs() >= base - base / 2000.0 {
        value /= base;
        unit += 1;
    }
    format!("{}{sep}{}", sig3(value), units[unit])
}

/// A latency in microseconds: `45.6 µs`, `3.1 ms`, `1.2 s`.
pub fn format_micros(us: f64) -> String {
    scaled(us, 1000.0, &["µs", "ms", "s"], " ")
}

/// A rate: `812/s`, `45.6k/s`, `1.23M/s`.
pub fn format_rate(per_sec: f64) -> String {
    scaled(per_sec, 1000.0, &["", "k", "M", "G"], "") + "/s"
}

/// A size: `512 B`, `2.3 kB`, `35.2 MB`.
pub fn format_bytes(bytes: f64) -> String {
    scaled(bytes, 1000.0, &["B", "kB", "MB", "GB", "TB"], " ")
}
