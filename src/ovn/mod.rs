//! OVN/OVS in domain words, the one layer that speaks OVSDB (`crate::ovsdb`): roles call
//! these operations and never build rows or operations themselves.
//!
//! `Northbound` (operator) speaks to OVN_Northbound, `Vswitch` (node) to the node's
//! Open_vSwitch database, `sb` takes a removed node's chassis out of OVN_Southbound;
//! `external_ids` holds every key we write on their rows. Every
//! operation is one transaction planned against the client's cache, so ensuring the same
//! thing twice writes nothing the second time; inserts are guarded (schema indexes or `wait`
//! operations) so that concurrent writers cannot duplicate a named object.
//!
//! `daemons` supervises the OVN/OVS programs we embed. It lives here, not in a role, because
//! what it knows is OVN/OVS's (the programs' command lines, run directories, database
//! schemas) and not one role's: the node role runs its chassis from `ChassisLayout`;
//! `CentralLayout` (NB, SB, northd) is OVN central, which no role embeds yet (the `KubeOvn`
//! spec's `ovnCentral.mode: Embedded` means the operator, not the node).

pub mod daemons;
pub mod external_ids;
pub mod nb;
pub mod sb;
pub mod vswitch;

pub use nb::{LspSpec, NbTxn, Northbound};
pub use vswitch::{QosKind, Vswitch};

use crate::ovsdb;

/// Attempts when a concurrent writer makes a planned transaction fail.
const ATTEMPTS: usize = 3;

/// An `external_ids` (or `options`) column.
type Map = std::collections::BTreeMap<String, String>;

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
