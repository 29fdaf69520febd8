//! Sizes (`500GiB`, `80%`, `1048576`) and durations (`60s`, `5m`).

use std::time::Duration;

use crate::SizeLimit;

/// Parses a size: a plain byte count or a number with a unit (`K`, `KB`, `KiB` ... `TiB`).
/// Decimal units (`GB`) are powers of 1000, binary units (`GiB`, and the bare `G`) of 1024.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim();
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size; write e.g. 500GiB, 2TB or 1048576"))?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "kb" => 1_000,
        "m" | "mib" => 1 << 20,
        "mb" => 1_000_000,
        "g" | "gib" => 1 << 30,
        "gb" => 1_000_000_000,
        "t" | "tib" => 1 << 40,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "`{s}` has an unknown unit `{unit}`; use B, KiB, MiB, GiB, TiB (or KB, MB, GB, TB)"
            ));
        }
    };
    let bytes = n * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("`{s}` is out of range"));
    }
    Ok(bytes as u64)
}

/// Parses `cache.max_size`: a size, or a percentage of the cache disk (`80%`).
pub(crate) fn parse_size_limit(s: &str) -> Result<SizeLimit, String> {
    if let Some(p) = s.trim().strip_suffix('%') {
        let pct: f64 = p
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not a percentage; write e.g. 80%"))?;
        if !(pct > 0.0 && pct <= 100.0) {
            return Err(format!("`{s}` must be between 0% and 100%"));
        }
        return Ok(SizeLimit::PercentOfDisk(pct));
    }
    let b = parse_size(s)?;
    if b == 0 {
        return Err("is 0; give the cache some room, e.g. 100GiB or 80%".into());
    }
    Ok(SizeLimit::Bytes(b))
}

/// Parses a duration such as `60s`, `5m`, `1h 30m` or `250ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|_| format!("`{s}` is not a duration; write e.g. 60s, 5m or 1h"))
}

/// Formats a byte count with the largest binary unit that divides it (`500GiB`, `1536KiB`).
pub fn format_size(b: u64) -> String {
    for (unit, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if b >= 1 << shift && b.is_multiple_of(1 << shift) {
            return format!("{}{unit}", b >> shift);
        }
    }
    format!("{b}B")
}
