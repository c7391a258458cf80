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
//! Not measured here: pods Running through the CNI (kube-sim's kubelet with
//! the node role), which needs the node role's full path on the simulator.

#[path = "../tests/operator_support/mod.rs"]
mod operator_support;
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::{watcher, WatchStreamExt};
use operator_support::*;

const PROVIDER: &str = "kube-ovn-vpc-network.default.ovn";
const BURST: usize = 1000;
const TOTAL: usize = 10_000;
const BASELINE_PODS: usize = 300;

/// When each pod was first seen annotated.
type Seen = Arc<Mutex<HashMap<String, Instant>>>;

fn watch_annotated(c: &Cluster) -> Seen {
    let seen: Seen = Arc::default();
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let key = format!("{PROVIDER}.kubernetes.io/allocated");
    let out = seen.clone();
    tokio::spawn(async move {
        let mut stream = watcher(pods, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(Ok(pod)) = stream.next().await {
            let done = pod
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(&key))
                .is_some_and(|v| v == "true");
            if done {
                let name = pod.metadata.name.unwrap_or_default();
                out.lock().unwrap().entry(name).or_insert_with(Instant::now);
            }
        }
    });
    seen
}

/// Creates `names` with 32 concurrent creators; returns each pod's creation time.
async fn create(c: &Cluster, names: Vec<String>) -> HashMap<String, Instant> {
    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut set = tokio::task::JoinSet::new();
    let per = names.len().div_ceil(32).max(1);
    for chunk in names.chunks(per) {
        let pods = c.pods();
        let chunk = chunk.to_vec();
        let created = created.clone();
        set.spawn(async move {
            for name in chunk {
                let pod: Pod =
                    serde_yaml::from_str(&pod_yaml(&name, "default/kube-ovn-vpc-network")).unwrap();
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

async fn wait_seen(seen: &Seen, n: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    while seen.lock().unwrap().len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} pods annotated",
            seen.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
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

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut c = Cluster::up(0).await;
    c.log_level = "info".into();
    c.start_operator();
    c.apply(SEED_NAD).await;
    c.apply(SEED_VPC_SUBNET).await;
    c.wait_used("subnet-secondary", 0).await;
    let baseline = baseline_nbctl(&c);

    // 1. A burst of 1,000 pods.
    let seen = watch_annotated(&c);
    let names: Vec<String> = (0..BURST).map(|i| format!("p-{i}")).collect();
    let start = Instant::now();
    let created = create(&c, names.clone()).await;
    wait_seen(&seen, BURST, Duration::from_secs(600)).await;
    let last = *seen.lock().unwrap().values().max().unwrap();
    let elapsed = last - start;
    let pods_per_s = BURST as f64 / elapsed.as_secs_f64();
    let latencies: Vec<Duration> = {
        let seen = seen.lock().unwrap();
        created
            .iter()
            .map(|(n, t)| seen[n].saturating_duration_since(*t))
            .collect()
    };
    let p99_ms = p99(latencies).as_millis();
    let ports = c.nb_pod_ports().len();
    assert_eq!(ports, BURST, "every annotated pod has its LSP in NB");
    let rss = vm_hwm_mib(c.operator_pid().unwrap());

    // 2. Grow to 10,000 allocations, then SIGKILL and restart.
    let more: Vec<String> = (BURST..TOTAL).map(|i| format!("p-{i}")).collect();
    let t = Instant::now();
    create(&c, more).await;
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
         reference_kube_ovn_published_pods_per_s=19 ratio_vs_published={:.1} reference_kube_ovn_restart_ms=29000 cni_running=not_measured",
        pods_per_s / baseline,
        pods_per_s / 19.0
    );
}
