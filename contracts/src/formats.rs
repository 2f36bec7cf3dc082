//! JSON Schema shapes of values that serde writes as plain strings (timestamps), used by the
//! `schemars` derives of the wire types.

use schemars::{Schema, SchemaGenerator, json_schema};

/// The schema of an RFC 3339 timestamp (how every instant is written on the wire).
pub fn rfc3339(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "format": "date-time"})
}

/// An RFC 3339 timestamp or `null`.
pub fn rfc3339_or_null(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": ["string", "null"], "format": "date-time"})
}
