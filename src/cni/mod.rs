//! CNI plugin mode: spec types and versions, and the thin shim Multus execs as
//! `/opt/cni/bin/kube-ovn`. The shim owns no state; the node daemon does the work.
//!
//! `config` parses stdin and env, `protocol` is the JSON spoken with the daemon, `client` carries
//! it over the unix socket, `result` renders the answer per spec version, `plugin` ties them up.

pub mod client;
pub mod config;
pub mod error;
pub mod plugin;
pub mod protocol;
pub mod result;
pub mod version;

pub use error::{CniError, ErrorCode};
