//! Subnet and NAD specs as a user writes them, end to end on kube-sim and real OVN: what is
//! refused says why and applies nothing, what this mode does not act on says so in a
//! condition and an Event, and what the controller derives from a Subnet reaches its pods.

mod operator_support;
mod support;

use kube::api::{Api, Patch, PatchParams};
use kube_ovn::api::condition::{Condition, ConditionStatus};
use kube_ovn::api::subnet::Subnet;
use operator_support::*;
use serde_json::json;

/// Waits for the condition `type_` of subnet `name` with `reason`.
async fn subnet_condition(c: &Cluster, name: &str, type_: &str, reason: &str) -> Condition {
    c.eventually(&format!("condition {type_}/{reason} on {name}"), || async {
        c.subnet(name)
            .await?
            .status?
            .conditions
            .into_iter()
            .find(|x| x.type_ == type_ && x.reason == reason)
    })
    .await
}

/// Names of the logical switches in NB.
fn switches(c: &Cluster) -> Vec<String> {
    c.ovn
        .nbctl(&["--bare", "--columns=name", "list", "Logical_Switch"])
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_and_unsupported_subnet_fields_say_so() {
    let mut c = Cluster::up(0).await;
    c.start_operator();
    c.apply(SEED_NAD).await;
    c.apply(SEED_VPC_SUBNET).await;
    c.apply(&nad_yaml("hb-net")).await;

    // Host bits set: invalid, nothing applied, the message says what to write.
    c.apply(&subnet_yaml(
        "host-bits",
        "vpc-secondary",
        "10.160.0.5/24",
        "hb-net.default.ovn",
    ))
    .await;
    let cond = subnet_condition(&c, "host-bits", "Validated", "InvalidCidr").await;
    assert_eq!(
        cond.message,
        "subnet \"host-bits\": CIDR 10.160.0.5/24 has host bits set; write 10.160.0.0/24 (or a longer prefix) instead"
    );
    let event = c.event("host-bits", "InvalidCidr").await;
    assert_eq!(event, cond.message);

    // natOutgoing and u2oInterconnection: the subnet works, a condition and an Event say
    // these fields do nothing here and what to use instead.
    c.apply(&nad_yaml("nat-net")).await;
    c.apply(&format!(
        "{}  natOutgoing: true\n  u2oInterconnection: true\n",
        subnet_yaml(
            "with-nat",
            "vpc-secondary",
            "10.161.0.0/24",
            "nat-net.default.ovn"
        )
    ))
    .await;
    let cond = subnet_condition(&c, "with-nat", "Unsupported", "UnsupportedFields").await;
    assert!(
        cond.message
            .starts_with("subnet with-nat works without these fields: spec.natOutgoing: "),
        "{}",
        cond.message
    );
    for words in [
        "VpcNatGateway",
        "IptablesSnatRule",
        "spec.u2oInterconnection: ",
    ] {
        assert!(cond.message.contains(words), "{words} in {}", cond.message);
    }
    let ready = subnet_condition(&c, "with-nat", "Ready", "Ready").await;
    assert_eq!(ready.status, ConditionStatus::True);
    let event = c.event("with-nat", "UnsupportedFields").await;
    assert!(event.starts_with("spec.natOutgoing: "), "{event}");

    let nb = switches(&c);
    assert!(nb.contains(&"with-nat".to_owned()), "{nb:?}");
    assert!(!nb.contains(&"host-bits".to_owned()), "{nb:?}");

    // Fixing the CIDR makes it valid and applied.
    let subnets: Api<Subnet> = Api::all(c.client.clone());
    subnets
        .patch(
            "host-bits",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"cidr": "10.160.0.0/24"}})),
        )
        .await
        .unwrap();
    subnet_condition(&c, "host-bits", "Validated", "Valid").await;
    c.eventually("host-bits in NB", || async {
        switches(&c).contains(&"host-bits".to_owned()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_nad_without_provider_is_reported_on_the_nad_and_its_pods() {
    let mut c = Cluster::up(0).await;
    c.start_operator();
    c.apply(SEED_VPC_SUBNET).await;
    c.apply("apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\nmetadata:\n  name: no-provider\n  namespace: default\nspec:\n  config: '{\"cniVersion\": \"0.3.1\", \"type\": \"kube-ovn\", \"server_socket\": \"/run/openvswitch/kube-ovn-daemon.sock\"}'\n").await;
    let expected = "kube-ovn config has no \"provider\"; add \"provider\": \"no-provider.default.ovn\" (<nad>.<namespace>.ovn) to its spec.config";
    let on_nad = c.event("no-provider", "MissingProvider").await;
    assert_eq!(
        on_nad,
        format!(
            "NetworkAttachmentDefinition default/no-provider: NAD default/no-provider: {expected}"
        )
    );
    c.apply(&pod_yaml("uses-it", "default/no-provider")).await;
    let on_pod = c.event("uses-it", "MissingProvider").await;
    assert_eq!(
        on_pod,
        format!(
            "pod default/uses-it: network default/no-provider: NAD default/no-provider: {expected}"
        )
    );
    assert!(c.nb_pod_ports().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ip_crs_and_vpc_status_read_as_upstream() {
    let mut c = Cluster::up(0).await;
    c.start_operator();
    c.apply(&nad_yaml("dual-net")).await;
    c.apply(&vpc_yaml("vpc-dual")).await;
    c.apply(&subnet_yaml(
        "dual",
        "vpc-dual",
        "10.162.0.0/24,fd00:162::/64",
        "dual-net.default.ovn",
    ))
    .await;
    c.apply(&format!(
        "{}  nodeName: node1\n",
        pod_yaml("dual-pod", "default/dual-net")
    ))
    .await;
    let a = c.allocated("dual-pod", "dual-net.default.ovn").await;
    assert_eq!(
        a["dual-net.default.ovn.kubernetes.io/ip_address"],
        "10.162.0.2,fd00:162::2"
    );
    assert_eq!(
        a["dual-net.default.ovn.kubernetes.io/gateway"],
        "10.162.0.1,fd00:162::1"
    );
    // Both gateways on the router port.
    assert_eq!(
        c.ovn
            .nbctl(&["get", "Logical_Router_Port", "vpc-dual-dual", "networks"]),
        r#"["10.162.0.1/24", "fd00:162::1/64"]"#
    );

    // `kubectl get ips` shows upstream's columns; the labels select as upstream's do.
    c.eventually("IP CR", || async {
        (c.ip_crs().await.len() == 1).then_some(())
    })
    .await;
    let table = c.kubectl(&["get", "ips"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "V4IP", "V6IP", "MAC", "NODE", "SUBNET"],
        "{table}"
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        row,
        [
            "dual-pod.default.dual-net.default.ovn",
            "10.162.0.2",
            "fd00:162::2",
            &a["dual-net.default.ovn.kubernetes.io/mac_address"],
            "node1",
            "dual"
        ],
        "{table}"
    );
    for selector in [
        "ovn.kubernetes.io/subnet=dual",
        "ovn.kubernetes.io/node-name=node1",
        "ovn.kubernetes.io/ip_reserved=false",
        "dual",
    ] {
        let names = c.kubectl(&["get", "ips", "-l", selector, "-o", "name"]);
        assert_eq!(
            names, "ip.kubeovn.io/dual-pod.default.dual-net.default.ovn",
            "{selector}"
        );
    }

    // Vpc status: the router, its subnets, standby once the router exists, conditions.
    let vpcs: Api<kube_ovn::api::vpc::Vpc> = Api::all(c.client.clone());
    let status = c
        .eventually("vpc-dual status with its subnet", || async {
            let s = vpcs.get("vpc-dual").await.ok()?.status?;
            (s.subnets == ["dual"]).then_some(s)
        })
        .await;
    assert_eq!(status.router.as_deref(), Some("vpc-dual"));
    assert!(status.standby);
    let ready = status
        .conditions
        .iter()
        .find(|x| x.type_ == "Ready")
        .unwrap();
    assert_eq!(
        (ready.status, ready.message.as_str()),
        (ConditionStatus::True, "logical router vpc-dual")
    );
    let table = c.kubectl(&["get", "vpc", "vpc-dual"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "ENABLEEXTERNAL",
            "ENABLEBFD",
            "STANDBY",
            "SUBNETS",
            "EXTRAEXTERNALSUBNETS",
            "NAMESPACES",
            "DEFAULTSUBNET"
        ],
        "{table}"
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        row[..5],
        ["vpc-dual", "false", "false", "true", "[dual]"],
        "{table}"
    );

    // A Vpc field that does nothing here says so.
    c.apply("apiVersion: kubeovn.io/v1\nkind: Vpc\nmetadata:\n  name: vpc-ext\nspec:\n  enableExternal: true\n").await;
    let m = c.event("vpc-ext", "UnsupportedFields").await;
    assert!(
        m.starts_with("spec.enableExternal/extraExternalSubnets: ") && m.contains("VpcNatGateway"),
        "{m}"
    );
}
