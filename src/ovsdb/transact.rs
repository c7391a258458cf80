//! `transact`: the operations of RFC 7047 §5.2 (insert, select, update,
//! mutate, delete, wait, comment, assert) with conditions and mutations, their
//! JSON form, and the reading of results (which operation failed, and why).

use serde_json::{json, Value as Json};

use super::error::{Error, Result};
use super::value::{row_from_json, row_to_json, Atom, Row, Uuid, Value};

/// A condition function (`==`, `includes`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Includes,
    Excludes,
}

impl Function {
    fn as_str(self) -> &'static str {
        match self {
            Function::Eq => "==",
            Function::Ne => "!=",
            Function::Lt => "<",
            Function::Le => "<=",
            Function::Gt => ">",
            Function::Ge => ">=",
            Function::Includes => "includes",
            Function::Excludes => "excludes",
        }
    }
}

/// `[column, function, value]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub column: String,
    pub function: Function,
    pub value: Value,
}

impl Condition {
    pub fn new(column: &str, function: Function, value: Value) -> Condition {
        Condition {
            column: column.to_string(),
            function,
            value,
        }
    }
    pub fn eq(column: &str, value: Value) -> Condition {
        Condition::new(column, Function::Eq, value)
    }
    pub fn uuid(u: Uuid) -> Condition {
        Condition::eq("_uuid", Value::atom(u))
    }
    pub fn includes(column: &str, value: Value) -> Condition {
        Condition::new(column, Function::Includes, value)
    }
    fn to_json(&self) -> Json {
        json!([self.column, self.function.as_str(), self.value.to_json()])
    }
}

/// A mutator (`+=`, `insert`, `delete`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutator {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Insert,
    Delete,
}

impl Mutator {
    fn as_str(self) -> &'static str {
        match self {
            Mutator::Add => "+=",
            Mutator::Sub => "-=",
            Mutator::Mul => "*=",
            Mutator::Div => "/=",
            Mutator::Mod => "%=",
            Mutator::Insert => "insert",
            Mutator::Delete => "delete",
        }
    }
}

/// `[column, mutator, value]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mutation {
    pub column: String,
    pub mutator: Mutator,
    pub value: Value,
}

impl Mutation {
    pub fn new(column: &str, mutator: Mutator, value: Value) -> Mutation {
        Mutation {
            column: column.to_string(),
            mutator,
            value,
        }
    }
    pub fn insert(column: &str, value: Value) -> Mutation {
        Mutation::new(column, Mutator::Insert, value)
    }
    pub fn delete(column: &str, value: Value) -> Mutation {
        Mutation::new(column, Mutator::Delete, value)
    }
    fn to_json(&self) -> Json {
        json!([self.column, self.mutator.as_str(), self.value.to_json()])
    }
}

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Insert {
        table: String,
        row: Row,
        uuid_name: Option<String>,
    },
    Select {
        table: String,
        conditions: Vec<Condition>,
        columns: Option<Vec<String>>,
    },
    Update {
        table: String,
        conditions: Vec<Condition>,
        row: Row,
    },
    Mutate {
        table: String,
        conditions: Vec<Condition>,
        mutations: Vec<Mutation>,
    },
    Delete {
        table: String,
        conditions: Vec<Condition>,
    },
    /// Waits (or, with `timeout_ms` 0, checks) until the selected `columns`
    /// of the rows matching `conditions` are (`until_equal`) or are not
    /// exactly `rows`.
    Wait {
        table: String,
        conditions: Vec<Condition>,
        columns: Vec<String>,
        until_equal: bool,
        rows: Vec<Row>,
        timeout_ms: Option<u64>,
    },
    Comment(String),
    Assert(String),
}

impl Op {
    pub fn insert(table: &str, row: Row, uuid_name: Option<&str>) -> Op {
        Op::Insert {
            table: table.to_string(),
            row,
            uuid_name: uuid_name.map(str::to_string),
        }
    }
    pub fn select(table: &str, conditions: Vec<Condition>) -> Op {
        Op::Select {
            table: table.to_string(),
            conditions,
            columns: None,
        }
    }
    pub fn update(table: &str, conditions: Vec<Condition>, row: Row) -> Op {
        Op::Update {
            table: table.to_string(),
            conditions,
            row,
        }
    }
    pub fn mutate(table: &str, conditions: Vec<Condition>, mutations: Vec<Mutation>) -> Op {
        Op::Mutate {
            table: table.to_string(),
            conditions,
            mutations,
        }
    }
    pub fn delete(table: &str, conditions: Vec<Condition>) -> Op {
        Op::Delete {
            table: table.to_string(),
            conditions,
        }
    }
    /// Fails the transaction at once unless no row of `table` matches `conditions`:
    /// the guard against two writers inserting the same named object.
    pub fn wait_absent(table: &str, conditions: Vec<Condition>) -> Op {
        Op::Wait {
            table: table.to_string(),
            conditions,
            columns: vec!["_uuid".to_string()],
            until_equal: true,
            rows: Vec::new(),
            timeout_ms: Some(0),
        }
    }
    pub fn comment(text: &str) -> Op {
        Op::Comment(text.to_string())
    }

    /// The operation's name on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Insert { .. } => "insert",
            Op::Select { .. } => "select",
            Op::Update { .. } => "update",
            Op::Mutate { .. } => "mutate",
            Op::Delete { .. } => "delete",
            Op::Wait { .. } => "wait",
            Op::Comment(_) => "comment",
            Op::Assert(_) => "assert",
        }
    }

    pub fn table(&self) -> &str {
        match self {
            Op::Insert { table, .. }
            | Op::Select { table, .. }
            | Op::Update { table, .. }
            | Op::Mutate { table, .. }
            | Op::Delete { table, .. }
            | Op::Wait { table, .. } => table,
            Op::Comment(_) | Op::Assert(_) => "-",
        }
    }

    /// True if this operation writes.
    pub fn writes(&self) -> bool {
        matches!(
            self,
            Op::Insert { .. } | Op::Update { .. } | Op::Mutate { .. } | Op::Delete { .. }
        )
    }

    pub fn to_json(&self) -> Json {
        let conds = |c: &[Condition]| Json::Array(c.iter().map(Condition::to_json).collect());
        match self {
            Op::Insert {
                table,
                row,
                uuid_name,
            } => {
                let mut o = json!({"op": "insert", "table": table, "row": row_to_json(row)});
                if let Some(n) = uuid_name {
                    o["uuid-name"] = json!(n);
                }
                o
            }
            Op::Select {
                table,
                conditions,
                columns,
            } => {
                let mut o = json!({"op": "select", "table": table, "where": conds(conditions)});
                if let Some(c) = columns {
                    o["columns"] = json!(c);
                }
                o
            }
            Op::Update {
                table,
                conditions,
                row,
            } => json!({"op": "update", "table": table, "where": conds(conditions),
                        "row": row_to_json(row)}),
            Op::Mutate {
                table,
                conditions,
                mutations,
            } => json!({"op": "mutate", "table": table, "where": conds(conditions),
                        "mutations": mutations.iter().map(Mutation::to_json).collect::<Vec<_>>()}),
            Op::Delete { table, conditions } => {
                json!({"op": "delete", "table": table, "where": conds(conditions)})
            }
            Op::Wait {
                table,
                conditions,
                columns,
                until_equal,
                rows,
                timeout_ms,
            } => {
                let mut o = json!({"op": "wait", "table": table, "where": conds(conditions),
                    "columns": columns, "until": if *until_equal { "==" } else { "!=" },
                    "rows": rows.iter().map(row_to_json).collect::<Vec<_>>()});
                if let Some(t) = timeout_ms {
                    o["timeout"] = json!(t);
                }
                o
            }
            Op::Comment(c) => json!({"op": "comment", "comment": c}),
            Op::Assert(lock) => json!({"op": "assert", "lock": lock}),
        }
    }
}

/// The result of one successful operation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OpResult {
    /// The new row's UUID (insert).
    pub uuid: Option<Uuid>,
    /// Rows touched (update, mutate, delete).
    pub count: Option<i64>,
    /// Rows read (select), with `_uuid` among the columns when present.
    pub rows: Vec<Row>,
}

/// The `transact` params for `database` and `ops`.
pub fn params(database: &str, ops: &[Op]) -> Json {
    let mut p = Vec::with_capacity(ops.len() + 1);
    p.push(json!(database));
    p.extend(ops.iter().map(Op::to_json));
    Json::Array(p)
}

/// Reads a `transact` result: every operation's result, or the first failure.
pub fn parse_results(ops: &[Op], result: &Json) -> Result<Vec<OpResult>> {
    let items = result
        .as_array()
        .ok_or_else(|| Error::Protocol(format!("transact result is not an array: {result}")))?;
    for (index, item) in items.iter().enumerate() {
        if let Some(error) = item.get("error").and_then(Json::as_str) {
            let details = item
                .get("details")
                .and_then(Json::as_str)
                .map(str::to_string);
            return Err(match ops.get(index) {
                Some(op) => Error::Operation {
                    index,
                    op: op.kind().to_string(),
                    table: op.table().to_string(),
                    error: error.to_string(),
                    details,
                },
                None => Error::Transaction(format!(
                    "commit failed: {error}{}",
                    details.map(|d| format!(": {d}")).unwrap_or_default()
                )),
            });
        }
    }
    if items.len() < ops.len() {
        return Err(Error::Protocol(format!(
            "transact returned {} results for {} operations",
            items.len(),
            ops.len()
        )));
    }
    items[..ops.len()].iter().map(parse_one).collect()
}

fn parse_one(item: &Json) -> Result<OpResult> {
    let mut r = OpResult::default();
    if let Some(u) = item.get("uuid") {
        r.uuid = Atom::from_json(u)?.as_uuid();
    }
    r.count = item.get("count").and_then(Json::as_i64);
    if let Some(rows) = item.get("rows").and_then(Json::as_array) {
        r.rows = rows.iter().map(row_from_json).collect::<Result<_>>()?;
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_absent_is_an_immediate_wait_for_no_rows() {
        let op = Op::wait_absent(
            "Logical_Switch",
            vec![Condition::eq("name", Value::atom("ls"))],
        );
        assert_eq!(
            op.to_json(),
            json!({"op":"wait","table":"Logical_Switch","where":[["name","==","ls"]],
                   "columns":["_uuid"],"until":"==","rows":[],"timeout":0})
        );
    }

    #[test]
    fn names_the_failing_operation() {
        let ops = vec![Op::comment("c"), Op::delete("Logical_Switch", vec![])];
        let res = json!([{}, {"error": "constraint violation", "details": "bad"}]);
        let err = parse_results(&ops, &res).unwrap_err().to_string();
        assert!(
            err.contains("operation 1 (delete on Logical_Switch)"),
            "{err}"
        );
        assert!(err.contains("constraint violation: bad"), "{err}");
    }

    #[test]
    fn commit_failure_after_the_operations_is_reported() {
        let ops = vec![Op::comment("c")];
        let res = json!([{}, {"error": "referential integrity violation"}]);
        let err = parse_results(&ops, &res).unwrap_err().to_string();
        assert!(err.contains("referential integrity violation"), "{err}");
    }

    #[test]
    fn reads_uuids_counts_and_rows() {
        let u = Uuid::new_v4();
        let ops = vec![
            Op::insert("T", Row::new(), Some("n")),
            Op::delete("T", vec![]),
            Op::select("T", vec![]),
        ];
        let res =
            json!([{"uuid": ["uuid", u.to_string()]}, {"count": 2}, {"rows": [{"name": "a"}]}]);
        let r = parse_results(&ops, &res).unwrap();
        assert_eq!(r[0].uuid, Some(u));
        assert_eq!(r[1].count, Some(2));
        assert_eq!(r[2].rows[0]["name"], Value::atom("a"));
    }
}
