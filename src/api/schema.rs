//! Hand-written schema pieces for fields whose Rust type is free-form JSON: the
//! API server must keep what the user wrote (`x-kubernetes-preserve-unknown-fields`)
//! while the schema stays structural.

use schemars::{json_schema, Schema, SchemaGenerator};

/// An object whose content the API server keeps as written (e.g. a pod affinity).
pub fn preserve_unknown_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "nullable": true,
        "x-kubernetes-preserve-unknown-fields": true
    })
}
