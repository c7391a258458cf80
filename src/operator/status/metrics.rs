//! The operator's Prometheus counters, gauges and histograms, and their text exposition
//! (`/metrics`). Counting happens where the work is done (pod controller, GC, the NB call
//! sites); this file only holds and renders the numbers. Serving them is `mod.rs`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;

use crate::ipam::Usage;
use crate::operator::ports::PortStats;

/// Upper bounds (seconds) of the NB transaction latency buckets: a local unix-socket commit
/// takes about a millisecond, a raft commit over TCP tens.
const NB_LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A Prometheus histogram over `NB_LATENCY_BUCKETS` (the last slot counts what exceeds them).
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; NB_LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let slot = NB_LATENCY_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(NB_LATENCY_BUCKETS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The `_bucket`, `_sum` and `_count` lines of `name` with `labels` (`key="value"`).
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        let bounds = NB_LATENCY_BUCKETS
            .iter()
            .map(|b| b.to_string())
            .chain(["+Inf".to_string()]);
        for (slot, le) in self.buckets.iter().zip(bounds) {
            cumulative += slot.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

/// The operator's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Attachments wired for the first time.
    pub pods_attached: AtomicU64,
    /// Pods that got at least one attachment wired (its rate is pods per second).
    pub pods_wired: AtomicU64,
    pub attachments_released: AtomicU64,
    /// By Event reason.
    pub attachment_errors: Mutex<BTreeMap<String, u64>>,
    /// Failed reconciles by (controller, error variant).
    pub reconcile_errors: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// By kind (`lsp`, `ip`, `address`).
    pub gc_removed: Mutex<BTreeMap<&'static str, u64>>,
    pub gc_runs: AtomicU64,
    pub ready: AtomicBool,
    /// This replica holds the Lease (or runs alone, `--leader-elect=false`).
    pub leader: AtomicBool,
    /// Milliseconds from start to ready.
    pub ready_ms: AtomicU64,
    pub ports: Mutex<Option<Arc<PortStats>>>,
    /// NB transaction latency by the controller that made it (`subnet`, `vpc`); the port
    /// batcher's own is in `ports`.
    pub nb_latency: Mutex<BTreeMap<&'static str, Arc<Histogram>>>,
}

impl Metrics {
    pub fn count_error(&self, reason: &str) {
        *self
            .attachment_errors
            .lock()
            .expect("metrics lock poisoned")
            .entry(reason.to_owned())
            .or_default() += 1;
    }

    pub fn count_reconcile_error(&self, controller: &'static str, kind: &'static str) {
        *self
            .reconcile_errors
            .lock()
            .expect("metrics lock poisoned")
            .entry((controller, kind))
            .or_default() += 1;
    }

    pub fn count_gc(&self, kind: &'static str, n: usize) {
        *self
            .gc_removed
            .lock()
            .expect("metrics lock poisoned")
            .entry(kind)
            .or_default() += n as u64;
    }

    /// Records one NB transaction (or NB call) of `controller` that took `elapsed`.
    pub fn observe_nb(&self, controller: &'static str, elapsed: Duration) {
        let histogram = self
            .nb_latency
            .lock()
            .expect("metrics lock poisoned")
            .entry(controller)
            .or_default()
            .clone();
        histogram.observe(elapsed);
    }

    /// The `/readyz` answer: a follower is ready (a 2-replica Deployment's rollout waits for
    /// both pods); the leader once its start-up reconcile is done.
    pub fn readiness(&self) -> (StatusCode, &'static str) {
        if !self.leader.load(Ordering::Relaxed) {
            (StatusCode::OK, "ready (following)\n")
        } else if self.ready.load(Ordering::Relaxed) {
            (StatusCode::OK, "ready (leading)\n")
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, "starting (leading)\n")
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let line = |out: &mut String, name: &str, help: &str, kind: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        line(
            &mut out,
            "kube_ovn_pod_attachments_total",
            "Pod attachments allocated and wired.",
            "counter",
            self.pods_attached.load(Ordering::Relaxed),
        );
        line(
            &mut out,
            "kube_ovn_pods_attached_total",
            "Pods that got attachments wired (rate: pods per second).",
            "counter",
            self.pods_wired.load(Ordering::Relaxed),
        );
        line(
            &mut out,
            "kube_ovn_pod_attachments_released_total",
            "Pod attachments released (pod gone or attachment removed).",
            "counter",
            self.attachments_released.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP kube_ovn_attachment_errors_total Attachment failures by Event reason.\n# TYPE kube_ovn_attachment_errors_total counter"
        );
        for (reason, n) in self
            .attachment_errors
            .lock()
            .expect("metrics lock poisoned")
            .iter()
        {
            let _ = writeln!(
                out,
                "kube_ovn_attachment_errors_total{{reason=\"{reason}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP kube_ovn_reconcile_errors_total Failed reconciles by controller and error.\n# TYPE kube_ovn_reconcile_errors_total counter"
        );
        for ((controller, kind), n) in self
            .reconcile_errors
            .lock()
            .expect("metrics lock poisoned")
            .iter()
        {
            let _ = writeln!(
                out,
                "kube_ovn_reconcile_errors_total{{controller=\"{controller}\",error=\"{kind}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP kube_ovn_gc_removed_total Leaked objects removed by garbage collection.\n# TYPE kube_ovn_gc_removed_total counter"
        );
        for (kind, n) in self
            .gc_removed
            .lock()
            .expect("metrics lock poisoned")
            .iter()
        {
            let _ = writeln!(out, "kube_ovn_gc_removed_total{{kind=\"{kind}\"}} {n}");
        }
        line(
            &mut out,
            "kube_ovn_gc_runs_total",
            "Garbage collection passes.",
            "counter",
            self.gc_runs.load(Ordering::Relaxed),
        );
        if let Some(ports) = self.ports.lock().expect("metrics lock poisoned").as_ref() {
            line(
                &mut out,
                "kube_ovn_nb_port_transactions_total",
                "NB transactions carrying pod ports.",
                "counter",
                ports.transactions.load(Ordering::Relaxed),
            );
            line(
                &mut out,
                "kube_ovn_nb_port_jobs_total",
                "Pod port changes carried by those transactions.",
                "counter",
                ports.jobs.load(Ordering::Relaxed),
            );
        }
        self.render_nb_latency(&mut out);
        line(
            &mut out,
            "kube_ovn_leader",
            "1 while this replica leads (holds the kube-ovn-operator Lease), 0 while it follows.",
            "gauge",
            u64::from(self.leader.load(Ordering::Relaxed)),
        );
        line(
            &mut out,
            "kube_ovn_ready",
            "1 once every pod present at start was reconciled.",
            "gauge",
            u64::from(self.ready.load(Ordering::Relaxed)),
        );
        line(
            &mut out,
            "kube_ovn_ready_milliseconds",
            "Time from start to ready.",
            "gauge",
            self.ready_ms.load(Ordering::Relaxed),
        );
        out
    }
}

impl Metrics {
    fn render_nb_latency(&self, out: &mut String) {
        const NAME: &str = "kube_ovn_nb_transaction_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {NAME} NB transactions by the operator, by controller.\n# TYPE {NAME} histogram"
        );
        if let Some(ports) = self.ports.lock().expect("metrics lock poisoned").as_ref() {
            ports.latency.render(out, NAME, "controller=\"ports\"");
        }
        let by_controller = self
            .nb_latency
            .lock()
            .expect("metrics lock poisoned")
            .clone();
        for (controller, histogram) in by_controller {
            histogram.render(out, NAME, &format!("controller=\"{controller}\""));
        }
    }
}

/// Per-subnet address gauges (IPAM's view), appended to `/metrics` once the controllers run.
pub fn render_subnet_usage<'a>(usages: impl IntoIterator<Item = (&'a str, &'a Usage)>) -> String {
    let usages: Vec<(&str, &Usage)> = usages.into_iter().collect();
    let mut out = String::new();
    let family = |out: &mut String, name: &str, help: &str, value: fn(&Usage) -> u128| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (subnet, usage) in &usages {
            // f64 is Prometheus's number: exact up to 2^53, close enough for IPv6 ranges.
            let _ = writeln!(out, "{name}{{subnet=\"{subnet}\"}} {}", value(usage) as f64);
        }
    };
    family(
        &mut out,
        "kube_ovn_subnet_allocations",
        "Attachments holding an address of the subnet.",
        |u| u.used,
    );
    family(
        &mut out,
        "kube_ovn_subnet_available_addresses",
        "Addresses of the subnet still free (dual stack: the scarcer family).",
        |u| u.available,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_counters_and_labels() {
        let m = Metrics::default();
        m.pods_attached.fetch_add(3, Ordering::Relaxed);
        m.count_error("NoSubnetForProvider");
        m.count_error("NoSubnetForProvider");
        m.count_reconcile_error("subnet", "Nb");
        m.count_gc("lsp", 2);
        let text = m.render();
        assert!(text.contains("kube_ovn_pod_attachments_total 3"));
        assert!(text.contains("kube_ovn_attachment_errors_total{reason=\"NoSubnetForProvider\"} 2"));
        assert!(
            text.contains("kube_ovn_reconcile_errors_total{controller=\"subnet\",error=\"Nb\"} 1")
        );
        assert!(text.contains("kube_ovn_gc_removed_total{kind=\"lsp\"} 2"));
        assert!(text.contains("kube_ovn_ready 0"));
        assert!(text.contains("kube_ovn_leader 0"));
    }

    #[test]
    fn a_follower_is_ready_and_a_leader_once_it_reconciled() {
        let m = Metrics::default();
        assert_eq!(m.readiness().0, StatusCode::OK, "follower");
        m.leader.store(true, Ordering::Relaxed);
        assert_eq!(
            m.readiness().0,
            StatusCode::SERVICE_UNAVAILABLE,
            "leader starting"
        );
        assert!(m.render().contains("kube_ovn_leader 1"));
        m.ready.store(true, Ordering::Relaxed);
        assert_eq!(m.readiness().0, StatusCode::OK, "leader reconciled");
    }

    #[test]
    fn nb_latency_is_a_cumulative_histogram_per_controller() {
        let m = Metrics::default();
        m.observe_nb("subnet", Duration::from_micros(800));
        m.observe_nb("subnet", Duration::from_millis(20));
        m.observe_nb("subnet", Duration::from_secs(5));
        let text = m.render();
        let name = "kube_ovn_nb_transaction_duration_seconds";
        assert!(text.contains(&format!("# TYPE {name} histogram")), "{text}");
        for (le, n) in [
            ("0.0005", 0),
            ("0.001", 1),
            ("0.025", 2),
            ("2.5", 2),
            ("+Inf", 3),
        ] {
            let want = format!("{name}_bucket{{controller=\"subnet\",le=\"{le}\"}} {n}\n");
            assert!(text.contains(&want), "{want} in {text}");
        }
        assert!(text.contains(&format!("{name}_count{{controller=\"subnet\"}} 3")));
        assert!(text.contains(&format!("{name}_sum{{controller=\"subnet\"}} 5.0208")));
    }

    #[test]
    fn subnet_usage_is_one_gauge_line_per_subnet() {
        let usage = |used, available| Usage {
            total: used + available,
            used,
            available,
            families: Vec::new(),
        };
        let (a, b) = (usage(3, 250), usage(0, 65533));
        let text = render_subnet_usage([("s1", &a), ("s2", &b)]);
        assert!(
            text.contains("kube_ovn_subnet_allocations{subnet=\"s1\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("kube_ovn_subnet_allocations{subnet=\"s2\"} 0\n"),
            "{text}"
        );
        assert!(text.contains("kube_ovn_subnet_available_addresses{subnet=\"s2\"} 65533\n"));
    }
}
