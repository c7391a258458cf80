//! Kubernetes-facing types: CRDs (`kubeovn.io/v1`, `operator.kubeovn.io/v1alpha1`),
//! NetworkAttachmentDefinition, annotation keys and network-selection parsing.
//! No I/O lives here.
//!
//! - `annotations`: every annotation key and the `Provider` newtype;
//!   `allocation`: the per-attachment annotations the operator writes and the
//!   node daemon reads (plus QoS and routes); `selection`: the networks
//!   annotation; `network_status`: Multus's result annotation.
//! - `attachment_id`: who an attachment is, and the port, IPAM and IP CR names derived
//!   from it (used by the operator and the node role alike).
//! - `nad`: NetworkAttachmentDefinition and the kube-ovn NAD config; `multi_network_policy`:
//!   the community's MultiNetworkPolicy (its CRD is not ours).
//! - CRDs: `vpc`, `subnet`, `ip`, `ippool`, `security_group`, `nat` (VpcNatGateway
//!   and the Iptables* rules), `kubeovn` (the operator's own); `condition` for
//!   their status conditions; `crds` for `kube-ovn crd`. `ipamclaim`: the community
//!   IPAMClaim CRD, shipped in its own file.
//! - Small value types and rules: `mac`, `names`, `schema`.

pub mod allocation;
pub mod annotations;
pub mod attachment_id;
pub mod condition;
pub mod crds;
pub mod ip;
pub mod ipamclaim;
pub mod ippool;
pub mod kubeovn;
pub mod mac;
pub mod multi_network_policy;
pub mod nad;
pub mod names;
pub mod nat;
pub mod network_status;
pub mod schema;
pub mod security_group;
#[cfg(test)]
pub(crate) mod seed;
pub mod selection;
pub mod subnet;
pub mod vpc;

pub use crds::{crds, crds_yaml};
