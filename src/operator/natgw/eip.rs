//! The IptablesEIP controller: an address from the external subnet's IPAM (`spec.v4ip` when
//! given, else the lowest free one), written to `status.ip`; `status.nat` lists the kinds of
//! rules that name the EIP; a `Validated` condition says what holds it up (no gateway, no
//! external subnet, an address another holder has). The subnet is `spec.externalSubnet`, else
//! the gateway's first external subnet. While a rule names the EIP, finalizer
//! `kube-ovn.io/eip-in-use` holds its deletion; once none does, deleting it frees the address
//! (finalizer `kubeovn.io/eip-controller`).
//!
//! The IPAM key is `iptables-eip:<name>`: never a pod's, so pod garbage collection leaves it.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use super::{eip_key, plan, NatContext};
use crate::api::condition::{set_condition, Condition, ConditionStatus, VALIDATED};
use crate::api::nat::{
    IptablesDnatRule, IptablesEIP, IptablesEipStatus, IptablesFIPRule, IptablesSnatRule,
    VpcNatGateway,
};
use crate::api::selection::IpRequest;
use crate::api::subnet::Subnet;
use crate::ipam::{Allocation, AllocationRequest, IpamError, Release};
use crate::operator::context::PodKey;
use crate::operator::controller::{self, ControllerError, Failure, Retry};

pub const FINALIZER: &str = "kubeovn.io/eip-controller";
/// Held while a rule names the EIP (the contract's name).
pub const IN_USE_FINALIZER: &str = "kube-ovn.io/eip-in-use";
const CONTROLLER: &str = "iptables-eip";

/// What an EIP asks for, once validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EipRequest {
    pub subnet: String,
    pub v4ip: Option<IpAddr>,
}

/// Why an EIP has no address: a condition reason and what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EipProblem {
    pub reason: &'static str,
    pub message: String,
}

fn problem(reason: &'static str, message: String) -> EipProblem {
    EipProblem { reason, message }
}

/// The external subnet `eip` takes its address from: `spec.externalSubnet`, else the first
/// external subnet of its gateway (`gateway` looks one up by name).
pub fn external_subnet_of(
    eip: &IptablesEIP,
    gateway: impl Fn(&str) -> Option<VpcNatGateway>,
) -> Option<String> {
    let own = eip.spec.external_subnet.trim();
    if !own.is_empty() {
        return Some(own.to_owned());
    }
    let gw = gateway(eip.spec.nat_gw_dp.trim())?;
    plan::external_subnets(&gw).into_iter().next()
}

/// Validates `eip` against the gateways (`gateway`) and the subnets IPAM knows
/// (`subnet_known`). Pure.
pub fn validate(
    eip: &IptablesEIP,
    gateway: impl Fn(&str) -> Option<VpcNatGateway>,
    subnet_known: impl Fn(&str) -> bool,
) -> Result<EipRequest, EipProblem> {
    let name = eip.name_any();
    let unsupported: Vec<&str> = [
        ("spec.v6ip (IPv6 EIPs)", &eip.spec.v6ip),
        ("spec.qosPolicy", &eip.spec.qos_policy),
        ("spec.macAddress", &eip.spec.mac_address),
    ]
    .into_iter()
    .filter(|(_, v)| !v.trim().is_empty())
    .map(|(field, _)| field)
    .collect();
    if !unsupported.is_empty() {
        return Err(problem(
            "NotSupported",
            format!(
                "iptables-eip {name:?}: {} not supported yet; remove it (no address was taken)",
                unsupported.join(" and ")
            ),
        ));
    }
    let gw = eip.spec.nat_gw_dp.trim();
    if gw.is_empty() || gateway(gw).is_none() {
        return Err(problem(
            "GatewayNotFound",
            format!("iptables-eip {name:?}: spec.natGwDp {gw:?} names no VpcNatGateway"),
        ));
    }
    let subnet = external_subnet_of(eip, &gateway).expect("the gateway exists");
    if !subnet_known(&subnet) {
        return Err(problem(
            "ExternalSubnetNotFound",
            format!(
                "iptables-eip {name:?}: external subnet {subnet:?} does not exist or is not set up \
                 (see its status)"
            ),
        ));
    }
    let v4ip = match eip.spec.v4ip.trim() {
        "" => None,
        text => match text.parse::<IpAddr>() {
            Ok(ip) if ip.is_ipv4() => Some(ip),
            _ => {
                return Err(problem(
                    "InvalidIP",
                    format!("iptables-eip {name:?}: spec.v4ip {text:?} is not an IPv4 address"),
                ))
            }
        },
    };
    Ok(EipRequest { subnet, v4ip })
}

/// Whether what IPAM holds for the EIP still satisfies `request`.
fn fits(held: &Allocation, request: &EipRequest) -> bool {
    *held.subnet == *request.subnet && request.v4ip.is_none_or(|ip| held.ips.contains(&ip))
}

/// The IPv4 address of an allocation (an EIP's `status.ip`).
fn v4(a: &Allocation) -> Option<IpAddr> {
    a.ips.iter().find(|ip| ip.is_ipv4()).copied()
}

/// The EIP's status: `ip` held now, `nat` the kinds of rules naming it, and the condition
/// (`Ok`: the subnet it is allocated from). Pure.
fn desired_status(
    eip: &IptablesEIP,
    outcome: Result<&str, &EipProblem>,
    ip: Option<IpAddr>,
    nat: String,
    now: Time,
) -> IptablesEipStatus {
    let mut status = eip.status.clone().unwrap_or_default();
    let generation = eip.metadata.generation;
    let condition = match (outcome, ip) {
        (Ok(subnet), Some(ip)) => Condition::new(
            VALIDATED,
            ConditionStatus::True,
            "Allocated",
            format!("{ip} from subnet {subnet:?}"),
            generation,
            now,
        ),
        (Ok(subnet), None) => Condition::new(
            VALIDATED,
            ConditionStatus::False,
            "NotAllocated",
            format!("no address from subnet {subnet:?} yet"),
            generation,
            now,
        ),
        (Err(p), _) => Condition::new(
            VALIDATED,
            ConditionStatus::False,
            p.reason,
            p.message.clone(),
            generation,
            now,
        ),
    };
    set_condition(&mut status.conditions, condition);
    status.ip = ip.map(|ip| ip.to_string()).unwrap_or_default();
    status.nat = nat;
    status
}

/// The kinds (`fip`, `dnat`, `snat`) of `rules` (as `kind/name`), comma-separated.
fn nat_kinds(rules: &[String]) -> String {
    let mut kinds: Vec<&str> = rules
        .iter()
        .filter_map(|r| r.split_once('/').map(|(k, _)| k))
        .collect();
    kinds.dedup();
    kinds.join(",")
}

/// Errors of the EIP controller (the variant names are metric labels).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("iptables-eip {eip:?}: IPAM: {source}")]
    Ipam { eip: String, source: IpamError },
    #[error("iptables-eip {eip:?}: {what}: {source}")]
    Api {
        eip: String,
        what: &'static str,
        source: kube::Error,
    },
    #[error("iptables-eip {eip:?}: still named by {}; delete those rules first", rules.join(", "))]
    InUse { eip: String, rules: Vec<String> },
}

impl ControllerError for Error {
    fn kind(&self) -> &'static str {
        match self {
            Error::Ipam { .. } => "Ipam",
            Error::Api { .. } => "Api",
            Error::InUse { .. } => "InUse",
        }
    }
    fn retry(&self) -> Retry {
        match self {
            Error::Api { source, .. } => controller::api_retry(source),
            // A rule's deletion requeues it; the backoff covers a store that lagged behind.
            Error::InUse { .. } => Retry::Backoff,
            Error::Ipam { .. } => Retry::Backoff,
        }
    }
}

/// Adds or removes `IN_USE_FINALIZER` so that it is there exactly when `used`.
async fn mark_in_use(nat: &NatContext, eip: &IptablesEIP, used: bool) -> Result<(), Error> {
    let meta = eip.meta();
    let mut finalizers = meta.finalizers.clone().unwrap_or_default();
    let has = finalizers.iter().any(|f| f == IN_USE_FINALIZER);
    if has == used {
        return Ok(());
    }
    if used {
        finalizers.push(IN_USE_FINALIZER.to_owned());
    } else {
        finalizers.retain(|f| f != IN_USE_FINALIZER);
    }
    let patch = serde_json::json!({
        "metadata": { "finalizers": finalizers, "resourceVersion": meta.resource_version }
    });
    Api::<IptablesEIP>::all(nat.ctx.client.clone())
        .patch(
            &eip.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
        .map_err(|source| Error::Api {
            eip: eip.name_any(),
            what: "updating finalizers",
            source,
        })?;
    Ok(())
}

async fn write_status(
    nat: &NatContext,
    eip: &IptablesEIP,
    status: &IptablesEipStatus,
) -> Result<(), Error> {
    if eip.status.as_ref() == Some(status) {
        return Ok(());
    }
    let mut body = serde_json::to_value(status).expect("a status serializes");
    if let Some(fields) = body.as_object_mut() {
        // `ready` is the nat-gw role's (its own field manager); `redo` nobody's here.
        fields.remove("ready");
        fields.remove("redo");
    }
    controller::apply_status::<IptablesEIP, _>(&nat.ctx.client, &eip.name_any(), &body)
        .await
        .map_err(|source| Error::Api {
            eip: eip.name_any(),
            what: "writing status",
            source,
        })
}

/// Allocates for `request` (reusing what the key holds while it fits); `Ok(Err(problem))`
/// when IPAM refuses.
async fn allocate(
    nat: &NatContext,
    name: &str,
    request: &EipRequest,
) -> Result<Result<Allocation, EipProblem>, Error> {
    let ipam = &nat.ctx.ipam;
    let key = eip_key(name);
    let ipam_err = |source| Error::Ipam {
        eip: name.to_owned(),
        source,
    };
    if let Some(held) = ipam.get(&key) {
        if fits(&held, request) {
            return Ok(Ok(held));
        }
        ipam.release(&key, Release::Claim).await.map_err(ipam_err)?;
        nat.ctx.usage_changed(&held.subnet);
    }
    let ips = request.v4ip.map(|address| IpRequest {
        address,
        prefix_len: None,
    });
    let req = AllocationRequest::new(key, request.subnet.clone()).with_ips(ips);
    let refused = |reason, message| EipProblem { reason, message };
    let problem = match ipam.allocate(&req).await {
        Ok(a) => {
            nat.ctx.usage_changed(&request.subnet);
            return Ok(Ok(a.into()));
        }
        Err(IpamError::HeldBy { holder, ip, .. }) => {
            let by = match (
                holder.strip_prefix("iptables-eip:"),
                PodKey::of_ipam_key(&holder),
            ) {
                (Some(other), _) => format!("iptables-eip {other:?}"),
                (None, Some((pod, _))) => format!("pod {pod}"),
                (None, None) => holder,
            };
            refused(
                "AddressTaken",
                format!(
                    "iptables-eip {name:?}: {ip} of subnet {:?} is held by {by}; pick another \
                     v4ip or leave it empty",
                    request.subnet
                ),
            )
        }
        Err(e @ IpamError::Full { .. }) => {
            refused("SubnetFull", format!("iptables-eip {name:?}: {e}"))
        }
        Err(e @ IpamError::Store { .. }) => return Err(ipam_err(e)),
        Err(e) => refused("InvalidIP", format!("iptables-eip {name:?}: {e}")),
    };
    Ok(Err(problem))
}

async fn reconcile(eip: Arc<IptablesEIP>, nat: Arc<NatContext>) -> Result<Action, Failure<Error>> {
    controller::reconcile(
        CONTROLLER,
        &*nat,
        FINALIZER,
        eip,
        |e| apply(e, &nat),
        |e| cleanup(e, &nat),
    )
    .await
}

fn gateway_of(nat: &NatContext) -> impl Fn(&str) -> Option<VpcNatGateway> + '_ {
    |name| {
        nat.ctx
            .nat_gateways
            .get(&ObjectRef::new(name))
            .filter(|g| g.metadata.deletion_timestamp.is_none())
            .map(|g| (*g).clone())
    }
}

async fn apply(eip: Arc<IptablesEIP>, nat: &NatContext) -> Result<Action, Error> {
    let name = eip.name_any();
    let rules = nat.rules_naming(&name);
    mark_in_use(nat, &eip, !rules.is_empty()).await?;
    let held = || nat.ctx.ipam.get(&eip_key(&name));
    let validated = validate(&eip, gateway_of(nat), |s| nat.ctx.ipam.subnet(s).is_some());
    let (status, retry) = match validated {
        Err(p) => {
            warn!(eip = %name, reason = p.reason, "{}", p.message);
            let ip = held().as_ref().and_then(v4);
            let status = desired_status(&eip, Err(&p), ip, nat_kinds(&rules), now());
            (status, Duration::from_secs(30))
        }
        Ok(request) => match allocate(nat, &name, &request).await? {
            Ok(a) => {
                let ip = v4(&a);
                if eip.status.as_ref().map(|s| s.ip.as_str())
                    != ip.map(|i| i.to_string()).as_deref()
                {
                    info!(eip = %name, ip = ?ip, subnet = %request.subnet, "EIP allocated");
                }
                let status =
                    desired_status(&eip, Ok(&request.subnet), ip, nat_kinds(&rules), now());
                (status, Duration::from_secs(300))
            }
            Err(p) => {
                warn!(eip = %name, reason = p.reason, "{}", p.message);
                nat.ctx
                    .events
                    .warn(&eip.object_ref(&()), p.reason, "Allocate", &p.message)
                    .await;
                let ip = held().as_ref().and_then(v4);
                let status = desired_status(&eip, Err(&p), ip, nat_kinds(&rules), now());
                (status, Duration::from_secs(30))
            }
        },
    };
    write_status(nat, &eip, &status).await?;
    Ok(Action::requeue(retry))
}

async fn cleanup(eip: Arc<IptablesEIP>, nat: &NatContext) -> Result<Action, Error> {
    let name = eip.name_any();
    // Asked of the API, not the stores: a rule created a moment ago must hold the address.
    let rules = rules_naming_now(nat, &name).await?;
    if !rules.is_empty() {
        mark_in_use(nat, &eip, true).await?;
        return Err(Error::InUse { eip: name, rules });
    }
    mark_in_use(nat, &eip, false).await?;
    if let crate::ipam::Released::Freed(a) = nat
        .ctx
        .ipam
        .release(&eip_key(&name), Release::Claim)
        .await
        .map_err(|source| Error::Ipam {
            eip: name.clone(),
            source,
        })?
    {
        nat.ctx.usage_changed(&a.subnet);
        info!(eip = %name, ip = %a.ip_annotation(), "EIP deleted; address freed");
    }
    Ok(Action::await_change())
}

/// The rules naming `eip` as the API has them now (`kind/name`).
async fn rules_naming_now(nat: &NatContext, eip: &str) -> Result<Vec<String>, Error> {
    let client = &nat.ctx.client;
    let api_err = |source| Error::Api {
        eip: eip.to_owned(),
        what: "listing the rules naming it",
        source,
    };
    let lp = ListParams::default();
    let mut out = Vec::new();
    for r in Api::<IptablesFIPRule>::all(client.clone())
        .list(&lp)
        .await
        .map_err(api_err)?
        .into_iter()
        .filter(|r| r.spec.eip == eip)
    {
        out.push(format!("fip/{}", r.name_any()));
    }
    for r in Api::<IptablesDnatRule>::all(client.clone())
        .list(&lp)
        .await
        .map_err(api_err)?
        .into_iter()
        .filter(|r| r.spec.eip == eip)
    {
        out.push(format!("dnat/{}", r.name_any()));
    }
    for r in Api::<IptablesSnatRule>::all(client.clone())
        .list(&lp)
        .await
        .map_err(api_err)?
        .into_iter()
        .filter(|r| r.spec.eip == eip)
    {
        out.push(format!("snat/{}", r.name_any()));
    }
    Ok(out)
}

fn now() -> Time {
    Time(Timestamp::now())
}

fn error_policy(eip: Arc<IptablesEIP>, error: &Failure<Error>, nat: Arc<NatContext>) -> Action {
    controller::error_policy(CONTROLLER, &*eip, error, &*nat)
}

/// Runs the EIP controller until the process stops.
pub async fn run(nat: Arc<NatContext>) {
    let client = nat.ctx.client.clone();
    let by_gateway = {
        let eips = nat.eips.clone();
        move |gw: VpcNatGateway| {
            let gw = gw.name_any();
            eips.state()
                .iter()
                .filter(|e| e.spec.nat_gw_dp == gw)
                .map(|e| ObjectRef::from_obj(&**e))
                .collect::<Vec<_>>()
        }
    };
    let all = {
        let eips = nat.eips.clone();
        move |_: Subnet| {
            eips.state()
                .iter()
                .map(|e| ObjectRef::from_obj(&**e))
                .collect::<Vec<_>>()
        }
    };
    let named = |eip: &str| Some(ObjectRef::<IptablesEIP>::new(eip)).filter(|_| !eip.is_empty());
    Controller::new(
        Api::<IptablesEIP>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(
        Api::<IptablesFIPRule>::all(client.clone()),
        watcher::Config::default(),
        move |r: IptablesFIPRule| named(&r.spec.eip),
    )
    .watches(
        Api::<IptablesDnatRule>::all(client.clone()),
        watcher::Config::default(),
        move |r: IptablesDnatRule| named(&r.spec.eip),
    )
    .watches(
        Api::<IptablesSnatRule>::all(client.clone()),
        watcher::Config::default(),
        move |r: IptablesSnatRule| named(&r.spec.eip),
    )
    .watches(
        Api::<VpcNatGateway>::all(client.clone()),
        watcher::Config::default(),
        by_gateway,
    )
    .watches(Api::<Subnet>::all(client), watcher::Config::default(), all)
    .run(reconcile, error_policy, nat)
    .for_each(|_| futures::future::ready(()))
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::nat::IptablesEipSpec;

    fn eip(v4ip: &str, gw: &str, subnet: &str) -> IptablesEIP {
        IptablesEIP::new(
            "eip1",
            IptablesEipSpec {
                v4ip: v4ip.into(),
                nat_gw_dp: gw.into(),
                external_subnet: subnet.into(),
                ..Default::default()
            },
        )
    }

    fn gateways(name: &str) -> Option<VpcNatGateway> {
        (name == "vpc-nat-gw").then(plan::tests::seed_gateway)
    }

    fn known(s: &str) -> bool {
        s == "ovn-vpc-external-network" || s == "ext2"
    }

    #[test]
    fn the_subnet_is_the_eips_or_its_gateways_first() {
        let r = validate(&eip("", "vpc-nat-gw", ""), gateways, known).unwrap();
        assert_eq!(r.subnet, "ovn-vpc-external-network");
        assert_eq!(r.v4ip, None);
        let r = validate(&eip("172.18.0.10", "vpc-nat-gw", "ext2"), gateways, known).unwrap();
        assert_eq!(r.subnet, "ext2");
        assert_eq!(r.v4ip, Some("172.18.0.10".parse().unwrap()));
    }

    #[test]
    fn bad_eips_say_what_to_fix() {
        let p = validate(&eip("", "ghost", ""), gateways, known).unwrap_err();
        assert_eq!(p.reason, "GatewayNotFound");
        assert!(p.message.contains("\"ghost\""), "{}", p.message);
        let p = validate(&eip("", "vpc-nat-gw", "nope"), gateways, known).unwrap_err();
        assert_eq!(p.reason, "ExternalSubnetNotFound");
        for bad in ["172.18.0.x", "fd00::1"] {
            let p = validate(&eip(bad, "vpc-nat-gw", ""), gateways, known).unwrap_err();
            assert_eq!(p.reason, "InvalidIP", "{bad}");
        }
        let mut v6 = eip("", "vpc-nat-gw", "");
        v6.spec.v6ip = "fd00::10".into();
        v6.spec.qos_policy = "slow".into();
        let p = validate(&v6, gateways, known).unwrap_err();
        assert_eq!(p.reason, "NotSupported");
        assert!(
            p.message.contains("spec.v6ip") && p.message.contains("spec.qosPolicy"),
            "{}",
            p.message
        );
    }

    #[test]
    fn a_held_address_is_kept_while_it_fits() {
        let held = Allocation {
            key: eip_key("eip1"),
            subnet: "ovn-vpc-external-network".into(),
            ips: ["172.18.0.2".parse::<IpAddr>().unwrap()]
                .into_iter()
                .collect(),
            mac: "0a:00:00:00:00:01".parse().unwrap(),
            pool: None,
            sticky: false,
        };
        let request = |subnet: &str, ip: Option<&str>| EipRequest {
            subnet: subnet.into(),
            v4ip: ip.map(|i| i.parse().unwrap()),
        };
        assert!(fits(&held, &request("ovn-vpc-external-network", None)));
        assert!(fits(
            &held,
            &request("ovn-vpc-external-network", Some("172.18.0.2"))
        ));
        assert!(!fits(
            &held,
            &request("ovn-vpc-external-network", Some("172.18.0.3"))
        ));
        assert!(!fits(&held, &request("ext2", None)));
    }

    #[test]
    fn status_carries_the_address_the_rules_and_why() {
        let e = eip("", "vpc-nat-gw", "");
        let now = Time(Timestamp::from_second(2_000_000).unwrap());
        let ip = Some("172.18.0.2".parse().unwrap());
        let rules = vec!["dnat/d1".to_owned(), "dnat/d2".into(), "snat/s1".into()];
        let status = desired_status(
            &e,
            Ok("ovn-vpc-external-network"),
            ip,
            nat_kinds(&rules),
            now.clone(),
        );
        assert_eq!(status.ip, "172.18.0.2");
        assert_eq!(status.nat, "dnat,snat");
        assert!(!status.ready, "never ours to set");
        let c = crate::api::condition::find_condition(&status.conditions, VALIDATED).unwrap();
        assert_eq!((c.is_true(), c.reason.as_str()), (true, "Allocated"));

        let taken = EipProblem {
            reason: "AddressTaken",
            message: "held by iptables-eip \"eip0\"".into(),
        };
        let status = desired_status(&e, Err(&taken), None, String::new(), now);
        assert_eq!(status.ip, "");
        let c = crate::api::condition::find_condition(&status.conditions, VALIDATED).unwrap();
        assert_eq!((c.is_true(), c.reason.as_str()), (false, "AddressTaken"));
    }
}
