//! The CustomResourceDefinitions kube-ovn owns, as `kube-ovn crd` prints them and
//! `crds/kube-ovn.yaml` holds. The NetworkAttachmentDefinition CRD is Multus's and
//! is not among them.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use super::ip::IP;
use super::ippool::IPPool;
use super::kubeovn::KubeOvn;
use super::nat::{IptablesDnatRule, IptablesEIP, IptablesFIPRule, IptablesSnatRule, VpcNatGateway};
use super::security_group::SecurityGroup;
use super::subnet::Subnet;
use super::vpc::Vpc;

/// Every CRD kube-ovn owns, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        KubeOvn::crd(),
        Vpc::crd(),
        Subnet::crd(),
        IP::crd(),
        IPPool::crd(),
        SecurityGroup::crd(),
        VpcNatGateway::crd(),
        IptablesEIP::crd(),
        IptablesFIPRule::crd(),
        IptablesDnatRule::crd(),
        IptablesSnatRule::crd(),
    ]
}

/// All CRDs as one multi-document YAML stream (what `kube-ovn crd` prints).
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}
