//! The install through OLM, with real processes: what OLM does when a Subscription resolves
//! the committed bundle (`olm-bundle/`) — its CRDs, a ServiceAccount, the CSV's permissions
//! and clusterPermissions as RBAC, the CSV's Deployment in the operator namespace
//! (`operators`, where OLM puts AllNamespaces operators) — then the CSV's initialization
//! resource (the KubeOvn the console offers first). The KubeOvn becomes Available and the
//! user guide's network works: pods on two nodes get addresses on the seed subnet and ping
//! each other. The RBAC OLM made is what the operator needs and no more (SubjectAccessReviews).
//! Root: namespaces, OVS, OVN.

mod install_support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use install_support::*;

/// The namespace OLM installs AllNamespaces operators into.
const OPERATOR_NAMESPACE: &str = "operators";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_bundle_installs_as_olm_does_and_its_initialization_resource_brings_up_the_network() {
    let bed = Installed::start(2).await;
    let bundle = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("olm-bundle");
    let csv = bed
        .install_from_olm_bundle(&bundle, OPERATOR_NAMESPACE)
        .await;

    // The RBAC from the CSV: enough for the operator, nothing beyond.
    let sa = format!("system:serviceaccount:{OPERATOR_NAMESPACE}:kube-ovn-operator");
    let allowed = [
        (
            "create",
            "coordination.k8s.io",
            "leases",
            Some(OPERATOR_NAMESPACE),
        ),
        (
            "update",
            "coordination.k8s.io",
            "leases",
            Some(OPERATOR_NAMESPACE),
        ),
        ("create", "apps", "statefulsets", Some("kube-system")),
        ("patch", "apps", "daemonsets", Some("kube-system")),
        ("patch", "", "pods", Some("default")),
        ("update", "operator.kubeovn.io", "kubeovns/status", None),
        ("create", "kubeovn.io", "ips", None),
    ];
    for (verb, group, resource, namespace) in allowed {
        assert!(
            bed.can(&sa, verb, group, resource, namespace).await,
            "the operator cannot {verb} {group}/{resource} in {namespace:?}"
        );
    }
    let denied = [
        (
            "create",
            "coordination.k8s.io",
            "leases",
            Some("kube-system"),
        ),
        ("get", "", "secrets", Some("kube-system")),
        ("get", "", "secrets", Some(OPERATOR_NAMESPACE)),
        (
            "create",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            None,
        ),
        ("delete", "", "namespaces", None),
    ];
    for (verb, group, resource, namespace) in denied {
        assert!(
            !bed.can(&sa, verb, group, resource, namespace).await,
            "the operator may {verb} {group}/{resource} in {namespace:?}"
        );
    }

    // The console's first form: the CSV's initialization resource, with what this bed needs
    // (no OVS kernel module: the userspace datapath) set the way a user edits the form.
    let annotations = csv.metadata.annotations.clone().expect("CSV annotations");
    let mut kube_ovn: serde_json::Value =
        serde_json::from_str(&annotations[kube_ovn::olm::csv::INITIALIZATION_RESOURCE])
            .expect("the initialization resource is JSON");
    assert_eq!(kube_ovn["kind"], "KubeOvn");
    kube_ovn["spec"]["datapath"] = "Netdev".into();
    kube_ovn["spec"]["tunnelInterface"] = "ul1".into();
    bed.annotate_tunnel_addresses();
    let started = Instant::now();
    bed.kubectl_stdin(
        &["apply", "-f", "-"],
        &serde_json::to_string(&kube_ovn).unwrap(),
    );
    let took = bed.wait_available(started);
    eprintln!("KubeOvn Available after {} ms", took.as_millis());
    // The workloads run the image the bundle names (RELATED_IMAGE_KUBE_OVN).
    let images = bed.kubectl(&[
        "get",
        "daemonset",
        "-n",
        NAMESPACE,
        "kube-ovn-cni",
        "-o",
        "jsonpath={.spec.template.spec.containers[*].image}",
    ]);
    assert_eq!(images.trim(), RELEASE_IMAGE);

    // The user guide's scenario.
    apply_seed_network(&bed);
    bed.kubectl_stdin(&["apply", "-f", "-"], &pod_manifest("app-1", &bed.nodes[0]));
    bed.kubectl_stdin(&["apply", "-f", "-"], &pod_manifest("app-2", &bed.nodes[1]));
    let (ip_1, netns_1) = attached(&bed, "app-1").await;
    let (ip_2, _) = attached(&bed, "app-2").await;
    let subnet: ipnet::Ipv4Net = SEED_CIDR.parse().unwrap();
    for ip in [&ip_1, &ip_2] {
        let addr: std::net::Ipv4Addr = ip.parse().expect("an IPv4 address");
        assert!(subnet.contains(&addr), "{ip} outside {SEED_CIDR}");
    }
    eventually(
        "app-1 pings app-2 across nodes",
        Duration::from_secs(30),
        || async {
            let out = ping(&netns_1, &ip_2, 1, "0.2").output().ok()?;
            out.status.success().then_some(())
        },
    )
    .await;

    bed.uninstall().await;
    let left = bed.leftovers();
    assert!(left.is_empty(), "left on the nodes: {left:#?}");
    bed.shutdown().await;
}
