//! Live QoS: whenever the pod index changes, every interface this node plugged
//! (`external_ids:vendor=kube-ovn`) gets the limits its pod's annotations ask for now
//! (`<key>.kubernetes.io/ingress_rate|egress_rate` over the pod-wide
//! `ovn.kubernetes.io/…`). The vswitch layer plans against its cache and writes only the
//! difference, so a pass where nothing changed costs no transaction.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::watch;
use tracing::{debug, warn};

use crate::api::allocation::attachment_qos;
use crate::api::attachment_id::key_of_port;
use crate::ovn::external_ids;
use crate::ovn::vswitch::Vswitch;
use crate::ovsdb::model::vswitch::Interface;

use super::handler::{apply_qos, Datapath};
use super::pod_index::PodIndex;

/// One reconciliation pass; returns how many interfaces changed.
pub async fn reconcile(pods: &PodIndex, vswitch: &Vswitch, datapath: Datapath) -> usize {
    let interfaces = match vswitch.client().list::<Interface>() {
        Ok(i) => i,
        Err(e) => {
            warn!(error = %e, "QoS: reading interfaces");
            return 0;
        }
    };
    let mut changed = 0;
    for iface in interfaces {
        let ids = &iface.external_ids;
        if !external_ids::is_ours(ids) {
            continue;
        }
        let (Some(name), Some(namespace), Some(iface_id), Some(netns), Some(ifname)) = (
            ids.get(external_ids::POD_NAME),
            ids.get(external_ids::POD_NAMESPACE),
            ids.get(external_ids::IFACE_ID),
            ids.get(external_ids::POD_NETNS),
            ids.get(external_ids::POD_IFNAME),
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
        match apply_qos(
            vswitch,
            datapath,
            &iface.name,
            Path::new(netns),
            ifname,
            qos,
        )
        .await
        {
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
