//! kube-ovn: Kube-OVN's secondary-network mode as one binary.
//!
//! Each module is one concern (the layout is in ../shared/ARCHITECTURE.md and the README); `main.rs` only
//! dispatches to them. Nothing here touches the primary (eth0) network.

pub mod api;
pub mod cni;
pub mod ipam;
pub mod logging;
pub mod natgw;
pub mod node;
pub mod olm;
pub mod operator;
pub mod ovn;
pub mod ovsdb;

/// The version printed by `kube-ovn version` and reported by every role.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
