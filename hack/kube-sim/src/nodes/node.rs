//! One simulated node: its network namespace, its private directories, and the one way to run
//! a process "on" it (`Node::command`). Also the shared underlay (a bridge in its own
//! namespace) the nodes are wired to. Nothing here touches the host network namespace.
//!
//! Mount namespace design: every process started with `Node::command` enters the node's
//! network namespace and gets a fresh mount namespace (`unshare(CLONE_NEWNS)`, `/` made
//! recursively slave so later host mounts such as new `/run/netns` entries still propagate in)
//! with the node's private directories bind-mounted over `/run/openvswitch`, `/opt/cni/bin`,
//! `/etc/cni/net.d`, `/var/lib/cni`, `/etc/openvswitch` and `/var/lib/kube-ovn`. All processes of a node therefore see the same files
//! there (a daemon socket created by one is reached by the others), and no long-lived helper
//! process has to be kept alive. `Node::command_in` does the same in another network namespace
//! (a pod's) with extra bind mounts (a container's volumes). This happens in `pre_exec`, after fork, where the child is
//! single-threaded (setns into a mount namespace is refused to threaded processes).

use std::ffi::{CStr, CString};
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

/// The node-private directories: (path inside the node, directory name under the node's state
/// directory).
pub const NODE_DIRS: [(&str, &str); 6] = [
    ("/run/openvswitch", "run-openvswitch"),
    ("/opt/cni/bin", "opt-cni-bin"),
    ("/etc/cni/net.d", "etc-cni-net.d"),
    ("/var/lib/cni", "var-lib-cni"),
    ("/etc/openvswitch", "etc-openvswitch"),
    ("/var/lib/kube-ovn", "var-lib-kube-ovn"),
];

/// Where named network namespaces live (as `ip netns` keeps them).
pub const NETNS_DIR: &str = "/run/netns";

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("node {node}: {what}: {reason}")]
    Setup {
        node: String,
        what: String,
        reason: String,
    },
}

/// A simulated node.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    /// 0-based position; decides addresses.
    pub index: usize,
    /// Name of the node's network namespace (`/run/netns/<netns>`).
    pub netns: String,
    /// Host directory holding the node's private directories.
    pub state_dir: PathBuf,
    /// The node's address on the underlay (`ul0`), its InternalIP.
    pub underlay_ip: Ipv4Addr,
    /// The node's pod CIDR for the primary network (eth0).
    pub pod_cidr: (Ipv4Addr, u8),
    /// An address on the tunnel segment, free for the overlay to put on [`TUNNEL_NIC`]
    /// (or on a bridge holding it); the simulator itself assigns it to nothing.
    pub tunnel_ip: Ipv4Addr,
}

/// A second, address-less link of every node on its own segment (bridge `br1` of the
/// underlay namespace). An overlay that must own its NIC uses it — OVS userspace
/// tunnelling puts the tunnel address on an OVS bridge holding the NIC — without
/// disturbing `ul0`, which carries the node address and the primary network's routes.
pub const TUNNEL_NIC: &str = "ul1";

impl Node {
    pub fn netns_path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.netns)
    }

    /// The host path behind a path as the node's processes see it (the node-private
    /// directories are bind mounts; everything else is shared with the host).
    pub fn host_path(&self, node_path: &Path) -> PathBuf {
        for (inside, dir) in NODE_DIRS {
            if let Ok(rest) = node_path.strip_prefix(inside) {
                return self.state_dir.join(dir).join(rest);
            }
        }
        node_path.to_path_buf()
    }

    /// The gateway of the node's pod CIDR (the primary bridge's address).
    pub fn pod_gateway(&self) -> Ipv4Addr {
        let (net, _) = self.pod_cidr;
        Ipv4Addr::from(u32::from(net) + 1)
    }

    /// A command that runs `program` inside this node: its network namespace and a mount
    /// namespace with the node-private directories. Use this for everything a node runs
    /// (CNI plugins, `kube-ovn node`, `ovs-vsctl` against the node's OVS, …).
    pub fn command(
        &self,
        program: impl AsRef<std::ffi::OsStr>,
    ) -> Result<tokio::process::Command, NodeError> {
        self.command_in(&self.netns_path(), &[], program)
    }

    /// Like `command`, but in the network namespace at `netns` (a pod's) and with `binds`
    /// (host path, path inside; the mount point must exist) mounted after the node's own.
    pub fn command_in(
        &self,
        netns: &Path,
        binds: &[(PathBuf, PathBuf)],
        program: impl AsRef<std::ffi::OsStr>,
    ) -> Result<tokio::process::Command, NodeError> {
        let setup_error = |what: &str, reason: String| NodeError::Setup {
            node: self.name.clone(),
            what: what.to_string(),
            reason,
        };
        let netns: OwnedFd = std::fs::File::open(netns)
            .map_err(|e| setup_error("open network namespace", e.to_string()))?
            .into();
        // Everything the child needs is prepared here: no allocation after fork.
        let to_c = |p: &Path| {
            CString::new(p.as_os_str().as_bytes())
                .map_err(|e| setup_error("path with NUL", e.to_string()))
        };
        let node_binds = NODE_DIRS
            .iter()
            .map(|(inside, dir)| (self.state_dir.join(dir), PathBuf::from(inside)));
        let binds = node_binds
            .chain(binds.iter().cloned())
            .map(|(source, target)| Ok((to_c(&source)?, to_c(&target)?)))
            .collect::<Result<Vec<_>, NodeError>>()?;
        let root = CString::new("/").expect("no NUL in /");
        let mut command = tokio::process::Command::new(program);
        // SAFETY: the closure only makes syscalls (setns, unshare, mount) on data prepared
        // before fork; it neither allocates nor takes locks.
        unsafe {
            command.pre_exec(move || {
                setns(netns.as_fd(), CloneFlags::CLONE_NEWNET)?;
                unshare(CloneFlags::CLONE_NEWNS)?;
                mount(
                    None::<&CStr>,
                    root.as_c_str(),
                    None::<&CStr>,
                    MsFlags::MS_REC | MsFlags::MS_SLAVE,
                    None::<&CStr>,
                )?;
                for (source, target) in &binds {
                    mount(
                        Some(source.as_c_str()),
                        target.as_c_str(),
                        None::<&CStr>,
                        MsFlags::MS_BIND,
                        None::<&CStr>,
                    )?;
                }
                Ok(())
            });
        }
        Ok(command)
    }
}

/// A TCP listener on `addr` inside the node's network namespace (the socket is created by a
/// short-lived thread that enters the namespace; it stays bound there).
pub(crate) fn listen_inside(
    node: &Node,
    addr: std::net::SocketAddr,
) -> std::io::Result<std::net::TcpListener> {
    in_netns(&node.netns_path(), move || {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    })
}

/// Runs `make` on a short-lived thread inside the network namespace at `netns`: a socket it
/// creates stays in that namespace.
pub(crate) fn in_netns<T: Send + 'static>(
    netns: &Path,
    make: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let netns = std::fs::File::open(netns)?;
    std::thread::spawn(move || {
        setns(netns.as_fd(), CloneFlags::CLONE_NEWNET)?;
        make()
    })
    .join()
    .map_err(|_| std::io::Error::other("the thread entering a network namespace panicked"))?
}

/// Runs `ip` with `args` (test-bed plumbing: node and pod namespaces, underlay wiring).
pub(crate) async fn ip(args: &[&str]) -> Result<(), String> {
    let output = tokio::process::Command::new("ip")
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Creates the named network namespace with `lo` up.
pub(crate) async fn add_netns(name: &str) -> Result<(), String> {
    ip(&["netns", "add", name]).await?;
    ip(&["-n", name, "link", "set", "lo", "up"]).await
}

/// Deletes the named network namespace; a missing one is fine.
pub(crate) async fn del_netns(name: &str) -> Result<(), String> {
    if !Path::new(NETNS_DIR).join(name).exists() {
        return Ok(());
    }
    ip(&["netns", "del", name]).await
}

/// Names of the network namespaces whose name starts with `prefix`.
pub fn netns_with_prefix(prefix: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// Pids of the processes whose environment mentions `needle` (for tests: CNI plugins carry
/// their CNI_NETNS, process-pod containers their KUBECONFIG under the state directory).
pub fn processes_mentioning(needle: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .filter(|e| {
            std::fs::read(e.path().join("environ"))
                .map(|env| String::from_utf8_lossy(&env).contains(needle))
                .unwrap_or(false)
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// The wiring of all nodes: namespace `<prefix>-ul` with bridge `br0`; per node a namespace
/// `<prefix>-<node>` with `ul0` (its underlay address) whose peer is plugged into `br0`, IP
/// forwarding on, and a route to every other node's pod CIDR via that node's underlay address.
pub(crate) async fn wire_nodes(prefix: &str, nodes: &[Node]) -> Result<(), NodeError> {
    let underlay = format!("{prefix}-ul");
    let fail = |node: &str, what: &str, reason: String| NodeError::Setup {
        node: node.to_string(),
        what: what.to_string(),
        reason,
    };
    add_netns(&underlay)
        .await
        .map_err(|e| fail("underlay", "create namespace", e))?;
    for step in [
        vec!["-n", &underlay, "link", "add", "br0", "type", "bridge"],
        vec!["-n", &underlay, "link", "set", "br0", "up"],
        vec!["-n", &underlay, "link", "add", "br1", "type", "bridge"],
        vec!["-n", &underlay, "link", "set", "br1", "up"],
    ] {
        ip(&step).await.map_err(|e| fail("underlay", "bridge", e))?;
    }
    for node in nodes {
        let ns = node.netns.as_str();
        let peer = format!("v{}", node.index);
        let tunnel_peer = format!("t{}", node.index);
        let address = format!("{}/24", node.underlay_ip);
        add_netns(ns)
            .await
            .map_err(|e| fail(&node.name, "create namespace", e))?;
        for step in [
            vec![
                "link", "add", "ul0", "netns", ns, "type", "veth", "peer", "name", &peer, "netns",
                &underlay,
            ],
            vec!["-n", &underlay, "link", "set", &peer, "master", "br0", "up"],
            vec!["-n", ns, "addr", "add", &address, "dev", "ul0"],
            vec!["-n", ns, "link", "set", "ul0", "up"],
            vec![
                "link",
                "add",
                TUNNEL_NIC,
                "netns",
                ns,
                "type",
                "veth",
                "peer",
                "name",
                &tunnel_peer,
                "netns",
                &underlay,
            ],
            vec![
                "-n",
                &underlay,
                "link",
                "set",
                &tunnel_peer,
                "master",
                "br1",
                "up",
            ],
            vec!["-n", ns, "link", "set", TUNNEL_NIC, "up"],
        ] {
            ip(&step)
                .await
                .map_err(|e| fail(&node.name, "underlay", e))?;
        }
        for other in nodes.iter().filter(|o| o.index != node.index) {
            let dst = format!("{}/{}", other.pod_cidr.0, other.pod_cidr.1);
            let via = other.underlay_ip.to_string();
            ip(&["-n", ns, "route", "add", &dst, "via", &via, "dev", "ul0"])
                .await
                .map_err(|e| fail(&node.name, "route to other nodes' pods", e))?;
        }
        for (inside, dir) in NODE_DIRS {
            // The mount point must exist on the host too (an empty directory if it did not).
            for path in [node.state_dir.join(dir), PathBuf::from(inside)] {
                std::fs::create_dir_all(&path).map_err(|e| {
                    fail(
                        &node.name,
                        &format!("directory {}", path.display()),
                        e.to_string(),
                    )
                })?;
            }
        }
        set_ip_forward(node)
            .await
            .map_err(|e| fail(&node.name, "ip_forward", e))?;
    }
    Ok(())
}

/// The external network ([`super::fabric::ExternalNetwork`]): bridge `br2` in the underlay
/// namespace, `ext0` in every node, and the external host.
pub(crate) async fn wire_external(
    prefix: &str,
    nodes: &[Node],
    external: &super::fabric::ExternalNetwork,
) -> Result<(), NodeError> {
    use super::fabric::EXTERNAL_NIC;
    let underlay = format!("{prefix}-ul");
    let fail = |node: &str, reason: String| NodeError::Setup {
        node: node.to_string(),
        what: "external network".to_string(),
        reason,
    };
    let host = external.netns.as_str();
    add_netns(host).await.map_err(|e| fail("external", e))?;
    let router = format!("{}/24", external.router);
    let beyond = format!("{}/32", external.beyond);
    for step in [
        vec!["-n", &underlay, "link", "add", "br2", "type", "bridge"],
        vec!["-n", &underlay, "link", "set", "br2", "up"],
        vec![
            "link", "add", "eth0", "netns", host, "type", "veth", "peer", "name", "xh", "netns",
            &underlay,
        ],
        vec!["-n", &underlay, "link", "set", "xh", "master", "br2", "up"],
        vec!["-n", host, "addr", "add", &router, "dev", "eth0"],
        vec!["-n", host, "link", "set", "eth0", "up"],
        vec!["-n", host, "link", "set", "lo", "up"],
        vec!["-n", host, "addr", "add", &beyond, "dev", "lo"],
    ] {
        ip(&step).await.map_err(|e| fail("external", e))?;
    }
    for node in nodes {
        let peer = format!("x{}", node.index);
        for step in [
            vec![
                "link",
                "add",
                EXTERNAL_NIC,
                "netns",
                &node.netns,
                "type",
                "veth",
                "peer",
                "name",
                &peer,
                "netns",
                &underlay,
            ],
            vec!["-n", &underlay, "link", "set", &peer, "master", "br2", "up"],
            vec!["-n", &node.netns, "link", "set", EXTERNAL_NIC, "up"],
        ] {
            ip(&step).await.map_err(|e| fail(&node.name, e))?;
        }
    }
    Ok(())
}

/// `net.ipv4.ip_forward=1` inside the node (sysctls under /proc/sys/net belong to the network
/// namespace of the process that opens them).
async fn set_ip_forward(node: &Node) -> Result<(), String> {
    let status = node
        .command("sh")
        .map_err(|e| e.to_string())?
        .args(["-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])
        .status()
        .await
        .map_err(|e| e.to_string())?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("writing ip_forward failed: {status}"))
    }
}
