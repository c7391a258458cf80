//! Pod bandwidth limits and netem on the node: [`apply_qos`] sets one plugged interface's
//! limits (ADD and the live pass share it), and the live pass gives every interface this node
//! plugged (`external_ids:vendor=kube-ovn`), whenever the pod index changes, the limits its
//! pod's annotations ask for now (`<key>.kubernetes.io/ingress_rate|egress_rate|…|latency|
//! jitter|limit|loss` over the pod-wide `ovn.kubernetes.io/…`, see `api::allocation`). The
//! vswitch layer plans against its cache and writes only the difference, so a pass where
//! nothing changed costs no transaction. What the user must hear about goes to the pod as an
//! Event: a bad value (nothing changes), and a netem qdisc that ovs-vswitchd could not
//! install (a kernel without `sch_netem`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::api::allocation::{attachment_qos, AttachmentQos, Netem};
use crate::api::attachment_id::key_of_port;
use crate::cni::{CniError, ErrorCode};
use crate::operator::events::Notifier;
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
        .set_interface_limits(iface, datapath.qos_kind(), &qos)
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

/// What the live pass tells users and remembers between passes.
pub struct QosReporter {
    notifier: Option<Arc<Notifier>>,
    /// The netem last checked on each host interface, so each setting is checked once.
    netem_checked: HashMap<String, Netem>,
}

impl QosReporter {
    /// `notifier`: where pod Events go (`None`: logs only).
    pub fn new(notifier: Option<Arc<Notifier>>) -> Self {
        QosReporter {
            notifier,
            netem_checked: HashMap::new(),
        }
    }

    async fn warn(&self, pod: &ObjectReference, reason: &str, message: &str) {
        if let Some(n) = &self.notifier {
            n.warn(pod, reason, "ApplyQoS", message).await;
        }
    }
}

fn pod_reference(namespace: &str, name: &str, uid: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: Some(namespace.into()),
        name: Some(name.into()),
        uid: (!uid.is_empty()).then(|| uid.into()),
        ..Default::default()
    }
}

/// Whether ovs-vswitchd installed a netem qdisc on `iface` within a few seconds (it applies
/// QoS rows asynchronously, and only logs when the kernel refuses).
async fn netem_installed(iface: &str) -> bool {
    let Ok(netlink) = super::netlink::Netlink::new() else {
        return true;
    };
    for _ in 0..30 {
        match netlink.root_qdisc_kind(iface).await {
            Ok(Some(kind)) if kind == "netem" => return true,
            Ok(_) => {}
            // The interface may be going away; nothing to tell.
            Err(_) => return true,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// One reconciliation pass; returns how many interfaces changed.
pub async fn reconcile(
    pods: &PodIndex,
    vswitch: &Vswitch,
    datapath: Datapath,
    reporter: &mut QosReporter,
) -> usize {
    let interfaces = match vswitch.our_interfaces() {
        Ok(i) => i,
        Err(e) => {
            warn!(error = %e, "QoS: reading interfaces");
            return 0;
        }
    };
    reporter
        .netem_checked
        .retain(|name, _| interfaces.iter().any(|i| &i.name == name));
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
        let object = pod_reference(namespace, name, &pod.uid);
        let qos = match attachment_qos(&pod.annotations, key) {
            Ok(q) => q,
            Err(e) => {
                warn!(pod = %name, namespace = %namespace, iface = %iface.name, error = %e, "QoS annotation refused");
                let message = format!(
                    "interface {ifname} ({key}): {e}; its QoS stays as it was until this is fixed"
                );
                reporter.warn(&object, "InvalidQoS", &message).await;
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
        match qos.netem {
            Some(netem) if reporter.netem_checked.get(&iface.name) != Some(&netem) => {
                reporter.netem_checked.insert(iface.name.clone(), netem);
                if !netem_installed(&iface.name).await {
                    let message = format!(
                        "interface {ifname} ({key}): ovs-vswitchd did not install the netem \
                         qdisc on {} (is sch_netem missing from the node's kernel?); latency, \
                         jitter, limit and loss are not in effect",
                        iface.name
                    );
                    warn!(pod = %name, namespace = %namespace, iface = %iface.name, "netem qdisc not installed");
                    reporter.warn(&object, "NetemNotApplied", &message).await;
                }
            }
            Some(_) => {}
            None => {
                reporter.netem_checked.remove(&iface.name);
            }
        }
    }
    changed
}

/// Reconciles on every pod index change until `stop` turns true.
pub async fn run(
    pods: Arc<PodIndex>,
    vswitch: Vswitch,
    datapath: Datapath,
    notifier: Option<Arc<Notifier>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut changes = pods.subscribe();
    let mut reporter = QosReporter::new(notifier);
    loop {
        changes.mark_unchanged();
        reconcile(&pods, &vswitch, datapath, &mut reporter).await;
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
