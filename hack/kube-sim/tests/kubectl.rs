//! The real `kubectl` against the in-process API server, on the seed's manifests: `create -f`,
//! `get`, `get -o yaml`, `apply --server-side`, `delete`; a CRD schema violation is a 422;
//! a finalizer holds a deletion until it is removed. kubectl validates with the server
//! (`--validate=strict`, the default), never with `--validate=false`.

#[allow(dead_code)]
mod common;

use std::net::{Ipv4Addr, SocketAddr};

use common::Kubectl;
use kube_sim::ApiServer;

const CRDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/crds.yaml");
const SEED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/seed.yaml");

async fn start() -> (ApiServer, tempfile::TempDir) {
    let server = ApiServer::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .expect("server starts");
    (server, tempfile::tempdir().expect("tempdir"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_manifests_go_through_kubectl() {
    let (server, dir) = start().await;
    let k = Kubectl::setup(&server, dir.path()).await;

    let created = k.must(&["create", "-f", CRDS]).await;
    assert!(
        created
            .contains("customresourcedefinition.apiextensions.k8s.io/subnets.kubeovn.io created"),
        "{created}"
    );
    let created = k.must(&["create", "-f", SEED]).await;
    for line in [
        "networkattachmentdefinition.k8s.cni.cncf.io/kube-ovn-vpc-network created",
        "vpc.kubeovn.io/vpc-secondary created",
        "subnet.kubeovn.io/subnet-secondary created",
        "pod/multi-network-pod created",
    ] {
        assert!(created.contains(line), "missing {line:?} in:\n{created}");
    }
    let again = k.run(&["create", "-f", SEED]).await;
    assert!(
        !again.ok && again.stderr.contains("AlreadyExists"),
        "{}",
        again.stderr
    );

    let listed = k.must(&["get", "network-attachment-definitions"]).await;
    assert!(listed.contains("kube-ovn-vpc-network"), "{listed}");
    let listed = k.must(&["get", "subnets"]).await;
    let header = listed.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("NAME") && header.contains("PROVIDER") && header.contains("GATEWAY"),
        "{listed}"
    );
    assert!(
        listed.contains("subnet-secondary") && listed.contains("10.100.0.1"),
        "{listed}"
    );
    let pods = k.must(&["get", "pods"]).await;
    assert!(
        pods.contains("multi-network-pod") && pods.contains("Pending"),
        "{pods}"
    );

    let subnet = k.yaml(&["get", "subnet", "subnet-secondary"]).await;
    assert_eq!(subnet["spec"]["cidr"].as_str(), Some("10.100.0.0/16"));
    assert_eq!(
        subnet["spec"]["provider"].as_str(),
        Some("kube-ovn-vpc-network.default.ovn")
    );
    let nad = k
        .yaml(&[
            "get",
            "net-attach-def",
            "kube-ovn-vpc-network",
            "-n",
            "default",
        ])
        .await;
    let config: serde_json::Value =
        serde_json::from_str(nad["spec"]["config"].as_str().expect("config is a string"))
            .expect("config is JSON");
    assert_eq!(
        config["server_socket"],
        "/run/openvswitch/kube-ovn-daemon.sock"
    );
    let pod = k.yaml(&["get", "pod", "multi-network-pod"]).await;
    assert_eq!(
        pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"].as_str(),
        Some("default/kube-ovn-vpc-network")
    );

    let applied = k.must(&["apply", "--server-side", "-f", SEED]).await;
    assert_eq!(
        applied.matches("serverside-applied").count(),
        4,
        "{applied}"
    );
    let changed = std::fs::read_to_string(SEED)
        .expect("seed")
        .replace("10.100.0.1", "10.100.0.254");
    let out = k
        .run_with_input(&["apply", "--server-side", "-f", "-"], Some(&changed))
        .await;
    assert!(out.ok, "{}", out.stderr);
    let subnet = k.yaml(&["get", "subnet", "subnet-secondary"]).await;
    assert_eq!(subnet["spec"]["gateway"].as_str(), Some("10.100.0.254"));
    assert_eq!(subnet["metadata"]["generation"].as_i64(), Some(2));

    let deleted = k.must(&["delete", "-f", SEED]).await;
    assert_eq!(deleted.matches("deleted").count(), 4, "{deleted}");
    let out = k.run(&["get", "pods"]).await;
    assert!(
        out.stderr.contains("No resources found"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    let out = k.run(&["get", "subnet", "subnet-secondary"]).await;
    assert!(!out.ok && out.stderr.contains("NotFound"), "{}", out.stderr);

    // Deleting a CRD takes its resource away.
    k.must(&["delete", "crd", "subnets.kubeovn.io"]).await;
    let out = k.run(&["get", "subnets"]).await;
    assert!(!out.ok, "subnets are still served: {}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_number_for_a_string_field_is_422_and_unknown_fields_are_refused() {
    let (server, dir) = start().await;
    let k = Kubectl::setup(&server, dir.path()).await;
    k.must(&["create", "-f", CRDS]).await;
    let bad =
        "apiVersion: kubeovn.io/v1\nkind: Subnet\nmetadata:\n  name: bad\nspec:\n  cidrBlock: 10\n";
    let out = k.run_with_input(&["create", "-f", "-"], Some(bad)).await;
    assert!(!out.ok);
    assert!(
        out.stderr.contains("is invalid")
            && out.stderr.contains("spec.cidrBlock")
            && out.stderr.contains("must be of type string"),
        "{}",
        out.stderr
    );
    let unknown = "apiVersion: kubeovn.io/v1\nkind: Subnet\nmetadata:\n  name: odd\nspec:\n  cidrBlok: 10.0.0.0/24\n";
    let out = k
        .run_with_input(&["create", "-f", "-"], Some(unknown))
        .await;
    assert!(
        !out.ok && out.stderr.contains("unknown field \"spec.cidrBlok\""),
        "{}",
        out.stderr
    );
    let good = "apiVersion: kubeovn.io/v1\nkind: Subnet\nmetadata:\n  name: good\nspec:\n  cidrBlock: 10.0.0.0/24\n";
    let out = k.run_with_input(&["create", "-f", "-"], Some(good)).await;
    assert!(out.ok, "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finalizer_holds_a_kubectl_delete() {
    let (server, dir) = start().await;
    let k = Kubectl::setup(&server, dir.path()).await;
    let held = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  finalizers:\n  - example.com/hold\ndata:\n  a: b\n";
    let out = k.run_with_input(&["create", "-f", "-"], Some(held)).await;
    assert!(out.ok, "{}", out.stderr);
    k.must(&["delete", "configmap", "held", "--wait=false"])
        .await;
    let cm = k.yaml(&["get", "configmap", "held"]).await;
    assert!(
        cm["metadata"]["deletionTimestamp"].as_str().is_some(),
        "{cm:?}"
    );
    k.must(&[
        "patch",
        "configmap",
        "held",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ])
    .await;
    let out = k.run(&["get", "configmap", "held"]).await;
    assert!(!out.ok && out.stderr.contains("NotFound"), "{}", out.stderr);
}

/// kubectl's generator commands send protobuf bodies (and do not fall back to JSON).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_generators_write_protobuf_bodies() {
    let (server, dir) = start().await;
    let k = Kubectl::setup(&server, dir.path()).await;

    let out = k.must(&["create", "namespace", "x"]).await;
    assert!(out.contains("namespace/x created"), "{out}");
    let ns = k.yaml(&["get", "namespace", "x"]).await;
    assert_eq!(ns["status"]["phase"].as_str(), Some("Active"));

    let out = k
        .must(&["create", "deployment", "d", "--image=busybox", "-n", "x"])
        .await;
    assert!(out.contains("deployment.apps/d created"), "{out}");
    let deployment = k.yaml(&["get", "deployment", "d", "-n", "x"]).await;
    assert_eq!(deployment["spec"]["replicas"].as_i64(), Some(1));
    assert_eq!(
        deployment["spec"]["selector"]["matchLabels"]["app"].as_str(),
        Some("d")
    );
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["name"].as_str(), Some("busybox"));
    assert_eq!(container["image"].as_str(), Some("busybox"));

    let out = k
        .must(&["create", "configmap", "c", "--from-literal=a=b", "-n", "x"])
        .await;
    assert!(out.contains("configmap/c created"), "{out}");
    let value = k
        .must(&[
            "get",
            "configmap",
            "c",
            "-n",
            "x",
            "-o",
            "jsonpath={.data.a}",
        ])
        .await;
    assert_eq!(value, "b");

    let out = k
        .must(&[
            "create",
            "secret",
            "generic",
            "s",
            "--from-literal=k=v",
            "-n",
            "x",
        ])
        .await;
    assert!(out.contains("secret/s created"), "{out}");
    let secret = k.yaml(&["get", "secret", "s", "-n", "x"]).await;
    assert_eq!(secret["data"]["k"].as_str(), Some("dg=="));

    let out = k
        .must(&[
            "create",
            "service",
            "clusterip",
            "web",
            "--tcp=80:8080",
            "-n",
            "x",
        ])
        .await;
    assert!(out.contains("service/web created"), "{out}");
    let service = k.yaml(&["get", "service", "web", "-n", "x"]).await;
    assert_eq!(service["spec"]["ports"][0]["port"].as_i64(), Some(80));
    assert_eq!(
        service["spec"]["ports"][0]["targetPort"].as_i64(),
        Some(8080)
    );

    let out = k
        .must(&["create", "serviceaccount", "robot", "-n", "x"])
        .await;
    assert!(out.contains("serviceaccount/robot created"), "{out}");
}
