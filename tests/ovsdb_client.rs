//! The OVSDB client against real `ovsdb-server`s (and one fake): transactions
//! and their failures, the monitor cache after many changes, kill -9 and
//! restart with a pending waiter, malformed input from a server.

mod ovsdb_support;

use std::collections::BTreeMap;
use std::time::Duration;

use kube_ovn::ovsdb::model::nb::{LogicalSwitch, LogicalSwitchPort};
use kube_ovn::ovsdb::model::vswitch::{Interface, OpenVswitch};
use kube_ovn::ovsdb::{
    Atom, Client, ClientOptions, Condition, Connection, Endpoint, Error, IndexSpec, MonitorMethod,
    Mutation, Op, Row, Table, TableSpec, Timeouts, Uuid, Value,
};
use ovsdb_support::{csv_column, DbServer};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

fn nb_options() -> ClientOptions {
    ClientOptions::new(vec![
        TableSpec::of::<LogicalSwitch>(),
        TableSpec::of::<LogicalSwitchPort>().index(IndexSpec::map_key("external_ids", "pod")),
    ])
}

fn name_is(name: &str) -> Vec<Condition> {
    vec![Condition::eq("name", Value::atom(name))]
}

fn switch_row(name: &str) -> Row {
    Row::from([("name".to_string(), Value::atom(name))])
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(20)
}

#[tokio::test]
async fn transact_inserts_selects_updates_mutates_and_deletes() {
    let nb = DbServer::nb();
    let c = Client::connect(&nb.endpoint(), "OVN_Northbound", nb_options())
        .await
        .unwrap();
    assert_eq!(c.monitor_method(), MonitorMethod::CondSince);

    let mut port = Row::new();
    port.insert("name".into(), Value::atom("p1"));
    port.insert(
        "addresses".into(),
        Value::atom("00:00:00:00:00:01 10.0.0.2"),
    );
    let r = c
        .transact(vec![
            Op::comment("test: create ls1 with p1"),
            Op::wait_absent("Logical_Switch", name_is("ls1")),
            Op::insert("Logical_Switch", switch_row("ls1"), Some("ls")),
            Op::insert("Logical_Switch_Port", port, Some("p")),
            Op::mutate(
                "Logical_Switch",
                vec![Condition::eq(
                    "_uuid",
                    Value::atom(Atom::NamedUuid("ls".into())),
                )],
                vec![Mutation::insert(
                    "ports",
                    Value::atom(Atom::NamedUuid("p".into())),
                )],
            ),
        ])
        .await
        .unwrap();
    let ls_uuid = r[2].uuid.expect("insert returns a uuid");
    assert_eq!(
        nb.nbctl(&["lsp-list", "ls1"]).split_whitespace().nth(1),
        Some("(p1)")
    );
    // Read-your-writes: the cache already has both rows.
    let ls: LogicalSwitch = c.get(ls_uuid).unwrap().expect("switch cached");
    assert_eq!(ls.ports.len(), 1);

    let sel = c
        .transact(vec![Op::select("Logical_Switch_Port", name_is("p1"))])
        .await
        .unwrap();
    assert_eq!(sel[0].rows.len(), 1);
    assert_eq!(
        sel[0].rows[0]["addresses"],
        Value::atom("00:00:00:00:00:01 10.0.0.2")
    );

    let upd = c
        .transact(vec![Op::update(
            "Logical_Switch_Port",
            name_is("p1"),
            Row::from([("external_ids".to_string(), Value::map([("pod", "ns/a")]))]),
        )])
        .await
        .unwrap();
    assert_eq!(upd[0].count, Some(1));
    assert_eq!(
        nb.nbctl(&["get", "Logical_Switch_Port", "p1", "external_ids:pod"]),
        "\"ns/a\""
    );
    let by_pod: Vec<LogicalSwitchPort> = c
        .find(&IndexSpec::map_key("external_ids", "pod"), "ns/a")
        .unwrap();
    assert_eq!(by_pod.len(), 1);

    let del = c
        .transact(vec![
            Op::mutate(
                "Logical_Switch",
                vec![Condition::uuid(ls_uuid)],
                vec![Mutation::delete("ports", Value::atom(by_pod[0].uuid))],
            ),
            Op::delete("Logical_Switch", vec![Condition::uuid(ls_uuid)]),
        ])
        .await
        .unwrap();
    assert_eq!(del[1].count, Some(1));
    assert_eq!(nb.nbctl(&["ls-list"]), "");
    assert!(
        c.list::<LogicalSwitchPort>().unwrap().is_empty(),
        "port garbage-collected"
    );
}

#[tokio::test]
async fn a_failing_operation_is_named_and_nothing_changes() {
    let nb = DbServer::nb();
    nb.nbctl(&["ls-add", "existing"]);
    let c = Client::connect(&nb.endpoint(), "OVN_Northbound", nb_options())
        .await
        .unwrap();
    let err = c
        .transact(vec![
            Op::insert("Logical_Switch", switch_row("new1"), None),
            Op::update(
                "Logical_Switch",
                name_is("existing"),
                Row::from([("external_ids".to_string(), Value::map([("k", "v")]))]),
            ),
            Op::wait_absent("Logical_Switch", name_is("existing")),
            Op::insert("Logical_Switch", switch_row("new2"), None),
        ])
        .await
        .unwrap_err();
    match &err {
        Error::Operation {
            index,
            op,
            table,
            error,
            ..
        } => {
            assert_eq!(
                (*index, op.as_str(), table.as_str()),
                (2, "wait", "Logical_Switch")
            );
            assert_eq!(error, "timed out");
        }
        other => panic!("expected an operation error, got {other}"),
    }
    assert!(
        err.to_string()
            .contains("operation 2 (wait on Logical_Switch)"),
        "{err}"
    );
    assert_eq!(
        nb.nbctl(&["ls-list"]).lines().count(),
        1,
        "only the old switch"
    );
    assert_eq!(
        nb.nbctl(&["get", "Logical_Switch", "existing", "external_ids"]),
        "{}"
    );

    // A type error is reported with the server's details.
    let err = c
        .transact(vec![Op::mutate(
            "Logical_Switch",
            name_is("existing"),
            vec![Mutation::new(
                "name",
                kube_ovn::ovsdb::Mutator::Add,
                Value::atom(1i64),
            )],
        )])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Operation { index: 0, .. }), "{err}");
}

#[tokio::test]
async fn a_missing_column_fails_the_connect_clearly() {
    let nb = DbServer::nb();
    let mut spec = TableSpec::of::<LogicalSwitch>();
    spec.columns.push("no_such_column".into());
    let err = match Client::connect(
        &nb.endpoint(),
        "OVN_Northbound",
        ClientOptions::new(vec![spec]),
    )
    .await
    {
        Ok(_) => panic!("connect must fail"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("Logical_Switch.no_such_column"), "{err}");
}

/// Every LSP as the server has it, read by a separate select.
async fn server_ports(reader: &Client) -> Vec<LogicalSwitchPort> {
    let r = reader
        .transact(vec![Op::select("Logical_Switch_Port", vec![])])
        .await
        .unwrap();
    let mut v: Vec<LogicalSwitchPort> = r[0]
        .rows
        .iter()
        .map(|row| {
            let u = row["_uuid"].as_atom().and_then(Atom::as_uuid).unwrap();
            LogicalSwitchPort::from_row(u, row).unwrap()
        })
        .collect();
    v.sort_by_key(|p| p.uuid);
    v
}

#[tokio::test]
async fn the_cache_equals_the_server_after_1000_mixed_changes() {
    let nb = DbServer::nb();
    nb.nbctl(&["ls-add", "ls"]);
    let watcher = Client::connect(&nb.endpoint(), "OVN_Northbound", nb_options())
        .await
        .unwrap();
    let writer = Client::connect(&nb.endpoint(), "OVN_Northbound", nb_options())
        .await
        .unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    let mut live: Vec<String> = Vec::new();
    for i in 0..1000 {
        let choice = if live.is_empty() {
            0
        } else {
            rng.gen_range(0..4)
        };
        let op = match choice {
            0 => {
                let name = format!("p{i}");
                let row = Row::from([
                    ("name".to_string(), Value::atom(name.as_str())),
                    (
                        "external_ids".to_string(),
                        Value::map([("pod", format!("ns/pod{}", i % 17))]),
                    ),
                    (
                        "addresses".to_string(),
                        Value::atom(
                            format!(
                                "00:00:00:00:{:02x}:{:02x} 10.0.{}.{}",
                                i / 256,
                                i % 256,
                                i / 256,
                                i % 256 + 1
                            )
                            .as_str(),
                        ),
                    ),
                ]);
                live.push(name);
                vec![
                    Op::insert("Logical_Switch_Port", row, Some("p")),
                    Op::mutate(
                        "Logical_Switch",
                        name_is("ls"),
                        vec![Mutation::insert(
                            "ports",
                            Value::atom(Atom::NamedUuid("p".into())),
                        )],
                    ),
                ]
            }
            1 => {
                let name = &live[rng.gen_range(0..live.len())];
                vec![Op::mutate(
                    "Logical_Switch_Port",
                    name_is(name),
                    vec![
                        Mutation::delete("external_ids", Value::set([Atom::from("pod")])),
                        Mutation::insert(
                            "external_ids",
                            Value::map([("pod", format!("ns/moved{}", i % 5))]),
                        ),
                    ],
                )]
            }
            2 => {
                let name = &live[rng.gen_range(0..live.len())];
                let tags: Vec<Atom> = (0..rng.gen_range(0..3))
                    .map(|t| Atom::from(format!("s{t}")))
                    .collect();
                vec![Op::update(
                    "Logical_Switch_Port",
                    name_is(name),
                    Row::from([
                        ("port_security".to_string(), Value::set(tags)),
                        (
                            "enabled".to_string(),
                            if rng.gen_bool(0.5) {
                                Value::atom(rng.gen_bool(0.5))
                            } else {
                                Value::empty_set()
                            },
                        ),
                    ]),
                )]
            }
            _ => {
                let name = live.swap_remove(rng.gen_range(0..live.len()));
                let uuid = nb.nbctl(&["get", "Logical_Switch_Port", &name, "_uuid"]);
                vec![Op::mutate(
                    "Logical_Switch",
                    name_is("ls"),
                    vec![Mutation::delete(
                        "ports",
                        Value::atom(Uuid::parse_str(&uuid).unwrap()),
                    )],
                )]
            }
        };
        writer.transact(op).await.unwrap();
    }
    let want = server_ports(&writer).await;
    assert_eq!(want.len(), live.len());
    let got = watcher
        .wait_until(soon(), "cache to converge", |_| {
            let mut got = watcher.list::<LogicalSwitchPort>().unwrap();
            got.sort_by_key(|p| p.uuid);
            (got == want).then_some(got)
        })
        .await;
    let got = match got {
        Ok(g) => g,
        Err(e) => {
            let mut got = watcher.list::<LogicalSwitchPort>().unwrap();
            got.sort_by_key(|p| p.uuid);
            let diff: Vec<_> = got
                .iter()
                .zip(want.iter())
                .filter(|(a, b)| a != b)
                .take(3)
                .collect();
            panic!(
                "{e}: {} cached vs {} on the server; first differences {diff:#?}",
                got.len(),
                want.len()
            );
        }
    };
    assert_eq!(got.len(), live.len());
    let mut names: Vec<String> = got.iter().map(|p| p.name.clone()).collect();
    names.sort();
    assert_eq!(
        names,
        csv_column(&nb.nbctl(&[
            "--format=csv",
            "--no-headings",
            "--columns=name",
            "list",
            "Logical_Switch_Port"
        ]))
    );
    // The client-side index agrees with a scan.
    for pod in ["ns/pod3", "ns/moved2"] {
        let mut by_index: Vec<Uuid> = watcher
            .find::<LogicalSwitchPort>(&IndexSpec::map_key("external_ids", "pod"), pod)
            .unwrap()
            .iter()
            .map(|p| p.uuid)
            .collect();
        by_index.sort();
        let by_scan: Vec<Uuid> = got
            .iter()
            .filter(|p| p.external_ids.get("pod").map(String::as_str) == Some(pod))
            .map(|p| p.uuid)
            .collect();
        assert_eq!(by_index, by_scan, "{pod}");
    }
}

fn vswitch_options() -> ClientOptions {
    let mut o = ClientOptions::new(vec![
        TableSpec::of::<OpenVswitch>(),
        TableSpec::of::<Interface>(),
    ]);
    o.backoff = (Duration::from_millis(50), Duration::from_millis(500));
    o
}

fn ovn_installed(c: &Client, name: &str) -> Option<()> {
    let ifaces: Vec<Interface> = c.find(&IndexSpec::column("name"), name).ok()?;
    ifaces
        .iter()
        .any(|i| i.external_ids.get("ovn-installed").map(String::as_str) == Some("true"))
        .then_some(())
}

#[tokio::test]
async fn kill9_and_restart_reconnects_converges_and_a_pending_waiter_fires() {
    let mut db = DbServer::vswitch();
    db.vsctl(&[
        "add-br",
        "br-int",
        "--",
        "add-port",
        "br-int",
        "veth1",
        "--",
        "set",
        "Interface",
        "veth1",
        "type=internal",
    ]);
    let c = Client::connect(&db.endpoint(), "Open_vSwitch", vswitch_options())
        .await
        .unwrap();
    let waiter = {
        let c = c.clone();
        tokio::spawn(async move {
            c.wait_until(
                Instant::now() + Duration::from_secs(60),
                "veth1 ovn-installed",
                |_| ovn_installed(&c, "veth1"),
            )
            .await
        })
    };
    db.kill9();
    // While the server is down another writer changes the file: rows added,
    // changed and removed that the client never sees as notifications.
    let noticed = Instant::now() + Duration::from_secs(20);
    while c.is_connected() {
        assert!(
            Instant::now() < noticed,
            "the client never noticed the loss"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    db.restart();
    db.vsctl(&[
        "add-port",
        "br-int",
        "veth2",
        "--",
        "set",
        "Interface",
        "veth2",
        "type=internal",
    ]);
    db.vsctl(&[
        "set",
        "Interface",
        "veth1",
        "external_ids:ovn-installed=true",
    ]);
    waiter
        .await
        .unwrap()
        .expect("waiter fired after the restart");
    // The cache converges to the server's Interface table.
    let want = csv_column(&db.vsctl(&[
        "--format=csv",
        "--no-headings",
        "--columns=name",
        "list",
        "Interface",
    ]));
    c.wait_until(soon(), "interfaces to converge", |_| {
        let mut got: Vec<String> = c
            .list::<Interface>()
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect();
        got.sort();
        (got == want).then_some(())
    })
    .await
    .unwrap();
    assert!(c.is_connected());
}

#[tokio::test]
async fn changes_made_while_disconnected_are_resynced() {
    let mut db = DbServer::vswitch();
    db.vsctl(&[
        "add-br", "br0", "--", "add-port", "br0", "a", "--", "add-port", "br0", "b",
    ]);
    let c = Client::connect(&db.endpoint(), "Open_vSwitch", vswitch_options())
        .await
        .unwrap();
    assert_eq!(c.list::<Interface>().unwrap().len(), 3, "br0, a, b");
    let a = db.vsctl(&["get", "Interface", "a", "_uuid"]);
    let b = db.vsctl(&["get", "Port", "b", "_uuid"]);
    db.kill9();
    // Offline: tag "a" and drop port "b" (its Interface goes with it).
    let out = db.offline_transact(
        &json!(["Open_vSwitch",
            {"op": "update", "table": "Interface", "where": [["_uuid", "==", ["uuid", a]]],
             "row": {"external_ids": ["map", [["offline", "yes"]]]}},
            {"op": "mutate", "table": "Bridge", "where": [["name", "==", "br0"]],
             "mutations": [["ports", "delete", ["uuid", b]]]}
        ])
        .to_string(),
    );
    assert!(!out.contains("error"), "{out}");
    db.restart();
    let want_ids = BTreeMap::from([("offline".to_string(), "yes".to_string())]);
    c.wait_until(soon(), "offline change to show", |_| {
        let a: Vec<Interface> = c.find(&IndexSpec::column("name"), "a").ok()?;
        (a.first()?.external_ids == want_ids).then_some(())
    })
    .await
    .unwrap();
    let mut names: Vec<String> = c
        .list::<Interface>()
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    names.sort();
    assert_eq!(names, ["a", "br0"]);
}

/// A fake server that answers the first request with `reply` bytes and closes.
async fn fake_server(reply: &'static [u8]) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fake.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await;
        let _ = s.write_all(reply).await;
        let _ = s.shutdown().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    });
    (dir, format!("unix:{}", path.display()))
}

#[tokio::test]
async fn malformed_json_from_the_server_is_an_error_not_a_panic() {
    let (_d, ep) = fake_server(b"{\"id\":1,\"result\":[tru]}").await;
    let err = Client::connect(&ep, "OVN_Northbound", nb_options())
        .await
        .err()
        .expect("must fail");
    assert!(err.to_string().contains("malformed JSON"), "{err}");

    let (_d, ep) = fake_server(b"{\"id\":1,\"result\":{\"name\":\"OVN_Nor").await;
    let err = Client::connect(&ep, "OVN_Northbound", nb_options())
        .await
        .err()
        .expect("must fail");
    assert!(err.to_string().contains("truncated"), "{err}");

    let (_d, ep) = fake_server(b"not json at all").await;
    let (conn, _notes) = Connection::open(&Endpoint::parse(&ep).unwrap(), Timeouts::default())
        .await
        .unwrap();
    let err = conn.call("echo", json!([])).await.unwrap_err();
    assert!(matches!(err, Error::Closed(_)), "{err}");
    assert!(conn
        .closed_reason()
        .unwrap()
        .contains("expected a JSON object"));

    // A well-formed schema that is not a schema.
    let (_d, ep) = fake_server(b"{\"id\":1,\"result\":{\"tables\":42},\"error\":null}").await;
    let err = Client::connect(&ep, "OVN_Northbound", nb_options())
        .await
        .err()
        .expect("must fail");
    assert!(err.to_string().contains("no tables"), "{err}");
}

#[tokio::test]
async fn the_servers_echo_is_answered_and_ours_keeps_the_session() {
    let nb = DbServer::nb();
    let mut o = nb_options();
    o.timeouts.keepalive = Duration::from_millis(100);
    let c = Client::connect(&nb.endpoint(), "OVN_Northbound", o)
        .await
        .unwrap();
    // Several keepalive intervals of silence: our echoes keep the session.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(c.is_connected());
    let r = c.call("echo", json!(["hi"])).await.unwrap();
    assert_eq!(r, json!(["hi"]));
}
