//! A histogram whose `observe` is a few atomic adds: no lock on the hot path, unlike
//! `prometheus_client`'s own histogram (a mutex per observation).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Bucket upper bounds of the FUSE read latency, in seconds. They include the seed's
/// dashboard rows (≤100 µs, ≤500 µs, ≤1 ms, ≤5 ms, ≤50 ms, and >50 ms as the rest).
pub const READ_LATENCY_BOUNDS: &[f64] = &[
    0.000_010, 0.000_025, 0.000_050, 0.000_100, 0.000_250, 0.000_500, 0.001, 0.002_5, 0.005, 0.010,
    0.025, 0.050, 0.100, 0.250, 0.500, 1.0, 2.5, 5.0, 10.0,
];

/// Bucket upper bounds of backend request latency, in seconds.
pub const REQUEST_LATENCY_BOUNDS: &[f64] = &[
    0.000_5, 0.001, 0.002_5, 0.005, 0.010, 0.025, 0.050, 0.100, 0.250, 0.500, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0,
];

/// Bucket upper bounds of FUSE read sizes, in bytes.
pub const READ_SIZE_BOUNDS: &[f64] = &[
    4096.0,
    16384.0,
    65536.0,
    131_072.0,
    262_144.0,
    524_288.0,
    1_048_576.0,
    4_194_304.0,
];

#[derive(Debug)]
struct Inner {
    /// Upper bounds in the recorded unit (nanoseconds for times, bytes for sizes).
    bounds: Vec<u64>,
    /// The bounds as exposed (seconds or bytes).
    exposed: &'static [f64],
    /// Observations per bucket (not cumulative); the last is `+Inf`.
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum: AtomicU64,
    /// Exposed value of one recorded unit.
    scale: f64,
}

/// A histogram of durations (recorded in nanoseconds, exposed in seconds) or of sizes.
#[derive(Debug, Clone)]
pub struct Histogram(Arc<Inner>);

impl Histogram {
    /// A histogram of durations with these bounds in seconds.
    pub fn seconds(bounds: &'static [f64]) -> Histogram {
        Histogram::new(bounds, 1e-9)
    }

    /// A histogram of plain quantities (bytes) with these bounds.
    pub fn plain(bounds: &'static [f64]) -> Histogram {
        Histogram::new(bounds, 1.0)
    }

    fn new(exposed: &'static [f64], scale: f64) -> Histogram {
        Histogram(Arc::new(Inner {
            bounds: exposed.iter().map(|b| (b / scale).round() as u64).collect(),
            exposed,
            buckets: (0..=exposed.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            scale,
        }))
    }

    /// Records a duration.
    pub fn observe_duration(&self, d: std::time::Duration) {
        self.observe(d.as_nanos().min(u128::from(u64::MAX)) as u64);
    }

    /// Records a value in the recorded unit (nanoseconds or bytes).
    pub fn observe(&self, v: u64) {
        if !crate::recording() {
            return;
        }
        let i = self.0.bounds.partition_point(|b| *b < v);
        self.0.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.0.count.fetch_add(1, Ordering::Relaxed);
        self.0.sum.fetch_add(v, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.0.count.load(Ordering::Relaxed)
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let i = &self.0;
        let mut buckets: Vec<(f64, u64)> = i
            .exposed
            .iter()
            .zip(&i.buckets)
            .map(|(b, n)| (*b, n.load(Ordering::Relaxed)))
            .collect();
        buckets.push((
            f64::INFINITY,
            i.buckets[i.exposed.len()].load(Ordering::Relaxed),
        ));
        // The count is the sum of the buckets read here, so a scrape racing observations
        // still shows a consistent histogram.
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = i.sum.load(Ordering::Relaxed) as f64 * i.scale;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_the_first_bucket_that_holds_them() {
        let h = Histogram::seconds(READ_LATENCY_BOUNDS);
        h.observe_duration(std::time::Duration::from_micros(100)); // exactly a bound
        h.observe_duration(std::time::Duration::from_micros(101));
        h.observe_duration(std::time::Duration::from_secs(60)); // +Inf
        let n = |i: usize| h.0.buckets[i].load(Ordering::Relaxed);
        assert_eq!(n(3), 1, "≤100 µs");
        assert_eq!(n(4), 1, "≤250 µs");
        assert_eq!(n(READ_LATENCY_BOUNDS.len()), 1, "+Inf");
        assert_eq!(h.count(), 3);
    }
}
