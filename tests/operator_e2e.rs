//! `kube-ovn operator` end to end on kube-sim and real OVN: the seed's
//! manifests verbatim get addresses, annotations, IP CRs and logical switch
//! ports; deleting pods frees them; bad input gives Events or conditions and
//! allocates nothing; SIGKILL during a burst loses and leaks nothing.

mod operator_support;
mod support;

use ipnet::IpNet;
use kube::api::{Api, Patch, PatchParams};
use operator_support::*;
use serde_json::json;

const SEED_PROVIDER: &str = "kube-ovn-vpc-network.default.ovn";

fn in_cidr(ip: &str, cidr: &str) -> bool {
    let net: IpNet = cidr.parse().unwrap();
    net.contains(&ip.parse::<std::net::IpAddr>().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seed_manifests_get_addresses_ports_and_ip_crs_and_deleting_frees_them() {
    let mut c = Cluster::up(0).await;
    c.start_operator();
    c.apply(SEED_NAD).await;
    c.apply(SEED_VPC_SUBNET).await;
    c.apply(SEED_POD).await;

    // The seed's pod: an address in 10.100.0.0/16 and every annotation.
    let a = c.allocated("multi-network-pod", SEED_PROVIDER).await;
    let ann = |k: &str| a[&format!("{SEED_PROVIDER}.kubernetes.io/{k}")].clone();
    let ip = ann("ip_address");
    assert!(in_cidr(&ip, "10.100.0.0/16"), "address {ip}");
    assert_ne!(ip, "10.100.0.1", "the gateway is never handed out");
    assert_eq!(ann("cidr"), "10.100.0.0/16");
    assert_eq!(ann("gateway"), "10.100.0.1");
    assert_eq!(ann("logical_switch"), "subnet-secondary");
    assert_eq!(ann("logical_router"), "vpc-secondary");
    let mac = ann("mac_address");

    // The LSP in NB, as ovn-nbctl reads it.
    let lsp = format!("multi-network-pod.default.{SEED_PROVIDER}");
    assert_eq!(c.nb_pod_ports(), vec![lsp.clone()]);
    assert_eq!(c.lsp_addresses(&lsp), format!("{mac} {ip}"));
    let ls_ports = c.ovn.nbctl(&["lsp-list", "subnet-secondary"]);
    assert!(ls_ports.contains(&lsp), "{ls_ports}");
    assert!(
        ls_ports.contains("subnet-secondary-vpc-secondary"),
        "{ls_ports}"
    );
    let lrp = c.ovn.nbctl(&["lrp-list", "vpc-secondary"]);
    assert!(lrp.contains("vpc-secondary-subnet-secondary"), "{lrp}");
    let networks = c.ovn.nbctl(&[
        "get",
        "Logical_Router_Port",
        "vpc-secondary-subnet-secondary",
        "networks",
    ]);
    assert!(networks.contains("10.100.0.1/16"), "{networks}");
    let ids = c
        .ovn
        .nbctl(&["get", "Logical_Switch_Port", &lsp, "external_ids"]);
    for want in [
        "pod=\"default/multi-network-pod\"",
        "ls=subnet-secondary",
        "vendor=kube-ovn",
    ] {
        assert!(ids.contains(want), "{want} in {ids}");
    }

    // The IP CR.
    let ips = c.ip_crs().await;
    let cr = ips
        .iter()
        .find(|i| i.metadata.name.as_deref() == Some(lsp.as_str()))
        .expect("IP CR");
    assert_eq!(cr.spec.ip_address, ip);
    assert_eq!(cr.spec.mac_address, mac);
    assert_eq!(cr.spec.subnet, "subnet-secondary");

    // Status: subnet usage, conditions; VPC router and subnets.
    c.wait_used("subnet-secondary", 1).await;
    let subnet = c.subnet("subnet-secondary").await.unwrap();
    let status = subnet.status.unwrap();
    assert_eq!(status.cidr_block.as_deref(), Some("10.100.0.0/16"));
    assert_eq!(status.v4_available_ips, 65533 - 1);
    assert!(status
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.is_true()));
    let vpc: kube_ovn::api::vpc::Vpc = Api::all(c.client.clone())
        .get("vpc-secondary")
        .await
        .unwrap();
    let vs = vpc.status.unwrap();
    assert_eq!(vs.router.as_deref(), Some("vpc-secondary"));
    assert_eq!(vs.subnets, vec!["subnet-secondary".to_owned()]);

    // Re-reconciling an attached pod writes nothing: touch a label, the
    // annotations and the resourceVersion move only by our own touch.
    let before = c.pods().get("multi-network-pod").await.unwrap();
    let touched = c
        .pods()
        .patch(
            "multi-network-pod",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}})),
        )
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let after = c.pods().get("multi-network-pod").await.unwrap();
    assert_eq!(before.metadata.annotations, after.metadata.annotations);
    assert_eq!(
        touched.metadata.resource_version, after.metadata.resource_version,
        "the operator wrote to an attached pod"
    );
    assert_eq!(c.nb_pod_ports(), vec![lsp.clone()]);

    // Static IP, the seed's fragment (its NAD and subnet in their own VPC).
    c.apply(&nad_yaml("kube-ovn-network")).await;
    c.apply(&vpc_yaml("vpc-static")).await;
    c.apply(&subnet_yaml(
        "subnet-static",
        "vpc-static",
        "10.100.0.0/16",
        "kube-ovn-network.default.ovn",
    ))
    .await;
    c.apply(&pod_from_fragment("static-ip-pod", SEED_STATIC_IP))
        .await;
    let s = c
        .allocated("static-ip-pod", "kube-ovn-network.default.ovn")
        .await;
    assert_eq!(
        s["kube-ovn-network.default.ovn.kubernetes.io/ip_address"],
        "10.100.0.100"
    );

    // The JSON-list form with two networks: two attachments on two subnets.
    c.apply(&nad_yaml("kube-ovn-network-1")).await;
    c.apply(&nad_yaml("kube-ovn-network-2")).await;
    c.apply(&vpc_yaml("vpc-multi")).await;
    c.apply(&subnet_yaml(
        "subnet-n1",
        "vpc-multi",
        "10.201.0.0/24",
        "kube-ovn-network-1.default.ovn",
    ))
    .await;
    c.apply(&subnet_yaml(
        "subnet-n2",
        "vpc-multi",
        "10.202.0.0/24",
        "kube-ovn-network-2.default.ovn",
    ))
    .await;
    c.apply(&pod_from_fragment("two-nets", SEED_MULTI_PROVIDERS))
        .await;
    let one = c
        .allocated("two-nets", "kube-ovn-network-1.default.ovn")
        .await;
    let two = c
        .allocated("two-nets", "kube-ovn-network-2.default.ovn")
        .await;
    assert!(in_cidr(
        &one["kube-ovn-network-1.default.ovn.kubernetes.io/ip_address"],
        "10.201.0.0/24"
    ));
    assert!(in_cidr(
        &two["kube-ovn-network-2.default.ovn.kubernetes.io/ip_address"],
        "10.202.0.0/24"
    ));
    assert_eq!(
        one["kube-ovn-network-1.default.ovn.kubernetes.io/logical_switch"],
        "subnet-n1"
    );
    assert_eq!(
        two["kube-ovn-network-2.default.ovn.kubernetes.io/logical_switch"],
        "subnet-n2"
    );
    let ports = c.nb_pod_ports();
    assert!(
        ports.contains(&"two-nets.default.kube-ovn-network-1.default.ovn".to_owned()),
        "{ports:?}"
    );
    assert!(
        ports.contains(&"two-nets.default.kube-ovn-network-2.default.ovn".to_owned()),
        "{ports:?}"
    );
    assert_eq!(ports.len(), 4);

    // Deleting the pods frees ports, IP CRs and addresses.
    for pod in ["multi-network-pod", "static-ip-pod", "two-nets"] {
        c.delete_pod(pod).await;
    }
    c.eventually("every pod port gone from NB", || async {
        c.nb_pod_ports().is_empty().then_some(())
    })
    .await;
    c.eventually("every IP CR gone", || async {
        c.ip_crs().await.is_empty().then_some(())
    })
    .await;
    for subnet in [
        "subnet-secondary",
        "subnet-static",
        "subnet-n1",
        "subnet-n2",
    ] {
        c.wait_used(subnet, 0).await;
    }
    let metrics = c.metrics().await;
    assert!(
        metrics.contains("kube_ovn_pod_attachments_total 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kube_ovn_pod_attachments_released_total 4"),
        "{metrics}"
    );

    // The freed static address can be taken again.
    c.apply(&pod_from_fragment("static-again", SEED_STATIC_IP))
        .await;
    let s = c
        .allocated("static-again", "kube-ovn-network.default.ovn")
        .await;
    assert_eq!(
        s["kube-ovn-network.default.ovn.kubernetes.io/ip_address"],
        "10.100.0.100"
    );
}
