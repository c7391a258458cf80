//! The node role on the real test bed: `kube-ovn node --ovs external` inside a sandbox node's
//! netns, pod annotations written through kube-sim's API server with the real kube client,
//! the installed `kube-ovn` plugin exec'd Multus-style, OVN doing the forwarding. The test
//! stands in for the operator: it writes the allocation annotations and creates the logical
//! switch ports with `ovn-nbctl`.

mod node_support;
mod support;

use std::collections::BTreeMap;
use std::path::Path;

use kube_ovn::node::netlink::host_veth_name;
use node_support::*;
use serde_json::{json, Value};
use support::OvnSandbox;

const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

struct Bed {
    sandbox: OvnSandbox,
    kube: Kube,
    dir: tempfile::TempDir,
    nodes: Vec<NodeDaemon>,
}

impl Bed {
    fn up(nodes: usize, extra: &[&str]) -> Bed {
        let sandbox = OvnSandbox::up(nodes);
        let kube = Kube::start();
        let dir = tempfile::Builder::new()
            .prefix("kovn-node")
            .tempdir_in("/tmp")
            .expect("tmp");
        let daemons = (1..=nodes)
            .map(|n| {
                let kubeconfig = kube.kubeconfig_in(&sandbox.node_netns(n), dir.path());
                NodeDaemon::start(&sandbox, n, &kubeconfig, dir.path(), extra)
            })
            .collect();
        Bed {
            sandbox,
            kube,
            dir,
            nodes: daemons,
        }
    }

    fn node(&self, n: usize) -> &NodeDaemon {
        &self.nodes[n - 1]
    }

    /// A pod on node `n` with its LSP in NB and its allocation annotations (plus `extra`).
    fn pod(&self, n: usize, name: &str, ip: &str, mac: &str, extra: &[(&str, &str)]) -> PodNetns {
        create_lsp(&self.sandbox, name, ip, mac);
        let mut annotations = allocation(PROVIDER, ip, mac);
        annotations.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self.kube
            .create_pod(name, &format!("node{n}"), &annotations);
        PodNetns::new(&self.sandbox, n, name, self.dir.path())
    }

    fn add(&self, n: usize, pod: &PodNetns, version: &str) -> Outcome {
        let node = self.node(n);
        plugin(
            &node.bin_dir,
            "ADD",
            &nad_config(version, &node.socket),
            &pod.env("net1"),
        )
    }

    fn ovs_port_exists(&self, n: usize, iface: &str) -> bool {
        self.sandbox
            .vsctl(n, &["--bare", "--columns=name", "list", "interface"])
            .lines()
            .any(|l| l.trim() == iface)
    }

    /// `Interface.external_ids:<key>` of `iface`, unquoted.
    fn iface_id(&self, n: usize, iface: &str, key: &str) -> String {
        self.sandbox
            .vsctl(
                n,
                &["get", "interface", iface, &format!("external_ids:{key}")],
            )
            .trim_matches('"')
            .to_string()
    }

    fn qos_rows(&self, n: usize) -> usize {
        self.sandbox
            .vsctl(n, &["--bare", "--columns=_uuid", "list", "qos"])
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count()
    }
}

fn addresses(pod: &PodNetns, ifname: &str) -> Vec<String> {
    pod.ip_json(&["addr", "show", ifname, "scope", "global"])[0]["addr_info"]
        .as_array()
        .expect("addr_info")
        .iter()
        .filter_map(|a| Some(format!("{}/{}", a.get("local")?.as_str()?, a["prefixlen"])))
        .collect()
}

#[test]
fn every_spec_version_adds_checks_and_deletes_through_ovn() {
    let bed = Bed::up(1, &[]);
    let installed = bed.node(1).bin_dir.join("kube-ovn");
    assert!(installed.exists(), "the node role installed the plugin");

    for (i, version) in VERSIONS.iter().enumerate() {
        let name = format!("web-{i}");
        let ip = format!("10.66.0.{}", 10 + i);
        let mac = format!("0a:58:0a:42:00:{:02x}", 10 + i);
        // One version asks for the default route and extra routes, and has a QoS row.
        let asks = i == 3;
        let extra: Vec<(&str, &str)> = if asks {
            vec![
                ("attachnet.default.ovn.kubernetes.io/default_route", "true"),
                (
                    "attachnet.default.ovn.kubernetes.io/routes",
                    r#"[{"dst":"10.99.0.0/16"}]"#,
                ),
                ("ovn.kubernetes.io/ingress_rate", "5"),
            ]
        } else {
            vec![]
        };
        let pod = bed.pod(1, &name, &ip, &mac, &extra);
        let eth0_before = pod.ip(&["addr", "show", "eth0"]);
        let default_before = pod.ip(&["route", "show", "default"]);

        let add = bed.add(1, &pod, version);
        add.assert_ok(&format!("ADD {version}"));
        let result = add.json();
        assert_eq!(result["cniVersion"], *version);
        let iface = &result["interfaces"][0];
        assert_eq!(iface["name"], "net1");
        assert_eq!(iface["mac"], mac.as_str());
        assert_eq!(iface["sandbox"], pod.path());
        let ips = result["ips"].as_array().expect("ips");
        assert_eq!(ips.len(), 1);
        assert_eq!(ips[0]["address"], format!("{ip}/24"));
        assert_eq!(ips[0]["gateway"], GATEWAY);
        assert_eq!(ips[0]["interface"], 0);
        assert_eq!(ips[0].get("version").is_some(), version.starts_with("0."));

        // The kernel agrees.
        let link = &pod.ip_json(&["link", "show", "net1"])[0];
        assert_eq!(link["address"], mac.as_str());
        assert_eq!(link["mtu"], 1400);
        assert_eq!(addresses(&pod, "net1"), vec![format!("{ip}/24")]);
        let routes = pod.ip(&["route", "show", "dev", "net1"]);
        if asks {
            assert!(
                routes.contains(&format!("default via {GATEWAY}")),
                "{routes}"
            );
            assert!(
                routes.contains(&format!("10.99.0.0/16 via {GATEWAY}")),
                "{routes}"
            );
            assert_eq!(bed.qos_rows(1), 1, "ingress_rate made a QoS row");
        } else {
            assert!(!routes.contains("default"), "{routes}");
            assert!(!routes.contains(" via "), "{routes}");
            assert_eq!(
                pod.ip(&["route", "show", "default"]),
                default_before,
                "eth0's default route untouched"
            );
        }
        assert_eq!(pod.ip(&["addr", "show", "eth0"]), eth0_before);

        // The OVS port carries the contract's external_ids and is installed.
        let host = host_veth_name(&pod.container_id, "net1");
        for (key, want) in [
            ("iface-id", format!("{name}.default.{PROVIDER}")),
            ("pod_name", name.clone()),
            ("pod_namespace", "default".to_string()),
            ("pod_netns", pod.path()),
            ("vendor", "kube-ovn".to_string()),
            ("ip", ip.clone()),
            ("ovn-installed", "true".to_string()),
        ] {
            assert_eq!(bed.iface_id(1, &host, key), want, "external_ids:{key}");
        }

        // CHECK (0.4.0 and later) with prevResult as libcni sends it.
        let mut with_prev = nad_config(version, &bed.node(1).socket);
        with_prev["prevResult"] = result.clone();
        let check = plugin(&bed.node(1).bin_dir, "CHECK", &with_prev, &pod.env("net1"));
        if version.starts_with("0.3") {
            check.assert_error(1, "CHECK");
        } else {
            check.assert_ok(&format!("CHECK {version}"));
        }

        // DEL twice; nothing remains.
        for round in 0..2 {
            let del = plugin(&bed.node(1).bin_dir, "DEL", &with_prev, &pod.env("net1"));
            del.assert_ok(&format!("DEL #{round} {version}"));
        }
        assert!(!pod.has_link("net1"), "net1 left after DEL");
        assert!(pod.has_link("eth0"));
        assert!(
            !link_in(&bed.sandbox.node_netns(1), &host),
            "host veth left after DEL"
        );
        assert!(!bed.ovs_port_exists(1, &host), "OVS port left after DEL");
        assert_eq!(bed.qos_rows(1), 0, "QoS row left after DEL");
    }
}

#[test]
fn pods_ping_over_net1_on_one_node_and_across_nodes_and_eth0_still_works() {
    let bed = Bed::up(2, &[]);
    let a = bed.pod(1, "a", "10.66.0.21", "0a:58:0a:42:00:21", &[]);
    let b = bed.pod(1, "b", "10.66.0.22", "0a:58:0a:42:00:22", &[]);
    let c = bed.pod(2, "c", "10.66.0.23", "0a:58:0a:42:00:23", &[]);
    bed.add(1, &a, "1.0.0").assert_ok("ADD a");
    bed.add(1, &b, "1.0.0").assert_ok("ADD b");
    bed.add(2, &c, "1.0.0").assert_ok("ADD c");

    assert!(bed.sandbox.ping(&a.name, "10.66.0.22"), "a → b on one node");
    assert!(
        bed.sandbox.ping(&a.name, "10.66.0.23"),
        "a → c across nodes"
    );
    assert!(
        bed.sandbox.ping(&c.name, "10.66.0.21"),
        "c → a across nodes"
    );
    // eth0 from the primary plugin: its gateway (the node's cni0) answers.
    assert!(
        bed.sandbox.ping(&a.name, "10.244.1.1"),
        "a's eth0 still works"
    );
    assert!(
        bed.sandbox.ping(&c.name, "10.244.2.1"),
        "c's eth0 still works"
    );
    assert!(bed.sandbox.ping(&a.name, &b.eth0_ip), "a → b over eth0");
}

/// A one-shot iperf3 server in `pod`, daemonized.
fn iperf_server(pod: &PodNetns) {
    let server = std::process::Command::new("ip")
        .args(["netns", "exec", &pod.name, "iperf3", "-s", "-1", "-D"])
        .status()
        .expect("iperf3 server");
    assert!(server.success());
    std::thread::sleep(std::time::Duration::from_millis(300));
}

/// iperf3 from `client` to `server_ip` for `secs` seconds; the receiver's Mbit/s.
fn iperf_mbps(bed: &Bed, client: &PodNetns, server_ip: &str) -> f64 {
    let out = bed
        .sandbox
        .exec_in(&client.name, &["iperf3", "-c", server_ip, "-t", "3", "-J"]);
    assert!(
        out.status.success(),
        "iperf3: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let j: Value = serde_json::from_slice(&out.stdout).expect("iperf3 json");
    j["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .expect("bits_per_second")
        / 1e6
}

#[test]
fn egress_rate_caps_the_pod_and_removing_it_lifts_the_cap_live() {
    let bed = Bed::up(1, &[]);
    let a = bed.pod(
        1,
        "qa",
        "10.66.0.31",
        "0a:58:0a:42:00:31",
        &[("ovn.kubernetes.io/egress_rate", "10")],
    );
    let b = bed.pod(1, "qb", "10.66.0.32", "0a:58:0a:42:00:32", &[]);
    bed.add(1, &a, "1.0.0").assert_ok("ADD qa");
    bed.add(1, &b, "1.0.0").assert_ok("ADD qb");
    iperf_server(&b);
    let capped = iperf_mbps(&bed, &a, "10.66.0.32");
    eprintln!("egress_rate=10: {capped:.1} Mbit/s");
    assert!(
        capped <= 11.0,
        "egress capped at 10 Mbit/s, measured {capped:.1}"
    );
    assert!(capped > 1.0, "traffic flows under the cap: {capped:.1}");

    bed.kube
        .annotate("qa", json!({"ovn.kubernetes.io/egress_rate": null}));
    let host = host_veth_name(&a.container_id, "net1");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let tbf = || {
        let out = bed
            .sandbox
            .exec_in(&a.name, &["tc", "qdisc", "show", "dev", "net1"]);
        String::from_utf8_lossy(&out.stdout).contains("tbf")
    };
    while bed
        .sandbox
        .vsctl(1, &["get", "interface", &host, "ingress_policing_rate"])
        != "0"
        || tbf()
    {
        assert!(std::time::Instant::now() < deadline, "limit not lifted");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    iperf_server(&b);
    let free = iperf_mbps(&bed, &a, "10.66.0.32");
    eprintln!("no egress_rate: {free:.1} Mbit/s");
    assert!(
        free > 20.0,
        "cap lifted without restarting the pod: {free:.1}"
    );

    // The receiving pod's ingress limit (an HTB queue on its host end) caps the same flow.
    bed.kube
        .annotate("qb", json!({"ovn.kubernetes.io/ingress_rate": "10"}));
    let b_host = host_veth_name(&b.container_id, "net1");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while bed.sandbox.vsctl(1, &["get", "port", &b_host, "qos"]) == "[]" {
        assert!(std::time::Instant::now() < deadline, "no QoS on qb's port");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(bed.qos_rows(1), 1);
    iperf_server(&b);
    let shaped = iperf_mbps(&bed, &a, "10.66.0.32");
    eprintln!("ingress_rate=10 on the receiver: {shaped:.1} Mbit/s");
    assert!(
        shaped <= 11.0,
        "ingress capped at 10 Mbit/s, measured {shaped:.1}"
    );
}

#[test]
fn bad_input_gives_the_right_code_and_leaves_nothing_behind() {
    let bed = Bed::up(1, &["--annotation-timeout=2s"]);
    let node_ns = bed.sandbox.node_netns(1);

    // A pod the controller never annotates: code 11 after the deadline, naming the annotation.
    bed.kube.create_pod("lonely", "node1", &BTreeMap::new());
    let lonely = PodNetns::new(&bed.sandbox, 1, "lonely", bed.dir.path());
    let add = bed.add(1, &lonely, "1.0.0");
    add.assert_error(11, "attachnet.default.ovn.kubernetes.io/allocated");
    let host = host_veth_name(&lonely.container_id, "net1");
    assert!(!lonely.has_link("net1"));
    assert!(!link_in(&node_ns, &host));
    assert!(!bed.ovs_port_exists(1, &host));

    // A pod that is not on this node at all.
    let ghost = PodNetns::new(&bed.sandbox, 1, "ghost", bed.dir.path());
    bed.add(1, &ghost, "1.0.0").assert_error(11, "ghost");

    // A netns that is gone: code 3 naming it; DEL still succeeds.
    let pod = bed.pod(1, "gone", "10.66.0.41", "0a:58:0a:42:00:41", &[]);
    let mut env = pod.env("net1");
    for (k, v) in env.iter_mut() {
        if k == "CNI_NETNS" {
            *v = "/var/run/netns/kovn-no-such-netns".into();
        }
    }
    let node = bed.node(1);
    let add = plugin(
        &node.bin_dir,
        "ADD",
        &nad_config("1.0.0", &node.socket),
        &env,
    );
    add.assert_error(3, "kovn-no-such-netns");
    let host = host_veth_name(&pod.container_id, "net1");
    assert!(!link_in(&node_ns, &host));
    assert!(!bed.ovs_port_exists(1, &host));
    let del = plugin(
        &node.bin_dir,
        "DEL",
        &nad_config("1.0.0", &node.socket),
        &env,
    );
    del.assert_ok("DEL with a gone netns");

    // A netns removed after ADD: DEL cleans the host side.
    bed.add(1, &pod, "1.0.0").assert_ok("ADD gone");
    assert!(bed.ovs_port_exists(1, &host));
    tool("ip", &["netns", "del", &pod.name]);
    let del = plugin(
        &node.bin_dir,
        "DEL",
        &nad_config("1.0.0", &node.socket),
        &pod.env("net1"),
    );
    del.assert_ok("DEL after the netns went");
    assert!(!link_in(&node_ns, &host));
    assert!(!bed.ovs_port_exists(1, &host));
}

#[test]
fn a_stopped_daemon_is_try_again_later_and_sigterm_stops_cleanly() {
    let mut bed = Bed::up(1, &[]);
    let pod = bed.pod(1, "late", "10.66.0.51", "0a:58:0a:42:00:51", &[]);
    let socket = bed.node(1).socket.clone();
    let bin_dir = bed.node(1).bin_dir.clone();
    let status = bed.nodes[0].stop().expect("daemon ran");
    assert!(status.success(), "SIGTERM exits 0: {status}");
    assert!(!Path::new(&socket).exists(), "socket removed at stop");

    let add = plugin(
        &bin_dir,
        "ADD",
        &nad_config("1.0.0", &socket),
        &pod.env("net1"),
    );
    add.assert_error(11, &socket.display().to_string());
    let host = host_veth_name(&pod.container_id, "net1");
    assert!(!pod.has_link("net1"));
    assert!(!link_in(&bed.sandbox.node_netns(1), &host));
}
