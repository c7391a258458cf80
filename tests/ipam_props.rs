//! Property test: random interleavings of dynamic and static allocations,
//! releases (pod gone and claim), reconciles and subnet updates against the
//! sled-backed `Ipam`, reopened after every step. Checked after each step:
//! no address or MAC held twice, nothing acknowledged is lost and nothing
//! unacknowledged appears (against a model), the indexes agree, and the
//! allocator reloaded from sled equals the one that was in memory.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use kube_ovn::api::mac::MacAddr;
use kube_ovn::api::selection::IpRequest;
use kube_ovn::ipam::{
    Allocation, AllocationRequest as Req, Allocator, Ipam, Release, Released, SubnetSpec,
};
use proptest::prelude::*;

const KEYS: usize = 14;

#[derive(Clone, Debug)]
enum Op {
    Allocate {
        key: usize,
        subnet: usize,
        static_offset: Option<u8>,
        pool: bool,
        sticky: bool,
        mac: Option<u8>,
    },
    Release {
        key: usize,
        claim: bool,
    },
    Reconcile {
        live: u16,
    },
    Exclude {
        subnet: usize,
        start: u8,
        len: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..KEYS, 0..2usize, proptest::option::weighted(0.3, 0u8..18), any::<bool>(), proptest::bool::weighted(0.2), proptest::option::weighted(0.15, 1u8..6))
            .prop_map(|(key, subnet, static_offset, pool, sticky, mac)| Op::Allocate { key, subnet, static_offset, pool, sticky, mac }),
        3 => (0..KEYS, proptest::bool::weighted(0.3)).prop_map(|(key, claim)| Op::Release { key, claim }),
        1 => any::<u16>().prop_map(|live| Op::Reconcile { live }),
        1 => (0..2usize, 0u8..16, 0u8..4).prop_map(|(subnet, start, len)| Op::Exclude { subnet, start, len }),
    ]
}

const SUBNETS: [&str; 2] = ["v4", "ds"];

fn spec(subnet: usize, exclude: Option<(u8, u8)>) -> SubnetSpec {
    let (spec, v4base) = match subnet {
        0 => (
            SubnetSpec::new("v4", "10.0.0.0/28").with_pool("p", ["10.0.0.12..10.0.0.14"]),
            "10.0.0.",
        ),
        _ => (
            SubnetSpec::new("ds", "10.1.0.0/28,fd00::/124").with_pool("p", ["fd00::a..fd00::c"]),
            "10.1.0.",
        ),
    };
    match exclude {
        Some((start, len)) => spec.with_exclude_ips([format!(
            "{v4base}{start}..{v4base}{}",
            start.saturating_add(len).min(15)
        )]),
        None => spec,
    }
}

fn key(i: usize) -> String {
    format!("ns/pod-{i}/net1.ns.ovn")
}

/// Every address and MAC at most once per subnet, across all allocations.
fn assert_no_duplicates(allocs: &[Allocation]) {
    let mut ips: HashMap<(&str, IpAddr), &str> = HashMap::new();
    let mut macs: HashMap<(&str, MacAddr), &str> = HashMap::new();
    for a in allocs {
        for ip in &a.ips {
            if let Some(other) = ips.insert((&a.subnet, *ip), &a.key) {
                panic!("{ip} held by {other} and {}", a.key);
            }
        }
        if let Some(other) = macs.insert((&a.subnet, a.mac), &a.key) {
            panic!("MAC {} held by {other} and {}", a.mac, a.key);
        }
    }
}

fn snapshot(a: &Allocator) -> BTreeMap<String, Allocation> {
    a.allocations()
        .map(|x| (x.key.clone(), x.clone()))
        .collect()
}

fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ipam");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut model: BTreeMap<String, Allocation> = BTreeMap::new();
    let mut ipam = Ipam::open(&path).expect("open");
    for s in 0..SUBNETS.len() {
        rt.block_on(ipam.add_subnet(spec(s, None))).expect("subnet");
    }
    for op in ops {
        match op.clone() {
            Op::Allocate {
                key: k,
                subnet,
                static_offset,
                pool,
                sticky,
                mac,
            } => {
                let mut req = Req::new(key(k), SUBNETS[subnet]).sticky(sticky);
                if let Some(off) = static_offset {
                    let address = IpAddr::from([10, subnet as u8, 0, off]);
                    req = req.with_ips([IpRequest {
                        address,
                        prefix_len: None,
                    }]);
                }
                if pool {
                    req = req.with_pool("p");
                }
                if let Some(m) = mac {
                    req = req.with_mac(MacAddr([2, 0, 0, 0, 0, m]));
                }
                if let Ok(got) = rt.block_on(ipam.allocate(&req)) {
                    let got = got.to_allocation();
                    if let Some(prev) = model.get(&key(k)) {
                        assert_eq!(prev, &got, "same key answered differently");
                    }
                    model.insert(key(k), got);
                }
            }
            Op::Release { key: k, claim } => {
                let why = if claim {
                    Release::Claim
                } else {
                    Release::PodGone
                };
                match rt.block_on(ipam.release(&key(k), why)).expect("release") {
                    Released::Freed(a) => {
                        assert_eq!(model.remove(&key(k)).as_ref(), Some(&a));
                        assert!(claim || !a.sticky, "sticky freed on pod gone");
                    }
                    Released::KeptSticky(a) => {
                        assert!(!claim && a.sticky);
                        assert_eq!(model.get(&key(k)), Some(&a));
                    }
                    Released::NotHeld => assert!(!model.contains_key(&key(k))),
                }
            }
            Op::Reconcile { live } => {
                let live: HashSet<String> = (0..KEYS)
                    .filter(|i| live & (1 << i) != 0)
                    .map(key)
                    .collect();
                let report = rt.block_on(ipam.reconcile(&live)).expect("reconcile");
                for f in &report.freed {
                    assert!(!live.contains(&f.key) && !f.sticky);
                    assert_eq!(model.remove(&f.key).as_ref(), Some(f));
                }
                for m in &report.missing {
                    assert!(live.contains(m) && !model.contains_key(m));
                }
                for (k, a) in &model {
                    assert!(live.contains(k) || a.sticky, "{k} survived reconcile");
                }
            }
            Op::Exclude { subnet, start, len } => {
                let change = rt
                    .block_on(ipam.update_subnet(spec(subnet, Some((start, len)))))
                    .expect("exclude change is always accepted");
                for c in &change.conflicts {
                    assert!(model.contains_key(&c.key), "conflict names a held key");
                }
            }
        }

        let in_memory = ipam.read(|a| a.clone());
        in_memory
            .check_consistency()
            .unwrap_or_else(|e| panic!("after {op:?}: {e}"));
        assert_eq!(
            snapshot(&in_memory),
            model,
            "after {op:?}: allocations differ from acknowledged"
        );
        let all: Vec<Allocation> = model.values().cloned().collect();
        assert_no_duplicates(&all);

        drop(ipam);
        ipam = Ipam::open(&path).expect("reopen");
        let reloaded = ipam.read(|a| a.clone());
        assert!(
            ipam.open_report().dropped.is_empty(),
            "clean close dropped records"
        );
        assert_eq!(reloaded, in_memory, "after {op:?}: reloaded state differs");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn interleavings_never_duplicate_or_lose(ops in proptest::collection::vec(op(), 1..40)) {
        run(ops);
    }
}
