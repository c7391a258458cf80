//! What a VPC's logical router routes: `Vpc.spec.staticRoutes` and `policyRoutes`, plus the
//! default route `0.0.0.0/0 → lanIp` of each VpcNatGateway of the VPC whose lanIp is
//! reserved (ARCHITECTURE.md, "VPC NAT gateway", step 2). `plan_routes` is pure; `sync` writes
//! the plan with the router in one NB transaction. The Vpc controller and the VpcNatGateway
//! controller both call `sync`, so a gateway's route comes and goes with the gateway without
//! waiting for the next Vpc reconcile; one lock keeps their transactions apart.
//!
//! Only rows with our vendor mark are ours: routes and policies someone else wrote on the
//! router stay. Identical routes (a spec route equal to a gateway's) collapse into one row.
//! Not applied: `ecmpMode` and `bfdId` (no BFD here); `routeTable` is.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;

use super::context::Context;
use crate::api::vpc::{PolicyRoute, StaticRoute, Vpc};
use crate::ovn::external_ids;
use crate::ovn::nb::{RouterPolicySpec, StaticRouteSpec};

/// A NAT gateway's claim on its VPC's default route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayRoute {
    pub gateway: String,
    pub lan_ip: IpAddr,
}

/// The routes and policies the router should have, and the spec entries that could not be
/// read (left out, and reported on the Vpc).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutePlan {
    pub routes: Vec<StaticRouteSpec>,
    pub policies: Vec<RouterPolicySpec>,
    pub problems: Vec<String>,
}

fn ids(vpc: &str, extra: Option<(&str, &str)>) -> std::collections::BTreeMap<String, String> {
    external_ids::ours([(external_ids::VPC, vpc)].into_iter().chain(extra))
}

/// A prefix as OVN writes it: a CIDR with host bits cleared, or a bare address.
fn prefix(value: &str) -> Option<(String, bool)> {
    let value = value.trim();
    if let Ok(net) = value.parse::<IpNet>() {
        let v4 = matches!(net, IpNet::V4(_));
        return Some((net.trunc().to_string(), v4));
    }
    value
        .parse::<IpAddr>()
        .ok()
        .map(|ip| (ip.to_string(), ip.is_ipv4()))
}

fn static_route(vpc: &str, i: usize, r: &StaticRoute) -> Result<StaticRouteSpec, String> {
    let what = format!("spec.staticRoutes[{i}]");
    let policy = match r.policy.as_deref().map(str::trim) {
        None | Some("") | Some("policyDst") => "dst-ip",
        Some("policySrc") => "src-ip",
        Some(other) => {
            return Err(format!(
                "{what}: policy {other:?} is neither policyDst nor policySrc"
            ))
        }
    };
    let (ip_prefix, v4) =
        prefix(&r.cidr).ok_or_else(|| format!("{what}: cidr {:?} is not a CIDR", r.cidr))?;
    let nexthop: IpAddr = r
        .next_hop_ip
        .trim()
        .parse()
        .map_err(|_| format!("{what}: nextHopIP {:?} is not an address", r.next_hop_ip))?;
    if nexthop.is_ipv4() != v4 {
        return Err(format!(
            "{what}: nextHopIP {nexthop} is not of the family of {}",
            r.cidr
        ));
    }
    Ok(StaticRouteSpec {
        route_table: r.route_table.clone().unwrap_or_default(),
        policy: policy.to_owned(),
        ip_prefix,
        nexthop: nexthop.to_string(),
        external_ids: ids(vpc, None),
    })
}

fn policy_route(vpc: &str, i: usize, p: &PolicyRoute) -> Result<RouterPolicySpec, String> {
    let what = format!("spec.policyRoutes[{i}]");
    if !(0..=32767).contains(&p.priority) {
        return Err(format!(
            "{what}: priority {} is not in 0..32767",
            p.priority
        ));
    }
    if p.r#match.trim().is_empty() {
        return Err(format!("{what}: match is empty"));
    }
    let mut nexthops = Vec::new();
    match p.action.as_str() {
        "allow" | "drop" => {}
        "reroute" => {
            let hops = p.next_hop_ip.as_deref().unwrap_or_default();
            for hop in hops.split(',').map(str::trim).filter(|h| !h.is_empty()) {
                let ip: IpAddr = hop
                    .parse()
                    .map_err(|_| format!("{what}: nextHopIP {hop:?} is not an address"))?;
                nexthops.push(ip.to_string());
            }
            if nexthops.is_empty() {
                return Err(format!("{what}: action reroute needs nextHopIP"));
            }
            nexthops.sort();
        }
        other => {
            return Err(format!(
                "{what}: action {other:?} is not allow, drop or reroute"
            ))
        }
    }
    Ok(RouterPolicySpec {
        priority: i64::from(p.priority),
        match_: p.r#match.trim().to_owned(),
        action: p.action.clone(),
        nexthops,
        external_ids: ids(vpc, None),
    })
}

type RouteKey = (String, String, String, String);

/// Adds `spec` unless an identical route is in already.
fn push_route(
    routes: &mut Vec<StaticRouteSpec>,
    seen: &mut BTreeSet<RouteKey>,
    spec: StaticRouteSpec,
) {
    let (table, policy, prefix, nexthop) = spec.identity();
    let key = (
        table.to_owned(),
        policy.to_owned(),
        prefix.to_owned(),
        nexthop.to_owned(),
    );
    if seen.insert(key) {
        routes.push(spec);
    }
}

/// The router's routes for `vpc` and its NAT gateways (already filtered to those whose lanIp
/// is reserved). Pure.
pub fn plan_routes(vpc: &Vpc, gateways: &[GatewayRoute]) -> RoutePlan {
    let name = vpc.name_any();
    let mut plan = RoutePlan::default();
    let mut seen = BTreeSet::new();
    for (i, r) in vpc.spec.static_routes.iter().enumerate() {
        match static_route(&name, i, r) {
            Ok(spec) => push_route(&mut plan.routes, &mut seen, spec),
            Err(e) => plan.problems.push(e),
        }
    }
    let mut gateways = gateways.to_vec();
    gateways.sort_by(|a, b| a.gateway.cmp(&b.gateway));
    for g in &gateways {
        let any = if g.lan_ip.is_ipv4() {
            "0.0.0.0/0"
        } else {
            "::/0"
        };
        let spec = StaticRouteSpec {
            route_table: String::new(),
            policy: "dst-ip".into(),
            ip_prefix: any.into(),
            nexthop: g.lan_ip.to_string(),
            external_ids: ids(&name, Some((external_ids::VPC_NAT_GW, g.gateway.as_str()))),
        };
        push_route(&mut plan.routes, &mut seen, spec);
    }
    let mut seen = BTreeSet::new();
    for (i, p) in vpc.spec.policy_routes.iter().enumerate() {
        match policy_route(&name, i, p) {
            Ok(spec) => {
                let key = (
                    spec.priority,
                    spec.match_.clone(),
                    spec.action.clone(),
                    spec.nexthops.clone(),
                );
                if seen.insert(key) {
                    plan.policies.push(spec);
                }
            }
            Err(e) => plan.problems.push(e),
        }
    }
    plan
}

/// Writes the router of Vpc `vpc` with the routes `plan_routes` gives for it now, in one NB
/// transaction; returns the plan (`None` when the Vpc does not exist or is being deleted: its
/// router goes with it). `router_ids` are the router's own external_ids.
pub async fn sync(ctx: &Context, vpc: &str) -> crate::ovn::Result<Option<RoutePlan>> {
    let _one_at_a_time = ctx.routes_lock.lock().await;
    let Some(obj) = ctx.vpcs.get(&ObjectRef::<Vpc>::new(vpc)) else {
        return Ok(None);
    };
    if obj.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let gateways = super::natgw::gateway_routes(ctx, vpc);
    let plan = plan_routes(&obj, &gateways);
    let router_ids = external_ids::ours([(external_ids::VPC, vpc)]);
    ctx.nb
        .apply(|t| {
            t.ensure_router(vpc, &router_ids)?;
            t.sync_static_routes(vpc, &plan.routes)?;
            t.sync_router_policies(vpc, &plan.policies)
        })
        .await?;
    Ok(Some(plan))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::vpc::VpcSpec;

    fn vpc(static_routes: Vec<StaticRoute>, policy_routes: Vec<PolicyRoute>) -> Vpc {
        Vpc::new(
            "vpc-secondary",
            VpcSpec {
                static_routes,
                policy_routes,
                ..Default::default()
            },
        )
    }

    fn route(cidr: &str, hop: &str) -> StaticRoute {
        StaticRoute {
            cidr: cidr.into(),
            next_hop_ip: hop.into(),
            ..Default::default()
        }
    }

    fn seed_gateway() -> GatewayRoute {
        GatewayRoute {
            gateway: "vpc-nat-gw".into(),
            lan_ip: "10.100.0.254".parse().unwrap(),
        }
    }

    #[test]
    fn the_seed_gateway_gets_the_default_route_marked_as_its_own() {
        let plan = plan_routes(&vpc(vec![], vec![]), &[seed_gateway()]);
        assert_eq!(plan.problems, Vec::<String>::new());
        let [r] = plan.routes.as_slice() else {
            panic!("one route: {:?}", plan.routes)
        };
        assert_eq!(r.identity(), ("", "dst-ip", "0.0.0.0/0", "10.100.0.254"));
        assert_eq!(r.external_ids["vendor"], "kube-ovn");
        assert_eq!(r.external_ids["vpc"], "vpc-secondary");
        assert_eq!(r.external_ids["vpc-nat-gw"], "vpc-nat-gw");
        assert!(plan_routes(&vpc(vec![], vec![]), &[]).routes.is_empty());
    }

    #[test]
    fn spec_routes_are_normalised_and_the_upstream_workaround_collapses_into_one() {
        // Kube-OVN users add the gateway's route themselves (#6744's workaround).
        let mut workaround = route("0.0.0.0/0", "10.100.0.254");
        workaround.policy = Some("policyDst".into());
        let mut src = route("10.100.1.7/24", "10.100.0.253");
        src.policy = Some("policySrc".into());
        src.route_table = Some("rtb1".into());
        let plan = plan_routes(&vpc(vec![workaround, src], vec![]), &[seed_gateway()]);
        let got: Vec<_> = plan.routes.iter().map(StaticRouteSpec::identity).collect();
        assert_eq!(
            got,
            [
                ("", "dst-ip", "0.0.0.0/0", "10.100.0.254"),
                ("rtb1", "src-ip", "10.100.1.0/24", "10.100.0.253"),
            ]
        );
        // The spec's row wins: no gateway mark on it.
        assert!(!plan.routes[0].external_ids.contains_key("vpc-nat-gw"));
    }

    #[test]
    fn bad_entries_are_left_out_and_named() {
        let mut bad_policy = route("10.0.0.0/8", "10.100.0.1");
        bad_policy.policy = Some("policyAny".into());
        let routes = vec![
            route("10.0.0.0/33", "10.100.0.1"),
            route("10.0.0.0/8", "fd00::1"),
            bad_policy,
            route("192.168.0.0/16", "10.100.0.1"),
        ];
        let policies = vec![
            PolicyRoute {
                priority: 31000,
                r#match: "ip4.dst == 10.200.0.0/16".into(),
                action: "reroute".into(),
                next_hop_ip: Some("10.100.0.9, 10.100.0.8".into()),
            },
            PolicyRoute {
                priority: 40000,
                r#match: "ip4".into(),
                action: "drop".into(),
                next_hop_ip: None,
            },
            PolicyRoute {
                priority: 100,
                r#match: "ip4".into(),
                action: "reroute".into(),
                next_hop_ip: None,
            },
            PolicyRoute {
                priority: 100,
                r#match: "ip4.src == 10.100.0.5".into(),
                action: "allow".into(),
                next_hop_ip: Some("10.1.1.1".into()),
            },
        ];
        let plan = plan_routes(&vpc(routes, policies), &[]);
        assert_eq!(plan.routes.len(), 1);
        assert_eq!(plan.routes[0].ip_prefix, "192.168.0.0/16");
        assert_eq!(plan.policies.len(), 2);
        assert_eq!(plan.policies[0].nexthops, ["10.100.0.8", "10.100.0.9"]);
        assert!(plan.policies[1].nexthops.is_empty(), "allow has no nexthop");
        let problems = plan.problems.join("\n");
        for want in [
            "spec.staticRoutes[0]: cidr \"10.0.0.0/33\"",
            "spec.staticRoutes[1]: nextHopIP fd00::1 is not of the family",
            "spec.staticRoutes[2]: policy \"policyAny\"",
            "spec.policyRoutes[1]: priority 40000",
            "spec.policyRoutes[2]: action reroute needs nextHopIP",
        ] {
            assert!(problems.contains(want), "{want} in\n{problems}");
        }
    }

    #[test]
    fn two_gateways_of_one_vpc_route_in_a_stable_order() {
        let a = GatewayRoute {
            gateway: "b".into(),
            lan_ip: "10.100.0.253".parse().unwrap(),
        };
        let plan = plan_routes(&vpc(vec![], vec![]), &[a, seed_gateway()]);
        let hops: Vec<_> = plan.routes.iter().map(|r| r.nexthop.as_str()).collect();
        assert_eq!(hops, ["10.100.0.253", "10.100.0.254"]);
    }
}
