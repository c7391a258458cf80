//! The `node` role: CNI server and handler, the pod's links (`netlink/`), pre-plugging, QoS,
//! the chassis setup, CNI install. It speaks to Open vSwitch only through
//! `crate::ovn::vswitch` (no OVSDB rows or operations here) and supervises the chassis
//! daemons through `crate::ovn::daemons`.
//!
//! `run` wires the pieces: install the plugin binary, start (or use) the chassis daemons,
//! configure the chassis, watch this node's pods into the [`pod_index::PodIndex`], serve the
//! CNI socket with [`handler::NodeHandler`], keep QoS in line with the annotations, and stop
//! cleanly on SIGTERM/SIGINT.

pub mod attachment;
pub mod chassis;
pub mod handler;
pub mod install;
pub mod netlink;
pub mod pod_index;
pub mod preplug;
pub mod qos;
pub mod server;
pub mod tunnel;
pub mod unixctl;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{watcher, WatchStreamExt};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::ovn::daemons::{supervise, Backoff, ChassisLayout, Supervised};
use chassis::Datapath;
use handler::{HandlerConfig, NodeHandler};

/// Who runs the node's Open vSwitch and ovn-controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OvsMode {
    /// This process supervises ovsdb-server, ovs-vswitchd and ovn-controller.
    Embedded,
    /// They run already (host packages, another container); we only talk to them.
    External,
}

/// Flags of `kube-ovn node`.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeArgs {
    /// This node's name: the pod watch's `spec.nodeName` and the chassis system-id.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// Unix socket the CNI shim talks to.
    #[arg(long, default_value = "/run/openvswitch/kube-ovn-daemon.sock")]
    pub cni_socket: PathBuf,
    /// Where to install this binary as the `kube-ovn` CNI plugin.
    #[arg(long, default_value = "/opt/cni/bin")]
    pub cni_bin_dir: PathBuf,
    /// Run the chassis daemons ourselves, or use running ones.
    #[arg(long, value_enum, default_value_t = OvsMode::Embedded)]
    pub ovs: OvsMode,
    /// Database, pidfiles and control sockets of the embedded OVS (OVS_RUNDIR).
    #[arg(long, default_value = "/run/openvswitch")]
    pub ovs_run_dir: PathBuf,
    /// ovn-controller's pidfile and control socket (OVN_RUNDIR), for the readiness check.
    /// Default: --ovs-run-dir when embedded, /run/ovn when external.
    #[arg(long)]
    pub ovn_run_dir: Option<PathBuf>,
    /// The Open_vSwitch database with `--ovs external`.
    #[arg(long, default_value = "unix:/run/openvswitch/db.sock")]
    pub ovs_db: String,
    /// Bridge datapath: `netdev` (userspace) or `system` (kernel module).
    #[arg(long, value_enum, default_value_t = Datapath::System)]
    pub datapath: Datapath,
    /// The OVN southbound database (`external_ids:ovn-remote`), e.g. `tcp:10.0.0.1:6642`.
    #[arg(long, env = "OVN_SB")]
    pub ovn_sb: String,
    /// This node's underlay address, the Geneve tunnel endpoint (`ovn-encap-ip`).
    #[arg(long, env = "NODE_IP")]
    pub encap_ip: IpAddr,
    /// netdev datapath only: the NIC that carries tunnel traffic. The node puts it on a netdev
    /// bridge `br-phy` with `--tunnel-address` (userspace tunnelling needs the endpoint address
    /// on an OVS bridge). Dedicate the NIC to the overlay: OVS owns it from then on.
    #[arg(long, requires = "tunnel_address")]
    pub tunnel_nic: Option<String>,
    /// The tunnel endpoint with its prefix (`172.31.1.10/24`), put on `br-phy`; its address
    /// must equal `--encap-ip`.
    #[arg(long, requires = "tunnel_nic")]
    pub tunnel_address: Option<ipnet::IpNet>,
    /// Let ovn-controller monitor all of the SB (faster first ADD on a switch, more memory).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub ovn_monitor_all: bool,
    /// Pod interface MTU when the annotations do not say: the underlay MTU minus 100.
    #[arg(long, default_value_t = 1400)]
    pub mtu: u32,
    /// How long ADD waits for the controller's annotations (`30s`, `500ms`).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub annotation_timeout: Duration,
    /// Build and plug a pod's interface as soon as the controller annotates it, before its CNI
    /// ADD (see `preplug.rs`); `false` builds everything in ADD.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub preplug: bool,
    /// How long ADD waits for ovn-controller to install the port.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub ovn_installed_timeout: Duration,
}

/// `250ms`, `30s`, `2m` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 500ms, 30s or 2m"))?;
    let secs = match unit {
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s or m)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// Runs the node role until SIGTERM or SIGINT.
pub async fn run(args: NodeArgs) -> anyhow::Result<()> {
    if let Some(address) = args.tunnel_address {
        if args.datapath != Datapath::Netdev {
            anyhow::bail!("--tunnel-nic/--tunnel-address are for --datapath netdev only");
        }
        if address.addr() != args.encap_ip {
            anyhow::bail!(
                "--tunnel-address {address} must carry the --encap-ip {}",
                args.encap_ip
            );
        }
    }
    let installed = install::install_self(&args.cni_bin_dir)?;
    info!(plugin = %installed.display(), "CNI plugin installed");

    let layout = ChassisLayout {
        run_dir: args.ovs_run_dir.clone(),
    };
    let (db_endpoint, ovn_run_dir) = match args.ovs {
        OvsMode::Embedded => (
            layout.db_endpoint(),
            args.ovn_run_dir
                .clone()
                .unwrap_or_else(|| layout.run_dir.clone()),
        ),
        OvsMode::External => (
            args.ovs_db.clone(),
            args.ovn_run_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("/run/ovn")),
        ),
    };
    let mut daemons: Vec<Supervised> = Vec::new();
    let mut specs = Vec::new();
    if args.ovs == OvsMode::Embedded {
        layout
            .prepare()
            .await
            .context("preparing the embedded Open_vSwitch database")?;
        specs = layout.daemons();
        // ovsdb-server first: the chassis is configured before vswitchd and ovn-controller start.
        daemons.push(supervise(specs.remove(0), Backoff::default()));
    }
    let outcome = serve_node(&args, &db_endpoint, ovn_run_dir, &mut daemons, specs).await;
    for d in daemons.into_iter().rev() {
        info!(daemon = %d.name, "stopping");
        d.stop().await;
    }
    outcome
}

async fn serve_node(
    args: &NodeArgs,
    db_endpoint: &str,
    ovn_run_dir: PathBuf,
    daemons: &mut Vec<Supervised>,
    later: Vec<crate::ovn::daemons::DaemonSpec>,
) -> anyhow::Result<()> {
    let vswitch = chassis::connect(
        db_endpoint,
        tokio::time::Instant::now() + Duration::from_secs(30),
    )
    .await?;
    let identity = chassis::ChassisIdentity {
        node_name: args.node_name.clone(),
        ovn_remote: args.ovn_sb.clone(),
        encap_ip: args.encap_ip,
        datapath: args.datapath,
        monitor_all: args.ovn_monitor_all,
    };
    chassis::configure(&vswitch, &identity).await?;
    for spec in later {
        daemons.push(supervise(spec, Backoff::default()));
    }
    if let (Some(nic), Some(address)) = (&args.tunnel_nic, args.tunnel_address) {
        tunnel::ensure_tunnel_bridge(
            &vswitch,
            nic,
            address,
            tokio::time::Instant::now() + Duration::from_secs(30),
        )
        .await
        .context("setting up the userspace tunnel endpoint")?;
    }

    let pods = Arc::new(pod_index::PodIndex::new());
    let client = kube::Client::try_default()
        .await
        .context("building the Kubernetes client (KUBECONFIG or in-cluster config)")?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let watch_task = tokio::spawn(watch_pods(
        client,
        args.node_name.clone(),
        pods.clone(),
        stop_rx.clone(),
    ));
    let qos_task = tokio::spawn(qos::run(
        pods.clone(),
        vswitch.clone(),
        args.datapath,
        stop_rx.clone(),
    ));

    let handler = Arc::new(
        NodeHandler::new(
            pods.clone(),
            vswitch,
            HandlerConfig {
                bridge: chassis::INTEGRATION_BRIDGE.to_string(),
                datapath: args.datapath,
                mtu: args.mtu,
                annotation_timeout: args.annotation_timeout,
                ovn_installed_timeout: args.ovn_installed_timeout,
                ovn_run_dir,
            },
        )
        .context("opening the node's rtnetlink socket")?,
    );
    match handler.collect_stale_ports().await {
        Ok(removed) if !removed.is_empty() => info!(?removed, "stale OVS ports removed"),
        Ok(_) => {}
        Err(e) => warn!(error = %e.msg, "collecting stale OVS ports"),
    }
    let preplug = handler.preplug();
    let leftovers = preplug.collect_leftovers().await;
    if !leftovers.is_empty() {
        info!(removed = ?leftovers, "unclaimed pre-plugged interfaces of an earlier run removed");
    }
    let preplug_task = args
        .preplug
        .then(|| tokio::spawn(preplug::run(pods.clone(), preplug, stop_rx.clone())));
    let listener = server::bind(&args.cni_socket)?;
    info!(socket = %args.cni_socket.display(), node = %args.node_name, "serving CNI requests");
    let served = server::serve(listener, handler, async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    })
    .await;
    let _ = std::fs::remove_file(&args.cni_socket);
    let _ = qos_task.await;
    if let Some(task) = preplug_task {
        let _ = task.await;
    }
    let _ = watch_task.await;
    info!("node role stopped");
    served.with_context(|| format!("serving {}", args.cni_socket.display()))
}

/// Feeds this node's pods (fieldSelector `spec.nodeName`) into the index until stopped.
async fn watch_pods(
    client: kube::Client,
    node: String,
    pods: Arc<pod_index::PodIndex>,
    mut stop: watch::Receiver<bool>,
) {
    let api: kube::Api<Pod> = kube::Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut events = watcher(api, config).default_backoff().boxed();
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(e)) => pods.apply(e),
                Some(Err(e)) => warn!(error = %e, "pod watch"),
                None => return,
            },
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Resolves on SIGTERM or SIGINT (a clean stop).
pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            warn!("cannot install signal handlers; stop with SIGKILL");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: stopping"),
        _ = int.recv() => info!("SIGINT: stopping"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_the_usual_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("3h").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
