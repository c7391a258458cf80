//! IPAM adoption: before the pod workers start, every allocation the cluster shows (the
//! pods' `<provider>.kubernetes.io/allocated|ip_address|mac_address|logical_switch`
//! annotations and the IP CRs) is claimed in IPAM. The sled store is a journal and a cache;
//! a new leader may start with an empty or stale one, and without this step the first new
//! pod could be handed an address a running pod still uses.
//!
//! `plan_adoption` is pure: it pairs each attachment's annotation with its IP CR, and turns
//! disagreements into conflicts (the annotation wins, since the pod's interface was built
//! from it; two pods on one address or MAC: the running and older one keeps it). `adopt` is
//! the I/O: it sets up the subnets IPAM lacks, frees stale store records in the way, claims,
//! raises an `AddressConflict` Event per conflict, and logs the counts.
//!
//! Not here: the pod controller (which reconciles the adopted pods afterwards, `pod/`), the
//! garbage collection of what no pod claims (`gc.rs`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use super::context::{Context, PodKey};
use super::pod::{statefulset_owner, PodError};
use super::subnet;
use crate::api::annotations::{parse_provider_annotation, ProviderKey};
use crate::api::ip::IP;
use crate::api::mac::MacAddr;
use crate::api::selection::IpRequest;
use crate::ipam::{AllocationRequest, IpamError, Release};

/// The Event reason of a conflict found while adopting.
pub const CONFLICT_REASON: &str = "AddressConflict";
/// The Event reason of an allocation IPAM refused to adopt.
pub const NOT_ADOPTED_REASON: &str = "AddressNotAdopted";

/// Where the cluster shows an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Annotation,
    IpCr,
    /// Annotation and IP CR agree.
    Both,
}

/// One attachment's allocation, to be claimed in IPAM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub pod: PodKey,
    /// The attachment key (the provider, e.g. `net1.default.ovn`).
    pub attachment: String,
    pub subnet: String,
    pub ips: Vec<IpAddr>,
    pub mac: Option<MacAddr>,
    /// Owned by a StatefulSet: kept while the StatefulSet wants the pod.
    pub sticky: bool,
    pub source: Source,
}

impl Claim {
    pub fn ipam_key(&self) -> String {
        self.pod.ipam_key(&self.attachment)
    }
}

/// Something the cluster shows that cannot be adopted as it stands; raised as an Event on
/// each of `pods` (those that still exist).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub pods: Vec<PodKey>,
    pub message: String,
}

/// What to claim, and what to tell the user.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Adoption {
    pub claims: Vec<Claim>,
    pub conflicts: Vec<Conflict>,
    /// Records that cannot be read (bad address, no subnet): logged, left to the controllers.
    pub unreadable: Vec<String>,
}

/// One side's view of an attachment's allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shown {
    subnet: Option<String>,
    ips: Vec<IpAddr>,
    mac: Option<MacAddr>,
}

impl Shown {
    fn read(
        subnet: Option<&str>,
        ips: &str,
        mac: Option<&str>,
        what: &str,
    ) -> Result<Shown, String> {
        let ips = ips
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<IpRequest>()
                    .map(|r| r.address)
                    .map_err(|e| format!("{what}: address {s:?}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if ips.is_empty() {
            return Err(format!("{what}: no address"));
        }
        let mac = mac
            .filter(|m| !m.is_empty())
            .map(|m| {
                m.parse::<MacAddr>()
                    .map_err(|e| format!("{what}: MAC {m:?}: {e}"))
            })
            .transpose()?;
        Ok(Shown {
            subnet: subnet.filter(|s| !s.is_empty()).map(str::to_owned),
            ips,
            mac,
        })
    }

    fn agrees(&self, other: &Shown) -> bool {
        let sorted = |v: &[IpAddr]| {
            let mut v = v.to_vec();
            v.sort();
            v
        };
        self.subnet
            .as_ref()
            .zip(other.subnet.as_ref())
            .is_none_or(|(a, b)| a == b)
            && sorted(&self.ips) == sorted(&other.ips)
            && self.mac.zip(other.mac).is_none_or(|(a, b)| a == b)
    }

    fn describe(&self) -> String {
        let ips: Vec<String> = self.ips.iter().map(IpAddr::to_string).collect();
        let mut out = ips.join(",");
        if let Some(subnet) = &self.subnet {
            out.push_str(&format!(" in subnet {subnet:?}"));
        }
        if let Some(mac) = self.mac {
            out.push_str(&format!(" (MAC {mac})"));
        }
        out
    }
}

/// The attachments a pod's annotations show as allocated.
fn annotated(pod: &Pod, unreadable: &mut Vec<String>) -> BTreeMap<String, Shown> {
    let annotations = pod.annotations();
    let key = PodKey::of(pod);
    let mut out = BTreeMap::new();
    for (name, value) in annotations {
        let Some((attachment, ProviderKey::Allocated)) = parse_provider_annotation(name) else {
            continue;
        };
        if value != "true" {
            continue;
        }
        let get = |k: ProviderKey| {
            annotations
                .get(&crate::api::annotations::provider_annotation(attachment, k))
                .map(String::as_str)
        };
        let what = format!("pod {key} network {attachment}: annotation");
        let Some(ips) = get(ProviderKey::IpAddress) else {
            unreadable.push(format!("{what}: allocated but no ip_address"));
            continue;
        };
        match Shown::read(
            get(ProviderKey::LogicalSwitch),
            ips,
            get(ProviderKey::MacAddress),
            &what,
        ) {
            Ok(shown) => {
                out.insert(attachment.to_owned(), shown);
            }
            Err(e) => unreadable.push(e),
        }
    }
    out
}

/// Pairs pods' annotations with IP CRs and settles who holds what. Pure.
///
/// An IP CR whose pod is gone is claimed too (sticky): the garbage collection frees it once
/// it has checked for a StatefulSet that wants the pod back; until then no new pod may get
/// its address.
pub fn plan_adoption<'a>(
    pods: impl IntoIterator<Item = &'a Pod>,
    ips: impl IntoIterator<Item = &'a IP>,
) -> Adoption {
    let mut adoption = Adoption::default();
    // Per (pod, attachment): annotation, IP CR (name and view).
    type Sides = (Option<Shown>, Option<(String, Shown)>);
    let mut seen: BTreeMap<(PodKey, String), Sides> = BTreeMap::new();
    let mut running: HashMap<PodKey, (&Pod, bool)> = HashMap::new();
    for pod in pods {
        let key = PodKey::of(pod);
        for (attachment, shown) in annotated(pod, &mut adoption.unreadable) {
            seen.entry((key.clone(), attachment)).or_default().0 = Some(shown);
        }
        running.insert(key, (pod, statefulset_owner(pod).is_some()));
    }
    for ip in ips {
        let name = ip.name_any();
        let pod = PodKey::new(&ip.spec.namespace, &ip.spec.pod_name);
        let Some(attachment) = pod.attachment_of_port(&name) else {
            adoption
                .unreadable
                .push(format!("IP {name}: its name does not match pod {pod}"));
            continue;
        };
        let attachment = attachment.to_owned();
        let what = format!("IP {name}");
        let mac = Some(ip.spec.mac_address.as_str());
        match Shown::read(Some(&ip.spec.subnet), &ip.spec.ip_address, mac, &what) {
            Ok(shown) => {
                seen.entry((pod, attachment)).or_default().1 = Some((name, shown));
            }
            Err(e) => adoption.unreadable.push(e),
        }
    }

    let mut candidates = Vec::new();
    for ((pod, attachment), sides) in seen {
        let (shown, source) = match sides {
            (Some(note), Some((name, cr))) => {
                if note.agrees(&cr) {
                    let mut both = note;
                    both.subnet = both.subnet.or(cr.subnet);
                    both.mac = both.mac.or(cr.mac);
                    (both, Source::Both)
                } else {
                    adoption.conflicts.push(Conflict {
                        pods: vec![pod.clone()],
                        message: format!(
                            "pod {pod} network {attachment}: the pod's annotations say {} but IP \
                             {name} says {}; adopted the annotations' address (the pod's \
                             interface was built from it), the IP is rewritten to match",
                            note.describe(),
                            cr.describe()
                        ),
                    });
                    let mut note = note;
                    note.subnet = note.subnet.or(cr.subnet);
                    (note, Source::Annotation)
                }
            }
            (Some(note), None) => (note, Source::Annotation),
            (None, Some((_, cr))) => (cr, Source::IpCr),
            (None, None) => continue,
        };
        let Some(subnet) = shown.subnet else {
            adoption.unreadable.push(format!(
                "pod {pod} network {attachment}: allocated but no subnet recorded"
            ));
            continue;
        };
        // A gone pod's claim is sticky so that the garbage collection asks its StatefulSet
        // (if any) before freeing it, as it would have for the lost store's record.
        let (present, sticky, created) = match running.get(&pod) {
            Some((p, sticky)) => (true, *sticky, p.creation_timestamp().map(|t| t.0)),
            None => (false, true, None),
        };
        candidates.push((
            (!present, created, pod.clone(), attachment.clone()),
            Claim {
                pod,
                attachment,
                subnet,
                ips: shown.ips,
                mac: shown.mac,
                sticky,
                source,
            },
        ));
    }

    // Running pods first, oldest first: of two claims on one address, the first keeps it.
    candidates.sort_by(|a, b| a.0.cmp(&b.0));
    let mut holders: HashMap<(String, String), PodKey> = HashMap::new();
    for (_, claim) in candidates {
        let things = claim
            .ips
            .iter()
            .map(|ip| (claim.subnet.clone(), ip.to_string(), "address"))
            .chain(
                claim
                    .mac
                    .map(|m| (claim.subnet.clone(), m.to_string(), "MAC")),
            );
        let mut taken = None;
        for (subnet, thing, kind) in things {
            if let Some(holder) = holders.get(&(subnet.clone(), thing.clone())) {
                taken = Some((holder.clone(), thing, kind));
                break;
            }
        }
        match taken {
            Some((holder, thing, kind)) => adoption.conflicts.push(Conflict {
                pods: vec![holder.clone(), claim.pod.clone()],
                message: format!(
                    "{kind} {thing} of subnet {:?} is claimed by pod {holder} and by pod {} \
                     (network {}); {holder} keeps it, {} must be recreated to get one of its own",
                    claim.subnet, claim.pod, claim.attachment, claim.pod
                ),
            }),
            None => {
                for ip in &claim.ips {
                    holders.insert((claim.subnet.clone(), ip.to_string()), claim.pod.clone());
                }
                if let Some(mac) = claim.mac {
                    holders.insert((claim.subnet.clone(), mac.to_string()), claim.pod.clone());
                }
                adoption.claims.push(claim);
            }
        }
    }
    adoption
}

/// What `adopt` did, for the log line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AdoptionReport {
    /// Claimed now (the store did not have them).
    pub adopted: usize,
    /// Already in the store as the cluster shows them.
    pub known: usize,
    /// Stale store records freed because a claim needed their address or key.
    pub freed: usize,
    pub conflicts: usize,
    /// Claims IPAM refused (subnet gone or changed): an Event each.
    pub refused: usize,
}

/// Whether the store's allocation of a claim's key is exactly the claim.
fn store_agrees(stored: &crate::ipam::Allocation, claim: &Claim) -> bool {
    let mut held: Vec<IpAddr> = stored.ips.iter().copied().collect();
    let mut wanted = claim.ips.clone();
    held.sort();
    wanted.sort();
    *stored.subnet == *claim.subnet && held == wanted && claim.mac.is_none_or(|m| m == stored.mac)
}

/// Claims in IPAM every allocation the cluster shows; run once, after the stores are
/// complete and before the pod workers start.
pub async fn adopt(ctx: &Arc<Context>) -> anyhow::Result<AdoptionReport> {
    let started = Instant::now();
    anyhow::ensure!(
        ctx.vpcs.wait_until_ready().await.is_ok(),
        "the Vpc watch stopped before its first list"
    );
    set_up_subnets(ctx).await;
    let pods = ctx.pods.state();
    let ips = ctx.ips.state();
    let plan = plan_adoption(pods.iter().map(|p| &**p), ips.iter().map(|i| &**i));
    for why in &plan.unreadable {
        warn!("adopting IPAM: skipped: {why}");
    }
    let mut report = AdoptionReport {
        conflicts: plan.conflicts.len(),
        ..Default::default()
    };

    // Which store records are in the way: a claim's own key holding something else, and
    // keys no claim names that hold a claimed address or MAC.
    let claimed: HashSet<String> = plan.claims.iter().map(Claim::ipam_key).collect();
    let (todo, stale) = ctx.ipam.read(|a| {
        let mut by_thing: HashMap<(&str, String), &str> = HashMap::new();
        for held in a.allocations() {
            for ip in held.ips.iter() {
                by_thing.insert((&*held.subnet, ip.to_string()), held.key.as_str());
            }
            by_thing.insert((&*held.subnet, held.mac.to_string()), held.key.as_str());
        }
        let mut todo = Vec::new();
        let mut stale = HashSet::new();
        for claim in &plan.claims {
            let key = claim.ipam_key();
            match a.get(&key) {
                Some(stored) if store_agrees(stored, claim) => {
                    report.known += 1;
                    continue;
                }
                Some(_) => {
                    stale.insert(key.clone());
                }
                None => {}
            }
            let things = claim
                .ips
                .iter()
                .map(IpAddr::to_string)
                .chain(claim.mac.map(|m| m.to_string()));
            for thing in things {
                if let Some(holder) = by_thing.get(&(claim.subnet.as_str(), thing)) {
                    if !claimed.contains(*holder) {
                        stale.insert((*holder).to_owned());
                    }
                }
            }
            todo.push(claim);
        }
        (todo, stale)
    });
    for key in &stale {
        ctx.ipam
            .release(key, Release::Claim)
            .await
            .map_err(|source| PodError::Ipam {
                pod: key.clone(),
                source,
            })?;
        report.freed += 1;
    }
    let results: Vec<(&Claim, Result<(), IpamError>)> = futures::stream::iter(todo)
        .map(|claim| async move {
            let mut request = AllocationRequest::new(claim.ipam_key(), claim.subnet.clone())
                .with_ips(claim.ips.iter().map(|&address| IpRequest {
                    address,
                    prefix_len: None,
                }))
                .sticky(claim.sticky);
            if let Some(mac) = claim.mac {
                request = request.with_mac(mac);
            }
            (claim, ctx.ipam.allocate(&request).await.map(|_| ()))
        })
        // Group commit: many claims share one store flush.
        .buffer_unordered(64)
        .collect()
        .await;
    let mut touched = HashSet::new();
    for (claim, result) in results {
        match result {
            Ok(()) => {
                report.adopted += 1;
                touched.insert(claim.subnet.clone());
            }
            Err(e @ IpamError::Store { .. }) => {
                return Err(e).map_err(|source| PodError::Ipam {
                    pod: claim.pod.to_string(),
                    source,
                })?;
            }
            Err(e) => {
                report.refused += 1;
                let message =
                    format!(
                    "pod {} network {}: the address the cluster shows ({}) cannot be adopted: {e}",
                    claim.pod,
                    claim.attachment,
                    claim.ips.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(",")
                );
                tell(ctx, &claim.pod, NOT_ADOPTED_REASON, &message).await;
            }
        }
    }
    for conflict in &plan.conflicts {
        for pod in &conflict.pods {
            tell(ctx, pod, CONFLICT_REASON, &conflict.message).await;
        }
    }
    for subnet in touched {
        ctx.usage_changed(&subnet);
    }
    info!(
        adopted = report.adopted,
        already_known = report.known,
        freed_stale = report.freed,
        conflicts = report.conflicts,
        refused = report.refused,
        unreadable = plan.unreadable.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "IPAM adopted the allocations the cluster shows"
    );
    Ok(report)
}

/// Puts every valid Subnet into IPAM (as the Subnet controller will, which has not started
/// yet), so claims find their subnet. NB and status stay the Subnet controller's.
async fn set_up_subnets(ctx: &Context) {
    let all = ctx.subnets.state();
    for s in all.iter().filter(|s| s.meta().deletion_timestamp.is_none()) {
        let valid = subnet::validate(s, &all, |vpc| ctx.vpcs.get(&ObjectRef::new(vpc)).is_some());
        // An invalid subnet is the Subnet controller's to report.
        let Ok(valid) = valid else { continue };
        // With its IPPools, so no pool address is handed out as a general one meanwhile.
        let spec = super::ippool::fit_pools(&valid.ipam, &ctx.ippools.state()).0;
        if let Err(e) = ctx.ipam.apply_subnet(spec).await {
            warn!(subnet = %s.name_any(), error = %e, "adopting IPAM: subnet not set up; its pods wait for the Subnet controller");
        }
    }
}

async fn tell(ctx: &Context, pod: &PodKey, reason: &str, message: &str) {
    warn!(pod = %pod, reason, "{message}");
    if let Some(p) = ctx
        .pods
        .get(&ObjectRef::new(&pod.name).within(&pod.namespace))
    {
        ctx.events
            .warn(&p.object_ref(&()), reason, "AdoptAddress", message)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ip::IpSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    const NET: &str = "net1.default.ovn";

    fn pod(name: &str, created: i64, allocated: Option<(&str, &str)>) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.namespace = Some("default".into());
        p.metadata.creation_timestamp =
            Some(Time(Timestamp::from_second(created).expect("valid time")));
        if let Some((ip, mac)) = allocated {
            let a = |k: &str, v: &str| (format!("{NET}.kubernetes.io/{k}"), v.to_owned());
            p.metadata.annotations = Some(BTreeMap::from([
                a("allocated", "true"),
                a("ip_address", ip),
                a("mac_address", mac),
                a("logical_switch", "s1"),
            ]));
        }
        p
    }

    fn ip_cr(pod: &str, ip: &str, mac: &str) -> IP {
        let mut cr = IP::new(
            &PodKey::new("default", pod).port_name(NET),
            IpSpec {
                pod_name: pod.into(),
                namespace: "default".into(),
                subnet: "s1".into(),
                ip_address: ip.into(),
                mac_address: mac.into(),
                ..Default::default()
            },
        );
        cr.metadata.resource_version = Some("1".into());
        cr
    }

    fn addr(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const MAC_A: &str = "00:00:00:aa:aa:01";
    const MAC_B: &str = "00:00:00:aa:aa:02";

    #[test]
    fn an_annotation_alone_is_claimed() {
        let pods = [pod("a", 1, Some(("10.0.0.5", MAC_A)))];
        let plan = plan_adoption(&pods, []);
        assert_eq!(plan.conflicts, vec![]);
        assert_eq!(
            plan.claims,
            vec![Claim {
                pod: PodKey::new("default", "a"),
                attachment: NET.into(),
                subnet: "s1".into(),
                ips: vec![addr("10.0.0.5")],
                mac: Some(MAC_A.parse().unwrap()),
                sticky: false,
                source: Source::Annotation,
            }]
        );
        assert_eq!(plan.claims[0].ipam_key(), "default/a/net1.default.ovn");
    }

    #[test]
    fn an_ip_cr_alone_is_claimed_for_its_pod() {
        let pods = [pod("a", 1, None)];
        let ips = [ip_cr("a", "10.0.0.5", MAC_A)];
        let plan = plan_adoption(&pods, &ips);
        assert_eq!(plan.claims.len(), 1);
        assert_eq!(plan.claims[0].source, Source::IpCr);
        assert_eq!(plan.claims[0].ips, vec![addr("10.0.0.5")]);
        assert_eq!(plan.claims[0].subnet, "s1");
    }

    #[test]
    fn agreeing_annotation_and_ip_cr_make_one_claim() {
        let pods = [pod("a", 1, Some(("10.0.0.5", MAC_A)))];
        let ips = [ip_cr("a", "10.0.0.5", MAC_A)];
        let plan = plan_adoption(&pods, &ips);
        assert_eq!(plan.conflicts, vec![]);
        assert_eq!(plan.claims.len(), 1);
        assert_eq!(plan.claims[0].source, Source::Both);
    }

    #[test]
    fn disagreeing_annotation_and_ip_cr_are_a_conflict_and_the_annotation_is_kept() {
        let pods = [pod("a", 1, Some(("10.0.0.5", MAC_A)))];
        let ips = [ip_cr("a", "10.0.0.9", MAC_A)];
        let plan = plan_adoption(&pods, &ips);
        assert_eq!(plan.conflicts.len(), 1);
        let conflict = &plan.conflicts[0];
        assert_eq!(conflict.pods, vec![PodKey::new("default", "a")]);
        assert!(
            conflict.message.contains("10.0.0.5"),
            "{}",
            conflict.message
        );
        assert!(
            conflict.message.contains("10.0.0.9"),
            "{}",
            conflict.message
        );
        assert_eq!(plan.claims.len(), 1);
        assert_eq!(plan.claims[0].ips, vec![addr("10.0.0.5")]);
        assert_eq!(plan.claims[0].source, Source::Annotation);
    }

    #[test]
    fn two_pods_on_one_address_are_a_conflict_and_the_older_keeps_it() {
        let pods = [
            pod("young", 20, Some(("10.0.0.5", MAC_B))),
            pod("old", 10, Some(("10.0.0.5", MAC_A))),
        ];
        let plan = plan_adoption(&pods, []);
        assert_eq!(plan.claims.len(), 1);
        assert_eq!(plan.claims[0].pod, PodKey::new("default", "old"));
        assert_eq!(plan.conflicts.len(), 1);
        assert_eq!(
            plan.conflicts[0].pods,
            vec![
                PodKey::new("default", "old"),
                PodKey::new("default", "young")
            ]
        );
    }

    #[test]
    fn two_pods_on_one_mac_are_a_conflict() {
        let pods = [
            pod("old", 10, Some(("10.0.0.5", MAC_A))),
            pod("young", 20, Some(("10.0.0.6", MAC_A))),
        ];
        let plan = plan_adoption(&pods, []);
        assert_eq!(plan.claims.len(), 1);
        assert_eq!(plan.conflicts.len(), 1);
        assert!(plan.conflicts[0].message.contains("MAC"));
    }

    #[test]
    fn a_gone_pods_ip_cr_is_claimed_but_loses_to_a_running_pod() {
        // Gone: only its IP CR is left (GC decides about it later).
        let ips = [ip_cr("gone", "10.0.0.7", MAC_B)];
        let plan = plan_adoption([], &ips);
        assert_eq!(plan.claims.len(), 1);
        assert_eq!(plan.claims[0].pod, PodKey::new("default", "gone"));
        assert!(
            plan.claims[0].sticky,
            "GC asks a StatefulSet before freeing it"
        );

        let pods = [pod("running", 10, Some(("10.0.0.7", MAC_A)))];
        let plan = plan_adoption(&pods, &ips);
        assert_eq!(plan.claims.len(), 1);
        assert_eq!(plan.claims[0].pod, PodKey::new("default", "running"));
        assert_eq!(plan.conflicts.len(), 1);
    }

    #[test]
    fn unreadable_records_are_reported_not_claimed() {
        let pods = [pod("a", 1, Some(("10.0.0.x", MAC_A)))];
        let plan = plan_adoption(&pods, []);
        assert_eq!(plan.claims, vec![]);
        assert_eq!(plan.unreadable.len(), 1, "{:?}", plan.unreadable);
        assert!(plan.unreadable[0].contains("10.0.0.x"));
    }
}
