//! IP address management: the pure allocator and its sled store.
//!
//! - `addr`: address arithmetic, the interval set, `MacAddr`.
//! - `subnet`: `SubnetSpec` (as the CRDs write it) and its parsed layout.
//! - `allocator`: the pure allocator (no I/O).
//! - `index`: its reverse indexes (who holds an address, a MAC).
//! - `freeset`: the free addresses of a pool (bitmap or intervals).
//! - `store`: `Ipam`, the allocator behind a lock, persisted in sled with
//!   group commit; what the operator holds.
//! - `error`: `IpamError`.

mod addr;
mod allocator;
mod error;
mod freeset;
mod index;
mod store;
mod subnet;

pub use addr::{Family, MacAddr};
pub use allocator::{
    Allocated, Allocation, AllocationRequest, Allocator, Conflict, CursorRecord, FamilyUsage, Ips,
    ReconcileReport, Release, Released, SubnetChange, SubnetView, Usage,
};
pub use error::IpamError;
pub use store::{CommitMode, CommitStats, Ipam, OpenReport};
pub use subnet::{gateway_mac, SubnetSpec};
