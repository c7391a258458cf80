//! The Subnet controller: Subnet → Logical_Switch `<subnet>`, the router
//! port pair `<vpc>-<subnet>` / `<subnet>-<vpc>` on its VPC's router, and the
//! IPAM subnet; status conditions and usage counters.
//!
//! Pipeline: validate (pure, against the other Subnets and the Vpcs) → apply
//! (IPAM first, durably; then one NB transaction) → status. An invalid spec
//! gets `Validated=False` with a reason, an Event, and waits for a change;
//! nothing of it is applied (a previously applied spec stays as it was).
//!
//! Decision: a Subnet without `spec.vpc` is invalid (`VpcRequired`): in
//! secondary-network mode there is no default VPC to put it in. A Subnet
//! without a `<nad>.<ns>.ovn` provider is invalid too: the `ovn` provider is
//! the primary network, which this operator does not run. Of two overlapping
//! subnets of one VPC the older one (creation time, then name) stays valid.
//! A Subnet whose provider is `<nad>.<ns>` is IPAM-only: the address range of
//! another plugin's network that takes its addresses from kube-ovn (the NAT
//! gateways' macvlan `ovn-vpc-external-network`); it needs no VPC (`spec.vpc`
//! is ignored) and gets no logical switch.
//!
//! Fields of upstream's Subnet that mean nothing in secondary-network mode
//! (`natOutgoing`, `u2oInterconnection`, `vlan`, …) or that are not built yet do
//! not invalidate the subnet; they get an `Unsupported` condition and a Warning
//! Event naming each field and what to use instead ([`unsupported_fields`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::{Resource, ResourceExt};
use tracing::{debug, info, warn};

use super::context::Context;
use super::controller::{self, ControllerError, Failure, Retry};
use crate::api::annotations::Provider;
use crate::api::condition::{
    set_condition, Condition, ConditionStatus, READY, UNSUPPORTED, VALIDATED,
};
use crate::api::ippool::IPPool;
use crate::api::subnet::{Subnet, SubnetSpec, SubnetStatus};
use crate::api::vpc::Vpc;
use crate::ipam::{self, Allocator, Family};
use crate::ovn::external_ids;

pub const FINALIZER: &str = "kubeovn.io/subnet-controller";

/// A subnet that passed validation, ready to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidSubnet {
    pub name: String,
    /// `None` for an IPAM-only subnet (no logical switch, no router port).
    pub vpc: Option<String>,
    pub provider: String,
    pub cidrs: Vec<IpNet>,
    pub ipam: ipam::SubnetSpec,
    /// What [`unsupported_fields`] says of the spec (empty: nothing).
    pub unsupported: Vec<String>,
}

/// What is wrong with a subnet: a condition reason and a message saying what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetProblem {
    pub reason: &'static str,
    pub message: String,
}

fn problem(reason: &'static str, message: String) -> SubnetProblem {
    SubnetProblem { reason, message }
}

const USE_NAT_GATEWAY: &str = "for traffic leaving the VPC create a VpcNatGateway on its \
    VPC with an IptablesEIP and an IptablesSnatRule (or IptablesFIPRule) for this subnet";

/// The fields of `spec` this operator does not act on, each as `spec.<field>: why; what to
/// use instead`. Default values (`natOutgoing: false`, `gatewayType: distributed`) say
/// nothing and are not listed. Pure.
pub fn unsupported_fields(spec: &SubnetSpec) -> Vec<String> {
    let yes = |v: Option<bool>| v == Some(true);
    let set = |v: &Option<String>| v.as_deref().is_some_and(|v| !v.trim().is_empty());
    let mut out = Vec::new();
    let mut say = |field: &str, why: &str| out.push(format!("spec.{field}: {why}"));
    if yes(spec.nat_outgoing) {
        say(
            "natOutgoing",
            &format!(
                "node SNAT belongs to the primary network, not a secondary one; {USE_NAT_GATEWAY}"
            ),
        );
    }
    if yes(spec.u2o_interconnection) || set(&spec.u2o_interconnection_ip) {
        say(
            "u2oInterconnection",
            "underlay-to-overlay interconnection needs an underlay (VLAN) subnet of the primary \
             network; attach the subnets to one Vpc to connect them, or route with \
             Vpc.spec.staticRoutes",
        );
    }
    if spec
        .gateway_type
        .as_deref()
        .is_some_and(|t| t != "distributed")
        || set(&spec.gateway_node)
    {
        say(
            "gatewayType/gatewayNode",
            &format!("node gateways serve the primary network's default VPC; {USE_NAT_GATEWAY}"),
        );
    }
    if set(&spec.external_egress_gateway)
        || spec.policy_routing_priority.is_some()
        || spec.policy_routing_table_id.is_some()
    {
        say(
            "externalEgressGateway/policyRoutingPriority/policyRoutingTableID",
            &format!("these route the default VPC's egress; use Vpc.spec.staticRoutes or policyRoutes, or {USE_NAT_GATEWAY}"),
        );
    }
    if set(&spec.vlan) || yes(spec.logical_gateway) {
        say(
            "vlan/logicalGateway",
            "underlay subnets need Kube-OVN provider networks, which this operator does not run; \
             for a VLAN, use a macvlan or ipvlan NetworkAttachmentDefinition with \
             \"ipam\": {\"type\": \"kube-ovn\", …} and a Subnet whose provider is \
             <nad>.<namespace>",
        );
    }
    if yes(spec.default) {
        say(
            "default",
            "the default subnet is the primary network's; a pod reaches this subnet through its \
             NetworkAttachmentDefinition's provider",
        );
    }
    if !spec.namespaces.is_empty() {
        say(
            "namespaces",
            "binds namespaces on the primary network; a pod reaches this subnet through a \
             NetworkAttachmentDefinition whose provider is the subnet's",
        );
    }
    if yes(spec.enable_lb) || yes(spec.enable_ecmp) {
        say(
            "enableLb/enableEcmp",
            "Service load balancing and gateway ECMP are the primary network's",
        );
    }
    if yes(spec.enable_ipv6_ra) {
        say(
            "enableIPv6RA",
            "router advertisements are not sent yet; pods get their IPv6 address and routes \
             from the allocation (static)",
        );
    }
    if !spec.vips.is_empty() {
        say("vips", "virtual IPs are not supported yet");
    }
    if set(&spec.route_table) {
        say(
            "routeTable",
            "per-subnet route tables are not supported yet; the VPC's main table applies",
        );
    }
    out
}

fn older(a: &Subnet, b: &Subnet) -> bool {
    let ts = |s: &Subnet| s.metadata.creation_timestamp.clone().map(|t| t.0);
    (ts(a), a.name_any()) < (ts(b), b.name_any())
}

/// Validates `subnet` against `all` Subnets (it may be among them) and the
/// VPC names that exist. Pure.
pub fn validate(
    subnet: &Subnet,
    all: &[Arc<Subnet>],
    vpc_exists: impl Fn(&str) -> bool,
) -> Result<ValidSubnet, SubnetProblem> {
    let name = subnet.name_any();
    let cidrs = subnet
        .spec
        .cidrs(&name)
        .map_err(|e| problem("InvalidCidr", e.to_string()))?;
    let provider = subnet.spec.provider.clone().unwrap_or_default();
    let ipam_only = match Provider::parse(&provider) {
        Ok(p) if p.interface().is_none() => false,
        _ if Provider::parse_ipam_only(&provider).is_ok() => true,
        _ => {
            let message = format!(
                "subnet {name:?}: provider {provider:?} is not of the form \
                 <nad>.<namespace>.ovn (or <nad>.<namespace> for another plugin's network with \
                 kube-ovn IPAM; the primary provider \"ovn\" is not supported in \
                 secondary-network mode)"
            );
            return Err(problem("InvalidProvider", message));
        }
    };
    let vpc = match subnet.spec.vpc.clone().filter(|v| !v.trim().is_empty()) {
        _ if ipam_only => None,
        Some(vpc) => Some(vpc),
        None => {
            let message = format!(
                "subnet {name:?}: spec.vpc is required: in secondary-network mode there is no \
                 default VPC"
            );
            return Err(problem("VpcRequired", message));
        }
    };
    subnet
        .spec
        .checked_mtu(&name, &cidrs)
        .map_err(|m| problem("InvalidSubnet", m))?;
    let ipam = ipam::SubnetSpec {
        name: name.clone(),
        cidr_block: cidrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
        gateway: subnet.spec.gateway.clone().filter(|g| !g.trim().is_empty()),
        exclude_ips: subnet.spec.exclude_ips.clone(),
        pools: Default::default(),
    };
    Allocator::new()
        .add_subnet(ipam.clone())
        .map_err(|e| problem("InvalidSubnet", e.to_string()))?;
    super::dhcp::user_options(subnet)
        .map_err(|e| problem("InvalidDHCPOptions", format!("subnet {name:?}: {e}")))?;
    let Some(vpc) = vpc else {
        return Ok(ValidSubnet {
            name,
            vpc: None,
            provider,
            cidrs,
            ipam,
            unsupported: unsupported_fields(&subnet.spec),
        });
    };
    for other in all {
        let other_name = other.name_any();
        if other_name == name
            || other.spec.vpc.as_deref() != Some(vpc.as_str())
            || other.metadata.deletion_timestamp.is_some()
            || !older(other, subnet)
        {
            continue;
        }
        let Ok(theirs) = other.spec.cidrs(&other_name) else {
            continue;
        };
        for mine in &cidrs {
            if let Some(t) = theirs
                .iter()
                .find(|t| t.contains(&mine.network()) || mine.contains(&t.network()))
            {
                return Err(problem(
                    "CidrOverlap",
                    format!(
                        "subnet {name:?}: CIDR {mine} overlaps subnet {other_name:?} ({t}) in VPC {vpc:?}"
                    ),
                ));
            }
        }
    }
    if !vpc_exists(&vpc) {
        return Err(problem(
            "VpcNotFound",
            format!("subnet {name:?}: VPC {vpc:?} does not exist; create the Vpc first"),
        ));
    }
    Ok(ValidSubnet {
        name,
        vpc: Some(vpc),
        provider,
        cidrs,
        ipam,
        unsupported: unsupported_fields(&subnet.spec),
    })
}

/// Errors of the Subnet controller (the variant names are metric labels).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("subnet {subnet:?}: IPAM: {source}")]
    Ipam {
        subnet: String,
        source: ipam::IpamError,
    },
    #[error("subnet {subnet:?}: OVN NB: {source}")]
    Nb {
        subnet: String,
        source: crate::ovn::Error,
    },
    #[error("subnet {subnet:?}: writing status: {source}")]
    Status { subnet: String, source: kube::Error },
}

impl ControllerError for Error {
    fn kind(&self) -> &'static str {
        match self {
            Error::Ipam { .. } => "Ipam",
            Error::Nb { .. } => "Nb",
            Error::Status { .. } => "Status",
        }
    }

    fn retry(&self) -> Retry {
        match self {
            // Only the store can fail transiently; any other refusal is about the spec.
            Error::Ipam { source, .. } if !matches!(source, ipam::IpamError::Store { .. }) => {
                Retry::AwaitChange
            }
            Error::Status { source, .. } => controller::api_retry(source),
            _ => Retry::Backoff,
        }
    }
}

const CONTROLLER: &str = "subnet";

async fn reconcile(subnet: Arc<Subnet>, ctx: Arc<Context>) -> Result<Action, Failure<Error>> {
    controller::reconcile(
        CONTROLLER,
        &*ctx,
        FINALIZER,
        subnet,
        |s| apply(s, &ctx),
        |s| cleanup(s, &ctx),
    )
    .await
}

async fn apply(subnet: Arc<Subnet>, ctx: &Context) -> Result<Action, Error> {
    let subnet = &*subnet;
    let name = subnet.name_any();
    let all = ctx.subnets.state();
    let valid = match validate(subnet, &all, |v| {
        ctx.vpcs.get(&ObjectRef::<Vpc>::new(v)).is_some()
    }) {
        // Its IPPools that fit; the IPPool controller says why the others do not.
        Ok(mut v) => {
            v.ipam = super::ippool::fit_pools(&v.ipam, &ctx.ippools.state()).0;
            v
        }
        Err(p) => {
            warn!(subnet = %name, reason = p.reason, "{}", p.message);
            ctx.invalid_subnets
                .lock()
                .expect("invalid subnets lock poisoned")
                .insert(name.clone(), p.message.clone());
            ctx.events
                .warn(&subnet.object_ref(&()), p.reason, "Validate", &p.message)
                .await;
            write_status(ctx, subnet, Err(&p)).await?;
            return Ok(Action::await_change());
        }
    };
    let change = ctx
        .ipam
        .apply_subnet(valid.ipam.clone())
        .await
        .map_err(|source| Error::Ipam {
            subnet: name.clone(),
            source,
        })?;
    for c in &change.conflicts {
        warn!(subnet = %name, key = %c.key, ip = %c.ip, reason = c.reason, "allocation now conflicts with the subnet spec; kept");
    }
    let view = ctx.ipam.subnet(&name).ok_or_else(|| Error::Ipam {
        subnet: name.clone(),
        source: ipam::IpamError::UnknownSubnet {
            subnet: name.clone(),
        },
    })?;
    // One router address per family: a dual-stack subnet routes both.
    let gateways: Vec<String> = view
        .gateways
        .iter()
        .zip(&view.cidrs)
        .filter_map(|(g, c)| g.map(|g| format!("{g}/{}", c.prefix_len())))
        .collect();
    // Validated above; a refusal here would be a bug, reported like any invalid spec.
    let dhcp = super::dhcp::plan(subnet, &view.cidrs, &view.gateways, view.gateway_mac)
        .unwrap_or_default();
    let wrote = match &valid.vpc {
        Some(vpc) => {
            let router_ids = external_ids::ours([(external_ids::VPC, vpc.as_str())]);
            let switch_ids = external_ids::ours([
                (external_ids::VPC, vpc.as_str()),
                (external_ids::PROVIDER, valid.provider.as_str()),
            ]);
            let mac = view.gateway_mac.to_string();
            let started = Instant::now();
            let wrote = ctx
                .nb
                .apply(|t| {
                    t.ensure_router(vpc, &router_ids)?;
                    t.ensure_switch(&name, &switch_ids)?;
                    if !gateways.is_empty() {
                        t.ensure_router_port_pair(vpc, &name, &gateways, &mac)?;
                    }
                    t.sync_dhcp_options(&name, &dhcp)?;
                    Ok(())
                })
                .await;
            ctx.metrics.observe_nb(CONTROLLER, started.elapsed());
            wrote.map_err(|source| Error::Nb {
                subnet: name.clone(),
                source,
            })?
        }
        // IPAM-only: nothing in OVN.
        None => false,
    };
    let was_invalid = ctx
        .invalid_subnets
        .lock()
        .expect("invalid subnets lock poisoned")
        .remove(&name)
        .is_some();
    if was_invalid {
        ctx.events.forget(&subnet.object_ref(&()));
    }
    if !valid.unsupported.is_empty() {
        let message = valid.unsupported.join("; ");
        warn!(subnet = %name, "fields without effect: {message}");
        ctx.events
            .warn(
                &subnet.object_ref(&()),
                "UnsupportedFields",
                "Validate",
                &message,
            )
            .await;
    }
    if wrote || change.created {
        info!(subnet = %name, vpc = ?valid.vpc, cidr = %valid.ipam.cidr_block, "subnet ready");
    } else {
        debug!(subnet = %name, "subnet unchanged");
    }
    write_status(ctx, subnet, Ok(&valid)).await?;
    ctx.requeue_waiting();
    Ok(Action::requeue(Duration::from_secs(600)))
}

async fn cleanup(subnet: Arc<Subnet>, ctx: &Context) -> Result<Action, Error> {
    let subnet = &*subnet;
    let name = subnet.name_any();
    let started = Instant::now();
    // DHCP_Options is a root table: its rows go explicitly.
    let deleted = ctx
        .nb
        .apply(|t| {
            t.sync_dhcp_options(&name, &[])?;
            t.delete_switch(&name)
        })
        .await;
    ctx.metrics.observe_nb(CONTROLLER, started.elapsed());
    deleted.map_err(|source| Error::Nb {
        subnet: name.clone(),
        source,
    })?;
    let freed = ctx
        .ipam
        .delete_subnet(&name, true)
        .await
        .map_err(|source| Error::Ipam {
            subnet: name.clone(),
            source,
        })?;
    ctx.invalid_subnets
        .lock()
        .expect("invalid subnets lock poisoned")
        .remove(&name);
    info!(subnet = %name, freed = freed.len(), "subnet deleted: logical switch and IPAM range removed");
    Ok(Action::await_change())
}

/// The status for `subnet` as of `now`: conditions from the validation outcome and the usage
/// counters from `usage` (IPAM's, if it knows the subnet). Pure.
pub fn desired_status(
    subnet: &Subnet,
    outcome: Result<&ValidSubnet, &SubnetProblem>,
    usage: Option<&ipam::Usage>,
    now: Time,
) -> SubnetStatus {
    let mut status = subnet.status.clone().unwrap_or_default();
    let generation = subnet.metadata.generation;
    let mut set = |type_, ok, reason: &str, message: String| {
        let state = if ok {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        };
        let condition = Condition::new(type_, state, reason, message, generation, now.clone());
        set_condition(&mut status.conditions, condition);
    };
    match outcome {
        Ok(valid) => {
            set(VALIDATED, true, "Valid", String::new());
            let message = match &valid.vpc {
                Some(vpc) => format!("logical switch {} on router {vpc}", valid.name),
                None => format!(
                    "IPAM only (provider {}): addresses for another plugin's network, no logical switch",
                    valid.provider
                ),
            };
            set(READY, true, "Ready", message);
            status.cidr_block = Some(valid.ipam.cidr_block.clone());
            if valid.unsupported.is_empty() {
                status.conditions.retain(|c| c.type_ != UNSUPPORTED);
            } else {
                set(
                    UNSUPPORTED,
                    true,
                    "UnsupportedFields",
                    format!(
                        "subnet {} works without these fields: {}",
                        valid.name,
                        valid.unsupported.join("; ")
                    ),
                );
            }
        }
        Err(p) => {
            set(VALIDATED, false, p.reason, p.message.clone());
            set(READY, false, p.reason, p.message.clone());
        }
    }
    if let Some(usage) = usage {
        fill_usage(&mut status, usage);
    }
    status.observed_generation = generation;
    status
}

fn fill_usage(status: &mut SubnetStatus, usage: &ipam::Usage) {
    let clamp = |n: u128| i64::try_from(n).unwrap_or(i64::MAX);
    for f in &usage.families {
        match f.family {
            Family::V4 => {
                status.v4_using_ips = clamp(f.used);
                status.v4_available_ips = clamp(f.available);
            }
            Family::V6 => {
                status.v6_using_ips = clamp(f.used);
                status.v6_available_ips = clamp(f.available);
            }
        }
    }
}

async fn write_status(
    ctx: &Context,
    subnet: &Subnet,
    outcome: Result<&ValidSubnet, &SubnetProblem>,
) -> Result<(), Error> {
    let name = subnet.name_any();
    let usage = ctx.ipam.usage(&name).ok();
    let status = desired_status(subnet, outcome, usage.as_ref(), Time(Timestamp::now()));
    if subnet.status.as_ref() == Some(&status) {
        return Ok(());
    }
    patch_status(ctx, &name, &status).await
}

async fn patch_status(ctx: &Context, name: &str, status: &SubnetStatus) -> Result<(), Error> {
    controller::apply_status::<Subnet, _>(&ctx.client, name, status)
        .await
        .map_err(|source| Error::Status {
            subnet: name.to_owned(),
            source,
        })
}

/// Keeps the usage counters of subnets current: writes the status of every
/// subnet marked by `Context::usage_changed`, at most about twice a second.
pub async fn refresh_usage(ctx: Arc<Context>) {
    loop {
        ctx.usage_changed.notified().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let names: Vec<String> = ctx
            .dirty_usage
            .lock()
            .expect("usage lock poisoned")
            .drain()
            .collect();
        for name in names {
            let Some(subnet) = ctx.subnets.get(&ObjectRef::new(&name)) else {
                continue;
            };
            let Ok(usage) = ctx.ipam.usage(&name) else {
                continue;
            };
            let mut status = subnet.status.clone().unwrap_or_default();
            fill_usage(&mut status, &usage);
            if subnet.status.as_ref() != Some(&status) {
                if let Err(e) = patch_status(&ctx, &name, &status).await {
                    warn!(error = %e, "updating subnet usage");
                }
            }
        }
    }
}

fn error_policy(subnet: Arc<Subnet>, error: &Failure<Error>, ctx: Arc<Context>) -> Action {
    controller::error_policy(CONTROLLER, &*subnet, error, &*ctx)
}

/// Runs the Subnet controller until the process stops.
pub async fn run(ctx: Arc<Context>) {
    let api: Api<Subnet> = Api::all(ctx.client.clone());
    let vpcs: Api<Vpc> = Api::all(ctx.client.clone());
    let by_vpc = ctx.subnets.clone();
    let siblings = ctx.subnets.clone();
    let ippools: Api<IPPool> = Api::all(ctx.client.clone());
    Controller::new(api.clone(), watcher::Config::default())
        .watches(ippools, watcher::Config::default(), |pool: IPPool| {
            Some(ObjectRef::<Subnet>::new(&pool.spec.subnet))
        })
        .watches(vpcs, watcher::Config::default(), move |vpc: Vpc| {
            let name = vpc.name_any();
            by_vpc
                .state()
                .into_iter()
                .filter(|s| s.spec.vpc.as_deref() == Some(name.as_str()))
                .map(|s| ObjectRef::from_obj(&*s))
                .collect::<Vec<_>>()
        })
        .watches(api, watcher::Config::default(), move |changed: Subnet| {
            let vpc = changed.spec.vpc.clone();
            siblings
                .state()
                .into_iter()
                .filter(|s| s.spec.vpc == vpc && s.name_any() != changed.name_any())
                .map(|s| ObjectRef::from_obj(&*s))
                .collect::<Vec<_>>()
        })
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::subnet::SubnetSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn subnet(name: &str, vpc: Option<&str>, cidr: &str, age: i64) -> Arc<Subnet> {
        let mut s = Subnet::new(
            name,
            SubnetSpec {
                vpc: vpc.map(Into::into),
                cidr: Some(cidr.into()),
                provider: Some("n1.default.ovn".into()),
                ..Default::default()
            },
        );
        s.metadata.creation_timestamp = Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(1_000_000 + age).unwrap(),
        ));
        Arc::new(s)
    }

    fn check(s: &Subnet, all: &[Arc<Subnet>]) -> Result<ValidSubnet, SubnetProblem> {
        validate(s, all, |v| v == "vpc-a" || v == "vpc-b")
    }

    #[test]
    fn the_seed_subnet_is_valid_and_reads_cidr() {
        let s = subnet("subnet-secondary", Some("vpc-a"), "10.100.0.0/16", 0);
        let v = check(&s, std::slice::from_ref(&s)).unwrap();
        assert_eq!(v.ipam.cidr_block, "10.100.0.0/16");
        assert_eq!(v.vpc.as_deref(), Some("vpc-a"));
    }

    #[test]
    fn the_newer_of_two_overlapping_subnets_in_one_vpc_is_refused() {
        let a = subnet("a", Some("vpc-a"), "10.1.0.0/16", 0);
        let b = subnet("b", Some("vpc-a"), "10.1.2.0/24", 5);
        let other_vpc = subnet("c", Some("vpc-b"), "10.1.0.0/16", 1);
        let all = vec![a.clone(), b.clone(), other_vpc.clone()];
        assert!(check(&a, &all).is_ok());
        assert!(check(&other_vpc, &all).is_ok());
        let p = check(&b, &all).unwrap_err();
        assert_eq!(p.reason, "CidrOverlap");
        assert!(
            p.message.contains("\"a\"") && p.message.contains("10.1.2.0/24"),
            "{}",
            p.message
        );
    }

    #[test]
    fn bad_specs_name_what_to_fix() {
        let mut s = (*subnet("s", Some("vpc-a"), "10.1.0.0/24", 0)).clone();
        s.spec.gateway = Some("10.2.0.1".into());
        let p = check(&s, &[]).unwrap_err();
        assert_eq!(p.reason, "InvalidSubnet");
        assert!(p.message.contains("10.2.0.1"), "{}", p.message);

        let mut s = (*subnet("s", Some("vpc-a"), "10.1.0.0/24", 0)).clone();
        s.spec.exclude_ips = vec!["10.1.0.x".into()];
        assert_eq!(check(&s, &[]).unwrap_err().reason, "InvalidSubnet");

        let s = subnet("s", None, "10.1.0.0/24", 0);
        assert_eq!(check(&s, &[]).unwrap_err().reason, "VpcRequired");

        let s = subnet("s", Some("nope"), "10.1.0.0/24", 0);
        let p = check(&s, &[]).unwrap_err();
        assert_eq!(p.reason, "VpcNotFound");
        assert!(p.message.contains("\"nope\""));

        let mut s = (*subnet("s", Some("vpc-a"), "10.1.0.0/24", 0)).clone();
        s.spec.provider = Some("ovn".into());
        assert_eq!(check(&s, &[]).unwrap_err().reason, "InvalidProvider");
        // (`n1.default` is an IPAM-only provider: see `an_ipam_only_subnet_needs_no_vpc`.)
        s.spec.provider = Some("n1".into());
        assert_eq!(check(&s, &[]).unwrap_err().reason, "InvalidProvider");
        s.spec.provider = Some("n1.default.ovn.net2".into());
        assert_eq!(check(&s, &[]).unwrap_err().reason, "InvalidProvider");

        let s = subnet("s", Some("vpc-a"), "10.1.0.0/33", 0);
        assert_eq!(check(&s, &[]).unwrap_err().reason, "InvalidCidr");

        for (cidr, mtu, words) in [
            ("10.1.0.0/24", 20, "spec.mtu 20 is outside 576..65535"),
            ("10.1.0.0/24", 70000, "spec.mtu 70000 is outside 576..65535"),
            (
                "10.1.0.0/24,fd00::/64",
                1000,
                "spec.mtu 1000 is below 1280, the least IPv6 allows",
            ),
        ] {
            let mut s = (*subnet("s", Some("vpc-a"), cidr, 0)).clone();
            s.spec.mtu = Some(mtu);
            let p = check(&s, &[]).unwrap_err();
            assert_eq!(p.reason, "InvalidSubnet");
            assert_eq!(p.message, format!("subnet \"s\": {words}"));
        }
        let mut s = (*subnet("s", Some("vpc-a"), "10.1.0.0/24", 0)).clone();
        s.spec.mtu = Some(1000);
        assert!(check(&s, &[]).is_ok());
    }

    #[test]
    fn a_cidr_with_host_bits_is_refused_not_truncated() {
        let s = subnet("s", Some("vpc-a"), "10.0.0.5/24", 0);
        let p = check(&s, &[]).unwrap_err();
        assert_eq!(p.reason, "InvalidCidr");
        assert_eq!(
            p.message,
            "subnet \"s\": CIDR 10.0.0.5/24 has host bits set; write 10.0.0.0/24 (or a longer prefix) instead"
        );
        let s = subnet("s", Some("vpc-a"), "10.0.0.0/24,fd00:10::5/64", 0);
        let p = check(&s, &[]).unwrap_err();
        assert!(p.message.contains("write fd00:10::/64"), "{}", p.message);
    }

    #[test]
    fn primary_network_fields_get_an_unsupported_condition_and_the_subnet_still_works() {
        let mut s = (*subnet("s", Some("vpc-a"), "10.1.0.0/24", 0)).clone();
        s.spec.nat_outgoing = Some(true);
        s.spec.u2o_interconnection = Some(true);
        s.spec.gateway_type = Some("distributed".into());
        let v = check(&s, &[]).expect("still valid");
        assert_eq!(v.unsupported.len(), 2, "{:?}", v.unsupported);
        assert!(v.unsupported[0].starts_with("spec.natOutgoing: "));
        assert!(v.unsupported[0].contains("VpcNatGateway"));
        assert!(v.unsupported[1].starts_with("spec.u2oInterconnection: "));
        let now = Time(k8s_openapi::jiff::Timestamp::from_second(2_000_000).unwrap());
        let status = desired_status(&s, Ok(&v), None, now.clone());
        let c = crate::api::condition::find_condition(&status.conditions, UNSUPPORTED).unwrap();
        assert!(c.is_true());
        assert_eq!(c.reason, "UnsupportedFields");
        assert!(
            c.message
                .starts_with("subnet s works without these fields: spec.natOutgoing: "),
            "{}",
            c.message
        );
        let ready = crate::api::condition::find_condition(&status.conditions, READY).unwrap();
        assert!(ready.is_true());

        // Each field on its own; defaults say nothing.
        type Setter = fn(&mut SubnetSpec);
        let each: [(&str, Setter); 9] = [
            ("gatewayType", |s| {
                s.gateway_type = Some("centralized".into())
            }),
            ("externalEgressGateway", |s| {
                s.policy_routing_table_id = Some(1000)
            }),
            ("vlan", |s| s.vlan = Some("vlan10".into())),
            ("default", |s| s.default = Some(true)),
            ("namespaces", |s| s.namespaces = vec!["ns1".into()]),
            ("enableLb", |s| s.enable_lb = Some(true)),
            ("enableIPv6RA", |s| s.enable_ipv6_ra = Some(true)),
            ("vips", |s| s.vips = vec!["10.1.0.9".into()]),
            ("routeTable", |s| s.route_table = Some("rtb".into())),
        ];
        for (field, f) in each {
            let mut spec = SubnetSpec::default();
            f(&mut spec);
            let got = unsupported_fields(&spec);
            assert_eq!(got.len(), 1, "{field}: {got:?}");
            assert!(got[0].starts_with(&format!("spec.{field}")), "{got:?}");
        }
        let defaults = SubnetSpec {
            nat_outgoing: Some(false),
            u2o_interconnection: Some(false),
            gateway_type: Some("distributed".into()),
            enable_lb: Some(false),
            ..Default::default()
        };
        assert_eq!(unsupported_fields(&defaults), Vec::<String>::new());

        // Dropping the fields removes the condition.
        s.spec.nat_outgoing = None;
        s.spec.u2o_interconnection = None;
        s.status = Some(status);
        let v = check(&s, &[]).expect("valid");
        let status = desired_status(&s, Ok(&v), None, now);
        assert!(crate::api::condition::find_condition(&status.conditions, UNSUPPORTED).is_none());
    }

    #[test]
    fn an_ipam_only_subnet_needs_no_vpc() {
        let mut s = (*subnet("ovn-vpc-external-network", None, "172.18.0.0/16", 0)).clone();
        s.spec.provider = Some("ovn-vpc-external-network.kube-system".into());
        s.spec.gateway = Some("172.18.0.1".into());
        let v = check(&s, &[]).expect("valid");
        assert_eq!(v.vpc, None);
        assert_eq!(v.provider, "ovn-vpc-external-network.kube-system");
        let status = desired_status(
            &s,
            Ok(&v),
            None,
            Time(k8s_openapi::jiff::Timestamp::from_second(2_000_000).unwrap()),
        );
        let ready = crate::api::condition::find_condition(&status.conditions, READY).unwrap();
        assert!(ready.is_true());
        assert!(ready.message.contains("IPAM only"), "{}", ready.message);
        // A spec.vpc on it is ignored, even one that does not exist.
        s.spec.vpc = Some("nope".into());
        assert_eq!(check(&s, &[]).expect("valid").vpc, None);
    }

    #[test]
    fn status_says_valid_ready_and_usage_or_what_to_fix() {
        let s = subnet("s1", Some("vpc1"), "10.0.0.0/24", 0);
        let valid = validate(&s, std::slice::from_ref(&s), |_| true).expect("valid");
        let usage = ipam::Usage {
            total: 253,
            used: 3,
            available: 250,
            families: vec![ipam::FamilyUsage {
                family: Family::V4,
                cidr: "10.0.0.0/24".into(),
                total: 253,
                used: 3,
                available: 250,
            }],
        };
        let now = Time(k8s_openapi::jiff::Timestamp::from_second(2_000_000).unwrap());
        let status = desired_status(&s, Ok(&valid), Some(&usage), now.clone());
        let condition = |st: &SubnetStatus, t| {
            let c = crate::api::condition::find_condition(&st.conditions, t).expect("condition");
            (c.status, c.reason.clone())
        };
        assert_eq!(
            condition(&status, READY),
            (ConditionStatus::True, "Ready".into())
        );
        assert_eq!(
            condition(&status, VALIDATED),
            (ConditionStatus::True, "Valid".into())
        );
        assert_eq!((status.v4_using_ips, status.v4_available_ips), (3, 250));
        assert_eq!(status.cidr_block.as_deref(), Some("10.0.0.0/24"));

        let no_vpc = subnet("s2", None, "10.1.0.0/24", 0);
        let p = validate(&no_vpc, &[], |_| true).expect_err("no VPC");
        let status = desired_status(&no_vpc, Err(&p), None, now);
        assert_eq!(
            condition(&status, READY),
            (ConditionStatus::False, "VpcRequired".into())
        );
        assert_eq!(
            condition(&status, VALIDATED),
            (ConditionStatus::False, "VpcRequired".into())
        );
    }
}
