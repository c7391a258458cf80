//! The IPAM error type: every failure names the subnet and the address (or
//! key, MAC, pool) it is about, so it can go straight into a pod Event.

use std::net::IpAddr;

use super::addr::{Family, MacAddr};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error("subnet {subnet:?} is not known to IPAM")]
    UnknownSubnet { subnet: String },

    #[error("subnet {subnet:?} has no IP pool {pool:?}")]
    UnknownPool { subnet: String, pool: String },

    #[error("subnet {subnet:?}: invalid spec: {reason}")]
    InvalidSubnet { subnet: String, reason: String },

    #[error("subnet {subnet:?}: {input:?} is not an IP address")]
    BadAddress { subnet: String, input: String },

    #[error("subnet {subnet:?}: {ip} is not an {family} address of this subnet (it has {cidrs})")]
    WrongFamily {
        subnet: String,
        ip: IpAddr,
        family: Family,
        cidrs: String,
    },

    #[error("subnet {subnet:?}: {input:?} has prefix /{given} but the subnet is {cidr}")]
    PrefixMismatch {
        subnet: String,
        input: String,
        given: u8,
        cidr: String,
    },

    #[error("subnet {subnet:?}: {ip} is outside the usable range of {cidr}")]
    OutOfRange {
        subnet: String,
        ip: IpAddr,
        cidr: String,
    },

    #[error("subnet {subnet:?}: {ip} is in excludeIps")]
    Excluded { subnet: String, ip: IpAddr },

    #[error("subnet {subnet:?}: {ip} is the gateway")]
    IsGateway { subnet: String, ip: IpAddr },

    #[error("subnet {subnet:?}: {ip} is held by {holder:?}")]
    HeldBy {
        subnet: String,
        ip: IpAddr,
        holder: String,
    },

    #[error("subnet {subnet:?}: {ip} is not in IP pool {pool:?}")]
    NotInPool {
        subnet: String,
        pool: String,
        ip: IpAddr,
    },

    #[error("subnet {subnet:?}: no free {family} address left in {scope}")]
    Full {
        subnet: String,
        family: Family,
        /// The CIDR, or `pool <name>` when a pool ran dry.
        scope: String,
    },

    #[error("subnet {subnet:?}: bad MAC {mac:?}: {reason}")]
    BadMac {
        subnet: String,
        mac: String,
        reason: String,
    },

    #[error("subnet {subnet:?}: MAC {mac} is held by {holder:?}")]
    MacHeldBy {
        subnet: String,
        mac: MacAddr,
        holder: String,
    },

    #[error("subnet {subnet:?}: key {key:?} already holds {held}, which differs from the request ({requested})")]
    KeyMismatch {
        subnet: String,
        key: String,
        held: String,
        requested: String,
    },

    #[error("subnet {subnet:?}: {count} address(es) in use, cannot {action}")]
    InUse {
        subnet: String,
        count: usize,
        action: String,
    },

    #[error("IPAM store: {reason}")]
    Store { reason: String },
}

impl IpamError {
    pub(crate) fn store(context: &str, err: impl std::fmt::Display) -> Self {
        IpamError::Store {
            reason: format!("{context}: {err}"),
        }
    }
}
