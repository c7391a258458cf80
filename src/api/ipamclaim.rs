//! The community `IPAMClaim` CRD (`k8s.cni.cncf.io/v1alpha1`, namespaced, from
//! k8snetworkplumbingwg/ipamclaims): a persistent address for one interface of a workload
//! whose pods come and go (KubeVirt VMs). A network selection element names it with
//! `ipam-claim-reference`; the address then belongs to the claim, not to the pod, and is
//! written to `status.ips`. Its schema is shipped apart from ours
//! (`crds/ipamclaims.k8s.cni.cncf.io.yaml`, [`ipamclaim_crd_yaml`]): clusters that run
//! KubeVirt or OVN-Kubernetes may have installed it already.

use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A persistent address for one pod interface.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "k8s.cni.cncf.io",
    version = "v1alpha1",
    kind = "IPAMClaim",
    plural = "ipamclaims",
    singular = "ipamclaim",
    namespaced,
    status = "IpamClaimStatus",
    derive = "Default",
    derive = "PartialEq",
    doc = "A persistent IP allocation for one interface of a workload."
)]
pub struct IpamClaimSpec {
    /// The network name the allocation is for.
    #[serde(default)]
    pub network: String,
    /// The pod interface name the allocation is for.
    #[serde(default)]
    pub interface: String,
}

/// What the claim holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
// Fields written by newer implementations (conditions) survive.
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct IpamClaimStatus {
    /// The addresses, with the subnet's prefix (`10.100.0.5/16`).
    #[serde(default)]
    pub ips: Vec<String>,
    /// The pod that holds the claim now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_pod: Option<OwnerPod>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OwnerPod {
    pub name: String,
}

/// The CRD as `crds/ipamclaims.k8s.cni.cncf.io.yaml` holds it.
pub fn ipamclaim_crd_yaml() -> Result<String, serde_yaml::Error> {
    Ok(format!(
        "---\n{}",
        serde_yaml::to_string(&IPAMClaim::crd())?
    ))
}
