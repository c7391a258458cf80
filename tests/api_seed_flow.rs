//! The seed's manifests through the public API the way the operator and the node
//! daemon use it: parse the NAD, Vpc and Subnet, plan the pod's attachments,
//! record an allocation as annotations, and read it back as the daemon would.

use std::collections::BTreeMap;

use kube_ovn::api::allocation::{attachment_qos, AllocatedAttachment};
use kube_ovn::api::annotations::{ProviderKey, NETWORKS};
use kube_ovn::api::nad::NetworkAttachmentDefinition;
use kube_ovn::api::subnet::Subnet;
use kube_ovn::api::vpc::Vpc;
use kube_ovn::operator::attachment::{plan_pod_attachments, PodAttachmentInput, SubnetIndex};

const SEED_NAD: &str = include_str!("../hack/demo/seed/01-nad.yaml");
const SEED_VPC_SUBNET: &str = include_str!("../hack/demo/seed/02-vpc-subnet.yaml");
const SEED_POD: &str = include_str!("../hack/demo/seed/03-multi-network-pod.yaml");
const SEED_QOS: &str = include_str!("../hack/demo/seed/fragment-qos.yaml");

#[test]
fn seed_pod_is_planned_allocated_and_readable_by_the_daemon() {
    let nad: NetworkAttachmentDefinition = serde_yaml::from_str(SEED_NAD).unwrap();
    let mut docs = SEED_VPC_SUBNET.split("---\n");
    let vpc: Vpc = serde_yaml::from_str(docs.next().unwrap()).unwrap();
    let subnet: Subnet = serde_yaml::from_str(docs.next().unwrap()).unwrap();
    let pod: k8s_openapi::api::core::v1::Pod = serde_yaml::from_str(SEED_POD).unwrap();
    let annotations = pod.metadata.annotations.clone().unwrap();
    assert_eq!(annotations[NETWORKS], "default/kube-ovn-vpc-network");

    let subnets = SubnetIndex::new([&subnet]);
    let lookup = |ns: &str, name: &str| {
        (nad.metadata.namespace.as_deref() == Some(ns)
            && nad.metadata.name.as_deref() == Some(name))
        .then(|| nad.spec.config.clone())
    };
    let input = PodAttachmentInput {
        name: pod.metadata.name.as_deref().unwrap(),
        namespace: pod.metadata.namespace.as_deref().unwrap_or("default"),
        annotations: &annotations,
    };
    let plans = plan_pod_attachments(input, lookup, &subnets)
        .into_result()
        .unwrap();
    let plan = &plans[0];
    assert_eq!(plan.vpc.as_deref(), vpc.metadata.name.as_deref());
    assert_eq!(
        plan.lsp_name,
        "multi-network-pod.default.kube-ovn-vpc-network.default.ovn"
    );

    // What the controller writes once IPAM committed 10.100.0.2.
    let allocation = AllocatedAttachment {
        ips: vec!["10.100.0.2".parse().unwrap()],
        mac: "0a:58:0a:64:00:02".parse().unwrap(),
        cidrs: plan.cidrs.clone(),
        gateways: vec![subnet.spec.gateway.as_deref().unwrap().parse().unwrap()],
        logical_switch: plan.subnet.clone(),
        logical_router: plan.vpc.clone(),
        mtu: plan.mtu,
    };
    let mut annotations = annotations.clone();
    annotations.extend(allocation.to_annotations(plan.key.as_str()));
    annotations.extend(kube_ovn_qos());

    // What the daemon reads for net1.
    let read = AllocatedAttachment::from_annotations(&annotations, plan.key.as_str())
        .unwrap()
        .expect("allocated");
    assert_eq!(read.addresses()[0].to_string(), "10.100.0.2/16");
    assert_eq!(
        read.gateway_for(read.ips[0]).unwrap().to_string(),
        "10.100.0.1"
    );
    assert_eq!(
        annotations[&plan.annotation(ProviderKey::LogicalRouter)],
        "vpc-secondary"
    );
    let qos = attachment_qos(&annotations, plan.key.as_str()).unwrap();
    assert_eq!(
        (qos.ingress_mbps, qos.egress_mbps),
        (Some(1000), Some(1000))
    );

    // Re-planning an allocated pod is stable: the recorded address is the request.
    let input = PodAttachmentInput {
        name: input.name,
        namespace: input.namespace,
        annotations: &annotations,
    };
    let again = plan_pod_attachments(input, lookup, &subnets)
        .into_result()
        .unwrap();
    let requested: Vec<_> = again[0].ips.iter().map(|r| r.address).collect();
    assert_eq!(requested, read.ips);
    assert_eq!(again[0].subnet, plan.subnet);
}

fn kube_ovn_qos() -> BTreeMap<String, String> {
    #[derive(serde::Deserialize)]
    struct Fragment {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    }
    let fragment: Fragment = serde_yaml::from_str(SEED_QOS).unwrap();
    fragment.metadata.annotations.unwrap()
}
