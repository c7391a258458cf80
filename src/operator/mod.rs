//! The `operator` role: the secondary-network controllers (Vpc, Subnet, pod
//! attachments, NAD watch), garbage collection, IPAM ownership and the status
//! endpoint. `run` wires them; each controller lives in its own room:
//!
//! - `attachment`: pure planning of a pod's attachments.
//! - `pod`: the pod controller (IPAM → NB → annotations → IP CR, and release).
//! - `ports`: NB port changes of many pods batched into few transactions.
//! - `install`: the KubeOvn controller (the install switch: renders and runs central, the
//!   chassis and the node role, and says where NB is).
//! - `dhcp`: the DHCP_Options rows a Subnet with `enableDHCP` wants (pure).
//! - `ippool`: which IPPools a subnet takes, and the IPPool controller (status).
//! - `subnet`, `vpc`: the Subnet and Vpc controllers (validate → apply → status); `routes`:
//!   what a VPC's router routes (its spec's routes and policies, its NAT gateways' default
//!   routes).
//! - `natgw`: the VPC NAT gateway controllers (VpcNatGateway, IptablesEIP, the NAT rules,
//!   the external network).
//! - `policy`: traffic policy (SecurityGroups, Subnet `private`/`allowSubnets`/`acls`) as
//!   Port_Groups, Address_Sets and ACLs.
//! - `nad`: the NAD watch (Events for broken kube-ovn NADs, requeue waiting pods).
//! - `gc`: garbage collection of leaked ports, IP CRs and addresses.
//! - `queue`: the pod work queue; `events`: Events; `status`: the status endpoint
//!   (`/healthz`, `/readyz`, `/metrics`, and the token-guarded `/api/v1/*`).
//! - `context`: the state the controllers share.
//! - `leader`: Lease leader election (nothing runs before this process leads).
//! - `adopt`: claims in IPAM every allocation the cluster shows, before pods are served.

pub mod adopt;
pub mod attachment;
pub mod central;
pub mod context;
pub mod controller;
pub mod dhcp;
pub mod events;
pub mod gc;
pub mod install;
pub mod ippool;
pub mod leader;
pub mod nad;
pub mod natgw;
pub mod pod;
pub mod policy;
pub mod ports;
pub mod queue;
pub mod routes;
pub mod status;
pub mod subnet;
pub mod vpc;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Resource;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::api::ip::IP;
use crate::api::ipamclaim::IPAMClaim;
use crate::api::ippool::IPPool;
use crate::api::nat::VpcNatGateway;
use crate::api::subnet::Subnet;
use crate::api::vpc::Vpc;
use crate::ipam::Ipam;
use crate::ovn::Northbound;
use context::Context;

/// Flags of `kube-ovn operator`.
#[derive(Debug, Clone, clap::Args)]
pub struct OperatorArgs {
    /// Run as a secondary CNI next to the cluster's primary one. Primary mode is
    /// not supported: `false` makes the operator exit with an error.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub non_primary_cni_mode: bool,
    /// The OVN Northbound database (`unix:/path/ovnnb_db.sock` or `tcp:host:6641`, a
    /// comma-separated list for a cluster). Default: the central the `KubeOvn` object installs.
    #[arg(long, env = "OVN_NB")]
    pub ovn_nb: Option<String>,
    /// The OVN Southbound database, where the chassis of deleted nodes are removed from.
    /// Default: the central the `KubeOvn` object installs; none (nothing removed) when
    /// `--ovn-nb` names another central and this is not given.
    #[arg(long, env = "OVN_SB")]
    pub ovn_sb: Option<String>,
    /// Directory of the IPAM store (sled).
    #[arg(long, default_value = "/var/lib/kube-ovn/ipam")]
    pub ipam_db: PathBuf,
    /// Serve `/healthz`, `/readyz`, `/metrics` and `/api/v1/*` here (e.g. `127.0.0.1:10660`).
    #[arg(long)]
    pub status_addr: Option<SocketAddr>,
    /// Pods reconciled at the same time.
    #[arg(long, default_value_t = 64)]
    pub pod_workers: usize,
    /// Seconds between garbage-collection passes (one also runs at start).
    #[arg(long, default_value_t = 300)]
    pub gc_interval: u64,
    /// Lead through the `kube-ovn-operator` Lease before doing anything; `false` acts alone
    /// (tests and development: never run two operators so).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// The namespace of the Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "kube-system")]
    pub lease_namespace: String,
    /// How long followers wait after the leader's last renewal before taking over.
    #[arg(long, default_value = "15s", value_parser = crate::node::parse_duration)]
    pub lease_duration: Duration,
    /// How long the leader keeps failing to renew before it stops (shorter than the lease).
    #[arg(long, default_value = "10s", value_parser = crate::node::parse_duration)]
    pub renew_deadline: Duration,
    /// How often candidates try to acquire the Lease and the leader renews it.
    #[arg(long, default_value = "2s", value_parser = crate::node::parse_duration)]
    pub retry_period: Duration,
}

/// The CRDs the operator cannot work without, and how to get each.
const REQUIRED_CRDS: [(&str, &str); 12] = [
    (
        "kubeovns.operator.kubeovn.io",
        "kube-ovn crd | kubectl apply -f -",
    ),
    ("vpcs.kubeovn.io", "kube-ovn crd | kubectl apply -f -"),
    ("subnets.kubeovn.io", "kube-ovn crd | kubectl apply -f -"),
    ("ips.kubeovn.io", "kube-ovn crd | kubectl apply -f -"),
    ("ippools.kubeovn.io", "kube-ovn crd | kubectl apply -f -"),
    (
        "security-groups.kubeovn.io",
        "kube-ovn crd | kubectl apply -f -",
    ),
    (
        "vpc-nat-gateways.kubeovn.io",
        "kube-ovn crd | kubectl apply -f -",
    ),
    (
        "iptables-eips.kubeovn.io",
        "kube-ovn crd | kubectl apply -f -",
    ),
    (
        "iptables-fip-rules.kubeovn.io",
        "kube-ovn crd | kubectl apply -f -",
    ),
    (
        "iptables-dnat-rules.kubeovn.io",
        "kube-ovn crd | kubectl apply -f -",
    ),
    (
        "iptables-snat-rules.kubeovn.io",
        "kube-ovn crd | kubectl apply -f -",
    ),
    (
        "network-attachment-definitions.k8s.cni.cncf.io",
        "install Multus (it installs the NetworkAttachmentDefinition CRD)",
    ),
];

/// Fails with one message naming every missing CRD.
async fn check_crds(client: &kube::Client) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut missing = Vec::new();
    for (name, how) in REQUIRED_CRDS {
        match api.get_opt(name).await {
            Ok(Some(_)) => {}
            Ok(None) => missing.push(format!("{name} (fix: {how})")),
            Err(e) => anyhow::bail!("checking CRD {name}: {e}"),
        }
    }
    if !missing.is_empty() {
        anyhow::bail!(
            "required CustomResourceDefinitions are not installed: {}",
            missing.join(", ")
        );
    }
    Ok(())
}

/// Mirrors `K` into `writer` until the process stops; `changed` runs after every change
/// past the first list (e.g. requeueing the pods waiting for a subnet: the planner reads this
/// store, so they must be retried after it changed, not before).
pub(crate) async fn mirror<K>(
    api: Api<K>,
    mut writer: Writer<K>,
    what: &'static str,
    changed: impl Fn() + Send + 'static,
) where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    // An optional resource (its CRD not installed) is said once, not at every retry.
    let mut absent = false;
    while let Some(event) = stream.next().await {
        match event {
            Ok(e) => {
                // Init comes before every list attempt, a failing one too.
                if !matches!(e, watcher::Event::Init) && std::mem::take(&mut absent) {
                    info!(what, "the API server serves it now: watching");
                }
                writer.apply_watcher_event(&e);
                if !matches!(e, watcher::Event::Init | watcher::Event::InitApply(_)) {
                    changed();
                }
            }
            Err(e) if not_served(&e) => {
                if !std::mem::replace(&mut absent, true) {
                    info!(
                        what,
                        "not served by the API server (its CRD is not installed): watching for it"
                    );
                }
                debug!(error = %e, what, "still not served");
            }
            Err(e) => warn!(error = %e, what, "watch failed; retrying"),
        }
    }
}

/// A list or watch answered 404: the resource's CRD is not installed.
fn not_served(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s)) => s.is_not_found(),
        _ => false,
    }
}

/// Runs the operator role until it is stopped.
pub async fn run(args: OperatorArgs) -> anyhow::Result<()> {
    if !args.non_primary_cni_mode {
        anyhow::bail!(
            "primary mode is not supported: kube-ovn only runs as a secondary CNI \
             (--non-primary-cni-mode=true)"
        );
    }
    let started = Instant::now();
    let client = kube::Client::try_default()
        .await
        .context("building the Kubernetes client (kubeconfig or in-cluster config)")?;
    check_crds(&client).await?;
    // The status endpoint answers while the operator still waits for NB and IPAM.
    // Followers serve it too (ready, `kube_ovn_leader 0`).
    let metrics = Arc::new(status::Metrics::default());
    // Alone (`--leader-elect=false`) it leads from the start: not ready until reconciled.
    metrics.leader.store(!args.leader_elect, Ordering::Relaxed);
    let status_api = status::StatusApi::new(client.clone(), metrics.clone());
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(addr) = args.status_addr {
        let api = status_api.clone();
        tasks.spawn(async move {
            if let Err(e) = status::serve(addr, api).await {
                warn!("{e:#}");
            }
        });
    }

    // ---- Leader election (leader.rs): only the Lease holder runs `lead`. ----
    let mut stop = std::pin::pin!(crate::node::shutdown_signal());
    let mut leadership = tokio::select! {
        leadership = leader::elect(&client, &args) => leadership?,
        () = &mut stop => return Ok(()),
    };
    metrics.leader.store(true, Ordering::Relaxed);
    let led = tokio::select! {
        led = lead(&args, client, metrics.clone(), &status_api, started, &mut tasks) => led,
        () = &mut stop => Ok(()),
        // Exit rather than allocate beside the new leader; Kubernetes restarts us as a follower.
        lost = leadership.lost() => {
            metrics.leader.store(false, Ordering::Relaxed);
            return Err(lost);
        }
    };
    tasks.abort_all();
    leadership.release().await;
    led
    // ---- End of leader election. ----
}

/// The leader's work: runs the install switch (the KubeOvn controller), opens IPAM and NB (the
/// central it installed, unless `--ovn-nb` names one), mirrors the cluster, adopts its
/// allocations and runs the controllers (in `tasks`) until one of them ends or central moves.
async fn lead(
    args: &OperatorArgs,
    client: kube::Client,
    metrics: Arc<status::Metrics>,
    status_api: &status::StatusApi,
    started: Instant,
    tasks: &mut tokio::task::JoinSet<()>,
) -> anyhow::Result<()> {
    // The install switch runs first: with no --ovn-nb, NB is the central it installs.
    let (central_tx, mut central_rx) = tokio::sync::watch::channel(None);
    let install_ctx = Arc::new(install::InstallContext {
        operator: install::discover_operator(&client).await,
        client: client.clone(),
        metrics: metrics.clone(),
        failures: Default::default(),
        central: central_tx,
    });
    info!(version = %install_ctx.operator.version, image = ?install_ctx.operator.image, "KubeOvn controller starting");
    let operator = install_ctx.operator.clone();
    tasks.spawn(install::run(install_ctx));
    let nb_endpoint = match args.ovn_nb.clone() {
        Some(endpoint) => endpoint,
        None => {
            // Waiting for an install is a normal state of a healthy operator (OLM waits for
            // it to be ready before the user creates the KubeOvn object).
            metrics
                .ready
                .store(true, std::sync::atomic::Ordering::Relaxed);
            info!(
                "waiting for OVN central: create the KubeOvn object kube-ovn (kubectl get kubeovn)"
            );
            let endpoint = central_rx
                .wait_for(Option::is_some)
                .await
                .context("the KubeOvn controller stopped")?
                .as_ref()
                .map(|c| c.nb_address.clone())
                .unwrap_or_default();
            metrics
                .ready
                .store(false, std::sync::atomic::Ordering::Relaxed);
            endpoint
        }
    };
    // Listing every pod is the longest part of a restart: start it now.
    let (pods, pod_writer) = reflector::store();
    let (pod_notes, pod_feed) = tokio::sync::mpsc::unbounded_channel();
    tasks.spawn(pod::watch_pods(client.clone(), pod_writer, pod_notes));

    // IPAM's reload and NB's initial monitor are independent: overlap them.
    let ipam_db = args.ipam_db.clone();
    let opening = tokio::task::spawn_blocking(move || Ipam::open(&ipam_db));
    let nb = Northbound::connect(&nb_endpoint)
        .await
        .with_context(|| format!("connecting to OVN NB at {nb_endpoint}"))?;
    info!(endpoint = %nb_endpoint, "connected to OVN NB");
    let ipam = opening
        .await
        .context("opening IPAM")?
        .with_context(|| format!("opening the IPAM store {}", args.ipam_db.display()))?;
    let report = ipam.open_report().clone();
    info!(
        subnets = report.subnets,
        allocations = report.allocations,
        elapsed_ms = report.elapsed.as_millis() as u64,
        path = %args.ipam_db.display(),
        "IPAM store opened"
    );
    let ports = ports::PortBatcher::start(nb.clone());
    *metrics.ports.lock().expect("metrics lock poisoned") = Some(ports.stats.clone());

    let (subnets, subnet_writer) = reflector::store();
    let (vpcs, vpc_writer) = reflector::store();
    let (nads, nad_writer) = reflector::store();
    let (ips, ip_writer) = reflector::store();
    let (nat_gateways, nat_gateway_writer) = reflector::store();
    let (ippools, ippool_writer) = reflector::store();
    let (ipamclaims, ipamclaim_writer) = reflector::store();
    let ctx = Arc::new(Context {
        client: client.clone(),
        nb,
        ports,
        ipam: Arc::new(ipam),
        pods,
        subnets,
        vpcs,
        nads,
        ips,
        nat_gateways,
        ippools,
        ipamclaims,
        events: events::Notifier::new(client.clone()),
        metrics: metrics.clone(),
        failures: Default::default(),
        pod_queue: queue::WorkQueue::new(),
        waiting: Mutex::new(HashSet::new()),
        tombstones: Mutex::new(HashMap::new()),
        invalid_subnets: Mutex::new(HashMap::new()),
        dirty_usage: Mutex::new(HashSet::new()),
        usage_changed: Notify::new(),
        initial: Mutex::new(None),
        started,
        changes: Default::default(),
        routes_lock: tokio::sync::Mutex::new(()),
        policy_wake: Arc::new(Notify::new()),
    });

    status_api.set_context(ctx.clone());
    tasks.spawn(mirror(
        Api::<Subnet>::all(client.clone()),
        subnet_writer,
        "subnets",
        {
            let ctx = ctx.clone();
            move || {
                ctx.requeue_waiting();
                ctx.policy_wake.notify_one();
            }
        },
    ));
    tasks.spawn(mirror(
        Api::<Vpc>::all(client.clone()),
        vpc_writer,
        "vpcs",
        || {},
    ));
    tasks.spawn(mirror(
        Api::<IP>::all(client.clone()),
        ip_writer,
        "ips",
        || {},
    ));
    tasks.spawn(mirror(
        Api::<IPPool>::all(client.clone()),
        ippool_writer,
        "ippools",
        {
            let ctx = ctx.clone();
            move || ctx.requeue_waiting()
        },
    ));
    tasks.spawn(mirror(
        Api::<VpcNatGateway>::all(client.clone()),
        nat_gateway_writer,
        "vpc-nat-gateways",
        || {},
    ));
    let (nat, nat_writers) = natgw::context(ctx.clone(), operator);
    natgw::watch(&nat, nat_writers, tasks).await?;
    tasks.spawn(nad::watch(ctx.clone(), nad_writer));
    // Stores the pod side reads must be complete before pods are planned,
    // and a pod missing from an incomplete pod store would count as deleted.
    // (One waiter per store: kube-runtime's readiness wakes only the last.)
    let gc_trigger = Arc::new(Notify::new());
    tasks.spawn(pod::feed(ctx.clone(), pod_feed, gc_trigger.clone()));
    // Optional CRD (k8s.cni.cncf.io IPAMClaim): not waited for. A deleted claim frees its
    // address at the next GC pass, which its change triggers.
    tasks.spawn(mirror(
        Api::<IPAMClaim>::all(client.clone()),
        ipamclaim_writer,
        "ipamclaims",
        {
            let (ctx, gc) = (ctx.clone(), gc_trigger.clone());
            move || {
                ctx.requeue_waiting();
                gc.notify_one();
            }
        },
    ));
    for ready in [
        ctx.subnets.wait_until_ready().await.is_ok(),
        ctx.nads.wait_until_ready().await.is_ok(),
        ctx.ips.wait_until_ready().await.is_ok(),
        ctx.pods.wait_until_ready().await.is_ok(),
        ctx.nat_gateways.wait_until_ready().await.is_ok(),
        ctx.ippools.wait_until_ready().await.is_ok(),
    ] {
        anyhow::ensure!(ready, "a watch stopped before its first list");
    }
    // Claim every address the cluster shows before any pod is served: the pods' and IP CRs',
    // then the NAT gateways' lanIps and the EIPs'.
    adopt::adopt(&ctx).await?;
    natgw::adopt(&nat).await;
    tasks.spawn(pod::run_workers(ctx.clone(), args.pod_workers));
    // SB, for the chassis of deleted nodes: the one named, else the installed central's.
    let sb = args.ovn_sb.clone().or_else(|| {
        args.ovn_nb
            .is_none()
            .then(|| central_rx.borrow().as_ref().map(|c| c.sb_address.clone()))
            .flatten()
    });
    tasks.spawn(gc::run(
        ctx.clone(),
        gc_trigger,
        Duration::from_secs(args.gc_interval.max(1)),
        sb,
    ));
    tasks.spawn(subnet::refresh_usage(ctx.clone()));
    tasks.spawn(subnet::run(ctx.clone()));
    tasks.spawn(ippool::run(ctx.clone()));
    tasks.spawn(vpc::run(ctx.clone()));
    policy::start(ctx.clone(), tasks).await;
    natgw::run(&nat, tasks);
    info!("operator running (secondary-network mode)");

    let explicit_nb = args.ovn_nb.is_some();
    let moved = async move {
        // A central that moved (another member set) needs a fresh start of the controllers.
        loop {
            if central_rx.changed().await.is_err() {
                return std::future::pending().await;
            }
            let now = central_rx.borrow().as_ref().map(|c| c.nb_address.clone());
            if !explicit_nb && now.as_deref() != Some(nb_endpoint.as_str()) {
                return now;
            }
        }
    };
    tokio::select! {
        _ = tasks.join_next() => {
            warn!("a controller task ended; stopping");
            Ok(())
        }
        now = moved => Err(anyhow::anyhow!(
            "OVN central moved (NB now {now:?}); exiting so the restart connects to it"
        )),
    }
}
