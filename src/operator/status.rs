//! What the operator tells operators: Prometheus counters on `/metrics` and
//! readiness on `/readyz`, served by axum on `--status-addr`. A follower (waiting for the
//! Lease) is ready: it does all a follower does, and a 2-replica Deployment's rollout waits
//! for both pods to be ready. The leader is ready once every pod that existed when it took
//! over has been reconciled once. `kube_ovn_leader` says which replica leads.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tracing::info;

use super::ports::PortStats;

/// The operator's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    pub pods_attached: AtomicU64,
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

    /// The `/readyz` answer: a follower is ready; the leader once its start-up reconcile is done.
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

/// Serves `/metrics` and `/readyz` on `addr` until the task is dropped.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> anyhow::Result<()> {
    let app = Router::new()
        .route(
            "/metrics",
            get(|State(m): State<Arc<Metrics>>| async move { m.render() }),
        )
        .route(
            "/readyz",
            get(|State(m): State<Arc<Metrics>>| async move { m.readiness() }),
        )
        .with_state(metrics);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("status endpoint: binding {addr}: {e}"))?;
    info!(%addr, "status endpoint listening (/metrics, /readyz)");
    axum::serve(listener, app)
        .await
        .map_err(|e| anyhow::anyhow!("status endpoint {addr}: {e}"))
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
}
