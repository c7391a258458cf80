//! The pod attachment controller (steps 2–4 and 7 of "A secondary interface" in ../shared/ARCHITECTURE.md): for every
//! kube-ovn element of a pod's `k8s.v1.cni.cncf.io/networks`, plan
//! (`attachment.rs`, pure) → allocate in IPAM (durable, group-committed) →
//! the pod's logical switch ports in one NB transaction (shared with other
//! pods by `ports.rs`) → one merge patch of the pod's annotations → the IP
//! CRs. A pod that is gone, or an attachment that was removed, loses its
//! port, IP CR and address (StatefulSet pods keep theirs while their
//! StatefulSet still wants that ordinal).
//!
//! Pods are handled as soon as they exist, before scheduling, so the node's
//! CNI ADD finds the annotations waiting. Everything is read from reflector
//! stores and the NB cache: re-reconciling an attached pod writes nothing.
//! Errors become pod Events (reason + message naming NAD, subnet, address)
//! and never hold up other pods.
//!
//! Here: reconcile, IPAM and the apply step. `writes.rs` decides what to write (pure);
//! `watch.rs` is the watch, the queue feed and the workers.

mod watch;
mod writes;

pub use watch::{feed, run_workers, watch_pods, PodFeed};
pub use writes::{plan_pod_writes, ObservedPod, ObservedPort, PodWrites};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, warn};

use super::attachment::{
    plan_pod_attachments, AttachmentError, AttachmentPlan, PodAttachmentInput, PoolRequest,
    SubnetIndex,
};
use super::context::{Context, PodKey};
use super::ports::PortChange;
use crate::api::annotations::{parse_provider_annotation, ProviderKey};
use crate::api::ip::IP;
use crate::ipam::{Allocation, AllocationRequest, IpamError, Release};
use crate::ovn::external_ids;

/// The field manager of our writes.
pub const MANAGER: &str = "kube-ovn-operator";

/// What went wrong while wiring a pod (transient: retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error("pod {pod}: IPAM: {source}")]
    Ipam { pod: String, source: IpamError },
    #[error("pod {pod}: {message}")]
    Nb { pod: String, message: String },
    #[error("pod {pod}: {what}: {source}")]
    Api {
        pod: String,
        what: String,
        source: kube::Error,
    },
}

/// Attachment keys recorded in the pod's `<key>.kubernetes.io/allocated` annotations.
fn annotated_keys(pod: &Pod) -> BTreeSet<String> {
    pod.annotations()
        .keys()
        .filter_map(|k| match parse_provider_annotation(k) {
            Some((key, ProviderKey::Allocated)) => Some(key.to_owned()),
            _ => None,
        })
        .collect()
}

/// Attachment keys of the pod's ports in NB.
fn port_keys(ctx: &Context, pod: &PodKey) -> BTreeSet<String> {
    ctx.nb
        .ports_by_pod(&pod.ns_name())
        .unwrap_or_default()
        .into_iter()
        .filter(|p| external_ids::is_ours(&p.external_ids))
        .filter_map(|p| {
            p.external_ids
                .get(external_ids::ATTACHMENT)
                .cloned()
                .or_else(|| pod.attachment_of_port(&p.name).map(str::to_owned))
        })
        .collect()
}

/// Attachment keys IPAM holds for the pod.
fn ipam_keys(ctx: &Context, pod: &PodKey) -> BTreeSet<String> {
    let prefix = format!("{}/{}/", pod.namespace, pod.name);
    ctx.ipam.read(|a| {
        a.allocations()
            .filter_map(|x| x.key.strip_prefix(&prefix).map(str::to_owned))
            .collect()
    })
}

/// The StatefulSet owning `pod`, if any.
pub(crate) fn statefulset_owner(pod: &Pod) -> Option<String> {
    pod.owner_references()
        .iter()
        .find(|o| o.kind == "StatefulSet" && o.controller == Some(true))
        .map(|o| o.name.clone())
}

/// Whether StatefulSet `sts` still wants pod `pod` (its ordinal is below the
/// replica count): then the pod's addresses are kept for its next incarnation.
pub async fn statefulset_keeps(ctx: &Context, namespace: &str, sts: &str, pod: &str) -> bool {
    let Some(ordinal) = pod
        .strip_prefix(sts)
        .and_then(|r| r.strip_prefix('-'))
        .and_then(|o| o.parse::<i32>().ok())
    else {
        return false;
    };
    let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), namespace);
    match api.get_opt(sts).await {
        Ok(Some(s)) if s.metadata.deletion_timestamp.is_none() => {
            ordinal < s.spec.and_then(|s| s.replicas).unwrap_or(1)
        }
        Ok(_) => false,
        Err(e) => {
            // Unknown: keep, the periodic GC looks again.
            warn!(error = %e, namespace, statefulset = sts, "reading StatefulSet; keeping its pod's addresses for now");
            true
        }
    }
}

/// One reconcile of `key`; `Ok(Some(d))` asks to be queued again after `d`.
pub async fn reconcile(ctx: &Arc<Context>, key: &PodKey) -> Result<Option<Duration>, PodError> {
    debug!("reconciling pod");
    let pod = ctx
        .pods
        .get(&ObjectRef::new(&key.name).within(&key.namespace));
    match pod {
        Some(pod) => {
            ctx.tombstones
                .lock()
                .expect("tombstones lock poisoned")
                .remove(key);
            if pod.metadata.deletion_timestamp.is_some() {
                // Still running its CNI DEL; cleaned up once it is gone.
                return Ok(None);
            }
            attach(ctx, key, &pod).await
        }
        None => {
            let last = ctx
                .tombstones
                .lock()
                .expect("tombstones lock poisoned")
                .remove(key);
            if let Some(pod) = &last {
                ctx.events.forget(&pod.object_ref(&()));
            }
            release_pod(ctx, key, last.as_deref()).await.map(|_| None)
        }
    }
}

async fn report(ctx: &Context, pod: &Pod, reason: &str, message: &str) {
    warn!(pod = %PodKey::of(pod), reason, "{message}");
    ctx.metrics.count_error(reason);
    ctx.events
        .warn(&pod.object_ref(&()), reason, "AttachNetwork", message)
        .await;
}

/// The Event reason for an IPAM refusal.
pub fn ipam_reason(e: &IpamError) -> &'static str {
    match e {
        IpamError::Excluded { .. } => "StaticIPExcluded",
        IpamError::IsGateway { .. } => "StaticIPIsGateway",
        IpamError::HeldBy { .. } => "StaticIPTaken",
        IpamError::MacHeldBy { .. } => "MACTaken",
        IpamError::OutOfRange { .. }
        | IpamError::WrongFamily { .. }
        | IpamError::PrefixMismatch { .. }
        | IpamError::SecondAddress { .. } => "InvalidStaticIP",
        IpamError::BadMac { .. } => "InvalidMAC",
        IpamError::Full { pool: Some(_), .. } => "IPPoolExhausted",
        IpamError::Full { .. } => "SubnetFull",
        IpamError::UnknownPool { .. } | IpamError::NotInPool { .. } => "IPPoolUnusable",
        _ => "AllocationFailed",
    }
}

/// The pod Event message for an IPAM refusal of `plan`: IPAM's reason, and where the pod asked
/// for the refused address or MAC.
pub fn refusal_message(key: &PodKey, plan: &AttachmentPlan, e: &IpamError) -> String {
    let origin = match e {
        IpamError::MacHeldBy { .. } | IpamError::BadMac { .. } => plan.mac_source.as_ref(),
        IpamError::Excluded { .. }
        | IpamError::IsGateway { .. }
        | IpamError::HeldBy { .. }
        | IpamError::OutOfRange { .. }
        | IpamError::WrongFamily { .. }
        | IpamError::PrefixMismatch { .. }
        | IpamError::SecondAddress { .. } => plan.ips_source.as_ref(),
        _ => None,
    };
    match origin {
        Some(origin) => format!(
            "pod {key}: network {}: {e} (requested in {origin})",
            plan.network
        ),
        None => format!("pod {key}: network {}: {e}", plan.network),
    }
}

/// What IPAM already holds for an attachment, measured against its plan.
enum Held {
    /// The allocation satisfies the plan: use it as is.
    Fits(Allocation),
    /// The plan changed (subnet, static IP or MAC): give it back first.
    Stale,
    Nothing,
}

fn held(current: Option<Allocation>, plan: &AttachmentPlan) -> Held {
    match current {
        None => Held::Nothing,
        Some(a)
            if *a.subnet == *plan.subnet
                && plan.ips.iter().all(|r| a.ips.contains(&r.address))
                && plan.mac.is_none_or(|m| m == a.mac) =>
        {
            Held::Fits(a)
        }
        Some(_) => Held::Stale,
    }
}

async fn attach(ctx: &Arc<Context>, key: &PodKey, pod: &Pod) -> Result<Option<Duration>, PodError> {
    let changes_seen = ctx.changes.load(Ordering::SeqCst);
    let empty = BTreeMap::new();
    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    let subnets = ctx.subnets.state();
    let pools = ctx.ippools.state();
    let index =
        SubnetIndex::new(subnets.iter().map(|s| &**s)).with_pools(pools.iter().map(|p| &**p));
    let outcome = plan_pod_attachments(
        PodAttachmentInput {
            name: &key.name,
            namespace: &key.namespace,
            annotations,
        },
        |ns, name| {
            ctx.nads
                .get(&ObjectRef::new(name).within(ns))
                .map(|n| n.spec.config.clone())
        },
        &index,
    );
    let plans = match outcome.into_result() {
        Ok(plans) => plans,
        Err(errors) => {
            let retry_on_change = errors.iter().any(|e| {
                matches!(
                    e,
                    AttachmentError::NadNotFound { .. }
                        | AttachmentError::NoSubnet { .. }
                        | AttachmentError::SubnetNotFound { .. }
                        | AttachmentError::AmbiguousSubnet { .. }
                        | AttachmentError::NadConfig { .. }
                        | AttachmentError::ProviderMismatch { .. }
                        | AttachmentError::SubnetProviderMismatch { .. }
                        | AttachmentError::IpPoolNotFound { .. }
                        | AttachmentError::IpPoolUnusable { .. }
                )
            });
            if retry_on_change {
                ctx.wait_for_change(key, changes_seen);
            }
            for e in &errors {
                report(ctx, pod, e.reason(), &format!("pod {key}: {e}")).await;
            }
            return Ok(None);
        }
    };
    for plan in &plans {
        if let Some(problem) = ctx.subnet_problem(&plan.subnet) {
            let message = format!(
                "pod {key}: network {}: subnet {:?} cannot take attachments: {problem}",
                plan.network, plan.subnet
            );
            ctx.wait_for_change(key, changes_seen);
            report(ctx, pod, "SubnetNotReady", &message).await;
            return Ok(None);
        }
    }

    // 1. IPAM, durably, before anything names the address.
    let sticky = statefulset_owner(pod).is_some();
    let allocations = match allocate(ctx, key, pod, &plans, sticky).await? {
        Ok(allocations) => allocations,
        Err(retry) => return Ok(retry),
    };
    for plan in &plans {
        ctx.usage_changed(&plan.subnet);
    }

    // 2. What to write, from what is observed now (pure).
    let mut existing_keys = port_keys(ctx, key);
    existing_keys.extend(annotated_keys(pod));
    let observed = ObservedPod {
        annotations: std::borrow::Cow::Borrowed(annotations),
        node_name: pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        sticky,
        existing_keys,
        ports: plans
            .iter()
            .filter_map(|p| {
                let port = ctx.nb.port(&p.lsp_name).ok().flatten()?;
                let observed = ObservedPort {
                    addresses: port.addresses,
                    port_security: port.port_security,
                    external_ids: port.external_ids,
                };
                Some((p.lsp_name.clone(), observed))
            })
            .collect(),
        ips: plans
            .iter()
            .filter_map(|p| {
                let ip = ctx.ips.get(&ObjectRef::new(&p.lsp_name))?;
                Some((p.lsp_name.clone(), ip))
            })
            .collect(),
        gateways: plans
            .iter()
            .map(|p| {
                let gateways = ctx
                    .ipam
                    .subnet(&p.subnet)
                    .map(|v| v.gateways.into_iter().flatten().collect())
                    .unwrap_or_default();
                (p.subnet.clone(), gateways)
            })
            .collect(),
    };
    let writes = plan_pod_writes(key, &plans, &allocations, &observed);
    let stale = writes.stale.len();
    let wrote = apply(ctx, key, writes).await?;

    let had_waited = ctx
        .waiting
        .lock()
        .expect("waiting lock poisoned")
        .remove(key);
    if had_waited {
        ctx.events.forget(&pod.object_ref(&()));
    }
    let newly_wired = plans
        .iter()
        .filter(|p| {
            annotations
                .get(&p.annotation(ProviderKey::Allocated))
                .map(String::as_str)
                != Some("true")
        })
        .count();
    if newly_wired > 0 {
        ctx.metrics
            .pods_attached
            .fetch_add(newly_wired as u64, Ordering::Relaxed);
        ctx.metrics.pods_wired.fetch_add(1, Ordering::Relaxed);
        info!(pod = %key, attachments = plans.len(), ips = ?allocations.iter().map(Allocation::ip_annotation).collect::<Vec<_>>(), "pod attached");
    } else if wrote {
        debug!(pod = %key, stale, "pod attachments repaired");
    }
    Ok(None)
}

/// Allocates every planned attachment (reusing what IPAM holds while it fits). `Ok(Err(retry))`
/// when IPAM refused: the refusal is reported on the pod, nothing of this pass stays allocated,
/// and `retry` says whether to look again later.
async fn allocate(
    ctx: &Context,
    key: &PodKey,
    pod: &Pod,
    plans: &[AttachmentPlan],
    sticky: bool,
) -> Result<Result<Vec<Allocation>, Option<Duration>>, PodError> {
    let mut allocations = Vec::with_capacity(plans.len());
    let mut fresh: Vec<String> = Vec::new();
    for plan in plans {
        let mut ipam_key = key.ipam_key(plan.key.as_str());
        let mut claim_ips = Vec::new();
        let mut sticky = sticky;
        let claim = match &plan.claim {
            None => None,
            Some(name) => {
                let found = ctx
                    .ipamclaims
                    .get(&ObjectRef::new(name).within(&key.namespace));
                let Some(claim) = found else {
                    for k in &fresh {
                        let _ = ctx.ipam.release(k, Release::Claim).await;
                    }
                    let message = format!(
                        "pod {key}: network {}: IPAMClaim {}/{name} (ipam-claim-reference) does \
                         not exist",
                        plan.network, key.namespace
                    );
                    report(ctx, pod, "IPAMClaimNotFound", &message).await;
                    return Ok(Err(Some(Duration::from_secs(10))));
                };
                // One pod at a time: two ports with one address would break both.
                let owner = claim
                    .status
                    .as_ref()
                    .and_then(|s| s.owner_pod.as_ref())
                    .map(|o| o.name.clone())
                    .filter(|o| *o != key.name);
                let owner_alive = owner.as_ref().is_some_and(|o| {
                    ctx.pods
                        .get(&ObjectRef::new(o).within(&key.namespace))
                        .is_some_and(|p| p.metadata.deletion_timestamp.is_none())
                });
                if owner_alive {
                    for k in &fresh {
                        let _ = ctx.ipam.release(k, Release::Claim).await;
                    }
                    let message = format!(
                        "pod {key}: network {}: IPAMClaim {}/{name} is held by pod {}; it \
                         serves one pod at a time",
                        plan.network,
                        key.namespace,
                        owner.unwrap_or_default()
                    );
                    report(ctx, pod, "IPAMClaimInUse", &message).await;
                    return Ok(Err(Some(Duration::from_secs(10))));
                }
                // An allocation adopted under the pod's key (a lost store) moves to the claim.
                if ctx.ipam.get(&ipam_key).is_some() {
                    ctx.ipam
                        .release(&ipam_key, Release::Claim)
                        .await
                        .map_err(|source| PodError::Ipam {
                            pod: key.to_string(),
                            source,
                        })?;
                }
                ipam_key = crate::api::attachment_id::claim_ipam_key(
                    &key.namespace,
                    name,
                    plan.key.as_str(),
                );
                claim_ips = claim
                    .status
                    .as_ref()
                    .map(|s| s.ips.iter().filter_map(|ip| ip.parse().ok()).collect())
                    .unwrap_or_default();
                sticky = true;
                Some(claim)
            }
        };
        match held(ctx.ipam.get(&ipam_key), plan) {
            Held::Fits(a) => {
                if let Some(claim) = &claim {
                    write_claim_status(ctx, claim, plan, &a, &key.name).await;
                }
                allocations.push(a);
                continue;
            }
            Held::Stale => {
                ctx.ipam
                    .release(&ipam_key, Release::Claim)
                    .await
                    .map_err(|source| PodError::Ipam {
                        pod: key.to_string(),
                        source,
                    })?;
                ctx.usage_changed(&plan.subnet);
            }
            Held::Nothing => {}
        }
        let outcome = match pool_entries(pod, plan, sticky) {
            Err(message) => Err(("IPPoolExhausted", message)),
            Ok(Some(entries)) => allocate_from_list(ctx, key, plan, &ipam_key, sticky, &entries)
                .await?
                .map_err(|e| {
                    (
                        ipam_reason(&e.0),
                        match e.1 {
                            Some(message) => message,
                            None => refusal_message(key, plan, &e.0),
                        },
                    )
                }),
            Ok(None) => {
                let ips = if plan.ips.is_empty() {
                    &claim_ips
                } else {
                    &plan.ips
                };
                let request = request_for(plan, &ipam_key, ips, sticky);
                match ctx.ipam.allocate(&request).await {
                    Ok(a) => Ok(a.into()),
                    Err(IpamError::Store { reason }) => {
                        return Err(PodError::Ipam {
                            pod: key.to_string(),
                            source: IpamError::Store { reason },
                        })
                    }
                    Err(e) => Err((ipam_reason(&e), refusal_message(key, plan, &e))),
                }
            }
        };
        match outcome {
            Ok(a) => {
                if let Some(claim) = &claim {
                    write_claim_status(ctx, claim, plan, &a, &key.name).await;
                }
                fresh.push(ipam_key);
                allocations.push(a);
            }
            Err((reason, message)) => {
                for k in &fresh {
                    let _ = ctx.ipam.release(k, Release::Claim).await;
                }
                report(ctx, pod, reason, &message).await;
                // A taken address or a full subnet or pool may free up: at the latest in
                // 30 s, at once when a pod releases its addresses.
                let retry = matches!(
                    reason,
                    "StaticIPTaken" | "SubnetFull" | "IPPoolExhausted" | "IPPoolUnusable"
                );
                if retry {
                    ctx.waiting
                        .lock()
                        .expect("waiting lock poisoned")
                        .insert(key.clone());
                }
                return Ok(Err(retry.then_some(Duration::from_secs(30))));
            }
        }
    }
    Ok(Ok(allocations))
}

/// Records on `claim` the addresses it owns (with the subnet's prefix) and the pod holding
/// it now. A failed write is logged: the address is held in IPAM either way.
async fn write_claim_status(
    ctx: &Context,
    claim: &crate::api::ipamclaim::IPAMClaim,
    plan: &AttachmentPlan,
    allocation: &Allocation,
    pod: &str,
) {
    use crate::api::ipamclaim::{IPAMClaim, IpamClaimStatus, OwnerPod};
    let ips = allocation
        .ips
        .iter()
        .filter_map(|ip| {
            let cidr = plan.cidrs.iter().find(|c| c.contains(ip))?;
            Some(format!("{ip}/{}", cidr.prefix_len()))
        })
        .collect();
    let status = IpamClaimStatus {
        ips,
        owner_pod: Some(OwnerPod { name: pod.into() }),
    };
    if claim.status.as_ref() == Some(&status) {
        return;
    }
    let namespace = claim.namespace().unwrap_or_default();
    let api: Api<IPAMClaim> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = json!({
        "apiVersion": "k8s.cni.cncf.io/v1alpha1", "kind": "IPAMClaim",
        "status": status,
    });
    if let Err(e) = api
        .patch_status(
            &claim.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
    {
        warn!(claim = %claim.name_any(), namespace, error = %e, "writing IPAMClaim status");
    }
}

/// The IPAM request for `plan` with static addresses `ips` (a named pool goes along, so
/// IPAM keeps dynamic and static addresses inside it).
fn request_for(
    plan: &AttachmentPlan,
    ipam_key: &str,
    ips: &[crate::api::selection::IpRequest],
    sticky: bool,
) -> AllocationRequest {
    let mut request = AllocationRequest::new(ipam_key.to_owned(), plan.subnet.clone())
        .with_ips(ips.iter().copied())
        .sticky(sticky);
    if let Some(mac) = plan.mac {
        request = request.with_mac(mac);
    }
    if let Some((PoolRequest::Named(name), _)) = &plan.pool {
        request = request.with_pool(name.clone());
    }
    request
}

/// The entries of `plan`'s address-list pool this pod may take, in order (`None`: no list,
/// or a static request, which wins): a StatefulSet pod only the entry of its ordinal, as
/// Kube-OVN. `Err`: a StatefulSet ordinal past the list's end.
fn pool_entries(
    pod: &Pod,
    plan: &AttachmentPlan,
    sticky: bool,
) -> Result<Option<Vec<Vec<crate::api::selection::IpRequest>>>, String> {
    let Some((PoolRequest::Addresses(entries), annotation)) = &plan.pool else {
        return Ok(None);
    };
    if !plan.ips.is_empty() {
        return Ok(None);
    }
    if !sticky {
        return Ok(Some(entries.clone()));
    }
    let name = pod.name_any();
    let ordinal = name
        .rsplit_once('-')
        .and_then(|(_, o)| o.parse::<usize>().ok());
    match ordinal.and_then(|o| entries.get(o).map(|e| (o, e))) {
        Some((_, entry)) => Ok(Some(vec![entry.clone()])),
        None => Err(format!(
            "pod {}/{name}: network {}: annotation {annotation} lists {} entries; StatefulSet \
             ordinal {} has none",
            pod.namespace().unwrap_or_default(),
            plan.network,
            entries.len(),
            ordinal.map_or_else(|| "?".to_string(), |o| o.to_string())
        )),
    }
}

/// Takes the first entry of `entries` no other attachment holds. `Ok(Err((e, message)))`: IPAM's
/// refusal of an entry for another reason than being taken (an address outside the subnet,
/// excluded, the gateway), or the list exhausted (`message` says so).
async fn allocate_from_list(
    ctx: &Context,
    key: &PodKey,
    plan: &AttachmentPlan,
    ipam_key: &str,
    sticky: bool,
    entries: &[Vec<crate::api::selection::IpRequest>],
) -> Result<Result<Allocation, (IpamError, Option<String>)>, PodError> {
    let mut last_taken = None;
    for entry in entries {
        match ctx
            .ipam
            .allocate(&request_for(plan, ipam_key, entry, sticky))
            .await
        {
            Ok(a) => return Ok(Ok(a.into())),
            Err(IpamError::Store { reason }) => {
                return Err(PodError::Ipam {
                    pod: key.to_string(),
                    source: IpamError::Store { reason },
                })
            }
            Err(e @ IpamError::HeldBy { .. }) => last_taken = Some(e),
            Err(e) => {
                let message = format!(
                    "pod {key}: network {}: {e} (listed in annotation {})",
                    plan.network,
                    plan.pool.as_ref().map_or("", |(_, a)| a.as_str())
                );
                return Ok(Err((e, Some(message))));
            }
        }
    }
    let annotation = plan.pool.as_ref().map_or("", |(_, a)| a.as_str());
    let last = last_taken
        .map(|e| format!(" (last refusal: {e})"))
        .unwrap_or_default();
    let message = format!(
        "pod {key}: network {}: every address of annotation {annotation} ({} entries) is \
         taken{last}",
        plan.network,
        entries.len()
    );
    let cidr = plan.cidrs[0];
    let full = IpamError::Full {
        subnet: plan.subnet.clone(),
        family: crate::ipam::Family::of(&cidr.addr()),
        cidr,
        pool: Some(annotation.to_owned()),
    };
    Ok(Err((full, Some(message))))
}

/// Applies a pod's writes in order: ports (one NB transaction, possibly shared), the
/// annotation patch, the IP CRs, then what the pod no longer asks for. Returns whether
/// anything was written.
async fn apply(ctx: &Context, key: &PodKey, mut writes: PodWrites) -> Result<bool, PodError> {
    let wrote = !writes.ports.is_empty()
        || !writes.annotations.is_empty()
        || !writes.ips.is_empty()
        || !writes.stale.is_empty();
    ctx.ports
        .apply(std::mem::take(&mut writes.ports))
        .await
        .map_err(|message| PodError::Nb {
            pod: key.to_string(),
            message,
        })?;
    if !writes.annotations.is_empty() {
        Api::<Pod>::namespaced(ctx.client.clone(), &key.namespace)
            .patch(
                &key.name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "metadata": { "annotations": writes.annotations } })),
            )
            .await
            .map_err(|source| PodError::Api {
                pod: key.to_string(),
                what: "annotating".into(),
                source,
            })?;
    }
    let ips: Api<IP> = Api::all(ctx.client.clone());
    for ip in &writes.ips {
        let name = ip.name_any();
        ips.patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(ip),
        )
        .await
        .map_err(|source| PodError::Api {
            pod: key.to_string(),
            what: format!("writing IP {name}"),
            source,
        })?;
    }
    for k in &writes.stale {
        delete_ip(ctx, &key.port_name(k)).await?;
        release(ctx, key, k).await?;
    }
    Ok(wrote)
}

pub(crate) async fn delete_ip(ctx: &Context, name: &str) -> Result<(), PodError> {
    if ctx.ips.get(&ObjectRef::new(name)).is_none() {
        return Ok(());
    }
    match Api::<IP>::all(ctx.client.clone())
        .delete(name, &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(source) => Err(PodError::Api {
            pod: name.to_owned(),
            what: format!("deleting IP {name}"),
            source,
        }),
    }
}

async fn release(ctx: &Context, pod: &PodKey, attachment: &str) -> Result<(), PodError> {
    let released = ctx
        .ipam
        .release(&pod.ipam_key(attachment), Release::Claim)
        .await
        .map_err(|source| PodError::Ipam {
            pod: pod.to_string(),
            source,
        })?;
    if let crate::ipam::Released::Freed(a) = released {
        ctx.metrics
            .attachments_released
            .fetch_add(1, Ordering::Relaxed);
        ctx.usage_changed(&a.subnet);
        debug!(pod = %pod, attachment, ips = %a.ip_annotation(), "address released");
    }
    Ok(())
}

/// Removes everything of a pod that is gone, unless its StatefulSet keeps it.
/// Returns whether anything was removed.
pub async fn release_pod(
    ctx: &Context,
    key: &PodKey,
    last: Option<&Pod>,
) -> Result<bool, PodError> {
    let mut keys = port_keys(ctx, key);
    keys.extend(ipam_keys(ctx, key));
    if let Some(pod) = last {
        keys.extend(annotated_keys(pod));
    }
    if keys.is_empty() {
        return Ok(false);
    }
    let sts = last.and_then(statefulset_owner).or_else(|| {
        let sticky = keys
            .iter()
            .any(|k| ctx.ipam.get(&key.ipam_key(k)).is_some_and(|a| a.sticky));
        sticky
            .then(|| key.name.rsplit_once('-').map(|(s, _)| s.to_owned()))
            .flatten()
    });
    if let Some(sts) = sts {
        if statefulset_keeps(ctx, &key.namespace, &sts, &key.name).await {
            debug!(pod = %key, statefulset = %sts, "StatefulSet pod gone; keeping its addresses for its return");
            return Ok(false);
        }
    }
    let changes = keys
        .iter()
        .map(|k| PortChange::Delete(key.port_name(k)))
        .collect();
    ctx.ports
        .apply(changes)
        .await
        .map_err(|message| PodError::Nb {
            pod: key.to_string(),
            message,
        })?;
    for k in &keys {
        delete_ip(ctx, &key.port_name(k)).await?;
        release(ctx, key, k).await?;
    }
    info!(pod = %key, attachments = keys.len(), "pod gone: ports, IPs and addresses released");
    // Pods waiting for an address may take one now.
    ctx.requeue_waiting();
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::annotations::Provider;
    use crate::operator::attachment::RequestSource;

    fn plan(subnet: &str, ips: &[&str]) -> AttachmentPlan {
        let provider = Provider::for_nad("n1", "default").unwrap();
        AttachmentPlan {
            network: "default/n1".into(),
            key: provider.clone(),
            provider,
            lsp_name: "p.default.n1.default.ovn".into(),
            subnet: subnet.into(),
            vpc: Some("v".into()),
            cidrs: vec!["10.0.0.0/24".parse().unwrap()],
            mtu: None,
            interface: "net1".into(),
            ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
            ips_source: None,
            mac: None,
            mac_source: None,
            pool: None,
            claim: None,
            default_route: false,
            default_route_gateways: vec![],
        }
    }

    fn allocation(subnet: &str, ip: &str) -> Allocation {
        Allocation {
            key: "default/p/n1.default.ovn".into(),
            subnet: subnet.into(),
            ips: [ip.parse().unwrap()].into_iter().collect(),
            mac: "0a:00:00:00:00:01".parse().unwrap(),
            pool: None,
            sticky: false,
        }
    }

    #[test]
    fn a_held_allocation_is_reused_only_while_it_fits_the_plan() {
        assert!(matches!(held(None, &plan("s", &[])), Held::Nothing));
        let a = allocation("s", "10.0.0.5");
        assert!(matches!(
            held(Some(a.clone()), &plan("s", &[])),
            Held::Fits(_)
        ));
        assert!(matches!(
            held(Some(a.clone()), &plan("s", &["10.0.0.5"])),
            Held::Fits(_)
        ));
        assert!(matches!(
            held(Some(a.clone()), &plan("s", &["10.0.0.6"])),
            Held::Stale
        ));
        assert!(matches!(held(Some(a), &plan("other", &[])), Held::Stale));
    }

    #[test]
    fn leftover_allocation_annotations_name_their_keys() {
        let mut pod = Pod::default();
        pod.metadata.annotations = Some(BTreeMap::from([(
            "n1.default.ovn.kubernetes.io/allocated".to_owned(),
            "true".to_owned(),
        )]));
        assert_eq!(
            annotated_keys(&pod),
            BTreeSet::from(["n1.default.ovn".to_owned()])
        );
    }

    #[test]
    fn static_ips_are_refused_by_ipam_saying_where_the_pod_asked() {
        use crate::ipam::{Allocator, SubnetSpec};
        let mut ipam = Allocator::new();
        ipam.add_subnet(SubnetSpec {
            name: "s".into(),
            cidr_block: "10.100.0.0/16".into(),
            gateway: None,
            exclude_ips: vec![],
            pools: Default::default(),
        })
        .expect("valid subnet");
        let cases: [(&[&str], &str, &str); 5] = [
            (
                &["10.200.0.100"],
                "InvalidStaticIP",
                "10.200.0.100 is outside the usable range",
            ),
            (&["10.100.0.100/24"], "InvalidStaticIP", "has prefix /24"),
            (
                &["10.100.0.5", "10.100.0.6"],
                "InvalidStaticIP",
                "at most one per family",
            ),
            (&["fd00::5"], "InvalidStaticIP", "fd00::5"),
            (
                &["10.100.0.1"],
                "StaticIPIsGateway",
                "10.100.0.1 is the gateway",
            ),
        ];
        for (ips, reason, says) in cases {
            let mut p = plan("s", ips);
            p.ips_source = Some(RequestSource::NetworkElement);
            let request = AllocationRequest::new("default/p/n1.default.ovn", "s")
                .with_ips(p.ips.iter().copied());
            let e = ipam.allocate(&request).expect_err("refused");
            assert_eq!(ipam_reason(&e), reason, "{ips:?}: {e}");
            let message = refusal_message(&PodKey::new("default", "p"), &p, &e);
            assert!(
                message.starts_with("pod default/p: network default/n1: "),
                "{message}"
            );
            assert!(message.contains(says), "{message}");
            assert!(
                message.ends_with("(requested in annotation k8s.v1.cni.cncf.io/networks)"),
                "{message}"
            );
        }
        // Nothing was allocated by the refusals.
        assert_eq!(ipam.len(), 0);
    }

    #[test]
    fn ipam_refusals_map_to_event_reasons() {
        let ip = "10.0.0.1".parse().unwrap();
        let subnet = "s".to_owned();
        assert_eq!(
            ipam_reason(&IpamError::IsGateway {
                subnet: subnet.clone(),
                ip
            }),
            "StaticIPIsGateway"
        );
        assert_eq!(
            ipam_reason(&IpamError::Excluded {
                subnet: subnet.clone(),
                ip
            }),
            "StaticIPExcluded"
        );
        assert_eq!(
            ipam_reason(&IpamError::HeldBy {
                subnet,
                ip,
                holder: "default/q/n1.default.ovn".into()
            }),
            "StaticIPTaken"
        );
    }
}
