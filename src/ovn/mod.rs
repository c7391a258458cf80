//! OVN/OVS operations in domain words (routers, switches, ports, QoS), each one
//! transaction, and supervision of the OVN/OVS daemons.
//!
//! `Northbound` (operator) speaks to OVN_Northbound, `Vswitch` (node) to the
//! node's Open_vSwitch database. Every operation plans its writes against the
//! client's cache, so ensuring the same thing twice writes nothing the second
//! time; inserts are guarded (schema indexes or `wait` operations) so that
//! concurrent writers cannot duplicate a named object.

pub mod daemons;
pub mod external_ids;
pub mod nb;
pub mod vswitch;

pub use nb::{LspSpec, NbTxn, Northbound};
pub use vswitch::{QosKind, Vswitch};

use crate::ovsdb;

/// What an OVN/OVS operation could not do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Ovsdb(#[from] ovsdb::Error),
    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },
    #[error("{kind} {name:?}: {reason}")]
    Invalid {
        kind: &'static str,
        name: String,
        reason: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// True for the failures a concurrent writer causes (our guard `wait` or a
/// unique index tripped): replanning against a fresher cache fixes them.
pub(crate) fn is_conflict(e: &Error) -> bool {
    match e {
        Error::Ovsdb(ovsdb::Error::Operation { op, error, .. }) => {
            op == "wait" && error == "timed out"
        }
        Error::Ovsdb(ovsdb::Error::Transaction(msg)) => msg.contains("constraint violation"),
        _ => false,
    }
}
