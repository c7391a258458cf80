//! The operator's side of the VPC NAT gateway (../shared/ARCHITECTURE.md, "VPC NAT gateway,
//! step by step"; the contract with the `nat-gw` role is in the rooms below and its report).
//! The leader runs, next to the Vpc and Subnet controllers:
//!
//! - `gateway`: VpcNatGateway → StatefulSet `vpc-nat-gw-<gw>`, its lanIp reserved in the LAN
//!   subnet's IPAM, the VPC route `0.0.0.0/0 → lanIp` (through `routes.rs`); conditions.
//! - `eip`: IptablesEIP → an address of the external subnet's IPAM (`status.ip`), held by
//!   finalizer `kube-ovn.io/eip-in-use` while a rule names it.
//! - `rules`: IptablesFIPRule/DnatRule/SnatRule → validation and conflicts, the `Validated`
//!   condition and the status copy the `nat-gw` role reads.
//! - `external`: KubeOvn `spec.natGateway.externalNetwork` → the Subnet and macvlan NAD
//!   `ovn-vpc-external-network`.
//! - `plan`: the pure half of the gateway (validation, the StatefulSet).
//!
//! Here: the state they share, the names they derive, and `adopt`, which claims the gateways'
//! lanIps and the EIPs' addresses in IPAM before pods are served (a lost store must not hand
//! them to a pod). The operator never writes `status.ready` of EIPs and rules: the `nat-gw`
//! role does, under its own field manager.

pub mod eip;
pub mod external;
pub mod gateway;
pub mod plan;
pub mod rules;

use std::net::IpAddr;
use std::sync::Arc;

use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::ResourceExt;
use tokio::sync::Notify;
use tracing::{info, warn};

use super::context::{Context, PodKey};
use super::controller::{Failures, ShellContext};
use super::install::render::Operator;
use super::mirror;
use super::routes::GatewayRoute;
use super::status::Metrics;
use crate::api::kubeovn::{KubeOvn, KUBE_OVN_SINGLETON};
use crate::api::nat::{
    IptablesDnatRule, IptablesEIP, IptablesFIPRule, IptablesSnatRule, VpcNatGateway,
};
use crate::api::selection::IpRequest;
use crate::ipam::{AllocationRequest, IpamError};
use plan::{Install, SubnetFacts};

/// What the NAT controllers share: the operator's context, the operator's identity (its
/// image is the gateways' default), and stores of the KubeOvn singleton and the rules.
pub struct NatContext {
    pub ctx: Arc<Context>,
    pub operator: Operator,
    pub kube_ovn: Store<KubeOvn>,
    pub eips: Store<IptablesEIP>,
    pub fips: Store<IptablesFIPRule>,
    pub dnats: Store<IptablesDnatRule>,
    pub snats: Store<IptablesSnatRule>,
    /// Fired on every change of an EIP or a rule (the rules pass recomputes).
    pub rules_changed: Notify,
    /// Fired on every change of the KubeOvn object (the external network follows it).
    pub install_changed: Notify,
    pub failures: Failures,
}

impl ShellContext for NatContext {
    fn client(&self) -> &kube::Client {
        &self.ctx.client
    }
    fn failures(&self) -> &Failures {
        &self.failures
    }
    fn metrics(&self) -> &Metrics {
        &self.ctx.metrics
    }
}

impl NatContext {
    /// Namespace, image and flags of the workloads, from the KubeOvn object (defaults
    /// without one: `kube-system` and the operator's own image).
    pub fn install(&self) -> Install {
        match self.kube_ovn.get(&ObjectRef::new(KUBE_OVN_SINGLETON)) {
            Some(k) => Install {
                namespace: k.spec.namespace.clone(),
                image: k.spec.image.clone().or_else(|| self.operator.image.clone()),
                pull_policy: k.spec.image_pull_policy.clone(),
                log_level: k.spec.log_level.clone(),
            },
            None => Install {
                image: self.operator.image.clone(),
                ..Install::default()
            },
        }
    }

    /// Every Subnet as the gateway needs it (IPAM's CIDRs and gateways).
    pub fn subnet_facts(&self) -> Vec<SubnetFacts> {
        self.ctx
            .subnets
            .state()
            .iter()
            .filter(|s| s.metadata.deletion_timestamp.is_none())
            .map(|s| {
                let name = s.name_any();
                let view = self.ctx.ipam.subnet(&name);
                SubnetFacts {
                    vpc: s.spec.vpc.clone().filter(|v| !v.is_empty()),
                    provider: s.provider().to_owned(),
                    cidrs: view.as_ref().map(|v| v.cidrs.clone()),
                    gateways: view
                        .map(|v| v.gateways.into_iter().flatten().collect())
                        .unwrap_or_default(),
                    name,
                }
            })
            .collect()
    }

    /// Names of the rules (any kind) that name EIP `eip`, as `kind/name`.
    pub fn rules_naming(&self, eip: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        out.extend(
            self.fips
                .state()
                .iter()
                .filter(|r| r.spec.eip == eip)
                .map(|r| format!("fip/{}", r.name_any())),
        );
        out.extend(
            self.dnats
                .state()
                .iter()
                .filter(|r| r.spec.eip == eip)
                .map(|r| format!("dnat/{}", r.name_any())),
        );
        out.extend(
            self.snats
                .state()
                .iter()
                .filter(|r| r.spec.eip == eip)
                .map(|r| format!("snat/{}", r.name_any())),
        );
        out.sort();
        out
    }
}

/// The IPAM key of gateway `gw`'s lanIp: the LAN attachment key of its pod, so that the
/// pod's own allocation (`<P>.kubernetes.io/ip_address: <lanIp>`) is this reservation. Sticky:
/// kept while the StatefulSet wants the pod.
pub fn lan_key(namespace: &str, gw: &str, lan_provider: &str) -> String {
    PodKey::new(namespace, plan::pod_name(gw)).ipam_key(lan_provider)
}

/// The IPAM key of EIP `eip` (no `/`: never taken for a pod's, so pod GC leaves it alone).
pub fn eip_key(eip: &str) -> String {
    format!("iptables-eip:{eip}")
}

/// Whether IPAM key `key` is gateway `gw`'s lanIp reservation (whatever the namespace and
/// LAN provider).
pub fn is_lan_key_of(key: &str, gw: &str) -> bool {
    PodKey::of_ipam_key(key).is_some_and(|(pod, _)| pod.name == plan::pod_name(gw))
}

/// The lanIp of `gw` if IPAM holds it for the gateway now.
pub fn reserved_lan_ip(ctx: &Context, gw: &VpcNatGateway) -> Option<IpAddr> {
    let ip: IpAddr = gw.spec.lan_ip.trim().parse().ok()?;
    let name = gw.name_any();
    ctx.ipam
        .read(|a| {
            a.holder(&gw.spec.subnet, &ip)
                .is_some_and(|k| is_lan_key_of(k, &name))
        })
        .then_some(ip)
}

/// The default routes of the VPC's NAT gateways: those alive whose lanIp is reserved.
pub fn gateway_routes(ctx: &Context, vpc: &str) -> Vec<GatewayRoute> {
    ctx.nat_gateways
        .state()
        .iter()
        .filter(|g| g.spec.vpc == vpc && g.metadata.deletion_timestamp.is_none())
        .filter_map(|g| {
            Some(GatewayRoute {
                gateway: g.name_any(),
                lan_ip: reserved_lan_ip(ctx, g)?,
            })
        })
        .collect()
}

/// Claims in IPAM the lanIp of every valid gateway and the address of every EIP that shows
/// one, before the pod workers start. Refusals are logged: the controllers report them.
pub async fn adopt(nat: &NatContext) {
    let ctx = &nat.ctx;
    let install = nat.install();
    let facts = nat.subnet_facts();
    let mut claimed = 0usize;
    for gw in ctx.nat_gateways.state() {
        if gw.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Ok(valid) = plan::validate(&gw, |v| ctx.vpcs.get(&ObjectRef::new(v)).is_some(), &facts)
        else {
            continue;
        };
        let key = lan_key(&install.namespace, &valid.name, valid.lan_provider.as_str());
        let request = AllocationRequest::new(key, valid.subnet.clone())
            .with_ips([IpRequest {
                address: valid.lan_ip,
                prefix_len: None,
            }])
            .sticky(true);
        match ctx.ipam.allocate(&request).await {
            Ok(_) => claimed += 1,
            Err(e) => {
                warn!(gateway = %valid.name, error = %e, "adopting IPAM: lanIp not claimed")
            }
        }
    }
    for eip in nat.eips.state() {
        let ip = eip
            .status
            .as_ref()
            .map(|s| s.ip.trim())
            .filter(|ip| !ip.is_empty())
            .and_then(|ip| ip.parse::<IpAddr>().ok());
        let Some(ip) = ip else { continue };
        let Some(subnet) = eip::external_subnet_of(&eip, |g| {
            ctx.nat_gateways
                .get(&ObjectRef::new(g))
                .map(|g| (*g).clone())
        }) else {
            continue;
        };
        let request =
            AllocationRequest::new(eip_key(&eip.name_any()), subnet).with_ips([IpRequest {
                address: ip,
                prefix_len: None,
            }]);
        match ctx.ipam.allocate(&request).await {
            Ok(_) => claimed += 1,
            Err(IpamError::KeyMismatch { .. }) => {
                // The store holds another address for it: the EIP controller settles it.
            }
            Err(e) => {
                warn!(eip = %eip.name_any(), error = %e, "adopting IPAM: EIP address not claimed")
            }
        }
    }
    info!(claimed, "IPAM adopted the NAT gateways' lanIps and EIPs");
}

/// The stores' writers, handed to `watch`.
pub struct Writers {
    kube_ovn: reflector::store::Writer<KubeOvn>,
    eips: reflector::store::Writer<IptablesEIP>,
    fips: reflector::store::Writer<IptablesFIPRule>,
    dnats: reflector::store::Writer<IptablesDnatRule>,
    snats: reflector::store::Writer<IptablesSnatRule>,
}

/// The NAT context and the writers of its stores (`watch` feeds them).
pub fn context(ctx: Arc<Context>, operator: Operator) -> (Arc<NatContext>, Writers) {
    let (kube_ovn, kube_ovn_w) = reflector::store();
    let (eips, eips_w) = reflector::store();
    let (fips, fips_w) = reflector::store();
    let (dnats, dnats_w) = reflector::store();
    let (snats, snats_w) = reflector::store();
    let nat = Arc::new(NatContext {
        ctx,
        operator,
        kube_ovn,
        eips,
        fips,
        dnats,
        snats,
        rules_changed: Notify::new(),
        install_changed: Notify::new(),
        failures: Failures::default(),
    });
    let writers = Writers {
        kube_ovn: kube_ovn_w,
        eips: eips_w,
        fips: fips_w,
        dnats: dnats_w,
        snats: snats_w,
    };
    (nat, writers)
}

/// Starts the watches of the NAT stores in `tasks` and waits for their first lists.
pub async fn watch(
    nat: &Arc<NatContext>,
    writers: Writers,
    tasks: &mut tokio::task::JoinSet<()>,
) -> anyhow::Result<()> {
    let client = nat.ctx.client.clone();
    let fire = |which: fn(&NatContext) -> &Notify| {
        let nat = nat.clone();
        move || which(&nat).notify_one()
    };
    tasks.spawn(mirror(
        Api::<KubeOvn>::all(client.clone()),
        writers.kube_ovn,
        "kubeovns",
        fire(|n| &n.install_changed),
    ));
    tasks.spawn(mirror(
        Api::<IptablesEIP>::all(client.clone()),
        writers.eips,
        "iptables-eips",
        fire(|n| &n.rules_changed),
    ));
    tasks.spawn(mirror(
        Api::<IptablesFIPRule>::all(client.clone()),
        writers.fips,
        "iptables-fip-rules",
        fire(|n| &n.rules_changed),
    ));
    tasks.spawn(mirror(
        Api::<IptablesDnatRule>::all(client.clone()),
        writers.dnats,
        "iptables-dnat-rules",
        fire(|n| &n.rules_changed),
    ));
    tasks.spawn(mirror(
        Api::<IptablesSnatRule>::all(client),
        writers.snats,
        "iptables-snat-rules",
        fire(|n| &n.rules_changed),
    ));
    for ready in [
        nat.kube_ovn.wait_until_ready().await.is_ok(),
        nat.eips.wait_until_ready().await.is_ok(),
        nat.fips.wait_until_ready().await.is_ok(),
        nat.dnats.wait_until_ready().await.is_ok(),
        nat.snats.wait_until_ready().await.is_ok(),
    ] {
        anyhow::ensure!(ready, "a NAT watch stopped before its first list");
    }
    Ok(())
}

/// Starts the NAT controllers in `tasks`.
pub fn run(nat: &Arc<NatContext>, tasks: &mut tokio::task::JoinSet<()>) {
    tasks.spawn(gateway::run(nat.clone()));
    tasks.spawn(eip::run(nat.clone()));
    tasks.spawn(rules::run(nat.clone()));
    tasks.spawn(external::run(nat.clone()));
}
