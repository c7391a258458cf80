//! `kube-sim serve --nodes N --node-command …`: the command runs inside every node
//! (its network namespace and private directories) with the node's facts in its
//! environment, gets an address-less tunnel NIC, and is stopped with SIGTERM.

use std::path::Path;
use std::time::Duration;

async fn wait_for_file(path: &Path) -> String {
    for _ in 0..600 {
        if let Ok(text) = std::fs::read_to_string(path) {
            if text.ends_with('\n') {
                return text;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{} never appeared", path.display());
}

#[tokio::test]
async fn node_commands_run_inside_each_node_and_stop_with_the_simulator() {
    let dir = tempfile::tempdir_in("/tmp").expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    let state = dir.path().join("nodes");
    // Writes what it sees into the node-private /run/openvswitch, then waits for SIGTERM.
    let command = r#"{ echo "$NODE_NAME $NODE_IP $TUNNEL_NIC $TUNNEL_IP";
        ip -o -4 addr show dev "$TUNNEL_NIC" | wc -l;
        ip -o link show dev "$TUNNEL_NIC" | grep -c 'state UP\|LOWER_UP'; } > /run/openvswitch/facts.tmp
        mv /run/openvswitch/facts.tmp /run/openvswitch/facts
        trap 'echo stopped > /run/openvswitch/stopped; exit 0' TERM
        while :; do sleep 0.1; done"#;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kube-sim"))
        .args(["serve", "--nodes", "2", "--kubeconfig"])
        .arg(&kubeconfig)
        .arg("--state-dir")
        .arg(&state)
        .args(["--node-command", command])
        .kill_on_drop(true)
        .spawn()
        .expect("kube-sim starts");

    let facts1 = wait_for_file(&state.join("node-1/run-openvswitch/facts")).await;
    let facts2 = wait_for_file(&state.join("node-2/run-openvswitch/facts")).await;
    let lines1: Vec<&str> = facts1.lines().collect();
    assert_eq!(lines1[0], "node-1 172.31.0.10 ul1 172.31.1.10/24");
    assert_eq!(lines1[1], "0", "the tunnel NIC carries no address");
    assert_eq!(lines1[2], "1", "the tunnel NIC is up");
    assert!(
        facts2.starts_with("node-2 172.31.0.11 ul1 172.31.1.11/24\n"),
        "{facts2}"
    );

    // As with Multus installed, the NetworkAttachmentDefinition CRD is there.
    let crd = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args([
            "get",
            "crd",
            "network-attachment-definitions.k8s.cni.cncf.io",
            "-o",
            "name",
        ])
        .output()
        .expect("kubectl");
    assert!(
        crd.status.success(),
        "{}",
        String::from_utf8_lossy(&crd.stderr)
    );

    let pid = nix::unistd::Pid::from_raw(child.id().expect("running") as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("exits")
        .expect("wait");
    assert!(status.success(), "{status:?}");
    for node in ["node-1", "node-2"] {
        let stopped = state.join(format!("{node}/run-openvswitch/stopped"));
        assert!(
            stopped.exists(),
            "{node}'s command was not stopped with SIGTERM"
        );
    }
}
