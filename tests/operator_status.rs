//! The operator's status endpoint on kube-sim and real OVN, called the way a user would: the
//! open probes and `/metrics`, and `/api/v1/*` with tokens from the real `kubectl create
//! token` for a ServiceAccount with and without a ClusterRoleBinding.

mod operator_support;
mod support;

use kube::api::{Api, Patch, PatchParams, PostParams};
use kube_ovn::api::kubeovn::{KubeOvn, KubeOvnSpec};
use operator_support::*;
use serde_json::{json, Value};

const SEED_PROVIDER: &str = "kube-ovn-vpc-network.default.ovn";

/// `get` on every `/api/*` path of the status endpoint, for the ServiceAccount `viewer`.
const STATUS_READER: &str = "
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: kube-ovn-status-reader
rules:
- nonResourceURLs: [\"/api/*\"]
  verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: viewer-reads-kube-ovn-status
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: kube-ovn-status-reader
subjects:
- kind: ServiceAccount
  name: viewer
  namespace: default
";

/// A token of a new ServiceAccount `name` in `default`.
fn token_of(c: &Cluster, name: &str) -> String {
    c.kubectl(&["create", "serviceaccount", name]);
    c.kubectl(&["create", "token", name])
}

fn json_body(code: u16, body: &str, want: u16) -> Value {
    assert_eq!(code, want, "{body}");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("JSON body ({e}): {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_api_answers_tokens_with_rbac_only_and_shows_usage_pods_and_metrics() {
    let mut c = Cluster::up(0).await;
    c.start_operator();
    c.apply(SEED_NAD).await;
    c.apply(SEED_VPC_SUBNET).await;
    c.apply(SEED_POD).await;
    let a = c.allocated("multi-network-pod", SEED_PROVIDER).await;
    let ip = a[&format!("{SEED_PROVIDER}.kubernetes.io/ip_address")].clone();
    let mac = a[&format!("{SEED_PROVIDER}.kubernetes.io/mac_address")].clone();

    // The installation's status, as an install controller would have written it.
    let kube_ovns: Api<KubeOvn> = Api::all(c.client.clone());
    kube_ovns
        .create(
            &PostParams::default(),
            &KubeOvn::new("kube-ovn", KubeOvnSpec::default()),
        )
        .await
        .unwrap();
    let status = json!({"status": {
        "version": "9.9.9",
        "components": [{"name": "kube-ovn-node", "desired": 3, "ready": 2, "version": "9.9.9"}],
        "central": {"nodes": ["n1"], "nbAddress": "tcp:10.0.0.1:6641", "sbAddress": "tcp:10.0.0.1:6642"},
        "conditions": [{"type": "Available", "status": "False", "reason": "Progressing",
                        "message": "2 of 3 nodes ready", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
    }});
    kube_ovns
        .patch_status("kube-ovn", &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();

    // Open: probes and metrics.
    assert_eq!(c.status_call("/healthz", None).await.0, 200);
    let stranger = token_of(&c, "stranger");
    let series = [
        "kube_ovn_pods_attached_total 1\n",
        "kube_ovn_subnet_allocations{subnet=\"subnet-secondary\"} 1\n",
        "kube_ovn_subnet_available_addresses{subnet=\"subnet-secondary\"} 65532\n",
        "kube_ovn_nb_transaction_duration_seconds_count{controller=\"ports\"} ",
        "kube_ovn_nb_transaction_duration_seconds_count{controller=\"subnet\"} ",
        "# TYPE kube_ovn_reconcile_errors_total counter\n",
    ];
    // The pod's counter moves just after its annotations are written.
    c.eventually("the named series on /metrics", || async {
        let (code, metrics) = c.status_call("/metrics", Some(&stranger)).await;
        (code == 200 && series.iter().all(|s| metrics.contains(s))).then_some(())
    })
    .await;

    // Guarded: no token, a token without RBAC, a token with it.
    let (code, body) = c.status_call("/api/v1/status", None).await;
    let error = json_body(code, &body, 401);
    assert!(error["error"].as_str().unwrap().contains("bearer token"));
    let (code, body) = c.status_call("/api/v1/status", Some("forged")).await;
    json_body(code, &body, 401);
    let (code, body) = c.status_call("/api/v1/status", Some(&stranger)).await;
    let error = json_body(code, &body, 403);
    assert!(
        error["error"].as_str().unwrap().contains("stranger"),
        "{error}"
    );

    let viewer = token_of(&c, "viewer");
    let rbac = c.dir.path().join("status-reader.yaml");
    std::fs::write(&rbac, STATUS_READER).unwrap();
    c.kubectl(&["apply", "-f", rbac.to_str().unwrap()]);

    let (code, body) = c.status_call("/api/v1/status", Some(&viewer)).await;
    let doc = json_body(code, &body, 200);
    assert_eq!(doc["installed"], json!(true));
    assert_eq!(doc["kubeOvn"]["version"], json!("9.9.9"));
    assert_eq!(
        doc["components"],
        json!([{"name": "kube-ovn-node", "desired": 3, "ready": 2, "version": "9.9.9"}])
    );
    assert_eq!(doc["central"]["sbAddress"], json!("tcp:10.0.0.1:6642"));
    assert_eq!(doc["conditions"][0]["reason"], json!("Progressing"));

    let (code, body) = c.status_call("/api/v1/subnets", Some(&viewer)).await;
    let doc = json_body(code, &body, 200);
    let subnet = doc["subnets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "subnet-secondary")
        .unwrap_or_else(|| panic!("subnet-secondary in {doc}"));
    assert_eq!(subnet["cidr"], json!("10.100.0.0/16"));
    assert_eq!(subnet["used"], json!(1));
    assert_eq!(subnet["available"], json!(65533 - 1));

    let path = "/api/v1/pods/default/multi-network-pod/networks";
    let (code, body) = c.status_call(path, Some(&viewer)).await;
    let doc = json_body(code, &body, 200);
    let networks = doc["networks"].as_array().unwrap();
    assert_eq!(networks.len(), 1, "{doc}");
    let net = &networks[0];
    assert_eq!(net["network"], json!("default/kube-ovn-vpc-network"));
    assert_eq!(net["interface"], json!("net1"));
    assert_eq!(net["ips"], json!([ip]));
    assert_eq!(net["mac"], json!(mac));
    assert_eq!(net["subnet"], json!("subnet-secondary"));
    let (code, body) = c
        .status_call("/api/v1/pods/default/no-such-pod/networks", Some(&viewer))
        .await;
    json_body(code, &body, 404);
}
