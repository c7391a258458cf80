//! The traffic-policy controller: SecurityGroups (and the Subnets' `private`, `allowSubnets`
//! and `acls`) onto the pod attachments that name them, and MultiNetworkPolicies onto the
//! attachments of the networks they name (`network_policy.rs`; once their CRD is installed,
//! before or after the operator starts). One loop owns every policy row in NB:
//! woken by a SecurityGroup, Subnet, MultiNetworkPolicy, pod or Namespace change (a namespace's
//! labels decide `namespaceSelector` peers) or by a change of NB's switch ports (a pod's
//! `<provider>.kubernetes.io/security_groups` reaches its port's `external_ids` through the pod
//! controller), it reads the member ports from the NB cache, plans the whole policy
//! (`plan.rs`, pure) and applies the difference in one NB transaction, then writes each group's
//! status and an Event on a Subnet whose policy fields were left out.
//!
//! The groups need no finalizer: a deleted group is no longer planned, so its rows go with the
//! next pass.

pub mod network_policy;
pub mod plan;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::WatchStreamExt;
use kube::{Resource, ResourceExt};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use super::context::Context;
use super::controller::{self, backoff};
use crate::api::annotations::{parse_provider_annotation, provider_annotation, ProviderKey};
use crate::api::attachment_id;
use crate::api::condition::{set_condition, Condition, ConditionStatus, READY};
use crate::api::multi_network_policy::{policy_for, MultiNetworkPolicy, POLICY_FOR};
use crate::api::security_group::{SecurityGroup, SecurityGroupSpec, SecurityGroupStatus};
use crate::api::subnet::Subnet;
use crate::ovn::nb::policy::port_ips;
use crate::ovn::{external_ids, Northbound};
use crate::ovsdb::model::nb::{LogicalSwitch, LogicalSwitchPort};
use crate::ovsdb::Table;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use network_policy::{
    NamedPort, Namespaces, NetworkPolicy, NetworkPolicyPlan, PodAttachment, PolicyPod,
};
use plan::{plan, Member, PolicyPlan, SubnetPolicy};

/// Coalesces bursts of changes (a pod's ports, many groups applied at once) into one pass.
const SETTLE: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("applying traffic policy to NB: {0}")]
    Nb(#[from] crate::ovn::Error),
    #[error("security group {group:?}: writing status: {source}")]
    Status {
        group: String,
        #[source]
        source: kube::Error,
    },
}

/// The member ports NB shows: our switch ports whose pod names security groups for them. Their
/// addresses are the port security entries if set, else the addresses (as Kube-OVN reads them).
/// Reads the cache in place and decodes only the ports that name groups: a pass over a switch
/// of thousands of pods without groups copies no row.
pub fn members(nb: &Northbound) -> crate::ovn::Result<Vec<Member>> {
    let cache = nb.client().cache();
    let Some(table) = cache.table(LogicalSwitchPort::NAME) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (uuid, row) in table.rows() {
        let names_groups = row
            .get("external_ids")
            .and_then(|ids| ids.map_get(external_ids::SECURITY_GROUPS))
            .is_some();
        if !names_groups {
            continue;
        }
        let p = LogicalSwitchPort::from_row(*uuid, row).map_err(crate::ovn::Error::from)?;
        if !external_ids::is_ours(&p.external_ids) {
            continue;
        }
        let groups: Vec<String> = p
            .external_ids
            .get(external_ids::SECURITY_GROUPS)
            .into_iter()
            .flat_map(|v| v.split('/'))
            .filter(|g| !g.is_empty())
            .map(str::to_owned)
            .collect();
        let ips = if p.port_security.is_empty() {
            port_ips(&p.addresses)
        } else {
            port_ips(&p.port_security)
        };
        out.push(Member {
            port: p.name,
            ips,
            groups,
        });
    }
    Ok(out)
}

/// The policy fields of `subnet` (a subnet without a valid CIDR still gets its `acls`).
pub fn subnet_policy(subnet: &Subnet) -> SubnetPolicy {
    let name = subnet.name_any();
    SubnetPolicy {
        cidrs: subnet.spec.cidrs(&name).unwrap_or_default(),
        private: subnet.spec.private.unwrap_or(false),
        allow_subnets: subnet.spec.allow_subnets.clone(),
        acls: subnet.spec.acls.clone(),
        name,
    }
}

/// Plans the policy for `groups` and `subnets` over the member ports in NB and makes NB hold
/// it, in one transaction. Returns the plan (for status) and whether NB changed.
pub async fn apply_policy(
    nb: &Northbound,
    groups: &[(String, SecurityGroupSpec)],
    subnets: &[SubnetPolicy],
) -> crate::ovn::Result<(PolicyPlan, bool)> {
    apply_policy_with(nb, groups, subnets, &NetworkPolicyPlan::default()).await
}

/// `apply_policy` with the rows of the MultiNetworkPolicies (planned by
/// `network_policy::plan`) in the same transaction.
pub async fn apply_policy_with(
    nb: &Northbound,
    groups: &[(String, SecurityGroupSpec)],
    subnets: &[SubnetPolicy],
    network: &NetworkPolicyPlan,
) -> crate::ovn::Result<(PolicyPlan, bool)> {
    let members = members(nb)?;
    let mut plan = plan(groups, &members, subnets);
    plan.nb
        .port_groups
        .extend(network.port_groups.iter().cloned());
    plan.nb
        .address_sets
        .extend(network.address_sets.iter().cloned());
    let wrote = nb.apply(|t| t.sync_policy(&plan.nb)).await?;
    Ok((plan, wrote))
}

/// A MultiNetworkPolicy with its `policy-for` networks as providers.
pub fn network_policy_of(p: &MultiNetworkPolicy) -> NetworkPolicy {
    let namespace = p.namespace().unwrap_or_default();
    let networks = p
        .annotations()
        .get(POLICY_FOR)
        .map(|v| policy_for(v, &namespace))
        .unwrap_or_default();
    NetworkPolicy {
        providers: networks
            .iter()
            .map(|(ns, nad)| format!("{nad}.{ns}.ovn"))
            .collect(),
        name: p.name_any(),
        namespace,
        spec: p.spec.clone(),
    }
}

/// A pod's labels and its allocated attachments (from the controller's annotations).
pub fn policy_pod(pod: &Pod) -> PolicyPod {
    let namespace = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let annotations = pod.annotations();
    let attachments = annotations
        .iter()
        .filter_map(|(k, v)| match parse_provider_annotation(k) {
            Some((key, ProviderKey::IpAddress)) => Some((key, v)),
            _ => None,
        })
        .filter(|(key, _)| {
            annotations
                .get(&provider_annotation(key, ProviderKey::Allocated))
                .is_some_and(|a| a == "true")
        })
        .map(|(key, ips)| PodAttachment {
            key: key.to_owned(),
            port: attachment_id::port_name(&namespace, &name, key),
            ips: ips
                .split(',')
                .filter_map(|ip| ip.trim().parse().ok())
                .collect(),
        })
        .collect();
    let ports = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            Some(NamedPort {
                name: p.name.clone()?,
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".to_owned()),
                port: p.container_port,
            })
        })
        .collect();
    PolicyPod {
        namespace,
        labels: pod.labels().clone(),
        attachments,
        ports,
    }
}

/// Every namespace's labels (for `namespaceSelector` peers).
pub fn namespace_labels(store: &Store<Namespace>) -> Namespaces {
    store
        .state()
        .iter()
        .map(|n| (n.name_any(), n.labels().clone()))
        .collect()
}

/// An Event on each MultiNetworkPolicy whose left-out parts changed.
async fn report_policies(
    ctx: &Context,
    store: &Store<MultiNetworkPolicy>,
    problems: &BTreeMap<String, Vec<String>>,
    reported: &mut BTreeMap<String, Vec<String>>,
) {
    for p in store.state() {
        let id = format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any());
        let now = problems.get(&id).cloned().unwrap_or_default();
        let what =
            format!("multi-networkpolicy {id}: left out (traffic it would allow stays denied)");
        let event = ("UnsupportedPolicy", "ApplyPolicy");
        report(ctx, &p.object_ref(&()), id, now, &what, event, reported).await;
    }
}

/// A Warning Event on `object` (and a log line) when the parts of it left out (`now`)
/// changed since last reported; nothing when they did not.
async fn report(
    ctx: &Context,
    object: &k8s_openapi::api::core::v1::ObjectReference,
    id: String,
    now: Vec<String>,
    what: &str,
    (reason, action): (&str, &str),
    reported: &mut BTreeMap<String, Vec<String>>,
) {
    if reported.get(&id).unwrap_or(&Vec::new()) == &now {
        return;
    }
    if !now.is_empty() {
        let message = format!("{what}: {}", now.join("; "));
        warn!(object = %id, "{message}");
        ctx.events.warn(object, reason, action, &message).await;
    }
    reported.insert(id, now);
}

/// Whether a batch of NB changes can change the plan: switch ports (members, addresses) and
/// switches (a subnet's switch appearing). The policy rows themselves are ours.
fn concerns_policy(table: &str) -> bool {
    table == LogicalSwitchPort::NAME || table == LogicalSwitch::NAME
}

/// Starts the controller, woken by `ctx.policy_wake` (which the Subnet and pod watches also
/// poke). Start it once the Subnet and pod stores are ready: its first pass must not miss a
/// subnet's ACLs or a policy's pods.
pub async fn start(ctx: Arc<Context>, tasks: &mut tokio::task::JoinSet<()>) {
    let wake = ctx.policy_wake.clone();
    let crds: Api<CustomResourceDefinition> = Api::all(ctx.client.clone());
    let (policies, policy_writer) = reflector::store();
    // Namespaces' labels, for the policies' namespaceSelector peers: a label change wakes the
    // loop like a pod's.
    let (namespaces, namespace_writer) = reflector::store();
    let with_policies = matches!(crds.get_opt(MNP_CRD).await, Ok(Some(_)));
    let mirror_policies = {
        let (client, wake) = (ctx.client.clone(), wake.clone());
        async move {
            let changed = move || wake.notify_one();
            futures::join!(
                super::mirror(
                    Api::<MultiNetworkPolicy>::all(client.clone()),
                    policy_writer,
                    "multi-networkpolicies",
                    changed.clone(),
                ),
                super::mirror(
                    Api::<Namespace>::all(client),
                    namespace_writer,
                    "namespaces",
                    changed,
                ),
            );
        }
    };
    let (installed_tx, installed) = tokio::sync::oneshot::channel();
    if with_policies {
        tasks.spawn(mirror_policies);
        let _ = installed_tx.send((policies, namespaces));
    } else {
        info!(crd = MNP_CRD, "MultiNetworkPolicy CRD not installed: MultiNetworkPolicies are applied once it is (crds/multi-networkpolicy.yaml)");
        // Watched for: installing the CRD later starts the policies' watches without a restart.
        tasks.spawn(async move {
            if crd_installed(crds).await {
                info!(
                    crd = MNP_CRD,
                    "MultiNetworkPolicy CRD installed: applying MultiNetworkPolicies"
                );
                let _ = installed_tx.send((policies, namespaces));
                mirror_policies.await;
            }
        });
    }
    let (groups, writer) = reflector::store();
    tasks.spawn(super::mirror(
        Api::<SecurityGroup>::all(ctx.client.clone()),
        writer,
        "security-groups",
        {
            let wake = wake.clone();
            move || wake.notify_one()
        },
    ));
    let mut changes = ctx.nb.client().subscribe();
    {
        let wake = wake.clone();
        tasks.spawn(async move {
            loop {
                match changes.recv().await {
                    Ok(batch) => {
                        if batch.iter().any(|c| concerns_policy(&c.table)) {
                            wake.notify_one();
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => wake.notify_one(),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }
    tasks.spawn(run(ctx, groups, installed, wake));
}

const MNP_CRD: &str = "multi-networkpolicies.k8s.cni.cncf.io";

/// The MultiNetworkPolicy and Namespace stores, once the MultiNetworkPolicy CRD is installed.
type PolicyStores = (Store<MultiNetworkPolicy>, Store<Namespace>);

/// Waits until the MultiNetworkPolicy CRD exists (a watch over the CRDs: a handful of objects).
/// False when the watch ends first.
async fn crd_installed(crds: Api<CustomResourceDefinition>) -> bool {
    let mut events = kube::runtime::watcher(crds, kube::runtime::watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        use kube::runtime::watcher::Event;
        match event {
            Ok(Event::Apply(crd) | Event::InitApply(crd)) if crd.name_any() == MNP_CRD => {
                return true;
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "CRD watch failed; retrying"),
        }
    }
    false
}

async fn run(
    ctx: Arc<Context>,
    groups: Store<SecurityGroup>,
    installed: tokio::sync::oneshot::Receiver<PolicyStores>,
    wake: Arc<Notify>,
) {
    // A pass over an incomplete store would remove the rows of what is not listed yet.
    if groups.wait_until_ready().await.is_err() || ctx.subnets.wait_until_ready().await.is_err() {
        warn!("the SecurityGroup or Subnet watch stopped before its first list");
        return;
    }
    // Installed at start: sent already. Otherwise taken when the CRD appears (below).
    let mut installed = Some(installed);
    let mut policies = None;
    if let Some(Ok(stores)) = installed.as_mut().map(|r| r.try_recv()) {
        installed = None;
        policies = Some(match ready(stores).await {
            Some(stores) => stores,
            None => return,
        });
    }
    info!("traffic policy controller running");
    let mut reported: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut reported_policies: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut failures = 0;
    loop {
        let done = pass(&ctx, &groups, policies.as_ref(), &mut reported).await;
        let done = match (done, &policies) {
            (Ok(mnp), Some((store, _))) => {
                report_policies(&ctx, store, &mnp, &mut reported_policies).await;
                Ok(())
            }
            (other, _) => other.map(|_| ()),
        };
        match done {
            Ok(()) => failures = 0,
            Err(e) => {
                failures += 1;
                let delay = backoff(failures);
                warn!(error = %e, retry_in = ?delay, "traffic policy pass failed; retrying");
                ctx.metrics.count_reconcile_error("policy", error_kind(&e));
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = wake.notified() => {}
                }
                continue;
            }
        }
        if let Some(receiver) = installed.as_mut() {
            tokio::select! {
                () = wake.notified() => {}
                stores = receiver => {
                    installed = None;
                    if let Ok(stores) = stores {
                        policies = Some(match ready(stores).await {
                            Some(stores) => stores,
                            None => return,
                        });
                    }
                }
            }
        } else {
            wake.notified().await;
        }
        tokio::time::sleep(SETTLE).await;
    }
}

/// The stores once both have listed, or None when a watch stopped first.
async fn ready(stores: PolicyStores) -> Option<PolicyStores> {
    let (p, n) = &stores;
    if p.wait_until_ready().await.is_err() || n.wait_until_ready().await.is_err() {
        warn!("the MultiNetworkPolicy or Namespace watch stopped before its first list");
        return None;
    }
    Some(stores)
}

fn error_kind(e: &PolicyError) -> &'static str {
    match e {
        PolicyError::Nb(_) => "Nb",
        PolicyError::Status { .. } => "Status",
    }
}

/// One pass: plan, apply, report.
/// One pass: plan, apply, report. Returns what each MultiNetworkPolicy left out.
async fn pass(
    ctx: &Context,
    groups: &Store<SecurityGroup>,
    policies: Option<&(Store<MultiNetworkPolicy>, Store<Namespace>)>,
    reported: &mut BTreeMap<String, Vec<String>>,
) -> Result<BTreeMap<String, Vec<String>>, PolicyError> {
    let mut objects = groups.state();
    objects.sort_by_key(|g| g.name_any());
    let specs: Vec<(String, SecurityGroupSpec)> = objects
        .iter()
        .filter(|g| g.metadata.deletion_timestamp.is_none())
        .map(|g| (g.name_any(), g.spec.clone()))
        .collect();
    let subnets: Vec<SubnetPolicy> = ctx
        .subnets
        .state()
        .iter()
        .filter(|s| s.metadata.deletion_timestamp.is_none())
        .map(|s| subnet_policy(s))
        .collect();
    let network = match policies {
        Some((store, namespaces)) => {
            let policies: Vec<NetworkPolicy> = store
                .state()
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .map(|p| network_policy_of(p))
                .collect();
            let pods: Vec<PolicyPod> = ctx.pods.state().iter().map(|p| policy_pod(p)).collect();
            network_policy::plan(&policies, &pods, &namespace_labels(namespaces))
        }
        None => NetworkPolicyPlan::default(),
    };
    let started = std::time::Instant::now();
    let (plan, wrote) = apply_policy_with(&ctx.nb, &specs, &subnets, &network).await?;
    if wrote {
        debug!(
            groups = specs.len(),
            ms = started.elapsed().as_millis() as u64,
            "traffic policy applied to NB"
        );
    }
    let now = Time(Timestamp::now());
    for g in &objects {
        let name = g.name_any();
        let Some(outcome) = plan.groups.get(&name) else {
            continue;
        };
        let status = desired_status(g, outcome, now.clone());
        if g.status.as_ref() != Some(&status) {
            controller::apply_status::<SecurityGroup, _>(&ctx.client, &name, &status)
                .await
                .map_err(|source| PolicyError::Status {
                    group: name.clone(),
                    source,
                })?;
        }
    }
    for s in ctx.subnets.state() {
        let name = s.name_any();
        let now = plan.subnets.get(&name).cloned().unwrap_or_default();
        let what = format!("subnet {name:?}: left out of its ACLs (the rest apply)");
        let event = ("InvalidSubnetAcl", "ApplyAcls");
        report(ctx, &s.object_ref(&()), name, now, &what, event, reported).await;
    }
    Ok(network.problems)
}

/// The condition that says a SecurityGroup's `tier` was not applied.
const TIER_APPLIED: &str = "TierApplied";

/// A group's status after a pass that applied `outcome`. Pure.
pub fn desired_status(
    group: &SecurityGroup,
    outcome: &plan::GroupOutcome,
    now: Time,
) -> SecurityGroupStatus {
    let mut status = group.status.clone().unwrap_or_default();
    let generation = group.meta().generation;
    // This OVN (23.03) has no ACL tiers: a tier is said, not silently dropped.
    match group.spec.tier {
        Some(tier) if tier != 0 => {
            set_condition(
                &mut status.conditions,
                Condition::new(
                    TIER_APPLIED,
                    ConditionStatus::False,
                    "NotSupported",
                    format!(
                        "tier {tier} is not applied: OVN 23.03 has no ACL tiers; the rules apply in its one tier, by priority"
                    ),
                    generation,
                    now.clone(),
                ),
            );
        }
        _ => status.conditions.retain(|c| c.type_ != TIER_APPLIED),
    }
    status.port_group = Some(outcome.port_group.clone());
    status.members = outcome.members as u32;
    status.allow_same_group_traffic = group.spec.allow_same_group_traffic.unwrap_or(false);
    let ready = outcome.problems.is_empty();
    status.ready = ready;
    let in_direction = |what: &str| !outcome.problems.iter().any(|p| p.starts_with(what));
    status.ingress_last_sync_success = in_direction("ingress");
    status.egress_last_sync_success = in_direction("egress");
    let condition = if ready {
        Condition::new(
            READY,
            ConditionStatus::True,
            "Applied",
            format!(
                "port group {} with {} member ports",
                outcome.port_group, outcome.members
            ),
            generation,
            now,
        )
    } else {
        Condition::new(
            READY,
            ConditionStatus::False,
            "InvalidRule",
            format!(
                "security group {:?}: left out (the other rules apply): {}",
                group.name_any(),
                outcome.problems.join("; ")
            ),
            generation,
            now,
        )
    };
    set_condition(&mut status.conditions, condition);
    status.observed_generation = generation;
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_counts_members_and_names_left_out_rules() {
        let mut g = SecurityGroup::new("web", SecurityGroupSpec::default());
        g.metadata.generation = Some(3);
        let now = Time(Timestamp::now());
        let ok = plan::GroupOutcome {
            port_group: "ovn.sg.web".into(),
            members: 2,
            problems: vec![],
        };
        let s = desired_status(&g, &ok, now.clone());
        assert!(s.ready && s.ingress_last_sync_success && s.egress_last_sync_success);
        assert_eq!((s.members, s.observed_generation), (2, Some(3)));
        assert_eq!(s.port_group.as_deref(), Some("ovn.sg.web"));
        assert!(s.conditions[0].is_true());
        let bad = plan::GroupOutcome {
            problems: vec!["egress rule 1: policy \"x\" is none of allow, drop, pass".into()],
            ..ok
        };
        g.status = Some(s);
        let s = desired_status(&g, &bad, now);
        assert!(!s.ready && s.ingress_last_sync_success && !s.egress_last_sync_success);
        assert!(!s.conditions[0].is_true());
        assert!(s.conditions[0].message.contains("egress rule 1"));
    }

    #[test]
    fn a_tier_is_a_not_supported_condition_until_it_is_removed() {
        let mut g = SecurityGroup::new("web", SecurityGroupSpec::default());
        g.spec.tier = Some(2);
        let now = Time(Timestamp::now());
        let ok = plan::GroupOutcome {
            port_group: "ovn.sg.web".into(),
            members: 1,
            problems: vec![],
        };
        let s = desired_status(&g, &ok, now.clone());
        assert!(s.ready, "the rules still apply");
        let tier = find(&s, TIER_APPLIED).expect("a tier condition");
        assert_eq!(
            (tier.is_true(), tier.reason.as_str()),
            (false, "NotSupported")
        );
        assert!(tier.message.contains("tier 2"), "{}", tier.message);
        g.status = Some(s);
        g.spec.tier = None;
        let s = desired_status(&g, &ok, now);
        assert!(find(&s, TIER_APPLIED).is_none(), "{:?}", s.conditions);
        assert!(find(&s, READY).is_some_and(Condition::is_true));
    }

    fn find<'a>(s: &'a SecurityGroupStatus, type_: &str) -> Option<&'a Condition> {
        crate::api::condition::find_condition(&s.conditions, type_)
    }
}
