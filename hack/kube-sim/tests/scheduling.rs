//! kube-sim's scheduler through the real kubectl: required pod anti-affinity spreads a
//! host-network StatefulSet over distinct nodes and leaves the replica with no node Pending
//! (`PodScheduled=False`, `Unschedulable`, kube-scheduler's message, a `FailedScheduling`
//! Event); required node affinity pins, excludes and ORs its terms; a taken host port sends a
//! pod elsewhere or keeps it waiting; a waiting pod is placed as soon as a node label or a
//! deleted pod makes room. The matching rules one by one are unit tests in `nodes::affinity`
//! and `nodes::scheduler`. Root: real namespaces.

#[allow(dead_code)]
mod common;

use std::time::Duration;

use common::Bed;

/// `nodes` simulated nodes. The retry backoff is long, so a waiting pod that gets placed
/// within the test's patience was woken by the change, not by its timer.
async fn bed(nodes: usize) -> Bed {
    Bed::start(nodes, |config| {
        config.backoff.max = Duration::from_secs(600);
    })
    .await
}

impl Bed {
    /// Waits until the pod is Pending as unschedulable, with `message`, and checks the Event.
    async fn until_unschedulable(&self, pod: &str, message: &str) {
        self.until(
            &["pod", pod],
            "{.status.phase} {.status.conditions[?(@.type==\"PodScheduled\")].status} {.status.conditions[?(@.type==\"PodScheduled\")].reason} {.status.conditions[?(@.type==\"PodScheduled\")].message}",
            &format!("Pending False Unschedulable {message}"),
        )
        .await;
        let path = format!("jsonpath={{.items[?(@.involvedObject.name==\"{pod}\")].reason}}");
        let reasons = self.kubectl.must(&["get", "events", "-o", &path]).await;
        assert!(reasons.contains("FailedScheduling"), "{reasons}");
        let node = self
            .kubectl
            .must(&["get", "pod", pod, "-o", "jsonpath={.spec.nodeName}"])
            .await;
        assert_eq!(node, "", "an unschedulable pod is bound to no node");
    }

    async fn until_running_on(&self, pod: &str, node: &str) {
        self.until(
            &["pod", pod],
            "{.spec.nodeName} {.status.phase}",
            &format!("{node} Running"),
        )
        .await;
    }
}

const CENTRAL: &str = "apiVersion: apps/v1
kind: StatefulSet
metadata: {name: ovn-central}
spec:
  replicas: 3
  serviceName: ovn-central
  selector: {matchLabels: {app: ovn-central}}
  template:
    metadata: {labels: {app: ovn-central}}
    spec:
      hostNetwork: true
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - labelSelector: {matchLabels: {app: ovn-central}}
            topologyKey: kubernetes.io/hostname
      containers: [{name: central, image: busybox}]
";

/// A pod named `name`; `spec` is indented YAML under `spec:` (containers added).
fn pod(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: {name}}}}}\nspec:\n{spec}  containers: [{{name: c, image: busybox, ports: PORTS}}]\n"
    )
}

fn pod_with_port(name: &str, spec: &str, ports: &str) -> String {
    pod(name, spec).replace("PORTS", ports)
}

fn pod_without_ports(name: &str, spec: &str) -> String {
    pod_with_port(name, spec, "[]")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn anti_affinity_spreads_a_host_network_statefulset_and_the_extra_replica_waits() {
    let bed = bed(3).await;

    bed.apply(CENTRAL).await;
    bed.until(
        &["statefulset", "ovn-central"],
        "{.status.readyReplicas}",
        "3",
    )
    .await;
    let nodes = bed
        .kubectl
        .must(&[
            "get",
            "pods",
            "-l",
            "app=ovn-central",
            "-o",
            "jsonpath={.items[*].spec.nodeName}",
        ])
        .await;
    let mut nodes: Vec<&str> = nodes.split_whitespace().collect();
    nodes.sort();
    assert_eq!(nodes, vec!["node-1", "node-2", "node-3"]);

    bed.kubectl
        .must(&["scale", "statefulset", "ovn-central", "--replicas=4"])
        .await;
    bed.until_unschedulable(
        "ovn-central-3",
        "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules.",
    )
    .await;

    bed.kubectl
        .must(&["scale", "statefulset", "ovn-central", "--replicas=3"])
        .await;
    bed.until(
        &["pods", "-l", "app=ovn-central"],
        "{.items[*].status.phase}",
        "Running Running Running",
    )
    .await;
    bed.until(
        &["statefulset", "ovn-central"],
        "{.status.readyReplicas}",
        "3",
    )
    .await;

    bed.down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_affinity_pins_excludes_ors_its_terms_and_waits_for_a_label() {
    let bed = bed(3).await;
    let affinity = |terms: &str| {
        format!("  affinity:\n    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n        nodeSelectorTerms:\n{terms}")
    };
    let term = |key: &str, operator: &str, values: &str| {
        format!("        - matchExpressions: [{{key: {key}, operator: {operator}, values: {values}}}]\n")
    };

    bed.apply(&pod_without_ports(
        "pinned",
        &affinity(&term("kubernetes.io/hostname", "In", "[node-2]")),
    ))
    .await;
    bed.until_running_on("pinned", "node-2").await;

    bed.apply(&pod_without_ports(
        "excluded",
        &affinity(&term("kubernetes.io/hostname", "NotIn", "[node-1, node-2]")),
    ))
    .await;
    bed.until_running_on("excluded", "node-3").await;

    // Neither term matches yet; a label that satisfies the second places it.
    let either = format!(
        "{}{}",
        term("kubernetes.io/hostname", "In", "[node-9]"),
        term("zone", "In", "[z]")
    );
    bed.apply(&pod_without_ports("either", &affinity(&either)))
        .await;
    bed.until_unschedulable(
        "either",
        "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector.",
    )
    .await;
    bed.kubectl
        .must(&["label", "node", "node-1", "zone=z"])
        .await;
    bed.until_running_on("either", "node-1").await;

    bed.down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_taken_host_port_sends_a_pod_to_another_node_and_one_node_makes_it_wait() {
    let bed = bed(2).await;
    let port = "[{containerPort: 80, hostPort: 8080}]";

    // Both may go to node-1 by their affinity; the port sends the second to node-2.
    let first_two = "  affinity:\n    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n        nodeSelectorTerms:\n        - matchFields: [{key: metadata.name, operator: In, values: [node-1, node-2]}]\n";
    bed.apply(&pod_with_port(
        "web-a",
        "  nodeSelector: {kubernetes.io/hostname: node-1}\n",
        port,
    ))
    .await;
    bed.until_running_on("web-a", "node-1").await;
    bed.apply(&pod_with_port("web-b", first_two, port)).await;
    bed.until_running_on("web-b", "node-2").await;

    // No node has the port free: the third waits; UDP on the same number does not.
    bed.apply(&pod_with_port("web-c", "", port)).await;
    bed.until_unschedulable(
        "web-c",
        "0/2 nodes are available: 2 node(s) didn't have free ports for the requested pod ports.",
    )
    .await;
    bed.apply(&pod_with_port(
        "dns",
        "  nodeSelector: {kubernetes.io/hostname: node-1}\n",
        "[{containerPort: 80, hostPort: 8080, protocol: UDP}]",
    ))
    .await;
    bed.until_running_on("dns", "node-1").await;

    // Deleting the pod that holds the port on node-1 frees it.
    bed.kubectl.must(&["delete", "pod", "web-a"]).await;
    bed.until_running_on("web-c", "node-1").await;

    bed.down().await;
}
