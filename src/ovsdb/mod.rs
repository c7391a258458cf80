//! RFC 7047 OVSDB client: codec, connection, transact, monitor cache, typed tables.
//!
//! `Client` is the entry point: one per database connection, monitored and
//! cached, reconnecting by itself. `Op` builds transactions; `model` has the
//! typed tables. Domain operations (switches, ports, QoS) live in `crate::ovn`.

pub mod cache;
pub mod client;
pub mod codec;
pub mod connection;
pub mod error;
pub mod model;
pub mod schema;
pub mod transact;
pub mod value;

pub use cache::{Cache, Change, ChangeKind, IndexSpec, TableCache};
pub use client::{Client, ClientOptions, MonitorMethod, TableSpec};
pub use connection::{Connection, Endpoint, Notification, Timeouts};
pub use error::{Error, Result};
pub use model::{ColumnValue, Table};
pub use schema::{ColumnKind, Schema};
pub use transact::{Condition, Function, Mutation, Mutator, Op, OpResult};
pub use value::{row, Atom, Row, Uuid, Value};
