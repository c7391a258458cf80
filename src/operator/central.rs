//! The `central` role (`kube-ovn central`): one member of OVN central, as the
//! `ovn-central` StatefulSet runs it. It validates the member list, gives this
//! member its NB and SB database files on first start (create or join the raft
//! cluster; a member that lost its files joins and then kicks its former self
//! out), supervises NB and SB `ovsdb-server` and `ovn-northd`, serves
//! `/healthz` and `/readyz`, and stops the daemons on SIGTERM (the member stays
//! in the cluster and rejoins when it starts again).
//!
//! Not here: the daemons' command lines (`ovn::daemons::CentralLayout`), the
//! StatefulSet that runs this (the operator's installer), and the OVSDB client.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tracing::{debug, info, warn};

use crate::ovn::daemons::{self, Backoff, Bootstrap, CentralDb, CentralLayout, CentralPorts};
use crate::ovsdb::client::{server_database, ServerDatabase};
use crate::ovsdb::{Connection, Endpoint, Timeouts};

/// Flags of `kube-ovn central`.
#[derive(Debug, Clone, clap::Args)]
pub struct CentralArgs {
    /// This member's address (in the host-network StatefulSet, the node's IP).
    #[arg(long, env = "POD_IP")]
    pub address: Option<IpAddr>,
    /// Every member's address, in the same order on every member, this one
    /// included: 1 or 3 entries. The first creates the clusters.
    #[arg(long, env = "OVN_CENTRAL_MEMBERS", value_delimiter = ',')]
    pub members: Vec<IpAddr>,
    /// Directory of nb.db and sb.db (kept across restarts).
    #[arg(long, default_value = "/var/lib/kube-ovn/central")]
    pub db_dir: PathBuf,
    /// Directory of unix sockets, pidfiles and control sockets [default: <db-dir>/run].
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    #[arg(long, default_value_t = CentralPorts::default().nb)]
    pub nb_port: u16,
    #[arg(long, default_value_t = CentralPorts::default().sb)]
    pub sb_port: u16,
    #[arg(long, default_value_t = CentralPorts::default().nb_raft)]
    pub nb_raft_port: u16,
    #[arg(long, default_value_t = CentralPorts::default().sb_raft)]
    pub sb_raft_port: u16,
    /// Serve `/healthz` and `/readyz` here (e.g. `0.0.0.0:10661`).
    #[arg(long)]
    pub status_addr: Option<SocketAddr>,
}

/// Why a member list cannot make a cluster; each message says what to set.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MembershipError {
    #[error("--members (env OVN_CENTRAL_MEMBERS) is missing: list every member's IP, in the same order on all members (1 or 3 of them)")]
    NoMembers,
    #[error(
        "--address (env POD_IP) is missing: set it to this member's own IP, one of --members {0}"
    )]
    NoAddress(String),
    #[error("--members {members} lists {duplicate} twice: list each member once")]
    Duplicate { members: String, duplicate: IpAddr },
    #[error("--members {members} has {count} members: OVN central runs with 1 or 3 (a raft cluster of 2 stops when either member fails)")]
    Count { members: String, count: usize },
    #[error("--address {address} is not in --members {members}: set --address to this member's own IP, or add it to --members")]
    NotAMember { address: IpAddr, members: String },
}

fn comma_list(members: &[IpAddr]) -> String {
    let list: Vec<String> = members.iter().map(IpAddr::to_string).collect();
    list.join(",")
}

/// Checks that `address` and `members` make a cluster of 1 or 3 that this member belongs to.
pub fn validate_members(
    address: Option<IpAddr>,
    members: &[IpAddr],
) -> Result<IpAddr, MembershipError> {
    if members.is_empty() {
        return Err(MembershipError::NoMembers);
    }
    let list = comma_list(members);
    let address = address.ok_or_else(|| MembershipError::NoAddress(list.clone()))?;
    if let Some(duplicate) = members
        .iter()
        .enumerate()
        .find_map(|(i, m)| members[..i].contains(m).then_some(*m))
    {
        return Err(MembershipError::Duplicate {
            members: list,
            duplicate,
        });
    }
    if members.len() != 1 && members.len() != 3 {
        return Err(MembershipError::Count {
            members: list,
            count: members.len(),
        });
    }
    if !members.contains(&address) {
        return Err(MembershipError::NotAMember {
            address,
            members: list,
        });
    }
    Ok(address)
}

impl CentralArgs {
    /// This member's layout, once the flags are valid.
    pub fn layout(&self) -> Result<CentralLayout, MembershipError> {
        let address = validate_members(self.address, &self.members)?;
        Ok(CentralLayout {
            run_dir: self
                .run_dir
                .clone()
                .unwrap_or_else(|| self.db_dir.join("run")),
            db_dir: self.db_dir.clone(),
            address,
            members: self.members.clone(),
            ports: CentralPorts {
                nb: self.nb_port,
                sb: self.sb_port,
                nb_raft: self.nb_raft_port,
                sb_raft: self.sb_raft_port,
            },
        })
    }
}

/// How a member without a database file gets one. Only the first member
/// creates, and only while no other member already serves the cluster: a first
/// member that lost its disk must join the cluster the others kept, or there
/// would be two clusters (split brain).
pub fn bootstrap_for(is_first_member: bool, cluster_elsewhere: bool) -> Bootstrap {
    if is_first_member && !cluster_elsewhere {
        Bootstrap::Create
    } else {
        Bootstrap::Join
    }
}

/// A probe must not hold up a start for long: the member may be down.
const PROBE_TIMEOUTS: Timeouts = Timeouts {
    request: Duration::from_secs(3),
    keepalive: Duration::from_secs(3),
};

/// How `endpoint`'s server holds `db`, or why it could not tell.
async fn probe(endpoint: &Endpoint, db: CentralDb) -> anyhow::Result<Option<ServerDatabase>> {
    let (conn, _notes) = Connection::open(endpoint, PROBE_TIMEOUTS).await?;
    Ok(server_database(&conn, db.database()).await?)
}

/// Another member that serves `db` as part of a formed cluster (one with an
/// id: a member still waiting to join for the first time has none).
async fn cluster_elsewhere(layout: &CentralLayout, db: CentralDb) -> Option<IpAddr> {
    for member in layout.members.iter().filter(|m| **m != layout.address) {
        let endpoint = Endpoint::Tcp(SocketAddr::new(*member, layout.ports.client(db)).to_string());
        match probe(&endpoint, db).await {
            Ok(Some(found)) if found.is_clustered() && found.cid.is_some() => return Some(*member),
            Ok(found) => debug!(%member, ?found, db = db.database(), "no formed cluster there"),
            Err(e) => debug!(%member, error = %e, db = db.database(), "member not reachable"),
        }
    }
    None
}

/// Gives this member its database file for `db` if it has none; returns how.
async fn prepare_db(layout: &CentralLayout, db: CentralDb) -> anyhow::Result<Option<Bootstrap>> {
    let file = layout.db_file(db);
    if file.exists() {
        info!(db = db.database(), file = %file.display(), "database file present: rejoining");
        return Ok(None);
    }
    let is_first = layout.members.first() == Some(&layout.address);
    let elsewhere = if is_first {
        cluster_elsewhere(layout, db).await
    } else {
        None
    };
    let how = bootstrap_for(is_first, elsewhere.is_some());
    match (how, elsewhere) {
        (Bootstrap::Join, Some(member)) => warn!(
            db = db.database(),
            %member,
            "first member without a database file, but the cluster already runs: joining it"
        ),
        _ => info!(db = db.database(), ?how, "making the database file"),
    }
    layout.bootstrap(db, how).await?;
    Ok(Some(how))
}

/// The servers of a cluster that carry `raft_address` but are not the
/// answering server itself, from `cluster/status` text, whose server lines read
/// `    bfb3 (bfb3 at tcp:10.0.0.1:6643) last msg 5 ms ago` (`(self)` marks its own).
pub fn former_selves(cluster_status: &str, raft_address: &str) -> Vec<String> {
    cluster_status
        .lines()
        .skip_while(|l| l.trim() != "Servers:")
        .skip(1)
        .filter(|l| !l.contains("(self)"))
        .filter_map(|l| {
            let (sid, rest) = l.trim().split_once(' ')?;
            let (_, address) = rest.strip_prefix('(')?.split_once(" at ")?;
            let address = address.split_once(')')?.0;
            (address == raft_address).then(|| sid.to_string())
        })
        .collect()
}

/// Sends one command to an OVS daemon's control socket (unixctl speaks JSON-RPC).
async fn unixctl(socket: &Path, command: &str, args: &[&str]) -> anyhow::Result<String> {
    let endpoint = Endpoint::Unix(socket.to_path_buf());
    let (conn, _notes) = Connection::open(&endpoint, PROBE_TIMEOUTS).await?;
    let reply = conn
        .call(command, serde_json::json!(args))
        .await
        .with_context(|| format!("{command} on {}", socket.display()))?;
    Ok(reply.as_str().unwrap_or_default().to_string())
}

/// A member that lost its database file joins as a new server while the
/// cluster still counts the old one at the same address, which can never
/// come back and only raises the quorum. Once this member is in, ask the
/// leader to remove the old one.
async fn forget_former_selves(layout: Arc<CentralLayout>, db: CentralDb) {
    let address = layout.raft_endpoint(db, layout.address);
    let ctl = layout.ctl_socket(db);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if readiness(&layout, db).await.is_err() {
            continue;
        }
        let status = match unixctl(&ctl, "cluster/status", &[db.database()]).await {
            Ok(status) => status,
            Err(e) => {
                debug!(db = db.database(), error = %e, "cluster/status");
                continue;
            }
        };
        for sid in former_selves(&status, &address) {
            match unixctl(&ctl, "cluster/kick", &[db.database(), &sid]).await {
                Ok(reply) => {
                    info!(db = db.database(), server = %sid, %address, reply = reply.trim(), "removing this member's former self from the cluster")
                }
                Err(e) => {
                    warn!(db = db.database(), server = %sid, error = %e, "cannot remove this member's former self")
                }
            }
        }
        return;
    }
}

/// How the local server holds `db`, as `/readyz` reports it.
async fn readiness(layout: &CentralLayout, db: CentralDb) -> Result<(), String> {
    let endpoint = Endpoint::parse(&layout.local_endpoint(db)).map_err(|e| e.to_string())?;
    match probe(&endpoint, db).await {
        Ok(Some(found)) if found.connected => Ok(()),
        Ok(Some(_)) => Err(format!(
            "{} not connected to its cluster yet",
            db.database()
        )),
        Ok(None) => Err(format!("{} not served by the local server", db.database())),
        Err(e) => Err(format!("{}: {e:#}", db.database())),
    }
}

async fn readyz(State(layout): State<Arc<CentralLayout>>) -> (StatusCode, String) {
    for db in CentralDb::ALL {
        if let Err(reason) = readiness(&layout, db).await {
            return (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n"));
        }
    }
    (StatusCode::OK, "ready\n".into())
}

async fn serve_status(listener: tokio::net::TcpListener, layout: Arc<CentralLayout>) {
    let router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(layout);
    if let Err(e) = axum::serve(listener, router).await {
        warn!(error = %e, "status server stopped");
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: stopping"),
        r = tokio::signal::ctrl_c() => {
            r.context("waiting for SIGINT")?;
            info!("SIGINT: stopping");
        }
    }
    Ok(())
}

/// Runs this member until SIGTERM/SIGINT.
pub async fn run(args: CentralArgs) -> anyhow::Result<()> {
    let layout = args.layout()?;
    info!(
        address = %layout.address,
        members = %comma_list(&layout.members),
        db_dir = %layout.db_dir.display(),
        "OVN central member starting"
    );
    for dir in [&layout.db_dir, &layout.run_dir] {
        tokio::fs::create_dir_all(dir)
            .await
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut joined = Vec::new();
    for db in CentralDb::ALL {
        let how = prepare_db(&layout, db)
            .await
            .with_context(|| format!("preparing {}", db.database()))?;
        if how == Some(Bootstrap::Join) {
            joined.push(db);
        }
    }
    let status = match args.status_addr {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the status address {addr}"))?,
        ),
        None => None,
    };
    // NB, SB, northd: stopped in the reverse order.
    let running: Vec<_> = layout
        .daemons()
        .into_iter()
        .map(|spec| daemons::supervise(spec, Backoff::default()))
        .collect();
    let layout = Arc::new(layout);
    let mut tasks: Vec<_> = joined
        .into_iter()
        .map(|db| tokio::spawn(forget_former_selves(layout.clone(), db)))
        .collect();
    tasks.extend(status.map(|listener| tokio::spawn(serve_status(listener, layout.clone()))));
    info!(
        nb = %layout.cluster_endpoints(CentralDb::Nb),
        sb = %layout.cluster_endpoints(CentralDb::Sb),
        "OVN central member running"
    );
    let signalled = shutdown_signal().await;
    for task in tasks {
        task.abort();
    }
    for daemon in running.into_iter().rev() {
        daemon.stop().await;
    }
    info!("OVN central member stopped");
    signalled
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|m| m.parse().unwrap()).collect()
    }

    #[test]
    fn one_or_three_distinct_members_including_this_one_are_a_cluster() {
        let three = ips(&["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
        assert_eq!(validate_members(Some(three[1]), &three), Ok(three[1]));
        let one = ips(&["10.0.0.1"]);
        assert_eq!(validate_members(Some(one[0]), &one), Ok(one[0]));
    }

    #[test]
    fn member_lists_that_cannot_make_a_cluster_say_what_to_fix() {
        let two = ips(&["10.0.0.1", "10.0.0.2"]);
        let err = validate_members(Some(two[0]), &two).unwrap_err();
        assert!(matches!(err, MembershipError::Count { count: 2, .. }));
        assert!(err.to_string().contains("1 or 3"), "{err}");

        let dup = ips(&["10.0.0.1", "10.0.0.2", "10.0.0.1"]);
        let err = validate_members(Some(dup[0]), &dup).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--members 10.0.0.1,10.0.0.2,10.0.0.1 lists 10.0.0.1 twice: list each member once"
        );

        let three = ips(&["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
        let err = validate_members(None, &three).unwrap_err();
        assert!(err.to_string().contains("--address (env POD_IP)"), "{err}");
        let stranger = "10.0.0.9".parse().unwrap();
        let err = validate_members(Some(stranger), &three).unwrap_err();
        assert!(matches!(err, MembershipError::NotAMember { .. }), "{err}");
        assert_eq!(
            validate_members(Some(stranger), &[]),
            Err(MembershipError::NoMembers)
        );
    }

    #[test]
    fn only_the_first_member_creates_and_only_when_no_cluster_runs_elsewhere() {
        assert_eq!(bootstrap_for(true, false), Bootstrap::Create);
        assert_eq!(bootstrap_for(true, true), Bootstrap::Join);
        assert_eq!(bootstrap_for(false, false), Bootstrap::Join);
        assert_eq!(bootstrap_for(false, true), Bootstrap::Join);
    }

    #[test]
    fn former_selves_are_the_other_servers_at_this_members_raft_address() {
        let status = "Name: OVN_Northbound\n\
            Cluster ID: 3fe5 (3fe5b7e5-91aa-4e03-a4e5-c3c96dd71958)\n\
            Server ID: bfb3 (bfb33562-a571-4f85-8d1b-86272aa59246)\n\
            Address: tcp:127.0.0.11:6643\n\
            Status: cluster member\n\
            Servers:\n    \
            326c (326c at tcp:127.0.0.13:6643) last msg 291 ms ago\n    \
            bfb3 (bfb3 at tcp:127.0.0.11:6643) (self)\n    \
            7a01 (7a01 at tcp:127.0.0.12:6643) last msg 291 ms ago\n    \
            a604 (a604 at tcp:127.0.0.11:6643) last msg 9339 ms ago\n";
        assert_eq!(former_selves(status, "tcp:127.0.0.11:6643"), ["a604"]);
        let healed: Vec<&str> = status.lines().filter(|l| !l.contains("a604")).collect();
        let healed = healed.join("\n");
        assert!(former_selves(&healed, "tcp:127.0.0.11:6643").is_empty());
    }

    #[test]
    fn run_dir_defaults_under_the_db_dir_and_ports_to_upstreams() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            central: CentralArgs,
        }
        let cli = Cli::try_parse_from([
            "central",
            "--address=10.0.0.2",
            "--members=10.0.0.1,10.0.0.2,10.0.0.3",
            "--db-dir=/data",
        ])
        .unwrap();
        let layout = cli.central.layout().unwrap();
        assert_eq!(layout.run_dir, PathBuf::from("/data/run"));
        assert_eq!(layout.ports, CentralPorts::default());
        assert_eq!(
            layout.cluster_endpoints(CentralDb::Sb),
            "tcp:10.0.0.1:6642,tcp:10.0.0.2:6642,tcp:10.0.0.3:6642"
        );
    }
}
