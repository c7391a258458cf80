//! OVN-native DHCP over the real userspace datapath: a subnet's DHCP_Options rows (as the
//! Subnet controller plans them for `enableDHCP`) on the pod ports, and busybox's `udhcpc` in
//! a pod network namespace, with no address of its own, gets the port's address, the
//! gateway as router and the lease time from OVN. Disabling DHCP removes the rows and the
//! references, and the client then gets no lease.

mod support;

use std::collections::BTreeMap;

use kube_ovn::api::subnet::{Subnet, SubnetSpec};
use kube_ovn::operator::dhcp;
use kube_ovn::ovn::{LspSpec, Northbound};
use support::OvnSandbox;

fn ours(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut m: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    m.insert("vendor".into(), "kube-ovn".into());
    m
}

/// `udhcpc` once on net1 of `netns`: its output (a lease line when OVN answered).
fn udhcpc(sandbox: &OvnSandbox, netns: &str) -> String {
    let out = sandbox.exec_in(
        netns,
        &[
            "busybox",
            "udhcpc",
            "-i",
            "net1",
            "-f",
            "-q",
            "-n",
            "-t",
            "4",
            "-T",
            "1",
            "-s",
            "/bin/true",
        ],
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udhcpc_in_a_pod_gets_its_port_address_from_ovn() {
    let sandbox = tokio::task::spawn_blocking(|| OvnSandbox::up(1))
        .await
        .unwrap();
    let nb = Northbound::connect(&sandbox.nb_endpoint()).await.unwrap();
    nb.ensure_router("vpc1", &ours(&[])).await.unwrap();
    nb.ensure_switch("s1", &ours(&[])).await.unwrap();
    nb.ensure_router_port_pair(
        "vpc1",
        "s1",
        &["10.77.0.1/24".to_owned()],
        "0a:00:00:77:00:01",
    )
    .await
    .unwrap();
    let port = "dhcp-pod.default.n1.default.ovn";
    nb.ensure_logical_switch_port(&LspSpec {
        name: port.into(),
        switch: "s1".into(),
        mac: "0a:58:0a:4d:00:05".parse().unwrap(),
        ips: vec!["10.77.0.5".parse().unwrap()],
        port_security: true,
        external_ids: ours(&[("pod", "default/dhcp-pod"), ("ls", "s1")]),
    })
    .await
    .unwrap();

    // The rows the Subnet controller writes for enableDHCP with a shorter lease.
    let subnet = Subnet::new(
        "s1",
        SubnetSpec {
            enable_dhcp: Some(true),
            dhcp_v4_options: Some("lease_time=600,dns_server=10.77.0.53".into()),
            ..Default::default()
        },
    );
    let rows = dhcp::plan(
        &subnet,
        &["10.77.0.0/24".parse().unwrap()],
        &[Some("10.77.0.1".parse().unwrap())],
        "0a:00:00:77:00:01".parse().unwrap(),
    )
    .unwrap();
    assert!(nb
        .apply(|t| t.sync_dhcp_options("s1", &rows))
        .await
        .unwrap());
    assert!(
        !nb.apply(|t| t.sync_dhcp_options("s1", &rows))
            .await
            .unwrap(),
        "a second sync writes nothing"
    );
    let uuid = sandbox.nbctl(&[
        "--bare",
        "--columns=_uuid",
        "find",
        "dhcp_options",
        "external_ids:ls=s1",
    ]);
    assert_eq!(
        sandbox.nbctl(&["get", "logical_switch_port", port, "dhcpv4_options"]),
        uuid.trim()
    );
    let ids = sandbox.nbctl(&["get", "dhcp_options", uuid.trim(), "external_ids"]);
    assert!(
        ids.contains("protocol=IPv4") && ids.contains("vendor=kube-ovn"),
        "{ids}"
    );

    // A pod whose net1 has the port's MAC and no address asks OVN.
    let sandbox = std::sync::Arc::new(sandbox);
    let s = sandbox.clone();
    let netns = tokio::task::spawn_blocking(move || {
        s.attach_pod(1, "dhcp-pod", port, "0a:58:0a:4d:00:05", "192.0.2.1/32");
        let netns = s.pod_netns("dhcp-pod");
        s.exec_in(&netns, &["ip", "addr", "flush", "dev", "net1"]);
        let lease = udhcpc(&s, &netns);
        (netns, lease)
    })
    .await
    .unwrap();
    let (netns, lease) = netns;
    eprintln!("udhcpc: {lease}");
    assert!(
        lease.contains("lease of 10.77.0.5 obtained") && lease.contains("lease time 600"),
        "no lease from OVN: {lease}"
    );

    // DHCP off: rows and references go; no lease any more.
    assert!(nb.apply(|t| t.sync_dhcp_options("s1", &[])).await.unwrap());
    assert_eq!(
        sandbox
            .nbctl(&["--bare", "--columns=_uuid", "find", "dhcp_options"])
            .trim(),
        ""
    );
    assert_eq!(
        sandbox.nbctl(&["get", "logical_switch_port", port, "dhcpv4_options"]),
        "[]"
    );
    let s = sandbox.clone();
    let lease = tokio::task::spawn_blocking(move || {
        // ovn-controller needs a moment to drop the flows; poll a few times.
        let mut last = String::new();
        for _ in 0..5 {
            last = udhcpc(&s, &netns);
            if !last.contains("obtained") {
                break;
            }
        }
        last
    })
    .await
    .unwrap();
    assert!(!lease.contains("obtained"), "lease without DHCP: {lease}");
}
