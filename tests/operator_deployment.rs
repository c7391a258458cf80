//! `kube-ovn operator` run the way a cluster runs it: as the Deployment `kube-ovn-operator` in
//! `kube-system`, on a kube-sim node whose image map runs `kube-ovn:dev` as this build's
//! binary. It reaches the API with `Client::try_default()` (no kubeconfig flag, only what
//! kube-sim gives every container), becomes Ready through its `/readyz` readiness probe,
//! reaches OVN NB over the sandbox's unix socket from its node's mount namespace, and handles
//! the seed's manifests as the hand-started operator of `operator_e2e.rs` does; its log is read
//! through the API (`kubectl logs deployment/…`). Root: real namespaces and OVN.

mod operator_support;
mod support;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, ListParams, LogParams, PostParams};
use kube_sim::controllers::WorkloadControllers;
use kube_sim::nodes::{ContainerRuntime, Simulator, SimulatorConfig};
use operator_support::*;
use serde_json::json;

const IMAGE: &str = "kube-ovn:dev";
const STATUS_PORT: u16 = 10660;

/// The operator's ServiceAccount and Deployment, as `hack/demo.sh` applies them.
fn operator_manifests(nb: &str) -> (ServiceAccount, Deployment) {
    let account = serde_json::from_value(json!({
        "metadata": {"name": "kube-ovn-operator", "namespace": "kube-system"},
    }))
    .expect("a ServiceAccount");
    let labels = json!({"app": "kube-ovn-operator"});
    let deployment = serde_json::from_value(json!({
        "metadata": {"name": "kube-ovn-operator", "namespace": "kube-system"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": "kube-ovn-operator",
                    "containers": [{
                        "name": "operator",
                        "image": IMAGE,
                        "args": ["operator", "--ovn-nb", nb, "--ipam-db", "/var/lib/kube-ovn/ipam",
                                 "--status-addr", format!("0.0.0.0:{STATUS_PORT}")],
                        "readinessProbe": {
                            "httpGet": {"path": "/readyz", "port": STATUS_PORT},
                            "periodSeconds": 1,
                        },
                    }],
                },
            },
        },
    }))
    .expect("a Deployment");
    (account, deployment)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_operator_runs_as_a_deployment_and_handles_the_seed() {
    let c = Cluster::up(0).await;
    let mut config = SimulatorConfig::new(1, c.dir.path().join("nodes"));
    config.api_server = Some(c.api.addr());
    let entry = format!("{IMAGE}={}", env!("CARGO_BIN_EXE_kube-ovn"));
    config.runtime = ContainerRuntime::from_entries([entry.as_str()]).expect("image map");
    let sim = Simulator::start(c.client.clone(), config)
        .await
        .expect("simulator");
    let controllers = WorkloadControllers::start(c.client.clone());

    let nb = c.ovn.nb_endpoint();
    let (account, deployment) = operator_manifests(&nb);
    Api::<ServiceAccount>::namespaced(c.client.clone(), "kube-system")
        .create(&PostParams::default(), &account)
        .await
        .expect("create the ServiceAccount");
    let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), "kube-system");
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create the Deployment");

    // Available once its pod is Ready: the readiness probe reached /readyz inside the pod.
    c.eventually("the operator Deployment available", || async {
        let d = deployments.get("kube-ovn-operator").await.ok()?;
        let available = d.status?.available_replicas?;
        (available == 1).then_some(())
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "kube-system");
    let listed = pods
        .list(&ListParams::default().labels("app=kube-ovn-operator"))
        .await
        .expect("list operator pods");
    let operator_pod = listed.items.first().expect("the operator pod").clone();
    let name = operator_pod.metadata.name.clone().expect("a name");
    let args = &operator_pod.spec.as_ref().expect("spec").containers[0].args;
    assert!(
        !format!("{args:?}").contains("kubeconfig"),
        "no kubeconfig flag: {args:?}"
    );

    // The seed, handled by the operator in its pod: addresses, annotations and the port in NB.
    c.apply(SEED_NAD).await;
    c.apply(SEED_VPC_SUBNET).await;
    c.apply(SEED_POD).await;
    let provider = "kube-ovn-vpc-network.default.ovn";
    let annotations = c.allocated("multi-network-pod", provider).await;
    let ip = &annotations[&format!("{provider}.kubernetes.io/ip_address")];
    assert!(
        ip.starts_with("10.100."),
        "an address of the seed's subnet: {ip}"
    );
    let lsp = format!("multi-network-pod.default.{provider}");
    c.eventually("the pod's port in NB", || async {
        c.nb_pod_ports().contains(&lsp).then_some(())
    })
    .await;

    // Its log, through the API as `kubectl logs`, tells what it did.
    let log = c
        .eventually("the operator's log names the pod", || async {
            let log = pods.logs(&name, &LogParams::default()).await.ok()?;
            log.contains("multi-network-pod").then_some(log)
        })
        .await;
    assert!(log.contains("pod attached"), "{log}");

    // Deleting the pod frees its port, as with a hand-started operator.
    c.delete_pod("multi-network-pod").await;
    c.eventually("the pod's port gone from NB", || async {
        (!c.nb_pod_ports().contains(&lsp)).then_some(())
    })
    .await;

    controllers.shutdown().await;
    sim.shutdown().await;
}
