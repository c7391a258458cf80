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
    /// Node `i` gets pod CIDR `<first two octets>.i.0/24`.
    pub cluster_cidr: Ipv4Addr,
    /// Node `i` gets underlay address `<first three octets>.(10 + i)/24`.
    pub underlay_net: Ipv4Addr,
    pub plugin_timeout: Duration,
}

impl FabricConfig {
    /// `nodes` nodes named `node-1` … under `state_dir`, with defaults for the rest.
    pub fn new(nodes: usize, state_dir: impl Into<PathBuf>) -> FabricConfig {
        FabricConfig {
            node_names: (1..=nodes).map(|i| format!("node-{i}")).collect(),
            state_dir: state_dir.into(),
            cni_bin_dirs: Vec::new(),
            cluster_cidr: Ipv4Addr::new(10, 244, 0, 0),
            // Away from hack/ovn-sandbox.sh's 172.30.0.0/24.
            underlay_net: Ipv4Addr::new(172, 31, 0, 0),
            plugin_timeout: Duration::from_secs(120),
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
}

impl Fabric {
    pub async fn up(config: &FabricConfig) -> Result<Fabric, NodeError> {
        let prefix = namespace_prefix(&config.state_dir);
        let [a, b, _, _] = config.cluster_cidr.octets();
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
                pod_cidr: (Ipv4Addr::new(a, b, i as u8, 0), 24),
            })
            .collect();
        let mut cni_path = config.cni_bin_dirs.clone();
        for dir in ["/opt/cni/bin", "/usr/lib/cni"] {
            if !cni_path.iter().any(|p| p == Path::new(dir)) {
                cni_path.push(PathBuf::from(dir));
            }
        }
        let fabric = Fabric {
            prefix: prefix.clone(),
            nodes,
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
        // On failure the drop of `fabric` removes what was made.
        node::wire_nodes(&prefix, &fabric.nodes).await?;
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
            if let Err(e) = node::del_netns(&ns).await {
                tracing::warn!(netns = %ns, error = %e, "removing namespace");
            }
        }
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        for ns in node::netns_with_prefix(&format!("{}-", self.prefix)) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &ns])
                .status();
        }
    }
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
                "routes": [{"dst": "0.0.0.0/0"}]
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
