//! `hack/bench.sh install`: how long the install as users run it takes, and what it leaves.
//!
//! On kube-sim with real processes (the nodes run `kube-ovn:dev` as this release build):
//! `kube-ovn render | kubectl apply` installs the operator, then a `KubeOvn` is applied and
//! timed until `Available=True` (`available_ms`: OVN central, every node's chassis and node
//! role running and ready); then it is deleted and timed until the object and the install's
//! pods are gone (`uninstall_ms`); `leftovers` counts our processes, OVS databases and
//! sockets, OVS bridges and ports, veths and CNI binaries left on the nodes.
//!
//! Baseline in the same run, on the same cluster: the same workloads' shape (a StatefulSet
//! of `replicas` pods and two DaemonSets, host network) with an image kube-sim runs as a bare
//! sandbox, timed until all are Ready — what scheduling and the simulated kubelet cost
//! before any of our processes starts. `ratio_available` is available_ms over that floor.
//!
//! `KOVN_BENCH_CENTRAL_REPLICAS=3` installs a 3-member raft central (on 3 nodes).

#[path = "../tests/install_support/mod.rs"]
mod install_support;

use std::time::{Duration, Instant};

use install_support::*;
use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
use kube::api::{Api, DeleteParams};

/// The install's shape with a sandbox-only image: one StatefulSet, two DaemonSets.
fn baseline_manifests(replicas: u32) -> String {
    let pod = |name: &str| {
        format!(
            "    metadata:\n      labels: {{app: {name}}}\n    spec:\n      hostNetwork: true\n      containers:\n      - name: main\n        image: registry.k8s.io/pause:3.9\n"
        )
    };
    let mut out = format!(
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: floor-central, namespace: default}}\nspec:\n  replicas: {replicas}\n  serviceName: floor-central\n  podManagementPolicy: Parallel\n  selector: {{matchLabels: {{app: floor-central}}}}\n  template:\n{}",
        pod("floor-central")
    );
    for ds in ["floor-ovs", "floor-cni"] {
        out.push_str(&format!(
            "---\napiVersion: apps/v1\nkind: DaemonSet\nmetadata: {{name: {ds}, namespace: default}}\nspec:\n  selector: {{matchLabels: {{app: {ds}}}}}\n  template:\n{}",
            pod(ds)
        ));
    }
    out
}

/// Applies the baseline workloads and waits until every pod is ready; then removes them.
async fn floor(bed: &Installed, replicas: u32) -> Duration {
    let started = Instant::now();
    bed.kubectl_stdin(&["apply", "-f", "-"], &baseline_manifests(replicas));
    let sets: Api<StatefulSet> = Api::namespaced(bed.client.clone(), "default");
    let daemons: Api<DaemonSet> = Api::namespaced(bed.client.clone(), "default");
    let nodes = bed.nodes.len() as i32;
    eventually(
        "the baseline workloads ready",
        Duration::from_secs(120),
        || async {
            let sts = sets.get("floor-central").await.ok()?.status?;
            for ds in ["floor-ovs", "floor-cni"] {
                let status = daemons.get(ds).await.ok()?.status?;
                if status.number_ready < nodes {
                    return None;
                }
            }
            (sts.ready_replicas? == replicas as i32).then_some(())
        },
    )
    .await;
    let took = started.elapsed();
    sets.delete("floor-central", &DeleteParams::default())
        .await
        .expect("delete the baseline StatefulSet");
    for ds in ["floor-ovs", "floor-cni"] {
        daemons
            .delete(ds, &DeleteParams::default())
            .await
            .expect("delete a baseline DaemonSet");
    }
    took
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let replicas: u32 = std::env::var("KOVN_BENCH_CENTRAL_REPLICAS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let bed = Installed::up(replicas.max(2) as usize).await;
    bed.install_operator().await;
    bed.annotate_tunnel_addresses();
    let floor_ms = floor(&bed, replicas).await.as_millis();

    let started = Instant::now();
    bed.apply_kube_ovn(&format!(
        "  nonPrimaryCNI: true\n  datapath: Netdev\n  tunnelInterface: ul1\n  ovnCentral:\n    replicas: {replicas}\n"
    ));
    let available_ms = bed.wait_available(started).as_millis();
    let uninstall_ms = bed.uninstall().await.as_millis();
    let left = bed.leftovers();
    for item in &left {
        eprintln!("left over: {item}");
    }
    println!(
        "BENCH install available_ms={available_ms} uninstall_ms={uninstall_ms} leftovers={} central_replicas={replicas} nodes={} floor_ready_ms={floor_ms} ratio_available={:.2}",
        left.len(),
        bed.nodes.len(),
        available_ms as f64 / floor_ms.max(1) as f64
    );
    bed.shutdown().await;
}
