//! IP address management: the pure allocator and its sled store.
//!
//! - `addr`: address arithmetic and the interval set. MACs are
//!   `crate::api::mac::MacAddr`, the crate's one MAC type.
//! - `subnet`: `SubnetSpec` (as the CRDs write it) and its parsed layout.
//! - `allocation`: what callers ask (`AllocationRequest`, typed addresses and
//!   MAC) and get back (`Allocation`, `Allocated`, reports).
//! - `allocator`: the pure allocator and its policy (no I/O).
//! - `state`: per-subnet state: holders, free sets, cursors.
//! - `static_rules`: the one check of static addresses and requested MACs.
//! - `restore`: rebuilding from stored records; the consistency check (tests
//!   and benchmarks only: `cfg(test)` or the `test-support` feature).
//! - `index`: the reverse indexes (who holds an address, a MAC).
//! - `freeset`: the free addresses of a pool (bitmap or intervals).
//! - `store`: `Ipam`, the allocator behind a lock, persisted in sled with
//!   group commit; what the operator holds.
//! - `error`: `IpamError`.

mod addr;
mod allocation;
mod allocator;
mod error;
mod freeset;
mod index;
mod restore;
mod state;
mod static_rules;
mod store;
mod subnet;

pub use addr::Family;
pub use allocation::{
    Allocated, Allocation, AllocationRequest, Conflict, CursorRecord, FamilyUsage, Ips,
    ReconcileReport, Release, Released, SubnetChange, SubnetView, Usage,
};
pub use allocator::Allocator;
pub use error::{IpamError, Requested};
pub use store::{CommitMode, CommitStats, Ipam, OpenReport};
pub use subnet::{gateway_mac, SubnetSpec};
