//! The simulated nodes as a whole, without any API: their namespaces and wiring, their
//! private directories under one state directory, and the cluster default network (eth0) each
//! node's pods get. `Fabric::up` builds it, `Fabric::down` (or drop) removes every namespace it
//! made; nothing is left in the host network namespace at any time.

use std::hash::{Hash, Hasher};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use super::delegate::Delegate;
use super::node::{self, Node, NodeError};
use super::sandbox::PluginSettings;

/// Name of the cluster default network, as its conflist (and network-status) calls it.
pub const PRIMARY_NETWORK: &str = "kube-sim-primary";
/// The bridge each node's pods hang on (inside the node).
pub const PRIMARY_BRIDGE: &str = "ksim0";

/// How to build the nodes.
#[derive(Debug, Clone)]
pub struct FabricConfig {
    pub node_names: Vec<String>,
    /// Holds `<node>/…` private directories; created if missing.
    pub state_dir: PathBuf,
    /// Directories searched (in order, as the node sees them) for delegate plugins; the
    /// node's `/opt/cni/bin` and Debian's `/usr/lib/cni` are appended.
    pub cni_bin_dirs: Vec<PathBuf>,
    /// Node `i` (from 0) gets pod CIDR `<first two octets>.(i * 2^(24 - len)).0/len`, `len`
    /// being `pod_prefix_len`: `<a>.<b>.i.0/24` by default.
    pub cluster_cidr: Ipv4Addr,
    /// Prefix length of each node's pod CIDR, 16..=24 (default 24, about 250 pods a node).
    pub pod_prefix_len: u8,
    /// Node `i` gets underlay address `<first three octets>.(10 + i)/24`, and tunnel address
    /// `<first two octets>.<third + 1>.(10 + i)/24` (see `node::TUNNEL_NIC`).
    pub underlay_net: Ipv4Addr,
    pub plugin_timeout: Duration,
    /// An "external" network outside the cluster (see [`ExternalNetwork`]), when set: the
    /// /24 it numbers from.
    pub external_net: Option<Ipv4Addr>,
}

/// The network outside the cluster a VPC NAT gateway reaches: a bridge in the underlay
/// namespace, each node's [`EXTERNAL_NIC`] plugged into it (no address: macvlan's master),
/// and one external host, namespace `<prefix>-external`, whose `eth0` holds the router
/// address (`<net>.1/24`) and whose loopback holds [`BEYOND_ROUTER`], an address only
/// reachable through that router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalNetwork {
    pub netns: String,
    /// `<net>.0/24`.
    pub cidr: String,
    /// The router (and external host) address, `<net>.1`.
    pub router: Ipv4Addr,
    pub beyond: Ipv4Addr,
}

/// Each node's NIC on the external network.
pub const EXTERNAL_NIC: &str = "ext0";
/// An address on the external host's loopback (TEST-NET-2), reached via the router.
pub const BEYOND_ROUTER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

impl FabricConfig {
    /// `nodes` nodes named `node-1` … under `state_dir`, with defaults for the rest.
    pub fn new(nodes: usize, state_dir: impl Into<PathBuf>) -> FabricConfig {
        FabricConfig {
            node_names: (1..=nodes).map(|i| format!("node-{i}")).collect(),
            state_dir: state_dir.into(),
            cni_bin_dirs: Vec::new(),
            cluster_cidr: Ipv4Addr::new(10, 244, 0, 0),
            pod_prefix_len: 24,
            // Away from hack/ovn-sandbox.sh's 172.30.0.0/24.
            underlay_net: Ipv4Addr::new(172, 31, 0, 0),
            plugin_timeout: Duration::from_secs(120),
            external_net: None,
        }
    }
}

/// The running nodes.
#[derive(Debug)]
pub struct Fabric {
    /// Prefix of every namespace this fabric made (unique per state directory).
    pub prefix: String,
    pub nodes: Vec<Node>,
    pub plugins: PluginSettings,
    pub external: Option<ExternalNetwork>,
}

impl Fabric {
    pub async fn up(config: &FabricConfig) -> Result<Fabric, NodeError> {
        let prefix = namespace_prefix(&config.state_dir);
        let [u1, u2, u3, _] = config.underlay_net.octets();
        let nodes: Vec<Node> = config
            .node_names
            .iter()
            .enumerate()
            .map(|(i, name)| Node {
                name: name.clone(),
                index: i,
                netns: format!("{prefix}-{name}"),
                state_dir: config.state_dir.join(name),
                underlay_ip: Ipv4Addr::new(u1, u2, u3, 10 + i as u8),
                pod_cidr: pod_cidr(config.cluster_cidr, config.pod_prefix_len, i),
                tunnel_ip: Ipv4Addr::new(u1, u2, u3.wrapping_add(1), 10 + i as u8),
            })
            .collect();
        let mut cni_path = config.cni_bin_dirs.clone();
        for dir in ["/opt/cni/bin", "/usr/lib/cni"] {
            if !cni_path.iter().any(|p| p == Path::new(dir)) {
                cni_path.push(PathBuf::from(dir));
            }
        }
        let external = config.external_net.map(|net| {
            let [a, b, c, _] = net.octets();
            ExternalNetwork {
                netns: format!("{prefix}-external"),
                cidr: format!("{a}.{b}.{c}.0/24"),
                router: Ipv4Addr::new(a, b, c, 1),
                beyond: BEYOND_ROUTER,
            }
        });
        let fabric = Fabric {
            prefix: prefix.clone(),
            nodes,
            external,
            plugins: PluginSettings {
                cni_path,
                timeout: config.plugin_timeout,
            },
        };
        if !node::netns_with_prefix(&format!("{prefix}-")).is_empty() {
            return Err(NodeError::Setup {
                node: "*".into(),
                what: format!("namespaces {prefix}-*"),
                reason: format!(
                    "already exist (another simulator on state dir {}?)",
                    config.state_dir.display()
                ),
            });
        }
        // A node starts empty: leftovers of an earlier run (host-local leases, caches) go.
        for node in &fabric.nodes {
            if node.state_dir.exists() {
                std::fs::remove_dir_all(&node.state_dir).map_err(|e| NodeError::Setup {
                    node: node.name.clone(),
                    what: format!("clear {}", node.state_dir.display()),
                    reason: e.to_string(),
                })?;
            }
        }
        // On failure the drop of `fabric` removes what was made.
        node::wire_nodes(&prefix, &fabric.nodes).await?;
        if let Some(external) = &fabric.external {
            node::wire_external(&prefix, &fabric.nodes, external).await?;
        }
        for node in &fabric.nodes {
            let conf = node.host_path(Path::new("/etc/cni/net.d/10-kube-sim-primary.conflist"));
            let text = serde_json::to_string_pretty(&primary_conflist(node)).expect("JSON");
            std::fs::write(&conf, text).map_err(|e| NodeError::Setup {
                node: node.name.clone(),
                what: format!("write {}", conf.display()),
                reason: e.to_string(),
            })?;
        }
        Ok(fabric)
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Prefix of pod network namespace names (`<prefix>-p-<container id[..12]>`).
    pub fn pod_netns_prefix(&self) -> String {
        format!("{}-p-", self.prefix)
    }

    /// The cluster default network of `node`, as a delegate for eth0.
    pub fn primary_delegate(&self, node: &Node) -> Delegate {
        Delegate::cluster_default(primary_conflist(node), "eth0")
    }

    /// Removes every namespace this fabric made (pods' included). Pod sandboxes should be
    /// deleted first to run their CNI DELs; this is the backstop.
    pub async fn down(&self) {
        for ns in node::netns_with_prefix(&format!("{}-", self.prefix)) {
            // Whatever still runs in a node (a daemon outliving its parent) goes with it.
            kill_processes_in(&ns);
            if let Err(e) = node::del_netns(&ns).await {
                tracing::warn!(netns = %ns, error = %e, "removing namespace");
            }
        }
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        for ns in node::netns_with_prefix(&format!("{}-", self.prefix)) {
            kill_processes_in(&ns);
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &ns])
                .status();
        }
    }
}

/// SIGKILLs every process whose network namespace is `ns`.
fn kill_processes_in(ns: &str) {
    let Ok(out) = std::process::Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
    else {
        return;
    };
    for pid in String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Pod CIDR of node `i` (from 0): see [`FabricConfig::cluster_cidr`]; `len` is held to 16..=24.
fn pod_cidr(cluster: Ipv4Addr, len: u8, i: usize) -> (Ipv4Addr, u8) {
    let [a, b, _, _] = cluster.octets();
    let len = len.clamp(16, 24);
    (Ipv4Addr::new(a, b, (i << (24 - len)) as u8, 0), len)
}

/// The node's cluster default network: Debian's `bridge` with `host-local` on the node's pod
/// CIDR, the bridge being the pods' default gateway.
fn primary_conflist(node: &Node) -> Value {
    let (net, len) = node.pod_cidr;
    json!({
        "cniVersion": "1.0.0",
        "name": PRIMARY_NETWORK,
        "plugins": [{
            "type": "bridge",
            "bridge": PRIMARY_BRIDGE,
            "isGateway": true,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": format!("{net}/{len}"), "gateway": node.pod_gateway().to_string()}]],
                "routes": [{"dst": "0.0.0.0/0", "gw": node.pod_gateway().to_string()}]
            }
        }]
    })
}

/// `ksim` + 8 hex digits derived from the state directory: parallel simulators never collide.
fn namespace_prefix(state_dir: &Path) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    state_dir.hash(&mut hasher);
    format!("ksim{:08x}", hasher.finish() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_cidrs_are_consecutive_blocks_of_the_asked_size() {
        let cluster = Ipv4Addr::new(10, 244, 0, 0);
        assert_eq!(pod_cidr(cluster, 24, 0), (Ipv4Addr::new(10, 244, 0, 0), 24));
        assert_eq!(pod_cidr(cluster, 24, 1), (Ipv4Addr::new(10, 244, 1, 0), 24));
        assert_eq!(pod_cidr(cluster, 22, 1), (Ipv4Addr::new(10, 244, 4, 0), 22));
        assert_eq!(pod_cidr(cluster, 22, 2), (Ipv4Addr::new(10, 244, 8, 0), 22));
        assert_eq!(pod_cidr(cluster, 8, 0), (Ipv4Addr::new(10, 244, 0, 0), 16));
    }
}
