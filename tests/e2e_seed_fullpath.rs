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

use fullpath_support::Bed;
use operator_support::{nad_yaml, subnet_yaml, vpc_yaml, SEED_NAD, SEED_VPC_SUBNET};

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
