//! The node role's netlink layer against the real kernel: a veth built straight into a netns
//! made with `ip netns add`, read back both with our `inspect` and with `ip`/`ethtool`.

mod cni_support;

use std::path::PathBuf;
use std::time::Instant;

use cni_support::{host_link_exists, tool as run, Netns};

use kube_ovn::cni::protocol::RouteConfig;
use kube_ovn::node::attachment::{host_veth_name, VethPlan};
use kube_ovn::node::netlink::{inspect, Netlink};

fn plan(ns: &Netns, cid: &str) -> VethPlan {
    VethPlan {
        host_name: host_veth_name(cid, "net1"),
        pod_netns: ns.path(),
        pod_ifname: "net1".into(),
        mac: "0a:58:0a:4d:00:05".parse().expect("mac"),
        mtu: 1400,
        addresses: vec![
            "10.77.0.5/24".parse().expect("v4"),
            "fd00:77::5/64".parse().expect("v6"),
        ],
        routes: vec![
            RouteConfig {
                dst: "10.78.0.0/16".parse().expect("dst"),
                gw: Some("10.77.0.1".parse().expect("gw")),
            },
            RouteConfig {
                dst: "fd00:78::/64".parse().expect("dst"),
                gw: Some("fd00:77::1".parse().expect("gw")),
            },
        ],
        tx_checksum_off: true,
    }
}

#[tokio::test]
async fn veth_is_built_in_the_pod_netns_read_back_and_deleted_idempotently() {
    let ns = Netns::new("build");
    let cid = format!("a{:07x}feedbeef", std::process::id());
    let plan = plan(&ns, &cid);
    let nl = Netlink::new().expect("netlink");

    let started = Instant::now();
    nl.create_veth_in_netns(&plan).await.expect("create veth");
    eprintln!("create_veth_in_netns took {:?}", started.elapsed());

    // The host end is here, the pod end only there.
    assert!(host_link_exists(&plan.host_name));
    let link = ns.ip(&["-j", "link", "show", "net1"]);
    let link: serde_json::Value = serde_json::from_str(&link).expect("ip -j link");
    assert_eq!(link[0]["address"], "0a:58:0a:4d:00:05");
    assert_eq!(link[0]["mtu"], 1400);
    assert!(link[0]["flags"]
        .as_array()
        .expect("flags")
        .iter()
        .any(|f| f == "UP"));

    let state = inspect(&ns.path(), "net1")
        .await
        .expect("inspect")
        .expect("net1 exists");
    assert_eq!(state.mac, plan.mac);
    assert_eq!(state.mtu, 1400);
    assert!(state.up);
    let mut addrs = state.addresses.clone();
    addrs.sort();
    assert_eq!(addrs, plan.addresses);
    let mut want_routes = plan.routes.clone();
    want_routes.sort();
    assert_eq!(
        state.routes, want_routes,
        "exactly the planned routes, no default route"
    );
    let v4_routes = ns.ip(&["route", "show", "default"]);
    assert!(
        v4_routes.trim().is_empty(),
        "unexpected default route: {v4_routes}"
    );

    // tx checksumming is off on both ends.
    let pod_k = run("ip", &["netns", "exec", &ns.name, "ethtool", "-k", "net1"]);
    assert!(pod_k.contains("tx-checksumming: off"), "{pod_k}");
    let host_k = run("ethtool", &["-k", &plan.host_name]);
    assert!(host_k.contains("tx-checksumming: off"), "{host_k}");

    // The host end (a switch port) has no IPv6: no link-local address, nothing it would send.
    let host_v6 = run("ip", &["-6", "addr", "show", "dev", &plan.host_name]);
    assert!(host_v6.trim().is_empty(), "IPv6 on the host end: {host_v6}");
    let disabled = std::fs::read_to_string(format!(
        "/proc/sys/net/ipv6/conf/{}/disable_ipv6",
        plan.host_name
    ))
    .expect("the host end's IPv6 sysctl");
    assert_eq!(disabled.trim(), "1");

    // ADD again (a runtime retry) rebuilds the same thing.
    nl.create_veth_in_netns(&plan).await.expect("create again");
    assert_eq!(
        inspect(&ns.path(), "net1")
            .await
            .expect("inspect")
            .expect("net1")
            .addresses
            .len(),
        2
    );

    let started = Instant::now();
    assert!(nl.delete_link(&plan.host_name).await.expect("delete"));
    eprintln!("delete_link took {:?}", started.elapsed());
    assert!(
        !nl.delete_link(&plan.host_name).await.expect("delete again"),
        "second delete finds nothing"
    );
    assert!(!host_link_exists(&plan.host_name));
    assert_eq!(inspect(&ns.path(), "net1").await.expect("inspect"), None);
}

#[tokio::test]
async fn an_ipv4_only_pod_interface_has_no_ipv6_and_a_dual_stack_one_keeps_it() {
    let nl = Netlink::new().expect("netlink");

    // IPv4 only: no link-local address, so nothing IPv6 is ever sent from it.
    let ns4 = Netns::new("v4only");
    let mut v4 = plan(&ns4, &format!("b{:07x}feedbeef", std::process::id()));
    v4.addresses.retain(|a| a.addr().is_ipv4());
    v4.routes.retain(|r| r.dst.addr().is_ipv4());
    nl.create_veth_in_netns(&v4)
        .await
        .expect("create v4-only veth");
    let v6 = ns4.ip(&["-6", "addr", "show", "dev", "net1"]);
    assert!(v6.trim().is_empty(), "IPv6 on an IPv4-only net1: {v6}");
    let detail = ns4.ip(&["-d", "link", "show", "net1"]);
    assert!(detail.contains("addrgenmode none"), "{detail}");
    let state = inspect(&ns4.path(), "net1")
        .await
        .expect("inspect")
        .expect("net1");
    assert!(state.up);
    assert_eq!(state.addresses, v4.addresses);

    // Dual stack: IPv6 as the kernel makes it (a link-local address beside ours).
    let ns6 = Netns::new("dual");
    let dual = plan(&ns6, &format!("c{:07x}feedbeef", std::process::id()));
    nl.create_veth_in_netns(&dual)
        .await
        .expect("create dual-stack veth");
    let v6 = ns6.ip(&["-6", "addr", "show", "dev", "net1"]);
    assert!(
        v6.contains("fe80::"),
        "no link-local on a dual-stack net1: {v6}"
    );
    assert!(v6.contains("fd00:77::5/64"), "{v6}");

    for p in [&v4, &dual] {
        assert!(nl.delete_link(&p.host_name).await.expect("delete"));
    }
}

#[tokio::test]
async fn a_gone_netns_is_reported_as_such_and_nothing_is_created() {
    let ns = Netns::new("gone");
    let mut plan = plan(&ns, "0123456789abcdef");
    plan.host_name = host_veth_name("gone0123456789", "net1");
    plan.pod_netns = PathBuf::from("/var/run/netns/does-not-exist-kube-ovn");
    let nl = Netlink::new().expect("netlink");
    let err = nl.create_veth_in_netns(&plan).await.expect_err("no netns");
    assert!(err.is_netns_gone(), "{err}");
    assert_eq!(err.to_cni().code, 3);
    assert!(err.to_string().contains("does-not-exist-kube-ovn"), "{err}");
    assert!(!host_link_exists(&plan.host_name));
    assert!(inspect(&plan.pod_netns, "net1")
        .await
        .expect_err("no netns")
        .is_netns_gone());
}

#[tokio::test]
async fn a_taken_ifname_in_the_pod_fails_and_leaves_no_host_end() {
    let ns = Netns::new("taken");
    ns.ip(&[
        "link", "add", "net1", "type", "veth", "peer", "name", "other",
    ]);
    let plan = plan(&ns, &format!("c{:07x}0badf00d", std::process::id()));
    let nl = Netlink::new().expect("netlink");
    let err = nl
        .create_veth_in_netns(&plan)
        .await
        .expect_err("name taken");
    assert!(err.to_string().contains("net1"), "{err}");
    assert!(!host_link_exists(&plan.host_name));
}

#[tokio::test]
async fn pod_egress_shaping_is_a_tbf_on_the_pod_end_set_changed_and_removed() {
    use kube_ovn::node::netlink::{pod_egress_limit, set_pod_egress_limit};
    let ns = Netns::new("tbf");
    ns.ip(&[
        "link", "add", "net1", "type", "veth", "peer", "name", "net1p",
    ]);
    ns.ip(&["link", "set", "net1", "up"]);

    set_pod_egress_limit(&ns.path(), "net1", Some(10))
        .await
        .expect("shape");
    let shown = run("tc", &["-n", &ns.name, "qdisc", "show", "dev", "net1"]);
    assert!(
        shown.contains("tbf") && shown.contains("rate 10Mbit"),
        "{shown}"
    );
    assert_eq!(
        pod_egress_limit(&ns.path(), "net1").await.expect("read"),
        Some(10)
    );

    set_pod_egress_limit(&ns.path(), "net1", Some(250))
        .await
        .expect("reshape");
    let shown = run("tc", &["-n", &ns.name, "qdisc", "show", "dev", "net1"]);
    assert!(shown.contains("rate 250Mbit"), "{shown}");

    for _ in 0..2 {
        set_pod_egress_limit(&ns.path(), "net1", None)
            .await
            .expect("lift, twice");
    }
    let shown = run("tc", &["-n", &ns.name, "qdisc", "show", "dev", "net1"]);
    assert!(!shown.contains("tbf"), "{shown}");
    assert_eq!(
        pod_egress_limit(&ns.path(), "net1").await.expect("read"),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deletes_each_remove_their_veth_and_repeat_as_absent() {
    let nl = std::sync::Arc::new(Netlink::new().expect("netlink"));
    let pods: Vec<Netns> = (0..8).map(|i| Netns::new(&format!("del{i}"))).collect();
    let mut plans = Vec::new();
    for (i, ns) in pods.iter().enumerate() {
        let p = plan(ns, &format!("d{i}{:07x}deadbeef", std::process::id()));
        nl.create_veth_in_netns(&p).await.expect("create veth");
        plans.push(p);
    }
    let delete_all = |expect: bool| {
        let handles: Vec<_> = plans
            .iter()
            .map(|p| {
                let nl = nl.clone();
                let host = p.host_name.clone();
                tokio::spawn(async move { (nl.delete_link(&host).await.expect("delete"), host) })
            })
            .collect();
        async move {
            for h in handles {
                let (deleted, host) = h.await.expect("join");
                assert_eq!(deleted, expect, "delete {host}");
                assert!(!host_link_exists(&host), "{host} gone");
            }
        }
    };
    delete_all(true).await;
    delete_all(false).await;
    for ns in &pods {
        assert!(
            !ns.ip(&["-o", "link"]).contains("net1"),
            "the pod end went too"
        );
    }
}
