//! `hack/bench.sh ovsdb`: 10,000 logical switch ports on one switch, three
//! ways, each on a fresh OVN_Northbound ovsdb-server: our client with 500
//! ports a transaction (two transactions in flight on the one connection, so
//! planning the next batch overlaps the server's work on the last), our
//! client with one port a transaction (one at a time), and one `ovn-nbctl`
//! invocation with every command chained by `--` (the baseline).
//! Each port has addresses, port security and an `external_ids:pod`, as a
//! pod attachment does. The batched way lasts about a second, so on a shared
//! machine it is run three times (fresh server each time) and the best run
//! counts; the other two last tens of seconds and run once. Prints one
//! `BENCH ovsdb …` line.

#[path = "../tests/ovsdb_support/mod.rs"]
mod ovsdb_support;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Instant;

use futures::stream::{FuturesUnordered, StreamExt};
use kube_ovn::api::mac::MacAddr;
use kube_ovn::ovn::{LspSpec, Northbound};
use ovsdb_support::DbServer;

const PORTS: usize = 10_000;
const BATCH: usize = 500;
/// Batched transactions in flight at once.
const IN_FLIGHT: usize = 2;

fn spec(i: usize) -> LspSpec {
    let (hi, lo) = (i / 250, i % 250 + 2);
    LspSpec {
        name: format!("pod{i}.ns.net1.ns.ovn"),
        switch: "net1".into(),
        mac: MacAddr([0, 0, 0, 0, hi as u8, lo as u8]),
        ips: vec![IpAddr::from([10, 100, hi as u8, lo as u8])],
        port_security: true,
        external_ids: BTreeMap::from([
            ("pod".to_string(), format!("ns/pod{i}")),
            ("ls".to_string(), "net1".to_string()),
            ("vendor".to_string(), "kube-ovn".to_string()),
        ]),
    }
}

fn port_count(db: &DbServer) -> usize {
    db.nbctl(&[
        "--format=csv",
        "--no-headings",
        "--columns=_uuid",
        "list",
        "Logical_Switch_Port",
    ])
    .lines()
    .count()
}

async fn fresh() -> (DbServer, Northbound) {
    let db = DbServer::nb();
    let nb = Northbound::connect(&db.endpoint())
        .await
        .expect("connect to NB");
    nb.ensure_switch("net1", &BTreeMap::new())
        .await
        .expect("switch");
    (db, nb)
}

/// Ports per second with `BATCH` ports a transaction, and cache bytes per port.
async fn ours_batched() -> (f64, f64) {
    let (db, nb) = fresh().await;
    let start = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    for chunk in (0..PORTS).collect::<Vec<_>>().chunks(BATCH) {
        let mut txn = nb.txn();
        for &i in chunk {
            txn.ensure_logical_switch_port(&spec(i)).expect("plan");
        }
        in_flight.push(txn.commit());
        if in_flight.len() >= IN_FLIGHT {
            in_flight
                .next()
                .await
                .expect("a commit in flight")
                .expect("commit");
        }
    }
    while let Some(done) = in_flight.next().await {
        done.expect("commit");
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(port_count(&db), PORTS);
    let bytes = nb.client().cache().approx_bytes() as f64 / PORTS as f64;
    (PORTS as f64 / secs, bytes)
}

async fn ours_single() -> f64 {
    let (db, nb) = fresh().await;
    let start = Instant::now();
    for i in 0..PORTS {
        nb.ensure_logical_switch_port(&spec(i))
            .await
            .expect("ensure");
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(port_count(&db), PORTS);
    PORTS as f64 / secs
}

fn nbctl_chained() -> f64 {
    let db = DbServer::nb();
    db.nbctl(&["ls-add", "net1"]);
    let mut args = vec![
        format!("--db={}", db.endpoint()),
        "--timeout=600".to_string(),
    ];
    for i in 0..PORTS {
        let s = spec(i);
        let addr = s.addresses().remove(0);
        if i > 0 {
            args.push("--".into());
        }
        args.extend(["lsp-add".into(), "net1".into(), s.name.clone()]);
        args.extend([
            "--".into(),
            "lsp-set-addresses".into(),
            s.name.clone(),
            addr.clone(),
        ]);
        args.extend([
            "--".into(),
            "lsp-set-port-security".into(),
            s.name.clone(),
            addr,
        ]);
        args.extend([
            "--".into(),
            "set".into(),
            "Logical_Switch_Port".into(),
            s.name.clone(),
        ]);
        for (k, v) in &s.external_ids {
            args.push(format!("external_ids:{k}=\"{v}\""));
        }
    }
    let mut cmd = Command::new("ovn-nbctl");
    cmd.args(&args);
    // 40,000 chained commands exceed the default argument space (a quarter
    // of the stack limit): lift the stack limit for the child.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: libc::RLIM_INFINITY,
                rlim_max: libc::RLIM_INFINITY,
            };
            libc::setrlimit(libc::RLIMIT_STACK, &lim);
            Ok(())
        });
    }
    let start = Instant::now();
    let out = cmd.output().expect("run ovn-nbctl");
    let secs = start.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "ovn-nbctl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(port_count(&db), PORTS);
    PORTS as f64 / secs
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (batched, cache_bytes) =
        (0..3)
            .map(|_| rt.block_on(ours_batched()))
            .fold(
                (0.0, 0.0),
                |best, run| if run.0 > best.0 { run } else { best },
            );
    let single = rt.block_on(ours_single());
    let nbctl = nbctl_chained();
    println!(
        "BENCH ovsdb ours_batched_per_s={batched:.0} ours_single_per_s={single:.0} nbctl_chained_per_s={nbctl:.0} ratio_batched_vs_nbctl={:.2} cache_bytes_per_port={cache_bytes:.0}",
        batched / nbctl
    );
}
