//! The `node` role: CNI server and handler, the pod's links (`netlink/`), pre-plugging, QoS,
//! the chassis setup, CNI install, uninstall and the rebuilding of interfaces lost while
//! uninstalled. It speaks to Open vSwitch only through `crate::ovn::vswitch` (no OVSDB rows or
//! operations here) and supervises the chassis daemons through `crate::ovn::daemons`, either
//! itself (`--ovs embedded`) or as the separate `kube-ovn chassis` process
//! (`chassis_role.rs`, the `ovs-ovn` DaemonSet) whose OVS it then uses (`--ovs external`).
//!
//! `run` wires the pieces: install the plugin binary, start (or wait for) the chassis daemons,
//! configure the chassis, watch this node's pods into the [`pod_index::PodIndex`], serve the
//! CNI socket with [`handler::NodeHandler`], keep QoS in line with the annotations, and stop on
//! SIGTERM/SIGINT: leaving the data path as it is for a restart, or removing it all when the
//! install is being removed (`uninstall.rs`).

pub mod attachment;
pub mod chassis;
pub mod chassis_role;
pub mod handler;
pub mod install;
pub mod netlink;
pub mod pod_index;
pub mod preplug;
pub mod qos;
pub mod restore;
pub mod server;
pub mod tunnel;
pub mod uninstall;
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
use crate::ovn::Vswitch;
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
    /// Default: --ovs-run-dir (the `ovs-ovn` chassis pod runs ovn-controller there too).
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
    /// This node's underlay address, the Geneve tunnel endpoint (`ovn-encap-ip`). Not needed
    /// with `--tunnel-nic`: the tunnel address is the endpoint then.
    #[arg(long, env = "NODE_IP")]
    pub encap_ip: Option<IpAddr>,
    /// netdev datapath only: the NIC that carries tunnel traffic. The node puts it on a netdev
    /// bridge `br-phy` with the tunnel address (userspace tunnelling needs the endpoint address
    /// on an OVS bridge). Dedicate the NIC to the overlay: OVS owns it until uninstall.
    #[arg(long)]
    pub tunnel_nic: Option<String>,
    /// The tunnel endpoint with its prefix (`172.31.1.10/24`), put on `br-phy`. Default: the
    /// Node's annotation `kube-ovn.io/tunnel-address`, so one DaemonSet serves every node.
    #[arg(long, requires = "tunnel_nic")]
    pub tunnel_address: Option<ipnet::IpNet>,
    /// Let ovn-controller monitor all of the SB (faster first ADD on a switch, more memory).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub ovn_monitor_all: bool,
    /// Pod interface MTU when the subnet does not say (`Subnet.spec.mtu`, which the operator
    /// writes as `<provider>.kubernetes.io/mtu`). Default: the MTU of the link holding the
    /// tunnel endpoint minus the Geneve overhead ([`GENEVE_OVERHEAD`]). The operator passes
    /// `KubeOvn.spec.mtu` here.
    #[arg(long, value_parser = clap::value_parser!(u32).range(576..=65535))]
    pub mtu: Option<u32>,
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

/// What Geneve costs on the underlay, as Kube-OVN reckons it (`GeneveHeaderLength`): the
/// userspace datapath does not fragment, so a pod MTU above underlay − this stalls TCP.
pub const GENEVE_OVERHEAD: u32 = 100;

/// The pod MTU when no subnet sets one used if the underlay MTU is unknown.
const FALLBACK_MTU: u32 = 1400;

/// The node's default pod MTU: `--mtu` if given, else the underlay's MTU minus
/// [`GENEVE_OVERHEAD`], else [`FALLBACK_MTU`]. Pure.
pub fn default_pod_mtu(flag: Option<u32>, underlay: Option<u32>) -> u32 {
    flag.or_else(|| underlay.map(|m| m.saturating_sub(GENEVE_OVERHEAD).max(576)))
        .unwrap_or(FALLBACK_MTU)
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

/// Where this node's tunnels start: the encap IP, and with the netdev datapath the NIC and
/// address of `br-phy`.
#[derive(Clone, Debug, PartialEq)]
pub struct Underlay {
    pub encap_ip: IpAddr,
    pub tunnel: Option<(String, ipnet::IpNet)>,
}

/// The underlay from the flags and, when `--tunnel-nic` comes without `--tunnel-address`, the
/// Node annotation [`tunnel::TUNNEL_ADDRESS_ANNOTATION`] (`annotation`: `None` if absent).
/// With a tunnel address, it is the encap IP (NODE_IP is then only the node's own address).
pub fn resolve_underlay(args: &NodeArgs, annotation: Option<&str>) -> anyhow::Result<Underlay> {
    let Some(nic) = &args.tunnel_nic else {
        let encap_ip = args.encap_ip.context(
            "--encap-ip (env NODE_IP) is required: the node's address for Geneve tunnels",
        )?;
        return Ok(Underlay {
            encap_ip,
            tunnel: None,
        });
    };
    if args.datapath != Datapath::Netdev {
        anyhow::bail!("--tunnel-nic/--tunnel-address are for --datapath netdev only");
    }
    let address = match args.tunnel_address {
        Some(a) => a,
        None => tunnel::endpoint_from_annotation(&args.node_name, annotation)?,
    };
    if let Some(ip) = args.encap_ip.filter(|ip| *ip != address.addr()) {
        info!(node_ip = %ip, tunnel_address = %address,
            "tunnels start at the tunnel address, not at the node IP");
    }
    Ok(Underlay {
        encap_ip: address.addr(),
        tunnel: Some((nic.clone(), address)),
    })
}

/// `get nodes/<node>`: the tunnel address annotation, if any.
async fn tunnel_annotation(client: &kube::Client, node: &str) -> anyhow::Result<Option<String>> {
    let api: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
    let n = api
        .get(node)
        .await
        .with_context(|| format!("reading node {node} for its tunnel address"))?;
    Ok(n.metadata
        .annotations
        .and_then(|mut a| a.remove(tunnel::TUNNEL_ADDRESS_ANNOTATION)))
}

/// Runs `step` unless `stop` turns true first (then `None`).
async fn until_stopped<T>(
    stop: &mut watch::Receiver<bool>,
    step: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        out = step => Some(out),
        _ = stop.wait_for(|s| *s) => None,
    }
}

/// Runs the node role until SIGTERM or SIGINT. On the way out it asks whether the install is
/// being removed ([`uninstall::install_state`]) and, if so, removes what it created.
pub async fn run(args: NodeArgs) -> anyhow::Result<()> {
    let (stop_tx, mut stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let client = kube::Client::try_default()
        .await
        .context("building the Kubernetes client (KUBECONFIG or in-cluster config)")?;
    let annotation = match (&args.tunnel_nic, args.tunnel_address) {
        (Some(_), None) => tunnel_annotation(&client, &args.node_name).await?,
        _ => None,
    };
    let underlay = resolve_underlay(&args, annotation.as_deref())?;
    let installed = install::install_self(&args.cni_bin_dir)?;
    info!(plugin = %installed.display(), "CNI plugin installed");

    let layout = ChassisLayout {
        run_dir: args.ovs_run_dir.clone(),
    };
    let db_endpoint = match args.ovs {
        OvsMode::Embedded => layout.db_endpoint(),
        OvsMode::External => args.ovs_db.clone(),
    };
    let ovn_run_dir = args
        .ovn_run_dir
        .clone()
        .unwrap_or_else(|| layout.run_dir.clone());
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
    let identity = chassis::ChassisIdentity {
        node_name: args.node_name.clone(),
        ovn_remote: args.ovn_sb.clone(),
        encap_ip: underlay.encap_ip,
        datapath: args.datapath,
        monitor_all: args.ovn_monitor_all,
    };
    let node = NodeSetup {
        args: &args,
        client: &client,
        identity: &identity,
        underlay: &underlay,
        ovn_run_dir,
    };
    let vswitch = match args.ovs {
        OvsMode::Embedded => until_stopped(
            &mut stop_rx,
            chassis::connect(
                &db_endpoint,
                Some(tokio::time::Instant::now() + Duration::from_secs(30)),
            ),
        )
        .await
        .transpose()?,
        OvsMode::External => until_stopped(&mut stop_rx, chassis::connect(&db_endpoint, None))
            .await
            .transpose()?,
    };
    let outcome = match &vswitch {
        Some(vswitch) => node.serve(vswitch, &mut daemons, specs, stop_rx).await,
        None => Ok(()),
    };
    let removed = match uninstall::install_state(Some(&client)).await {
        uninstall::InstallState::Installed => false,
        uninstall::InstallState::Unknown(why) => {
            warn!(reason = %why, "cannot tell whether kube-ovn is being uninstalled; leaving the node as it is");
            false
        }
        uninstall::InstallState::Removed => {
            info!(
                "KubeOvn {} is gone or being deleted: uninstalling from the node",
                crate::api::kubeovn::KUBE_OVN_SINGLETON
            );
            match &vswitch {
                Some(vswitch) => {
                    let tunnel_nic = underlay.tunnel.as_ref().map(|(nic, _)| nic.as_str());
                    uninstall::remove_node_install(
                        vswitch,
                        &args.cni_bin_dir,
                        &identity,
                        tunnel_nic,
                    )
                    .await;
                }
                None => {
                    let _ = std::fs::remove_file(args.cni_bin_dir.join(install::PLUGIN_NAME));
                    info!(
                        "uninstalled the CNI plugin; the Open_vSwitch database was never reached"
                    );
                }
            }
            true
        }
    };
    for d in daemons.into_iter().rev() {
        info!(daemon = %d.name, "stopping");
        d.stop().await;
    }
    if removed && args.ovs == OvsMode::Embedded {
        chassis_role::remove_chassis_files(&layout);
    }
    outcome
}

/// What the serving part of the node role works from.
struct NodeSetup<'a> {
    args: &'a NodeArgs,
    client: &'a kube::Client,
    identity: &'a chassis::ChassisIdentity,
    underlay: &'a Underlay,
    ovn_run_dir: PathBuf,
}

impl NodeSetup<'_> {
    /// Configures the chassis, then serves CNI until `stop` turns true.
    async fn serve(
        self,
        vswitch: &Vswitch,
        daemons: &mut Vec<Supervised>,
        later: Vec<crate::ovn::daemons::DaemonSpec>,
        mut stop_rx: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let args = self.args;
        let Some(configured) =
            until_stopped(&mut stop_rx, chassis::configure(vswitch, self.identity)).await
        else {
            return Ok(());
        };
        configured?;
        for spec in later {
            daemons.push(supervise(spec, Backoff::default()));
        }
        let mut tunnel_task = None;
        if let Some((nic, address)) = &self.underlay.tunnel {
            // ovs-vswitchd makes br-phy's interface; the chassis pod may start it after us.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
            let Some(ready) = until_stopped(
                &mut stop_rx,
                tunnel::ensure_tunnel_bridge(vswitch, nic, *address, deadline),
            )
            .await
            else {
                return Ok(());
            };
            ready.context("setting up the userspace tunnel endpoint")?;
            tunnel_task = Some(tokio::spawn(tunnel::keep_endpoint(
                nic.clone(),
                *address,
                stop_rx.clone(),
            )));
        }

        let mtu = match args.mtu {
            Some(m) => m,
            None => {
                let underlay = match netlink::Netlink::new() {
                    Ok(nl) => nl.mtu_of_address(self.underlay.encap_ip).await,
                    Err(e) => Err(e),
                };
                let underlay = underlay.unwrap_or_else(|e| {
                    warn!(error = %e, "reading the underlay MTU");
                    None
                });
                if underlay.is_none() {
                    warn!(encap_ip = %self.underlay.encap_ip, fallback = FALLBACK_MTU,
                        "no link holds the tunnel endpoint; pod MTU falls back (set --mtu or KubeOvn spec.mtu)");
                }
                default_pod_mtu(None, underlay)
            }
        };
        info!(mtu, "pod interface MTU unless the subnet sets one");

        let pods = Arc::new(pod_index::PodIndex::new());
        let watch_task = tokio::spawn(watch_pods(
            self.client.clone(),
            args.node_name.clone(),
            pods.clone(),
            stop_rx.clone(),
        ));
        let qos_task = tokio::spawn(qos::run(
            pods.clone(),
            vswitch.clone(),
            args.datapath,
            Some(Arc::new(crate::operator::events::Notifier::for_controller(
                self.client.clone(),
                crate::operator::install::render::KUBE_OVN_CNI,
            ))),
            stop_rx.clone(),
        ));

        let handler = Arc::new(
            NodeHandler::new(
                pods.clone(),
                vswitch.clone(),
                HandlerConfig {
                    bridge: chassis::INTEGRATION_BRIDGE.to_string(),
                    datapath: args.datapath,
                    mtu,
                    annotation_timeout: args.annotation_timeout,
                    ovn_installed_timeout: args.ovn_installed_timeout,
                    ovn_run_dir: self.ovn_run_dir,
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
        let restore_task = tokio::spawn({
            let (pods, vswitch, handler) = (pods.clone(), vswitch.clone(), handler.clone());
            let mut stop = stop_rx.clone();
            async move {
                let mut changes = pods.subscribe();
                // Once, with the first full list of this node's pods.
                while !pods.is_synced() {
                    tokio::select! {
                        r = changes.changed() => if r.is_err() { return },
                        _ = stop.wait_for(|s| *s) => return,
                    }
                }
                until_stopped(&mut stop, restore::restore_lost(&pods, &vswitch, &handler)).await;
            }
        });
        let listener = server::bind(&args.cni_socket)?;
        info!(socket = %args.cni_socket.display(), node = %args.node_name, "serving CNI requests");
        let mut served_stop = stop_rx.clone();
        let served = server::serve(listener, handler, async move {
            let _ = served_stop.wait_for(|s| *s).await;
        })
        .await;
        let _ = std::fs::remove_file(&args.cni_socket);
        let _ = qos_task.await;
        if let Some(task) = preplug_task {
            let _ = task.await;
        }
        let _ = restore_task.await;
        if let Some(task) = tunnel_task {
            let _ = task.await;
        }
        let _ = watch_task.await;
        info!("node role stopped");
        served.with_context(|| format!("serving {}", args.cni_socket.display()))
    }
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

    #[test]
    fn the_default_pod_mtu_leaves_room_for_geneve() {
        assert_eq!(default_pod_mtu(None, Some(1500)), 1400);
        assert_eq!(default_pod_mtu(None, Some(9000)), 8900);
        assert_eq!(default_pod_mtu(Some(1300), Some(9000)), 1300);
        assert_eq!(default_pod_mtu(None, None), 1400);
        assert_eq!(default_pod_mtu(None, Some(600)), 576);
    }
}
