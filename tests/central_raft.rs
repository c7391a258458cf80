//! `kube-ovn central` as the ovn-central StatefulSet runs it, with real
//! `ovsdb-server`s and `ovn-northd`: one member, three members forming raft
//! clusters (a member killed while our multi-remote client uses it, then
//! restarted on its database files), and flags that cannot make a cluster.
//!
//! Members listen on loopback addresses 127.0.0.11–13 with the default ports
//! (all of 127/8 is loopback; the OVN sandbox of other tests uses unix sockets),
//! each with its own temporary db-dir. The tests that bind those ports take a
//! lock so that they run one at a time.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kube_ovn::ovn::Northbound;
use kube_ovn::ovsdb::{Client, ClientOptions, Endpoint, Mutation, Op, TableSpec, Value};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// Serializes the tests that bind 127.0.0.11–13.
static PORTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const STATUS_PORT: u16 = 10661;

fn generous() -> Instant {
    Instant::now() + Duration::from_secs(45)
}

/// One `kube-ovn central` process (and, in its process group, its daemons).
struct Member {
    address: IpAddr,
    members: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Member {
    fn new(address: &str, members: &[&str]) -> Member {
        let dir = tempfile::Builder::new()
            .prefix("kovc")
            .tempdir_in("/tmp")
            .expect("a db-dir in /tmp");
        let mut m = Member {
            address: address.parse().expect("an IP"),
            members: members.join(","),
            dir,
            child: None,
        };
        m.start();
        m
    }

    fn db_dir(&self) -> &Path {
        self.dir.path()
    }

    fn log(&self) -> PathBuf {
        self.db_dir().join("central.log")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Starts (again) on the same db-dir; the log is appended to.
    fn start(&mut self) {
        assert!(self.child.is_none(), "{} already running", self.address);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .expect("the member's log file");
        let child = Command::new(env!("CARGO_BIN_EXE_kube-ovn"))
            .arg("central")
            .arg(format!("--address={}", self.address))
            .arg(format!("--members={}", self.members))
            .arg(format!("--db-dir={}", self.db_dir().display()))
            .arg(format!("--status-addr={}:{STATUS_PORT}", self.address))
            .env_remove("POD_IP")
            .env_remove("OVN_CENTRAL_MEMBERS")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            // Its own process group: killing the group is what killing a pod does.
            .process_group(0)
            .spawn()
            .expect("spawning kube-ovn central");
        self.child = Some(child);
    }

    /// Kills the member and its daemons at once, as a node failure would.
    fn kill(&mut self) {
        let mut child = self.child.take().expect("member running");
        let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
        let _ = child.wait();
        // The daemons are in the group too; wait until their ports are free.
        let pgid = child.id() as i32;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while killpg(Pid::from_raw(pgid), None).is_ok() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn run_dir(&self) -> PathBuf {
        self.db_dir().join("run")
    }

    fn nb(&self) -> String {
        format!("tcp:{}:6641", self.address)
    }

    async fn http_status(&self, path: &str) -> Option<u16> {
        let mut s = tokio::net::TcpStream::connect((self.address, STATUS_PORT))
            .await
            .ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: central\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut reply = String::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut reply))
            .await
            .ok()?
            .ok()?;
        reply.split_whitespace().nth(1)?.parse().ok()
    }

    async fn wait_ready(&self) {
        let deadline = generous();
        while self.http_status("/readyz").await != Some(200) {
            assert!(
                Instant::now() < deadline,
                "member {} not ready; its log ends:\n{}",
                self.address,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `Status: active` or `Status: standby`, from northd itself.
    fn northd_status(&self) -> String {
        let out = Command::new("ovn-appctl")
            .arg("-t")
            .arg(self.run_dir().join("northd.ctl"))
            .arg("status")
            .output()
            .expect("running ovn-appctl");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pgid = Pid::from_raw(child.id() as i32);
            let _ = killpg(pgid, Signal::SIGTERM);
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = killpg(pgid, Signal::SIGKILL);
            let _ = child.wait();
        }
    }
}

fn endpoint_list(members: &[&Member], port: u16) -> String {
    let list: Vec<String> = members
        .iter()
        .map(|m| format!("tcp:{}:{port}", m.address))
        .collect();
    list.join(",")
}

/// Writes `key=value` into SB_Global's external_ids and reads it back.
async fn write_sb(sb: &Client, key: &str, value: &str) -> kube_ovn::ovsdb::Result<()> {
    let pair = Value::map([(key, value)]);
    sb.transact(vec![Op::mutate(
        "SB_Global",
        vec![],
        vec![Mutation::insert("external_ids", pair)],
    )])
    .await?;
    Ok(())
}

/// Retries `write` until it succeeds: right after a member dies the client may
/// still be on the dead session, or the cluster may be electing a leader.
async fn until_written<F, Fut, E>(what: &str, mut write: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, E>>,
    E: std::fmt::Display,
{
    let deadline = generous();
    loop {
        match write().await {
            Ok(_) => return,
            Err(e) => {
                assert!(Instant::now() < deadline, "{what} never succeeded: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

#[tokio::test]
async fn one_member_serves_nb_and_sb_and_is_ready() {
    let _ports = PORTS.lock().await;
    let member = Member::new("127.0.0.11", &["127.0.0.11"]);
    member.wait_ready().await;
    assert_eq!(member.http_status("/healthz").await, Some(200));
    let nb = Northbound::connect(&member.nb()).await.unwrap();
    assert!(nb.ensure_switch("ls-one", &BTreeMap::new()).await.unwrap());

    let reader = Northbound::connect(&member.nb()).await.unwrap();
    assert!(reader.switch("ls-one").unwrap().is_some());
    assert!(
        std::fs::metadata(member.db_dir().join("nb.db")).is_ok(),
        "nb.db lives in the db-dir"
    );
    let deadline = generous();
    while member.northd_status() != "Status: active" {
        assert!(Instant::now() < deadline, "northd never became active");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const ADDRESSES: [&str; 3] = ["127.0.0.11", "127.0.0.12", "127.0.0.13"];

/// Starts the three members last first, as a StatefulSet with parallel pod
/// management may: the others wait as joiners until the first creates.
fn three_members() -> Vec<Member> {
    let mut members: Vec<Member> = ADDRESSES
        .iter()
        .rev()
        .map(|a| Member::new(a, &ADDRESSES))
        .collect();
    members.reverse();
    members
}

/// `member`'s `cluster/status` of `db` (its ctl socket `<db>.ctl`).
fn cluster_status(member: &Member, db: &str, database: &str) -> String {
    let out = Command::new("ovn-appctl")
        .arg("-t")
        .arg(member.run_dir().join(format!("{db}.ctl")))
        .args(["cluster/status", database])
        .output()
        .expect("running ovn-appctl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The short server ids of a cluster, from `member`'s `cluster/status` of `db`.
fn cluster_servers(member: &Member, db: &str, database: &str) -> Vec<String> {
    cluster_status(member, db, database)
        .lines()
        .skip_while(|l| l.trim() != "Servers:")
        .skip(1)
        .filter(|l| l.contains(" at tcp:"))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// `member`'s own short server id in `db`'s cluster.
fn own_server_id(member: &Member, db: &str, database: &str) -> String {
    cluster_status(member, db, database)
        .lines()
        .find_map(|l| l.strip_prefix("Server ID: "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no Server ID for {database} on {}", member.address))
        .to_string()
}

#[tokio::test]
async fn three_members_keep_nb_and_sb_writable_when_one_dies_and_it_rejoins() {
    let _ports = PORTS.lock().await;
    let mut members = three_members();
    for m in &members {
        m.wait_ready().await;
    }
    let all: Vec<&Member> = members.iter().collect();
    let nb = Northbound::connect(&endpoint_list(&all, 6641))
        .await
        .unwrap();
    let sb_tables = vec![TableSpec {
        name: "SB_Global".into(),
        columns: vec!["external_ids".into()],
        indexes: vec![],
    }];
    let sb = Client::connect(
        &endpoint_list(&all, 6642),
        "OVN_Southbound",
        ClientOptions::new(sb_tables),
    )
    .await
    .unwrap();
    let no_ids = BTreeMap::new();
    until_written("NB write before the kill", || {
        nb.ensure_switch("ls-before", &no_ids)
    })
    .await;

    // Kill the member the NB client is on: the client must move to another.
    let used = nb.client().endpoint().expect("a session");
    let victim = members
        .iter()
        .position(|m| Endpoint::parse(&m.nb()).unwrap() == used)
        .expect("the client is on one of the members");
    members[victim].kill();

    until_written("NB write with a member down", || {
        nb.ensure_switch("ls-while-down", &no_ids)
    })
    .await;
    assert_ne!(nb.client().endpoint(), Some(used.clone()));
    until_written("SB write with a member down", || async {
        write_sb(&sb, "written-while-down", "yes")
            .await
            .map(|_| true)
    })
    .await;

    // Back on the same database files: it rejoins and catches up.
    members[victim].start();
    members[victim].wait_ready().await;
    let alone = Northbound::connect(&members[victim].nb()).await.unwrap();
    alone
        .client()
        .wait_until(generous(), "ls-while-down on the rejoined member", || {
            alone.switch("ls-while-down").ok().flatten()
        })
        .await
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", members[victim].log_tail()));

    let deadline = generous();
    loop {
        let statuses: Vec<String> = members.iter().map(Member::northd_status).collect();
        let active = statuses.iter().filter(|s| *s == "Status: active").count();
        let standby = statuses.iter().filter(|s| *s == "Status: standby").count();
        if active == 1 && standby == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "northd statuses never settled to one active: {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_first_member_that_lost_its_disk_joins_the_running_cluster_instead_of_making_another() {
    let _ports = PORTS.lock().await;
    let mut members = three_members();
    for m in &members {
        m.wait_ready().await;
    }
    let all: Vec<&Member> = members.iter().collect();
    let nb = Northbound::connect(&endpoint_list(&all, 6641))
        .await
        .unwrap();
    let no_ids = BTreeMap::new();
    until_written("NB write before the loss", || {
        nb.ensure_switch("ls-kept", &no_ids)
    })
    .await;

    let dbs = [("nb", "OVN_Northbound"), ("sb", "OVN_Southbound")];
    let lost: Vec<String> = dbs
        .iter()
        .map(|(db, database)| own_server_id(&members[0], db, database))
        .collect();

    // The first member comes back with an empty db-dir (a new disk).
    members[0].kill();
    for file in ["nb.db", "sb.db"] {
        std::fs::remove_file(members[0].db_dir().join(file)).unwrap();
    }
    members[0].start();
    members[0].wait_ready().await;

    // It serves the cluster's data, so it joined rather than created.
    let alone = Northbound::connect(&members[0].nb()).await.unwrap();
    alone
        .client()
        .wait_until(generous(), "ls-kept on the member with a new disk", || {
            alone.switch("ls-kept").ok().flatten()
        })
        .await
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", members[0].log_tail()));
    // Its former self is gone: the clusters have three servers again, the
    // new one among them and the lost one not.
    for ((db, database), lost) in dbs.iter().zip(&lost) {
        let new = own_server_id(&members[0], db, database);
        assert_ne!(&new, lost, "{database}: a new disk makes a new server");
        let deadline = generous();
        loop {
            let servers = cluster_servers(&members[1], db, database);
            if servers.len() == 3 && servers.contains(&new) && !servers.contains(lost) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{database} servers {servers:?} still hold the lost {lost}; log:\n{}",
                members[0].log_tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test]
async fn a_member_is_alive_but_not_ready_until_it_is_in_its_cluster() {
    let _ports = PORTS.lock().await;
    // The second member alone: it waits to join a cluster nobody created yet.
    let second = Member::new(ADDRESSES[1], &ADDRESSES);
    let deadline = generous();
    while second.http_status("/healthz").await != Some(200) {
        assert!(
            Instant::now() < deadline,
            "no /healthz: {}",
            second.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(second.http_status("/readyz").await, Some(503));

    // Once the first creates the clusters (and the third joins), it is ready.
    let first = Member::new(ADDRESSES[0], &ADDRESSES);
    let _third = Member::new(ADDRESSES[2], &ADDRESSES);
    first.wait_ready().await;
    second.wait_ready().await;
}

/// Runs `kube-ovn central` with `args` and returns (exit success, stderr).
fn central_with(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kube-ovn"))
        .arg("central")
        .args(args)
        .env_remove("POD_IP")
        .env_remove("OVN_CENTRAL_MEMBERS")
        .output()
        .expect("running kube-ovn central");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn flags_that_cannot_make_a_cluster_are_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let db_dir = dir.path().join("central");
    let db_dir_flag = format!("--db-dir={}", db_dir.display());
    let cases: [(&[&str], &str); 4] = [
        (
            &["--members=127.0.0.11,127.0.0.12,127.0.0.13"],
            "--address (env POD_IP) is missing",
        ),
        (
            &["--address=127.0.0.11", "--members=127.0.0.11,127.0.0.12"],
            "OVN central runs with 1 or 3",
        ),
        (
            &[
                "--address=127.0.0.11",
                "--members=127.0.0.11,127.0.0.12,127.0.0.11",
            ],
            "lists 127.0.0.11 twice: list each member once",
        ),
        (
            &["--address=127.0.0.11"],
            "--members (env OVN_CENTRAL_MEMBERS) is missing",
        ),
    ];
    for (args, fix) in cases {
        let mut all = args.to_vec();
        all.push(&db_dir_flag);
        let (ok, stderr) = central_with(&all);
        assert!(!ok, "{args:?} must fail");
        assert!(stderr.contains(fix), "{args:?}: {stderr}");
    }
    assert!(
        !db_dir.exists(),
        "nothing is made before the flags are valid"
    );
}
