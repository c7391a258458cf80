//! The nat-gw dataplane against the real kernel: a plan applied inside a gateway netns
//! (nftables over netlink, EIP addresses, gratuitous ARP, conntrack), checked with real TCP
//! and ping traffic between pod, gateway and external namespaces, and read back with `nft`,
//! `ip` and `/proc/net/nf_conntrack`. Needs root.

mod cni_support;
mod natgw_support;

use std::net::Ipv4Addr;
use std::time::Instant;

use kube_ovn::natgw::plan::ConntrackFlush;
use kube_ovn::natgw::rules::{Dnat, Eip, Fip, Protocol, Snat};
use kube_ovn::natgw::{apply, plan, Applied, GatewayRules, Interfaces, NatPlan};
use natgw_support::*;

const EIP_1: &str = "172.19.0.11";
const EIP_2: &str = "172.19.0.12";

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("ip")
}

fn interfaces() -> Interfaces {
    Interfaces {
        lan: LAN_IF.into(),
        external: EXT_IF.into(),
    }
}

fn eip(name: &str, address: &str) -> Eip {
    Eip {
        name: name.into(),
        address: ip(address),
    }
}

fn dnat(name: &str, eip: &str, port: u16, to: &str) -> Dnat {
    Dnat {
        name: name.into(),
        eip: ip(eip),
        protocol: Protocol::Tcp,
        external_port: port,
        internal: to.parse().expect("internal"),
    }
}

/// pod-a behind EIP 1 (SNAT of the VPC, DNAT 8080 → pod-a:80); pod-b with FIP EIP 2.
fn rules() -> GatewayRules {
    GatewayRules {
        eips: vec![eip("e1", EIP_1), eip("e2", EIP_2)],
        fips: vec![Fip {
            name: "pod-b".into(),
            eip: ip(EIP_2),
            internal: ip(POD_B),
        }],
        dnats: vec![dnat("web", EIP_1, 8080, "10.100.0.2:80")],
        snats: vec![Snat {
            name: "vpc".into(),
            eip: ip(EIP_1),
            internal: "10.100.0.0/24".parse().expect("cidr"),
        }],
    }
}

/// Applies `plan` inside `t`'s gateway netns.
fn apply_in(t: &Topology, plan: &NatPlan, announce_all: bool) -> Applied {
    let plan = plan.clone();
    t.gw.run(move || async move {
        apply(&plan, &interfaces(), announce_all)
            .await
            .expect("apply")
    })
}

fn eips_on_ext(t: &Topology) -> Vec<String> {
    let addrs = t.gw.ip_json(&["addr", "show", EXT_IF]);
    let mut out: Vec<String> = addrs[0]["addr_info"]
        .as_array()
        .expect("addr_info")
        .iter()
        .filter(|a| a["family"] == "inet" && a["prefixlen"] == 32)
        .map(|a| a["local"].as_str().expect("local").to_string())
        .collect();
    out.sort();
    out
}

#[test]
fn snat_dnat_fip_and_hairpin_carry_real_traffic() {
    let t = Topology::new();
    assert!(
        !t.ext.ping(EIP_1),
        "nothing answers for the EIP before the gateway is programmed"
    );
    let applied = apply_in(&t, &plan(&rules(), &interfaces(), None), true);
    assert!(applied.enabled_forwarding, "a fresh netns forwards nothing");
    assert!(applied.has_default_route);
    assert!(applied.warnings.is_empty(), "{:?}", applied.warnings);
    assert_eq!(
        t.gw.exec(&["cat", "/proc/sys/net/ipv4/ip_forward"])
            .unwrap()
            .trim(),
        "1"
    );
    assert_eq!(eips_on_ext(&t), [EIP_1, EIP_2]);

    // Gratuitous ARP: the external host learnt both EIPs' MAC before any traffic.
    let gw_mac = t.gw.ip_json(&["link", "show", EXT_IF])[0]["address"]
        .as_str()
        .expect("mac")
        .to_string();
    for e in [EIP_1, EIP_2] {
        let neigh = t.ext.ip_json(&["neigh", "show", e]);
        assert_eq!(
            neigh[0]["lladdr"].as_str(),
            Some(gw_mac.as_str()),
            "ext's neighbour entry for {e}: {neigh}"
        );
    }

    let ext_server = t.ext.serve("0.0.0.0:9000");
    let a_server = t.pod_a.serve("0.0.0.0:80");
    let b_server = t.pod_b.serve("0.0.0.0:80");
    let ext_addr = format!("{EXT_HOST}:9000");

    // SNAT: pod-a leaves as EIP 1; ping works although ext has no route to the VPC.
    let c = t.pod_a.connect(&ext_addr).expect("pod-a reaches ext");
    assert_eq!(c.seen_as, EIP_1);
    assert!(t.pod_a.ping(EXT_HOST));

    // FIP: pod-b leaves as EIP 2 (its FIP wins over the VPC's SNAT) and is reachable there.
    let c = t.pod_b.connect(&ext_addr).expect("pod-b reaches ext");
    assert_eq!(c.seen_as, EIP_2);
    assert!(t.ext.ping(EIP_2), "ping to the FIP answered by pod-b");
    let mut c = t
        .ext
        .connect(&format!("{EIP_2}:80"))
        .expect("ext reaches pod-b");
    assert_eq!(c.seen_as, EXT_HOST, "the pod sees the real client");
    assert_eq!(c.echo("hello").expect("echo"), "hello");

    // DNAT: EIP 1 port 8080 is pod-a's port 80, the client address kept.
    let c = t
        .ext
        .connect(&format!("{EIP_1}:8080"))
        .expect("ext reaches pod-a via DNAT");
    assert_eq!(c.seen_as, EXT_HOST);

    // Hairpin: pods reach their VPC's FIP and port forward; the answer comes back through
    // the gateway because the server sees the gateway's LAN address.
    let c = t
        .pod_a
        .connect(&format!("{EIP_2}:80"))
        .expect("pod-a reaches pod-b's FIP");
    assert_eq!(c.seen_as, GW_LAN);
    let c = t
        .pod_b
        .connect(&format!("{EIP_1}:8080"))
        .expect("pod-b reaches the DNAT");
    assert_eq!(c.seen_as, GW_LAN);
    let c = t
        .pod_a
        .connect(&format!("{EIP_1}:8080"))
        .expect("pod-a reaches its own DNAT");
    assert_eq!(c.seen_as, GW_LAN);

    // The table says what it does, with the CRs as comments.
    let text = t.gw.nft_text();
    for needle in [
        "type nat hook prerouting priority dstnat",
        "type nat hook postrouting priority srcnat",
        "ip daddr 172.19.0.11 tcp dport 8080 dnat to 10.100.0.2:80",
        "ip daddr 172.19.0.12 dnat to 10.100.0.3",
        "ip saddr 10.100.0.3 oifname \"ext0\" snat to 172.19.0.12",
        "ip saddr 10.100.0.0/24 oifname \"ext0\" snat to 172.19.0.11",
        "masquerade",
        "comment \"dnat/web\"",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    drop((ext_server, a_server, b_server));
}

#[test]
fn removing_a_port_forward_cuts_its_connections_and_adding_it_back_restores_it() {
    let t = Topology::new();
    let first = plan(&rules(), &interfaces(), None);
    apply_in(&t, &first, true);
    let _a_server = t.pod_a.serve("0.0.0.0:80");
    let _b_server = t.pod_b.serve("0.0.0.0:80");
    let web = format!("{EIP_1}:8080");

    let mut open = t.ext.connect(&web).expect("DNAT works");
    assert_eq!(open.echo("before").expect("echo"), "before");
    let mut fip_conn = t.ext.connect(&format!("{EIP_2}:80")).expect("FIP works");
    let tracked =
        t.gw.conntrack(&["dst=172.19.0.11", "dport=8080", "ESTABLISHED"]);
    assert_eq!(tracked.len(), 1, "the open connection is tracked");

    // Remove the port forward.
    let mut without = rules();
    without.dnats.clear();
    let second = plan(&without, &interfaces(), Some(&first));
    assert_eq!(
        second.conntrack,
        [ConntrackFlush::Port {
            eip: ip(EIP_1),
            protocol: Protocol::Tcp,
            port: 8080
        }]
    );
    let applied = apply_in(&t, &second, false);
    assert!(applied.flushed.deleted >= 1, "{:?}", applied.flushed);
    assert!(
        t.gw.conntrack(&["dst=172.19.0.11", "dport=8080"])
            .is_empty(),
        "the DNAT's conntrack entry is gone"
    );
    assert!(
        t.ext.connect(&web).is_err(),
        "a new connection to the removed port forward fails"
    );
    assert!(
        open.echo("after").is_err(),
        "the open connection no longer reaches the pod"
    );
    assert_eq!(
        fip_conn.echo("untouched").expect("FIP connection survives"),
        "untouched"
    );
    assert!(!t.gw.nft_text().contains("dport 8080"));

    // Add it back.
    let third = plan(&rules(), &interfaces(), Some(&second));
    assert!(third.conntrack.is_empty());
    apply_in(&t, &third, false);
    let mut again = t.ext.connect(&web).expect("the port forward is back");
    assert_eq!(again.seen_as, EXT_HOST);
    assert_eq!(again.echo("back").expect("echo"), "back");
}

#[test]
fn a_thousand_port_forwards_program_in_one_batch_and_reapplying_changes_nothing() {
    let t = Topology::new();
    let mut many = rules();
    many.dnats = (0..1000u16)
        .map(|i| dnat(&format!("d{i}"), EIP_1, 10000 + i, "10.100.0.2:80"))
        .collect();
    let wanted = plan(&many, &interfaces(), None);
    let started = Instant::now();
    let applied = apply_in(&t, &wanted, true);
    eprintln!(
        "1000 DNAT rules: nft batch {} messages, {} bytes, {:?}; whole apply {:?}",
        applied.programmed.messages,
        applied.programmed.bytes,
        applied.programmed.elapsed,
        started.elapsed()
    );
    let rules = t.gw.nft_rules();
    let dnats = rules
        .iter()
        .filter(|r| r["chain"] == "prerouting" && r.to_string().contains("\"dnat\""))
        .count();
    assert_eq!(dnats, 1000 + 1, "1000 port forwards and the FIP");
    assert_eq!(rules.len(), wanted.table.rule_count());
    let _server = t.pod_a.serve("0.0.0.0:80");
    let c = t
        .ext
        .connect(&format!("{EIP_1}:10999"))
        .expect("the last rule works");
    assert_eq!(c.seen_as, EXT_HOST);

    // Applying the same plan again leaves the same table and addresses.
    let before = (t.gw.nft_text(), eips_on_ext(&t));
    let again = apply_in(&t, &wanted, false);
    assert!(again.eips_added.is_empty() && again.eips_removed.is_empty());
    assert_eq!((t.gw.nft_text(), eips_on_ext(&t)), before);

    // Dropping an EIP removes its address (and only /32s: the interface's own stays).
    let mut fewer = many.clone();
    fewer.eips.retain(|e| e.name != "e2");
    fewer.fips.clear();
    let applied = apply_in(&t, &plan(&fewer, &interfaces(), Some(&wanted)), false);
    assert_eq!(applied.eips_removed, [ip(EIP_2)]);
    assert_eq!(eips_on_ext(&t), [EIP_1]);
    let own = t.gw.ip(&["-4", "addr", "show", EXT_IF]);
    assert!(own.contains(&format!("{GW_EXT}/24")), "{own}");
}
