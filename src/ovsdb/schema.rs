//! The server's schema (`get_schema`), reduced to what the client needs: the
//! kind of every column (scalar, set or map: it decides how `update2` diffs
//! apply), the schema's indexes, and the check that the columns we use exist.

use std::collections::HashMap;

use serde_json::Value as Json;

use super::error::{Error, Result};

/// How a column's values combine in an `update2` diff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// At most one atom (a scalar or an optional value): a diff carries the
    /// new value, as ovsdb-server only diffs sets that may hold several atoms.
    Scalar,
    /// A set of possibly several atoms: a diff is the symmetric difference.
    Set,
    /// A map: a diff adds, replaces or removes pairs.
    Map,
}

#[derive(Debug, Clone, Default)]
pub struct TableSchema {
    pub columns: HashMap<String, ColumnKind>,
    /// Single- and multi-column indexes declared by the schema.
    pub indexes: Vec<Vec<String>>,
    pub is_root: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Schema {
    pub name: String,
    pub version: String,
    pub tables: HashMap<String, TableSchema>,
}

impl Schema {
    pub fn from_json(j: &Json) -> Result<Schema> {
        let bad = |reason: String| Error::Schema {
            database: j
                .get("name")
                .and_then(Json::as_str)
                .unwrap_or("?")
                .to_string(),
            reason,
        };
        let tables = j
            .get("tables")
            .and_then(Json::as_object)
            .ok_or_else(|| bad("no tables".into()))?;
        let mut schema = Schema {
            name: j
                .get("name")
                .and_then(Json::as_str)
                .unwrap_or("")
                .to_string(),
            version: j
                .get("version")
                .and_then(Json::as_str)
                .unwrap_or("")
                .to_string(),
            tables: HashMap::new(),
        };
        for (tname, t) in tables {
            let cols = t
                .get("columns")
                .and_then(Json::as_object)
                .ok_or_else(|| bad(format!("table {tname} has no columns")))?;
            let mut ts = TableSchema {
                is_root: t.get("isRoot").and_then(Json::as_bool).unwrap_or(false),
                ..Default::default()
            };
            for (cname, c) in cols {
                let ty = c
                    .get("type")
                    .ok_or_else(|| bad(format!("column {tname}.{cname} has no type")))?;
                ts.columns.insert(cname.clone(), column_kind(ty));
            }
            if let Some(idx) = t.get("indexes").and_then(Json::as_array) {
                for i in idx {
                    if let Some(cols) = i.as_array() {
                        ts.indexes.push(
                            cols.iter()
                                .filter_map(Json::as_str)
                                .map(str::to_string)
                                .collect(),
                        );
                    }
                }
            }
            schema.tables.insert(tname.clone(), ts);
        }
        Ok(schema)
    }

    /// Fails, naming the first missing table or column, unless every one of
    /// `columns` exists in `table`. Extra server columns are fine.
    pub fn require(&self, table: &str, columns: &[&str]) -> Result<()> {
        let missing = |reason: String| Error::Schema {
            database: self.name.clone(),
            reason,
        };
        let t = self.tables.get(table).ok_or_else(|| {
            missing(format!(
                "table {table} is missing (server schema {})",
                self.version
            ))
        })?;
        for c in columns {
            if !t.columns.contains_key(*c) {
                return Err(missing(format!(
                    "column {table}.{c} is missing (server schema {})",
                    self.version
                )));
            }
        }
        Ok(())
    }
}

fn column_kind(ty: &Json) -> ColumnKind {
    let Some(obj) = ty.as_object() else {
        return ColumnKind::Scalar;
    };
    if obj.contains_key("value") {
        return ColumnKind::Map;
    }
    let max = match obj.get("max") {
        Some(Json::String(_)) => u64::MAX,
        Some(m) => m.as_u64().unwrap_or(1),
        None => 1,
    };
    if max == 1 {
        ColumnKind::Scalar
    } else {
        ColumnKind::Set
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Schema {
        Schema::from_json(&json!({"name": "DB", "version": "1.0", "tables": {"T": {
            "columns": {
                "name": {"type": "string"},
                "tag": {"type": {"key": "integer", "min": 0, "max": 1}},
                "ports": {"type": {"key": {"type": "uuid"}, "min": 0, "max": "unlimited"}},
                "ids": {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}},
                "one": {"type": {"key": "string"}}
            },
            "indexes": [["name"]], "isRoot": true}}}))
        .unwrap()
    }

    #[test]
    fn reads_column_kinds_and_indexes() {
        let s = schema();
        let t = &s.tables["T"];
        assert_eq!(t.columns["name"], ColumnKind::Scalar);
        assert_eq!(t.columns["one"], ColumnKind::Scalar);
        assert_eq!(t.columns["tag"], ColumnKind::Scalar);
        assert_eq!(t.columns["ports"], ColumnKind::Set);
        assert_eq!(t.columns["ids"], ColumnKind::Map);
        assert_eq!(t.indexes, vec![vec!["name".to_string()]]);
        assert!(t.is_root);
    }

    #[test]
    fn missing_columns_are_named() {
        let s = schema();
        assert!(s.require("T", &["name", "ids"]).is_ok());
        let e = s.require("T", &["name", "nope"]).unwrap_err().to_string();
        assert!(e.contains("T.nope"), "{e}");
        assert!(s
            .require("U", &[])
            .unwrap_err()
            .to_string()
            .contains("table U"));
    }
}
