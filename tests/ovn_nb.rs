//! Northbound domain operations against a real OVN_Northbound ovsdb-server,
//! read back with `ovn-nbctl`: routers, switches, the router-port pair,
//! pod ports (single and batched), port groups, idempotency (the second
//! ensure writes nothing: the database log does not grow) and concurrent
//! writers.

mod ovsdb_support;

use std::collections::BTreeMap;
use std::process::Command;

use kube_ovn::ovn::{LspSpec, Northbound};
use ovsdb_support::{csv_column, DbServer};

fn ids(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Number of records in the database log: one per committed transaction.
fn log_records(db: &DbServer) -> usize {
    let out = Command::new("ovsdb-tool")
        .arg("show-log")
        .arg(db.db_file())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("record "))
        .count()
}

fn lsp(name: &str, switch: &str, mac: &str, ip: &str, pod: &str) -> LspSpec {
    LspSpec {
        name: name.into(),
        switch: switch.into(),
        mac: mac.parse().expect("valid MAC"),
        ips: vec![ip.parse().expect("valid IP")],
        port_security: true,
        external_ids: ids(&[("pod", pod), ("ls", switch), ("vendor", "kube-ovn")]),
    }
}

async fn vpc_with_subnet(db: &DbServer) -> Northbound {
    let nb = Northbound::connect(&db.endpoint()).await.unwrap();
    assert!(nb
        .ensure_router("vpc1", &ids(&[("vendor", "kube-ovn")]))
        .await
        .unwrap());
    assert!(nb
        .ensure_switch("net1", &ids(&[("vendor", "kube-ovn")]))
        .await
        .unwrap());
    assert!(nb
        .ensure_router_port_pair("vpc1", "net1", &["10.100.0.1/16"], "00:00:00:10:00:01")
        .await
        .unwrap());
    nb
}

#[tokio::test]
async fn router_switch_and_port_pair_are_created_once() {
    let db = DbServer::nb();
    let nb = vpc_with_subnet(&db).await;
    let router_port_networks =
        || db.nbctl(&["get", "Logical_Router_Port", "vpc1-net1", "networks"]);
    assert_eq!(
        db.nbctl(&["lr-list"]).split_whitespace().nth(1),
        Some("(vpc1)")
    );
    assert_eq!(
        db.nbctl(&["lrp-list", "vpc1"]).split_whitespace().nth(1),
        Some("(vpc1-net1)")
    );
    assert_eq!(router_port_networks(), "[\"10.100.0.1/16\"]");
    assert_eq!(
        db.nbctl(&["get", "Logical_Router_Port", "vpc1-net1", "mac"]),
        "\"00:00:00:10:00:01\""
    );
    assert_eq!(db.nbctl(&["lsp-get-type", "net1-vpc1"]), "router");
    assert_eq!(
        db.nbctl(&["get", "Logical_Switch_Port", "net1-vpc1", "addresses"]),
        "[router]"
    );
    assert_eq!(
        db.nbctl(&[
            "get",
            "Logical_Switch_Port",
            "net1-vpc1",
            "options:router-port"
        ]),
        "vpc1-net1"
    );
    assert_eq!(db.nbctl(&["lsp-list", "net1"]).lines().count(), 1);

    let before = log_records(&db);
    assert!(!nb
        .ensure_router("vpc1", &ids(&[("vendor", "kube-ovn")]))
        .await
        .unwrap());
    assert!(!nb
        .ensure_switch("net1", &ids(&[("vendor", "kube-ovn")]))
        .await
        .unwrap());
    assert!(!nb
        .ensure_router_port_pair("vpc1", "net1", &["10.100.0.1/16"], "00:00:00:10:00:01")
        .await
        .unwrap());
    assert_eq!(log_records(&db), before, "the second ensure wrote nothing");

    // A changed gateway is corrected in place.
    assert!(nb
        .ensure_router_port_pair("vpc1", "net1", &["10.100.0.254/16"], "00:00:00:10:00:01")
        .await
        .unwrap());
    assert_eq!(router_port_networks(), "[\"10.100.0.254/16\"]");
    assert_eq!(db.nbctl(&["lrp-list", "vpc1"]).lines().count(), 1);

    // Dual stack: both gateways on the one router port, and back to one.
    assert!(nb
        .ensure_router_port_pair(
            "vpc1",
            "net1",
            &["fd00:100::1/64", "10.100.0.254/16"],
            "00:00:00:10:00:01"
        )
        .await
        .unwrap());
    assert_eq!(
        router_port_networks(),
        "[\"10.100.0.254/16\", \"fd00:100::1/64\"]"
    );
    assert!(!nb
        .ensure_router_port_pair(
            "vpc1",
            "net1",
            &["10.100.0.254/16", "fd00:100::1/64"],
            "00:00:00:10:00:01"
        )
        .await
        .unwrap());
    assert!(nb
        .ensure_router_port_pair("vpc1", "net1", &["10.100.0.254/16"], "00:00:00:10:00:01")
        .await
        .unwrap());
    assert_eq!(router_port_networks(), "[\"10.100.0.254/16\"]");
    let err = nb
        .ensure_router_port_pair("vpc1", "net1", &[] as &[&str], "00:00:00:10:00:01")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no gateway address"), "{err}");

    assert!(nb
        .ensure_switch("net1", &ids(&[("vendor", "kube-ovn"), ("vpc", "vpc1")]))
        .await
        .unwrap());
    assert_eq!(
        db.nbctl(&["get", "Logical_Switch", "net1", "external_ids:vpc"]),
        "vpc1"
    );

    let err = nb
        .ensure_router_port_pair("vpc1", "net1", &["10.100.0.1"], "00:00:00:10:00:01")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("vpc1-net1"), "{err}");
    let err = nb
        .ensure_router_port_pair("nope", "net1", &["10.0.0.1/24"], "00:00:00:10:00:01")
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("logical router \"nope\" not found"),
        "{err}"
    );
}

#[tokio::test]
async fn deleting_a_switch_removes_its_ports_and_router_peer() {
    let db = DbServer::nb();
    let nb = vpc_with_subnet(&db).await;
    nb.ensure_logical_switch_port(&lsp(
        "a.ns.p",
        "net1",
        "00:00:00:00:00:0a",
        "10.100.0.2",
        "ns/a",
    ))
    .await
    .unwrap();
    assert!(nb.delete_switch("net1").await.unwrap());
    assert_eq!(db.nbctl(&["ls-list"]), "");
    assert_eq!(db.nbctl(&["lrp-list", "vpc1"]), "");
    assert_eq!(
        db.nbctl(&["--columns=name", "list", "Logical_Switch_Port"]),
        ""
    );
    assert!(!nb.delete_switch("net1").await.unwrap(), "absent is fine");
    assert!(nb.delete_router("vpc1").await.unwrap());
    assert_eq!(db.nbctl(&["lr-list"]), "");
    assert!(!nb.delete_router("vpc1").await.unwrap());
}

#[tokio::test]
async fn pod_ports_are_ensured_found_by_pod_updated_moved_and_deleted() {
    let db = DbServer::nb();
    let nb = vpc_with_subnet(&db).await;
    nb.ensure_switch("net2", &ids(&[])).await.unwrap();
    let spec = lsp("a.ns.p", "net1", "00:00:00:00:00:0a", "10.100.0.2", "ns/a");
    assert!(nb.ensure_logical_switch_port(&spec).await.unwrap());
    assert_eq!(
        db.nbctl(&["lsp-get-addresses", "a.ns.p"]),
        "00:00:00:00:00:0a 10.100.0.2"
    );
    assert_eq!(
        db.nbctl(&["lsp-get-port-security", "a.ns.p"]),
        "00:00:00:00:00:0a 10.100.0.2"
    );
    assert_eq!(
        db.nbctl(&["get", "Logical_Switch_Port", "a.ns.p", "external_ids:pod"]),
        "\"ns/a\""
    );
    assert_eq!(
        db.nbctl(&["lsp-get-ls", "a.ns.p"])
            .split_whitespace()
            .nth(1),
        Some("(net1)")
    );

    let before = log_records(&db);
    assert!(!nb.ensure_logical_switch_port(&spec).await.unwrap());
    assert_eq!(log_records(&db), before);

    // Second attachment of the same pod.
    nb.ensure_logical_switch_port(&lsp(
        "a.ns.p.net2",
        "net1",
        "00:00:00:00:00:0b",
        "10.100.0.3",
        "ns/a",
    ))
    .await
    .unwrap();
    let mut names: Vec<String> = nb
        .ports_by_pod("ns/a")
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    names.sort();
    assert_eq!(names, ["a.ns.p", "a.ns.p.net2"]);
    assert!(nb.ports_by_pod("ns/other").unwrap().is_empty());

    // New IP and no port security, then a move to another switch.
    let mut changed = spec.clone();
    changed.ips = vec!["10.100.0.9".parse().expect("valid IP")];
    changed.port_security = false;
    assert!(nb.ensure_logical_switch_port(&changed).await.unwrap());
    assert_eq!(
        db.nbctl(&["lsp-get-addresses", "a.ns.p"]),
        "00:00:00:00:00:0a 10.100.0.9"
    );
    assert_eq!(db.nbctl(&["lsp-get-port-security", "a.ns.p"]), "");
    changed.switch = "net2".into();
    assert!(nb.ensure_logical_switch_port(&changed).await.unwrap());
    assert_eq!(
        db.nbctl(&["lsp-get-ls", "a.ns.p"])
            .split_whitespace()
            .nth(1),
        Some("(net2)")
    );
    assert_eq!(
        db.nbctl(&["lsp-list", "net1"]).lines().count(),
        2,
        "router port and a.ns.p.net2"
    );

    assert!(nb.delete_logical_switch_port("a.ns.p").await.unwrap());
    assert!(!nb.delete_logical_switch_port("a.ns.p").await.unwrap());
    assert_eq!(db.nbctl(&["lsp-list", "net2"]), "");
    assert_eq!(nb.ports_by_pod("ns/a").unwrap().len(), 1);

    let err = nb
        .ensure_logical_switch_port(&lsp("x", "missing", "00:00:00:00:00:01", "1.1.1.1", "ns/x"))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("logical switch \"missing\" not found"),
        "{err}"
    );
}

#[tokio::test]
async fn many_pods_go_into_one_transaction() {
    let db = DbServer::nb();
    let nb = vpc_with_subnet(&db).await;
    let before = log_records(&db);
    let mut txn = nb.txn();
    for i in 0..50 {
        let s = lsp(
            &format!("p{i}.ns.prov"),
            "net1",
            &format!("00:00:00:00:01:{i:02x}"),
            &format!("10.100.1.{}", i + 1),
            &format!("ns/p{i}"),
        );
        txn.ensure_logical_switch_port(&s).unwrap();
    }
    txn.delete_logical_switch_port("not-there").unwrap();
    assert!(txn.commit().await.unwrap());
    assert_eq!(log_records(&db), before + 1, "one transaction");
    assert_eq!(db.nbctl(&["lsp-list", "net1"]).lines().count(), 51);

    // Delete ten and create ten others, again in one transaction.
    let mut txn = nb.txn();
    for i in 0..10 {
        txn.delete_logical_switch_port(&format!("p{i}.ns.prov"))
            .unwrap();
        let s = lsp(
            &format!("q{i}.ns.prov"),
            "net1",
            &format!("00:00:00:00:02:{i:02x}"),
            &format!("10.100.2.{}", i + 1),
            &format!("ns/q{i}"),
        );
        txn.ensure_logical_switch_port(&s).unwrap();
    }
    assert!(txn.commit().await.unwrap());
    assert_eq!(log_records(&db), before + 2);
    let names = csv_column(&db.nbctl(&[
        "--format=csv",
        "--no-headings",
        "--columns=name",
        "list",
        "Logical_Switch_Port",
    ]));
    assert_eq!(names.len(), 51);
    assert!(
        names.contains(&"q9.ns.prov".to_string()) && !names.contains(&"p0.ns.prov".to_string())
    );
    assert!(
        !nb.txn().commit().await.unwrap(),
        "an empty transaction writes nothing"
    );
}

#[tokio::test]
async fn port_groups_gain_and_lose_members() {
    let db = DbServer::nb();
    let nb = vpc_with_subnet(&db).await;
    for (n, ip) in [("a", "10.100.0.2"), ("b", "10.100.0.3")] {
        nb.ensure_logical_switch_port(&lsp(n, "net1", "00:00:00:00:00:01", ip, "ns/x"))
            .await
            .unwrap();
    }
    assert!(nb
        .ensure_port_group("sg1", &ids(&[("sg", "sg1")]))
        .await
        .unwrap());
    assert!(!nb
        .ensure_port_group("sg1", &ids(&[("sg", "sg1")]))
        .await
        .unwrap());
    assert!(nb.add_ports_to_group("sg1", &["a", "b"]).await.unwrap());
    assert!(!nb.add_ports_to_group("sg1", &["a", "b"]).await.unwrap());
    let a = db.nbctl(&["get", "Logical_Switch_Port", "a", "_uuid"]);
    let b = db.nbctl(&["get", "Logical_Switch_Port", "b", "_uuid"]);
    let members = db.nbctl(&["get", "Port_Group", "sg1", "ports"]);
    assert!(members.contains(&a) && members.contains(&b), "{members}");
    assert!(nb
        .remove_ports_from_group("sg1", &["a", "gone"])
        .await
        .unwrap());
    assert_eq!(
        db.nbctl(&["get", "Port_Group", "sg1", "ports"]),
        format!("[{b}]")
    );
    // Deleting a port drops it from its groups too.
    nb.delete_logical_switch_port("b").await.unwrap();
    assert_eq!(db.nbctl(&["get", "Port_Group", "sg1", "ports"]), "[]");
    assert!(nb.delete_port_group("sg1").await.unwrap());
    assert_eq!(db.nbctl(&["--columns=name", "list", "Port_Group"]), "");
}

#[tokio::test]
async fn concurrent_writers_do_not_duplicate_a_switch() {
    let db = DbServer::nb();
    let one = Northbound::connect(&db.endpoint()).await.unwrap();
    let two = Northbound::connect(&db.endpoint()).await.unwrap();
    for round in 0..5 {
        let name = format!("s{round}");
        let none = ids(&[]);
        let (a, b) = tokio::join!(
            one.ensure_switch(&name, &none),
            two.ensure_switch(&name, &none)
        );
        assert!(a.unwrap() || b.unwrap());
        let same_name = db.nbctl(&[
            "--format=csv",
            "--no-headings",
            "--columns=name",
            "find",
            "Logical_Switch",
            &format!("name={name}"),
        ]);
        assert_eq!(same_name.lines().count(), 1, "{name}: {same_name}");
    }
}
