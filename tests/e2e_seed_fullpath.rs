//! The whole path on the real test bed, two nodes: the seed's NAD, Vpc and
//! Subnet and its tenants' networks applied to kube-sim; `kube-ovn operator`
//! allocates and writes annotations and ports; `kube-ovn node` runs in each
//! sandbox node; the installed `kube-ovn` plugin is exec'd Multus-style for
//! net1; OVN forwards. Pods of one VPC reach each other across nodes,
//! tenants in different VPCs do not.
//!
//! The Multus step is node_support's exec of the plugin (the same one the
//! node-role tests use), not kube-sim's kubelet emulation.

mod fullpath_support;
mod node_support;
mod operator_support;
mod support;

use std::time::{Duration, Instant};

use fullpath_support::Bed;
use node_support::PodNetns;
use operator_support::{nad_yaml, subnet_yaml, vpc_yaml, SEED_NAD, SEED_VPC_SUBNET};
use serde_json::Value;

#[test]
fn seed_pods_get_net1_and_ping_within_a_vpc_across_nodes_but_not_across_tenants() {
    let bed = Bed::up();
    bed.apply(SEED_NAD);
    bed.apply(SEED_VPC_SUBNET);
    for t in ["a", "b"] {
        bed.apply(&nad_yaml(&format!("tenant-{t}-network")));
        bed.apply(&vpc_yaml(&format!("vpc-tenant-{t}")));
    }
    bed.apply(&subnet_yaml(
        "tenant-a",
        "vpc-tenant-a",
        "10.10.0.0/24",
        "tenant-a-network.default.ovn",
    ));
    bed.apply(&subnet_yaml(
        "tenant-b",
        "vpc-tenant-b",
        "10.20.0.0/24",
        "tenant-b-network.default.ovn",
    ));

    let seed = "kube-ovn-vpc-network.default.ovn";
    let (p1, ip1) = bed.pod(1, "multi-network-pod", "default/kube-ovn-vpc-network", seed);
    assert!(ip1.starts_with("10.100."), "{ip1}");
    let net1 = p1.ip(&["addr", "show", "net1"]);
    assert!(net1.contains(&format!("{ip1}/16")), "{net1}");
    let (_p2, ip2) = bed.pod(2, "peer-pod", "default/kube-ovn-vpc-network", seed);
    assert!(
        bed.sandbox.ping(&p1.name, &ip2),
        "seed pods across nodes cannot ping"
    );

    let (a1, _) = bed.pod(
        1,
        "tenant-a-app",
        "default/tenant-a-network",
        "tenant-a-network.default.ovn",
    );
    let (_a2, a2_ip) = bed.pod(
        2,
        "tenant-a-2",
        "default/tenant-a-network",
        "tenant-a-network.default.ovn",
    );
    let (_b1, b1_ip) = bed.pod(
        2,
        "tenant-b-app",
        "default/tenant-b-network",
        "tenant-b-network.default.ovn",
    );
    assert!(
        bed.sandbox.ping(&a1.name, &a2_ip),
        "tenant A pods cannot reach each other"
    );
    assert!(
        !bed.sandbox.ping(&a1.name, &b1_ip),
        "tenant A reached tenant B"
    );
    assert!(
        !bed.sandbox.ping(&a1.name, &ip2),
        "tenant A reached the seed VPC"
    );
}

/// `ip -j link show IFACE` in `pod`: the MTU.
fn mtu_of(pod: &PodNetns, iface: &str) -> u64 {
    pod.ip_json(&["link", "show", iface])[0]["mtu"]
        .as_u64()
        .unwrap()
}

#[test]
fn dual_stack_subnets_route_v4_and_v6_across_nodes_with_the_subnet_mtu() {
    let bed = Bed::up();
    bed.apply(&vpc_yaml("vpc-dual"));
    for (net, subnet, cidr, mtu) in [
        (
            "dual-a",
            "dual-a",
            "10.30.0.0/24,fd00:30::/64",
            "  mtu: 1300\n",
        ),
        ("dual-b", "dual-b", "10.31.0.0/24,fd00:31::/64", ""),
    ] {
        bed.apply(&nad_yaml(net));
        bed.apply(&format!(
            "{}{mtu}",
            subnet_yaml(subnet, "vpc-dual", cidr, &format!("{net}.default.ovn"))
        ));
    }
    // The router port of each subnet carries both gateways.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let networks = bed.sandbox.nbctl(&[
            "--if-exists",
            "get",
            "Logical_Router_Port",
            "vpc-dual-dual-a",
            "networks",
        ]);
        if networks.trim() == r#"["10.30.0.1/24", "fd00:30::1/64"]"# {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "router port networks: {networks}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let route = |net: &str| format!("{net}.default.ovn.kubernetes.io/default_route");
    let (a, a_ips) = bed.pod_with(
        1,
        "dual-a-1",
        "default/dual-a",
        "dual-a.default.ovn",
        &[(&route("dual-a"), "true")],
    );
    let (b, b_ips) = bed.pod_with(
        2,
        "dual-b-2",
        "default/dual-b",
        "dual-b.default.ovn",
        &[(&route("dual-b"), "true")],
    );
    let (a_v4, a_v6) = a_ips.split_once(',').expect("two addresses");
    let (b_v4, b_v6) = b_ips.split_once(',').expect("two addresses");
    assert!(
        a_v4.starts_with("10.30.0.") && a_v6.starts_with("fd00:30::"),
        "{a_ips}"
    );
    assert!(
        b_v4.starts_with("10.31.0.") && b_v6.starts_with("fd00:31::"),
        "{b_ips}"
    );

    // Both addresses and both default routes in the pod; the subnet's MTU on net1; the
    // subnet without one gets the node's: br-phy's 1500 minus Geneve's 100.
    let addrs = a.ip(&["addr", "show", "net1"]);
    assert!(
        addrs.contains(&format!("{a_v4}/24")) && addrs.contains(&format!("{a_v6}/64")),
        "{addrs}"
    );
    // No DAD on the allocated address (the kernel's link-local may still be tentative).
    let v6_line = addrs.lines().find(|l| l.contains(a_v6)).unwrap();
    assert!(!v6_line.contains("tentative"), "{addrs}");
    let v4_routes = a.ip(&["-4", "route", "show", "default"]);
    let v6_routes = a.ip(&["-6", "route", "show", "default"]);
    assert!(v4_routes.contains("via 10.30.0.1 dev net1"), "{v4_routes}");
    assert!(v6_routes.contains("via fd00:30::1 dev net1"), "{v6_routes}");
    assert_eq!(mtu_of(&a, "net1"), 1300);
    assert_eq!(mtu_of(&b, "net1"), 1400);
    let phy = bed.sandbox.exec_in(
        &bed.sandbox.node_netns(2),
        &["ip", "-j", "link", "show", "br-phy"],
    );
    let phy: Value = serde_json::from_slice(&phy.stdout).unwrap();
    assert_eq!(phy[0]["mtu"].as_u64(), Some(1500));

    // Through the VPC's router, across nodes, both families.
    assert!(
        bed.sandbox.ping(&a.name, b_v4),
        "IPv4 across nodes and subnets"
    );
    assert!(
        bed.sandbox.ping(&a.name, b_v6),
        "IPv6 across nodes and subnets"
    );
    // A full-size packet at the subnet MTU crosses the tunnel (no fragmentation on the
    // userspace datapath): 1300 - 20 (IPv4) - 8 (ICMP) and 1300 - 40 (IPv6) - 8.
    for (size, ip) in [("1272", b_v4), ("1252", b_v6)] {
        let out = bed.sandbox.exec_in(
            &a.name,
            &["ping", "-c", "2", "-W", "2", "-M", "do", "-s", size, ip],
        );
        assert!(
            out.status.success(),
            "{size}-byte ping to {ip}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}
