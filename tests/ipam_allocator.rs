//! The pure IPAM allocator: every error, the small and large prefixes, dual
//! stack, excludeIps ranges, pools, MACs, sticky keys, subnet lifecycle,
//! reconcile and usage. No I/O; see ipam_store.rs for the sled side.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;
use kube_ovn::api::mac::MacAddr;
use kube_ovn::api::selection::IpRequest;
use kube_ovn::ipam::{
    gateway_mac, AllocationRequest as Req, Allocator, Family, IpamError, Release, Released,
    Requested, SubnetSpec,
};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test IP")
}

fn net(s: &str) -> IpNet {
    s.parse().expect("test CIDR")
}

/// A static address as the caller hands it: bare or with a prefix.
fn static_ip(s: &str) -> IpRequest {
    s.parse().expect("test static IP")
}

fn mac(s: &str) -> MacAddr {
    s.parse().expect("test MAC")
}

fn with_subnet(spec: SubnetSpec) -> Allocator {
    let mut a = Allocator::new();
    a.add_subnet(spec).expect("valid subnet");
    a
}

fn alloc(a: &mut Allocator, req: Req) -> Vec<IpAddr> {
    let (got, _) = a.allocate(&req).expect("allocation");
    a.check_consistency().expect("consistent");
    got.ips.to_vec()
}

#[test]
fn dynamic_skips_network_gateway_and_broadcast() {
    let mut a = with_subnet(SubnetSpec::new("s", "10.0.0.0/30"));
    // /30: .1 is the gateway, .2 the only usable address, .3 broadcast.
    assert_eq!(
        alloc(&mut a, Req::new("ns/p1/x", "s")),
        vec![ip("10.0.0.2")]
    );
    let err = a.allocate(&Req::new("ns/p2/x", "s")).expect_err("full");
    assert!(
        matches!(&err, IpamError::Full { subnet, .. } if subnet == "s"),
        "{err}"
    );
    assert!(err.to_string().contains("10.0.0.0/30"), "{err}");
}

#[test]
fn slash_31_keeps_both_addresses_and_gateway_takes_one() {
    let mut a = with_subnet(SubnetSpec::new("p2p", "10.0.0.0/31"));
    assert_eq!(
        a.subnet("p2p").expect("defined").gateways,
        vec![Some(ip("10.0.0.0"))]
    );
    assert_eq!(alloc(&mut a, Req::new("k1", "p2p")), vec![ip("10.0.0.1")]);
    assert!(matches!(
        a.allocate(&Req::new("k2", "p2p")),
        Err(IpamError::Full { .. })
    ));
}

#[test]
fn slash_32_has_one_address_and_no_gateway() {
    let mut a = with_subnet(SubnetSpec::new("host", "10.9.9.9/32"));
    assert_eq!(a.subnet("host").expect("defined").gateways, vec![None]);
    assert_eq!(alloc(&mut a, Req::new("k1", "host")), vec![ip("10.9.9.9")]);
    assert!(matches!(
        a.allocate(&Req::new("k2", "host")),
        Err(IpamError::Full { .. })
    ));
    let usage = a.usage("host").expect("usage");
    assert_eq!((usage.total, usage.used, usage.available), (1, 1, 0));
}

#[test]
fn ipv6_slash_64_allocates_and_counts_exactly() {
    let mut a = with_subnet(SubnetSpec::new("v6", "fd00:10::/64"));
    assert_eq!(alloc(&mut a, Req::new("k1", "v6")), vec![ip("fd00:10::2")]);
    assert_eq!(
        alloc(
            &mut a,
            Req::new("k2", "v6").with_ips([static_ip("fd00:10::ffff:0:0:1")])
        ),
        vec![ip("fd00:10::ffff:0:0:1")]
    );
    let usage = a.usage("v6").expect("usage");
    // network and all-ones kept back, gateway ::1 excluded.
    let total = (1u128 << 64) - 3;
    assert_eq!(usage.families[0].total, total);
    assert_eq!(usage.families[0].used, 2);
    assert_eq!(usage.families[0].available, total - 2);
}

#[test]
fn ipv6_slash_120_fills_up() {
    let mut a = with_subnet(SubnetSpec::new("v6", "fd00::/120"));
    let mut seen = HashSet::new();
    for i in 0..253 {
        let ips = alloc(&mut a, Req::new(format!("k{i}"), "v6"));
        assert!(seen.insert(ips[0]), "duplicate {}", ips[0]);
    }
    assert!(
        !seen.contains(&ip("fd00::"))
            && !seen.contains(&ip("fd00::1"))
            && !seen.contains(&ip("fd00::ff"))
    );
    assert!(matches!(
        a.allocate(&Req::new("more", "v6")),
        Err(IpamError::Full { .. })
    ));
}

#[test]
fn dual_stack_gets_one_address_per_family() {
    let mut a = with_subnet(
        SubnetSpec::new("ds", "10.1.0.0/24,fd00:1::/120")
            .with_exclude_ips(["10.1.0.2", "fd00:1::2..fd00:1::4"]),
    );
    assert_eq!(
        alloc(&mut a, Req::new("k1", "ds")),
        vec![ip("10.1.0.3"), ip("fd00:1::5")]
    );
    // A static v6 only: the v4 side is dynamic.
    assert_eq!(
        alloc(
            &mut a,
            Req::new("k2", "ds").with_ips([static_ip("fd00:1::80")])
        ),
        vec![ip("10.1.0.4"), ip("fd00:1::80")]
    );
    let u = a.usage("ds").expect("usage");
    assert_eq!(u.used, 2);
    assert_eq!(u.families[0].total, 252);
    assert_eq!(u.families[1].total, 250);
    assert_eq!(u.available, 248);
}

#[test]
fn exclude_ranges_are_never_handed_out() {
    let mut a = with_subnet(SubnetSpec::new("s", "10.0.0.0/28").with_exclude_ips([
        "10.0.0.2..10.0.0.10",
        "10.0.0.12",
        "192.168.0.0/16",
    ]));
    let mut got = Vec::new();
    while let Ok((al, _)) = a.allocate(&Req::new(format!("k{}", got.len()), "s")) {
        got.push(al.ips[0]);
    }
    assert_eq!(got, vec![ip("10.0.0.11"), ip("10.0.0.13"), ip("10.0.0.14")]);
    let err = a
        .allocate(&Req::new("st", "s").with_ips([static_ip("10.0.0.5")]))
        .expect_err("excluded");
    assert_eq!(
        err,
        IpamError::Excluded {
            subnet: "s".into(),
            ip: ip("10.0.0.5")
        }
    );
    assert!(err.to_string().contains("10.0.0.5") && err.to_string().contains("\"s\""));
}

#[test]
fn static_errors_name_subnet_and_address() {
    let mut a = with_subnet(SubnetSpec::new("s", "10.100.0.0/16"));
    alloc(
        &mut a,
        Req::new("ns/a/p", "s").with_ips([static_ip("10.100.0.100")]),
    );

    let cases: Vec<(Req, IpamError)> = vec![
        (
            Req::new("ns/b/p", "s").with_ips([static_ip("10.100.0.100")]),
            IpamError::HeldBy {
                subnet: "s".into(),
                ip: ip("10.100.0.100"),
                holder: "ns/a/p".into(),
            },
        ),
        (
            Req::new("ns/b/p", "s").with_ips([static_ip("10.100.0.1")]),
            IpamError::IsGateway {
                subnet: "s".into(),
                ip: ip("10.100.0.1"),
            },
        ),
        (
            Req::new("ns/b/p", "s").with_ips([static_ip("10.101.0.5")]),
            IpamError::OutOfRange {
                subnet: "s".into(),
                ip: ip("10.101.0.5"),
                cidr: net("10.100.0.0/16"),
            },
        ),
        (
            Req::new("ns/b/p", "s").with_ips([static_ip("10.100.255.255")]),
            IpamError::OutOfRange {
                subnet: "s".into(),
                ip: ip("10.100.255.255"),
                cidr: net("10.100.0.0/16"),
            },
        ),
        (
            Req::new("ns/b/p", "s").with_ips([static_ip("fd00::5")]),
            IpamError::WrongFamily {
                subnet: "s".into(),
                ip: ip("fd00::5"),
                family: Family::V6,
                cidrs: vec![net("10.100.0.0/16")],
            },
        ),
        (
            Req::new("ns/b/p", "s").with_ips([static_ip("10.100.0.7/24")]),
            IpamError::PrefixMismatch {
                subnet: "s".into(),
                ip: ip("10.100.0.7"),
                given: 24,
                cidr: net("10.100.0.0/16"),
            },
        ),
        (
            Req::new("ns/b/p", "s").with_ips([static_ip("10.100.0.7"), static_ip("10.100.0.8")]),
            IpamError::SecondAddress {
                subnet: "s".into(),
                family: Family::V4,
                first: ip("10.100.0.7"),
                second: ip("10.100.0.8"),
            },
        ),
        (
            Req::new("ns/b/p", "nope"),
            IpamError::UnknownSubnet {
                subnet: "nope".into(),
            },
        ),
        (
            Req::new("ns/b/p", "s").with_pool("nopool"),
            IpamError::UnknownPool {
                subnet: "s".into(),
                pool: "nopool".into(),
            },
        ),
    ];
    for (req, want) in cases {
        let got = a.allocate(&req).expect_err("must be refused");
        assert_eq!(got, want);
        let text = got.to_string();
        assert!(text.contains('"'), "error names its subnet: {text}");
    }
    a.check_consistency().expect("refusals change nothing");
    assert_eq!(a.len(), 1);
}

/// The typed refusals still read as one sentence for a pod Event.
#[test]
fn static_refusals_read_for_an_event() {
    let mut a = with_subnet(SubnetSpec::new("s", "10.100.0.0/16,fd00::/120"));
    let refusal = |a: &mut Allocator, requests: &[&str]| {
        let req = Req::new("k", "s").with_ips(requests.iter().map(|r| static_ip(r)));
        a.allocate(&req).expect_err("refused").to_string()
    };
    assert_eq!(
        refusal(&mut a, &["10.100.0.7/24"]),
        "subnet \"s\": 10.100.0.7/24 has prefix /24 but the subnet is 10.100.0.0/16"
    );
    assert_eq!(
        refusal(&mut a, &["fd00::5", "fd00::6"]),
        "subnet \"s\": fd00::5 and fd00::6 are both IPv6 addresses; at most one per family"
    );
    let mut v4 = with_subnet(SubnetSpec::new("v4", "10.0.0.0/24"));
    let err = v4
        .allocate(&Req::new("k", "v4").with_ips([static_ip("fd00::5")]))
        .expect_err("wrong family");
    assert_eq!(
        err.to_string(),
        "subnet \"v4\": fd00::5 is not an IPv6 address of this subnet (it has 10.0.0.0/24)"
    );
}

#[test]
fn static_cidr_form_with_matching_prefix_is_accepted() {
    let mut a = with_subnet(SubnetSpec::new("s", "10.100.0.0/16"));
    assert_eq!(
        alloc(
            &mut a,
            Req::new("k", "s").with_ips([static_ip("10.100.0.100/16")])
        ),
        vec![ip("10.100.0.100")]
    );
}

#[test]
fn same_key_returns_same_allocation() {
    let mut a = with_subnet(SubnetSpec::new("s", "10.0.0.0/24"));
    let (first, fresh) = a.allocate(&Req::new("ns/p/x", "s")).expect("first");
    assert!(fresh);
    let (again, fresh) = a.allocate(&Req::new("ns/p/x", "s")).expect("again");
    assert!(!fresh);
    assert_eq!(first, again);
    let (with_ip, _) = a
        .allocate(&Req::new("ns/p/x", "s").with_ips([IpRequest {
            address: first.ips[0],
            prefix_len: None,
        }]))
        .expect("same static");
    assert_eq!(with_ip, first);
    let err = a
        .allocate(&Req::new("ns/p/x", "s").with_ips([static_ip("10.0.0.99")]))
        .expect_err("different static");
    assert_eq!(
        err,
        IpamError::KeyMismatch {
            subnet: "s".into(),
            key: "ns/p/x".into(),
            held_subnet: "s".into(),
            held: first.ips.to_vec(),
            requested: Requested::Address(ip("10.0.0.99")),
        }
    );
    let err = a
        .allocate(&Req::new("ns/p/x", "s").with_mac(mac("02:00:00:00:00:01")))
        .expect_err("different MAC");
    assert!(
        matches!(&err, IpamError::KeyMismatch { requested: Requested::Mac(m), .. } if *m == mac("02:00:00:00:00:01")),
        "{err}"
    );
    assert_eq!(a.len(), 1);
}

#[test]
fn released_address_is_not_reused_at_once() {
    let mut a = with_subnet(SubnetSpec::new("s", "10.0.0.0/29"));
    // usable .2 ..= .6, gateway .1
    let (first, _) = a.allocate(&Req::new("k1", "s")).expect("first");
    assert_eq!(
        a.release("k1", Release::PodGone),
        Released::Freed(first.to_allocation())
    );
    let next = alloc(&mut a, Req::new("k2", "s"));
    assert_ne!(
        first.ips.to_vec(),
        next,
        "just-released address handed out again"
    );
    // Only after the cursor wraps around does .2 come back.
    for i in 3..=6 {
        alloc(&mut a, Req::new(format!("k{i}"), "s"));
    }
    assert_eq!(
        a.get("k6").map(|al| al.ips.to_vec()),
        Some(vec![ip("10.0.0.2")])
    );
}

#[test]
fn macs_are_generated_unique_and_validated() {
    let mut a = with_subnet(SubnetSpec::new("s", "10.0.0.0/16"));
    let mut macs = HashSet::new();
    for i in 0..2000 {
        let (al, _) = a.allocate(&Req::new(format!("k{i}"), "s")).expect("alloc");
        assert!(
            al.mac.is_locally_administered() && !al.mac.is_multicast(),
            "{}",
            al.mac
        );
        assert_ne!(al.mac, gateway_mac("s"));
        assert!(macs.insert(al.mac), "duplicate MAC {}", al.mac);
    }
    let (al, _) = a
        .allocate(&Req::new("fixed", "s").with_mac(mac("00:11:22:33:44:55")))
        .expect("requested MAC");
    assert_eq!(al.mac, mac("00:11:22:33:44:55"));

    let bad = |requested: MacAddr| {
        a.clone()
            .allocate(&Req::new("other", "s").with_mac(requested))
            .expect_err("refused MAC")
    };
    for refused in [
        mac("01:00:5e:00:00:01"),
        mac("ff:ff:ff:ff:ff:ff"),
        mac("00:00:00:00:00:00"),
        gateway_mac("s"),
    ] {
        assert!(
            matches!(bad(refused), IpamError::BadMac { mac: m, .. } if m == refused),
            "{refused}"
        );
    }
    assert_eq!(
        bad(mac("00:11:22:33:44:55")),
        IpamError::MacHeldBy {
            subnet: "s".into(),
            mac: MacAddr([0, 0x11, 0x22, 0x33, 0x44, 0x55]),
            holder: "fixed".into()
        }
    );
    let e = bad(mac("01:00:5e:00:00:01"));
    assert!(
        e.to_string().contains("\"s\"") && e.to_string().contains("01:00:5e:00:00:01"),
        "{e}"
    );
}

#[test]
fn a_generated_mac_follows_the_address_unless_that_mac_is_taken() {
    let mut a = with_subnet(SubnetSpec::new("s", "10.0.0.0/24,fd00::/120"));
    // Dual stack: 0a:58 and the IPv4 address.
    let (first, _) = a.allocate(&Req::new("k1", "s")).expect("alloc");
    assert_eq!(first.ips[..], [ip("10.0.0.2"), ip("fd00::2")]);
    assert_eq!(first.mac, mac("0a:58:0a:00:00:02"));
    // A requested MAC that is the next address's: the next one gets a hashed MAC instead.
    let (_, _) = a
        .allocate(&Req::new("fixed", "s").with_mac(mac("0a:58:0a:00:00:04")))
        .expect("requested MAC");
    let (third, _) = a.allocate(&Req::new("k3", "s")).expect("alloc");
    assert_eq!(third.ips[0], ip("10.0.0.4"));
    assert_ne!(third.mac, mac("0a:58:0a:00:00:04"));
    assert!(third.mac.is_locally_administered() && !third.mac.is_multicast());
    // IPv6 only: the low 32 bits of the address.
    let mut b = with_subnet(SubnetSpec::new("v6", "fd00::1:0/112"));
    let (v6, _) = b.allocate(&Req::new("k", "v6")).expect("alloc");
    assert_eq!(v6.ips[..], [ip("fd00::1:2")]);
    assert_eq!(v6.mac, mac("0a:58:00:01:00:02"));
    a.check_consistency().expect("consistent");
}

#[test]
fn pools_serve_only_their_requests() {
    let mut a =
        with_subnet(SubnetSpec::new("s", "10.0.0.0/24").with_pool("sts", ["10.0.0.2..10.0.0.3"]));
    assert_eq!(alloc(&mut a, Req::new("plain", "s")), vec![ip("10.0.0.4")]);
    assert_eq!(
        alloc(&mut a, Req::new("p1", "s").with_pool("sts")),
        vec![ip("10.0.0.2")]
    );
    assert_eq!(
        alloc(&mut a, Req::new("p2", "s").with_pool("sts")),
        vec![ip("10.0.0.3")]
    );
    let err = a
        .allocate(&Req::new("p3", "s").with_pool("sts"))
        .expect_err("pool dry");
    assert!(
        matches!(&err, IpamError::Full { pool: Some(pool), .. } if pool == "sts"),
        "{err}"
    );
    assert!(err.to_string().contains("pool \"sts\""), "{err}");
    let err = a
        .allocate(
            &Req::new("p4", "s")
                .with_pool("sts")
                .with_ips([static_ip("10.0.0.50")]),
        )
        .expect_err("static outside the pool");
    assert_eq!(
        err,
        IpamError::NotInPool {
            subnet: "s".into(),
            pool: "sts".into(),
            ip: ip("10.0.0.50")
        }
    );
}

#[test]
fn sticky_keys_survive_pod_gone_until_claim_release() {
    let mut a = with_subnet(SubnetSpec::new("s", "10.0.0.0/24"));
    let (al, _) = a
        .allocate(&Req::new("ns/web-0/p", "s").sticky(true))
        .expect("alloc");
    assert!(matches!(
        a.release("ns/web-0/p", Release::PodGone),
        Released::KeptSticky(_)
    ));
    let (again, fresh) = a
        .allocate(&Req::new("ns/web-0/p", "s").sticky(true))
        .expect("re-create");
    assert!(!fresh);
    assert_eq!(again.ips, al.ips);
    let report = a.reconcile(&HashSet::new());
    assert_eq!(report.retained_sticky, vec!["ns/web-0/p".to_string()]);
    assert!(report.freed.is_empty());
    assert!(matches!(
        a.release("ns/web-0/p", Release::Claim),
        Released::Freed(_)
    ));
    assert_eq!(a.release("ns/web-0/p", Release::Claim), Released::NotHeld);
    a.check_consistency().expect("consistent");
}

#[test]
fn reconcile_frees_dead_and_reports_missing() {
    let mut a = with_subnet(SubnetSpec::new("s", "10.0.0.0/24"));
    for k in ["a", "b", "c"] {
        alloc(&mut a, Req::new(k, "s"));
    }
    let live: HashSet<String> = ["a", "z"].iter().map(|s| s.to_string()).collect();
    let report = a.reconcile(&live);
    let freed: Vec<&str> = report.freed.iter().map(|f| f.key.as_str()).collect();
    assert_eq!(freed, vec!["b", "c"]);
    assert_eq!(report.missing, vec!["z".to_string()]);
    assert_eq!(a.len(), 1);
    a.check_consistency().expect("consistent");
}

#[test]
fn cidr_change_refused_while_in_use() {
    let mut a = with_subnet(SubnetSpec::new("s", "10.0.0.0/24"));
    alloc(&mut a, Req::new("k", "s"));
    let err = a
        .update_subnet(SubnetSpec::new("s", "10.0.0.0/23"))
        .expect_err("in use");
    assert!(
        matches!(&err, IpamError::InUse { subnet, count: 1, .. } if subnet == "s"),
        "{err}"
    );
    a.release("k", Release::Claim);
    a.update_subnet(SubnetSpec::new("s", "10.0.0.0/23"))
        .expect("free now");
    assert_eq!(
        alloc(&mut a, Req::new("k", "s").with_ips([static_ip("10.0.1.7")])),
        vec![ip("10.0.1.7")]
    );
}

#[test]
fn exclude_change_keeps_allocations_and_reports_conflicts() {
    let mut a = with_subnet(SubnetSpec::new("s", "10.0.0.0/24"));
    alloc(
        &mut a,
        Req::new("k1", "s").with_ips([static_ip("10.0.0.20")]),
    );
    alloc(
        &mut a,
        Req::new("k2", "s").with_ips([static_ip("10.0.0.30")]),
    );
    let change = a
        .update_subnet(
            SubnetSpec::new("s", "10.0.0.0/24").with_exclude_ips(["10.0.0.10..10.0.0.25"]),
        )
        .expect("update");
    assert_eq!(change.conflicts.len(), 1);
    assert_eq!(change.conflicts[0].key, "k1");
    assert_eq!(change.conflicts[0].ip, ip("10.0.0.20"));
    assert_eq!(a.holder("s", &ip("10.0.0.20")), Some("k1"));
    a.check_consistency().expect("consistent");
    // Released, the excluded address does not return to the free list.
    a.release("k1", Release::Claim);
    let err = a
        .allocate(&Req::new("k3", "s").with_ips([static_ip("10.0.0.20")]))
        .expect_err("excluded");
    assert!(matches!(err, IpamError::Excluded { .. }));
    a.check_consistency().expect("consistent");
}

#[test]
fn delete_refused_while_in_use_unless_forced() {
    let mut a = with_subnet(SubnetSpec::new("s", "10.0.0.0/24"));
    alloc(&mut a, Req::new("k", "s"));
    assert!(matches!(
        a.delete_subnet("s", false),
        Err(IpamError::InUse { .. })
    ));
    let freed = a.delete_subnet("s", true).expect("forced");
    assert_eq!(freed.len(), 1);
    assert!(a.is_empty());
    assert!(matches!(
        a.delete_subnet("s", true),
        Err(IpamError::UnknownSubnet { .. })
    ));
}

#[test]
fn restore_resolves_double_claims_for_the_later_write() {
    let mut a = with_subnet(SubnetSpec::new("s", "10.0.0.0/24"));
    let (old, _) = a
        .allocate(&Req::new("old", "s").with_ips([static_ip("10.0.0.9")]))
        .expect("old");
    let old = old.to_allocation();
    let mut newer = old.clone();
    newer.key = "new".into();
    newer.mac = MacAddr([0x0a, 0, 0, 0, 0, 9]);
    let spec = SubnetSpec::new("s", "10.0.0.0/24");
    let (restored, dropped) = Allocator::restore(
        vec![spec],
        vec![(1, old.clone()), (2, newer.clone())],
        vec![],
    );
    assert_eq!(dropped, vec![old]);
    assert_eq!(restored.holder("s", &ip("10.0.0.9")), Some("new"));
    restored.check_consistency().expect("consistent");
}

#[test]
fn restore_parks_allocations_of_unknown_subnets() {
    let mut a = with_subnet(SubnetSpec::new("s", "10.0.0.0/24"));
    let (al, _) = a.allocate(&Req::new("k", "s")).expect("alloc");
    let al = al.to_allocation();
    let (mut restored, dropped) = Allocator::restore(vec![], vec![(0, al.clone())], vec![]);
    assert!(dropped.is_empty());
    assert_eq!(restored.get("k"), Some(&al));
    restored
        .add_subnet(SubnetSpec::new("s", "10.0.0.0/24"))
        .expect("re-add");
    assert_eq!(restored.holder("s", &al.ips[0]), Some("k"));
    restored.check_consistency().expect("consistent");
}
