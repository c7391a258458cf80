//! The KubeOvn controller against kube-sim's API (no node runs a container here: the
//! workloads it renders are read back as objects). Every bad spec gets a condition that says
//! what to fix and nothing is applied; a good one renders the workloads of ARCHITECTURE's
//! table, labelled and owned; a spec change removes what it no longer renders; a second
//! KubeOvn is refused; deleting the CR uninstalls everything of ours. The end-to-end install
//! with real processes is `install_e2e.rs`. Root: OVN NB for the network controllers.

mod operator_support;
mod support;

use std::process::Stdio;

use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
use k8s_openapi::api::core::v1::{Node, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube_ovn::api::kubeovn::KubeOvn;
use operator_support::*;
use serde_json::json;

const MANAGED: &str = "app.kubernetes.io/managed-by=kube-ovn-operator";

fn start_operator(c: &mut Cluster) {
    c.restarts += 1;
    let log = std::fs::File::create(c.log_path()).unwrap();
    let child = c
        .operator_command()
        .env(
            "RELATED_IMAGE_KUBE_OVN",
            "registry.example.com/kube-ovn:v0.1.0",
        )
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawning kube-ovn operator");
    c.operator = Some(child);
}

async fn create_kube_ovn(c: &Cluster, name: &str, spec: serde_json::Value) {
    let obj: KubeOvn = serde_json::from_value(json!({
        "apiVersion": "operator.kubeovn.io/v1alpha1",
        "kind": "KubeOvn",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap();
    Api::<KubeOvn>::all(c.client.clone())
        .create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("creating KubeOvn {name}: {e}"));
}

/// The `Degraded` condition's reason and message once one is written for generation `gen`.
async fn degraded(c: &Cluster, name: &str, generation: i64) -> (String, String) {
    let api: Api<KubeOvn> = Api::all(c.client.clone());
    c.eventually(&format!("KubeOvn {name} Degraded"), || async {
        let k = api.get_opt(name).await.ok()??;
        let s = k.status?;
        if s.observed_generation != Some(generation) {
            return None;
        }
        let d = s.conditions.iter().find(|c| c.type_ == "Degraded")?;
        Some((d.reason.clone(), d.message.clone()))
    })
    .await
}

async fn managed_workloads(c: &Cluster) -> Vec<String> {
    let ds: Api<DaemonSet> = Api::all(c.client.clone());
    let sts: Api<StatefulSet> = Api::all(c.client.clone());
    let lp = ListParams::default().labels(MANAGED);
    let mut names: Vec<String> = ds
        .list(&lp)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|d| format!("DaemonSet/{}", d.metadata.name.unwrap()))
        .collect();
    names.extend(
        sts.list(&lp)
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|s| format!("StatefulSet/{}", s.metadata.name.unwrap())),
    );
    names.sort();
    names
}

async fn add_node(c: &Cluster, name: &str, ip: &str) {
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {
            "addresses": [{"type": "InternalIP", "address": ip}],
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }))
    .unwrap();
    let nodes: Api<Node> = Api::all(c.client.clone());
    nodes.create(&PostParams::default(), &node).await.unwrap();
    // The status as a kubelet reports it.
    nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": node.status})),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_specs_get_a_condition_and_nothing_is_applied() {
    let mut c = Cluster::up(0).await;
    start_operator(&mut c);
    let cases = [
        (
            json!({"nonPrimaryCNI": false}),
            "PrimaryModeNotSupported",
            "nonPrimaryCNI",
        ),
        (
            json!({"ovnCentral": {"mode": "External", "nbAddress": "tcp:10.0.0.1:6641"}}),
            "ExternalCentralAddressMissing",
            "sbAddress",
        ),
        (
            json!({"image": "Not/An Image"}),
            "InvalidImage",
            "spec.image",
        ),
        (
            json!({"ovnCentral": {"replicas": 2}}),
            "InvalidCentralReplicas",
            "1, or 3",
        ),
        (
            json!({"datapath": "Netdev"}),
            "TunnelInterfaceRequired",
            "tunnelInterface",
        ),
    ];
    let api: Api<KubeOvn> = Api::all(c.client.clone());
    for (spec, reason, names) in cases {
        create_kube_ovn(&c, "kube-ovn", spec.clone()).await;
        let (got, message) = degraded(&c, "kube-ovn", 1).await;
        assert_eq!(got, reason, "spec {spec}: {message}");
        assert!(message.contains(names), "{message:?} should name {names}");
        assert_eq!(
            managed_workloads(&c).await,
            Vec::<String>::new(),
            "spec {spec} applied something"
        );
        let k = api.get("kube-ovn").await.unwrap();
        let available = k
            .status
            .unwrap()
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Available")
            .unwrap();
        assert_eq!(
            available.status,
            kube_ovn::api::condition::ConditionStatus::False
        );
        api.delete("kube-ovn", &DeleteParams::default())
            .await
            .unwrap();
        c.eventually("the refused KubeOvn deleted", || async {
            api.get_opt("kube-ovn")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        })
        .await;
    }
    // No node can run central: a condition naming the fix, nothing applied.
    create_kube_ovn(&c, "kube-ovn", json!({})).await;
    let (reason, message) = degraded(&c, "kube-ovn", 1).await;
    assert_eq!(reason, "NotEnoughNodes");
    assert!(message.contains("kube-ovn/role=master"), "{message}");
    assert_eq!(managed_workloads(&c).await, Vec::<String>::new());
    c.kill_operator();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_good_spec_renders_the_workloads_and_deleting_it_removes_them() {
    let mut c = Cluster::up(0).await;
    add_node(&c, "n1", "172.31.0.10").await;
    add_node(&c, "n2", "172.31.0.11").await;
    start_operator(&mut c);
    create_kube_ovn(&c, "kube-ovn", json!({"ovnCentral": {"replicas": 1}})).await;
    c.eventually("the three workloads", || async {
        (managed_workloads(&c).await
            == [
                "DaemonSet/kube-ovn-cni",
                "DaemonSet/ovs-ovn",
                "StatefulSet/ovn-central",
            ])
        .then_some(())
    })
    .await;
    let ns = "kube-system";
    let sts = Api::<StatefulSet>::namespaced(c.client.clone(), ns)
        .get("ovn-central")
        .await
        .unwrap();
    let owner = &sts.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("KubeOvn", "kube-ovn")
    );
    let pod = sts.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        pod.containers[0].image.as_deref(),
        Some("registry.example.com/kube-ovn:v0.1.0")
    );
    assert!(pod.host_network.unwrap());
    let members = pod.containers[0]
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "OVN_CENTRAL_MEMBERS")
        .unwrap();
    assert_eq!(members.value.as_deref(), Some("172.31.0.10"));
    let cni = Api::<DaemonSet>::namespaced(c.client.clone(), ns)
        .get("kube-ovn-cni")
        .await
        .unwrap();
    let cni_pod = cni.spec.unwrap().template.spec.unwrap();
    let sb = cni_pod.containers[0]
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "OVN_SB")
        .unwrap();
    assert_eq!(sb.value.as_deref(), Some("tcp:172.31.0.10:6642"));
    assert_eq!(
        cni_pod.service_account_name.as_deref(),
        Some("kube-ovn-cni")
    );
    let accounts = Api::<ServiceAccount>::namespaced(c.client.clone(), ns)
        .list(&ListParams::default().labels(MANAGED))
        .await
        .unwrap();
    // ovn-central, ovs-ovn, kube-ovn-cni and the NAT gateways' kube-ovn-nat-gw.
    assert_eq!(accounts.items.len(), 4);
    // Nothing runs the pods here: not available, progressing, central recorded.
    let api: Api<KubeOvn> = Api::all(c.client.clone());
    let status = c
        .eventually("a status with components", || async {
            let s = api.get("kube-ovn").await.ok()?.status?;
            (s.components.len() == 3).then_some(s)
        })
        .await;
    assert_eq!(status.central.as_ref().unwrap().nodes, ["n1"]);
    assert!(status
        .conditions
        .iter()
        .any(|c| c.type_ == "Progressing" && c.is_true()));
    // kubectl shows Available, Version and Age at a glance.
    let out = std::process::Command::new("kubectl")
        .env("KUBECONFIG", c.kubeconfig())
        .args(["get", "kubeovn"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.lines().next().unwrap_or("").contains("AVAILABLE"),
        "{table}"
    );
    assert!(
        table.contains("kube-ovn") && table.contains("False"),
        "{table}"
    );

    // A second KubeOvn is refused on itself and changes nothing.
    create_kube_ovn(&c, "another", json!({})).await;
    let (reason, _) = degraded(&c, "another", 1).await;
    assert_eq!(reason, "NotTheSingleton");
    assert_eq!(managed_workloads(&c).await.len(), 3);

    // The host's OVS instead of ours: ovs-ovn goes.
    api.patch(
        "kube-ovn",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"nodeOvs": "Host"}})),
    )
    .await
    .unwrap();
    c.eventually("ovs-ovn pruned", || async {
        (managed_workloads(&c).await == ["DaemonSet/kube-ovn-cni", "StatefulSet/ovn-central"])
            .then_some(())
    })
    .await;

    // Uninstall: every workload, account and role of ours goes, then the CR.
    api.delete("kube-ovn", &DeleteParams::default())
        .await
        .unwrap();
    c.eventually("the KubeOvn gone after the uninstall", || async {
        api.get_opt("kube-ovn")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert_eq!(managed_workloads(&c).await, Vec::<String>::new());
    assert_eq!(
        labelled::<ServiceAccount>(&c).await,
        0,
        "ServiceAccounts left"
    );
    assert_eq!(labelled::<ClusterRole>(&c).await, 0, "ClusterRoles left");
    assert_eq!(
        labelled::<ClusterRoleBinding>(&c).await,
        0,
        "ClusterRoleBindings left"
    );
    assert_eq!(labelled::<RoleBinding>(&c).await, 0, "RoleBindings left");
    c.kill_operator();
}

/// How many objects of kind `K` carry the install's managed-by label, in every namespace.
async fn labelled<K>(c: &Cluster) -> usize
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let lp = ListParams::default().labels(MANAGED);
    Api::<K>::all(c.client.clone())
        .list(&lp)
        .await
        .unwrap()
        .items
        .len()
}
