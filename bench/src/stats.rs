//! A lock-free log-linear latency histogram (nanoseconds, ~0.2% precision), shared by
//! every task of the load generator without a lock.

use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};

const LINEAR: u64 = 1024;
const SUB: u64 = 512;
const SHIFTS: u64 = 40;
const BUCKETS: usize = (LINEAR + SHIFTS * SUB) as usize;

/// Counts of recorded values, by bucket.
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum: AtomicU64,
    max: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

fn bucket_of(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let bits = 64 - v.leading_zeros() as u64; // >= 11
    let shift = bits - 10;
    let idx = LINEAR + (shift - 1) * SUB + ((v >> shift) - SUB);
    (idx as usize).min(BUCKETS - 1)
}

fn value_of(idx: usize) -> u64 {
    let idx = idx as u64;
    if idx < LINEAR {
        return idx;
    }
    let shift = (idx - LINEAR) / SUB + 1;
    let m = (idx - LINEAR) % SUB + SUB;
    (m << shift) + (1u64 << shift) / 2
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }

    /// Records one value in nanoseconds.
    pub fn record(&self, ns: u64) {
        self.buckets[bucket_of(ns)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(ns, Ordering::Relaxed);
        self.max.fetch_max(ns, Ordering::Relaxed);
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Mean in nanoseconds (0 when empty).
    pub fn mean(&self) -> f64 {
        let n = self.count();
        if n == 0 {
            0.0
        } else {
            self.sum.load(Ordering::Relaxed) as f64 / n as f64
        }
    }

    /// The value at quantile `q` (0..=1) in nanoseconds (0 when empty).
    pub fn quantile(&self, q: f64) -> u64 {
        let n = self.count();
        if n == 0 {
            return 0;
        }
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= rank {
                return value_of(i).min(self.max.load(Ordering::Relaxed));
            }
        }
        self.max.load(Ordering::Relaxed)
    }

    /// Largest value recorded.
    pub fn max(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }

    /// `{count, mean_us, p50_us, p90_us, p99_us, max_us}`.
    pub fn summary(&self) -> Value {
        let us = |ns: u64| (ns as f64 / 1000.0 * 10.0).round() / 10.0;
        json!({
            "count": self.count(),
            "mean_us": (self.mean() / 100.0).round() / 10.0,
            "p50_us": us(self.quantile(0.50)),
            "p90_us": us(self.quantile(0.90)),
            "p99_us": us(self.quantile(0.99)),
            "max_us": us(self.max()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_round_trip_within_precision() {
        for v in [
            0u64,
            1,
            500,
            1023,
            1024,
            1500,
            10_000,
            1_234_567,
            987_654_321_000,
        ] {
            let back = value_of(bucket_of(v));
            let err = (back as f64 - v as f64).abs() / (v.max(1) as f64);
            assert!(err < 0.005, "{v} -> {back}");
        }
    }

    #[test]
    fn quantiles_of_a_uniform_run() {
        let h = Histogram::new();
        for v in 1..=10_000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5) as f64;
        let p99 = h.quantile(0.99) as f64;
        assert!((p50 - 5_000_000.0).abs() / 5_000_000.0 < 0.01, "{p50}");
        assert!((p99 - 9_900_000.0).abs() / 9_900_000.0 < 0.01, "{p99}");
        assert_eq!(h.count(), 10_000);
        assert_eq!(h.max(), 10_000_000);
    }

    #[test]
    fn empty_histogram_reports_zero() {
        let h = Histogram::new();
        assert_eq!(h.quantile(0.99), 0);
        assert_eq!(h.mean(), 0.0);
    }
}
