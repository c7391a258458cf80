//! Where the gateway sends what it forwards. The gateway pod keeps its primary eth0 default
//! route (it reaches the API server through it), so traffic arriving from the VPC is steered
//! by policy routing instead:
//!
//! - rule `iif <lan> lookup main suppress_prefixlength 0` ([`MAIN_PRIORITY`]): the main
//!   table's specific routes (the LAN, the VPC's other subnets, the external subnet) still
//!   apply, its default route does not; so replies to DNAT/FIP flows reach an external host
//!   directly and a VPC pod reaching a FIP of its own VPC (hairpin) goes back to the LAN;
//! - rule `iif <lan> lookup` [`TABLE`] ([`EGRESS_PRIORITY`]), whose only route is
//!   `default via <external gateway> dev <external>`: everything else leaves on the external
//!   leg, where the nftables table SNATs it.
//!
//! Rules of ours whose interface or table differ (a renamed leg) are replaced; the table's
//! default route is replaced in place. Everything is idempotent and rebuilt on start.

use std::net::Ipv4Addr;

use futures::TryStreamExt;
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use rtnetlink::IpVersion;
use rtnetlink::{Handle, RouteMessageBuilder};

use super::links::{self, nl, LinkError};
use super::plan::Interfaces;

/// The routing table holding the external default route.
pub const TABLE: u32 = 100;
/// Priority of the rule that keeps the main table's specific routes for LAN traffic.
pub const MAIN_PRIORITY: u32 = 1000;
/// Priority of the rule sending the rest of the LAN's traffic to [`TABLE`].
pub const EGRESS_PRIORITY: u32 = 1001;

/// A policy rule as we want it, for comparing with what the kernel lists.
#[derive(Debug, Clone, PartialEq, Eq)]
struct WantedRule {
    priority: u32,
    iif: String,
    table: u32,
    suppress_prefixlen: Option<u32>,
}

fn wanted_rules(lan: &str) -> [WantedRule; 2] {
    [
        WantedRule {
            priority: MAIN_PRIORITY,
            iif: lan.to_owned(),
            table: u32::from(RouteHeader::RT_TABLE_MAIN),
            suppress_prefixlen: Some(0),
        },
        WantedRule {
            priority: EGRESS_PRIORITY,
            iif: lan.to_owned(),
            table: TABLE,
            suppress_prefixlen: None,
        },
    ]
}

fn observed_rule(m: &RuleMessage) -> Option<WantedRule> {
    let mut priority = None;
    let mut iif = None;
    let mut table = u32::from(m.header.table);
    let mut suppress_prefixlen = None;
    for a in &m.attributes {
        match a {
            RuleAttribute::Priority(p) => priority = Some(*p),
            RuleAttribute::Iifname(n) => iif = Some(n.clone()),
            RuleAttribute::Table(t) => table = *t,
            // The kernel reports "no suppression" as u32::MAX.
            RuleAttribute::SuppressPrefixLen(s) if *s != u32::MAX => suppress_prefixlen = Some(*s),
            _ => {}
        }
    }
    Some(WantedRule {
        priority: priority?,
        iif: iif.unwrap_or_default(),
        table,
        suppress_prefixlen,
    })
}

/// What [`ensure`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routed {
    pub rules_added: usize,
    pub rules_removed: usize,
    /// Whether the table's default route was written (absent or different before).
    pub route_written: bool,
}

/// Makes the LAN's forwarded traffic leave through `gateway` on the external leg.
pub async fn ensure(interfaces: &Interfaces, gateway: Ipv4Addr) -> Result<Routed, LinkError> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(|source| LinkError::Io {
        op: "open",
        object: "rtnetlink socket".into(),
        source,
    })?;
    let connection = tokio::spawn(connection);
    let result = ensure_on(&handle, interfaces, gateway).await;
    connection.abort();
    result
}

async fn ensure_on(
    handle: &Handle,
    interfaces: &Interfaces,
    gateway: Ipv4Addr,
) -> Result<Routed, LinkError> {
    let external = links::link(handle, &interfaces.external).await?;
    let mut routed = Routed::default();

    // The route first, so the rule never points at an empty table.
    if table_default(handle).await? != Some((gateway, external.index)) {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .table_id(TABLE)
            .gateway(gateway)
            .output_interface(external.index)
            .build();
        handle
            .route()
            .add(route)
            .replace()
            .execute()
            .await
            .map_err(nl(
                "replace",
                format!("default via {gateway} dev {} table {TABLE}", external.name),
            ))?;
        routed.route_written = true;
    }

    let wanted = wanted_rules(&interfaces.lan);
    let existing: Vec<RuleMessage> = handle
        .rule()
        .get(IpVersion::V4)
        .execute()
        .try_collect()
        .await
        .map_err(nl("list", "rules"))?;
    let mut present = Vec::new();
    for m in existing {
        let Some(rule) = observed_rule(&m) else {
            continue;
        };
        if rule.priority != MAIN_PRIORITY && rule.priority != EGRESS_PRIORITY {
            continue;
        }
        if wanted.contains(&rule) && !present.contains(&rule) {
            present.push(rule);
            continue;
        }
        handle
            .rule()
            .del(m)
            .execute()
            .await
            .map_err(nl("delete", format!("rule {rule:?}")))?;
        routed.rules_removed += 1;
    }
    for rule in wanted.iter().filter(|r| !present.contains(r)) {
        let mut add = handle
            .rule()
            .add()
            .v4()
            .priority(rule.priority)
            .input_interface(rule.iif.clone())
            .table_id(rule.table)
            .action(RuleAction::ToTable);
        if let Some(s) = rule.suppress_prefixlen {
            add.message_mut()
                .attributes
                .push(RuleAttribute::SuppressPrefixLen(s));
        }
        add.execute()
            .await
            .map_err(nl("add", format!("rule {rule:?}")))?;
        routed.rules_added += 1;
    }
    Ok(routed)
}

/// The IPv4 default route of [`TABLE`]: its gateway and interface.
async fn table_default(handle: &Handle) -> Result<Option<(Ipv4Addr, u32)>, LinkError> {
    Ok(links::ipv4_routes(handle)
        .await?
        .iter()
        .filter(|r| links::is_default_of(r, TABLE))
        .find_map(|r| {
            let via = r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Gateway(RouteAddress::Inet(ip)) => Some(*ip),
                _ => None,
            })?;
            let oif = r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Oif(i) => Some(*i),
                _ => None,
            })?;
            Some((via, oif))
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_main_table_keeps_its_specific_routes_for_the_lan_before_the_egress_table() {
        let [main, egress] = wanted_rules("net1");
        assert!(main.priority < egress.priority);
        assert_eq!(main.table, 254);
        assert_eq!(main.suppress_prefixlen, Some(0));
        assert_eq!(egress.table, TABLE);
        assert_eq!(egress.suppress_prefixlen, None);
        assert_eq!((main.iif.as_str(), egress.iif.as_str()), ("net1", "net1"));
    }
}
