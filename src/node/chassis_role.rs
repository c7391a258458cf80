//! `kube-ovn chassis`, the process of the `ovs-ovn` DaemonSet: the node's Open vSwitch and
//! ovn-controller and nothing else. It creates the Open_vSwitch database (and its root row) in
//! `--ovs-run-dir`, supervises `ovsdb-server`, `ovs-vswitchd` and `ovn-controller`
//! (`ovn::daemons::ChassisLayout`), answers `/readyz` when all three run and the database
//! answers, and stops them on SIGTERM. Making this OVS a chassis of the cluster (external_ids,
//! `br-int`, `br-phy`) is the node role's (`kube-ovn node --ovs external`), which shares the
//! run directory. When the install is being removed (`uninstall.rs`), stopping also removes
//! every bridge (after ovn-controller, which would make `br-int` again, and before
//! ovs-vswitchd, which takes their datapaths away) and the files it made in the run
//! directory: database, pidfiles, sockets.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::ovn::daemons::{supervise, Backoff, ChassisLayout, Supervised};
use crate::ovn::Vswitch;

use super::uninstall::{install_state, InstallState};
use super::{chassis, shutdown_signal, until_stopped};

/// Flags of `kube-ovn chassis`.
#[derive(Debug, Clone, clap::Args)]
pub struct ChassisArgs {
    /// Database, pidfiles and control sockets of the node's OVS and ovn-controller
    /// (OVS_RUNDIR and OVN_RUNDIR), shared with the node role.
    #[arg(long, default_value = "/run/openvswitch")]
    pub ovs_run_dir: PathBuf,
    /// This node's name (for logs).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// Serve `/readyz` and `/healthz` over HTTP here (e.g. `0.0.0.0:10665`).
    #[arg(long)]
    pub status_addr: Option<SocketAddr>,
}

/// The supervised daemons, shared with the readiness probe.
type Daemons = Arc<Mutex<Vec<Supervised>>>;

fn lock(daemons: &Daemons) -> std::sync::MutexGuard<'_, Vec<Supervised>> {
    daemons
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs the chassis until SIGTERM or SIGINT.
pub async fn run(args: ChassisArgs) -> anyhow::Result<()> {
    let (stop_tx, mut stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    // Only the uninstall check needs the API: run without it, but never uninstall then.
    let client = match kube::Client::try_default().await {
        Ok(c) => Some(c),
        Err(e) => {
            warn!(error = %e, "no Kubernetes client: a stop will never uninstall");
            None
        }
    };
    let layout = ChassisLayout {
        run_dir: args.ovs_run_dir.clone(),
    };
    layout.prepare().await.with_context(|| {
        format!(
            "preparing the Open_vSwitch database in {}",
            layout.run_dir.display()
        )
    })?;
    let mut specs = layout.daemons();
    let daemons: Daemons = Arc::new(Mutex::new(vec![supervise(
        specs.remove(0),
        Backoff::default(),
    )]));
    let (vswitch_tx, vswitch_rx) = watch::channel(None::<Vswitch>);
    let status_task = args.status_addr.map(|addr| {
        tokio::spawn(serve_status(
            addr,
            daemons.clone(),
            vswitch_rx,
            stop_rx.clone(),
        ))
    });

    let started = until_stopped(&mut stop_rx, async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let vswitch = chassis::connect(&layout.db_endpoint(), Some(deadline)).await?;
        // As `ovs-vsctl init` in OVS's own start script: ovs-vswitchd wants the root row.
        vswitch
            .ensure_root_row()
            .await
            .map_err(|e| anyhow::anyhow!("creating the Open_vSwitch root row: {e}"))?;
        anyhow::Ok(vswitch)
    })
    .await;
    let (outcome, vswitch) = match started {
        Some(Ok(vswitch)) => {
            lock(&daemons).extend(specs.into_iter().map(|s| supervise(s, Backoff::default())));
            let _ = vswitch_tx.send(Some(vswitch.clone()));
            info!(node = %args.node_name, run_dir = %layout.run_dir.display(), "chassis running");
            let _ = stop_rx.wait_for(|s| *s).await;
            (Ok(()), Some(vswitch))
        }
        Some(Err(e)) => (Err(e), None),
        None => (Ok(()), None),
    };
    let removed = match install_state(client.as_ref()).await {
        InstallState::Removed => {
            info!("KubeOvn is gone or being deleted: removing the chassis from the node");
            true
        }
        InstallState::Installed => false,
        InstallState::Unknown(why) => {
            warn!(reason = %why, "cannot tell whether kube-ovn is being uninstalled; keeping the chassis database");
            false
        }
    };
    let _ = vswitch_tx.send(None);
    let mut running = std::mem::take(&mut *lock(&daemons));
    // Last started, first stopped: ovn-controller, then ovs-vswitchd, then ovsdb-server.
    while let Some(d) = running.pop() {
        let controller = d.name == "ovn-controller";
        info!(daemon = %d.name, "stopping");
        d.stop().await;
        // ovn-controller is down (it would make br-int again), ovs-vswitchd still runs to
        // take the bridges' datapaths and devices away.
        if removed && controller {
            if let Some(vswitch) = &vswitch {
                remove_bridges(vswitch).await;
            }
        }
    }
    if let Some(task) = status_task {
        let _ = task.await;
    }
    if removed {
        remove_chassis_files(&layout);
    }
    info!("chassis stopped");
    outcome
}

/// Removes every bridge of the chassis's database and waits (10 s at most) for
/// ovs-vswitchd to apply it.
async fn remove_bridges(vswitch: &Vswitch) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    match vswitch.remove_all_bridges(deadline).await {
        Ok(bridges) => info!(?bridges, "bridges removed"),
        Err(e) => warn!(error = %e, "uninstall: removing the bridges"),
    }
}

/// Removes what the chassis made in its run directory (database, its lock, pidfiles, control
/// and bridge sockets), then the directory if nothing else is left in it. Call with the
/// daemons stopped.
pub fn remove_chassis_files(layout: &ChassisLayout) {
    let ours = |name: &str| {
        matches!(name, "conf.db" | ".conf.db.~lock~" | "db.sock")
            || ["ovsdb-server.", "ovs-vswitchd.", "ovn-controller."]
                .iter()
                .any(|d| name.starts_with(d) && (name.ends_with(".pid") || name.ends_with(".ctl")))
            || name.ends_with(".mgmt")
            || name.ends_with(".snoop")
    };
    let mut removed = 0usize;
    if let Ok(entries) = std::fs::read_dir(&layout.run_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !ours(&name.to_string_lossy()) {
                continue;
            }
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) => warn!(file = %entry.path().display(), error = %e, "uninstall: removing"),
            }
        }
    }
    // Fails while something else lives there (e.g. the host's own files): then it stays.
    let dir_removed = std::fs::remove_dir(&layout.run_dir).is_ok();
    info!(files = removed, dir_removed, run_dir = %layout.run_dir.display(), "chassis files removed");
}

/// `/healthz` (the process answers) and `/readyz` (the three daemons run and the database
/// session is up) until `stop` turns true.
async fn serve_status(
    addr: SocketAddr,
    daemons: Daemons,
    vswitch: watch::Receiver<Option<Vswitch>>,
    mut stop: watch::Receiver<bool>,
) {
    let ready = move || {
        let running = lock(&daemons);
        let down: Vec<&str> = running
            .iter()
            .filter(|d| d.pid().is_none())
            .map(|d| d.name.as_str())
            .collect();
        let db_up = vswitch.borrow().as_ref().is_some_and(Vswitch::is_connected);
        match (running.len(), down.is_empty(), db_up) {
            (3, true, true) => (StatusCode::OK, "ok".to_string()),
            (n, _, _) if n < 3 => (
                StatusCode::SERVICE_UNAVAILABLE,
                "starting: the Open_vSwitch database is not ready yet".to_string(),
            ),
            (_, false, _) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not running: {}", down.join(", ")),
            ),
            _ => (
                StatusCode::SERVICE_UNAVAILABLE,
                "the Open_vSwitch database does not answer".to_string(),
            ),
        }
    };
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(move || std::future::ready(ready())));
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            warn!(%addr, error = %e, "cannot serve the chassis status");
            return;
        }
    };
    info!(%addr, "serving /readyz and /healthz");
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
    if let Err(e) = served {
        warn!(error = %e, "chassis status server");
    }
}
