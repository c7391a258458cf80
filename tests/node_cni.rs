//! The node role on the real test bed: `kube-ovn node --ovs external` inside a sandbox node's
//! netns, pod annotations written through kube-sim's API server with the real kube client,
//! the installed `kube-ovn` plugin exec'd Multus-style, OVN doing the forwarding. The test
//! stands in for the operator: it writes the allocation annotations and creates the logical
//! switch ports with `ovn-nbctl`.

mod node_support;
mod support;

use std::collections::BTreeMap;
use std::path::Path;

use kube_ovn::node::attachment::host_veth_name;
use node_support::*;
use serde_json::{json, Value};
use support::OvnSandbox;

const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// Dropped in field order: the node roles stop (SIGTERM) before the sandbox goes.
struct Bed {
    nodes: Vec<NodeDaemon>,
    kube: Kube,
    sandbox: OvnSandbox,
    dir: tempfile::TempDir,
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
            nodes: daemons,
            kube,
            sandbox,
            dir,
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

    /// The OVS interfaces of node `n` whose `external_ids:<key>` is `value`.
    fn interfaces_with(&self, n: usize, key: &str, value: &str) -> Vec<String> {
        self.sandbox
            .vsctl(
                n,
                &[
                    "--bare",
                    "--columns=name",
                    "find",
                    "interface",
                    &format!("external_ids:{key}=\"{value}\""),
                ],
            )
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    }

    /// The host end ADD gave `pod`'s net1: the one interface recording its sandbox.
    fn host_of(&self, n: usize, pod: &PodNetns) -> String {
        let hosts = self.interfaces_with(n, "sandbox", &pod.container_id);
        assert_eq!(hosts.len(), 1, "one interface for sandbox of {}", pod.pod);
        hosts[0].clone()
    }

    /// Waits until pod `name`'s attachment is pre-plugged and installed; its host end.
    fn wait_preplugged(&self, n: usize, name: &str) -> String {
        let iface_id = format!("{name}.default.{PROVIDER}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let hosts = self.interfaces_with(n, "iface-id", &iface_id);
            if let [host] = hosts.as_slice() {
                let ids = self
                    .sandbox
                    .vsctl(n, &["get", "interface", host, "external_ids"]);
                if ids.contains("preplug_peer=") && ids.contains("ovn-installed=\"true\"") {
                    return host.clone();
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{iface_id} not pre-plugged: {hosts:?}\n{}",
                self.node(n).log_text()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
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
        let host = bed.host_of(1, &pod);
        for (key, want) in [
            ("iface-id", format!("{name}.default.{PROVIDER}")),
            ("pod_name", name.clone()),
            ("pod_namespace", "default".to_string()),
            ("pod_netns", pod.path()),
            ("vendor", "kube-ovn".to_string()),
            ("ip", ip.clone()),
            ("sandbox", pod.container_id.clone()),
            ("pod_ifname", "net1".to_string()),
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
        assert!(bed
            .interfaces_with(1, "sandbox", &pod.container_id)
            .is_empty());
        assert_eq!(bed.qos_rows(1), 0, "QoS row left after DEL");
        // The pod itself is still there and not terminating (as when a kubelet replaces a
        // sandbox): the node may pre-plug it again for the next ADD, and that is all that may
        // carry its iface-id. Deleting the pod removes it (see the pre-plug test).
        for other in bed.interfaces_with(1, "iface-id", &format!("{name}.default.{PROVIDER}")) {
            let ids = bed
                .sandbox
                .vsctl(1, &["get", "interface", &other, "external_ids"]);
            assert!(
                ids.contains("preplug_peer=") && !ids.contains("sandbox="),
                "after DEL only an unclaimed pre-plug may remain: {other} {ids}"
            );
        }
    }
}

#[test]
fn pods_ping_over_net1_on_one_node_and_across_nodes_and_eth0_still_works() {
    let bed = Bed::up(2, &[]);
    let a = bed.pod(1, "a", "10.66.0.21", "0a:58:0a:42:00:21", &[]);
    let b = bed.pod(1, "b", "10.66.0.22", "0a:58:0a:42:00:22", &[]);
    let c = bed.pod(2, "c", "10.66.0.23", "0a:58:0a:42:00:23", &[]);
    // c's ADD adopts a pre-plugged port (a's and b's may or may not find theirs ready).
    bed.wait_preplugged(2, "c");
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
        bed.sandbox
            .ping(&a.name, &format!("{}.1.1", eth0_net(&bed.sandbox))),
        "a's eth0 still works"
    );
    assert!(
        bed.sandbox
            .ping(&c.name, &format!("{}.2.1", eth0_net(&bed.sandbox))),
        "c's eth0 still works"
    );
    assert!(bed.sandbox.ping(&a.name, &b.eth0_ip), "a → b over eth0");
}

/// A one-shot iperf3 server in `pod`, daemonized.
/// A one-off iperf3 server on `port`: each measurement gets its own port, so it never meets
/// the previous one-off server while that one is still closing.
fn iperf_server(pod: &PodNetns, port: u16) {
    let port = port.to_string();
    let server = std::process::Command::new("ip")
        .args([
            "netns", "exec", &pod.name, "iperf3", "-s", "-1", "-D", "-p", &port,
        ])
        .status()
        .expect("iperf3 server");
    assert!(server.success());
    std::thread::sleep(std::time::Duration::from_millis(300));
}

/// iperf3 from `client` to `server_ip` for `secs` seconds; the receiver's Mbit/s.
fn iperf_mbps(bed: &Bed, client: &PodNetns, server_ip: &str, port: u16) -> f64 {
    let port = port.to_string();
    let out = bed.sandbox.exec_in(
        &client.name,
        &["iperf3", "-c", server_ip, "-p", &port, "-t", "3", "-J"],
    );
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
    // Without pre-plugging: ADD builds and plugs the veth itself (the other tests mostly
    // adopt pre-plugged ones).
    let bed = Bed::up(1, &["--preplug=false"]);
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
    iperf_server(&b, 5301);
    let capped = iperf_mbps(&bed, &a, "10.66.0.32", 5301);
    eprintln!("egress_rate=10: {capped:.1} Mbit/s");
    assert!(
        capped <= 11.0,
        "egress capped at 10 Mbit/s, measured {capped:.1}"
    );
    assert!(capped > 1.0, "traffic flows under the cap: {capped:.1}");

    bed.kube
        .annotate("qa", json!({"ovn.kubernetes.io/egress_rate": null}));
    let host = bed.host_of(1, &a);
    assert_eq!(
        host,
        host_veth_name(&a.container_id, "net1"),
        "built by ADD"
    );
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
    iperf_server(&b, 5302);
    let free = iperf_mbps(&bed, &a, "10.66.0.32", 5302);
    eprintln!("no egress_rate: {free:.1} Mbit/s");
    assert!(
        free > 20.0,
        "cap lifted without restarting the pod: {free:.1}"
    );

    // The receiving pod's ingress limit (an HTB queue on its host end) caps the same flow.
    bed.kube
        .annotate("qb", json!({"ovn.kubernetes.io/ingress_rate": "10"}));
    let b_host = bed.host_of(1, &b);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while bed.sandbox.vsctl(1, &["get", "port", &b_host, "qos"]) == "[]" {
        assert!(std::time::Instant::now() < deadline, "no QoS on qb's port");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(bed.qos_rows(1), 1);
    iperf_server(&b, 5303);
    let shaped = iperf_mbps(&bed, &a, "10.66.0.32", 5303);
    eprintln!("ingress_rate=10 on the receiver: {shaped:.1} Mbit/s");
    assert!(
        shaped <= 11.0,
        "ingress capped at 10 Mbit/s, measured {shaped:.1}"
    );
}

/// Whether this kernel has the netem qdisc (a scratch netns and veth, `tc` as a test tool).
fn kernel_has_netem() -> bool {
    let ns = format!("kovn-netem-probe-{}", std::process::id());
    let sh = format!(
        "ip netns add {ns} && ip -n {ns} link add p0 type veth peer name p1 && \
         tc -n {ns} qdisc add dev p0 root netem delay 1ms; r=$?; ip netns del {ns}; exit $r"
    );
    std::process::Command::new("sh")
        .args(["-c", &sh])
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The smallest round-trip time of `count` pings from `netns` to `ip`, in ms (`None`: no reply).
fn min_rtt_ms(bed: &Bed, netns: &str, ip: &str, count: u32) -> Option<f64> {
    let count = count.to_string();
    let out = bed
        .sandbox
        .exec_in(netns, &["ping", "-c", &count, "-i", "0.2", "-W", "2", ip]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    // rtt min/avg/max/mdev = 50.1/50.3/…
    let stats = text.lines().find(|l| l.contains("min/avg/max"))?;
    stats
        .split('=')
        .nth(1)?
        .trim()
        .split('/')
        .next()?
        .parse()
        .ok()
}

#[test]
fn netem_annotations_become_a_netem_qos_live_and_bad_values_are_an_event() {
    let bed = Bed::up(1, &[]);
    let a = bed.pod(
        1,
        "na",
        "10.66.0.41",
        "0a:58:0a:42:00:41",
        &[
            (&format!("{PROVIDER}.kubernetes.io/latency"), "60"),
            ("ovn.kubernetes.io/limit", "500"),
        ],
    );
    let b = bed.pod(1, "nb", "10.66.0.42", "0a:58:0a:42:00:42", &[]);
    bed.add(1, &a, "1.0.0").assert_ok("ADD na");
    bed.add(1, &b, "1.0.0").assert_ok("ADD nb");
    let host = bed.host_of(1, &a);
    let netem_config = |key: &str| {
        let qos = bed.sandbox.vsctl(1, &["get", "port", &host, "qos"]);
        if qos == "[]" {
            return None;
        }
        assert_eq!(
            bed.sandbox.vsctl(1, &["get", "qos", &qos, "type"]),
            "linux-netem"
        );
        let v = bed.sandbox.vsctl(1, &["get", "qos", &qos, "other_config"]);
        Some(
            v.trim_matches(|c| c == '{' || c == '}')
                .split(", ")
                .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
                .map(|v| v.trim_matches('"').to_string())
                .unwrap_or_default(),
        )
    };
    let wait_for = |key: &str, want: Option<&str>| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let got = netem_config(key);
            if got.as_deref() == want {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "netem {key}: {got:?}, want {want:?}\n{}",
                bed.node(1).log_text()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    // Per-interface latency (ms → µs) and the pod-wide limit, set at ADD.
    wait_for("latency", Some("60000"));
    wait_for("limit", Some("500"));

    if kernel_has_netem() {
        let rtt = min_rtt_ms(&bed, &b.name, "10.66.0.41", 5).expect("b → a replies");
        eprintln!("latency=60: min RTT {rtt:.1} ms");
        assert!(rtt >= 60.0, "netem delays what a receives: {rtt:.1} ms");
    } else {
        // This kernel cannot delay: the user hears it on the pod instead of nothing.
        let note = bed
            .kube
            .event_note(
                "na",
                "NetemNotApplied",
                &host,
                std::time::Duration::from_secs(10),
            )
            .expect("NetemNotApplied Event on the pod");
        eprintln!("no sch_netem in this kernel; Event: {note}");
        assert!(note.contains("sch_netem"), "{note}");
        assert!(note.contains(&host), "{note}");
    }

    // Live: a new latency and a loss change the row in place, without a new ADD.
    bed.kube.annotate(
        "na",
        json!({format!("{PROVIDER}.kubernetes.io/latency"): "80", "ovn.kubernetes.io/loss": "100"}),
    );
    wait_for("latency", Some("80000"));
    wait_for("loss", Some("100"));
    if kernel_has_netem() {
        assert!(
            !bed.sandbox.ping(&b.name, "10.66.0.41"),
            "loss=100 drops every reply to b"
        );
    }

    // Bad values: an Event that names the key and value; the applied netem stays as it was.
    for (key, value, expect, fixed) in [
        (
            "ovn.kubernetes.io/jitter",
            "a bit",
            "is not a whole number of milliseconds",
            Value::Null,
        ),
        (
            "ovn.kubernetes.io/loss",
            "150",
            "is not a percentage from 0 to 100",
            json!("100"),
        ),
        (
            "ovn.kubernetes.io/ingress_rate",
            "10",
            "cannot apply together with latency/jitter/limit/loss",
            Value::Null,
        ),
    ] {
        bed.kube.annotate("na", json!({ key: value }));
        let note = bed
            .kube
            .event_note(
                "na",
                "InvalidQoS",
                expect,
                std::time::Duration::from_secs(20),
            )
            .unwrap_or_else(|| panic!("no InvalidQoS Event for {key}={value}"));
        eprintln!("{key}={value}: {note}");
        assert!(note.contains(key) && note.contains("net1"), "{note}");
        assert_eq!(netem_config("latency").as_deref(), Some("80000"));
        assert_eq!(netem_config("loss").as_deref(), Some("100"));
        bed.kube.annotate("na", json!({ key: fixed }));
    }

    // Removing the keys removes the QoS row; b reaches a again.
    bed.kube.annotate(
        "na",
        json!({
            format!("{PROVIDER}.kubernetes.io/latency"): null,
            "ovn.kubernetes.io/loss": null,
            "ovn.kubernetes.io/limit": null,
        }),
    );
    wait_for("latency", None);
    assert_eq!(bed.qos_rows(1), 0, "netem QoS row removed");
    assert!(
        bed.sandbox.ping(&b.name, "10.66.0.41"),
        "b → a without netem"
    );

    // The burst keys are read: egress_burst (Mbit) is the policing burst (kbit), live.
    bed.kube.annotate(
        "nb",
        json!({"ovn.kubernetes.io/egress_rate": "10", format!("{PROVIDER}.kubernetes.io/egress_burst"): "2"}),
    );
    let b_host = bed.host_of(1, &b);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while bed
        .sandbox
        .vsctl(1, &["get", "interface", &b_host, "ingress_policing_burst"])
        != "2000"
    {
        assert!(
            std::time::Instant::now() < deadline,
            "egress_burst=2 not applied"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn bad_input_gives_the_right_code_and_leaves_nothing_behind() {
    let bed = Bed::up(
        1,
        &["--annotation-timeout=2s", "--ovn-installed-timeout=2s"],
    );
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

    // Annotated, but the operator never made the logical switch port: ovn-controller never
    // installs it, so ADD gives up after its deadline and undoes the veth and the OVS port.
    bed.kube.create_pod(
        "portless",
        "node1",
        &allocation(PROVIDER, "10.66.0.40", "0a:58:0a:42:00:40"),
    );
    let portless = PodNetns::new(&bed.sandbox, 1, "portless", bed.dir.path());
    let add = bed.add(1, &portless, "1.0.0");
    add.assert_error(11, "was not ovn-installed");
    let host = host_veth_name(&portless.container_id, "net1");
    assert!(!portless.has_link("net1"));
    assert!(!link_in(&node_ns, &host));
    assert!(!bed.ovs_port_exists(1, &host));
    assert!(bed
        .interfaces_with(1, "sandbox", &portless.container_id)
        .is_empty());

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
    let host = bed.host_of(1, &pod);
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

    // A port of ours whose veth vanished while the daemon was down is removed at start;
    // ports that are not ours stay.
    bed.sandbox.vsctl(
        1,
        &[
            "add-port",
            "br-int",
            "gone_net1_h",
            "--",
            "set",
            "interface",
            "gone_net1_h",
            "external_ids:vendor=kube-ovn",
            "external_ids:iface-id=gone.default.x",
        ],
    );
    bed.sandbox.vsctl(1, &["add-port", "br-int", "foreign_h"]);
    let kubeconfig = bed
        .kube
        .kubeconfig_in(&bed.sandbox.node_netns(1), bed.dir.path());
    bed.nodes[0] = NodeDaemon::start(&bed.sandbox, 1, &kubeconfig, bed.dir.path(), &[]);
    assert!(
        !bed.ovs_port_exists(1, "gone_net1_h"),
        "stale port collected"
    );
    assert!(bed.ovs_port_exists(1, "foreign_h"), "foreign port kept");
    bed.add(1, &pod, "1.0.0").assert_ok("ADD after the restart");
    // Whatever an earlier run pre-plugged was removed or adopted: one interface for the pod.
    assert_eq!(
        bed.interfaces_with(1, "iface-id", &format!("late.default.{PROVIDER}")),
        vec![bed.host_of(1, &pod)]
    );
}

#[test]
fn an_annotated_pod_is_pre_plugged_add_adopts_it_and_a_pod_that_goes_leaves_nothing() {
    let mut bed = Bed::up(1, &[]);
    let node_ns = bed.sandbox.node_netns(1);
    let a = bed.pod(1, "early-a", "10.66.0.61", "0a:58:0a:42:00:61", &[]);
    let b = bed.pod(1, "early-b", "10.66.0.62", "0a:58:0a:42:00:62", &[]);
    let a_host = bed.wait_preplugged(1, "early-a");
    bed.wait_preplugged(1, "early-b");
    assert!(a_host.ends_with("_p"), "{a_host}");
    let a_peer = a_host.replace("_p", "_c");
    assert!(
        link_in(&node_ns, &a_peer),
        "the pod end waits in the node netns"
    );

    bed.add(1, &a, "1.0.0").assert_ok("ADD early-a");
    bed.add(1, &b, "1.0.0").assert_ok("ADD early-b");
    assert_eq!(
        bed.host_of(1, &a),
        a_host,
        "ADD adopted the pre-plugged port"
    );
    // net1 is a passthru macvlan on the pre-built peer, which stays in the node netns.
    let details = &a.ip_json(&["-d", "link", "show", "net1"])[0];
    assert_eq!(details["linkinfo"]["info_kind"], "macvlan", "{details}");
    assert!(
        link_in(&node_ns, &a_peer),
        "the macvlan's lower device stays"
    );
    let ids = bed
        .sandbox
        .vsctl(1, &["get", "interface", &a_host, "external_ids"]);
    assert!(!ids.contains("preplug_peer"), "{ids}");
    assert_eq!(bed.iface_id(1, &a_host, "pod_netns"), a.path());
    assert_eq!(bed.iface_id(1, &a_host, "ovn-installed"), "true");
    let link = &a.ip_json(&["link", "show", "net1"])[0];
    assert_eq!(link["address"], "0a:58:0a:42:00:61");
    assert_eq!(link["mtu"], 1400);
    assert_eq!(addresses(&a, "net1"), vec!["10.66.0.61/24".to_string()]);
    assert!(
        bed.node(1).log_text().contains("preplugged=true"),
        "the ADD log says it adopted a pre-plug"
    );
    assert!(
        bed.sandbox.ping(&a.name, "10.66.0.62"),
        "adopted pods ping over net1"
    );

    // Live QoS reaches an adopted interface: the pod's egress is shaped on its macvlan.
    bed.kube
        .annotate("early-b", json!({"ovn.kubernetes.io/egress_rate": "10"}));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !b.tc_qdiscs("net1").contains("tbf") {
        assert!(
            std::time::Instant::now() < deadline,
            "no TBF on early-b's net1"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    // DEL removes the adopted interface by the sandbox it records.
    let node = bed.node(1);
    plugin(
        &node.bin_dir,
        "DEL",
        &nad_config("1.0.0", &node.socket),
        &a.env("net1"),
    )
    .assert_ok("DEL early-a");
    assert!(!link_in(&node_ns, &a_host));
    assert!(!link_in(&node_ns, &a_peer));
    assert!(
        !a.has_link("net1"),
        "the macvlan went with its lower device"
    );
    assert!(!bed.ovs_port_exists(1, &a_host));
    assert!(bed
        .interfaces_with(1, "sandbox", &a.container_id)
        .is_empty());

    // A pod that is deleted before its sandbox ever starts: its pre-plug goes with it.
    create_lsp(&bed.sandbox, "never", "10.66.0.63", "0a:58:0a:42:00:63");
    bed.kube.create_pod(
        "never",
        "node1",
        &allocation(PROVIDER, "10.66.0.63", "0a:58:0a:42:00:63"),
    );
    let never_host = bed.wait_preplugged(1, "never");
    bed.kube.delete_pod("never");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while bed.ovs_port_exists(1, &never_host) || link_in(&node_ns, &never_host) {
        assert!(
            std::time::Instant::now() < deadline,
            "pre-plug of a deleted pod left behind"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(!link_in(&node_ns, &never_host.replace("_p", "_c")));

    // A sandbox whose netns went without a DEL while the daemon was down: the adopted veth
    // outlives its macvlan, and the next start removes it.
    let b_host = bed.host_of(1, &b);
    bed.nodes[0].stop();
    tool("ip", &["netns", "del", &b.name]);
    assert!(
        link_in(&node_ns, &b_host),
        "the veth outlives the pod netns"
    );
    let kubeconfig = bed
        .kube
        .kubeconfig_in(&bed.sandbox.node_netns(1), bed.dir.path());
    bed.nodes[0] = NodeDaemon::start(&bed.sandbox, 1, &kubeconfig, bed.dir.path(), &[]);
    assert!(bed
        .interfaces_with(1, "sandbox", &b.container_id)
        .is_empty());
}

#[test]
fn an_add_that_comes_before_the_annotations_gets_the_only_port() {
    let bed = Bed::up(1, &[]);
    bed.kube.create_pod("slow", "node1", &BTreeMap::new());
    let pod = PodNetns::new(&bed.sandbox, 1, "slow", bed.dir.path());
    let add = std::thread::scope(|s| {
        let add = s.spawn(|| bed.add(1, &pod, "1.0.0"));
        std::thread::sleep(std::time::Duration::from_millis(300));
        create_lsp(&bed.sandbox, "slow", "10.66.0.71", "0a:58:0a:42:00:71");
        bed.kube.annotate(
            "slow",
            serde_json::to_value(allocation(PROVIDER, "10.66.0.71", "0a:58:0a:42:00:71"))
                .expect("annotations"),
        );
        add.join().expect("ADD thread")
    });
    add.assert_ok("ADD that waited for the annotations");
    let iface_id = format!("slow.default.{PROVIDER}");
    // The annotations reach the waiting ADD and the pre-plug pass together; whichever gets
    // the iface-id first, the ADD ends up with the only port of it.
    let host = bed.host_of(1, &pod);
    assert_eq!(
        bed.interfaces_with(1, "iface-id", &iface_id),
        vec![host.clone()]
    );
    // Later pre-plug passes see the port and build nothing for it.
    bed.kube.annotate("slow", json!({"example.com/touch": "1"}));
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(bed.interfaces_with(1, "iface-id", &iface_id), vec![host]);
}

/// The NAT gateway's external leg: Debian's macvlan plugin with our plugin as its `ipam`
/// (the `ovn-vpc-external-network` NAD). macvlan builds the interface on the node's uplink; we
/// answer the address, gateway and routes the controller annotated for the external provider.
#[test]
fn as_macvlans_ipam_the_plugin_answers_the_annotated_external_address() {
    let bed = Bed::up(1, &["--annotation-timeout=2s"]);
    let node = bed.sandbox.node_netns(1);
    // The uplink: a veth (this kernel has no dummy links), up on both ends.
    tool(
        "ip",
        &[
            "-n", &node, "link", "add", "ext0", "type", "veth", "peer", "name", "ext0p",
        ],
    );
    tool("ip", &["-n", &node, "link", "set", "ext0", "up"]);
    tool("ip", &["-n", &node, "link", "set", "ext0p", "up"]);
    let provider = "ovn-vpc-external-network.kube-system";
    let annotations: BTreeMap<String, String> = [
        ("allocated", "true"),
        ("ip_address", "172.19.0.10"),
        ("mac_address", "0a:58:ac:13:00:0a"),
        ("cidr", "172.19.0.0/24"),
        ("gateway", "172.19.0.1"),
        ("logical_switch", "ovn-vpc-external-network"),
        ("routes", r#"[{"dst":"198.51.100.0/24"}]"#),
    ]
    .into_iter()
    .map(|(k, v)| (format!("{provider}.kubernetes.io/{k}"), v.to_string()))
    .collect();
    bed.kube.create_pod("gw-0", "node1", &annotations);
    let pod = PodNetns::new(&bed.sandbox, 1, "gw-0", bed.dir.path());
    let eth0_before = pod.ip(&["addr", "show", "eth0"]);
    let default_before = pod.ip(&["route", "show", "default"]);

    let socket = &bed.node(1).socket;
    let conf = |version: &str| {
        json!({"cniVersion": version, "name": "ovn-vpc-external-network", "type": "macvlan",
               "master": "ext0", "mode": "bridge",
               "ipam": {"type": "kube-ovn", "server_socket": socket, "provider": provider}})
    };
    let macvlan = |command: &str, version: &str| {
        let cni_path = format!("{}:/usr/lib/cni", bed.node(1).bin_dir.display());
        support::run_with_stdin(
            std::process::Command::new("ip")
                .args(["netns", "exec", &node, "/usr/lib/cni/macvlan"])
                .env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .env("CNI_COMMAND", command)
                .env("CNI_PATH", cni_path)
                .envs(pod.env("net2")),
            &conf(version),
        )
    };

    let add = macvlan("ADD", "0.3.1");
    add.assert_ok("macvlan ADD with kube-ovn IPAM");
    let result = add.json();
    let ips = result["ips"].as_array().expect("ips");
    assert_eq!(ips.len(), 1, "{result}");
    assert_eq!(ips[0]["address"], "172.19.0.10/24");
    assert_eq!(ips[0]["gateway"], "172.19.0.1");
    assert_eq!(addresses(&pod, "net2"), vec!["172.19.0.10/24".to_string()]);
    let routes = pod.ip(&["route", "show", "dev", "net2"]);
    assert!(
        routes.contains("198.51.100.0/24 via 172.19.0.1"),
        "{routes}"
    );
    // The primary network is untouched and no OVS port was made for it.
    assert_eq!(pod.ip(&["addr", "show", "eth0"]), eth0_before);
    assert_eq!(pod.ip(&["route", "show", "default"]), default_before);
    assert!(bed
        .interfaces_with(1, "sandbox", &pod.container_id)
        .is_empty());

    // Our IPAM as called directly (what macvlan does on ADD): a pure IPAM result.
    let direct = plugin(
        &bed.node(1).bin_dir,
        "ADD",
        &conf("1.0.0"),
        &pod.env("net2"),
    );
    direct.assert_ok("IPAM ADD");
    let ipam = direct.json();
    assert!(ipam.get("interfaces").is_none(), "{ipam}");
    assert!(ipam["ips"][0].get("interface").is_none(), "{ipam}");
    assert_eq!(ipam["ips"][0]["address"], "172.19.0.10/24");

    // A provider the controller never annotated: the plugin waits, then says which annotation
    // is missing (code 11, try again later), and macvlan passes that on.
    let mut other = conf("0.3.1");
    other["ipam"]["provider"] = json!("other-external.kube-system");
    let cni_path = format!("{}:/usr/lib/cni", bed.node(1).bin_dir.display());
    let failed = support::run_with_stdin(
        std::process::Command::new("ip")
            .args(["netns", "exec", &node, "/usr/lib/cni/macvlan"])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", "ADD")
            .env("CNI_PATH", &cni_path)
            .envs(pod.env("net3")),
        &other,
    );
    assert_ne!(failed.code, 0, "{} {}", failed.stdout, failed.stderr);
    assert!(
        failed
            .stdout
            .contains("other-external.kube-system.kubernetes.io/allocated"),
        "{}",
        failed.stdout
    );
    // The runtime DELs a failed ADD: macvlan removes whatever it made, our IPAM succeeds.
    let cleanup = support::run_with_stdin(
        std::process::Command::new("ip")
            .args(["netns", "exec", &node, "/usr/lib/cni/macvlan"])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", "DEL")
            .env("CNI_PATH", &cni_path)
            .envs(pod.env("net3")),
        &other,
    );
    cleanup.assert_ok("DEL after a failed ADD");
    assert!(!pod.has_link("net3"), "net3 left after DEL");

    // DEL: macvlan removes its link; our IPAM holds nothing on the node and succeeds, also
    // with the daemon's socket gone.
    let del = macvlan("DEL", "0.3.1");
    del.assert_ok("macvlan DEL");
    assert!(!pod.has_link("net2"));
    let mut gone = conf("0.3.1");
    gone["ipam"]["server_socket"] = json!("/nonexistent/kube-ovn.sock");
    plugin(&bed.node(1).bin_dir, "DEL", &gone, &pod.env("net2")).assert_ok("IPAM DEL");
}
