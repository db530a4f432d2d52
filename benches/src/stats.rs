//! Latency samples and percentiles.
//!
//! Samples are kept exactly (nanoseconds in a `Vec<u64>`) and sorted once: a few hundred
//! thousand samples per run cost a few MB and give exact nearest-rank percentiles, with no
//! histogram bucketing error at the sub-millisecond differences the bench is after.

use std::time::Duration;

/// A set of latency samples.
#[derive(Clone, Debug, Default)]
pub struct Latencies {
    nanos: Vec<u64>,
    sorted: bool,
}

impl Latencies {
    /// An empty set with room for `capacity` samples.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            nanos: Vec::with_capacity(capacity),
            sorted: true,
        }
    }

    /// Adds one sample.
    pub fn record(&mut self, latency: Duration) {
        self.nanos
            .push(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
        self.sorted = false;
    }

    /// Moves every sample of `other` into `self`.
    pub fn merge(&mut self, other: Latencies) {
        if self.nanos.is_empty() {
            *self = other;
        } else {
            self.nanos.extend(other.nanos);
            self.sorted = false;
        }
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.nanos.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.nanos.is_empty()
    }

    /// Sorts the samples; percentiles need this first.
    pub fn sort(&mut self) {
        if !self.sorted {
            self.nanos.sort_unstable();
            self.sorted = true;
        }
    }

    /// The nearest-rank `q`-quantile (`q` in `0.0..=1.0`, e.g. `0.99`), or `None` without
    /// samples. Sorts first if needed.
    pub fn quantile(&mut self, q: f64) -> Option<Duration> {
        self.sort();
        let n = self.nanos.len();
        if n == 0 {
            return None;
        }
        let q = q.clamp(0.0, 1.0);
        // Nearest rank: the smallest sample with at least q·n samples at or below it.
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        Some(Duration::from_nanos(self.nanos[rank - 1]))
    }

    /// The arithmetic mean, or `None` without samples.
    pub fn mean(&self) -> Option<Duration> {
        let n = u128::try_from(self.nanos.len()).ok().filter(|&n| n > 0)?;
        let sum: u128 = self.nanos.iter().map(|&ns| u128::from(ns)).sum();
        Some(Duration::from_nanos(
            u64::try_from(sum / n).unwrap_or(u64::MAX),
        ))
    }

    /// The largest sample, or `None` without samples.
    pub fn max(&mut self) -> Option<Duration> {
        self.quantile(1.0)
    }
}

/// A duration in milliseconds with three decimals (`0.123 ms`).
pub fn fmt_ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// A signed difference `a − b` in milliseconds with three decimals.
pub fn fmt_delta_ms(a: Duration, b: Duration) -> String {
    format!("{:+.3} ms", delta_ms(a, b))
}

/// `a − b` in milliseconds (negative when `a < b`).
pub fn delta_ms(a: Duration, b: Duration) -> f64 {
    (a.as_secs_f64() - b.as_secs_f64()) * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(micros: &[u64]) -> Latencies {
        let mut l = Latencies::with_capacity(micros.len());
        for &m in micros {
            l.record(Duration::from_micros(m));
        }
        l
    }

    #[test]
    fn nearest_rank_quantiles() {
        let mut l = set(&(1..=100).rev().collect::<Vec<_>>());
        assert_eq!(l.quantile(0.5), Some(Duration::from_micros(50)));
        assert_eq!(l.quantile(0.99), Some(Duration::from_micros(99)));
        assert_eq!(l.quantile(0.0), Some(Duration::from_micros(1)));
        assert_eq!(l.max(), Some(Duration::from_micros(100)));
        let mut one = set(&[7]);
        assert_eq!(one.quantile(0.5), Some(Duration::from_micros(7)));
        assert_eq!(one.quantile(0.99), Some(Duration::from_micros(7)));
    }

    #[test]
    fn mean_of_the_samples() {
        assert_eq!(set(&[1, 2, 6]).mean(), Some(Duration::from_micros(3)));
        assert_eq!(Latencies::default().mean(), None);
    }

    #[test]
    fn empty_has_no_quantiles_and_merge_keeps_everything() {
        let mut empty = Latencies::default();
        assert!(empty.is_empty());
        assert_eq!(empty.quantile(0.5), None);
        empty.merge(set(&[3, 1]));
        empty.merge(set(&[2]));
        assert_eq!(empty.len(), 3);
        assert_eq!(empty.quantile(0.5), Some(Duration::from_micros(2)));
    }

    #[test]
    fn formatting() {
        assert_eq!(fmt_ms(Duration::from_micros(1234)), "1.234 ms");
        assert_eq!(
            fmt_delta_ms(Duration::from_micros(150), Duration::from_micros(200)),
            "-0.050 ms"
        );
    }
}
