//! The VpcNatGateway controller: validate (`plan::validate`) → reserve the lanIp in the LAN
//! subnet's IPAM → apply the StatefulSet (`plan::render_statefulset`, server-side apply) →
//! the VPC route `0.0.0.0/0 → lanIp` (`routes::sync`) → status (`Validated`, `Ready`, the pod's
//! name, the external subnets). Deleting the gateway deletes its StatefulSet, releases the
//! lanIp and takes the route away, under finalizer `kubeovn.io/vpc-nat-gw-controller`.
//!
//! It watches the gateways, the subnets and VPCs they name, and their pods (for the status).
//! A lanIp another pod holds leaves the gateway `Ready=False` (`LanIpInUse`) with nothing
//! applied; it is tried again every 30 s (the pod may go). An invalid spec applies nothing
//! either (what an earlier spec applied stays) and waits for a change of the gateway, its
//! subnets or its VPC.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use super::plan::{self, GatewayProblem, ValidGateway};
use super::{is_lan_key_of, lan_key, NatContext};
use crate::api::annotations::{NETWORK_STATUS, VPC_NAT_GW};
use crate::api::condition::{set_condition, Condition, ConditionStatus, READY, VALIDATED};
use crate::api::nat::{VpcNatGateway, VpcNatGatewayStatus};
use crate::api::network_status::parse_network_status;
use crate::api::selection::IpRequest;
use crate::api::subnet::Subnet;
use crate::api::vpc::Vpc;
use crate::ipam::{AllocationRequest, IpamError, Release};
use crate::operator::context::PodKey;
use crate::operator::controller::{self, ControllerError, Failure, Retry};
use crate::operator::pod::MANAGER;
use crate::operator::routes;

pub const FINALIZER: &str = "kubeovn.io/vpc-nat-gw-controller";
const CONTROLLER: &str = "vpc-nat-gw";

/// Errors of the VpcNatGateway controller (the variant names are metric labels).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("vpc-nat-gw {gateway:?}: IPAM: {source}")]
    Ipam { gateway: String, source: IpamError },
    #[error("vpc-nat-gw {gateway:?}: OVN NB: {source}")]
    Nb {
        gateway: String,
        source: crate::ovn::Error,
    },
    #[error("vpc-nat-gw {gateway:?}: {what}: {source}")]
    Api {
        gateway: String,
        what: &'static str,
        source: kube::Error,
    },
}

impl ControllerError for Error {
    fn kind(&self) -> &'static str {
        match self {
            Error::Ipam { .. } => "Ipam",
            Error::Nb { .. } => "Nb",
            Error::Api { .. } => "Api",
        }
    }
    fn retry(&self) -> Retry {
        match self {
            Error::Api { source, .. } => controller::api_retry(source),
            _ => Retry::Backoff,
        }
    }
}

/// How the last apply ended, for the status.
enum Outcome<'a> {
    Invalid(&'a GatewayProblem),
    /// Valid, but not (yet) in place.
    NotReady(&'a ValidGateway, &'a GatewayProblem),
    Ready(&'a ValidGateway),
}

/// The addresses `pod`'s network-status gives its LAN leg and its external legs.
fn pod_addresses(valid: &ValidGateway, pod: &Pod) -> (Vec<String>, Vec<String>) {
    let statuses = pod
        .annotations()
        .get(NETWORK_STATUS)
        .and_then(|v| parse_network_status(v).ok())
        .unwrap_or_default();
    let ips_of = |provider: &crate::api::annotations::Provider| {
        let network = format!("{}/{}", provider.namespace(), provider.nad());
        statuses
            .iter()
            .filter(|s| s.name == network)
            .flat_map(|s| s.ips.iter().cloned())
            .collect::<Vec<_>>()
    };
    let lan = ips_of(&valid.lan_provider);
    let external = valid
        .externals
        .iter()
        .flat_map(|e| ips_of(&e.provider))
        .collect();
    (lan, external)
}

/// The gateway's status for `outcome` as of `now`; `pod`: its pod if it exists. Pure.
fn desired_status(
    gw: &VpcNatGateway,
    outcome: Outcome<'_>,
    pod: Option<&Pod>,
    now: Time,
) -> VpcNatGatewayStatus {
    let mut status = gw.status.clone().unwrap_or_default();
    let valid = match &outcome {
        Outcome::NotReady(v, _) | Outcome::Ready(v) => Some(*v),
        Outcome::Invalid(_) => None,
    };
    (status.lan_ips, status.external_ips) = match (valid, pod) {
        (Some(v), Some(p)) => pod_addresses(v, p),
        _ => (Vec::new(), Vec::new()),
    };
    let generation = gw.metadata.generation;
    let mut set = |type_: &str, ok: bool, reason: &str, message: String| {
        let state = if ok {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        };
        let c = Condition::new(type_, state, reason, message, generation, now.clone());
        set_condition(&mut status.conditions, c);
    };
    match outcome {
        Outcome::Invalid(p) => {
            set(VALIDATED, false, p.reason, p.message.clone());
            set(READY, false, p.reason, p.message.clone());
        }
        Outcome::NotReady(valid, p) => {
            set(VALIDATED, true, "Valid", String::new());
            set(READY, false, p.reason, p.message.clone());
            status.external_subnets = valid.external_subnets();
        }
        Outcome::Ready(valid) => {
            set(VALIDATED, true, "Valid", String::new());
            let message = format!(
                "StatefulSet {} applied; lanIp {} reserved in subnet {:?}; VPC {:?} routes 0.0.0.0/0 via it",
                plan::statefulset_name(&valid.name),
                valid.lan_ip,
                valid.subnet,
                valid.vpc
            );
            set(READY, true, "Ready", message);
            status.external_subnets = valid.external_subnets();
        }
    }
    status.selector = gw.spec.selector.clone();
    status.qos_policy = gw.spec.qos_policy.clone();
    status.pod = pod.map(|p| p.name_any());
    status.observed_generation = generation;
    status
}

async fn write_status(
    nat: &NatContext,
    gw: &VpcNatGateway,
    outcome: Outcome<'_>,
) -> Result<(), Error> {
    let name = gw.name_any();
    let namespace = nat.install().namespace;
    let pod_name = plan::pod_name(&name);
    let pod = nat
        .ctx
        .pods
        .get(&ObjectRef::new(&pod_name).within(&namespace));
    let status = desired_status(gw, outcome, pod.as_deref(), Time(Timestamp::now()));
    if gw.status.as_ref() == Some(&status) {
        return Ok(());
    }
    controller::apply_status::<VpcNatGateway, _>(&nat.ctx.client, &name, &status)
        .await
        .map_err(|source| Error::Api {
            gateway: name,
            what: "writing status",
            source,
        })
}

/// Reserves `valid.lan_ip` for the gateway's pod; `Ok(Err(problem))` when IPAM refuses.
async fn reserve_lan_ip(
    nat: &NatContext,
    valid: &ValidGateway,
) -> Result<Result<(), GatewayProblem>, Error> {
    let ipam = &nat.ctx.ipam;
    let key = lan_key(
        &nat.install().namespace,
        &valid.name,
        valid.lan_provider.as_str(),
    );
    let ipam_err = |source| Error::Ipam {
        gateway: valid.name.clone(),
        source,
    };
    // An earlier lanIp, subnet or namespace: give back what no longer fits.
    let stale: Vec<String> = ipam.read(|a| {
        a.allocations()
            .filter(|x| is_lan_key_of(&x.key, &valid.name))
            .filter(|x| {
                x.key != key || *x.subnet != *valid.subnet || !x.ips.contains(&valid.lan_ip)
            })
            .map(|x| x.key.clone())
            .collect()
    });
    for k in stale {
        ipam.release(&k, Release::Claim).await.map_err(ipam_err)?;
    }
    let request = AllocationRequest::new(key, valid.subnet.clone())
        .with_ips([IpRequest {
            address: valid.lan_ip,
            prefix_len: None,
        }])
        .sticky(true);
    let refused = |reason, message| GatewayProblem { reason, message };
    let problem = match ipam.allocate(&request).await {
        Ok(_) => {
            nat.ctx.usage_changed(&valid.subnet);
            return Ok(Ok(()));
        }
        Err(IpamError::HeldBy { holder, .. }) => {
            let by = match PodKey::of_ipam_key(&holder) {
                Some((pod, attachment)) => format!("pod {pod} (network {attachment})"),
                None => holder,
            };
            refused(
                "LanIpInUse",
                format!(
                    "vpc-nat-gw {:?}: lanIp {} of subnet {:?} is held by {by}; delete that pod or pick another lanIp",
                    valid.name, valid.lan_ip, valid.subnet
                ),
            )
        }
        Err(e @ IpamError::Excluded { .. }) => refused(
            "LanIpExcluded",
            format!(
                "vpc-nat-gw {:?}: {e}; take it out of the subnet's excludeIps or pick another lanIp",
                valid.name
            ),
        ),
        Err(e @ IpamError::Store { .. }) => return Err(ipam_err(e)),
        Err(e) => refused("LanIpRefused", format!("vpc-nat-gw {:?}: {e}", valid.name)),
    };
    Ok(Err(problem))
}

async fn reconcile(gw: Arc<VpcNatGateway>, nat: Arc<NatContext>) -> Result<Action, Failure<Error>> {
    controller::reconcile(
        CONTROLLER,
        &*nat,
        FINALIZER,
        gw,
        |g| apply(g, &nat),
        |g| cleanup(g, &nat),
    )
    .await
}

async fn apply(gw: Arc<VpcNatGateway>, nat: &NatContext) -> Result<Action, Error> {
    let ctx = &nat.ctx;
    let name = gw.name_any();
    let facts = nat.subnet_facts();
    let valid = match plan::validate(&gw, |v| ctx.vpcs.get(&ObjectRef::new(v)).is_some(), &facts) {
        Ok(v) => v,
        Err(p) => {
            warn!(gateway = %name, reason = p.reason, "{}", p.message);
            ctx.events
                .warn(&gw.object_ref(&()), p.reason, "Validate", &p.message)
                .await;
            write_status(nat, &gw, Outcome::Invalid(&p)).await?;
            // Subnets and VPCs requeue it through the watches; IPAM's view may lag them.
            return Ok(Action::requeue(Duration::from_secs(60)));
        }
    };
    if let Err(p) = reserve_lan_ip(nat, &valid).await? {
        warn!(gateway = %name, reason = p.reason, "{}", p.message);
        ctx.events
            .warn(&gw.object_ref(&()), p.reason, "ReserveLanIp", &p.message)
            .await;
        write_status(nat, &gw, Outcome::NotReady(&valid, &p)).await?;
        return Ok(Action::requeue(Duration::from_secs(30)));
    }
    let install = nat.install();
    let owner = gw
        .controller_owner_ref(&())
        .expect("a VpcNatGateway read from the API has a name and uid");
    let sts = match plan::render_statefulset(&gw, &valid, &install, owner) {
        Ok(s) => s,
        Err(p) => {
            warn!(gateway = %name, reason = p.reason, "{}", p.message);
            ctx.events
                .warn(&gw.object_ref(&()), p.reason, "Render", &p.message)
                .await;
            write_status(nat, &gw, Outcome::NotReady(&valid, &p)).await?;
            return Ok(Action::requeue(Duration::from_secs(60)));
        }
    };
    Api::<StatefulSet>::namespaced(ctx.client.clone(), &install.namespace)
        .patch(
            &plan::statefulset_name(&name),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&sts),
        )
        .await
        .map_err(|source| Error::Api {
            gateway: name.clone(),
            what: "applying its StatefulSet",
            source,
        })?;
    routes::sync(ctx, &valid.vpc)
        .await
        .map_err(|source| Error::Nb {
            gateway: name.clone(),
            source,
        })?;
    let was_ready = gw
        .status
        .as_ref()
        .and_then(|s| crate::api::condition::find_condition(&s.conditions, READY))
        .is_some_and(|c| c.is_true());
    if !was_ready {
        info!(gateway = %name, vpc = %valid.vpc, lan_ip = %valid.lan_ip, "NAT gateway applied");
        ctx.events.forget(&gw.object_ref(&()));
    }
    write_status(nat, &gw, Outcome::Ready(&valid)).await?;
    Ok(Action::requeue(Duration::from_secs(300)))
}

async fn cleanup(gw: Arc<VpcNatGateway>, nat: &NatContext) -> Result<Action, Error> {
    let ctx = &nat.ctx;
    let name = gw.name_any();
    let namespace = nat.install().namespace;
    match Api::<StatefulSet>::namespaced(ctx.client.clone(), &namespace)
        .delete(&plan::statefulset_name(&name), &DeleteParams::background())
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(source) => {
            return Err(Error::Api {
                gateway: name,
                what: "deleting its StatefulSet",
                source,
            })
        }
    }
    let held: Vec<(String, String)> = ctx.ipam.read(|a| {
        a.allocations()
            .filter(|x| is_lan_key_of(&x.key, &name))
            .map(|x| (x.key.clone(), x.subnet.to_string()))
            .collect()
    });
    for (key, subnet) in &held {
        ctx.ipam
            .release(key, Release::Claim)
            .await
            .map_err(|source| Error::Ipam {
                gateway: name.clone(),
                source,
            })?;
        ctx.usage_changed(subnet);
    }
    routes::sync(ctx, &gw.spec.vpc)
        .await
        .map_err(|source| Error::Nb {
            gateway: name.clone(),
            source,
        })?;
    info!(gateway = %name, "NAT gateway deleted: StatefulSet, lanIp and VPC route removed");
    Ok(Action::await_change())
}

fn error_policy(gw: Arc<VpcNatGateway>, error: &Failure<Error>, nat: Arc<NatContext>) -> Action {
    controller::error_policy(CONTROLLER, &*gw, error, &*nat)
}

/// Runs the VpcNatGateway controller until the process stops.
pub async fn run(nat: Arc<NatContext>) {
    let client = nat.ctx.client.clone();
    let gateways = nat.ctx.nat_gateways.clone();
    let naming_subnet = move |subnet: Subnet| {
        let subnet = subnet.name_any();
        gateways
            .state()
            .iter()
            .filter(|g| g.spec.subnet == subnet || plan::external_subnets(g).contains(&subnet))
            .map(|g| ObjectRef::from_obj(&**g))
            .collect::<Vec<_>>()
    };
    let gateways = nat.ctx.nat_gateways.clone();
    let in_vpc = move |vpc: Vpc| {
        let vpc = vpc.name_any();
        gateways
            .state()
            .iter()
            .filter(|g| g.spec.vpc == vpc)
            .map(|g| ObjectRef::from_obj(&**g))
            .collect::<Vec<_>>()
    };
    Controller::new(
        Api::<VpcNatGateway>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(
        Api::<Subnet>::all(client.clone()),
        watcher::Config::default(),
        naming_subnet,
    )
    .watches(
        Api::<Vpc>::all(client.clone()),
        watcher::Config::default(),
        in_vpc,
    )
    // Its pod, for the status (the pod template names the gateway).
    .watches(
        Api::<Pod>::all(client),
        watcher::Config::default().labels(&format!("{}=true", plan::GATEWAY_LABEL)),
        |pod: Pod| {
            pod.annotations()
                .get(VPC_NAT_GW)
                .map(|gw| ObjectRef::<VpcNatGateway>::new(gw))
        },
    )
    .run(reconcile, error_policy, nat)
    .for_each(|_| futures::future::ready(()))
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::condition::find_condition;

    fn now() -> Time {
        Time(Timestamp::from_second(2_000_000).unwrap())
    }

    #[test]
    fn status_says_ready_or_what_holds_it_up() {
        let gw = plan::tests::seed_gateway();
        let valid = plan::validate(&gw, |_| true, &plan::tests::facts()).unwrap();
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "vpc-nat-gw-vpc-nat-gw-0", "namespace": "kube-system",
                "annotations": {NETWORK_STATUS: serde_json::json!([
                    {"name": "kube-sim-primary", "interface": "eth0", "ips": ["10.244.0.6"], "default": true},
                    {"name": "default/kube-ovn-vpc-network", "interface": "net1", "ips": ["10.100.0.254"]},
                    {"name": "kube-system/ovn-vpc-external-network", "interface": "net2", "ips": ["172.18.0.10"]},
                ]).to_string()}},
        }))
        .unwrap();
        let ready = desired_status(&gw, Outcome::Ready(&valid), Some(&pod), now());
        let c = find_condition(&ready.conditions, READY).unwrap();
        assert!(c.is_true());
        assert!(c.message.contains("10.100.0.254"), "{}", c.message);
        assert_eq!(ready.pod.as_deref(), Some("vpc-nat-gw-vpc-nat-gw-0"));
        assert_eq!(ready.lan_ips, ["10.100.0.254"], "the LAN leg's address");
        assert_eq!(
            ready.external_ips,
            ["172.18.0.10"],
            "eth0's is not an external one"
        );
        assert_eq!(ready.external_subnets, ["ovn-vpc-external-network"]);

        let taken = GatewayProblem {
            reason: "LanIpInUse",
            message: "held by pod default/squatter".into(),
        };
        let mut gw = gw;
        gw.status = Some(ready);
        let held = desired_status(&gw, Outcome::NotReady(&valid, &taken), None, now());
        let c = find_condition(&held.conditions, READY).unwrap();
        assert_eq!((c.is_true(), c.reason.as_str()), (false, "LanIpInUse"));
        assert!(find_condition(&held.conditions, VALIDATED)
            .unwrap()
            .is_true());
        assert_eq!(held.pod, None);

        let bad = GatewayProblem {
            reason: "VpcNotFound",
            message: "no VPC".into(),
        };
        let invalid = desired_status(&gw, Outcome::Invalid(&bad), None, now());
        let c = find_condition(&invalid.conditions, VALIDATED).unwrap();
        assert_eq!((c.is_true(), c.reason.as_str()), (false, "VpcNotFound"));
    }
}
