//! Supervision of the OVS/OVN daemons we embed: the node's chassis
//! (`ovsdb-server`, `ovs-vswitchd`, `ovn-controller`) and OVN central
//! (NB/SB `ovsdb-server`, `ovn-northd`).
//!
//! Each daemon runs in the foreground as our child, its console log forwarded
//! into `tracing`, and is restarted with exponential backoff when it dies.
//! Database files are created with `ovsdb-tool create` (a file operation, as
//! OVS's own start scripts do); nothing here configures OVS — that is OVSDB's job.
//!
//! Why in `ovn` and not in the node role, its only user today: the layouts are OVN/OVS
//! knowledge (command lines, run directories, schemas) that no role owns. OVN central
//! (`CentralLayout`) is run by `kube-ovn central` (`operator::central`), always as raft
//! clusters; which member creates and which joins is that role's decision, the command
//! lines are here.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Where the schemas of the Debian packages live.
pub const VSWITCH_SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";
pub const OVN_NB_SCHEMA: &str = "/usr/share/ovn/ovn-nb.ovsschema";
pub const OVN_SB_SCHEMA: &str = "/usr/share/ovn/ovn-sb.ovsschema";

/// Errors while preparing or starting a daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("creating database {path} from {schema}: {reason}")]
    CreateDb {
        path: PathBuf,
        schema: String,
        reason: String,
    },
    #[error("daemon {name}: {reason}")]
    Spawn { name: String, reason: String },
}

/// One daemon: how to run it in the foreground.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonSpec {
    /// Short name used in logs (`ovsdb-server`, `ovn-controller`, …).
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
}

impl DaemonSpec {
    fn new(name: &str, program: &str) -> Self {
        DaemonSpec {
            name: name.to_string(),
            program: PathBuf::from(program),
            args: Vec::new(),
            env: BTreeMap::new(),
        }
    }

    fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    fn env(mut self, k: &str, v: impl Into<String>) -> Self {
        self.env.insert(k.to_string(), v.into());
        self
    }

    /// Console at info level, no syslog: our supervisor forwards stderr into tracing.
    fn console_logging(self) -> Self {
        self.arg("-vconsole:info").arg("-vsyslog:off")
    }
}

/// Files of one chassis (a node's Open vSwitch and ovn-controller).
#[derive(Clone, Debug)]
pub struct ChassisLayout {
    /// Holds the database, pidfiles and control sockets (OVS_RUNDIR/OVN_RUNDIR).
    pub run_dir: PathBuf,
}

impl ChassisLayout {
    pub fn db_file(&self) -> PathBuf {
        self.run_dir.join("conf.db")
    }

    /// The endpoint our OVSDB client and ovs-vswitchd use.
    pub fn db_socket(&self) -> PathBuf {
        self.run_dir.join("db.sock")
    }

    pub fn db_endpoint(&self) -> String {
        format!("unix:{}", self.db_socket().display())
    }

    fn rundir_env(&self, spec: DaemonSpec) -> DaemonSpec {
        let dir = self.run_dir.display().to_string();
        spec.env("OVS_RUNDIR", dir.clone()).env("OVN_RUNDIR", dir)
    }

    pub fn ovsdb_server(&self) -> DaemonSpec {
        let d = &self.run_dir;
        self.rundir_env(DaemonSpec::new("ovsdb-server", "ovsdb-server"))
            .console_logging()
            .arg(format!("--remote=punix:{}", self.db_socket().display()))
            .arg(format!(
                "--unixctl={}",
                d.join("ovsdb-server.ctl").display()
            ))
            .arg(format!(
                "--pidfile={}",
                d.join("ovsdb-server.pid").display()
            ))
            .arg(self.db_file().display().to_string())
    }

    pub fn ovs_vswitchd(&self) -> DaemonSpec {
        let d = &self.run_dir;
        self.rundir_env(DaemonSpec::new("ovs-vswitchd", "ovs-vswitchd"))
            .console_logging()
            .arg(format!(
                "--unixctl={}",
                d.join("ovs-vswitchd.ctl").display()
            ))
            .arg(format!(
                "--pidfile={}",
                d.join("ovs-vswitchd.pid").display()
            ))
            .arg(self.db_endpoint())
    }

    pub fn ovn_controller(&self) -> DaemonSpec {
        let d = &self.run_dir;
        // ovn-controller 23.03 has no --unixctl: OVN_RUNDIR places its control socket.
        self.rundir_env(DaemonSpec::new("ovn-controller", "ovn-controller"))
            .console_logging()
            .arg(format!(
                "--pidfile={}",
                d.join("ovn-controller.pid").display()
            ))
            .arg(self.db_endpoint())
    }

    /// The three chassis daemons, in start order.
    pub fn daemons(&self) -> Vec<DaemonSpec> {
        vec![
            self.ovsdb_server(),
            self.ovs_vswitchd(),
            self.ovn_controller(),
        ]
    }

    /// Creates the run directory and an empty Open_vSwitch database if absent.
    pub async fn prepare(&self) -> Result<(), DaemonError> {
        ensure_db(&self.db_file(), VSWITCH_SCHEMA).await
    }
}

/// One of OVN central's two databases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CentralDb {
    Nb,
    Sb,
}

impl CentralDb {
    pub const ALL: [CentralDb; 2] = [CentralDb::Nb, CentralDb::Sb];

    /// Short name used for its files (`nb.db`, `nb.sock`, `nb.ctl`) and logs.
    pub fn short(self) -> &'static str {
        match self {
            CentralDb::Nb => "nb",
            CentralDb::Sb => "sb",
        }
    }

    /// The database's name in its schema.
    pub fn database(self) -> &'static str {
        match self {
            CentralDb::Nb => "OVN_Northbound",
            CentralDb::Sb => "OVN_Southbound",
        }
    }

    pub fn schema(self) -> &'static str {
        match self {
            CentralDb::Nb => OVN_NB_SCHEMA,
            CentralDb::Sb => OVN_SB_SCHEMA,
        }
    }
}

/// TCP ports of OVN central, the same on every member (upstream Kube-OVN's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CentralPorts {
    pub nb: u16,
    pub sb: u16,
    pub nb_raft: u16,
    pub sb_raft: u16,
}

impl Default for CentralPorts {
    fn default() -> Self {
        CentralPorts {
            nb: 6641,
            sb: 6642,
            nb_raft: 6643,
            sb_raft: 6644,
        }
    }
}

impl CentralPorts {
    /// Where clients (northd, ovn-controller, the operator) reach `db`.
    pub fn client(&self, db: CentralDb) -> u16 {
        match db {
            CentralDb::Nb => self.nb,
            CentralDb::Sb => self.sb,
        }
    }

    /// Where the members of `db`'s raft cluster talk to each other.
    pub fn raft(&self, db: CentralDb) -> u16 {
        match db {
            CentralDb::Nb => self.nb_raft,
            CentralDb::Sb => self.sb_raft,
        }
    }
}

/// How a member without a database file gets one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bootstrap {
    /// A new cluster whose only member is this one (`ovsdb-tool create-cluster`).
    Create,
    /// A file that asks the other members to be let in (`ovsdb-tool join-cluster`).
    Join,
}

/// One member of OVN central: NB and SB `ovsdb-server`, both clustered (raft,
/// also with one member), and `ovn-northd`. Database files live in `db_dir`
/// (kept across restarts); sockets, pidfiles and control sockets in `run_dir`.
#[derive(Clone, Debug)]
pub struct CentralLayout {
    pub db_dir: PathBuf,
    pub run_dir: PathBuf,
    /// This member's address.
    pub address: IpAddr,
    /// Every member's address, this one included, in the same order on all members.
    pub members: Vec<IpAddr>,
    pub ports: CentralPorts,
}

/// `host:port` with IPv6 hosts in brackets, as OVS wants them.
fn host_port(ip: IpAddr, port: u16) -> String {
    SocketAddr::new(ip, port).to_string()
}

impl CentralLayout {
    pub fn db_file(&self, db: CentralDb) -> PathBuf {
        self.db_dir.join(format!("{}.db", db.short()))
    }

    fn run_file(&self, db: CentralDb, ext: &str) -> PathBuf {
        self.run_dir.join(format!("{}.{ext}", db.short()))
    }

    /// The local server's unix socket endpoint.
    pub fn local_endpoint(&self, db: CentralDb) -> String {
        format!("unix:{}", self.run_file(db, "sock").display())
    }

    /// The client endpoint of `db` on `member`.
    pub fn member_endpoint(&self, db: CentralDb, member: IpAddr) -> String {
        format!("tcp:{}", host_port(member, self.ports.client(db)))
    }

    /// Every member's client endpoint, comma-separated, as northd, ovn-controller
    /// and our own client take it.
    pub fn cluster_endpoints(&self, db: CentralDb) -> String {
        let list: Vec<String> = self
            .members
            .iter()
            .map(|m| self.member_endpoint(db, *m))
            .collect();
        list.join(",")
    }

    /// Where `member` takes part in `db`'s raft cluster.
    pub fn raft_endpoint(&self, db: CentralDb, member: IpAddr) -> String {
        format!("tcp:{}", host_port(member, self.ports.raft(db)))
    }

    /// The `ovsdb-tool` arguments that make this member's database file.
    pub fn bootstrap_args(&self, db: CentralDb, how: Bootstrap) -> Vec<String> {
        let file = self.db_file(db).display().to_string();
        let local = self.raft_endpoint(db, self.address);
        match how {
            Bootstrap::Create => vec!["create-cluster".into(), file, db.schema().into(), local],
            Bootstrap::Join => {
                let mut args = vec!["join-cluster".into(), file, db.database().into(), local];
                args.extend(
                    self.members
                        .iter()
                        .filter(|m| **m != self.address)
                        .map(|m| self.raft_endpoint(db, *m)),
                );
                args
            }
        }
    }

    /// Makes this member's database file with `ovsdb-tool` (a file operation,
    /// as OVN's own scripts do); the server then forms or joins the cluster.
    pub async fn bootstrap(&self, db: CentralDb, how: Bootstrap) -> Result<(), DaemonError> {
        let path = self.db_file(db);
        let fail = |reason: String| DaemonError::CreateDb {
            path: path.clone(),
            schema: db.schema().to_string(),
            reason,
        };
        tokio::fs::create_dir_all(&self.db_dir)
            .await
            .map_err(|e| fail(format!("creating {}: {e}", self.db_dir.display())))?;
        ovsdb_tool(&self.bootstrap_args(db, how))
            .await
            .map_err(fail)
    }

    /// The `ovsdb-server` of `db`: clients on the unix socket and on
    /// `ptcp:<port>:<address>`; raft traffic goes to the address in the file.
    pub fn db_server(&self, db: CentralDb) -> DaemonSpec {
        let short = db.short();
        DaemonSpec::new(&format!("ovsdb-server-{short}"), "ovsdb-server")
            .env("OVS_RUNDIR", self.run_dir.display().to_string())
            .console_logging()
            .arg(format!(
                "--remote=punix:{}",
                self.run_file(db, "sock").display()
            ))
            .arg(format!(
                "--remote=ptcp:{}:{}",
                self.ports.client(db),
                match self.address {
                    IpAddr::V4(a) => a.to_string(),
                    IpAddr::V6(a) => format!("[{a}]"),
                }
            ))
            .arg(format!("--unixctl={}", self.ctl_socket(db).display()))
            .arg(format!("--pidfile={}", self.run_file(db, "pid").display()))
            .arg(self.db_file(db).display().to_string())
    }

    /// northd on every member, pointed at all members: its lock on SB makes
    /// one active and the others standby.
    pub fn ovn_northd(&self) -> DaemonSpec {
        let d = &self.run_dir;
        DaemonSpec::new("ovn-northd", "ovn-northd")
            .env("OVN_RUNDIR", d.display().to_string())
            .console_logging()
            .arg(format!(
                "--ovnnb-db={}",
                self.cluster_endpoints(CentralDb::Nb)
            ))
            .arg(format!(
                "--ovnsb-db={}",
                self.cluster_endpoints(CentralDb::Sb)
            ))
            .arg(format!("--unixctl={}", self.northd_ctl().display()))
            .arg(format!("--pidfile={}", d.join("northd.pid").display()))
    }

    /// The control socket of `db`'s server (`cluster/status`, `cluster/kick`).
    pub fn ctl_socket(&self, db: CentralDb) -> PathBuf {
        self.run_file(db, "ctl")
    }

    /// northd's control socket (`ovn-appctl -t <it> status`).
    pub fn northd_ctl(&self) -> PathBuf {
        self.run_dir.join("northd.ctl")
    }

    /// NB server, SB server, northd, in start order.
    pub fn daemons(&self) -> Vec<DaemonSpec> {
        vec![
            self.db_server(CentralDb::Nb),
            self.db_server(CentralDb::Sb),
            self.ovn_northd(),
        ]
    }
}

/// Runs `ovsdb-tool` with `args`; the error is its stderr.
async fn ovsdb_tool(args: &[String]) -> Result<(), String> {
    let out = Command::new("ovsdb-tool")
        .args(args)
        .output()
        .await
        .map_err(|e| format!("running ovsdb-tool: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(())
}

/// Creates `path` from `schema` unless it exists.
async fn ensure_db(path: &Path, schema: &str) -> Result<(), DaemonError> {
    let fail = |reason: String| DaemonError::CreateDb {
        path: path.to_path_buf(),
        schema: schema.to_string(),
        reason,
    };
    if path.exists() {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| fail(e.to_string()))?;
    }
    let args = [
        "create".to_string(),
        path.display().to_string(),
        schema.to_string(),
    ];
    ovsdb_tool(&args).await.map_err(fail)
}

/// Restart backoff: doubles from `initial` to `max`; reset after a run of `stable`.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub stable: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            stable: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The delay before the next start, given the previous delay and how long the run lasted.
    pub fn next(&self, previous: Option<Duration>, ran_for: Duration) -> Duration {
        match previous {
            _ if ran_for >= self.stable => self.initial,
            None => self.initial,
            Some(p) => (p * 2).min(self.max),
        }
    }
}

/// A supervised daemon; dropping the handle does not stop it, [`Supervised::stop`] does.
pub struct Supervised {
    pub name: String,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    pid: watch::Receiver<Option<u32>>,
    restarts: watch::Receiver<u32>,
}

impl Supervised {
    /// Pid of the current incarnation, if running.
    pub fn pid(&self) -> Option<u32> {
        *self.pid.borrow()
    }

    /// How many times the daemon was restarted after dying.
    pub fn restarts(&self) -> u32 {
        *self.restarts.borrow()
    }

    /// Waits until a running incarnation other than `not` has a pid.
    pub async fn wait_running(&mut self, not: Option<u32>) -> Option<u32> {
        let mut rx = self.pid.clone();
        let got = rx.wait_for(|p| p.is_some() && *p != not).await;
        got.ok().and_then(|p| *p)
    }

    /// Stops the daemon (SIGTERM, then SIGKILL after a grace period) and waits.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Starts `spec` and keeps it running until stopped.
pub fn supervise(spec: DaemonSpec, backoff: Backoff) -> Supervised {
    let (stop_tx, stop_rx) = watch::channel(false);
    let (pid_tx, pid_rx) = watch::channel(None);
    let (restarts_tx, restarts_rx) = watch::channel(0u32);
    let name = spec.name.clone();
    let task = tokio::spawn(run_supervised(spec, backoff, stop_rx, pid_tx, restarts_tx));
    Supervised {
        name,
        stop: stop_tx,
        task,
        pid: pid_rx,
        restarts: restarts_rx,
    }
}

async fn run_supervised(
    spec: DaemonSpec,
    backoff: Backoff,
    mut stop: watch::Receiver<bool>,
    pid: watch::Sender<Option<u32>>,
    restarts: watch::Sender<u32>,
) {
    let mut delay: Option<Duration> = None;
    loop {
        let started = Instant::now();
        match spawn(&spec) {
            Ok(mut child) => {
                let _ = pid.send(child.id());
                tracing::info!(daemon = %spec.name, pid = ?child.id(), "started");
                tokio::select! {
                    status = child.wait() => {
                        let _ = pid.send(None);
                        tracing::warn!(daemon = %spec.name, ?status, "exited; restarting");
                    }
                    _ = stopped(&mut stop) => {
                        terminate(&mut child, &spec.name).await;
                        let _ = pid.send(None);
                        return;
                    }
                }
            }
            Err(e) => tracing::error!(daemon = %spec.name, error = %e, "cannot start"),
        }
        let wait = backoff.next(delay, started.elapsed());
        delay = Some(wait);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stopped(&mut stop) => return,
        }
        restarts.send_modify(|n| *n += 1);
    }
}

/// Resolves once a stop was requested (or the handle is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The watch guard is not Send: keep it inside this function.
    let _ = stop.wait_for(|s| *s).await;
}

fn spawn(spec: &DaemonSpec) -> Result<Child, DaemonError> {
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .envs(&spec.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| DaemonError::Spawn {
        name: spec.name.clone(),
        reason: format!("{}: {e}", spec.program.display()),
    })?;
    if let Some(out) = child.stdout.take() {
        tokio::spawn(forward_log(spec.name.clone(), BufReader::new(out)));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(forward_log(spec.name.clone(), BufReader::new(err)));
    }
    Ok(child)
}

async fn terminate(child: &mut Child, name: &str) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    if tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .is_err()
    {
        tracing::warn!(daemon = %name, "did not stop on SIGTERM; killing");
        let _ = child.kill().await;
    }
}

/// Forwards an OVS-style log stream (`time|seq|module|LEVEL|message`) into tracing.
async fn forward_log<R: tokio::io::AsyncRead + Unpin>(name: String, reader: BufReader<R>) {
    let mut lines = reader.lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let (level, module, msg) = parse_ovs_log_line(&line);
        match level {
            "ERR" | "EMER" => tracing::error!(daemon = %name, module, "{msg}"),
            "WARN" => tracing::warn!(daemon = %name, module, "{msg}"),
            "DBG" => tracing::debug!(daemon = %name, module, "{msg}"),
            _ => tracing::info!(daemon = %name, module, "{msg}"),
        }
    }
}

/// Splits `2026-01-01T00:00:00Z|00001|vlog|INFO|message` into (level, module, message);
/// a line of another shape is returned whole as an INFO message.
pub fn parse_ovs_log_line(line: &str) -> (&str, &str, &str) {
    let mut parts = line.splitn(5, '|');
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some(_), Some(_), Some(module), Some(level), Some(msg)) => (level, module, msg),
        _ => ("INFO", "", line),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ovs_log_lines_split_into_level_module_message() {
        assert_eq!(
            parse_ovs_log_line("2026-11-28T00:01:48Z|00006|dpif_netlink|WARN|no kernel module"),
            ("WARN", "dpif_netlink", "no kernel module")
        );
        assert_eq!(
            parse_ovs_log_line("a message with | one bar"),
            ("INFO", "", "a message with | one bar")
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets_after_a_stable_run() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(350),
            stable: Duration::from_secs(30),
        };
        let short = Duration::from_millis(1);
        let d1 = b.next(None, short);
        let d2 = b.next(Some(d1), short);
        let d3 = b.next(Some(d2), short);
        let d4 = b.next(Some(d3), short);
        assert_eq!(
            [d1, d2, d3, d4].map(|d| d.as_millis()),
            [100, 200, 350, 350]
        );
        assert_eq!(b.next(Some(d4), Duration::from_secs(31)), b.initial);
    }

    #[test]
    fn chassis_daemons_share_one_run_dir_and_database_socket() {
        let layout = ChassisLayout {
            run_dir: PathBuf::from("/run/kovn"),
        };
        let specs = layout.daemons();
        let names: Vec<_> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["ovsdb-server", "ovs-vswitchd", "ovn-controller"]);
        assert!(specs[0]
            .args
            .contains(&"--remote=punix:/run/kovn/db.sock".to_string()));
        for s in &specs[1..] {
            assert_eq!(
                s.args.last().map(String::as_str),
                Some("unix:/run/kovn/db.sock")
            );
            assert_eq!(
                s.env.get("OVS_RUNDIR").map(String::as_str),
                Some("/run/kovn")
            );
        }
    }

    fn three_members() -> CentralLayout {
        CentralLayout {
            db_dir: PathBuf::from("/var/lib/kube-ovn/central"),
            run_dir: PathBuf::from("/run/central"),
            address: "10.0.0.2".parse().unwrap(),
            members: ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
                .map(|m| m.parse().unwrap())
                .to_vec(),
            ports: CentralPorts::default(),
        }
    }

    #[test]
    fn a_new_cluster_is_created_from_the_schema_on_this_members_raft_address() {
        assert_eq!(
            three_members().bootstrap_args(CentralDb::Nb, Bootstrap::Create),
            [
                "create-cluster",
                "/var/lib/kube-ovn/central/nb.db",
                "/usr/share/ovn/ovn-nb.ovsschema",
                "tcp:10.0.0.2:6643",
            ]
        );
    }

    #[test]
    fn joining_names_the_database_this_member_and_every_other_member() {
        assert_eq!(
            three_members().bootstrap_args(CentralDb::Sb, Bootstrap::Join),
            [
                "join-cluster",
                "/var/lib/kube-ovn/central/sb.db",
                "OVN_Southbound",
                "tcp:10.0.0.2:6644",
                "tcp:10.0.0.1:6644",
                "tcp:10.0.0.3:6644",
            ]
        );
    }

    #[test]
    fn central_servers_listen_on_this_member_and_northd_reaches_all_members() {
        let layout = three_members();
        let nb = layout.db_server(CentralDb::Nb);
        for arg in [
            "--remote=punix:/run/central/nb.sock",
            "--remote=ptcp:6641:10.0.0.2",
            "--unixctl=/run/central/nb.ctl",
        ] {
            assert!(nb.args.contains(&arg.to_string()), "{arg} in {:?}", nb.args);
        }
        assert_eq!(
            nb.args.last().map(String::as_str),
            Some("/var/lib/kube-ovn/central/nb.db")
        );
        let northd = layout.ovn_northd();
        assert!(northd.args.contains(
            &"--ovnsb-db=tcp:10.0.0.1:6642,tcp:10.0.0.2:6642,tcp:10.0.0.3:6642".to_string()
        ));
        assert!(northd.args.contains(
            &"--ovnnb-db=tcp:10.0.0.1:6641,tcp:10.0.0.2:6641,tcp:10.0.0.3:6641".to_string()
        ));
    }

    #[test]
    fn ipv6_members_are_bracketed() {
        let layout = CentralLayout {
            address: "fd00::1".parse().unwrap(),
            members: vec!["fd00::1".parse().unwrap()],
            ..three_members()
        };
        assert_eq!(
            layout.cluster_endpoints(CentralDb::Nb),
            "tcp:[fd00::1]:6641"
        );
        assert!(layout
            .db_server(CentralDb::Nb)
            .args
            .contains(&"--remote=ptcp:6641:[fd00::1]".to_string()));
        assert_eq!(
            layout.bootstrap_args(CentralDb::Nb, Bootstrap::Create)[3],
            "tcp:[fd00::1]:6643"
        );
    }
}
