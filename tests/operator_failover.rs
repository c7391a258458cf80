//! Two `kube-ovn operator` replicas on one cluster (kube-sim API, real OVN NB), each with its
//! own IPAM store, electing a leader through the `kube-ovn-operator` Lease: only the leader
//! opens IPAM and NB; SIGKILL of the leader mid-burst plus the loss of its store hands over
//! to the other replica, which adopts every address the pods show before it allocates, so no
//! running pod's address changes and no address is handed out twice. A leader stopped past
//! its Lease exits instead of writing; a cleanly stopped one frees the Lease at once.
//!
//! The burst is `KUBE_OVN_FAILOVER_PODS` pods before and as many after the hand-over
//! (default 500, the acceptance size; a smaller count suits a slower machine).

mod operator_support;
mod support;

use std::collections::{BTreeMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube_ovn::operator::leader::{acquire, LeaseConfig};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use operator_support::*;

const PROVIDER: &str = "kube-ovn-vpc-network.default.ovn";
const NETWORK: &str = "default/kube-ovn-vpc-network";
const LEASE_NAMESPACE: &str = "kube-system";

/// Pods per burst (before and after the hand-over): `KUBE_OVN_FAILOVER_PODS`, default 500.
fn burst_size() -> usize {
    std::env::var("KUBE_OVN_FAILOVER_PODS")
        .ok()
        .map(|n| {
            n.parse()
                .expect("KUBE_OVN_FAILOVER_PODS is a number of pods")
        })
        .unwrap_or(500)
}

/// One operator replica: its process, store and log.
struct Replica {
    name: String,
    ipam: PathBuf,
    log: PathBuf,
    status: SocketAddr,
    child: Option<Child>,
}

impl Replica {
    /// Starts replica `name` (its `POD_NAME`) with short Lease timings.
    fn start(c: &Cluster, name: &str) -> Replica {
        let ipam = c.dir.path().join(format!("ipam-{name}"));
        let log = c.dir.path().join(format!("{name}.log"));
        let status = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let child = c
            .operator_command_with(&ipam, status)
            .env("POD_NAME", name)
            .env("POD_NAMESPACE", LEASE_NAMESPACE)
            .args([
                "--lease-duration",
                "3s",
                "--renew-deadline",
                "2s",
                "--retry-period",
                "500ms",
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawning kube-ovn operator");
        Replica {
            name: name.to_owned(),
            ipam,
            log,
            status,
            child: Some(child),
        }
    }

    /// The `/readyz` response (status line and body), once the status endpoint answers.
    async fn readyz(&self, c: &Cluster) -> String {
        c.eventually(&format!("{}'s /readyz", self.name), || async {
            status_get_at(self.status, "/readyz").await
        })
        .await
    }

    /// The `kube_ovn_leader` gauge's value, once the status endpoint answers.
    async fn leader_gauge(&self, c: &Cluster) -> String {
        c.eventually(&format!("{}'s kube_ovn_leader", self.name), || async {
            let metrics = status_get_at(self.status, "/metrics").await?;
            let line = metrics
                .lines()
                .find(|l| l.starts_with("kube_ovn_leader "))?;
            Some(line["kube_ovn_leader ".len()..].to_owned())
        })
        .await
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, signal: Signal) {
        let pid = self.child.as_ref().expect("running").id();
        kill(Pid::from_raw(pid as i32), signal).unwrap();
    }

    /// Waits (up to `WAIT`) for the process to end; its exit status.
    async fn exited(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + WAIT;
        let child = self.child.as_mut().expect("started");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "replica {} did not exit:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn sigkill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.sigkill();
        if std::thread::panicking() {
            let text = self.log();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(60)..];
            eprintln!(
                "--- replica {} (last 60 lines)\n{}",
                self.name,
                tail.join("\n")
            );
        }
    }
}

/// The Lease's holder, if any.
async fn holder(c: &Cluster) -> Option<String> {
    Api::<Lease>::namespaced(c.client.clone(), LEASE_NAMESPACE)
        .get_opt("kube-ovn-operator")
        .await
        .ok()??
        .spec?
        .holder_identity
        .filter(|h| !h.is_empty())
}

async fn wait_holder(c: &Cluster, name: &str) {
    c.eventually(&format!("Lease held by {name}"), || async {
        (holder(c).await.as_deref() == Some(name)).then_some(())
    })
    .await;
}

/// Every pod's address on the seed network, by pod name.
async fn addresses(c: &Cluster) -> BTreeMap<String, String> {
    let key = format!("{PROVIDER}.kubernetes.io/ip_address");
    let allocated = format!("{PROVIDER}.kubernetes.io/allocated");
    c.pods()
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| {
            let a = p.metadata.annotations.as_ref()?;
            (a.get(&allocated)? == "true").then_some(())?;
            Some((p.metadata.name.clone()?, a.get(&key)?.clone()))
        })
        .collect()
}

async fn create_pods(pods: Api<Pod>, names: Vec<String>) {
    let mut set = tokio::task::JoinSet::new();
    for chunk in names.chunks(names.len().div_ceil(16).max(1)) {
        let pods = pods.clone();
        let chunk = chunk.to_vec();
        set.spawn(async move {
            for name in chunk {
                let pod: Pod = serde_yaml::from_str(&pod_yaml(&name, NETWORK)).unwrap();
                pods.create(&Default::default(), &pod).await.unwrap();
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
}

/// `addresses` of LSP `name`, once it exists.
fn port_addresses(c: &Cluster, name: &str) -> Option<String> {
    c.nb_pod_ports()
        .iter()
        .any(|p| p == name)
        .then(|| c.lsp_addresses(name))
}

fn assert_unique(addresses: &BTreeMap<String, String>) {
    let unique: HashSet<&String> = addresses.values().collect();
    assert_eq!(unique.len(), addresses.len(), "an address handed out twice");
}

/// The JSON log lines of `log` whose message contains `text`.
fn lines_with(log: &str, text: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter(|l| l.contains(text))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_takes_over_a_burst_from_a_killed_leader_without_changing_or_duplicating_an_address(
) {
    let c = Cluster::up(0).await;
    c.apply(SEED_NAD).await;
    c.apply(SEED_VPC_SUBNET).await;

    let mut a = Replica::start(&c, "operator-a");
    wait_holder(&c, "operator-a").await;
    c.wait_used("subnet-secondary", 0).await;
    let b = Replica::start(&c, "operator-b");
    c.eventually("operator-b waiting for leadership", || async {
        b.log().contains("waiting for leadership").then_some(())
    })
    .await;
    // The follower is ready (a 2-replica Deployment's rollout completes) and says it follows.
    let ready = b.readyz(&c).await;
    assert!(
        ready.starts_with("HTTP/1.0 200"),
        "follower /readyz: {ready}"
    );
    assert_eq!(b.leader_gauge(&c).await, "0");
    assert_eq!(a.leader_gauge(&c).await, "1");

    // The burst: the leader wires pods while the follower only watches the Lease.
    let n = burst_size();
    let names: Vec<String> = (0..n).map(|i| format!("burst-{i}")).collect();
    let creating = tokio::spawn(create_pods(c.pods(), names.clone()));
    c.eventually("some pods annotated", || async {
        (addresses(&c).await.len() >= n / 10).then_some(())
    })
    .await;
    assert!(
        !b.ipam.exists(),
        "the follower opened an IPAM store at {}",
        b.ipam.display()
    );
    let follower_log = b.log();
    for leader_only in ["connected to OVN NB", "IPAM store opened", "pod attached"] {
        assert!(
            !follower_log.contains(leader_only),
            "the follower logged {leader_only:?}:\n{follower_log}"
        );
    }

    // Kill the leader mid-burst and lose its store.
    a.sigkill();
    let killed = Instant::now();
    std::fs::remove_dir_all(&a.ipam).unwrap();
    let before = addresses(&c).await;
    assert!(
        before.len() < names.len(),
        "the kill came after the burst ({} annotated)",
        before.len()
    );
    assert_unique(&before);

    wait_holder(&c, "operator-b").await;
    eprintln!(
        "operator-b took the Lease {:?} after the leader's SIGKILL (lease duration 3s)",
        killed.elapsed()
    );
    assert_eq!(b.leader_gauge(&c).await, "1");
    creating.await.unwrap();
    c.eventually(&format!("all {n} pods annotated"), || async {
        (addresses(&c).await.len() == n).then_some(())
    })
    .await;
    eprintln!("all {n} annotated {:?} after the SIGKILL", killed.elapsed());

    // Adoption was explicit: the new leader claimed every address the pods showed.
    let adopted = c
        .eventually("operator-b's adoption log line", || async {
            lines_with(&b.log(), "IPAM adopted").into_iter().next()
        })
        .await;
    eprintln!("operator-b: {adopted}");
    let claimed = adopted["fields"]["adopted"].as_u64().unwrap_or(0)
        + adopted["fields"]["already_known"].as_u64().unwrap_or(0);
    assert!(
        claimed >= before.len() as u64,
        "adopted {claimed} of the {} annotated addresses: {adopted}",
        before.len()
    );
    assert_eq!(
        adopted["fields"]["conflicts"].as_u64(),
        Some(0),
        "{adopted}"
    );

    // The next burst, all from the new leader.
    let more: Vec<String> = (n..2 * n).map(|i| format!("burst-{i}")).collect();
    create_pods(c.pods(), more).await;
    let after = c
        .eventually(&format!("all {} pods annotated", 2 * n), || async {
            let now = addresses(&c).await;
            (now.len() == 2 * n).then_some(now)
        })
        .await;
    assert_unique(&after);
    for (pod, ip) in &before {
        assert_eq!(&after[pod], ip, "pod {pod} changed its address");
    }
    // NB agrees with the annotations for the pods wired before the hand-over.
    for (pod, ip) in before.iter().take(20) {
        let lsp = format!("{pod}.default.{PROVIDER}");
        c.eventually(&format!("LSP {lsp} with {ip}"), || async {
            port_addresses(&c, &lsp)?
                .ends_with(&format!(" {ip}"))
                .then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_stopped_past_its_lease_exits_and_a_clean_stop_frees_the_lease() {
    let c = Cluster::up(0).await;
    c.apply(SEED_NAD).await;
    c.apply(SEED_VPC_SUBNET).await;
    let mut a = Replica::start(&c, "operator-a");
    wait_holder(&c, "operator-a").await;
    let mut b = Replica::start(&c, "operator-b");

    // A leader frozen past its Lease (a long GC pause, a stopped VM) finds a successor.
    a.signal(Signal::SIGSTOP);
    wait_holder(&c, "operator-b").await;
    c.apply(&pod_yaml("after-freeze", NETWORK)).await;
    let ip = c.allocated("after-freeze", PROVIDER).await
        [&format!("{PROVIDER}.kubernetes.io/ip_address")]
        .clone();
    a.signal(Signal::SIGCONT);
    let status = a.exited().await;
    assert!(!status.success(), "the deposed leader exited with {status}");
    let log = a.log();
    assert!(log.contains("lost leadership"), "{log}");
    assert_eq!(holder(&c).await.as_deref(), Some("operator-b"));

    // A clean stop (SIGTERM, as the kubelet sends) gives the Lease up at once instead of
    // letting it expire.
    let mut c2 = Replica::start(&c, "operator-c");
    c.eventually("operator-c waiting for leadership", || async {
        c2.log().contains("waiting for leadership").then_some(())
    })
    .await;
    b.signal(Signal::SIGTERM);
    let status = b.exited().await;
    assert!(status.success(), "a clean stop exits 0, got {status}");
    assert!(b.log().contains("released leadership"), "{}", b.log());
    let stopped = Instant::now();
    wait_holder(&c, "operator-c").await;
    eprintln!(
        "operator-c took the released Lease {:?} after operator-b stopped",
        stopped.elapsed()
    );
    // The new leader keeps the address it adopted.
    c.apply(&pod_yaml("after-release", NETWORK)).await;
    let next = c.allocated("after-release", PROVIDER).await
        [&format!("{PROVIDER}.kubernetes.io/ip_address")]
        .clone();
    assert_ne!(
        next, ip,
        "the released leader's pod address was handed out again"
    );
    let still = c.allocated("after-freeze", PROVIDER).await;
    assert_eq!(still[&format!("{PROVIDER}.kubernetes.io/ip_address")], ip);

    // A follower stopped cleanly just exits: it held nothing.
    let mut d = Replica::start(&c, "operator-d");
    c.eventually("operator-d waiting for leadership", || async {
        d.log().contains("waiting for leadership").then_some(())
    })
    .await;
    d.signal(Signal::SIGTERM);
    let status = d.exited().await;
    assert!(
        status.success(),
        "a follower's clean stop exits 0, got {status}"
    );
    assert_eq!(holder(&c).await.as_deref(), Some("operator-c"));
    c2.sigkill();
}

/// A Lease candidate named `identity` with sub-second timings.
fn candidate(identity: &str) -> LeaseConfig {
    LeaseConfig {
        namespace: LEASE_NAMESPACE.into(),
        name: "race".into(),
        identity: identity.into(),
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1500),
        retry_period: Duration::from_millis(250),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_racing_candidates_one_leads_until_it_releases_and_stale_lease_writes_are_refused() {
    let api = kube_sim::ApiServer::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .expect("kube-sim starts");
    let client = api.client().expect("kube client");

    // Two candidates at once: one leads, the other waits while the leader renews.
    let mut x = tokio::spawn(acquire(client.clone(), candidate("x")));
    let mut y = tokio::spawn(acquire(client.clone(), candidate("y")));
    let (mut leader, mut waiting, first) = tokio::select! {
        r = &mut x => (r.unwrap().unwrap(), y, "x"),
        r = &mut y => (r.unwrap().unwrap(), x, "y"),
    };
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    for _ in 0..20 {
        // Two lease durations of renewals: the holder never changes hands.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let lease = leases.get("race").await.unwrap();
        assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some(first));
        assert!(!waiting.is_finished(), "both candidates lead");
    }
    tokio::select! {
        why = leader.lost() => panic!("the renewing leader lost its Lease: {why:#}"),
        _ = tokio::time::sleep(Duration::from_millis(10)) => {}
    }

    // Released: the other takes over without waiting for the Lease to expire.
    leader.release().await;
    let mut next = (&mut waiting).await.unwrap().unwrap();
    let lease = leases.get("race").await.unwrap();
    let spec = lease.spec.clone().unwrap();
    assert_ne!(spec.holder_identity.as_deref(), Some(first));
    assert_eq!(spec.lease_transitions, Some(1));

    // The API server refuses a write based on an older read (what makes the race safe).
    let mut stale = lease.clone();
    stale.spec.as_mut().unwrap().holder_identity = Some("intruder".into());
    tokio::time::sleep(Duration::from_millis(500)).await; // the leader renews meanwhile
    match leases
        .replace("race", &kube::api::PostParams::default(), &stale)
        .await
    {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 409, "{e:?}"),
        other => panic!("a stale Lease write was not refused: {other:?}"),
    }
    tokio::select! {
        why = next.lost() => panic!("the new leader lost its Lease: {why:#}"),
        _ = tokio::time::sleep(Duration::from_millis(10)) => {}
    }
    next.release().await;
}

/// A pod on the seed network that already shows `ip` and `mac` as allocated (as a previous
/// operator would have left it).
fn annotated_pod(name: &str, ip: &str, mac: &str) -> Pod {
    let a = |k: &str| format!("{PROVIDER}.kubernetes.io/{k}");
    serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": name,
            "annotations": {
                "k8s.v1.cni.cncf.io/networks": NETWORK,
                a("allocated"): "true",
                a("ip_address"): ip,
                a("mac_address"): mac,
                a("logical_switch"): "subnet-secondary",
            },
        },
        "spec": { "containers": [{ "name": "app", "image": "nginx" }] },
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_pods_showing_one_address_are_an_event_on_both_and_the_older_keeps_it() {
    let mut c = Cluster::up(0).await;
    c.apply(SEED_NAD).await;
    c.apply(SEED_VPC_SUBNET).await;
    for (name, mac) in [
        ("twin-a", "00:00:00:10:00:0a"),
        ("twin-b", "00:00:00:10:00:0b"),
    ] {
        c.pods()
            .create(
                &Default::default(),
                &annotated_pod(name, "10.100.0.50", mac),
            )
            .await
            .unwrap();
    }
    c.start_operator();

    for pod in ["twin-a", "twin-b"] {
        let message = c.event(pod, "AddressConflict").await;
        assert!(
            message.contains("10.100.0.50")
                && message.contains("twin-a")
                && message.contains("twin-b"),
            "{message}"
        );
    }
    // The older pod (by name on a tie) keeps the address, in IPAM and in NB.
    let lsp = format!("twin-a.default.{PROVIDER}");
    c.eventually("twin-a's port with 10.100.0.50", || async {
        port_addresses(&c, &lsp)?
            .ends_with(" 10.100.0.50")
            .then_some(())
    })
    .await;
    // The other is told its address is taken, and no third pod gets it.
    c.event("twin-b", "StaticIPTaken").await;
    c.apply(&pod_yaml("third", NETWORK)).await;
    let third = c.allocated("third", PROVIDER).await;
    assert_ne!(
        third[&format!("{PROVIDER}.kubernetes.io/ip_address")],
        "10.100.0.50"
    );
}
