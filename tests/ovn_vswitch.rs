//! Node-side Open_vSwitch operations against a real vswitch ovsdb-server,
//! read back with `ovs-vsctl`: the root row, bridges, plugging and unplugging pod
//! interfaces and reading ours back, waiting for `ovn-installed`, QoS
//! set/change/clear and the removal of unreferenced QoS/Queue rows.

mod ovsdb_support;

use std::collections::BTreeMap;
use std::time::Duration;

use kube_ovn::ovn::external_ids;
use kube_ovn::ovn::{QosKind, Vswitch};
use ovsdb_support::{csv_column, DbServer, VSWITCH_SCHEMA};
use tokio::time::Instant;

fn ids(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn node() -> (DbServer, Vswitch) {
    let db = DbServer::vswitch();
    let vs = Vswitch::connect(&db.endpoint()).await.unwrap();
    assert!(vs
        .ensure_bridge("br-int", "netdev", Some("secure"))
        .await
        .unwrap());
    (db, vs)
}

fn rows(db: &DbServer, table: &str) -> usize {
    db.vsctl(&[
        "--format=csv",
        "--no-headings",
        "--columns=_uuid",
        "list",
        table,
    ])
    .lines()
    .count()
}

#[tokio::test]
async fn bridges_are_ensured_once_and_corrected() {
    let (db, vs) = node().await;
    assert_eq!(db.vsctl(&["list-br"]), "br-int");
    assert_eq!(
        db.vsctl(&["get", "Bridge", "br-int", "datapath_type"]),
        "netdev"
    );
    assert_eq!(db.vsctl(&["get-fail-mode", "br-int"]), "secure");
    assert_eq!(
        db.vsctl(&["list-ifaces", "br-int"]),
        "",
        "only the internal port"
    );
    assert_eq!(
        db.vsctl(&["get", "Interface", "br-int", "type"]),
        "internal"
    );
    assert!(!vs
        .ensure_bridge("br-int", "netdev", Some("secure"))
        .await
        .unwrap());
    assert!(vs.ensure_bridge("br-int", "netdev", None).await.unwrap());
    assert_eq!(db.vsctl(&["get-fail-mode", "br-int"]), "");

    let want = ids(&[("system-id", "node1"), ("ovn-encap-type", "geneve")]);
    assert!(vs.set_ovs_external_ids(&want).await.unwrap());
    assert!(!vs.set_ovs_external_ids(&want).await.unwrap());
    db.vsctl(&["set", "Open_vSwitch", ".", "external_ids:other=kept"]);
    assert!(vs
        .set_ovs_external_ids(&ids(&[("system-id", "node2")]))
        .await
        .unwrap());
    assert_eq!(
        db.vsctl(&["get", "Open_vSwitch", ".", "external_ids:system-id"]),
        "node2"
    );
    assert_eq!(
        db.vsctl(&["get", "Open_vSwitch", ".", "external_ids:other"]),
        "kept"
    );
}

#[tokio::test]
async fn interfaces_are_plugged_once_stale_claims_stripped_and_unplugged() {
    let (db, vs) = node().await;
    let ext = ids(&[("iface-id", "a.ns.prov"), ("pod_name", "a")]);
    assert!(vs.plug_interface("br-int", "veth-a", &ext).await.unwrap());
    assert!(!vs.plug_interface("br-int", "veth-a", &ext).await.unwrap());
    assert_eq!(db.vsctl(&["list-ports", "br-int"]), "veth-a");
    assert_eq!(
        db.vsctl(&["get", "Interface", "veth-a", "external_ids:iface-id"]),
        "a.ns.prov"
    );

    // A new veth for the same logical port (pod recreated) replaces the old one.
    assert!(vs.plug_interface("br-int", "veth-b", &ext).await.unwrap());
    assert_eq!(db.vsctl(&["list-ports", "br-int"]), "veth-b");
    assert_eq!(rows(&db, "Interface"), 2, "br-int and veth-b");

    let changed = ids(&[("iface-id", "a.ns.prov"), ("pod_name", "a2")]);
    assert!(vs
        .plug_interface("br-int", "veth-b", &changed)
        .await
        .unwrap());
    assert_eq!(
        db.vsctl(&["get", "Interface", "veth-b", "external_ids:pod_name"]),
        "a2"
    );

    assert!(vs.unplug_interface("veth-b").await.unwrap());
    assert!(
        !vs.unplug_interface("veth-b").await.unwrap(),
        "absent is fine"
    );
    assert_eq!(db.vsctl(&["list-ports", "br-int"]), "");
    let err = vs
        .plug_interface("br-nope", "veth-c", &ext)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("bridge \"br-nope\" not found"),
        "{err}"
    );
}

/// Sets `ovn-installed` on interface `iface`, as ovn-controller does.
fn set_ovn_installed(db: &DbServer, iface: &str, installed: bool) {
    db.vsctl(&[
        "set",
        "Interface",
        iface,
        &format!("external_ids:ovn-installed={installed}"),
    ]);
}

/// The Open_vSwitch root rows, read with `ovsdb-client` (`ovs-vsctl` would insert one).
fn root_rows(db: &DbServer) -> usize {
    let out = std::process::Command::new("ovsdb-client")
        .args([
            "query",
            &db.endpoint(),
            r#"["Open_vSwitch",{"op":"select","table":"Open_vSwitch","where":[],"columns":["_uuid"]}]"#,
        ])
        .output()
        .expect("run ovsdb-client");
    assert!(out.status.success(), "ovsdb-client query: {out:?}");
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON answer");
    answer[0]["rows"].as_array().expect("rows").len()
}

#[tokio::test]
async fn a_fresh_database_gets_one_root_row() {
    let db = DbServer::start(VSWITCH_SCHEMA);
    let vs = Vswitch::connect(&db.endpoint()).await.unwrap();
    assert_eq!(root_rows(&db), 0);
    assert!(vs.ensure_root_row().await.unwrap());
    assert!(!vs.ensure_root_row().await.unwrap(), "there already");
    assert_eq!(root_rows(&db), 1);
}

#[tokio::test]
async fn our_interfaces_read_back_with_their_pod_and_bridge() {
    let (db, vs) = node().await;
    let mut pod = external_ids::ours([
        (external_ids::IFACE_ID, "a.ns.prov"),
        (external_ids::POD_NAME, "a"),
        (external_ids::POD_NAMESPACE, "ns"),
        (external_ids::POD_NETNS, "/var/run/netns/a"),
        (external_ids::POD_IFNAME, "net1"),
        (external_ids::SANDBOX, "cid-a"),
    ]);
    vs.plug_interface("br-int", "veth-a", &pod).await.unwrap();
    let preplugged = external_ids::ours([
        (external_ids::IFACE_ID, "b.ns.prov"),
        (external_ids::PREPLUG_PEER, "peer-b"),
    ]);
    vs.plug_interface("br-int", "veth-b", &preplugged)
        .await
        .unwrap();
    vs.plug_interface("br-int", "foreign", &ids(&[("iface-id", "x")]))
        .await
        .unwrap();

    let mut ours: Vec<_> = vs.our_interfaces().unwrap();
    ours.sort_by(|x, y| x.name.cmp(&y.name));
    let names: Vec<&str> = ours.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["veth-a", "veth-b"], "no foreign interface");
    let a = &ours[0];
    assert_eq!(a.iface_id(), Some("a.ns.prov"));
    assert_eq!(a.pod(), Some(("ns", "a")));
    assert_eq!(
        a.pod_netns(),
        Some(std::path::Path::new("/var/run/netns/a"))
    );
    assert_eq!(a.pod_ifname(), Some("net1"));
    assert!(!a.is_preplugged() && !a.is_ovn_installed());
    let b = &ours[1];
    assert!(b.is_preplugged());
    assert_eq!((b.pod(), b.pod_netns()), (None, None), "no sandbox yet");

    let by_sandbox = vs
        .interfaces_with_id(external_ids::SANDBOX, "cid-a")
        .unwrap();
    assert_eq!(by_sandbox, vec![a.clone()]);
    assert_eq!(vs.bridge_of("veth-a").unwrap().as_deref(), Some("br-int"));
    assert!(vs.bridge_exists("br-int").unwrap());
    assert!(!vs.bridge_exists("br-nope").unwrap());

    // ovn-controller's mark is kept and read back.
    set_ovn_installed(&db, "veth-a", true);
    vs.sync().await.unwrap();
    let a = vs.interface("veth-a").unwrap().expect("veth-a");
    assert!(a.is_ovn_installed());
    pod.insert(external_ids::OVN_INSTALLED.into(), "true".into());
    assert_eq!(a.external_ids, pod);

    vs.unplug_interface("veth-a").await.unwrap();
    assert_eq!(vs.bridge_of("veth-a").unwrap(), None, "off the bridge");
    assert_eq!(vs.interface("veth-nope").unwrap(), None);
}

#[tokio::test]
async fn ovn_installed_waiters_fire_now_later_or_time_out() {
    let (db, vs) = node().await;
    vs.plug_interface("br-int", "veth-a", &ids(&[("iface-id", "a")]))
        .await
        .unwrap();
    vs.plug_interface("br-int", "veth-b", &ids(&[("iface-id", "b")]))
        .await
        .unwrap();
    set_ovn_installed(&db, "veth-a", true);
    vs.sync().await.unwrap();
    let soon = Instant::now() + Duration::from_secs(20);
    vs.wait_ovn_installed("veth-a", soon)
        .await
        .expect("already installed");

    let pending = {
        let vs = vs.clone();
        tokio::spawn(async move {
            vs.wait_ovn_installed("veth-b", Instant::now() + Duration::from_secs(30))
                .await
        })
    };
    set_ovn_installed(&db, "veth-b", false);
    set_ovn_installed(&db, "veth-b", true);
    pending.await.unwrap().expect("fires once set");

    let err = vs
        .wait_ovn_installed("veth-never", Instant::now() + Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("veth-never"), "{err}");
}

#[tokio::test]
async fn qos_is_set_changed_and_cleared_without_leaking_rows() {
    let (db, vs) = node().await;
    vs.plug_interface("br-int", "veth-a", &ids(&[("iface-id", "a")]))
        .await
        .unwrap();
    vs.plug_interface("br-int", "veth-b", &ids(&[("iface-id", "b")]))
        .await
        .unwrap();

    // Pod egress 10 Mbit/s → interface ingress policing in kbit/s, burst 80 %.
    assert!(vs
        .set_interface_qos("veth-a", None, Some(10))
        .await
        .unwrap());
    assert_eq!(
        db.vsctl(&["get", "Interface", "veth-a", "ingress_policing_rate"]),
        "10000"
    );
    assert_eq!(
        db.vsctl(&["get", "Interface", "veth-a", "ingress_policing_burst"]),
        "8000"
    );
    assert_eq!(rows(&db, "QoS"), 0);

    // Pod ingress 5 Mbit/s → linux-htb QoS on the port with one queue.
    assert!(vs
        .set_interface_qos("veth-a", Some(5), Some(10))
        .await
        .unwrap());
    assert!(!vs
        .set_interface_qos("veth-a", Some(5), Some(10))
        .await
        .unwrap());
    let qos = db.vsctl(&["get", "Port", "veth-a", "qos"]);
    assert_eq!(db.vsctl(&["get", "QoS", &qos, "type"]), "linux-htb");
    let queue = db.vsctl(&["get", "QoS", &qos, "queues:0"]);
    assert_eq!(
        db.vsctl(&["get", "Queue", &queue, "other_config:max-rate"]),
        "\"5000000\""
    );

    // A new rate updates the queue in place.
    assert!(vs
        .set_interface_qos("veth-a", Some(7), Some(10))
        .await
        .unwrap());
    assert_eq!(db.vsctl(&["get", "Port", "veth-a", "qos"]), qos);
    assert_eq!(
        db.vsctl(&["get", "Queue", &queue, "other_config:max-rate"]),
        "\"7000000\""
    );

    // Switching kind replaces the QoS row and drops the old rows.
    assert!(vs
        .set_interface_qos_as("veth-b", QosKind::EgressPolicer, Some(8), None)
        .await
        .unwrap());
    let qb = db.vsctl(&["get", "Port", "veth-b", "qos"]);
    assert_eq!(db.vsctl(&["get", "QoS", &qb, "type"]), "egress-policer");
    assert_eq!(
        db.vsctl(&["get", "QoS", &qb, "other_config:cir"]),
        "\"1000000\""
    );
    assert!(vs
        .set_interface_qos_as("veth-b", QosKind::LinuxHtb, Some(8), None)
        .await
        .unwrap());
    assert_eq!((rows(&db, "QoS"), rows(&db, "Queue")), (2, 2));

    assert!(vs.clear_interface_qos("veth-a").await.unwrap());
    assert!(!vs.clear_interface_qos("veth-a").await.unwrap());
    assert_eq!(
        db.vsctl(&["get", "Interface", "veth-a", "ingress_policing_rate"]),
        "0"
    );
    assert_eq!(db.vsctl(&["get", "Port", "veth-a", "qos"]), "[]");
    assert_eq!((rows(&db, "QoS"), rows(&db, "Queue")), (1, 1));

    // Unplugging takes the port's QoS rows along.
    assert!(vs.unplug_interface("veth-b").await.unwrap());
    assert_eq!((rows(&db, "QoS"), rows(&db, "Queue")), (0, 0));
}

#[tokio::test]
async fn leaked_qos_rows_are_collected_and_foreign_ones_kept() {
    let (db, vs) = node().await;
    db.vsctl(&[
        "--",
        "--id=@q",
        "create",
        "Queue",
        "other_config:max-rate=1",
        "external_ids:vendor=kube-ovn",
        "--",
        "create",
        "QoS",
        "type=linux-htb",
        "queues:0=@q",
        "external_ids:vendor=kube-ovn",
    ]);
    db.vsctl(&[
        "create",
        "QoS",
        "type=linux-htb",
        "external_ids:vendor=someone-else",
    ]);
    vs.sync().await.unwrap();
    assert!(vs.collect_qos_garbage().await.unwrap());
    assert!(!vs.collect_qos_garbage().await.unwrap());
    let left = csv_column(&db.vsctl(&[
        "--format=csv",
        "--no-headings",
        "--columns=external_ids",
        "list",
        "QoS",
    ]));
    assert_eq!(left, ["{vendor=someone-else}"]);
    assert_eq!(rows(&db, "Queue"), 0);
}
