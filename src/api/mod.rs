//! Kubernetes-facing types: CRDs (`kubeovn.io/v1`, `operator.kubeovn.io/v1alpha1`),
//! NetworkAttachmentDefinition, annotation keys and network-selection parsing.
//! No I/O lives here.

pub mod allocation;
pub mod annotations;
pub mod condition;
pub mod crds;
pub mod ip;
pub mod ippool;
pub mod kubeovn;
pub mod mac;
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
