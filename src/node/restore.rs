//! Rebuilding the interfaces of running pods that lost them: after an uninstall and a new
//! install (or anything else that took the OVS port and veth away), a pod whose sandbox still
//! runs gets no new CNI ADD, so the node role, once its pod index is synced at start, runs
//! the ADD itself for every allocated attachment of a running pod of this node that has no
//! plugged OVS interface. The addresses and MAC come from the pod's annotations as for any
//! ADD (the same ones the pod had); the sandbox is found by the pod's primary address
//! (`status.podIPs`) among the node's network namespaces (bind mounts in `/run/netns`, then
//! those of running processes); the interface name from the networks annotation, as Multus
//! named it. The pod UID stands in for the sandbox id (CNI_CONTAINERID is not in the API);
//! DEL finds such an interface by its netns and name instead.
//!
//! What is not here: the ADD itself (`handler.rs`), pre-plugging of pods still starting
//! (`preplug.rs`).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use tracing::{info, warn};

use crate::api::annotations::{Provider, NETWORKS};
use crate::api::attachment_id;
use crate::api::selection::parse_networks;
use crate::cni::protocol::CniRequest;
use crate::ovn::external_ids;
use crate::ovn::Vswitch;

use super::attachment::allocated_keys;
use super::handler::NodeHandler;
use super::netlink;
use super::pod_index::{PodIndex, PodView};
use super::server::CniHandler;

/// Where the runtimes bind-mount the network namespaces of sandboxes (the path they pass as
/// CNI_NETNS first).
const NETNS_DIRS: [&str; 2] = ["/var/run/netns", "/run/netns"];

/// Rebuilt at once at most.
const PARALLEL: usize = 8;

/// One attachment to rebuild.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lost {
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    /// The attachment key (`<provider>` or `<provider>.<ifname>`).
    pub key: String,
    pub ifname: String,
    pub pod_ips: Vec<IpAddr>,
}

/// The name Multus gave attachment `key` of `pod`: from its networks annotation (the
/// interface the user asked for, or Multus's `net<N>`); `None` if the annotation does not list
/// the attachment's NAD.
pub fn interface_of(pod: &PodView, key: &str) -> Option<String> {
    let provider = Provider::parse(key).ok()?;
    if let Some(ifname) = provider.interface() {
        return Some(ifname.to_string());
    }
    let selections = parse_networks(pod.annotation(NETWORKS)?, &pod.namespace).ok()?;
    let base = provider.base();
    selections
        .iter()
        .find(|s| Provider::for_nad(&s.name, &s.namespace).is_ok_and(|p| p.base() == base))
        .map(|s| s.interface.clone())
}

/// The attachments of running pods whose `iface-id` has no plugged (ADDed) interface, by the
/// pods' view and `plugged` (whether an ADDed interface carries an `iface-id`).
pub fn lost_attachments(pods: &[PodView], plugged: impl Fn(&str) -> bool) -> Vec<Lost> {
    let mut lost = Vec::new();
    for pod in pods {
        if pod.terminating || pod.finished || pod.pod_ips.is_empty() || pod.uid.is_empty() {
            continue;
        }
        for key in allocated_keys(pod) {
            if plugged(&attachment_id::port_name(&pod.namespace, &pod.name, key)) {
                continue;
            }
            let Some(ifname) = interface_of(pod, key) else {
                warn!(pod = %pod.name, namespace = %pod.namespace, key,
                    "cannot rebuild a lost interface: the networks annotation does not name it");
                continue;
            };
            lost.push(Lost {
                namespace: pod.namespace.clone(),
                pod: pod.name.clone(),
                pod_uid: pod.uid.clone(),
                key: key.to_string(),
                ifname,
                pod_ips: pod.pod_ips.clone(),
            });
        }
    }
    lost
}

/// The node's network namespaces other than its own, each once: bind mounts first (the paths
/// runtimes pass as CNI_NETNS), then `/proc/<pid>/ns/net` of processes in other ones.
fn network_namespaces() -> Vec<PathBuf> {
    let inode = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let mut seen: HashSet<(u64, u64)> = inode(Path::new("/proc/self/ns/net")).into_iter().collect();
    let mut out = Vec::new();
    let mounted = NETNS_DIRS
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flat_map(|entries| entries.flatten().map(|e| e.path()));
    let processes = std::fs::read_dir("/proc")
        .into_iter()
        .flat_map(|entries| entries.flatten())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .map(|e| e.path().join("ns/net"));
    for path in mounted.chain(processes) {
        if let Some(id) = inode(&path) {
            if seen.insert(id) {
                out.push(path);
            }
        }
    }
    out
}

/// Which network namespace holds each of `wanted` (as an interface address).
async fn netns_by_address(wanted: &HashSet<IpAddr>) -> HashMap<IpAddr, PathBuf> {
    let mut found = HashMap::new();
    for path in network_namespaces() {
        if found.len() == wanted.len() {
            break;
        }
        // Processes come and go while we look: a namespace that vanished is simply skipped.
        let Ok(addresses) = netlink::netns_addresses(&path).await else {
            continue;
        };
        for a in addresses {
            if wanted.contains(&a.addr()) {
                found.entry(a.addr()).or_insert_with(|| path.clone());
            }
        }
    }
    found
}

/// Rebuilds every lost attachment of this node's running pods; returns how many came back.
pub async fn restore_lost(pods: &PodIndex, vswitch: &Vswitch, handler: &NodeHandler) -> usize {
    let plugged = |iface_id: &str| {
        vswitch
            .interfaces_with_id(external_ids::IFACE_ID, iface_id)
            .map(|found| found.iter().any(|i| !i.is_preplugged()))
            // Unknown: do not build a second interface.
            .unwrap_or(true)
    };
    let lost = lost_attachments(&pods.snapshot(), plugged);
    if lost.is_empty() {
        return 0;
    }
    let wanted: HashSet<IpAddr> = lost.iter().flat_map(|l| l.pod_ips.clone()).collect();
    let netns = netns_by_address(&wanted).await;
    let restored = futures::stream::iter(lost)
        .map(|l| {
            let sandbox = l.pod_ips.iter().find_map(|ip| netns.get(ip)).cloned();
            async move {
                let Some(sandbox) = sandbox else {
                    warn!(pod = %l.pod, namespace = %l.namespace, ips = ?l.pod_ips,
                        "cannot rebuild a lost interface: no network namespace holds the pod's address");
                    return false;
                };
                restore_one(handler, &l, &sandbox).await
            }
        })
        .buffer_unordered(PARALLEL)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await;
    info!(restored, "interfaces of running pods rebuilt");
    restored
}

async fn restore_one(handler: &NodeHandler, l: &Lost, sandbox: &Path) -> bool {
    match netlink::inspect(sandbox, &l.ifname).await {
        Ok(None) => {}
        Ok(Some(_)) => {
            warn!(pod = %l.pod, namespace = %l.namespace, ifname = %l.ifname,
                "the pod has the interface but no OVS port plugs it; leaving it");
            return false;
        }
        Err(e) => {
            warn!(pod = %l.pod, namespace = %l.namespace, error = %e, "reading the pod's interface");
            return false;
        }
    }
    let provider = Provider::parse(&l.key)
        .map(|p| p.base().as_str().to_string())
        .unwrap_or_else(|_| l.key.clone());
    let req = CniRequest {
        container_id: l.pod_uid.clone(),
        netns: sandbox.display().to_string(),
        ifname: l.ifname.clone(),
        pod_namespace: l.namespace.clone(),
        pod_name: l.pod.clone(),
        pod_uid: l.pod_uid.clone(),
        provider,
        cni_version: "1.0.0".into(),
        ips: Vec::new(),
        mac: None,
        config: serde_json::Value::Null,
        prev_result: None,
        ipam_only: false,
    };
    match handler.add(req).await {
        Ok(answer) => {
            info!(pod = %l.pod, namespace = %l.namespace, key = %l.key, ifname = %l.ifname, netns = %sandbox.display(),
                ips = ?answer.ips.iter().map(|i| i.address.to_string()).collect::<Vec<_>>(),
                "lost interface rebuilt");
            true
        }
        Err(e) => {
            warn!(pod = %l.pod, namespace = %l.namespace, key = %l.key, error = %e.msg, "rebuilding a lost interface");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(annotations: &[(&str, &str)], ips: &[&str]) -> PodView {
        PodView {
            namespace: "default".into(),
            name: "web".into(),
            uid: "u1".into(),
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            terminating: false,
            finished: false,
            pod_ips: ips.iter().map(|ip| ip.parse().expect("ip")).collect(),
        }
    }

    const P: &str = "attachnet.default.ovn";

    fn allocated(key: &str) -> (String, String) {
        (format!("{key}.kubernetes.io/allocated"), "true".into())
    }

    #[test]
    fn running_pods_with_an_unplugged_allocation_are_lost_with_multus_interface_names() {
        let (k1, v1) = allocated(P);
        let (k2, v2) = allocated(&format!("{P}.net7"));
        let networks = "attachnet, attachnet@net7";
        let p = pod(
            &[(&k1, &v1), (&k2, &v2), (NETWORKS, networks)],
            &["10.244.1.5"],
        );
        let lost = lost_attachments(std::slice::from_ref(&p), |_| false);
        let names: Vec<(&str, &str)> = lost
            .iter()
            .map(|l| (l.key.as_str(), l.ifname.as_str()))
            .collect();
        assert_eq!(names, [(P, "net1"), ("attachnet.default.ovn.net7", "net7")]);

        // Plugged already, no sandbox yet, going away, or no name to give it: nothing.
        assert!(lost_attachments(std::slice::from_ref(&p), |_| true).is_empty());
        let starting = pod(&[(&k1, &v1), (NETWORKS, networks)], &[]);
        assert!(lost_attachments(&[starting], |_| false).is_empty());
        let going = PodView {
            terminating: true,
            ..p.clone()
        };
        assert!(lost_attachments(&[going], |_| false).is_empty());
        let unnamed = pod(&[(&k1, &v1)], &["10.244.1.5"]);
        assert!(lost_attachments(&[unnamed], |_| false).is_empty());
    }
}
