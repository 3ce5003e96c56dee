//! Counters for Prometheus (`GET /metrics`, text format 0.0.4). Kept in memory per process;
//! Prometheus scrapes every node.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the request-duration histogram, in seconds.
const BUCKETS: [f64; 10] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5];

#[derive(Default)]
struct Route {
    count: u64,
    seconds: f64,
    buckets: [u64; BUCKETS.len()],
}

/// The process's counters.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), Route>>,
    tickets_created: AtomicU64,
    sla_warnings: AtomicU64,
    sla_breaches: AtomicU64,
}

impl Metrics {
    /// Records one HTTP request: method, matched route (not the raw path, which would explode
    /// the label set), status, duration. Any client can send any method name, so methods
    /// outside the standard set count as `other`: the label set stays bounded.
    pub fn observe_request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let method = match method {
            "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS" => method,
            _ => "other",
        };
        if let Ok(mut map) = self.requests.lock() {
            let r = map.entry((method.to_owned(), route.to_owned(), status)).or_default();
            r.count += 1;
            r.seconds += seconds;
            for (i, le) in BUCKETS.iter().enumerate() {
                if seconds <= *le {
                    r.buckets[i] += 1;
                }
            }
        }
    }

    /// Counts created tickets.
    pub fn count_tickets_created(&self, n: u64) {
        self.tickets_created.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts emitted SLA events by type.
    pub fn count_sla_events(&self, kind: &str, n: u64) {
        let c = if kind == "sla.warning" { &self.sla_warnings } else { &self.sla_breaches };
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Renders the Prometheus text format.
    pub fn render(&self) -> String {
        let mut s = String::new();
        s.push_str("# HELP plugdesk_http_requests_total HTTP requests by method, route and status.\n# TYPE plugdesk_http_requests_total counter\n");
        let map = self
            .requests
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.count, v.seconds, v.buckets)).collect::<Vec<_>>())
            .unwrap_or_default();
        for ((m, r, st), count, _, _) in &map {
            let _ = writeln!(s, "plugdesk_http_requests_total{{method=\"{m}\",route=\"{r}\",status=\"{st}\"}} {count}");
        }
        s.push_str("# HELP plugdesk_http_request_duration_seconds HTTP request duration by method and route.\n# TYPE plugdesk_http_request_duration_seconds histogram\n");
        let mut by_route: BTreeMap<(String, String), (u64, f64, [u64; BUCKETS.len()])> = BTreeMap::new();
        for ((m, r, _), count, secs, buckets) in &map {
            let e = by_route.entry((m.clone(), r.clone())).or_insert((0, 0.0, [0; BUCKETS.len()]));
            e.0 += count;
            e.1 += secs;
            for (i, b) in buckets.iter().enumerate() {
                e.2[i] += b;
            }
        }
        for ((m, r), (count, secs, buckets)) in &by_route {
            for (i, le) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    s,
                    "plugdesk_http_request_duration_seconds_bucket{{method=\"{m}\",route=\"{r}\",le=\"{le}\"}} {}",
                    buckets[i]
                );
            }
            let _ = writeln!(
                s,
                "plugdesk_http_request_duration_seconds_bucket{{method=\"{m}\",route=\"{r}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(s, "plugdesk_http_request_duration_seconds_sum{{method=\"{m}\",route=\"{r}\"}} {secs}");
            let _ = writeln!(s, "plugdesk_http_request_duration_seconds_count{{method=\"{m}\",route=\"{r}\"}} {count}");
        }
        let _ = writeln!(
            s,
            "# HELP plugdesk_tickets_created_total Tickets created.\n# TYPE plugdesk_tickets_created_total counter\nplugdesk_tickets_created_total {}",
            self.tickets_created.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            s,
            "# HELP plugdesk_sla_events_total SLA events emitted.\n# TYPE plugdesk_sla_events_total counter"
        );
        let _ = writeln!(
            s,
            "plugdesk_sla_events_total{{type=\"sla.warning\"}} {}",
            self.sla_warnings.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            s,
            "plugdesk_sla_events_total{{type=\"sla.breached\"}} {}",
            self.sla_breaches.load(Ordering::Relaxed)
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_render_as_counter_and_histogram() {
        let m = Metrics::default();
        m.observe_request("GET", "/api/v1/tickets/{id}", 200, 0.002);
        m.observe_request("GET", "/api/v1/tickets/{id}", 404, 0.0001);
        let text = m.render();
        assert!(
            text.contains(
                "plugdesk_http_requests_total{method=\"GET\",route=\"/api/v1/tickets/{id}\",status=\"200\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("plugdesk_http_request_duration_seconds_bucket{method=\"GET\",route=\"/api/v1/tickets/{id}\",le=\"0.0025\"} 2"), "{text}");
        assert!(
            text.contains(
                "plugdesk_http_request_duration_seconds_count{method=\"GET\",route=\"/api/v1/tickets/{id}\"} 2"
            ),
            "{text}"
        );
    }

    #[test]
    fn made_up_methods_share_one_label() {
        let m = Metrics::default();
        m.observe_request("FOOBAR", "unmatched", 405, 0.001);
        m.observe_request("BAZ", "unmatched", 405, 0.001);
        let text = m.render();
        assert!(!text.contains("FOOBAR") && !text.contains("BAZ"), "{text}");
        assert!(
            text.contains("plugdesk_http_requests_total{method=\"other\",route=\"unmatched\",status=\"405\"} 2"),
            "{text}"
        );
    }
}
