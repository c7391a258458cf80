//! The pod attachment controller (ARCHITECTURE.md steps 2–4 and 7): for every
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

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::{store::Writer, ObjectRef};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, warn, Instrument};

use super::attachment::{
    plan_pod_attachments, AttachmentError, AttachmentPlan, PodAttachmentInput, SubnetIndex,
};
use super::context::{Context, PodKey};
use super::ports::PortChange;
use crate::api::allocation::AllocatedAttachment;
use crate::api::annotations::{
    parse_provider_annotation, provider_annotation, ProviderKey, NETWORKS,
};
use crate::api::ip::{IpSpec, IP};
use crate::api::selection::IpRequest;
use crate::ipam::{Allocation, AllocationRequest, IpamError, Release};
use crate::ovn::LspSpec;

/// The field manager of our writes.
pub const MANAGER: &str = "kube-ovn-operator";
const VENDOR: &str = "kube-ovn";
/// `external_ids` key holding the attachment key of a pod's port.
pub const ATTACHMENT_KEY: &str = "attachment";

/// The annotations the controller writes per attachment.
const ALLOCATION_KEYS: [ProviderKey; 7] = [
    ProviderKey::IpAddress,
    ProviderKey::MacAddress,
    ProviderKey::Cidr,
    ProviderKey::Gateway,
    ProviderKey::LogicalSwitch,
    ProviderKey::LogicalRouter,
    ProviderKey::Allocated,
];

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

/// Whether a pod needs us at all: it names networks or carries our annotations.
fn relevant(pod: &Pod) -> bool {
    pod.metadata.annotations.as_ref().is_some_and(|a| {
        a.contains_key(NETWORKS)
            || a.keys().any(|k| {
                matches!(
                    parse_provider_annotation(k),
                    Some((_, ProviderKey::Allocated))
                )
            })
    })
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
        .filter(|p| p.external_ids.get("vendor").map(String::as_str) == Some(VENDOR))
        .filter_map(|p| {
            p.external_ids
                .get(ATTACHMENT_KEY)
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
fn statefulset_owner(pod: &Pod) -> Option<String> {
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
        IpamError::Full { .. } => "SubnetFull",
        _ => "AllocationFailed",
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
                && plan.ips.iter().all(|ip| a.ips.contains(ip))
                && plan.mac.is_none_or(|m| m.to_string() == a.mac.to_string()) =>
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
    let index = SubnetIndex::new(subnets.iter().map(|s| &**s));
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

    let planned: BTreeSet<String> = plans.iter().map(|p| p.key.to_string()).collect();
    let mut existing = port_keys(ctx, key);
    existing.extend(annotated_keys(pod));
    let stale: Vec<String> = existing.difference(&planned).cloned().collect();

    // 1. IPAM, durably, before anything names the address.
    let sticky = statefulset_owner(pod).is_some();
    let mut allocations = Vec::with_capacity(plans.len());
    let mut fresh: Vec<String> = Vec::new();
    for plan in &plans {
        let ipam_key = key.ipam_key(plan.key.as_str());
        match held(ctx.ipam.get(&ipam_key), plan) {
            Held::Fits(a) => {
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
        let mut request = AllocationRequest::new(ipam_key.clone(), plan.subnet.clone())
            .with_ips(plan.ips.iter().map(|&address| IpRequest {
                address,
                prefix_len: None,
            }))
            .sticky(sticky);
        if let Some(mac) = plan.mac {
            request = request.with_mac(mac);
        }
        match ctx.ipam.allocate(&request).await {
            Ok(a) => {
                fresh.push(ipam_key);
                allocations.push(a.into());
            }
            Err(IpamError::Store { reason }) => {
                return Err(PodError::Ipam {
                    pod: key.to_string(),
                    source: IpamError::Store { reason },
                })
            }
            Err(e) => {
                for k in &fresh {
                    let _ = ctx.ipam.release(k, Release::Claim).await;
                }
                let reason = ipam_reason(&e);
                let message = format!("pod {key}: network {}: {e}", plan.network);
                report(ctx, pod, reason, &message).await;
                // A taken address or a full subnet may free up.
                let retry = matches!(e, IpamError::HeldBy { .. } | IpamError::Full { .. });
                return Ok(retry.then_some(Duration::from_secs(30)));
            }
        }
    }
    for plan in &plans {
        ctx.usage_changed(&plan.subnet);
    }

    // 2. One NB transaction (possibly shared) for the pod's ports.
    let mut changes = Vec::new();
    for (plan, alloc) in plans.iter().zip(&allocations) {
        let spec = LspSpec {
            name: plan.lsp_name.clone(),
            switch: plan.subnet.clone(),
            mac: alloc.mac.to_string(),
            ips: alloc.ips.iter().map(ToString::to_string).collect(),
            port_security: false,
            external_ids: BTreeMap::from([
                ("pod".to_owned(), key.ns_name()),
                ("ls".to_owned(), plan.subnet.clone()),
                ("vendor".to_owned(), VENDOR.to_owned()),
                (ATTACHMENT_KEY.to_owned(), plan.key.to_string()),
            ]),
        };
        let current = ctx.nb.port(&spec.name).ok().flatten();
        let up_to_date = current.is_some_and(|p| {
            p.addresses == spec.addresses() && p.external_ids == spec.external_ids
        });
        if !up_to_date {
            changes.push(PortChange::Ensure(spec));
        }
    }
    for k in &stale {
        changes.push(PortChange::Delete(key.port_name(k)));
    }
    let wrote_ports = !changes.is_empty();
    ctx.ports
        .apply(changes)
        .await
        .map_err(|message| PodError::Nb {
            pod: key.to_string(),
            message,
        })?;

    // 3. One merge patch of the annotations.
    let mut patch: BTreeMap<String, Option<String>> = BTreeMap::new();
    for (plan, alloc) in plans.iter().zip(&allocations) {
        let gateways = ctx
            .ipam
            .subnet(&plan.subnet)
            .map(|v| v.gateways.into_iter().flatten().collect())
            .unwrap_or_default();
        let allocated = AllocatedAttachment {
            ips: alloc.ips.to_vec(),
            mac: alloc.mac,
            cidrs: plan.cidrs.clone(),
            gateways,
            logical_switch: plan.subnet.clone(),
            logical_router: plan.vpc.clone(),
        };
        for (k, v) in allocated.to_annotations(plan.key.as_str()) {
            if annotations.get(&k) != Some(&v) {
                patch.insert(k, Some(v));
            }
        }
    }
    for k in &stale {
        for pk in ALLOCATION_KEYS {
            let name = provider_annotation(k, pk);
            if annotations.contains_key(&name) {
                patch.insert(name, None);
            }
        }
    }
    if !patch.is_empty() {
        Api::<Pod>::namespaced(ctx.client.clone(), &key.namespace)
            .patch(
                &key.name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "metadata": { "annotations": patch } })),
            )
            .await
            .map_err(|source| PodError::Api {
                pod: key.to_string(),
                what: "annotating".into(),
                source,
            })?;
    }

    // 4. The IP CRs.
    let ips: Api<IP> = Api::all(ctx.client.clone());
    for (plan, alloc) in plans.iter().zip(&allocations) {
        let spec = ip_spec(key, pod, plan, alloc, sticky);
        let current = ctx.ips.get(&ObjectRef::new(&plan.lsp_name));
        if current.as_ref().map(|c| &c.spec) == Some(&spec) {
            continue;
        }
        let mut ip = IP::new(&plan.lsp_name, spec);
        ip.metadata.labels = Some(BTreeMap::from([
            ("ovn.kubernetes.io/subnet".to_owned(), plan.subnet.clone()),
            ("kubeovn.io/pod".to_owned(), key.name.clone()),
        ]));
        ips.patch(
            &plan.lsp_name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&ip),
        )
        .await
        .map_err(|source| PodError::Api {
            pod: key.to_string(),
            what: format!("writing IP {}", plan.lsp_name),
            source,
        })?;
    }

    // 5. What the pod no longer asks for.
    for k in &stale {
        delete_ip(ctx, &key.port_name(k)).await?;
        release(ctx, key, k).await?;
    }

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
        info!(pod = %key, attachments = plans.len(), ips = ?allocations.iter().map(Allocation::ip_annotation).collect::<Vec<_>>(), "pod attached");
    } else if wrote_ports || !patch.is_empty() || !stale.is_empty() {
        debug!(pod = %key, stale = stale.len(), "pod attachments repaired");
    }
    Ok(None)
}

fn ip_spec(
    key: &PodKey,
    pod: &Pod,
    plan: &AttachmentPlan,
    alloc: &Allocation,
    sticky: bool,
) -> IpSpec {
    let family = |v4: bool| {
        alloc
            .ips
            .iter()
            .find(|ip| ip.is_ipv4() == v4)
            .map(ToString::to_string)
            .unwrap_or_default()
    };
    IpSpec {
        pod_name: key.name.clone(),
        namespace: key.namespace.clone(),
        subnet: plan.subnet.clone(),
        node_name: pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default(),
        ip_address: alloc.ip_annotation(),
        v4_ip_address: family(true),
        v6_ip_address: family(false),
        mac_address: alloc.mac.to_string(),
        pod_type: if sticky {
            "StatefulSet".into()
        } else {
            String::new()
        },
        ..Default::default()
    }
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
    Ok(true)
}

/// Runs `concurrency` workers on the pod queue. Start them once the pod
/// store is ready: a pod missing from the store counts as deleted.
pub async fn run_workers(ctx: Arc<Context>, concurrency: usize) {
    debug!(workers = concurrency, "pod workers starting");
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let ctx = ctx.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let key = ctx.pod_queue.next().await;
                let span = tracing::info_span!("pod", pod = %key.name, namespace = %key.namespace);
                let result = reconcile(&ctx, &key).instrument(span).await;
                match result {
                    Ok(None) => {}
                    Ok(Some(delay)) => ctx.pod_queue.add_after(key.clone(), delay),
                    Err(e) => {
                        warn!(error = %e, "pod reconcile failed; retrying");
                        ctx.pod_queue.add_after(key.clone(), Duration::from_secs(1));
                    }
                }
                ctx.pod_queue.done(&key);
                ctx.initial_done(&key);
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
}

/// What the pod watch tells the controller.
#[derive(Debug)]
pub enum PodFeed {
    Changed(PodKey),
    Deleted(PodKey, Arc<Pod>),
    /// A (re)list completed with these relevant pods; `first` for the first one.
    Listed {
        keys: Vec<PodKey>,
        first: bool,
    },
}

/// Feeds the pod store from one pod watch and tells `feed` what changed.
/// Pods listed while a (re)list is under way are reported once it is
/// complete, so no worker mistakes a listed pod for a deleted one. Needs
/// only the client: it starts before IPAM and NB are open, overlapping the
/// longest part of a restart (listing every pod).
pub async fn watch_pods(
    client: kube::Client,
    mut writer: Writer<Pod>,
    feed: tokio::sync::mpsc::UnboundedSender<PodFeed>,
) {
    let api: Api<Pod> = Api::all(client);
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut listing: HashSet<PodKey> = HashSet::new();
    let mut first = true;
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                warn!(error = %e, "pod watch failed; retrying");
                continue;
            }
        };
        writer.apply_watcher_event(&event);
        let note = match event {
            watcher::Event::Apply(pod) => {
                relevant(&pod).then(|| PodFeed::Changed(PodKey::of(&pod)))
            }
            watcher::Event::Delete(pod) => Some(PodFeed::Deleted(PodKey::of(&pod), Arc::new(pod))),
            watcher::Event::Init => {
                listing.clear();
                None
            }
            watcher::Event::InitApply(pod) => {
                if relevant(&pod) {
                    listing.insert(PodKey::of(&pod));
                }
                None
            }
            watcher::Event::InitDone => {
                let keys = listing.drain().collect();
                let note = PodFeed::Listed { keys, first };
                first = false;
                Some(note)
            }
        };
        if let Some(note) = note {
            if feed.send(note).is_err() {
                return;
            }
        }
    }
}

/// Applies what the pod watch reports to the queue; each complete list triggers a GC.
pub async fn feed(
    ctx: Arc<Context>,
    mut notes: tokio::sync::mpsc::UnboundedReceiver<PodFeed>,
    gc: Arc<tokio::sync::Notify>,
) {
    while let Some(note) = notes.recv().await {
        match note {
            PodFeed::Changed(key) => ctx.pod_queue.add(key),
            PodFeed::Deleted(key, pod) => {
                ctx.tombstones
                    .lock()
                    .expect("tombstones lock poisoned")
                    .insert(key.clone(), pod);
                ctx.pod_queue.add(key);
            }
            PodFeed::Listed { keys, first } => {
                if first {
                    info!(pods = keys.len(), "initial pod list complete");
                    ctx.set_initial(keys.iter().cloned().collect());
                }
                for key in keys {
                    ctx.pod_queue.add(key);
                }
                gc.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::annotations::Provider;

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
            interface: "net1".into(),
            ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
            ips_source: None,
            mac: None,
            mac_source: None,
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
    fn pods_matter_when_they_name_networks_or_carry_our_annotations() {
        let pod = |annotations: &[(&str, &str)]| {
            let mut p = Pod::default();
            p.metadata.annotations = Some(
                annotations
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            );
            p
        };
        assert!(!relevant(&pod(&[("app", "x")])));
        assert!(relevant(&pod(&[(NETWORKS, "default/n1")])));
        let leftover = pod(&[("n1.default.ovn.kubernetes.io/allocated", "true")]);
        assert!(relevant(&leftover));
        assert_eq!(
            annotated_keys(&leftover),
            BTreeSet::from(["n1.default.ovn".to_owned()])
        );
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
