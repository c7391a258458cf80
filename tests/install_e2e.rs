//! The install as users run it, with real processes: kube-sim nodes run the `kube-ovn:dev`
//! image as this build's binary; `kube-ovn render | kubectl apply` installs the operator; a
//! `KubeOvn` object makes the operator install OVN central (StatefulSet), the chassis
//! (`ovs-ovn`) and the node roles (`kube-ovn-cni`). Then the guide's network works across
//! nodes, restarting a node role loses no packet, and deleting the KubeOvn leaves nothing of
//! ours on the nodes. Root: namespaces, OVS, OVN.

mod install_support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use install_support::*;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams};
use kube_ovn::api::kubeovn::KubeOvn;

/// The kube-ovn-cni pod on `node`.
async fn cni_pod_on(bed: &Installed, node: &str) -> Option<Pod> {
    let pods: Api<Pod> = Api::namespaced(bed.client.clone(), NAMESPACE);
    let lp = ListParams::default()
        .labels("app.kubernetes.io/component=kube-ovn-cni")
        .fields(&format!("spec.nodeName={node}"));
    pods.list(&lp).await.ok()?.items.into_iter().next()
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kube_ovn_object_installs_everything_and_deleting_it_leaves_nothing() {
    let bed = Installed::up(2).await;
    bed.install_operator().await;
    bed.annotate_tunnel_addresses();
    let started = Instant::now();
    bed.apply_kube_ovn(SPEC_NETDEV);
    let took = bed.wait_available(started);
    eprintln!("KubeOvn Available after {} ms", took.as_millis());
    let table = bed.kubectl(&["get", "kubeovn"]);
    assert!(
        table.contains("True"),
        "Available shows in the table: {table}"
    );

    // The guide's troubleshooting command shows the node role's log.
    let log = bed.kubectl(&["logs", "-n", NAMESPACE, "daemonset/kube-ovn-cni"]);
    assert!(
        log.contains("serving CNI requests"),
        "the node role's log: {log}"
    );

    // The guide's network, across the two nodes.
    apply_seed_network(&bed);
    bed.kubectl_stdin(&["apply", "-f", "-"], &pod_manifest("app-1", &bed.nodes[0]));
    bed.kubectl_stdin(&["apply", "-f", "-"], &pod_manifest("app-2", &bed.nodes[1]));
    let (_, netns_1) = attached(&bed, "app-1").await;
    let (ip_2, _) = attached(&bed, "app-2").await;
    eventually(
        "app-1 pings app-2 across nodes",
        Duration::from_secs(30),
        || async {
            let out = ping(&netns_1, &ip_2, 1, "0.2").output().ok()?;
            out.status.success().then_some(())
        },
    )
    .await;

    // Deleting app-1's node role: the DaemonSet brings it back; the data path lives in OVS
    // and the kernel, so a 10 ms ping does not notice.
    let pinger = ping(&netns_1, &ip_2, 1000, "0.01")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ping");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = cni_pod_on(&bed, &bed.nodes[0])
        .await
        .expect("kube-ovn-cni pod");
    let old_uid = before.metadata.uid.clone();
    let name = before.metadata.name.clone().expect("name");
    bed.kubectl(&["delete", "pod", "-n", NAMESPACE, &name, "--wait=false"]);
    eventually(
        "a new kube-ovn-cni pod Ready on node-1",
        Duration::from_secs(60),
        || async {
            let pod = cni_pod_on(&bed, &bed.nodes[0]).await?;
            (pod.metadata.uid != old_uid && ready(&pod)).then_some(())
        },
    )
    .await;
    let out = tokio::task::spawn_blocking(move || pinger.wait_with_output())
        .await
        .unwrap()
        .expect("ping finishes");
    let summary = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        summary.contains(" 0% packet loss"),
        "no packet lost while the node role restarted: {summary}"
    );

    // Uninstall: nothing of ours stays on the nodes; the user's objects stay. (The same
    // inventory before it, to show it sees what an install puts there.)
    let installed = bed.leftovers().join("\n");
    for expected in [
        "process ovs-vswitchd",
        "process kube-ovn",
        "opt-cni-bin/kube-ovn",
        "link br-int",
        "_p",
    ] {
        assert!(
            installed.contains(expected),
            "{expected} in the inventory:\n{installed}"
        );
    }
    let took = bed.uninstall().await;
    eprintln!("uninstalled in {} ms", took.as_millis());
    let left = bed.leftovers();
    assert!(
        left.is_empty(),
        "left on the nodes: {left:#?}\n{}",
        bed.kept_logs("cni-server", 15) + &bed.kept_logs("operator", 40)
    );
    let subnets = bed.kubectl(&["get", "subnets", "-o", "name"]);
    assert!(subnets.contains("subnet-secondary"), "{subnets}");
    bed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_central_members_keep_nb_writable_while_one_restarts() {
    let bed = Installed::up(3).await;
    bed.install_operator().await;
    bed.annotate_tunnel_addresses();
    let started = Instant::now();
    bed.apply_kube_ovn(&format!("{SPEC_NETDEV}  ovnCentral:\n    replicas: 3\n"));
    bed.wait_available(started);
    apply_seed_network(&bed);

    // One member dies; the StatefulSet brings it back.
    let pods: Api<Pod> = Api::namespaced(bed.client.clone(), NAMESPACE);
    let victim = pods.get("ovn-central-1").await.expect("ovn-central-1");
    pods.delete("ovn-central-1", &DeleteParams::default().grace_period(0))
        .await
        .expect("delete ovn-central-1");

    // Meanwhile NB takes writes: a new pod gets its interface.
    bed.kubectl_stdin(
        &["apply", "-f", "-"],
        &pod_manifest("during", &bed.nodes[0]),
    );
    let (ip, _) = attached(&bed, "during").await;
    assert!(ip.starts_with("10.100."), "{ip}");
    let ports = bed
        .nbctl(&["--bare", "--columns=name", "list", "logical_switch_port"])
        .await;
    assert!(
        ports.contains(&format!("during.default.{PROVIDER}")),
        "{ports}"
    );

    // The member rejoins: the StatefulSet is whole again and the KubeOvn says so.
    let sets: Api<StatefulSet> = Api::namespaced(bed.client.clone(), NAMESPACE);
    eventually(
        "ovn-central back to 3 ready",
        Duration::from_secs(120),
        || async {
            let pod = pods.get("ovn-central-1").await.ok()?;
            let status = sets.get("ovn-central").await.ok()?.status?;
            (pod.metadata.uid != victim.metadata.uid && status.ready_replicas? == 3).then_some(())
        },
    )
    .await;
    let api: Api<KubeOvn> = Api::all(bed.client.clone());
    eventually(
        "the KubeOvn shows ovn-central 3/3",
        Duration::from_secs(60),
        || async {
            let status = api.get("kube-ovn").await.ok()?.status?;
            let central = status.components.iter().find(|c| c.name == "ovn-central")?;
            (central.desired == 3 && central.ready == 3).then_some(())
        },
    )
    .await;
    bed.uninstall().await;
    bed.shutdown().await;
}
