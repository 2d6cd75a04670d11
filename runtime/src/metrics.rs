//! Counters the host keeps and `GET /metrics` renders as Prometheus text.
//!
//! Everything is a plain atomic: bumping a counter never takes a lock except the
//! first time a container is seen. To add a counter, add an atomic field and a line
//! in the matching `render_*` function.

use crate::prom::Exposition;
use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// Upper bounds (seconds) of the handler latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Counters of one container.
#[derive(Default)]
pub struct ContainerMetrics {
    /// HTTP requests answered.
    pub http_requests: AtomicU64,
    /// HTTP answers with status 500 and up (throws, timeouts, dead workers).
    pub http_errors: AtomicU64,
    /// Handler latency histogram: count per bucket of [`LATENCY_BUCKETS`] (not cumulative).
    pub latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    /// Sum of handler latencies, in microseconds.
    pub latency_micros_sum: AtomicU64,
    /// The last [`RECENT_SAMPLES`] requests (for the console's latency chart).
    recent: Mutex<VecDeque<Sample>>,
}

/// Requests remembered per container for [`Metrics::recent`].
pub const RECENT_SAMPLES: usize = 300;

/// One answered request, as the console charts it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sample {
    /// When it was answered, in milliseconds since the Unix epoch.
    pub at: u64,
    /// `METHOD /path` below the base path (query left out, at most 120 bytes).
    pub route: String,
    /// The status sent.
    pub status: u16,
    /// Handler latency in milliseconds.
    pub ms: f64,
}

/// Every counter of this host.
#[derive(Default)]
pub struct Metrics {
    per_container: RwLock<BTreeMap<String, Arc<ContainerMetrics>>>,
}

impl Metrics {
    /// A fresh set of counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counters of `container`, made on first use.
    pub fn container(&self, container: &str) -> Arc<ContainerMetrics> {
        if let Some(m) = self
            .per_container
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(container)
        {
            return m.clone();
        }
        let mut all = self
            .per_container
            .write()
            .unwrap_or_else(|p| p.into_inner());
        all.entry(container.to_string()).or_default().clone()
    }

    /// Counts one HTTP answer of `container` with `status`, taking `elapsed`.
    pub fn record_http(&self, container: &str, status: u16, elapsed: Duration) {
        let m = self.container(container);
        m.http_requests.fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            m.http_errors.fetch_add(1, Ordering::Relaxed);
        }
        let secs = elapsed.as_secs_f64();
        let bucket = LATENCY_BUCKETS.iter().position(|b| secs <= *b);
        if let Some(i) = bucket {
            m.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        m.latency_micros_sum
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// Remembers one request of `container` for the latency chart (bounded).
    pub fn record_sample(&self, container: &str, route: &str, status: u16, elapsed: Duration) {
        let m = self.container(container);
        let mut end = route.len().min(120);
        while !route.is_char_boundary(end) {
            end -= 1;
        }
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let sample = Sample {
            at,
            route: route[..end].to_string(),
            status,
            ms: elapsed.as_secs_f64() * 1000.0,
        };
        let mut recent = m.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == RECENT_SAMPLES {
            recent.pop_front();
        }
        recent.push_back(sample);
    }

    /// The last requests of `container`, oldest first.
    pub fn recent(&self, container: &str) -> Vec<Sample> {
        let m = self.container(container);
        let recent = m.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.iter().cloned().collect()
    }

    /// Prometheus text exposition of every counter; `containers` is how many run now.
    pub fn render(&self, containers: usize) -> String {
        let mut out = Exposition::default();
        out.family(
            "mimhost_containers",
            "gauge",
            "Containers running on this node.",
        );
        out.sample("mimhost_containers", &[], containers);
        let all: Vec<(String, Arc<ContainerMetrics>)> = self
            .per_container
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        render_counter(
            &mut out,
            "mimhost_http_requests_total",
            "HTTP requests answered.",
            &all,
            |m| &m.http_requests,
        );
        render_counter(
            &mut out,
            "mimhost_http_errors_total",
            "HTTP answers with status >= 500.",
            &all,
            |m| &m.http_errors,
        );
        render_latency(&mut out, &all);
        out.finish()
    }
}

/// One counter family with a `container` label.
fn render_counter(
    out: &mut Exposition,
    name: &str,
    help: &str,
    all: &[(String, Arc<ContainerMetrics>)],
    field: impl Fn(&ContainerMetrics) -> &AtomicU64,
) {
    out.family(name, "counter", help);
    for (container, m) in all {
        out.sample(
            name,
            &[("container", container)],
            field(m).load(Ordering::Relaxed),
        );
    }
}

/// The handler latency histogram.
fn render_latency(out: &mut Exposition, all: &[(String, Arc<ContainerMetrics>)]) {
    let name = "mimhost_http_handler_seconds";
    out.family(
        name,
        "histogram",
        "Time from request to the first part of the answer.",
    );
    let bucket = format!("{name}_bucket");
    for (container, m) in all {
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += m.latency_buckets[i].load(Ordering::Relaxed);
            let le = bound.to_string();
            out.sample(
                &bucket,
                &[("container", container), ("le", &le)],
                cumulative,
            );
        }
        let count = m.http_requests.load(Ordering::Relaxed);
        out.sample(&bucket, &[("container", container), ("le", "+Inf")], count);
        let sum = m.latency_micros_sum.load(Ordering::Relaxed) as f64 / 1e6;
        out.sample(&format!("{name}_sum"), &[("container", container)], sum);
        out.sample(&format!("{name}_count"), &[("container", container)], count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_per_container() {
        let m = Metrics::new();
        m.record_http("a", 200, Duration::from_millis(3));
        m.record_http("a", 500, Duration::from_millis(30));
        let text = m.render(1);
        assert!(text.contains("mimhost_containers 1"));
        assert!(text.contains("mimhost_http_requests_total{container=\"a\"} 2"));
        assert!(text.contains("mimhost_http_errors_total{container=\"a\"} 1"));
        assert!(
            text.contains("mimhost_http_handler_seconds_bucket{container=\"a\",le=\"0.005\"} 1")
        );
        assert!(text.contains("mimhost_http_handler_seconds_count{container=\"a\"} 2"));
    }

    #[test]
    fn keeps_a_bounded_list_of_recent_requests() {
        let m = Metrics::new();
        for _ in 0..RECENT_SAMPLES + 3 {
            m.record_sample(
                "a",
                &format!("GET /{}", "é".repeat(100)),
                200,
                Duration::from_millis(2),
            );
        }
        let recent = m.recent("a");
        assert_eq!(recent.len(), RECENT_SAMPLES);
        assert!(recent[0].route.len() <= 120);
        assert!(m.recent("b").is_empty());
    }
}
