//! The sled-backed `Ipam`: what was acknowledged survives a reopen, the
//! reloaded allocator equals the one in memory, and concurrent callers
//! sharing group commits never get the same address.

use std::collections::HashSet;
use std::sync::Arc;

use kube_ovn::api::mac::MacAddr;
use kube_ovn::api::selection::IpRequest;
use kube_ovn::ipam::{
    AllocationRequest as Req, CommitMode, Ipam, IpamError, Release, Released, SubnetSpec,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

#[test]
fn reopen_restores_exactly_what_was_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ipam");
    let rt = runtime();
    let before = rt.block_on(async {
        let ipam = Ipam::open(&path).expect("open");
        ipam.add_subnet(
            SubnetSpec::new("ds", "10.1.0.0/24,fd00:1::/64")
                .with_exclude_ips(["10.1.0.2..10.1.0.9"])
                .with_pool(
                    "sts",
                    ["10.1.0.200..10.1.0.210", "fd00:1::200..fd00:1::210"],
                ),
        )
        .await
        .expect("subnet");
        ipam.add_subnet(SubnetSpec::new("v6", "fd00:2::/120"))
            .await
            .expect("subnet");
        for i in 0..20 {
            ipam.allocate(&Req::new(format!("ns/p{i}/x"), "ds"))
                .await
                .expect("alloc");
        }
        ipam.allocate(&Req::new("ns/web-0/x", "ds").with_pool("sts").sticky(true))
            .await
            .expect("pool alloc");
        ipam.allocate(
            &Req::new("ns/s/x", "v6")
                .with_ips(["fd00:2::77/120".parse::<IpRequest>().expect("static IP")])
                .with_mac(MacAddr([2, 0, 0, 0, 0, 1])),
        )
        .await
        .expect("static");
        for i in 0..5 {
            let r = ipam
                .release(&format!("ns/p{i}/x"), Release::PodGone)
                .await
                .expect("release");
            assert!(matches!(r, Released::Freed(_)));
        }
        ipam.read(|a| a.check_consistency()).expect("consistent");
        ipam.read(|a| a.clone())
    });
    let ipam = Ipam::open(&path).expect("reopen");
    let after = ipam.read(|a| a.clone());
    assert_eq!(
        after, before,
        "reloaded allocator differs from the one in memory"
    );
    after.check_consistency().expect("consistent after reload");
    assert_eq!(ipam.open_report().allocations, 17);
    assert!(ipam.get("ns/p0/x").is_none());
    assert_eq!(
        ipam.get("ns/s/x").map(|a| a.mac),
        Some(MacAddr([2, 0, 0, 0, 0, 1]))
    );
    assert_eq!(ipam.usage("ds").expect("usage").used, 16);
    // The cursor survived: the next dynamic address continues after the last.
    let next = rt
        .block_on(ipam.allocate(&Req::new("ns/next/x", "ds")))
        .expect("alloc after reload");
    assert_eq!(next.ips[0].to_string(), "10.1.0.30");
}

#[test]
fn subnet_lifecycle_and_reconcile_persist() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ipam");
    let rt = runtime();
    rt.block_on(async {
        let ipam = Ipam::open(&path).expect("open");
        ipam.add_subnet(SubnetSpec::new("a", "10.0.0.0/24"))
            .await
            .expect("a");
        ipam.add_subnet(SubnetSpec::new("b", "10.0.1.0/24"))
            .await
            .expect("b");
        for k in ["k1", "k2", "k3"] {
            ipam.allocate(&Req::new(k, "a")).await.expect("alloc");
        }
        ipam.allocate(&Req::new("kb", "b")).await.expect("alloc b");
        let err = ipam.delete_subnet("b", false).await.expect_err("in use");
        assert!(matches!(err, IpamError::InUse { .. }), "{err}");
        assert_eq!(
            ipam.delete_subnet("b", true).await.expect("forced").len(),
            1
        );
        let live: HashSet<String> = ["k1", "gone"].iter().map(|s| s.to_string()).collect();
        let report = ipam.reconcile(&live).await.expect("reconcile");
        assert_eq!(report.freed.len(), 2);
        assert_eq!(report.missing, vec!["gone".to_string()]);
        let change = ipam
            .update_subnet(SubnetSpec::new("a", "10.0.0.0/24").with_exclude_ips(["10.0.0.0/28"]))
            .await
            .expect("update");
        assert_eq!(change.conflicts.len(), 1, "k1 sits on 10.0.0.2");
    });
    let ipam = Ipam::open(&path).expect("reopen");
    assert!(ipam.subnet("b").is_none());
    assert_eq!(
        ipam.subnet("a").expect("a").spec.exclude_ips,
        vec!["10.0.0.0/28".to_string()]
    );
    let keys: Vec<String> = ipam.read(|a| a.allocations().map(|x| x.key.clone()).collect());
    assert_eq!(keys, vec!["k1".to_string()]);
    ipam.read(|a| a.check_consistency()).expect("consistent");
}

fn concurrent_callers_get_distinct_addresses(mode: CommitMode) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ipam");
    let rt = runtime();
    let acked: Vec<(String, String)> = rt.block_on(async {
        let ipam = Arc::new(Ipam::open_with(&path, mode).expect("open"));
        ipam.add_subnet(SubnetSpec::new("s", "10.2.0.0/22"))
            .await
            .expect("subnet");
        let mut tasks = Vec::new();
        for t in 0..64 {
            let ipam = ipam.clone();
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                for i in 0..15 {
                    let key = format!("ns/p{t}-{i}/x");
                    let a = ipam.allocate(&Req::new(&key, "s")).await.expect("alloc");
                    // The same key again, concurrently with others: same answer.
                    let again = ipam.allocate(&Req::new(&key, "s")).await.expect("again");
                    assert_eq!(a, again);
                    got.push((key, a.ip_annotation()));
                }
                got
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("task"));
        }
        all
    });
    let ips: HashSet<&String> = acked.iter().map(|(_, ip)| ip).collect();
    assert_eq!(ips.len(), 64 * 15, "an address was handed out twice");
    let ipam = Ipam::open(&path).expect("reopen");
    for (key, ip) in &acked {
        assert_eq!(
            ipam.get(key).map(|a| a.ip_annotation()).as_ref(),
            Some(ip),
            "{key} lost"
        );
    }
    ipam.read(|a| a.check_consistency()).expect("consistent");
}

#[test]
fn concurrent_callers_with_group_commit() {
    concurrent_callers_get_distinct_addresses(CommitMode::Group);
}

#[test]
fn concurrent_callers_with_flush_per_change() {
    concurrent_callers_get_distinct_addresses(CommitMode::FlushEach);
}
