//! Logical switch ports of many pods in few NB transactions. Every pod's port
//! changes go to one batcher task; it commits whatever has queued up while the
//! previous transaction was in flight as ONE transaction (group commit, as the
//! IPAM store does for fsyncs). If a shared transaction fails, each pod's
//! changes are retried alone so one pod's problem never fails another's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use super::status::Histogram;
use crate::ovn::{LspSpec, NbTxn, Northbound};

/// Largest number of pods per shared transaction.
const MAX_BATCH: usize = 256;

/// One change to a pod's ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortChange {
    Ensure(LspSpec),
    Delete(String),
}

struct Job {
    changes: Vec<PortChange>,
    reply: oneshot::Sender<Result<(), String>>,
}

/// Transactions committed, pods they carried and how long each took (for the metrics).
#[derive(Debug, Default)]
pub struct PortStats {
    pub transactions: AtomicU64,
    pub jobs: AtomicU64,
    pub latency: Histogram,
}

/// Handle to the batcher task.
#[derive(Clone)]
pub struct PortBatcher {
    tx: mpsc::Sender<Job>,
    pub stats: Arc<PortStats>,
}

impl PortBatcher {
    /// Starts the batcher on `nb`.
    pub fn start(nb: Northbound) -> Self {
        let (tx, rx) = mpsc::channel(4096);
        let stats = Arc::new(PortStats::default());
        tokio::spawn(run(nb, rx, stats.clone()));
        Self { tx, stats }
    }

    /// Applies `changes` (one pod's) in a transaction, possibly shared with
    /// other pods. The error names the ports.
    pub async fn apply(&self, changes: Vec<PortChange>) -> Result<(), String> {
        if changes.is_empty() {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job { changes, reply })
            .await
            .map_err(|_| "the NB port batcher stopped".to_string())?;
        answer
            .await
            .map_err(|_| "the NB port batcher stopped".to_string())?
    }
}

fn plan(txn: &mut NbTxn<'_>, changes: &[PortChange]) -> crate::ovn::Result<()> {
    for change in changes {
        match change {
            PortChange::Ensure(spec) => txn.ensure_logical_switch_port(spec)?,
            PortChange::Delete(name) => txn.delete_logical_switch_port(name)?,
        }
    }
    Ok(())
}

fn describe(changes: &[PortChange]) -> String {
    changes
        .iter()
        .map(|c| match c {
            PortChange::Ensure(s) => format!("ensure {} on {}", s.name, s.switch),
            PortChange::Delete(n) => format!("delete {n}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

async fn run(nb: Northbound, mut rx: mpsc::Receiver<Job>, stats: Arc<PortStats>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let shared = nb
            .apply(|t| batch.iter().try_for_each(|j| plan(t, &j.changes)))
            .await;
        stats.latency.observe(started.elapsed());
        stats.transactions.fetch_add(1, Ordering::Relaxed);
        stats.jobs.fetch_add(batch.len() as u64, Ordering::Relaxed);
        match shared {
            Ok(_) => {
                debug!(pods = batch.len(), "NB port transaction committed");
                for job in batch {
                    let _ = job.reply.send(Ok(()));
                }
            }
            Err(e) if batch.len() == 1 => {
                let job = batch.pop().expect("one job");
                let _ = job
                    .reply
                    .send(Err(format!("NB: {}: {e}", describe(&job.changes))));
            }
            Err(e) => {
                warn!(error = %e, pods = batch.len(), "shared NB transaction failed, retrying pod by pod");
                for job in batch {
                    let started = Instant::now();
                    let own = nb.apply(|t| plan(t, &job.changes)).await;
                    stats.latency.observe(started.elapsed());
                    stats.transactions.fetch_add(1, Ordering::Relaxed);
                    let _ = job.reply.send(
                        own.map(|_| ())
                            .map_err(|e| format!("NB: {}: {e}", describe(&job.changes))),
                    );
                }
            }
        }
    }
}
