//! The `node` role: CNI server, netlink, OVS port plumbing and QoS, CNI install.

pub mod pod_index;

/// Flags of `kube-ovn node`.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeArgs {
    /// Unix socket the CNI shim talks to.
    #[arg(long, default_value = "/run/openvswitch/kube-ovn-daemon.sock")]
    pub cni_socket: std::path::PathBuf,
}

/// Runs the node role until it is stopped.
pub async fn run(_args: NodeArgs) -> anyhow::Result<()> {
    anyhow::bail!("the node role is not implemented yet")
}

pub mod install;
pub mod netlink;
pub mod server;
pub mod tunnel;
