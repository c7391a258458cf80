//! Kubernetes-facing types: CRDs (`kubeovn.io/v1`, `operator.kubeovn.io/v1alpha1`),
//! NetworkAttachmentDefinition, annotation keys and network-selection parsing.
//! No I/O lives here.

pub mod annotations;
pub mod mac;
pub mod nad;
pub mod names;
pub mod selection;
