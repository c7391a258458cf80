//! The node role's [`CniHandler`], the one place that sequences a CNI command. ADD waits (on
//! the pod index, not a poll) for the controller's annotations, then builds the pod end
//! (adopting the interface pre-plugged for the pod, `preplug.rs`: a macvlan in the pod netns
//! on its veth's peer; or a new veth with its peer in the pod netns), then configures the pod
//! end (`netlink/`) and plugs the host end into `br-int` (`ovn::vswitch`) as two concurrent
//! steps; plugging applies QoS (`qos.rs`), records the sandbox in the port's `external_ids`
//! and waits for `ovn-installed` through the OVSDB monitor; any failure after the pod end
//! exists undoes everything. DEL unplugs and deletes the host ends of the sandbox
//! (found by `external_ids:sandbox`, or by the name derived from container id and ifname), so
//! it needs no pod, annotation or netns. CHECK reads the interface and the OVS port back.
//! Health: OVS database connected, `br-int` present, ovn-controller connected to the SB.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::cni::protocol::{CniRequest, CniResponse};
use crate::cni::{CniError, ErrorCode};
use crate::ovn::external_ids;
use crate::ovn::vswitch::Vswitch;

use super::attachment::{self, host_veth_name, Wiring, WiringDefaults};
use super::chassis::Datapath;
use super::netlink::{self, Netlink};
use super::pod_index::PodIndex;
use super::preplug::{Prepared, Preplug};
use super::qos::apply_qos;
use super::server::CniHandler;
use super::unixctl;

/// How long CHECK waits for the pod to appear in the index.
const CHECK_POD_WAIT: Duration = Duration::from_secs(5);

/// What the handler needs to know about the node.
#[derive(Clone, Debug)]
pub struct HandlerConfig {
    pub bridge: String,
    pub datapath: Datapath,
    /// Pod MTU when the annotations do not say.
    pub mtu: u32,
    /// How long ADD waits for the controller's annotations.
    pub annotation_timeout: Duration,
    /// How long ADD waits for ovn-controller to mark the port installed.
    pub ovn_installed_timeout: Duration,
    /// Where ovn-controller keeps its pidfile and control socket (for health).
    pub ovn_run_dir: PathBuf,
}

/// The node's CNI handler.
pub struct NodeHandler {
    pods: Arc<PodIndex>,
    vswitch: Vswitch,
    netlink: Netlink,
    preplug: Arc<Preplug>,
    config: HandlerConfig,
}

fn ovs_error(op: &str, object: &str) -> impl FnOnce(crate::ovn::Error) -> CniError {
    let msg = format!("{op} {object}");
    move |e| CniError::new(ErrorCode::TryAgainLater, format!("{msg}: {e}"))
}

impl NodeHandler {
    /// Must be called inside a tokio runtime (it opens the node's rtnetlink socket).
    pub fn new(
        pods: Arc<PodIndex>,
        vswitch: Vswitch,
        config: HandlerConfig,
    ) -> Result<NodeHandler, netlink::NetlinkError> {
        let defaults = WiringDefaults {
            mtu: config.mtu,
            tx_checksum_off: config.datapath == Datapath::Netdev,
        };
        Ok(NodeHandler {
            preplug: Arc::new(Preplug::new(
                vswitch.clone(),
                config.bridge.clone(),
                defaults,
            )?),
            pods,
            vswitch,
            netlink: Netlink::new()?,
            config,
        })
    }

    /// The pre-plugged interfaces (for the pre-plug task).
    pub fn preplug(&self) -> Arc<Preplug> {
        self.preplug.clone()
    }

    /// The host ends of sandbox `container_id`'s interface `ifname`: those whose OVS
    /// interface records the sandbox (or, when `netns` is known, that netns: an interface
    /// rebuilt by `restore.rs` never learnt the sandbox id), then the name derived from both
    /// (which may not exist), so never empty.
    fn hosts_of(&self, container_id: &str, netns: &str, ifname: &str) -> Vec<String> {
        let mut hosts: Vec<String> = self
            .vswitch
            .interfaces_with_id(external_ids::SANDBOX, container_id)
            .unwrap_or_default()
            .into_iter()
            .filter(|i| i.pod_ifname() == Some(ifname))
            .map(|i| i.name)
            .collect();
        if !netns.is_empty() {
            for i in self.vswitch.our_interfaces().unwrap_or_default() {
                let same = i.pod_ifname() == Some(ifname)
                    && i.pod_netns()
                        .is_some_and(|p| same_file(p, Path::new(netns)));
                if same && !hosts.contains(&i.name) {
                    hosts.push(i.name);
                }
            }
        }
        let derived = host_veth_name(container_id, ifname);
        if !hosts.contains(&derived) {
            hosts.push(derived);
        }
        hosts
    }

    fn defaults(&self) -> WiringDefaults {
        self.preplug.defaults()
    }

    async fn wait_wiring(&self, req: &CniRequest) -> Result<Wiring, CniError> {
        let defaults = self.defaults();
        self.pods
            .wait_for(
                &req.pod_namespace,
                &req.pod_name,
                self.config.annotation_timeout,
                |pod| attachment::wiring(pod, req, defaults),
            )
            .await
            .map_err(|e| CniError::new(ErrorCode::TryAgainLater, e.to_string()))?
    }

    /// Plugs (or, when `preplugged`, records the sandbox on the plugged port), limits and
    /// waits; the caller undoes on error.
    async fn plug(
        &self,
        wiring: &Wiring,
        ids: &BTreeMap<String, String>,
        preplugged: bool,
    ) -> Result<(), CniError> {
        let host = wiring.veth.host_name.as_str();
        let started = Instant::now();
        if preplugged {
            self.vswitch
                .edit_interface_ids(host, ids, &[external_ids::PREPLUG_PEER])
                .await
                .map_err(ovs_error("recording the sandbox on", host))?;
        } else {
            self.vswitch
                .plug_interface(&self.config.bridge, host, ids)
                .await
                .map_err(ovs_error("plugging interface", host))?;
        }
        apply_qos(
            &self.vswitch,
            self.config.datapath,
            host,
            &wiring.veth.pod_netns,
            &wiring.veth.pod_ifname,
            wiring.qos,
        )
        .await?;
        let plugged = Instant::now();
        self.vswitch
            .wait_ovn_installed(host, plugged + self.config.ovn_installed_timeout)
            .await
            .map_err(|e| {
                CniError::new(
                    ErrorCode::TryAgainLater,
                    format!(
                        "interface {host} (iface-id {}) was not ovn-installed within {:?}: \
                         is the logical switch port created and ovn-controller connected? ({e})",
                        ids.get(external_ids::IFACE_ID)
                            .map(String::as_str)
                            .unwrap_or(""),
                        self.config.ovn_installed_timeout
                    ),
                )
            })?;
        info!(
            iface = host,
            preplugged,
            plug_ms = (plugged - started).as_secs_f64() * 1e3,
            ovn_installed_wait_ms = plugged.elapsed().as_secs_f64() * 1e3,
            "interface plugged and ovn-installed"
        );
        Ok(())
    }

    /// Builds the pod end (adopting `prepared`, else a new veth), then configures it and plugs
    /// the host end at once: ovn-controller's work (claim, flows, ovn-installed) overlaps
    /// ours, and a pre-plugged port is mostly done. The first failure stops the other step;
    /// the caller undoes.
    async fn wire(
        &self,
        wiring: &Wiring,
        ids: &BTreeMap<String, String>,
        prepared: Option<&Prepared>,
    ) -> Result<(), CniError> {
        let started = Instant::now();
        let pod_end = match prepared {
            Some(p) => self.netlink.adopt_veth(&wiring.veth, &p.peer).await,
            None => self.netlink.create_veth(&wiring.veth).await,
        }
        .map_err(|e| e.to_cni())?;
        let built = started.elapsed();
        let configure = async {
            pod_end
                .configure(&wiring.veth)
                .await
                .map_err(|e| e.to_cni())?;
            debug!(
                veth_ms = built.as_secs_f64() * 1e3,
                pod_end_ms = started.elapsed().as_secs_f64() * 1e3,
                "pod end configured"
            );
            Ok(())
        };
        tokio::try_join!(configure, self.plug(wiring, ids, prepared.is_some()))?;
        Ok(())
    }

    /// Removes the port (with its QoS rows) and the veth of `host`; nothing there is fine.
    /// Both at once: neither needs the other gone first.
    async fn remove(&self, host: &str) -> Result<(), CniError> {
        let (unplugged, deleted) = tokio::join!(
            self.vswitch.unplug_interface(host),
            self.netlink.delete_link(host)
        );
        unplugged.map_err(ovs_error("unplugging interface", host))?;
        deleted.map_err(|e| e.to_cni())?;
        Ok(())
    }
}

impl NodeHandler {
    /// Removes the OVS ports (and veths) this node plugged whose host end or pod netns no longer
    /// exists (pods that went while the daemon was down and whose DEL never came), and QoS rows
    /// nothing uses.
    /// Returns the interfaces removed.
    pub async fn collect_stale_ports(&self) -> Result<Vec<String>, CniError> {
        let interfaces = self
            .vswitch
            .our_interfaces()
            .map_err(ovs_error("listing", "interfaces"))?;
        let mut removed = Vec::new();
        for iface in interfaces {
            // A plain veth dies with its pod netns; an adopted pre-plugged one keeps its veth
            // (only the macvlan on it dies), so a recorded pod netns that is gone counts too.
            let netns_gone = iface.pod_netns().is_some_and(|netns| !netns.exists());
            if !netns_gone
                && self
                    .netlink
                    .link_index(&iface.name)
                    .await
                    .map_err(|e| e.to_cni())?
                    .is_some()
            {
                continue;
            }
            self.remove(&iface.name).await?;
            info!(iface = %iface.name, "removed the OVS port of a vanished pod interface");
            removed.push(iface.name);
        }
        self.vswitch
            .collect_qos_garbage()
            .await
            .map_err(ovs_error("collecting", "unused QoS rows"))?;
        Ok(removed)
    }
}

impl CniHandler for NodeHandler {
    async fn add(&self, req: CniRequest) -> Result<CniResponse, CniError> {
        if req.netns.is_empty() || !Path::new(&req.netns).exists() {
            return Err(CniError::new(
                ErrorCode::UnknownContainer,
                format!(
                    "netns {:?} of container {} does not exist",
                    req.netns, req.container_id
                ),
            ));
        }
        let started = Instant::now();
        let mut wiring = self.wait_wiring(&req).await?;
        debug!(
            wiring_ms = started.elapsed().as_secs_f64() * 1e3,
            "annotations read"
        );
        if req.ipam_only {
            // Another plugin (e.g. macvlan) builds the interface; it only needs the addresses.
            info!(pod = %req.pod_name, namespace = %req.pod_namespace, provider = %req.provider,
                ips = ?wiring.ips.iter().map(|i| i.address.to_string()).collect::<Vec<_>>(),
                "IPAM: answered the allocated addresses");
            return Ok(attachment::response(&wiring));
        }
        // Held until ADD returns: no pre-plug is built for this iface-id meanwhile.
        let mut ticket = self.preplug.claim(&wiring).await;
        if let Some(stale) = ticket.stale.take() {
            self.preplug.discard(&stale.host).await;
        }
        let prepared = ticket.prepared.take();
        if let Some(p) = &prepared {
            wiring.veth.host_name = p.host.clone();
        }
        let ids = attachment::interface_ids(
            &req.pod_name,
            &req.pod_namespace,
            &wiring,
            &req.container_id,
        );
        if let Err(e) = self.wire(&wiring, &ids, prepared.as_ref()).await {
            let host = wiring.veth.host_name.as_str();
            if let Err(undo) = self.remove(host).await {
                warn!(iface = host, error = %undo.msg, "undoing a failed ADD");
            }
            return Err(e);
        }
        // The live QoS pass now sees the sandbox and checks what vswitchd made of the rows.
        self.pods.touch();
        Ok(attachment::response(&wiring))
    }

    async fn del(&self, req: CniRequest) -> Result<(), CniError> {
        for host in self.hosts_of(&req.container_id, &req.netns, &req.ifname) {
            self.remove(&host).await?;
        }
        Ok(())
    }

    async fn check(&self, req: CniRequest) -> Result<(), CniError> {
        let fail = |msg: String| CniError::new(ErrorCode::Io, msg);
        // Right after a restart the index may still be filling: give it a moment.
        let pod = self
            .pods
            .wait_for(&req.pod_namespace, &req.pod_name, CHECK_POD_WAIT, |p| {
                Ok::<_, String>(p.clone())
            })
            .await
            .map_err(|e| CniError::new(ErrorCode::UnknownContainer, e.to_string()))?;
        let want = match attachment::wiring(&pod, &req, self.defaults()) {
            Ok(w) => w?,
            Err(reason) => {
                return Err(fail(format!(
                    "pod {}/{}: {reason}",
                    pod.namespace, pod.name
                )))
            }
        };
        let got = netlink::inspect(Path::new(&req.netns), &req.ifname)
            .await
            .map_err(|e| e.to_cni())?
            .ok_or_else(|| {
                fail(format!(
                    "interface {} is missing in {}",
                    req.ifname, req.netns
                ))
            })?;
        if got.mac != want.veth.mac {
            return Err(fail(format!(
                "interface {} has MAC {}, want {}",
                req.ifname, got.mac, want.veth.mac
            )));
        }
        if got.mtu != want.veth.mtu || !got.up {
            return Err(fail(format!(
                "interface {} has MTU {} (up: {}), want MTU {} and up",
                req.ifname, got.mtu, got.up, want.veth.mtu
            )));
        }
        if let Some(missing) = want
            .veth
            .addresses
            .iter()
            .find(|a| !got.addresses.contains(a))
        {
            return Err(fail(format!(
                "interface {} lacks address {missing}",
                req.ifname
            )));
        }
        if let Some(missing) = want.veth.routes.iter().find(|r| !got.routes.contains(r)) {
            return Err(fail(format!(
                "interface {} lacks route {} via {:?}",
                req.ifname, missing.dst, missing.gw
            )));
        }
        // The recorded host end if there is one, else the name derived for the plain path.
        let host = &self.hosts_of(&req.container_id, &req.netns, &req.ifname)[0];
        let iface = self
            .vswitch
            .interface(host)
            .map_err(ovs_error("reading interface", host))?
            .ok_or_else(|| fail(format!("OVS interface {host} is missing")))?;
        if iface.iface_id() != Some(want.iface_id.as_str()) {
            return Err(fail(format!(
                "OVS interface {host} has iface-id {:?}, want {}",
                iface.iface_id(),
                want.iface_id
            )));
        }
        let bridge = self
            .vswitch
            .bridge_of(host)
            .map_err(ovs_error("reading the bridge of", host))?;
        if bridge.as_deref() != Some(self.config.bridge.as_str()) {
            return Err(fail(format!(
                "OVS interface {host} is not a port of {}",
                self.config.bridge
            )));
        }
        Ok(())
    }

    async fn health(&self) -> Result<(), CniError> {
        let down = |msg: String| CniError::new(ErrorCode::PluginNotAvailable, msg);
        if !self.vswitch.is_connected() {
            return Err(down("the Open_vSwitch database is not connected".into()));
        }
        match self.vswitch.bridge_exists(&self.config.bridge) {
            Ok(true) => {}
            _ => {
                return Err(down(format!(
                    "bridge {} does not exist",
                    self.config.bridge
                )))
            }
        }
        let status = unixctl::ovn_controller_call(&self.config.ovn_run_dir, "connection-status")
            .await
            .map_err(|e| down(format!("ovn-controller: {e}")))?;
        if status.trim() != "connected" {
            return Err(down(format!(
                "ovn-controller is not connected to the southbound database ({})",
                status.trim()
            )));
        }
        Ok(())
    }
}

/// Whether `a` and `b` name the same file (a netns as `/run/netns/x`, `/var/run/netns/x` or
/// `/proc/<pid>/ns/net`); by name when either cannot be read.
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let id = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    a == b || matches!((id(a), id(b)), (Some(x), Some(y)) if x == y)
}
