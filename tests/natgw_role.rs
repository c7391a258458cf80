//! `kube-ovn nat-gw` as the gateway pod runs it: the process inside the gateway's netns,
//! talking to kube-sim's API server, finds its legs from its pod's network-status, programs
//! the CRs the controller validated, writes `status.ready` (only that field), follows CR
//! changes, and rebuilds everything after a restart. Traffic and tables are checked as in
//! natgw_dataplane. Needs root.

mod cni_support;
mod natgw_support;
mod node_support;
mod support;

use std::time::Duration;

use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::Resource;
use kube_ovn::api::nat::{
    IptablesDnatRule, IptablesEIP, IptablesFIPRule, IptablesSnatRule, VpcNatGateway,
};
use natgw_support::*;
use node_support::Kube;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

const GW: &str = "gw1";
const POD: &str = "vpc-nat-gw-gw1-0";
const EIP_1: &str = "172.19.0.11";
const EIP_2: &str = "172.19.0.12";
const CONTROLLER: &str = "kube-ovn-operator";

fn validated(ok: bool) -> Value {
    json!([{
        "type": "Validated",
        "status": if ok { "True" } else { "False" },
        "reason": if ok { "Valid" } else { "Conflict" },
        "message": if ok { "" } else { "tcp port 8080 of EIP e1 is already forwarded" },
        "lastTransitionTime": "2024-01-01T00:00:00Z",
    }])
}

/// Creates `kind` `name` with `spec`, then writes `status` as the controller does.
async fn create<K>(client: &kube::Client, name: &str, spec: Value, status: Value)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let api: Api<K> = Api::all(client.clone());
    let obj: K = serde_json::from_value(json!({
        "apiVersion": K::api_version(&()), "kind": K::kind(&()),
        "metadata": {"name": name}, "spec": spec,
    }))
    .expect("object");
    api.create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e}"));
    let body = json!({
        "apiVersion": K::api_version(&()), "kind": K::kind(&()),
        "metadata": {"name": name}, "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(CONTROLLER).force(),
        &Patch::Apply(&body),
    )
    .await
    .unwrap_or_else(|e| panic!("status of {name}: {e}"));
}

async fn status_of<K>(client: &kube::Client, name: &str) -> Option<Value>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let api: Api<K> = Api::all(client.clone());
    let obj = api.get_opt(name).await.expect("get")?;
    Some(serde_json::to_value(&obj).expect("json")["status"].clone())
}

async fn setup(client: &kube::Client) {
    let gw: VpcNatGateway = serde_json::from_value(json!({
        "apiVersion": "kubeovn.io/v1", "kind": "VpcNatGateway",
        "metadata": {"name": GW},
        "spec": {"vpc": "vpc1", "subnet": "vpc1-lan", "lanIp": GW_LAN},
    }))
    .expect("gateway");
    Api::<VpcNatGateway>::all(client.clone())
        .create(&PostParams::default(), &gw)
        .await
        .expect("create gateway");
    let network_status = json!([
        {"name": "cilium", "interface": "eth0", "ips": ["10.0.1.5"], "default": true},
        {"name": "kube-system/vpc1-lan", "interface": LAN_IF, "ips": [GW_LAN]},
        {"name": "kube-system/ovn-vpc-external-network", "interface": EXT_IF, "ips": [GW_EXT]},
    ]);
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": POD, "namespace": "kube-system", "annotations": {
            "k8s.v1.cni.cncf.io/network-status": network_status.to_string(),
        }},
        "spec": {"containers": [{"name": "vpc-nat-gw", "image": "kube-ovn"}]},
    }))
    .expect("pod");
    Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), "kube-system")
        .create(&PostParams::default(), &pod)
        .await
        .expect("create pod");

    for (name, ip) in [("e1", EIP_1), ("e2", EIP_2)] {
        create::<IptablesEIP>(
            client,
            name,
            json!({"natGwDp": GW, "externalSubnet": "ovn-vpc-external-network"}),
            json!({"ip": ip, "nat": "dnat"}),
        )
        .await;
    }
    // Another gateway's EIP and rule: not this pod's business.
    create::<IptablesEIP>(
        client,
        "elsewhere",
        json!({"natGwDp": "gw2"}),
        json!({"ip": "172.19.0.99"}),
    )
    .await;
    create::<IptablesSnatRule>(
        client,
        "gw2-snat",
        json!({"eip": "elsewhere", "internalCIDR": "10.200.0.0/16"}),
        json!({"conditions": validated(true)}),
    )
    .await;

    create::<IptablesSnatRule>(
        client,
        "vpc",
        json!({"eip": "e1", "internalCIDR": "10.100.0.0/24"}),
        json!({"conditions": validated(true), "v4ip": EIP_1, "natGwDp": GW, "internalCIDR": "10.100.0.0/24"}),
    )
    .await;
    create::<IptablesDnatRule>(
        client,
        "web",
        json!({"eip": "e1", "externalPort": "8080", "protocol": "tcp", "internalIp": POD_A, "internalPort": "80"}),
        json!({"conditions": validated(true), "v4ip": EIP_1, "natGwDp": GW}),
    )
    .await;
    create::<IptablesDnatRule>(
        client,
        "web-dup",
        json!({"eip": "e1", "externalPort": "8080", "protocol": "tcp", "internalIp": POD_B, "internalPort": "80"}),
        json!({"conditions": validated(false), "natGwDp": GW}),
    )
    .await;
    create::<IptablesFIPRule>(
        client,
        "pod-b",
        json!({"eip": "e2", "internalIp": POD_B}),
        json!({"conditions": validated(true), "v4ip": EIP_2, "natGwDp": GW, "internalIp": POD_B}),
    )
    .await;
}

/// `status.ready` of each object this gateway answers for.
async fn readiness(client: &kube::Client) -> Vec<(String, Option<bool>)> {
    let mut out = Vec::new();
    for name in ["e1", "e2"] {
        let s = status_of::<IptablesEIP>(client, name).await;
        out.push((format!("eip/{name}"), s.and_then(|s| s["ready"].as_bool())));
    }
    let s = status_of::<IptablesSnatRule>(client, "vpc").await;
    out.push(("snat/vpc".into(), s.and_then(|s| s["ready"].as_bool())));
    for name in ["web", "web-dup"] {
        let s = status_of::<IptablesDnatRule>(client, name).await;
        out.push((format!("dnat/{name}"), s.and_then(|s| s["ready"].as_bool())));
    }
    let s = status_of::<IptablesFIPRule>(client, "pod-b").await;
    out.push(("fip/pod-b".into(), s.and_then(|s| s["ready"].as_bool())));
    out
}

fn all_ready_but_the_duplicate(r: &[(String, Option<bool>)]) -> bool {
    r.iter().all(|(name, ready)| {
        if name == "dnat/web-dup" {
            *ready != Some(true)
        } else {
            *ready == Some(true)
        }
    })
}

/// The role started again in `t`'s gateway netns, once it has programmed its table.
fn start_programmed(
    t: &Topology,
    kubeconfig: &std::path::Path,
    log: std::path::PathBuf,
) -> NatGwProcess {
    let mut role = NatGwProcess::start(&t.gw, GW, POD, kubeconfig, log);
    assert!(
        wait_for(Duration::from_secs(30), || {
            role.assert_running();
            role.log_text().contains("programmed")
        }),
        "{}",
        role.log_text()
    );
    role
}

#[test]
fn the_role_programs_validated_crs_writes_ready_follows_changes_and_rebuilds_after_restart() {
    let t = Topology::new();
    let kube = Kube::start();
    let client = kube.client.clone();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = kube.kubeconfig_in(&t.gw.name, dir.path());
    rt.block_on(setup(&client));
    let a_server = t.pod_a.serve("0.0.0.0:80");
    let _b = t.pod_b.serve("0.0.0.0:80");
    let _ext = t.ext.serve("0.0.0.0:9000");

    let mut role = NatGwProcess::start(&t.gw, GW, POD, &kubeconfig, dir.path().join("natgw.log"));
    let ready = wait_for(Duration::from_secs(60), || {
        role.assert_running();
        all_ready_but_the_duplicate(&rt.block_on(readiness(&client)))
    });
    assert!(
        ready,
        "status.ready: {:?}\n{}",
        rt.block_on(readiness(&client)),
        role.log_text()
    );
    let log = role.log_text();
    assert!(
        log.contains("lan=lan0") && log.contains("external=ext0"),
        "{log}"
    );
    assert!(log.contains("programmed"), "{log}");
    assert!(
        log.contains("dnat/web-dup not programmed: not valid"),
        "the refusal is said: {log}"
    );

    // Only `ready` was written: the controller's fields are intact, and the other
    // gateway's objects untouched.
    let snat = rt
        .block_on(status_of::<IptablesSnatRule>(&client, "vpc"))
        .expect("snat");
    assert_eq!(snat["v4ip"], EIP_1);
    assert_eq!(snat["conditions"][0]["type"], "Validated");
    let eip = rt
        .block_on(status_of::<IptablesEIP>(&client, "e1"))
        .expect("eip");
    assert_eq!(
        (eip["ip"].as_str(), eip["nat"].as_str()),
        (Some(EIP_1), Some("dnat"))
    );
    let other = rt
        .block_on(status_of::<IptablesSnatRule>(&client, "gw2-snat"))
        .expect("other");
    assert_ne!(other["ready"], true, "{other}");

    // The traffic the CRs describe.
    let c = t.ext.connect(&format!("{EIP_1}:8080")).expect("DNAT web");
    assert_eq!(c.seen_as, EXT_HOST);
    let c = t.pod_a.connect(&format!("{EXT_HOST}:9000")).expect("SNAT");
    assert_eq!(c.seen_as, EIP_1);
    let c = t
        .pod_b
        .connect(&format!("{EXT_HOST}:9000"))
        .expect("FIP out");
    assert_eq!(c.seen_as, EIP_2);
    let c = t
        .pod_a
        .connect(&format!("{EIP_2}:80"))
        .expect("hairpin to the FIP");
    assert_eq!(c.seen_as, GW_LAN);
    let table = t.gw.nft_text();
    assert!(
        !table.contains("10.200.0.0"),
        "another gateway's rule: {table}"
    );
    assert!(
        !table.contains("web-dup"),
        "a rule the controller refused: {table}"
    );

    // A CR deleted: its rule goes, and so does an open connection through it.
    let mut open = t.ext.connect(&format!("{EIP_1}:8080")).expect("DNAT web");
    rt.block_on(
        Api::<IptablesDnatRule>::all(client.clone()).delete("web", &DeleteParams::default()),
    )
    .expect("delete dnat");
    assert!(
        wait_for(Duration::from_secs(20), || {
            !t.gw.nft_text().contains("dport 8080")
                && t.gw.conntrack(&["dport=8080", "ESTABLISHED"]).is_empty()
        }),
        "the DNAT rule or its connection stays:\n{}",
        role.log_text()
    );
    assert!(t.ext.connect(&format!("{EIP_1}:8080")).is_err());
    assert!(
        open.echo("still there?").is_err(),
        "its conntrack entry is gone"
    );

    // The refused duplicate becomes valid: it is programmed and ready (pod-a's server is
    // stopped so that an answer can only come from pod-b).
    drop(a_server);
    rt.block_on(Api::<IptablesDnatRule>::all(client.clone()).patch_status(
        "web-dup",
        &PatchParams::apply(CONTROLLER).force(),
        &Patch::Apply(&json!({
            "apiVersion": "kubeovn.io/v1", "kind": "IptablesDnatRule",
            "metadata": {"name": "web-dup"},
            "status": {"conditions": validated(true), "natGwDp": GW},
        })),
    ))
    .expect("validate web-dup");
    let dup_ready = wait_for(Duration::from_secs(20), || {
        rt.block_on(status_of::<IptablesDnatRule>(&client, "web-dup"))
            .is_some_and(|s| s["ready"] == true)
    });
    assert!(dup_ready, "{}", role.log_text());
    let c = t
        .ext
        .connect(&format!("{EIP_1}:8080"))
        .expect("DNAT web-dup");
    assert_eq!(c.seen_as, EXT_HOST);
    let c2 = t
        .pod_a
        .connect(&format!("{EIP_1}:8080"))
        .expect("hairpin to web-dup");
    assert_eq!(c2.seen_as, GW_LAN);

    // Restart: the rules keep working while the role is down, and the new process
    // rebuilds the same table from the CRs.
    let before = t.gw.nft_text();
    let status = role.stop().expect("exit status");
    assert!(
        status.success(),
        "clean stop: {status}\n{}",
        role.log_text()
    );
    let c = t
        .pod_a
        .connect(&format!("{EXT_HOST}:9000"))
        .expect("SNAT while down");
    assert_eq!(c.seen_as, EIP_1);
    let mut role = start_programmed(&t, &kubeconfig, dir.path().join("natgw2.log"));
    assert_eq!(t.gw.nft_text(), before);
    let c = t
        .ext
        .connect(&format!("{EIP_1}:8080"))
        .expect("DNAT after restart");
    assert_eq!(c.seen_as, EXT_HOST);

    // A rule deleted while no role runs: the pod's netns, and its conntrack table, outlive the
    // process, so the next one cuts that rule's open connection at start and keeps the others'.
    let mut forward = t
        .ext
        .connect(&format!("{EIP_1}:8080"))
        .expect("DNAT web-dup");
    let mut fip = t.ext.connect(&format!("{EIP_2}:80")).expect("FIP in");
    let status = role.stop().expect("exit status");
    assert!(status.success(), "{}", role.log_text());
    rt.block_on(
        Api::<IptablesDnatRule>::all(client.clone()).delete("web-dup", &DeleteParams::default()),
    )
    .expect("delete web-dup while the role is down");
    assert_eq!(
        forward
            .echo("while down")
            .expect("the old rule works while down"),
        "while down"
    );
    let mut role = start_programmed(&t, &kubeconfig, dir.path().join("natgw3.log"));
    assert!(
        !t.gw.nft_text().contains("dport 8080"),
        "{}",
        t.gw.nft_text()
    );
    assert!(
        t.gw.conntrack(&["dport=8080", "ESTABLISHED"]).is_empty(),
        "the removed rule's connection is still tracked:\n{}",
        role.log_text()
    );
    assert!(
        forward.echo("after restart").is_err(),
        "the removed rule's connection still reaches the pod"
    );
    assert_eq!(
        fip.echo("kept")
            .expect("the FIP's connection survives the restart"),
        "kept"
    );
    let stopped = role.stop().expect("exit status");
    assert!(stopped.success(), "{}", role.log_text());
}
