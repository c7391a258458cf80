//! The IPAM error type: every failure names the subnet and the address (or
//! key, MAC, pool) it is about, so it can go straight into a pod Event.
//! Addresses, networks and MACs are carried typed, as the caller gave them.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use super::addr::Family;
use crate::api::mac::MacAddr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error("subnet {subnet:?} is not known to IPAM")]
    UnknownSubnet { subnet: String },

    #[error("subnet {subnet:?} has no IP pool {pool:?}")]
    UnknownPool { subnet: String, pool: String },

    #[error("subnet {subnet:?}: invalid spec: {reason}")]
    InvalidSubnet { subnet: String, reason: String },

    #[error("subnet {subnet:?}: {first} and {second} are both {family} addresses; at most one per family")]
    SecondAddress {
        subnet: String,
        family: Family,
        first: IpAddr,
        second: IpAddr,
    },

    #[error(
        "subnet {subnet:?}: {ip} is not an {family} address of this subnet (it has {})",
        comma_separated(.cidrs)
    )]
    WrongFamily {
        subnet: String,
        ip: IpAddr,
        family: Family,
        cidrs: Vec<IpNet>,
    },

    #[error("subnet {subnet:?}: {ip}/{given} has prefix /{given} but the subnet is {cidr}")]
    PrefixMismatch {
        subnet: String,
        ip: IpAddr,
        given: u8,
        cidr: IpNet,
    },

    #[error("subnet {subnet:?}: {ip} is outside the usable range of {cidr}")]
    OutOfRange {
        subnet: String,
        ip: IpAddr,
        cidr: IpNet,
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

    #[error(
        "subnet {subnet:?}: no free {family} address left in {}",
        scope(.cidr, .pool)
    )]
    Full {
        subnet: String,
        family: Family,
        cidr: IpNet,
        /// The pool that ran dry; `None`: the subnet's general range.
        pool: Option<String>,
    },

    #[error("subnet {subnet:?}: bad MAC {mac}: {reason}")]
    BadMac {
        subnet: String,
        mac: MacAddr,
        reason: &'static str,
    },

    #[error("subnet {subnet:?}: no free MAC found for {key:?} after 64 attempts")]
    NoFreeMac { subnet: String, key: String },

    #[error("subnet {subnet:?}: MAC {mac} is held by {holder:?}")]
    MacHeldBy {
        subnet: String,
        mac: MacAddr,
        holder: String,
    },

    #[error(
        "subnet {subnet:?}: key {key:?} already holds {} in subnet {held_subnet:?}, which differs from the request ({requested})",
        comma_separated(.held)
    )]
    KeyMismatch {
        subnet: String,
        key: String,
        /// Shared with the held allocation.
        held_subnet: Arc<str>,
        held: Vec<IpAddr>,
        requested: Requested,
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

/// What a repeated request asks for that the key's allocation does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requested {
    Subnet(String),
    Address(IpAddr),
    Mac(MacAddr),
}

impl fmt::Display for Requested {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Requested::Subnet(subnet) => write!(f, "subnet {subnet:?}"),
            Requested::Address(ip) => write!(f, "{ip}"),
            Requested::Mac(mac) => write!(f, "MAC {mac}"),
        }
    }
}

/// Where addresses ran out: a named pool, or the subnet's CIDR.
fn scope(cidr: &IpNet, pool: &Option<String>) -> String {
    match pool {
        Some(pool) => format!("pool {pool:?}"),
        None => cidr.to_string(),
    }
}

/// `a,b`: how annotations and messages list addresses and CIDRs.
pub(crate) fn comma_separated<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}
