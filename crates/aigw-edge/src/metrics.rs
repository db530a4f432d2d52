//! Prometheus metrics of the edge, kept in atomics and rendered on `/metrics`.
//!
//! Names follow `aigw_<name>_<unit>[_total]`; labels are bounded (provider slugs come from the
//! catalogue, statuses are grouped by class).

use std::fmt::Write;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the request-duration histogram buckets.
const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
];

/// A counter family keyed by a small set of label values.
///
/// Label sets are few (bounded labels), so a scanned vector beats hashing and lets lookups
/// borrow `&str` labels without allocating.
#[derive(Debug, Default)]
struct Family {
    counters: RwLock<Vec<(Vec<String>, AtomicU64)>>,
}

impl Family {
    fn add(&self, labels: &[&str], n: u64) {
        let matches = |key: &Vec<String>| key.iter().map(String::as_str).eq(labels.iter().copied());
        {
            let rows = self.counters.read().unwrap_or_else(|p| p.into_inner());
            if let Some((_, counter)) = rows.iter().find(|(key, _)| matches(key)) {
                counter.fetch_add(n, Ordering::Relaxed);
                return;
            }
        }
        let mut rows = self.counters.write().unwrap_or_else(|p| p.into_inner());
        match rows.iter().find(|(key, _)| matches(key)) {
            Some((_, counter)) => {
                counter.fetch_add(n, Ordering::Relaxed);
            }
            None => {
                let key = labels.iter().map(|s| (*s).to_owned()).collect();
                rows.push((key, AtomicU64::new(n)));
            }
        }
    }

    fn total(&self) -> u64 {
        let rows = self.counters.read().unwrap_or_else(|p| p.into_inner());
        rows.iter().map(|(_, c)| c.load(Ordering::Relaxed)).sum()
    }

    fn render(&self, out: &mut String, name: &str, help: &str, label_names: &[&str]) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        let rows = self.counters.read().unwrap_or_else(|p| p.into_inner());
        let mut sorted: Vec<_> = rows.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        for (values, counter) in sorted {
            let labels: Vec<String> = label_names
                .iter()
                .zip(values)
                .map(|(n, v)| format!("{n}=\"{}\"", escape(v)))
                .collect();
            let _ = writeln!(
                out,
                "{name}{{{}}} {}",
                labels.join(","),
                counter.load(Ordering::Relaxed)
            );
        }
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A latency histogram with fixed buckets.
#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; DURATION_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if let Some(i) = DURATION_BUCKETS.iter().position(|bound| secs <= *bound) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, bucket) in DURATION_BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Why a log record never reached the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The queue to the store was full.
    QueueFull,
    /// The store kept failing the write.
    SinkError,
    /// The process was shutting down and the queue was closed, or the lane's worker had
    /// stopped.
    Closed,
}

impl DropReason {
    fn label(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::SinkError => "sink_error",
            Self::Closed => "closed",
        }
    }
}

/// All metrics of one edge.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Family,
    upstream_errors: Family,
    duration: Histogram,
    logs_written: AtomicU64,
    log_batches: AtomicU64,
    logs_dropped: Family,
    cache_lookups: Family,
    rate_limited: AtomicU64,
    rate_limit_unavailable: AtomicU64,
}

impl Metrics {
    /// Count a finished request.
    pub fn request(&self, provider: &str, status: u16, elapsed: Duration) {
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.requests.add(&[provider, class], 1);
        self.duration.observe(elapsed);
    }

    /// Count an upstream failure of `kind` (`unreachable`, `timeout`, `status_4xx`, ...).
    pub fn upstream_error(&self, provider: &str, kind: &str) {
        self.upstream_errors.add(&[provider, kind], 1);
    }

    /// Count a batch of `n` records accepted by the store.
    pub fn logs_written(&self, n: usize) {
        self.logs_written.fetch_add(n as u64, Ordering::Relaxed);
        self.log_batches.fetch_add(1, Ordering::Relaxed);
    }

    /// Count records that will never be stored.
    pub fn logs_dropped(&self, reason: DropReason, n: usize) {
        self.logs_dropped.add(&[reason.label()], n as u64);
    }

    /// Count a cache lookup by result (`hit_local`, `hit_shared`, `hit_coalesced`, `miss`).
    pub fn cache_lookup(&self, result: &str) {
        self.cache_lookups.add(&[result], 1);
    }

    /// Count a request refused by its gateway's rate limit.
    pub fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    /// Count a request admitted because the rate-limit owner could not be asked.
    pub fn rate_limit_unavailable(&self) {
        self.rate_limit_unavailable.fetch_add(1, Ordering::Relaxed);
    }

    /// Total records dropped for any reason.
    pub fn logs_dropped_total(&self) -> u64 {
        self.logs_dropped.total()
    }

    /// Prometheus text exposition, with the queue gauges supplied by the caller.
    pub fn render(&self, queue_depth: usize, queue_capacity: usize) -> String {
        let mut out = String::with_capacity(4096);
        self.requests.render(
            &mut out,
            "aigw_http_requests_total",
            "Provider requests handled, by provider and status class.",
            &["provider", "status"],
        );
        self.duration.render(
            &mut out,
            "aigw_http_request_duration_seconds",
            "Time from request to the end of the response.",
        );
        self.upstream_errors.render(
            &mut out,
            "aigw_upstream_errors_total",
            "Upstream failures, by provider and kind.",
            &["provider", "kind"],
        );
        let _ = writeln!(
            out,
            "# HELP aigw_log_queue_depth Log records waiting for the store.\n# TYPE aigw_log_queue_depth gauge\naigw_log_queue_depth {queue_depth}"
        );
        let _ = writeln!(
            out,
            "# HELP aigw_log_queue_capacity Log records the queue can hold.\n# TYPE aigw_log_queue_capacity gauge\naigw_log_queue_capacity {queue_capacity}"
        );
        let _ = writeln!(
            out,
            "# HELP aigw_logs_written_total Log records accepted by the store.\n# TYPE aigw_logs_written_total counter\naigw_logs_written_total {}",
            self.logs_written.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP aigw_log_batches_total Batches of log records accepted by the store (records per write: logs_written / log_batches).\n# TYPE aigw_log_batches_total counter\naigw_log_batches_total {}",
            self.log_batches.load(Ordering::Relaxed)
        );
        self.logs_dropped.render(
            &mut out,
            "aigw_logs_dropped_total",
            "Log records that were not stored, by reason.",
            &["reason"],
        );
        self.cache_lookups.render(
            &mut out,
            "aigw_cache_lookups_total",
            "Response cache lookups, by result.",
            &["result"],
        );
        let _ = writeln!(
            out,
            "# HELP aigw_rate_limited_total Requests refused by their gateway's rate limit.\n# TYPE aigw_rate_limited_total counter\naigw_rate_limited_total {}",
            self.rate_limited.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP aigw_rate_limit_unavailable_total Requests admitted without their rate-limit owner, which could not be reached.\n# TYPE aigw_rate_limit_unavailable_total counter\naigw_rate_limit_unavailable_total {}",
            self.rate_limit_unavailable.load(Ordering::Relaxed)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histogram_and_gauges() {
        let m = Metrics::default();
        m.request("openai", 200, Duration::from_millis(3));
        m.request("openai", 200, Duration::from_millis(30));
        m.request("anthropic", 502, Duration::from_secs(100));
        m.upstream_error("anthropic", "unreachable");
        m.logs_dropped(DropReason::QueueFull, 2);
        m.logs_written(5);
        let text = m.render(3, 10);
        assert!(
            text.contains("aigw_http_requests_total{provider=\"openai\",status=\"2xx\"} 2"),
            "{text}"
        );
        assert!(text.contains("aigw_http_requests_total{provider=\"anthropic\",status=\"5xx\"} 1"));
        assert!(text.contains("aigw_http_request_duration_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("aigw_http_request_duration_seconds_bucket{le=\"+Inf\"} 3"));
        assert!(
            text.contains(
                "aigw_upstream_errors_total{provider=\"anthropic\",kind=\"unreachable\"} 1"
            )
        );
        assert!(text.contains("aigw_logs_dropped_total{reason=\"queue_full\"} 2"));
        assert!(text.contains("aigw_log_queue_depth 3"));
        assert!(text.contains("aigw_logs_written_total 5"));
        assert!(text.contains("aigw_log_batches_total 1"));
        assert_eq!(m.logs_dropped_total(), 2);
    }
}
