//! The wanted state of the gateway's netns, planned from its rules: the nftables table
//! `ip kube-ovn-nat` as two ordered rule lists, the EIP addresses on the external interface,
//! and which conntrack entries to delete because the rule that made them is gone (against the
//! previous plan; after a start, every translation the table does not account for). Pure; the
//! kernel side is `nftables.rs`, `links.rs` and `conntrack.rs`, sequenced by `dataplane.rs`.
//!
//! The table:
//! - prerouting (nat, dstnat): packets entering from the LAN get [`HAIRPIN_MARK`]; DNAT
//!   rules (`ip daddr eip proto dport` → internal ip:port), then FIPs (`ip daddr eip` →
//!   internal ip). Port forwards come first so that a more specific rule wins if a FIP and a
//!   DNAT share an EIP.
//! - postrouting (nat, srcnat): hairpin first (marked, destination-NATed, leaving through
//!   the LAN again: masquerade to the gateway's LAN address, so the reply comes back through
//!   the gateway instead of going straight to the client); FIP SNAT (`ip saddr internal oif
//!   external` → eip); SNAT rules, longest prefix first.
//!
//! NAT chains only see the first packet of a connection; the mark therefore only needs to
//! live from prerouting to postrouting of that packet.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4};

use ipnet::Ipv4Net;

use super::rules::{GatewayRules, Protocol};

/// The packet mark bit that says "came in through the LAN" (first packets only).
pub const HAIRPIN_MARK: u32 = 0x0040_0000;

/// The gateway's two legs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interfaces {
    /// The VPC side (holds lanIp).
    pub lan: String,
    /// The external side (holds the EIPs).
    pub external: String,
}

/// One nftables rule, in domain words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatRule {
    /// `iifname lan meta mark set mark | HAIRPIN_MARK`
    MarkFromLan { lan: String },
    /// `ip daddr eip meta l4proto proto th dport port dnat to internal` (comment: the CR)
    Dnat {
        name: String,
        eip: Ipv4Addr,
        protocol: Protocol,
        port: u16,
        to: SocketAddrV4,
    },
    /// `ip daddr eip dnat to internal`
    FipDnat {
        name: String,
        eip: Ipv4Addr,
        to: Ipv4Addr,
    },
    /// `meta mark & HAIRPIN_MARK != 0 ct status dnat oifname lan masquerade`
    Hairpin { lan: String },
    /// `ip saddr internal oifname external snat to eip`
    FipSnat {
        name: String,
        from: Ipv4Addr,
        external: String,
        to: Ipv4Addr,
    },
    /// `ip saddr cidr oifname external snat to eip`
    Snat {
        name: String,
        from: Ipv4Net,
        external: String,
        to: Ipv4Addr,
    },
}

/// The table `ip kube-ovn-nat`: its two base chains' rules, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatTable {
    pub prerouting: Vec<NatRule>,
    pub postrouting: Vec<NatRule>,
}

impl NatTable {
    pub fn rule_count(&self) -> usize {
        self.prerouting.len() + self.postrouting.len()
    }
}

/// Conntrack entries to delete: connections that a removed rule translated.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConntrackFlush {
    /// Original destination `eip` `protocol` `port` (a removed or retargeted port forward).
    Port {
        eip: Ipv4Addr,
        protocol: Protocol,
        port: u16,
    },
    /// Original destination `eip`, or translated source `eip` (a removed FIP or EIP).
    Address { eip: Ipv4Addr },
    /// After a start: every translated connection these translations do not account for. A
    /// restarted container keeps its pod's netns and so its conntrack table, and the rules
    /// removed while no role ran are known to no previous plan.
    Unexplained(Translations),
}

/// What a table translates, as conntrack shows it: a connection whose destination was
/// translated must match a port forward or a FIP; one whose source was translated must have
/// been given an EIP.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Translations {
    /// Port forwards: EIP, IP protocol number, port → target.
    pub forwards: Vec<(Ipv4Addr, u8, u16, SocketAddrV4)>,
    /// FIPs: EIP → internal address (ports unchanged).
    pub fips: Vec<(Ipv4Addr, Ipv4Addr)>,
    /// The EIPs, the only addresses a source is translated to towards the outside.
    pub eips: Vec<Ipv4Addr>,
}

impl Translations {
    fn of(table: &NatTable, eips: &BTreeSet<Ipv4Addr>) -> Self {
        let mut out = Translations {
            eips: eips.iter().copied().collect(),
            ..Translations::default()
        };
        for rule in &table.prerouting {
            match rule {
                NatRule::Dnat {
                    eip,
                    protocol,
                    port,
                    to,
                    ..
                } => out.forwards.push((*eip, protocol.number(), *port, *to)),
                NatRule::FipDnat { eip, to, .. } => out.fips.push((*eip, *to)),
                _ => {}
            }
        }
        out
    }
}

/// Everything the dataplane applies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatPlan {
    pub table: NatTable,
    /// The EIPs, as /32 addresses on the external interface.
    pub eips: BTreeSet<Ipv4Addr>,
    /// Connections to cut, computed against the previous plan.
    pub conntrack: Vec<ConntrackFlush>,
}

impl NatPlan {
    /// Whether applying `self` changes anything against `other` (the flushes aside).
    pub fn same_state(&self, other: &NatPlan) -> bool {
        self.table == other.table && self.eips == other.eips
    }
}

/// Plans the gateway: the table and addresses for `rules`, and, against `previous` (what was
/// applied last; `None` after a start), the conntrack entries of removed rules.
pub fn plan(rules: &GatewayRules, interfaces: &Interfaces, previous: Option<&NatPlan>) -> NatPlan {
    let mut table = NatTable::default();
    table.prerouting.push(NatRule::MarkFromLan {
        lan: interfaces.lan.clone(),
    });
    let mut dnats: Vec<_> = rules.dnats.iter().collect();
    dnats.sort_by_key(|d| (d.eip, d.protocol, d.external_port));
    table
        .prerouting
        .extend(dnats.into_iter().map(|d| NatRule::Dnat {
            name: d.name.clone(),
            eip: d.eip,
            protocol: d.protocol,
            port: d.external_port,
            to: d.internal,
        }));
    let mut fips: Vec<_> = rules.fips.iter().collect();
    fips.sort_by_key(|f| (f.eip, f.internal));
    table
        .prerouting
        .extend(fips.iter().map(|f| NatRule::FipDnat {
            name: f.name.clone(),
            eip: f.eip,
            to: f.internal,
        }));

    table.postrouting.push(NatRule::Hairpin {
        lan: interfaces.lan.clone(),
    });
    table
        .postrouting
        .extend(fips.iter().map(|f| NatRule::FipSnat {
            name: f.name.clone(),
            from: f.internal,
            external: interfaces.external.clone(),
            to: f.eip,
        }));
    let mut snats: Vec<_> = rules.snats.iter().collect();
    // Longest prefix first: a /24 with its own EIP must win over the VPC's /16.
    snats.sort_by(|a, b| {
        b.internal
            .prefix_len()
            .cmp(&a.internal.prefix_len())
            .then(a.internal.network().cmp(&b.internal.network()))
            .then(a.eip.cmp(&b.eip))
            .then(a.name.cmp(&b.name))
    });
    table
        .postrouting
        .extend(snats.into_iter().map(|s| NatRule::Snat {
            name: s.name.clone(),
            from: s.internal,
            external: interfaces.external.clone(),
            to: s.eip,
        }));

    let eips: BTreeSet<Ipv4Addr> = rules.eips.iter().map(|e| e.address).collect();
    let conntrack = match previous {
        Some(p) => flushes(&p.table, &table, &p.eips, &eips),
        None => vec![ConntrackFlush::Unexplained(Translations::of(&table, &eips))],
    };
    NatPlan {
        table,
        eips,
        conntrack,
    }
}

/// The connections a move from `old` to `new` leaves translated by a rule that is gone.
fn flushes(
    old: &NatTable,
    new: &NatTable,
    old_eips: &BTreeSet<Ipv4Addr>,
    new_eips: &BTreeSet<Ipv4Addr>,
) -> Vec<ConntrackFlush> {
    let mut out = BTreeSet::new();
    for rule in &old.prerouting {
        // A rule that stays exactly as it was (target included) keeps its connections.
        let kept = new.prerouting.iter().any(|n| same_translation(rule, n));
        if kept {
            continue;
        }
        match rule {
            NatRule::Dnat {
                eip,
                protocol,
                port,
                ..
            } => {
                out.insert(ConntrackFlush::Port {
                    eip: *eip,
                    protocol: *protocol,
                    port: *port,
                });
            }
            NatRule::FipDnat { eip, .. } => {
                out.insert(ConntrackFlush::Address { eip: *eip });
            }
            _ => {}
        }
    }
    for eip in old_eips.difference(new_eips) {
        out.insert(ConntrackFlush::Address { eip: *eip });
    }
    out.into_iter().collect()
}

/// Equal as translations (the CR's name does not matter to a connection).
fn same_translation(a: &NatRule, b: &NatRule) -> bool {
    match (a, b) {
        (
            NatRule::Dnat {
                eip,
                protocol,
                port,
                to,
                ..
            },
            NatRule::Dnat {
                eip: e2,
                protocol: p2,
                port: port2,
                to: t2,
                ..
            },
        ) => (eip, protocol, port, to) == (e2, p2, port2, t2),
        (
            NatRule::FipDnat { eip, to, .. },
            NatRule::FipDnat {
                eip: e2, to: t2, ..
            },
        ) => (eip, to) == (e2, t2),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::natgw::rules::{Dnat, Eip, Fip, Snat};

    fn ifaces() -> Interfaces {
        Interfaces {
            lan: "net1".into(),
            external: "net2".into(),
        }
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn dnat(name: &str, port: u16, to: &str) -> Dnat {
        Dnat {
            name: name.into(),
            eip: ip("172.19.0.11"),
            protocol: Protocol::Tcp,
            external_port: port,
            internal: to.parse().unwrap(),
        }
    }

    fn snat(name: &str, cidr: &str, eip: &str) -> Snat {
        Snat {
            name: name.into(),
            eip: ip(eip),
            internal: cidr.parse().unwrap(),
        }
    }

    fn rules() -> GatewayRules {
        GatewayRules {
            eips: vec![
                Eip {
                    name: "e1".into(),
                    address: ip("172.19.0.11"),
                },
                Eip {
                    name: "e2".into(),
                    address: ip("172.19.0.12"),
                },
            ],
            fips: vec![Fip {
                name: "f1".into(),
                eip: ip("172.19.0.12"),
                internal: ip("10.100.0.3"),
            }],
            dnats: vec![
                dnat("d2", 8443, "10.100.0.2:443"),
                dnat("d1", 8080, "10.100.0.2:80"),
            ],
            snats: vec![
                snat("vpc", "10.100.0.0/16", "172.19.0.11"),
                snat("one-subnet", "10.100.1.0/24", "172.19.0.12"),
            ],
        }
    }

    #[test]
    fn table_orders_marks_port_forwards_fips_then_hairpin_fip_snat_and_snat_by_prefix() {
        let plan = plan(&rules(), &ifaces(), None);
        let pre = &plan.table.prerouting;
        assert_eq!(pre[0], NatRule::MarkFromLan { lan: "net1".into() });
        assert!(matches!(&pre[1], NatRule::Dnat { port: 8080, .. }));
        assert!(matches!(&pre[2], NatRule::Dnat { port: 8443, .. }));
        assert_eq!(
            pre[3],
            NatRule::FipDnat {
                name: "f1".into(),
                eip: ip("172.19.0.12"),
                to: ip("10.100.0.3")
            }
        );
        let post = &plan.table.postrouting;
        assert_eq!(post[0], NatRule::Hairpin { lan: "net1".into() });
        assert_eq!(
            post[1],
            NatRule::FipSnat {
                name: "f1".into(),
                from: ip("10.100.0.3"),
                external: "net2".into(),
                to: ip("172.19.0.12")
            }
        );
        let snat_names: Vec<_> = post[2..]
            .iter()
            .map(|r| match r {
                NatRule::Snat { name, .. } => name.as_str(),
                other => panic!("not an SNAT: {other:?}"),
            })
            .collect();
        assert_eq!(snat_names, ["one-subnet", "vpc"]);
        assert_eq!(
            plan.eips.iter().copied().collect::<Vec<_>>(),
            [ip("172.19.0.11"), ip("172.19.0.12")]
        );
        // After a start: a sweep of what this table does not translate the same way.
        let [ConntrackFlush::Unexplained(t)] = plan.conntrack.as_slice() else {
            panic!("not one sweep: {:?}", plan.conntrack);
        };
        assert_eq!(t.eips, [ip("172.19.0.11"), ip("172.19.0.12")]);
        assert_eq!(t.fips, [(ip("172.19.0.12"), ip("10.100.0.3"))]);
        assert_eq!(t.forwards.len(), 2, "{t:?}");
        assert!(t.forwards.contains(&(
            ip("172.19.0.11"),
            6,
            8080,
            "10.100.0.2:80".parse().unwrap()
        )));
    }

    #[test]
    fn planning_is_deterministic_whatever_the_input_order() {
        let mut shuffled = rules();
        shuffled.dnats.reverse();
        shuffled.snats.reverse();
        assert_eq!(
            plan(&rules(), &ifaces(), None),
            plan(&shuffled, &ifaces(), None)
        );
    }

    #[test]
    fn removed_or_retargeted_rules_flush_their_connections_and_kept_ones_do_not() {
        let before = plan(&rules(), &ifaces(), None);
        let mut after = rules();
        after.dnats.retain(|d| d.name != "d1"); // removed
        after.dnats[0].internal = "10.100.0.9:443".parse().unwrap(); // d2 retargeted
        after.fips.clear();
        after.eips.retain(|e| e.name != "e2");
        after.snats.retain(|s| s.name == "vpc");
        let next = plan(&after, &ifaces(), Some(&before));
        assert_eq!(
            next.conntrack,
            [
                ConntrackFlush::Port {
                    eip: ip("172.19.0.11"),
                    protocol: Protocol::Tcp,
                    port: 8080
                },
                ConntrackFlush::Port {
                    eip: ip("172.19.0.11"),
                    protocol: Protocol::Tcp,
                    port: 8443
                },
                ConntrackFlush::Address {
                    eip: ip("172.19.0.12")
                },
            ]
        );
        // The same rules again (renamed CR even): nothing to flush.
        let mut renamed = rules();
        renamed.dnats[0].name = "d2-renamed".into();
        let again = plan(&renamed, &ifaces(), Some(&before));
        assert!(again.conntrack.is_empty());
        assert!(!again.same_state(&before), "the comment changed");
        assert!(plan(&rules(), &ifaces(), Some(&before)).same_state(&before));
    }

    #[test]
    fn no_rules_still_keeps_the_hairpin_frame() {
        let plan = plan(&GatewayRules::default(), &ifaces(), None);
        assert_eq!(plan.table.rule_count(), 2);
        assert!(plan.eips.is_empty());
    }
}
