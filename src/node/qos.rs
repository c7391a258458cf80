//! Pod bandwidth limits on the node: [`apply_qos`] sets one plugged interface's limits (ADD
//! and the live pass share it), and the live pass gives every interface this node plugged
//! (`external_ids:vendor=kube-ovn`), whenever the pod index changes, the limits its pod's
//! annotations ask for now (`<key>.kubernetes.io/ingress_rate|egress_rate` over the pod-wide
//! `ovn.kubernetes.io/…`). The vswitch layer plans against its cache and writes only the
//! difference, so a pass where nothing changed costs no transaction.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::watch;
use tracing::{debug, warn};

use crate::api::allocation::{attachment_qos, AttachmentQos};
use crate::api::attachment_id::key_of_port;
use crate::cni::{CniError, ErrorCode};
use crate::ovn::vswitch::Vswitch;

use super::chassis::Datapath;
use super::netlink;
use super::pod_index::PodIndex;

/// Sets the limits of one plugged interface whose pod end is `pod_ifname` in `pod_netns`;
/// returns whether anything changed. The OVS rows (ingress policing for the pod's egress, a
/// `linux-htb` queue for its ingress) are the record on both datapaths; on netdev the pod's
/// egress is also shaped by a TBF on the pod end, because the userspace datapath reads the
/// host end before the kernel's ingress policer would drop.
pub async fn apply_qos(
    vswitch: &Vswitch,
    datapath: Datapath,
    iface: &str,
    pod_netns: &Path,
    pod_ifname: &str,
    qos: AttachmentQos,
) -> Result<bool, CniError> {
    let changed = vswitch
        .set_interface_qos_as(
            iface,
            datapath.qos_kind(),
            qos.ingress_mbps,
            qos.egress_mbps,
        )
        .await
        .map_err(|e| {
            CniError::new(
                ErrorCode::TryAgainLater,
                format!("limiting interface {iface}: {e}"),
            )
        })?;
    if changed && datapath == Datapath::Netdev {
        netlink::set_pod_egress_limit(pod_netns, pod_ifname, qos.egress_mbps)
            .await
            .map_err(|e| e.to_cni())?;
    }
    Ok(changed)
}

/// One reconciliation pass; returns how many interfaces changed.
pub async fn reconcile(pods: &PodIndex, vswitch: &Vswitch, datapath: Datapath) -> usize {
    let interfaces = match vswitch.our_interfaces() {
        Ok(i) => i,
        Err(e) => {
            warn!(error = %e, "QoS: reading interfaces");
            return 0;
        }
    };
    let mut changed = 0;
    for iface in interfaces {
        let (Some((namespace, name)), Some(iface_id), Some(netns), Some(ifname)) = (
            iface.pod(),
            iface.iface_id(),
            iface.pod_netns(),
            iface.pod_ifname(),
        ) else {
            continue;
        };
        let Some(pod) = pods.get(namespace, name) else {
            continue;
        };
        let Some(key) = key_of_port(iface_id, namespace, name) else {
            continue;
        };
        let qos = match attachment_qos(&pod.annotations, key) {
            Ok(q) => q,
            Err(e) => {
                warn!(pod = %name, namespace = %namespace, iface = %iface.name, error = %e, "QoS annotation ignored");
                continue;
            }
        };
        match apply_qos(vswitch, datapath, &iface.name, netns, ifname, qos).await {
            Ok(true) => {
                changed += 1;
                debug!(iface = %iface.name, ?qos, "QoS updated");
            }
            Ok(false) => {}
            // The port may be going away under a concurrent DEL.
            Err(e) => debug!(iface = %iface.name, error = %e.msg, "QoS update skipped"),
        }
    }
    changed
}

/// Reconciles on every pod index change until `stop` turns true.
pub async fn run(
    pods: Arc<PodIndex>,
    vswitch: Vswitch,
    datapath: Datapath,
    mut stop: watch::Receiver<bool>,
) {
    let mut changes = pods.subscribe();
    loop {
        changes.mark_unchanged();
        reconcile(&pods, &vswitch, datapath).await;
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
