//! `kube-ovn node --ovs embedded`: the node role runs the chassis itself (ovsdb-server,
//! ovs-vswitchd, ovn-controller under `--ovs-run-dir`), makes it a chassis of the sandbox's
//! OVN over OVSDB, reports ready once ovn-controller is connected, and takes its daemons down
//! with it on SIGTERM.

mod node_support;
mod support;

use std::time::Duration;

use node_support::{tool, Kube, NodeDaemon};
use support::{process_alive, stdout, OvnSandbox};

#[test]
fn the_embedded_chassis_joins_ovn_and_stops_with_the_node_role() {
    let sandbox = OvnSandbox::up(0);
    let kube = Kube::start();
    let dir = tempfile::Builder::new()
        .prefix("kovn-emb")
        .tempdir_in("/tmp")
        .expect("tmp");
    let netns = format!("{}-emb", sandbox.prefix());
    tool("ip", &["netns", "add", &netns]);
    tool("ip", &["-n", &netns, "link", "set", "lo", "up"]);
    let kubeconfig = kube.kubeconfig_in(&netns, dir.path());
    let run_dir = dir.path().join("ovs");
    let args = [
        "--node-name=emb1".to_string(),
        "--ovs=embedded".into(),
        format!("--ovs-run-dir={}", run_dir.display()),
        "--datapath=netdev".into(),
        format!("--ovn-sb={}", sandbox.sb_endpoint()),
        "--encap-ip=172.30.0.99".into(),
    ];
    let mut node = NodeDaemon::launch(&netns, "emb", &kubeconfig, dir.path(), &args, "info");
    node.wait_healthy(Duration::from_secs(90));

    let chassis = stdout(std::process::Command::new("ovn-sbctl").args([
        &format!("--db={}", sandbox.sb_endpoint()),
        "--bare",
        "--columns=name",
        "list",
        "chassis",
    ]));
    assert!(chassis.lines().any(|l| l.trim() == "emb1"), "{chassis}");
    let db = format!("--db=unix:{}", run_dir.join("db.sock").display());
    let vsctl = |args: &[&str]| {
        stdout(std::process::Command::new("ovs-vsctl").arg(&db).args(args))
            .trim_matches('"')
            .to_string()
    };
    assert_eq!(
        vsctl(&["get", "bridge", "br-int", "datapath_type"]),
        "netdev"
    );
    assert_eq!(vsctl(&["get", "bridge", "br-int", "fail_mode"]), "secure");
    for (key, want) in [
        ("system-id", "emb1"),
        ("ovn-encap-type", "geneve"),
        ("ovn-encap-ip", "172.30.0.99"),
        ("ovn-bridge-datapath-type", "netdev"),
    ] {
        assert_eq!(
            vsctl(&["get", "open_vswitch", ".", &format!("external_ids:{key}")]),
            want
        );
    }
    assert!(node.bin_dir.join("kube-ovn").exists());

    let pids: Vec<i32> = ["ovsdb-server", "ovs-vswitchd", "ovn-controller"]
        .iter()
        .map(|d| {
            let text = std::fs::read_to_string(run_dir.join(format!("{d}.pid")))
                .unwrap_or_else(|e| panic!("{d} pidfile: {e}"));
            text.trim().parse().expect("pid")
        })
        .collect();
    assert!(pids.iter().all(|p| process_alive(*p)), "{pids:?}");

    let status = node.stop().expect("ran");
    assert!(
        status.success(),
        "SIGTERM exits 0: {status}\n{}",
        node.log_text()
    );
    for pid in pids {
        assert!(!process_alive(pid), "daemon {pid} outlived the node role");
    }
    assert!(!node.socket.exists(), "CNI socket removed");
}
