//! The node as the operator installs it: `kube-ovn chassis` (the `ovs-ovn` DaemonSet) and
//! `kube-ovn node --ovs external` (the `kube-ovn-cni` DaemonSet) side by side in each node's
//! netns, the tunnel endpoint from the Node annotation. Restarting the node role loses no
//! packet between pods; restarting the chassis interrupts traffic (the gap is printed);
//! deleting the `KubeOvn` object makes both roles remove everything they put on the node, and
//! installing again gives a still-running pod its interface back with the same address.

mod node_support;
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use node_support::*;
use support::{process_alive, OvnSandbox};

/// Dropped in field order: roles stop before the sandbox goes.
struct Bed {
    roles: Vec<NodeDaemon>,
    nodes: Vec<ChassisNode>,
    kube: Kube,
    sandbox: OvnSandbox,
    dir: tempfile::TempDir,
}

impl Bed {
    fn up(nodes: usize) -> Bed {
        let sandbox = OvnSandbox::up(0);
        let kube = Kube::start();
        let dir = tempfile::Builder::new()
            .prefix("kovn-inst")
            .tempdir_in("/tmp")
            .expect("tmp");
        let nodes: Vec<ChassisNode> = (1..=nodes)
            .map(|n| ChassisNode::up(&sandbox, &kube, n, dir.path()))
            .collect();
        let mut bed = Bed {
            roles: Vec::new(),
            nodes,
            kube,
            sandbox,
            dir,
        };
        for n in 1..=bed.nodes.len() {
            let role = bed.start_role(n);
            bed.roles.push(role);
        }
        bed
    }

    /// `kube-ovn node --ovs external --tunnel-nic ul0` on node `n`, healthy.
    fn start_role(&self, n: usize) -> NodeDaemon {
        let tunnel = format!("--tunnel-nic={TUNNEL_NIC}");
        let node = &self.nodes[n - 1];
        NodeDaemon::start(
            &self.sandbox,
            n,
            &node.kubeconfig,
            self.dir.path(),
            &[&tunnel],
        )
    }

    fn restart_role(&mut self, n: usize) {
        let status = self.roles[n - 1].stop().expect("node role ran");
        assert!(status.success(), "SIGTERM exits 0: {status}");
        self.roles[n - 1] = self.start_role(n);
    }

    /// Pod `name` on node `n`: LSP, the networks annotation asking for `attachnet` (Multus
    /// names it net1), allocation annotations, netns with eth0, pod IP in status.
    fn pod(&self, n: usize, name: &str, ip: &str, mac: &str) -> PodNetns {
        create_lsp(&self.sandbox, name, ip, mac);
        let mut annotations = allocation(PROVIDER, ip, mac);
        annotations.insert("k8s.v1.cni.cncf.io/networks".into(), "attachnet".into());
        self.kube
            .create_pod(name, &format!("node{n}"), &annotations);
        let pod = PodNetns::new(&self.sandbox, n, name, self.dir.path());
        self.kube.set_pod_ip(name, &pod.eth0_ip);
        pod
    }

    /// Multus's ADD of `pod`'s net1 on node `n`.
    fn add(&self, n: usize, pod: &PodNetns) {
        let role = &self.roles[n - 1];
        plugin(
            &role.bin_dir,
            "ADD",
            &nad_config("1.0.0", &role.socket),
            &pod.env("net1"),
        )
        .assert_ok(&format!("ADD of {}", pod.pod));
    }

    /// Multus's DEL of `pod`'s net1 on node `n`.
    fn del(&self, n: usize, pod: &PodNetns) {
        let role = &self.roles[n - 1];
        plugin(
            &role.bin_dir,
            "DEL",
            &nad_config("1.0.0", &role.socket),
            &pod.env("net1"),
        )
        .assert_ok(&format!("DEL of {}", pod.pod));
    }

    /// Our OVS interface rows on node `n` as sorted `name uuid` lines: unchanged means
    /// nothing was unplugged or plugged again.
    fn interface_rows(&self, n: usize) -> Vec<String> {
        let mut rows = lines(&self.vsctl(
            n,
            &[
                "--bare",
                "--columns=name,_uuid",
                "--format=csv",
                "--no-headings",
                "find",
                "interface",
                "external_ids:vendor=kube-ovn",
            ],
        ));
        rows.sort();
        rows
    }

    fn vsctl(&self, n: usize, args: &[&str]) -> String {
        self.sandbox.vsctl(n, args)
    }

    /// OVS interfaces of node `n` that we plugged (vendor kube-ovn).
    fn our_interfaces(&self, n: usize) -> Vec<String> {
        lines(&self.vsctl(
            n,
            &[
                "--bare",
                "--columns=name",
                "find",
                "interface",
                "external_ids:vendor=kube-ovn",
            ],
        ))
    }
}

fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// `net1`'s IPv4 address with prefix and its MAC in `pod`, if it has a net1.
fn net1(pod: &PodNetns) -> Option<(String, String)> {
    if !pod.has_link("net1") {
        return None;
    }
    let links = pod.ip_json(&["addr", "show", "dev", "net1"]);
    let link = &links[0];
    let mac = link["address"].as_str().expect("mac").to_string();
    let addr = link["addr_info"]
        .as_array()
        .expect("addr_info")
        .iter()
        .find(|a| a["family"] == "inet")
        .map(|a| format!("{}/{}", a["local"].as_str().expect("ip"), a["prefixlen"]))
        .unwrap_or_default();
    Some((addr, mac))
}

/// Waits until `from` reaches `ip` with one ping (60 s at most).
fn wait_reachable(from: &PodNetns, ip: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ok = Command::new("ip")
            .args(["netns", "exec", &from.name, "ping", "-c1", "-W1", ip])
            .stdout(Stdio::null())
            .status()
            .expect("ping")
            .success();
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "{} never reached {ip}", from.pod);
    }
}

/// `ping -D -i 0.01` from `from` to `ip` in the background.
fn start_ping(from: &PodNetns, ip: &str, count: u32) -> Child {
    Command::new("ip")
        .args([
            "netns", "exec", &from.name, "ping", "-D", "-i", "0.01", "-W", "1",
        ])
        .args(["-c", &count.to_string(), ip])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ping")
}

/// What a finished ping reported.
struct PingReport {
    sent: u32,
    received: u32,
    /// The longest time between two consecutive replies.
    longest_gap: Duration,
}

fn finish_ping(child: Child) -> PingReport {
    let out = child.wait_with_output().expect("ping ran");
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no ping summary: {text}"));
    let number = |before: &str| -> u32 {
        let words: Vec<&str> = summary
            .split([',', ' '])
            .filter(|w| !w.is_empty())
            .collect();
        let i = words
            .iter()
            .position(|w| *w == before)
            .unwrap_or_else(|| panic!("{before:?} in {summary}"));
        words[i - 1].parse().expect("count")
    };
    let stamps: Vec<f64> = text
        .lines()
        .filter(|l| l.contains("bytes from"))
        .filter_map(|l| l.strip_prefix('[')?.split(']').next()?.parse().ok())
        .collect();
    let longest = stamps.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    PingReport {
        sent: number("packets"),
        received: number("received"),
        longest_gap: Duration::from_secs_f64(longest),
    }
}

#[test]
fn restarting_the_node_role_loses_no_packet_and_a_chassis_restart_is_a_measured_gap() {
    let mut bed = Bed::up(2);
    let a = bed.pod(1, "a", "10.66.0.11", "0a:58:0a:42:00:0b");
    let b = bed.pod(2, "b", "10.66.0.12", "0a:58:0a:42:00:0c");
    bed.add(1, &a);
    bed.add(2, &b);
    // The chassis is the node role's: br-phy holds the NIC, the encap IP is the annotation's.
    assert_eq!(bed.vsctl(1, &["port-to-br", TUNNEL_NIC]), "br-phy");
    assert_eq!(
        bed.vsctl(
            1,
            &["get", "open_vswitch", ".", "external_ids:ovn-encap-ip"]
        ),
        "\"172.30.0.11\""
    );
    wait_reachable(&a, "10.66.0.12");

    // 10 ms pings across the tunnel while both node roles restart, one after the other.
    let rows = [bed.interface_rows(1), bed.interface_rows(2)];
    assert_eq!(rows[0].len(), 1, "{rows:?}");
    let ping = start_ping(&a, "10.66.0.12", 800);
    std::thread::sleep(Duration::from_millis(500));
    bed.restart_role(1);
    bed.restart_role(2);
    let report = finish_ping(ping);
    assert!(report.sent > 0);
    assert_eq!(
        report.received, report.sent,
        "packets lost while the node roles restarted"
    );
    // The restarted roles adopted the ports as they were.
    assert_eq!([bed.interface_rows(1), bed.interface_rows(2)], rows);

    // The node role that came back serves a pod added meanwhile.
    let c = bed.pod(1, "c", "10.66.0.13", "0a:58:0a:42:00:0d");
    bed.add(1, &c);
    wait_reachable(&c, "10.66.0.12");

    // A chassis restart takes the data path down: measure for how long.
    let ping = start_ping(&a, "10.66.0.12", 3000);
    std::thread::sleep(Duration::from_millis(500));
    let status = bed.nodes[0].stop_chassis().expect("chassis ran");
    assert!(status.success(), "chassis SIGTERM exits 0: {status}");
    let down = Command::new("ip")
        .args(["netns", "exec", &a.name, "ping", "-c2", "-W1", "10.66.0.12"])
        .stdout(Stdio::null())
        .status()
        .expect("ping");
    assert!(!down.success(), "traffic flows without the chassis");
    let dir = bed.dir.path().to_path_buf();
    bed.nodes[0].start_chassis(&dir);
    wait_reachable(&a, "10.66.0.12");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(ping.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    );
    let report = finish_ping(ping);
    eprintln!(
        "chassis restart: longest gap between replies {:?} ({} of {} lost)",
        report.longest_gap,
        report.sent - report.received,
        report.sent
    );
    assert!(
        report.received < report.sent,
        "the chassis restart lost nothing?"
    );

    // b's port, plugged before its node role restarted, goes with DEL.
    bed.del(2, &b);
    assert!(bed.interface_rows(2).is_empty(), "b's port stays");
    assert!(!b.has_link("net1"));
}

#[test]
fn uninstall_leaves_nothing_and_reinstall_gives_the_running_pod_its_interface_back() {
    let mut bed = Bed::up(1);
    let a = bed.pod(1, "a", "10.66.0.21", "0a:58:0a:42:00:15");
    bed.add(1, &a);
    // Annotated, never ADDed: pre-plugged.
    let _p = bed.pod(1, "p", "10.66.0.22", "0a:58:0a:42:00:16");
    let deadline = Instant::now() + Duration::from_secs(30);
    while bed.our_interfaces(1).len() < 2 {
        assert!(Instant::now() < deadline, "p was never pre-plugged");
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = net1(&a).expect("a has net1");
    let node_ns = bed.nodes[0].netns.clone();
    let hosts = bed.our_interfaces(1);
    let bin_dir = bed.roles[0].bin_dir.clone();

    let chassis = |table: &str| {
        bed.sandbox
            .sbctl(&["--bare", "--columns=name", "list", table])
    };
    assert_eq!(
        chassis("Chassis").lines().count(),
        1,
        "the node is a chassis"
    );
    bed.kube.delete_kubeovn();
    let status = bed.roles[0].stop().expect("node role ran");
    assert!(status.success(), "{status}\n{}", bed.roles[0].log_text());
    let log = bed.roles[0].log_text();
    assert!(log.contains("uninstalled from the node"), "{log}");
    // The node left the cluster: its Chassis rows are gone from SB (ovn-controller, still
    // running until the chassis stops below, no longer has a system-id to write them back).
    assert_eq!(
        chassis("Chassis").trim(),
        "",
        "the chassis stays in SB:\n{log}"
    );
    assert_eq!(chassis("Chassis_Private").trim(), "", "{log}");
    assert!(!bin_dir.join("kube-ovn").exists(), "CNI plugin left");
    assert!(bed.our_interfaces(1).is_empty(), "OVS ports left");
    for host in &hosts {
        assert!(!link_in(&node_ns, host), "veth {host} left");
    }
    assert!(!a.has_link("net1"), "the pod-side interface stays");
    // br-int may be back already (ovn-controller makes it); the chassis removes it below.
    assert!(
        !bed.vsctl(1, &["list-br"]).contains("br-phy"),
        "br-phy left"
    );
    assert_eq!(
        bed.vsctl(
            1,
            &[
                "--if-exists",
                "get",
                "open_vswitch",
                ".",
                "external_ids:system-id"
            ]
        ),
        ""
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while link_in(&node_ns, "br-phy") {
        assert!(Instant::now() < deadline, "br-phy's interface stays");
        std::thread::sleep(Duration::from_millis(100));
    }
    let nic = tool("ip", &["-n", &node_ns, "-o", "link", "show", TUNNEL_NIC]);
    assert!(nic.contains(",UP"), "tunnel NIC not given back up: {nic}");
    assert!(!nic.contains("master"), "{nic}");

    let pids = bed.nodes[0].daemon_pids();
    assert_eq!(pids.len(), 3, "{pids:?}");
    let status = bed.nodes[0].stop_chassis().expect("chassis ran");
    assert!(status.success(), "{status}");
    assert!(pids.iter().all(|p| !process_alive(*p)), "{pids:?}");
    // Nor did ovn-controller write it back before it stopped.
    assert_eq!(chassis("Chassis").trim(), "", "the chassis came back");
    assert_eq!(
        bed.nodes[0].netns_pids(),
        Vec::<String>::new(),
        "processes left in the node"
    );
    assert!(!bed.nodes[0].run_dir.exists(), "chassis files left");
    assert!(!link_in(&node_ns, "br-int"), "br-int's interface stays");

    // Install again: the running pod gets net1 back with its address and MAC.
    bed.kube.create_kubeovn();
    let dir = bed.dir.path().to_path_buf();
    bed.nodes[0].start_chassis(&dir);
    bed.roles[0] = bed.start_role(1);
    let deadline = Instant::now() + Duration::from_secs(30);
    while net1(&a).is_none() {
        assert!(
            Instant::now() < deadline,
            "a's net1 never came back\n{}",
            bed.roles[0].log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(net1(&a).expect("net1"), before);
    let c = bed.pod(1, "c", "10.66.0.23", "0a:58:0a:42:00:17");
    bed.add(1, &c);
    wait_reachable(&c, "10.66.0.21");
    // The kubelet's DEL (its sandbox id, which the rebuild never learnt) finds it by netns.
    bed.del(1, &a);
    assert!(!a.has_link("net1"), "the rebuilt net1 stays after DEL");
}

/// `kube-ovn node --tunnel-nic` on a node whose annotation is `annotation`: its stderr.
fn start_failure(kube: &Kube, dir: &Path, node: &str, annotation: Option<&str>) -> String {
    let annotations: BTreeMap<String, String> = annotation
        .map(|a| ("kube-ovn.io/tunnel-address".to_string(), a.to_string()))
        .into_iter()
        .collect();
    kube.create_node(node, &annotations);
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, kube.server.kubeconfig_yaml()).expect("kubeconfig");
    let out = Command::new(env!("CARGO_BIN_EXE_kube-ovn"))
        .args([
            "node",
            "--ovs=external",
            "--datapath=netdev",
            "--tunnel-nic=eth9",
        ])
        .arg(format!("--node-name={node}"))
        .arg("--ovn-sb=tcp:172.31.0.10:6642,tcp:172.31.0.11:6642")
        .arg(format!("--cni-bin-dir={}", dir.join("bin").display()))
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("NODE_IP")
        .output()
        .expect("run kube-ovn node");
    assert!(!out.status.success(), "started without a tunnel address");
    assert!(!dir.join("bin").exists(), "installed before failing");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_missing_or_bad_tunnel_address_annotation_is_a_clear_error() {
    let kube = Kube::start();
    let dir = tempfile::tempdir().expect("tmp");
    let missing = start_failure(&kube, dir.path(), "bare", None);
    assert!(
        missing.contains("node bare has no annotation kube-ovn.io/tunnel-address")
            && missing
                .contains("kubectl annotate node bare kube-ovn.io/tunnel-address=172.31.1.10/24"),
        "{missing}"
    );
    let bad = start_failure(&kube, dir.path(), "typo", Some("172.31.1.10"));
    assert!(
        bad.contains("annotation kube-ovn.io/tunnel-address=\"172.31.1.10\" is not an address with its prefix"),
        "{bad}"
    );
}
