//! The node fabric without an API: real namespaces, real Debian CNI plugins. Pods on two
//! nodes get eth0 from the cluster default network and ping each other; a bridge NAD gives
//! net1; deleting a sandbox releases its host-local addresses and removes its namespace.

use std::path::Path;
use std::process::Command;

use kube_sim::nodes::delegate::{Delegate, PodIdentity};
use kube_sim::nodes::fabric::{Fabric, FabricConfig};
use kube_sim::nodes::node::netns_with_prefix;
use kube_sim::nodes::result::{network_statuses, CniResult};
use kube_sim::nodes::sandbox::Sandbox;
use kube_sim::nodes::selection::parse_networks;

fn ip_netns(netns: &str, args: &[&str]) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", netns])
        .args(args)
        .output()
        .expect("ip")
}

fn pod(name: &str) -> PodIdentity {
    PodIdentity {
        namespace: "default".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
    }
}

const BRIDGE_NAD: &str = r#"{"cniVersion":"0.3.1","type":"bridge","bridge":"blue0",
  "ipam":{"type":"host-local","subnet":"192.168.50.0/24"}}"#;

#[tokio::test]
async fn pods_on_two_nodes_get_eth0_net1_and_ping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fabric = Fabric::up(&FabricConfig::new(2, dir.path()))
        .await
        .expect("fabric up");
    let prefix = fabric.prefix.clone();
    let (n1, n2) = (&fabric.nodes[0], &fabric.nodes[1]);

    let selection = parse_networks("blue", "default").expect("selection");
    let blue = Delegate::for_nad(&selection[0], BRIDGE_NAD, 1).expect("delegate");
    let (a, a_results) = Sandbox::create(
        n1,
        pod("a"),
        vec![fabric.primary_delegate(n1), blue],
        &fabric.pod_netns_prefix(),
        &fabric.plugins,
    )
    .await
    .expect("sandbox a");
    let (b, b_results) = Sandbox::create(
        n2,
        pod("b"),
        vec![fabric.primary_delegate(n2)],
        &fabric.pod_netns_prefix(),
        &fabric.plugins,
    )
    .await
    .expect("sandbox b");

    let a_eth0 = network_statuses(&CniResult::parse(&a_results[0]).expect("result"), "p", true);
    let a_net1 = network_statuses(
        &CniResult::parse(&a_results[1]).expect("result"),
        "default/blue",
        false,
    );
    let b_eth0 = network_statuses(&CniResult::parse(&b_results[0]).expect("result"), "p", true);
    assert_eq!(a_eth0[0].interface, "eth0");
    assert!(a_eth0[0].ips[0].starts_with("10.244.0."), "{a_eth0:?}");
    assert!(b_eth0[0].ips[0].starts_with("10.244.1."), "{b_eth0:?}");
    assert_eq!(a_net1[0].interface, "net1");
    assert!(a_net1[0].ips[0].starts_with("192.168.50."), "{a_net1:?}");

    let links = String::from_utf8(ip_netns(&a.netns, &["ip", "-o", "addr"]).stdout).expect("utf8");
    assert!(
        links.contains(&format!("eth0    inet {}/24", a_eth0[0].ips[0])),
        "{links}"
    );
    assert!(
        links.contains(&format!("net1    inet {}/24", a_net1[0].ips[0])),
        "{links}"
    );

    let ping = ip_netns(&a.netns, &["ping", "-c", "2", "-W", "5", &b_eth0[0].ips[0]]);
    assert!(
        ping.status.success(),
        "pod a → pod b: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
    let ping = ip_netns(&b.netns, &["ping", "-c", "2", "-W", "5", &a_eth0[0].ips[0]]);
    assert!(
        ping.status.success(),
        "pod b → pod a: {}",
        String::from_utf8_lossy(&ping.stdout)
    );

    // host-local keeps one file per address under the node's /var/lib/cni/networks.
    let leases = n1
        .host_path(Path::new("/var/lib/cni/networks/kube-sim-primary"))
        .join(&a_eth0[0].ips[0]);
    assert!(
        leases.exists(),
        "{} should hold a's address",
        leases.display()
    );
    let blue_lease = n1
        .host_path(Path::new("/var/lib/cni/networks/blue"))
        .join(&a_net1[0].ips[0]);
    assert!(blue_lease.exists());

    a.delete(n1, &fabric.plugins).await.expect("delete a");
    assert!(!leases.exists(), "eth0 address released");
    assert!(!blue_lease.exists(), "net1 address released");
    assert!(!Path::new("/run/netns").join(&a.netns).exists());
    assert!(Sandbox::cached(n1).is_empty());
    // DEL again (no namespace any more) still succeeds.
    a.delete(n1, &fabric.plugins).await.expect("delete a twice");

    b.delete(n2, &fabric.plugins).await.expect("delete b");
    fabric.down().await;
    assert!(netns_with_prefix(&prefix).is_empty(), "no namespaces left");
}

#[tokio::test]
async fn failing_delegate_rolls_back_what_was_added() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fabric = Fabric::up(&FabricConfig::new(1, dir.path()))
        .await
        .expect("fabric up");
    let n1 = &fabric.nodes[0];
    let selection = parse_networks("broken", "default").expect("selection");
    let broken = Delegate::for_nad(
        &selection[0],
        r#"{"cniVersion":"1.0.0","type":"no-such-plugin"}"#,
        1,
    )
    .expect("delegate");
    let err = Sandbox::create(
        n1,
        pod("c"),
        vec![fabric.primary_delegate(n1), broken],
        &fabric.pod_netns_prefix(),
        &fabric.plugins,
    )
    .await
    .expect_err("must fail");
    let text = err.to_string();
    assert!(
        text.contains("failed to find plugin \"no-such-plugin\""),
        "{text}"
    );
    let leases = n1.host_path(Path::new("/var/lib/cni/networks/kube-sim-primary"));
    let left: Vec<_> = std::fs::read_dir(&leases)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("10."))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "eth0 address released on rollback: {left:?}"
    );
    assert!(
        netns_with_prefix(&fabric.pod_netns_prefix()).is_empty(),
        "pod namespace removed"
    );
    assert!(Sandbox::cached(n1).is_empty());
    fabric.down().await;
}

#[tokio::test]
async fn default_route_request_moves_the_default_route() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fabric = Fabric::up(&FabricConfig::new(1, dir.path()))
        .await
        .expect("fabric up");
    let n1 = &fabric.nodes[0];
    let selection = parse_networks(
        r#"[{"name":"blue","default-route":["192.168.50.1"]}]"#,
        "default",
    )
    .expect("selection");
    let mut delegates = vec![
        fabric.primary_delegate(n1),
        Delegate::for_nad(&selection[0], BRIDGE_NAD, 1).expect("delegate"),
    ];
    kube_sim::nodes::delegate::apply_gateway_requests(&mut delegates).expect("one gateway");
    let (d, _) = Sandbox::create(
        n1,
        pod("d"),
        delegates,
        &fabric.pod_netns_prefix(),
        &fabric.plugins,
    )
    .await
    .expect("sandbox d");
    let routes = String::from_utf8(ip_netns(&d.netns, &["ip", "route", "show", "default"]).stdout)
        .expect("utf8");
    assert_eq!(
        routes.trim(),
        "default via 192.168.50.1 dev net1",
        "{routes}"
    );
    d.delete(n1, &fabric.plugins).await.expect("delete d");
    fabric.down().await;
}

#[tokio::test]
async fn node_commands_see_node_private_directories_and_netns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fabric = Fabric::up(&FabricConfig::new(2, dir.path()))
        .await
        .expect("fabric up");
    let (n1, n2) = (&fabric.nodes[0], &fabric.nodes[1]);
    let probe = "probe-kube-sim-nodes-test";
    let status = n1
        .command("sh")
        .expect("command")
        .args([
            "-c",
            &format!("echo one > /run/openvswitch/{probe} && echo one > /opt/cni/bin/{probe}"),
        ])
        .status()
        .await
        .expect("sh");
    assert!(status.success());
    assert!(n1
        .host_path(Path::new("/run/openvswitch"))
        .join(probe)
        .exists());
    assert!(n1.host_path(Path::new("/opt/cni/bin")).join(probe).exists());
    assert!(
        !Path::new("/run/openvswitch").join(probe).exists(),
        "host directory untouched"
    );
    // The other node does not see it.
    let other = n2
        .command("test")
        .expect("command")
        .args(["-e", &format!("/run/openvswitch/{probe}")])
        .status()
        .await
        .expect("test");
    assert!(!other.success());
    // And the process runs in the node's network namespace: ul0 carries the node address.
    let out = n2
        .command("ip")
        .expect("command")
        .args(["-o", "-4", "addr", "show", "ul0"])
        .output()
        .await
        .expect("ip");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("inet {}/24", n2.underlay_ip)),
        "{text}"
    );
    fabric.down().await;
}

const MACVLAN_NAD: &str = r#"{"cniVersion":"0.3.1","type":"macvlan","master":"ext0","mode":"bridge",
  "ipam":{"type":"static","addresses":[{"address":"172.18.0.20/24"}]}}"#;

#[tokio::test]
async fn the_external_network_reaches_the_external_host_and_beyond_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = FabricConfig::new(2, dir.path());
    config.external_net = Some("172.18.0.0".parse().unwrap());
    let fabric = Fabric::up(&config).await.expect("fabric up");
    let external = fabric.external.clone().expect("an external network");
    assert_eq!(external.cidr, "172.18.0.0/24");
    assert_eq!(external.router.to_string(), "172.18.0.1");
    for node in &fabric.nodes {
        let out = ip_netns(&node.netns, &["ip", "-o", "link", "show", "ext0"]);
        assert!(out.status.success(), "{} has ext0", node.name);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("UP"), "ext0 is up on {}: {text}", node.name);
    }

    // A pod on node 2 with a macvlan on ext0 (as the NAT gateway's external leg) reaches the
    // router; the address beyond it answers through it.
    let n2 = &fabric.nodes[1];
    let selection = parse_networks("ext", "default").expect("selection");
    let ext = Delegate::for_nad(&selection[0], MACVLAN_NAD, 1).expect("delegate");
    let (gw, _) = Sandbox::create(
        n2,
        pod("gw"),
        vec![fabric.primary_delegate(n2), ext],
        &fabric.pod_netns_prefix(),
        &fabric.plugins,
    )
    .await
    .expect("sandbox gw");
    let ping = |to: String| {
        ip_netns(&gw.netns, &["ping", "-c", "2", "-i", "0.2", "-W", "2", &to])
            .status
            .success()
    };
    assert!(ping(external.router.to_string()), "the router answers");
    let via = external.router.to_string();
    let beyond = format!("{}/32", external.beyond);
    let out = ip_netns(
        &gw.netns,
        &["ip", "route", "add", &beyond, "via", &via, "dev", "net1"],
    );
    assert!(out.status.success(), "route beyond the router");
    assert!(ping(external.beyond.to_string()), "the host beyond answers");
    let out = ip_netns(&external.netns, &["ip", "-4", "-o", "addr"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("198.51.100.1/32"), "{text}");

    gw.delete(n2, &fabric.plugins).await.expect("delete gw");
    let prefix = fabric.prefix.clone();
    fabric.down().await;
    assert!(netns_with_prefix(&format!("{prefix}-")).is_empty());
}
