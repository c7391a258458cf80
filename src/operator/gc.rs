//! Garbage collection, at start (after the first pod list) and periodically:
//! logical switch ports with `vendor=kube-ovn`, IP CRs and IPAM allocations
//! whose pod no longer exists are removed (StatefulSet pods whose StatefulSet
//! still wants them excepted); so are, in SB, the chassis our node roles made on
//! nodes whose Node object is gone (`ovn::sb`). The count is logged and exported as
//! `kube_ovn_gc_removed_total{kind}` (`lsp`, `ip`, `address`, `chassis`).
//!
//! Snapshots of NB, IP CRs and IPAM are taken BEFORE the live-pod set: any
//! pod that has state in the snapshots was in the pod store before it, so a
//! pod created meanwhile is never mistaken for a leak.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use kube::ResourceExt;
use tokio::sync::Notify;
use tracing::{info, warn};

use super::context::{Context, PodKey};
use super::pod::{delete_ip, release_pod};

/// What belongs to pods that are gone, by pod.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Orphans {
    pub ports: BTreeSet<String>,
    pub ips: BTreeSet<String>,
    pub allocations: BTreeSet<String>,
}

/// Groups the state of pods not in `live` by pod. Pure.
///
/// `ports` are (LSP name, `external_ids:pod`), `ips` (IP CR name, `<ns>/<pod>`),
/// `allocations` IPAM keys `<ns>/<pod>/<attachment>`.
pub fn orphans(
    live: &HashSet<String>,
    ports: &[(String, String)],
    ips: &[(String, String)],
    allocations: &[String],
) -> BTreeMap<PodKey, Orphans> {
    let mut out: BTreeMap<PodKey, Orphans> = BTreeMap::new();
    let pod_of = |ns_name: &str| {
        ns_name
            .split_once('/')
            .map(|(ns, name)| PodKey::new(ns, name))
    };
    for (name, pod) in ports {
        if !live.contains(pod) {
            if let Some(k) = pod_of(pod) {
                out.entry(k).or_default().ports.insert(name.clone());
            }
        }
    }
    for (name, pod) in ips {
        if !live.contains(pod) {
            if let Some(k) = pod_of(pod) {
                out.entry(k).or_default().ips.insert(name.clone());
            }
        }
    }
    for key in allocations {
        if let Some((pod, _)) = PodKey::of_ipam_key(key) {
            if !live.contains(&pod.ns_name()) {
                out.entry(pod).or_default().allocations.insert(key.clone());
            }
        }
    }
    out
}

/// One pass; returns how many ports, IP CRs and addresses were removed.
pub async fn collect(ctx: &Context) -> (usize, usize, usize) {
    let ports = ctx.nb.our_ports().unwrap_or_default();
    let ips: Vec<(String, String)> = ctx
        .ips
        .state()
        .iter()
        .map(|ip| {
            (
                kube::ResourceExt::name_any(&**ip),
                format!("{}/{}", ip.spec.namespace, ip.spec.pod_name),
            )
        })
        .collect();
    let allocations: Vec<String> = ctx
        .ipam
        .read(|a| a.allocations().map(|x| x.key.clone()).collect());
    let mut live: HashSet<String> = ctx
        .pods
        .state()
        .iter()
        .map(|p| PodKey::of(p).ns_name())
        .collect();
    // A claim's addresses live while the claim does; while the claims are not listed yet
    // (or their CRD is missing) none of them is taken for gone.
    let claims_listed = ctx
        .ipamclaims
        .wait_until_ready()
        .now_or_never()
        .is_some_and(|r| r.is_ok());
    for claim in ctx.ipamclaims.state() {
        let ns = claim.metadata.namespace.clone().unwrap_or_default();
        let holder = crate::api::attachment_id::claim_holder(&claim.name_any());
        live.insert(PodKey::new(ns, holder).ns_name());
    }
    if !claims_listed {
        let prefix = crate::api::attachment_id::claim_holder("");
        live.extend(allocations.iter().filter_map(|k| {
            let (pod, _) = PodKey::of_ipam_key(k)?;
            pod.name.starts_with(&prefix).then(|| pod.ns_name())
        }));
    }
    let found = orphans(&live, &ports, &ips, &allocations);
    let (mut removed_ports, mut removed_ips, mut removed_addresses) = (0, 0, 0);
    for (pod, orphaned) in &found {
        // The pod store may have caught up since the snapshot.
        if ctx
            .pods
            .get(&kube::runtime::reflector::ObjectRef::new(&pod.name).within(&pod.namespace))
            .is_some()
        {
            continue;
        }
        match release_pod(ctx, pod, None).await {
            Ok(false) => {}
            Ok(true) => {
                for ip in &orphaned.ips {
                    if let Err(e) = delete_ip(ctx, ip).await {
                        warn!(error = %e, "garbage collection");
                    }
                }
                removed_ports += orphaned.ports.len();
                removed_ips += orphaned.ips.len();
                removed_addresses += orphaned.allocations.len();
            }
            Err(e) => warn!(error = %e, "garbage collection"),
        }
    }
    (removed_ports, removed_ips, removed_addresses)
}

/// Runs GC when `trigger` fires (each complete pod list) and every
/// `interval`. Start it once the pod store is ready.
/// Runs the passes; with `sb` (OVN_Southbound's endpoint), the first and then one per
/// `interval` also take out of SB the chassis our node roles made on nodes whose Node object
/// is gone.
pub async fn run(ctx: Arc<Context>, trigger: Arc<Notify>, interval: Duration, sb: Option<String>) {
    // The first pass waits for the initial reconcile of every listed pod, so
    // a restart reaches ready first; leaks of pods gone meanwhile go right after.
    while !ctx.metrics.ready.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut first = true;
    // Chassis go on the interval only: the passes a pod list or an IPAMClaim wakes concern
    // neither Nodes nor SB.
    let mut chassis_due = tokio::time::Instant::now();
    loop {
        if !first {
            tokio::select! {
                _ = trigger.notified() => {}
                _ = tokio::time::sleep(interval) => {}
            }
        }
        first = false;
        let (ports, ips, addresses) = collect(&ctx).await;
        ctx.metrics.gc_runs.fetch_add(1, Ordering::Relaxed);
        ctx.metrics.count_gc("lsp", ports);
        ctx.metrics.count_gc("ip", ips);
        ctx.metrics.count_gc("address", addresses);
        info!(
            lsps = ports,
            ips, addresses, "garbage collection: removed leaked ports, IP CRs and addresses"
        );
        let sb = sb
            .as_deref()
            .filter(|_| tokio::time::Instant::now() >= chassis_due);
        if let Some(sb) = sb {
            chassis_due = tokio::time::Instant::now() + interval;
            match collect_chassis(&ctx, sb).await {
                Ok(gone) => {
                    ctx.metrics.count_gc("chassis", gone.len());
                    if !gone.is_empty() {
                        info!(
                            ?gone,
                            "garbage collection: removed the chassis of deleted nodes"
                        );
                    }
                }
                Err(e) => warn!(error = %e, "garbage collection of chassis: skipped this pass"),
            }
        }
    }
}

/// Chassis our node roles made whose Node object is gone: removed from SB (their node role
/// would have removed them when uninstalled; a node deleted from the cluster never is).
async fn collect_chassis(ctx: &Context, sb: &str) -> Result<Vec<String>, String> {
    let nodes = kube::Api::<k8s_openapi::api::core::v1::Node>::all(ctx.client.clone())
        .list(&kube::api::ListParams::default())
        .await
        .map_err(|e| format!("listing nodes: {e}"))?;
    let live: BTreeSet<String> = nodes.items.iter().map(|n| n.name_any()).collect();
    // We run on a node: an empty list is not "every node is gone".
    if live.is_empty() {
        return Ok(Vec::new());
    }
    let southbound = crate::ovn::sb::Southbound::connect(sb)
        .await
        .map_err(|e| format!("connecting to SB at {sb}: {e}"))?;
    let gone = stale_chassis(
        &southbound
            .our_chassis()
            .await
            .map_err(|e| format!("listing chassis: {e}"))?,
        &live,
    );
    for chassis in &gone {
        southbound
            .remove_chassis(chassis, Duration::from_secs(10))
            .await
            .map_err(|e| format!("removing chassis {chassis}: {e}"))?;
    }
    Ok(gone)
}

/// Our chassis without a Node of their name.
fn stale_chassis(ours: &[String], nodes: &BTreeSet<String>) -> Vec<String> {
    ours.iter()
        .filter(|c| !nodes.contains(*c))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_chassis_without_a_node_are_stale() {
        let nodes = BTreeSet::from(["node-1".to_owned(), "node-2".to_owned()]);
        let ours = vec!["node-1".to_owned(), "node-3".to_owned()];
        assert_eq!(stale_chassis(&ours, &nodes), ["node-3"]);
        assert!(stale_chassis(&[], &nodes).is_empty());
    }

    #[test]
    fn only_state_of_gone_pods_is_orphaned() {
        let live = HashSet::from(["default/a".to_owned()]);
        let ports = vec![
            ("a.default.n.default.ovn".to_owned(), "default/a".to_owned()),
            ("b.default.n.default.ovn".to_owned(), "default/b".to_owned()),
        ];
        let ips = vec![("b.default.n.default.ovn".to_owned(), "default/b".to_owned())];
        let allocs = vec![
            "default/a/n.default.ovn".to_owned(),
            "default/c/n.default.ovn".to_owned(),
        ];
        let found = orphans(&live, &ports, &ips, &allocs);
        assert_eq!(found.len(), 2);
        let b = &found[&PodKey::new("default", "b")];
        assert_eq!(b.ports.len(), 1);
        assert_eq!(b.ips.len(), 1);
        let c = &found[&PodKey::new("default", "c")];
        assert_eq!(
            c.allocations,
            BTreeSet::from(["default/c/n.default.ovn".to_owned()])
        );
    }
}
