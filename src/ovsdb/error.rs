//! The one error type of the OVSDB client: every variant names the object
//! (endpoint, method, table, column, operation) and the reason.

use serde_json::Value as Json;

/// What went wrong talking to an OVSDB server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("ovsdb {endpoint}: {reason}")]
    Io { endpoint: String, reason: String },
    #[error("ovsdb endpoint {endpoint:?}: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("ovsdb protocol error: {0}")]
    Protocol(String),
    #[error("ovsdb connection closed: {0}")]
    Closed(String),
    #[error("ovsdb timeout: {0}")]
    Timeout(String),
    #[error("ovsdb {method} failed: {error}")]
    Rpc { method: String, error: Json },
    #[error("ovsdb transaction failed at operation {index} ({op} on {table}): {error}{}", details.as_ref().map(|d| format!(": {d}")).unwrap_or_default())]
    Operation {
        index: usize,
        op: String,
        table: String,
        error: String,
        details: Option<String>,
    },
    #[error("ovsdb transaction failed: {0}")]
    Transaction(String),
    #[error("ovsdb schema of {database}: {reason}")]
    Schema { database: String, reason: String },
    #[error("ovsdb row of {table}: column {column}: {reason}")]
    Decode {
        table: String,
        column: String,
        reason: String,
    },
    #[error("not supported yet: {0}")]
    NotSupported(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
