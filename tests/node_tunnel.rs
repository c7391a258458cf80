//! Userspace tunnelling on the netdev datapath: `ensure_tunnel_bridge` puts the tunnel
//! NIC on a netdev `br-phy` with the endpoint address, idempotently, and two such
//! "nodes" reach each other's endpoint through OVS.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kube_ovn::node::tunnel::{ensure_tunnel_bridge, TUNNEL_BRIDGE};
use kube_ovn::ovn::Vswitch;
use support::{run, stdout};

/// A network namespace with its own ovsdb-server and netdev ovs-vswitchd.
struct OvsNode {
    netns: String,
    dir: PathBuf,
}

impl OvsNode {
    fn start(netns: &str, dir: &Path) -> OvsNode {
        std::fs::create_dir_all(dir).expect("node dir");
        run(Command::new("ip").args(["netns", "add", netns]));
        let db = dir.join("conf.db");
        run(Command::new("ovsdb-tool")
            .arg("create")
            .arg(&db)
            .arg("/usr/share/openvswitch/vswitch.ovsschema"));
        let d = dir.display();
        run(Command::new("ip").args(["netns", "exec", netns]).args([
            "ovsdb-server",
            "--detach",
            "--no-chdir",
            "-vconsole:off",
            &format!("--pidfile={d}/ovsdb-server.pid"),
            &format!("--unixctl={d}/ovsdb-server.ctl"),
            &format!("--remote=punix:{d}/db.sock"),
            &db.display().to_string(),
        ]));
        run(Command::new("ovs-vsctl")
            .arg(format!("--db=unix:{d}/db.sock"))
            .args(["--no-wait", "init"]));
        run(Command::new("ip")
            .args(["netns", "exec", netns, "env"])
            .arg(format!("OVS_RUNDIR={d}"))
            .args([
                "ovs-vswitchd",
                "--detach",
                "--no-chdir",
                "-vconsole:off",
                &format!("--pidfile={d}/ovs-vswitchd.pid"),
                &format!("--unixctl={d}/ovs-vswitchd.ctl"),
                &format!("unix:{d}/db.sock"),
            ]));
        OvsNode {
            netns: netns.to_string(),
            dir: dir.to_path_buf(),
        }
    }

    fn db(&self) -> String {
        format!("unix:{}/db.sock", self.dir.display())
    }

    /// Runs `ensure_tunnel_bridge` inside this node's netns (netlink is per netns).
    fn ensure(&self, nic: &str, address: &str) {
        let netns = format!("/run/netns/{}", self.netns);
        let db = self.db();
        let (nic, address) = (nic.to_string(), address.parse().expect("CIDR"));
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&netns).expect("netns");
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let vswitch = Vswitch::connect(&db).await.expect("connect");
                let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
                ensure_tunnel_bridge(&vswitch, &nic, address, deadline)
                    .await
                    .expect("ensure_tunnel_bridge");
            });
        })
        .join()
        .expect("thread");
    }

    fn vsctl(&self, args: &[&str]) -> String {
        stdout(
            Command::new("ovs-vsctl")
                .arg(format!("--db={}", self.db()))
                .args(args),
        )
    }
}

impl Drop for OvsNode {
    fn drop(&mut self) {
        for daemon in ["ovs-vswitchd", "ovsdb-server"] {
            if let Ok(pid) = std::fs::read_to_string(self.dir.join(format!("{daemon}.pid"))) {
                let _ = Command::new("kill").arg(pid.trim()).status();
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

#[test]
fn two_nodes_reach_each_others_tunnel_endpoint_through_br_phy() {
    let dir = tempfile::tempdir_in("/tmp").expect("tempdir");
    let tag = format!("kovntun{}", std::process::id());
    let a = OvsNode::start(&format!("{tag}-a"), &dir.path().join("a"));
    let b = OvsNode::start(&format!("{tag}-b"), &dir.path().join("b"));
    run(Command::new("ip").args([
        "link", "add", "tun0", "netns", &a.netns, "type", "veth", "peer", "name", "tun0", "netns",
        &b.netns,
    ]));

    a.ensure("tun0", "192.0.2.1/24");
    b.ensure("tun0", "192.0.2.2/24");
    // Idempotent: a second run changes nothing and does not fail.
    a.ensure("tun0", "192.0.2.1/24");

    assert_eq!(a.vsctl(&["port-to-br", "tun0"]), TUNNEL_BRIDGE);
    assert_eq!(
        a.vsctl(&["get", "bridge", TUNNEL_BRIDGE, "datapath_type"]),
        "netdev"
    );
    let addrs = stdout(Command::new("ip").args([
        "-n",
        &a.netns,
        "-o",
        "-4",
        "addr",
        "show",
        "dev",
        TUNNEL_BRIDGE,
    ]));
    assert_eq!(addrs.matches("192.0.2.1/24").count(), 1, "{addrs}");
    let offload =
        stdout(Command::new("ip").args(["netns", "exec", &a.netns, "ethtool", "-k", "tun0"]));
    assert!(offload.contains("tx-checksumming: off"), "{offload}");

    let ping = Command::new("ip")
        .args([
            "netns",
            "exec",
            &a.netns,
            "ping",
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "2",
            "192.0.2.2",
        ])
        .status()
        .expect("ping");
    assert!(
        ping.success(),
        "a cannot reach b's tunnel endpoint through br-phy"
    );
}
