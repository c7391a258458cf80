//! Create, read, update and delete for every typed table, through the typed
//! models and `transact`, each step read back independently with
//! `ovn-nbctl --format=json list` / `ovs-vsctl --format=json list` and
//! compared with the client's cache.

mod ovsdb_support;

use std::collections::BTreeMap;
use std::fmt::Debug;

use kube_ovn::ovsdb::model::{nb, vswitch};
use kube_ovn::ovsdb::{
    Atom, Client, ClientOptions, Condition, IndexSpec, Mutation, Op, Row, Table, TableSpec, Uuid,
    Value,
};
use ovsdb_support::DbServer;
use serde_json::Value as Json;

fn ids(k: &str, v: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(k.to_string(), v.to_string())])
}

/// One row as an independent tool lists it (`--format=json`, RFC 7047 cells).
fn listed<T: Table>(tool: &dyn Fn(&[&str]) -> String, uuid: Uuid) -> Option<T> {
    let out = tool(&["--format=json", "list", T::NAME]);
    let j: Json = serde_json::from_str(&out).expect("json listing");
    let headings: Vec<&str> = j["headings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    for data in j["data"].as_array().unwrap() {
        let mut row = Row::new();
        for (h, cell) in headings.iter().zip(data.as_array().unwrap()) {
            row.insert(h.to_string(), Value::from_json(cell).unwrap());
        }
        if row["_uuid"].as_atom().and_then(Atom::as_uuid) == Some(uuid) {
            return Some(T::from_row(uuid, &row).unwrap());
        }
    }
    None
}

/// Where a non-root row hangs: (table, row, column).
type Parent<'a> = Option<(&'a str, Uuid, &'a str)>;

async fn crud<T: Table + PartialEq + Debug>(
    c: &Client,
    tool: &dyn Fn(&[&str]) -> String,
    mut item: T,
    parent: Parent<'_>,
    edit: impl Fn(&mut T),
) {
    let mut ops = vec![Op::insert(T::NAME, item.to_row(), Some("new"))];
    if let Some((table, uuid, column)) = parent {
        ops.push(Op::mutate(
            table,
            vec![Condition::uuid(uuid)],
            vec![Mutation::insert(
                column,
                Value::atom(Atom::NamedUuid("new".into())),
            )],
        ));
    }
    let uuid = c
        .transact(ops)
        .await
        .unwrap_or_else(|e| panic!("create {}: {e}", T::NAME))[0]
        .uuid
        .unwrap();
    item = T::from_row(uuid, &item.to_row()).unwrap();
    assert_eq!(
        listed::<T>(tool, uuid).as_ref(),
        Some(&item),
        "read {} back",
        T::NAME
    );
    assert_eq!(
        c.get::<T>(uuid).unwrap().as_ref(),
        Some(&item),
        "cache of {}",
        T::NAME
    );

    // Update only the edited columns (some, like names, are immutable).
    let before = item.to_row();
    edit(&mut item);
    let diff: Row = item
        .to_row()
        .into_iter()
        .filter(|(k, v)| before.get(k) != Some(v))
        .collect();
    assert!(
        !diff.is_empty(),
        "the edit of {} changes something",
        T::NAME
    );
    c.transact(vec![Op::update(T::NAME, vec![Condition::uuid(uuid)], diff)])
        .await
        .unwrap_or_else(|e| panic!("update {}: {e}", T::NAME));
    assert_eq!(
        listed::<T>(tool, uuid).as_ref(),
        Some(&item),
        "updated {}",
        T::NAME
    );
    assert_eq!(
        c.get::<T>(uuid).unwrap().as_ref(),
        Some(&item),
        "cache of updated {}",
        T::NAME
    );

    let mut ops = Vec::new();
    if let Some((table, puuid, column)) = parent {
        ops.push(Op::mutate(
            table,
            vec![Condition::uuid(puuid)],
            vec![Mutation::delete(column, Value::atom(uuid))],
        ));
    }
    ops.push(Op::delete(T::NAME, vec![Condition::uuid(uuid)]));
    c.transact(ops)
        .await
        .unwrap_or_else(|e| panic!("delete {}: {e}", T::NAME));
    assert_eq!(listed::<T>(tool, uuid), None, "deleted {}", T::NAME);
    assert_eq!(
        c.get::<T>(uuid).unwrap(),
        None,
        "cache of deleted {}",
        T::NAME
    );
}

fn by_name<T: Table>(c: &Client, name: &str) -> Uuid {
    c.find::<T>(&IndexSpec::column("name"), name).unwrap()[0].uuid()
}

#[tokio::test]
async fn every_northbound_table_is_created_read_updated_and_deleted() {
    let db = DbServer::nb();
    db.nbctl(&[
        "ls-add",
        "ls0",
        "--",
        "lr-add",
        "lr0",
        "--",
        "meter-add",
        "m0",
        "drop",
        "10",
        "kbps",
    ]);
    let tables = vec![
        TableSpec::of::<nb::NbGlobal>(),
        TableSpec::of::<nb::LogicalSwitch>().index(IndexSpec::column("name")),
        TableSpec::of::<nb::LogicalSwitchPort>(),
        TableSpec::of::<nb::LogicalRouter>().index(IndexSpec::column("name")),
        TableSpec::of::<nb::LogicalRouterPort>(),
        TableSpec::of::<nb::LogicalRouterStaticRoute>(),
        TableSpec::of::<nb::LogicalRouterPolicy>(),
        TableSpec::of::<nb::Acl>(),
        TableSpec::of::<nb::PortGroup>(),
        TableSpec::of::<nb::AddressSet>(),
        TableSpec::of::<nb::DhcpOptions>(),
        TableSpec::of::<nb::Nat>(),
        TableSpec::of::<nb::Meter>(),
        TableSpec::of::<nb::MeterBand>(),
        TableSpec::of::<nb::Qos>(),
    ];
    let c = Client::connect(&db.endpoint(), "OVN_Northbound", ClientOptions::new(tables))
        .await
        .unwrap();
    let tool = |a: &[&str]| db.nbctl(a);
    let ls = by_name::<nb::LogicalSwitch>(&c, "ls0");
    let lr = by_name::<nb::LogicalRouter>(&c, "lr0");
    let m0 = by_name::<nb::Meter>(&c, "m0");
    let band = c.get::<nb::Meter>(m0).unwrap().unwrap().bands[0];

    // NB_Global allows one row: replace the one `init` made.
    c.transact(vec![Op::delete("NB_Global", vec![])])
        .await
        .unwrap();
    crud(
        &c,
        &tool,
        nb::NbGlobal {
            name: "g".into(),
            options: ids("a", "b"),
            ..Default::default()
        },
        None,
        |g| {
            g.options.insert("mac_prefix".into(), "0a:00:00".into());
        },
    )
    .await;
    crud(
        &c,
        &tool,
        nb::LogicalSwitch {
            name: "s1".into(),
            other_config: ids("subnet", "10.0.0.0/24"),
            ..Default::default()
        },
        None,
        |s| s.external_ids = ids("vendor", "kube-ovn"),
    )
    .await;
    crud(
        &c,
        &tool,
        nb::LogicalSwitchPort {
            name: "p1".into(),
            addresses: vec!["00:00:00:00:00:01 10.0.0.2".into()],
            port_security: vec!["00:00:00:00:00:01 10.0.0.2".into()],
            external_ids: ids("pod", "ns/p"),
            ..Default::default()
        },
        Some(("Logical_Switch", ls, "ports")),
        |p| {
            p.enabled = Some(false);
            p.kind = "localport".into();
        },
    )
    .await;
    crud(
        &c,
        &tool,
        nb::LogicalRouter {
            name: "r1".into(),
            enabled: Some(true),
            ..Default::default()
        },
        None,
        |r| r.options = ids("always_learn_from_arp_request", "false"),
    )
    .await;
    crud(
        &c,
        &tool,
        nb::LogicalRouterPort {
            name: "rp1".into(),
            mac: "00:00:00:00:00:02".into(),
            networks: vec!["10.0.0.1/24".into()],
            ..Default::default()
        },
        Some(("Logical_Router", lr, "ports")),
        |p| {
            p.networks.push("fd00::1/64".into());
            p.peer = Some("rp2".into());
        },
    )
    .await;
    crud(
        &c,
        &tool,
        nb::LogicalRouterStaticRoute {
            ip_prefix: "0.0.0.0/0".into(),
            nexthop: "10.0.0.254".into(),
            ..Default::default()
        },
        Some(("Logical_Router", lr, "static_routes")),
        |r| {
            r.policy = Some("src-ip".into());
            r.route_table = "t1".into();
        },
    )
    .await;
    crud(
        &c,
        &tool,
        nb::LogicalRouterPolicy {
            priority: 100,
            match_: "ip4.src == 10.0.0.0/24".into(),
            action: "allow".into(),
            ..Default::default()
        },
        Some(("Logical_Router", lr, "policies")),
        |p| {
            p.action = "reroute".into();
            p.nexthops = vec!["10.0.0.3".into()];
        },
    )
    .await;
    crud(
        &c,
        &tool,
        nb::Acl {
            priority: 1000,
            direction: "to-lport".into(),
            match_: "ip4".into(),
            action: "allow-related".into(),
            ..Default::default()
        },
        Some(("Logical_Switch", ls, "acls")),
        |a| {
            a.log = true;
            a.severity = Some("info".into());
            a.name = Some("acl1".into());
        },
    )
    .await;
    crud(
        &c,
        &tool,
        nb::PortGroup {
            name: "pg1".into(),
            ..Default::default()
        },
        None,
        |g| g.external_ids = ids("sg", "sg1"),
    )
    .await;
    crud(
        &c,
        &tool,
        nb::AddressSet {
            name: "as1".into(),
            addresses: vec!["10.0.0.2".into()],
            ..Default::default()
        },
        None,
        |a| a.addresses.push("10.0.0.3".into()),
    )
    .await;
    crud(
        &c,
        &tool,
        nb::DhcpOptions {
            cidr: "10.0.0.0/24".into(),
            options: ids("lease_time", "3600"),
            ..Default::default()
        },
        None,
        |d| {
            d.options.insert("router".into(), "10.0.0.1".into());
        },
    )
    .await;
    crud(
        &c,
        &tool,
        nb::Nat {
            kind: "snat".into(),
            external_ip: "172.18.0.2".into(),
            logical_ip: "10.0.0.0/24".into(),
            ..Default::default()
        },
        Some(("Logical_Router", lr, "nat")),
        |n| {
            n.kind = "dnat_and_snat".into();
            n.logical_ip = "10.0.0.5".into();
            n.external_mac = Some("00:00:00:00:00:09".into());
            n.logical_port = Some("p1".into());
        },
    )
    .await;
    crud(
        &c,
        &tool,
        nb::Meter {
            name: "m1".into(),
            unit: "pktps".into(),
            bands: vec![band],
            ..Default::default()
        },
        None,
        |m| {
            m.fair = Some(true);
        },
    )
    .await;
    crud(
        &c,
        &tool,
        nb::MeterBand {
            action: "drop".into(),
            rate: 100,
            burst_size: 10,
            ..Default::default()
        },
        Some(("Meter", m0, "bands")),
        |b| b.rate = 200,
    )
    .await;
    crud(
        &c,
        &tool,
        nb::Qos {
            priority: 10,
            direction: "from-lport".into(),
            match_: "inport == \"p1\"".into(),
            bandwidth: BTreeMap::from([("rate".to_string(), 1000)]),
            ..Default::default()
        },
        Some(("Logical_Switch", ls, "qos_rules")),
        |q| {
            q.action = BTreeMap::from([("dscp".to_string(), 10)]);
        },
    )
    .await;
}

#[tokio::test]
async fn every_open_vswitch_table_is_created_read_updated_and_deleted() {
    let db = DbServer::vswitch();
    db.vsctl(&["add-br", "br0", "--", "add-port", "br0", "p0"]);
    let tables = vec![
        TableSpec::of::<vswitch::OpenVswitch>(),
        TableSpec::of::<vswitch::Bridge>(),
        TableSpec::of::<vswitch::Port>(),
        TableSpec::of::<vswitch::Interface>(),
        TableSpec::of::<vswitch::Qos>(),
        TableSpec::of::<vswitch::Queue>(),
    ];
    let c = Client::connect(&db.endpoint(), "Open_vSwitch", ClientOptions::new(tables))
        .await
        .unwrap();
    let tool = |a: &[&str]| db.vsctl(a);
    let br0 = by_name::<vswitch::Bridge>(&c, "br0");
    let p0 = by_name::<vswitch::Port>(&c, "p0");
    let i0 = by_name::<vswitch::Interface>(&c, "p0");

    crud(
        &c,
        &tool,
        vswitch::Bridge {
            name: "br1".into(),
            datapath_type: "netdev".into(),
            ..Default::default()
        },
        Some((
            "Open_vSwitch",
            c.list::<vswitch::OpenVswitch>().unwrap()[0].uuid,
            "bridges",
        )),
        |b| {
            b.fail_mode = Some("secure".into());
            b.other_config = ids("hwaddr", "00:00:00:00:00:0b");
        },
    )
    .await;
    crud(
        &c,
        &tool,
        vswitch::Port {
            name: "p1".into(),
            interfaces: vec![i0],
            ..Default::default()
        },
        Some(("Bridge", br0, "ports")),
        |p| {
            p.tag = Some(10);
            p.external_ids = ids("a", "b");
        },
    )
    .await;
    crud(
        &c,
        &tool,
        vswitch::Interface {
            name: "veth1".into(),
            external_ids: ids("iface-id", "a.ns.p"),
            ..Default::default()
        },
        Some(("Port", p0, "interfaces")),
        |i| {
            i.ingress_policing_rate = 1000;
            i.ingress_policing_burst = 800;
            i.mtu_request = Some(1400);
        },
    )
    .await;
    crud(
        &c,
        &tool,
        vswitch::Queue {
            other_config: ids("max-rate", "1000000"),
            ..Default::default()
        },
        None,
        |q| q.dscp = Some(8),
    )
    .await;
    crud(
        &c,
        &tool,
        vswitch::Qos {
            kind: "linux-htb".into(),
            ..Default::default()
        },
        None,
        |q| q.other_config = ids("max-rate", "5"),
    )
    .await;
    // Open_vSwitch allows one row: replace the one `init` made (bridges go with it).
    c.transact(vec![Op::delete("Open_vSwitch", vec![])])
        .await
        .unwrap();
    crud(
        &c,
        &tool,
        vswitch::OpenVswitch {
            external_ids: ids("system-id", "n1"),
            ..Default::default()
        },
        None,
        |o| {
            o.other_config = ids("flow-restore-wait", "true");
            o.next_cfg = 3;
        },
    )
    .await;
}
