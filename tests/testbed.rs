//! The OVN test bed itself: pods on one node and across two nodes reach each
//! other over OVN, and teardown leaves nothing behind.

mod support;

use support::{netns_with_prefix, process_alive, OvnSandbox};

/// One logical switch with a port per (name, mac, ip).
fn switch_with_ports(sb: &OvnSandbox, ports: &[(&str, &str, &str)]) {
    let mut args: Vec<String> = vec!["ls-add".into(), "ls1".into()];
    for (name, mac, ip) in ports {
        args.extend(["--", "lsp-add", "ls1", name].map(String::from));
        args.extend([
            "--".into(),
            "lsp-set-addresses".into(),
            name.to_string(),
            format!("{mac} {ip}"),
        ]);
    }
    sb.nbctl(&args.iter().map(String::as_str).collect::<Vec<_>>());
}

#[test]
fn two_pods_on_one_node_ping_each_other() {
    let sb = OvnSandbox::up(1);
    switch_with_ports(
        &sb,
        &[
            ("a", "0a:00:00:00:00:01", "10.0.0.11"),
            ("b", "0a:00:00:00:00:02", "10.0.0.12"),
        ],
    );
    sb.attach_pod(1, "a", "a", "0a:00:00:00:00:01", "10.0.0.11/24");
    sb.attach_pod(1, "b", "b", "0a:00:00:00:00:02", "10.0.0.12/24");

    assert!(sb.ping(&sb.pod_netns("a"), "10.0.0.12"), "a cannot reach b");
    assert!(sb.ping(&sb.pod_netns("b"), "10.0.0.11"), "b cannot reach a");
    // An address with no port behind it stays unreachable: the pings above are OVN's doing.
    assert!(!sb
        .exec_in(
            &sb.pod_netns("a"),
            &["ping", "-c", "1", "-W", "1", "10.0.0.99"]
        )
        .status
        .success());
}

#[test]
fn pods_on_two_nodes_ping_over_geneve() {
    let sb = OvnSandbox::up(2);
    switch_with_ports(
        &sb,
        &[
            ("a", "0a:00:00:00:01:01", "10.1.0.11"),
            ("c", "0a:00:00:00:01:03", "10.1.0.13"),
        ],
    );
    sb.attach_pod(1, "a", "a", "0a:00:00:00:01:01", "10.1.0.11/24");
    sb.attach_pod(2, "c", "c", "0a:00:00:00:01:03", "10.1.0.13/24");

    assert!(
        sb.ping(&sb.pod_netns("a"), "10.1.0.13"),
        "cross-node ping failed"
    );
    // The traffic went through a geneve tunnel between the two chassis.
    let tunnels = sb.vsctl(
        1,
        &[
            "--bare",
            "--columns=type",
            "find",
            "interface",
            "type=geneve",
        ],
    );
    assert!(
        tunnels.contains("geneve"),
        "node 1 has no geneve tunnel port: {tunnels:?}"
    );
    let binding = std::process::Command::new("ovn-sbctl")
        .arg(format!("--db={}", sb.sb_endpoint()))
        .args([
            "--bare",
            "--columns=chassis",
            "find",
            "port_binding",
            "logical_port=c",
        ])
        .output()
        .expect("ovn-sbctl");
    assert!(
        !String::from_utf8_lossy(&binding.stdout).trim().is_empty(),
        "port c is not bound"
    );
}

#[test]
fn teardown_leaves_no_namespaces_processes_or_files() {
    let sb = OvnSandbox::up(2);
    switch_with_ports(&sb, &[("a", "0a:00:00:00:02:01", "10.2.0.11")]);
    sb.attach_pod(1, "a", "a", "0a:00:00:00:02:01", "10.2.0.11/24");
    let prefix = format!("{}-", sb.prefix());
    let pids = sb.daemon_pids();
    let dir = sb.dir().to_path_buf();
    // central: nb, sb, northd; per node: ovsdb-server, ovs-vswitchd, ovn-controller
    assert_eq!(pids.len(), 3 + 3 * 2, "unexpected daemon count: {pids:?}");
    assert!(pids.iter().all(|p| process_alive(*p)));
    // underlay, two nodes, one pod
    assert_eq!(netns_with_prefix(&prefix).len(), 4);

    drop(sb);

    assert_eq!(netns_with_prefix(&prefix), Vec::<String>::new());
    let alive: Vec<_> = pids.into_iter().filter(|p| process_alive(*p)).collect();
    assert!(alive.is_empty(), "daemons still running: {alive:?}");
    assert!(!dir.exists(), "{} still exists", dir.display());
}

#[test]
fn teardown_runs_after_a_failing_test() {
    let mut prefix = String::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let sb = OvnSandbox::up(1);
        prefix = format!("{}-", sb.prefix());
        panic!("deliberate failure inside a test using the sandbox");
    }));
    assert!(result.is_err());
    assert!(!prefix.is_empty());
    assert_eq!(netns_with_prefix(&prefix), Vec::<String>::new());
}
