//! `hack/bench.sh controller`: the operator's pod throughput and restart time
//! on kube-sim + real OVN NB (OvnSandbox), the operator binary as a child.
//!
//! 1. 1,000 pods (one secondary network each) created at once: time until
//!    every pod is annotated (its LSP is in NB before that, by construction;
//!    checked with ovn-nbctl at the end) → pods/s and p99 create→annotated.
//! 2. Grown to 10,000 allocations, the operator is SIGKILLed and restarted:
//!    time from spawn until `/readyz` answers 200 (every pod present at start
//!    reconciled once).
//! 3. Baseline in the same run: the NB part done the classic way, one
//!    `ovn-nbctl lsp-add … -- lsp-set-addresses …` process per pod.
//!    Kube-OVN's published figures (about 19 pods/s, 29 s restart) are quoted
//!    as a reference only, not measured here.
//!
//! 4. (Run first.) Pods Running, CNI done: a second cluster with kube-sim's two
//!    simulated nodes (its kubelet and Multus emulation) and `kube-ovn node` on
//!    each (embedded OVS + ovn-controller, netdev datapath), as `hack/demo.sh`
//!    runs them. RUNNING_PODS pods on the seed's network created at once
//!    (500 a node: more than a kubelet's default maxPods of 110, which kube-sim
//!    does not enforce), time until every one is Running; then as many on a
//!    NAD of Debian's `bridge` + `host-local` (the baseline: same cluster, same
//!    kubelet, eth0 alike); each set then deleted, time until every pod is gone.
//!    `KOVN_BENCH_RUNNING_PODS` changes RUNNING_PODS; `KOVN_BENCH_ONLY=running`
//!    stops after this phase.

#[path = "../tests/operator_support/mod.rs"]
mod operator_support;
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams};
use kube::runtime::{watcher, WatchStreamExt};
use operator_support::*;

const PROVIDER: &str = "kube-ovn-vpc-network.default.ovn";
/// The seed's NAD, as a networks annotation.
const NETWORK: &str = "default/kube-ovn-vpc-network";
const BURST: usize = 1000;
const TOTAL: usize = 10_000;
const BASELINE_PODS: usize = 300;
/// As many as phase 1: 500 pods a node, on /22 pod CIDRs (a /24 holds ~250).
const RUNNING_PODS: usize = 1000;
const BRIDGE_NAD: &str = r#"apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata:
  name: bench-bridge
  namespace: default
spec:
  config: '{"cniVersion": "0.3.1", "type": "bridge", "bridge": "br-bench", "ipam": {"type": "host-local", "subnet": "10.200.0.0/16"}}'
"#;

/// When each pod was first seen annotated.
type Seen = Arc<Mutex<HashMap<String, Instant>>>;

fn watch_annotated(c: &Cluster) -> Seen {
    let key = format!("{PROVIDER}.kubernetes.io/allocated");
    watch_pods(c, move |pod| {
        pod.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(&key))
            .is_some_and(|v| v == "true")
    })
}

/// Pods in `default` named `<prefix>-…` Running (the kubelet's status after
/// every CNI ADD).
fn watch_running(c: &Cluster, prefix: &str) -> Seen {
    let prefix = format!("{prefix}-");
    watch_pods(c, move |pod| {
        pod.metadata
            .name
            .as_deref()
            .is_some_and(|n| n.starts_with(&prefix))
            && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
    })
}

/// Records when each pod in `default` first satisfies `done`.
fn watch_pods(c: &Cluster, done: impl Fn(&Pod) -> bool + Send + 'static) -> Seen {
    let seen: Seen = Arc::default();
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let out = seen.clone();
    tokio::spawn(async move {
        let mut stream = watcher(pods, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(Ok(pod)) = stream.next().await {
            if done(&pod) {
                let name = pod.metadata.name.unwrap_or_default();
                out.lock().unwrap().entry(name).or_insert_with(Instant::now);
            }
        }
    });
    seen
}

/// Creates `names` (on the network `networks`) with 32 concurrent creators;
/// returns each pod's creation time.
async fn create(c: &Cluster, names: Vec<String>, networks: &str) -> HashMap<String, Instant> {
    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut set = tokio::task::JoinSet::new();
    let per = names.len().div_ceil(32).max(1);
    for chunk in names.chunks(per) {
        let pods = c.pods();
        let chunk = chunk.to_vec();
        let created = created.clone();
        let networks = networks.to_owned();
        set.spawn(async move {
            for name in chunk {
                let pod: Pod = serde_yaml::from_str(&pod_yaml(&name, &networks)).unwrap();
                let t = Instant::now();
                pods.create(&Default::default(), &pod).await.unwrap();
                created.lock().unwrap().insert(name, t);
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    Arc::try_unwrap(created).unwrap().into_inner().unwrap()
}

/// Deletes `names` with 32 concurrent deleters; returns when the last is gone.
async fn delete_all(c: &Cluster, names: &[String], limit: Duration) -> Duration {
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for chunk in names.chunks(names.len().div_ceil(32).max(1)) {
        let pods = c.pods();
        let chunk = chunk.to_vec();
        set.spawn(async move {
            for name in chunk {
                pods.delete(&name, &DeleteParams::default()).await.unwrap();
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    let deadline = Instant::now() + limit;
    loop {
        let left = c
            .pods()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .len();
        if left == 0 {
            return t.elapsed();
        }
        assert!(Instant::now() < deadline, "{left} pods still there");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_seen(seen: &Seen, n: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    while seen.lock().unwrap().len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} pods done",
            seen.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `<prefix>-0` … `<prefix>-<n-1>`.
fn pod_names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// Creates `names` on `networks` at once and waits until `seen` (watching
/// exactly these pods) holds them all; returns the time from the first
/// create to the last pod seen, and each pod's create→seen latency.
async fn burst(
    c: &Cluster,
    seen: &Seen,
    names: &[String],
    networks: &str,
    limit: Duration,
) -> (Duration, Vec<Duration>) {
    let start = Instant::now();
    let created = create(c, names.to_vec(), networks).await;
    wait_seen(seen, names.len(), limit).await;
    let seen = seen.lock().unwrap();
    let last = *seen.values().max().unwrap();
    let latencies = created
        .iter()
        .map(|(n, t)| seen[n].saturating_duration_since(*t))
        .collect();
    (last - start, latencies)
}

fn vm_hwm_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn baseline_nbctl(c: &Cluster) -> f64 {
    c.ovn.nbctl(&["ls-add", "baseline-ls"]);
    let t = Instant::now();
    for i in 0..BASELINE_PODS {
        let name = format!("baseline-{i}");
        let addr = format!(
            "0a:00:00:00:{:02x}:{:02x} 10.250.{}.{}",
            i / 256,
            i % 256,
            i / 250,
            i % 250 + 2
        );
        c.ovn.nbctl(&[
            "lsp-add",
            "baseline-ls",
            &name,
            "--",
            "lsp-set-addresses",
            &name,
            &addr,
        ]);
    }
    let rate = BASELINE_PODS as f64 / t.elapsed().as_secs_f64();
    c.ovn.nbctl(&["ls-del", "baseline-ls"]);
    rate
}

fn p99(v: Vec<Duration>) -> Duration {
    percentile(v, 99)
}

fn percentile(mut v: Vec<Duration>, pct: usize) -> Duration {
    v.sort();
    v[(v.len() * pct / 100).min(v.len() - 1)]
}

/// Starts `kube-ovn node` in every simulated node, as `hack/demo.sh` does.
fn spawn_node_roles(c: &Cluster, sim: &kube_sim::nodes::Simulator) -> Vec<tokio::process::Child> {
    let bin = env!("CARGO_BIN_EXE_kube-ovn");
    let sb = c.ovn.sb_endpoint();
    sim.nodes()
        .iter()
        .map(|node| {
            let log = std::fs::File::create(node.state_dir.join("node-role.log")).unwrap();
            let tunnel = node.tunnel_ip.to_string();
            node.command(bin)
                .unwrap()
                .env("KUBECONFIG", c.kubeconfig())
                .args(["--log-level", "info", "node", "--node-name", &node.name])
                .args([
                    "--ovs",
                    "embedded",
                    "--datapath",
                    "netdev",
                    "--ovs-run-dir",
                    "/run/openvswitch",
                ])
                .args(["--ovn-sb", &sb, "--encap-ip", &tunnel])
                .args(["--tunnel-nic", kube_sim::nodes::TUNNEL_NIC])
                .args([
                    "--tunnel-address",
                    &format!("{tunnel}/24"),
                    "--cni-bin-dir",
                    "/opt/cni/bin",
                ])
                .stdout(Stdio::null())
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .expect("spawning kube-ovn node")
        })
        .collect()
}

/// Waits until every node's CNI socket is there and every chassis is in the SB.
async fn wait_node_roles(c: &Cluster, sim: &kube_sim::nodes::Simulator) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let sb = c.ovn.sb_endpoint();
    loop {
        let sockets = sim.nodes().iter().all(|n| {
            n.host_path(Path::new("/run/openvswitch/kube-ovn-daemon.sock"))
                .exists()
        });
        let out = std::process::Command::new("ovn-sbctl")
            .args(["--db", &sb, "--bare", "--columns=name", "list", "Chassis"])
            .output()
            .unwrap();
        let chassis = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .count();
        if sockets && chassis == sim.nodes().len() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node roles not ready (sockets {sockets}, chassis {chassis})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct RunningFigures {
    pods: usize,
    ours_all_ms: u128,
    ours_p50_ms: u128,
    bridge_all_ms: u128,
    bridge_p50_ms: u128,
    ours_delete_all_ms: u128,
    bridge_delete_all_ms: u128,
    /// Failed sandbox creations (kubelet retried them with backoff).
    ours_failures: usize,
    bridge_failures: usize,
}

/// Number of kubelet `FailedCreatePodSandBox` Events so far; the first few
/// messages go to stderr.
async fn sandbox_failures(c: &Cluster) -> usize {
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(c.client.clone(), "default");
    let failed: Vec<String> = events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("FailedCreatePodSandBox"))
        .map(|e| e.message.unwrap_or_default())
        .collect();
    for m in failed.iter().take(3) {
        eprintln!(
            "sandbox failure: {}",
            m.chars().take(400).collect::<String>()
        );
    }
    failed.len()
}

/// Phase 4: pods Running through the CNI on two simulated nodes, ours vs
/// Debian's bridge + host-local.
async fn running_phase(pods: usize) -> RunningFigures {
    let mut c = Cluster::up(0).await;
    c.log_level = "info".into();
    c.start_operator();
    c.apply(SEED_NAD).await;
    c.apply(SEED_VPC_SUBNET).await;
    c.apply(BRIDGE_NAD).await;
    c.wait_used("subnet-secondary", 0).await;
    let mut config = kube_sim::nodes::SimulatorConfig::new(2, c.dir.path().join("nodes"));
    config.api_server = Some(c.api.addr());
    config.fabric.pod_prefix_len = 22;
    let sim = kube_sim::nodes::Simulator::start(c.client.clone(), config)
        .await
        .expect("kube-sim nodes");
    let mut roles = spawn_node_roles(&c, &sim);
    wait_node_roles(&c, &sim).await;
    let limit = Duration::from_secs(900);

    let ours = pod_names("r", pods);
    let (ours_all, ours_latencies) =
        burst(&c, &watch_running(&c, "r"), &ours, NETWORK, limit).await;
    let ours_failures = sandbox_failures(&c).await;
    let ours_delete = delete_all(&c, &ours, limit).await;
    c.wait_used("subnet-secondary", 0).await;
    assert!(
        c.nb_pod_ports().is_empty(),
        "every LSP is gone after the pods"
    );

    let bridge = pod_names("b", pods);
    let (bridge_all, bridge_latencies) = burst(
        &c,
        &watch_running(&c, "b"),
        &bridge,
        "default/bench-bridge",
        limit,
    )
    .await;
    let bridge_failures = sandbox_failures(&c).await - ours_failures;
    let bridge_delete = delete_all(&c, &bridge, limit).await;

    for node in sim.nodes() {
        let _ = std::fs::copy(
            node.state_dir.join("node-role.log"),
            format!("/tmp/kube-ovn-bench-{}.log", node.name),
        );
    }
    sim.shutdown().await;
    for role in &mut roles {
        if let Some(pid) = role.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), role.wait()).await;
    }
    RunningFigures {
        pods,
        ours_all_ms: ours_all.as_millis(),
        ours_p50_ms: percentile(ours_latencies, 50).as_millis(),
        bridge_all_ms: bridge_all.as_millis(),
        bridge_p50_ms: percentile(bridge_latencies, 50).as_millis(),
        ours_delete_all_ms: ours_delete.as_millis(),
        ours_failures,
        bridge_failures,
        bridge_delete_all_ms: bridge_delete.as_millis(),
    }
}

fn print_running(r: &RunningFigures) {
    println!(
        "BENCH controller_running pods={} cni_running_all_ms={} bridge_running_all_ms={} ratio_running_all={:.2} \
         cni_running_p50_ms={} bridge_running_p50_ms={} cni_delete_all_ms={} bridge_delete_all_ms={} ratio_delete_all={:.2} \
         cni_sandbox_failures={} bridge_sandbox_failures={}",
        r.pods,
        r.ours_all_ms,
        r.bridge_all_ms,
        r.ours_all_ms as f64 / r.bridge_all_ms.max(1) as f64,
        r.ours_p50_ms,
        r.bridge_p50_ms,
        r.ours_delete_all_ms,
        r.bridge_delete_all_ms,
        r.ours_delete_all_ms as f64 / r.bridge_delete_all_ms.max(1) as f64,
        r.ours_failures,
        r.bridge_failures,
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let running_pods = std::env::var("KOVN_BENCH_RUNNING_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(RUNNING_PODS);
    let r = running_phase(running_pods).await;
    print_running(&r);
    if std::env::var("KOVN_BENCH_ONLY").as_deref() == Ok("running") {
        return;
    }

    let mut c = Cluster::up(0).await;
    c.log_level = "info".into();
    c.start_operator();
    c.apply(SEED_NAD).await;
    c.apply(SEED_VPC_SUBNET).await;
    c.wait_used("subnet-secondary", 0).await;
    let baseline = baseline_nbctl(&c);

    // 1. A burst of 1,000 pods.
    let seen = watch_annotated(&c);
    let names = pod_names("p", BURST);
    let (elapsed, latencies) = burst(&c, &seen, &names, NETWORK, Duration::from_secs(600)).await;
    let pods_per_s = BURST as f64 / elapsed.as_secs_f64();
    let p99_ms = p99(latencies).as_millis();
    let ports = c.nb_pod_ports().len();
    assert_eq!(ports, BURST, "every annotated pod has its LSP in NB");
    let rss = vm_hwm_mib(c.operator_pid().unwrap());

    // 2. Grow to 10,000 allocations, then SIGKILL and restart.
    let more: Vec<String> = (BURST..TOTAL).map(|i| format!("p-{i}")).collect();
    let t = Instant::now();
    create(&c, more, NETWORK).await;
    wait_seen(&seen, TOTAL, Duration::from_secs(1200)).await;
    let grow_rate = (TOTAL - BURST) as f64 / t.elapsed().as_secs_f64();
    let rss_10k = vm_hwm_mib(c.operator_pid().unwrap());
    c.kill_operator();
    let t = Instant::now();
    c.start_operator();
    loop {
        if let Some(r) = c.status_get("/readyz").await {
            if r.starts_with("HTTP/1.0 200") || r.starts_with("HTTP/1.1 200") {
                break;
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "operator never became ready"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let restart_ms = t.elapsed().as_millis();
    let _ = std::fs::copy(c.log_path(), "/tmp/kube-ovn-bench-controller-restart.log");
    let metrics = c.metrics().await;
    let own_ready_ms = metrics
        .lines()
        .find(|l| l.starts_with("kube_ovn_ready_milliseconds "))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?")
        .to_owned();

    println!(
        "BENCH controller pods_per_s={pods_per_s:.0} p99_pod_ready_ms={p99_ms} rss_mib={rss:.1} restart_ready_ms={restart_ms} \
         pods={BURST} allocations_at_restart={TOTAL} rss_mib_at_10k={rss_10k:.1} pods_per_s_growing_to_10k={grow_rate:.0} \
         operator_reported_ready_ms={own_ready_ms} baseline_nbctl_per_pod_pods_per_s={baseline:.0} ratio_vs_nbctl={:.1} \
         reference_kube_ovn_published_pods_per_s=19 ratio_vs_published={:.1} reference_kube_ovn_restart_ms=29000 cni_running_all_ms={}",
        pods_per_s / baseline,
        pods_per_s / 19.0,
        r.ours_all_ms
    );
}
