//! Snapshots of a `/metrics` scrape and the difference of two: how the demo, the benchmarks
//! and `warpdrive-ctl metrics --since` report "during this run only" figures.
//!
//! A snapshot is every sample of the Prometheus text format (what the daemon serves) keyed by
//! its name and sorted labels, plus each family's type. Counters and histogram series
//! (`_bucket`, `_sum`, `_count`) subtract in a delta; gauges keep their later value.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One scrape, flattened.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// `name{label="value",...}` (labels sorted) → value.
    pub series: BTreeMap<String, f64>,
    /// Family name (as in `# TYPE`) → `counter`, `gauge`, `histogram`, ...
    pub types: BTreeMap<String, String>,
}

/// A series key split into its name and labels.
fn split_key(key: &str) -> (&str, Vec<(&str, &str)>) {
    match key.split_once('{') {
        None => (key, Vec::new()),
        Some((name, rest)) => {
            let rest = rest.trim_end_matches('}');
            let labels = rest
                .split("\",")
                .filter(|p| !p.is_empty())
                .filter_map(|p| p.split_once("=\""))
                .map(|(k, v)| (k, v.trim_end_matches('"')))
                .collect();
            (name, labels)
        }
    }
}

/// Parses one sample line: `name{labels} value [timestamp]`.
fn parse_line(line: &str) -> Option<(String, f64)> {
    let (key, rest) = match line.find('}') {
        Some(i) => (&line[..=i], &line[i + 1..]),
        None => line.split_once(' ')?,
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    let (name, mut labels) = split_key(key.trim());
    labels.sort();
    let key = if labels.is_empty() {
        name.to_string()
    } else {
        let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        format!("{name}{{{}}}", l.join(","))
    };
    Some((key, value))
}

impl Snapshot {
    /// Parses the Prometheus text format.
    pub fn parse(text: &str) -> Snapshot {
        let mut s = Snapshot::default();
        for line in text.lines().map(str::trim) {
            if let Some(t) = line.strip_prefix("# TYPE ") {
                if let Some((name, ty)) = t.split_once(' ') {
                    s.types.insert(name.to_string(), ty.trim().to_string());
                }
            } else if !line.is_empty()
                && !line.starts_with('#')
                && let Some((k, v)) = parse_line(line)
            {
                s.series.insert(k, v);
            }
        }
        s
    }

    /// The type of the family a series belongs to.
    fn type_of(&self, series_name: &str) -> Option<&str> {
        if let Some(t) = self.types.get(series_name) {
            return Some(t);
        }
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = series_name.strip_suffix(suffix)
                && let Some(t) = self.types.get(base)
            {
                return Some(t);
            }
        }
        None
    }

    /// What happened between `before` and `self`: counters and histograms subtract (a
    /// series that went down means the daemon restarted in between, and counts from 0);
    /// gauges keep their value in `self`.
    pub fn delta(&self, before: &Snapshot) -> Snapshot {
        let mut out = Snapshot {
            types: self.types.clone(),
            ..Default::default()
        };
        for (k, v) in &self.series {
            let (name, _) = split_key(k);
            let cumulative = matches!(self.type_of(name), Some("counter" | "histogram"));
            let d = match (cumulative, before.series.get(k)) {
                (true, Some(b)) if b <= v => v - b,
                _ => *v,
            };
            out.series.insert(k.clone(), d);
        }
        out
    }

    /// The sum of the series named `name` whose labels include `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.series
            .iter()
            .filter(|(k, _)| {
                let (n, l) = split_key(k);
                n == name && labels.iter().all(|want| l.contains(want))
            })
            .map(|(_, v)| *v)
            .sum()
    }

    /// Whether a series named `name` has exactly these labels (among others).
    pub fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.series.keys().any(|k| {
            let (n, l) = split_key(k);
            n == name && labels.iter().all(|want| l.contains(want))
        })
    }

    /// Every value of `label` among the series named `name`.
    pub fn label_values(&self, name: &str, label: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .series
            .keys()
            .filter_map(|k| {
                let (n, l) = split_key(k);
                (n == name)
                    .then(|| {
                        l.iter()
                            .find(|(lk, _)| *lk == label)
                            .map(|(_, v)| v.to_string())
                    })
                    .flatten()
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// A histogram's cumulative buckets `(le, count)`, ascending, for series with `labels`.
    pub fn buckets(&self, name: &str, labels: &[(&str, &str)]) -> Vec<(f64, f64)> {
        let bucket = format!("{name}_bucket");
        let mut by_le: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        for (k, v) in &self.series {
            let (n, l) = split_key(k);
            if n != bucket || !labels.iter().all(|want| l.contains(want)) {
                continue;
            }
            let Some(le) = l.iter().find(|(k, _)| *k == "le").map(|(_, v)| *v) else {
                continue;
            };
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::NAN)
            };
            let e = by_le.entry(le.to_bits()).or_insert((le, 0.0));
            e.1 += v;
        }
        let mut out: Vec<(f64, f64)> = by_le.into_values().collect();
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# HELP x_total X.
# TYPE x_total counter
x_total{op=\"read\",b=\"1\"} 5
x_total{op=\"open\",b=\"1\"} 2
# TYPE g gauge
g 7
# TYPE h histogram
h_bucket{le=\"0.1\"} 1
h_bucket{le=\"+Inf\"} 3
h_sum 0.5
h_count 3
";

    #[test]
    fn parses_and_subtracts() {
        let a = Snapshot::parse(TEXT);
        assert_eq!(a.value("x_total", &[("op", "read")]), 5.0);
        assert_eq!(a.value("x_total", &[]), 7.0);
        assert_eq!(a.label_values("x_total", "op"), vec!["open", "read"]);
        assert_eq!(a.buckets("h", &[]), vec![(0.1, 1.0), (f64::INFINITY, 3.0)]);
        let b = Snapshot::parse(
            &TEXT
                .replace("} 5", "} 9")
                .replace("g 7", "g 4")
                .replace("h_count 3", "h_count 10"),
        );
        let d = b.delta(&a);
        assert_eq!(d.value("x_total", &[("op", "read")]), 4.0);
        assert_eq!(d.value("g", &[]), 4.0, "gauges keep the later value");
        assert_eq!(d.value("h_count", &[]), 7.0);
        assert_eq!(d.value("h_sum", &[]), 0.0);
        let json = serde_json::to_string(&d).expect("json");
        assert_eq!(serde_json::from_str::<Snapshot>(&json).expect("back"), d);
    }
}
