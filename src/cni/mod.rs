//! CNI plugin mode: spec types and versions, and the thin shim Multus execs as
//! `/opt/cni/bin/kube-ovn`. The shim owns no state; the node daemon does the work.

pub mod error;
pub mod plugin;
pub mod version;

pub use error::{CniError, ErrorCode};
