//! The monitor-fed in-memory copy of the monitored tables: rows by `_uuid`,
//! indexes over a column or over one key of a map column (e.g.
//! `external_ids:pod`), and the application of `update`/`update2` messages,
//! which yields the list of changed rows for subscribers. Pure: fed values,
//! no I/O; unit-tested by feeding it updates.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value as Json;

use super::error::{Error, Result};
use super::schema::{ColumnKind, TableSchema};
use super::value::{row_from_json, Atom, Row, Uuid, Value};

/// What a client-side index is keyed on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IndexSpec {
    /// Every atom of a column (for a set column each element is a key).
    Column(String),
    /// The value under one key of a map column.
    MapKey { column: String, key: String },
}

impl IndexSpec {
    pub fn column(c: &str) -> IndexSpec {
        IndexSpec::Column(c.to_string())
    }
    pub fn map_key(column: &str, key: &str) -> IndexSpec {
        IndexSpec::MapKey {
            column: column.to_string(),
            key: key.to_string(),
        }
    }

    fn keys<'r>(&self, row: &'r Row) -> Vec<&'r Atom> {
        match self {
            IndexSpec::Column(c) => row
                .get(c)
                .map(Value::as_set)
                .unwrap_or(&[])
                .iter()
                .collect(),
            IndexSpec::MapKey { column, key } => row
                .get(column)
                .and_then(|v| v.map_get(key))
                .into_iter()
                .collect(),
        }
    }
}

/// How a row changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Insert,
    Modify,
    Delete,
}

/// One changed row, as told to subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub table: String,
    pub uuid: Uuid,
    pub kind: ChangeKind,
}

#[derive(Debug, Default)]
struct Index {
    spec: Option<IndexSpec>,
    map: BTreeMap<Atom, BTreeSet<Uuid>>,
}

/// One monitored table.
#[derive(Debug, Default)]
pub struct TableCache {
    kinds: HashMap<String, ColumnKind>,
    rows: HashMap<Uuid, Row>,
    indexes: Vec<Index>,
}

impl TableCache {
    pub fn get(&self, uuid: &Uuid) -> Option<&Row> {
        self.rows.get(uuid)
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn rows(&self) -> impl Iterator<Item = (&Uuid, &Row)> {
        self.rows.iter()
    }

    /// Rows whose indexed value equals `key`. Fails loudly if no such index
    /// was declared (a full scan would hide the mistake).
    pub fn lookup(&self, spec: &IndexSpec, key: &Atom) -> Result<Vec<Uuid>> {
        let idx = self
            .indexes
            .iter()
            .find(|i| i.spec.as_ref() == Some(spec))
            .ok_or_else(|| Error::NotSupported(format!("lookup by undeclared index {spec:?}")))?;
        Ok(idx
            .map
            .get(key)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default())
    }

    fn index_row(&mut self, uuid: Uuid, add: bool) {
        let Some(row) = self.rows.get(&uuid) else {
            return;
        };
        for idx in &mut self.indexes {
            let spec = idx.spec.as_ref().expect("declared index has a spec");
            for key in spec.keys(row) {
                if add {
                    idx.map.entry(key.clone()).or_default().insert(uuid);
                } else if let Some(set) = idx.map.get_mut(key) {
                    set.remove(&uuid);
                    if set.is_empty() {
                        idx.map.remove(key);
                    }
                }
            }
        }
    }

    fn put(&mut self, uuid: Uuid, row: Row) -> ChangeKind {
        self.index_row(uuid, false);
        let kind = match self.rows.insert(uuid, row) {
            Some(_) => ChangeKind::Modify,
            None => ChangeKind::Insert,
        };
        self.index_row(uuid, true);
        kind
    }

    fn remove(&mut self, uuid: Uuid) -> bool {
        self.index_row(uuid, false);
        self.rows.remove(&uuid).is_some()
    }

    fn apply_diff(&mut self, uuid: Uuid, diff: Row) -> Result<()> {
        self.index_row(uuid, false);
        let kinds = &self.kinds;
        let row = self.rows.entry(uuid).or_default();
        for (col, d) in diff {
            let kind = kinds.get(&col).copied().unwrap_or(ColumnKind::Scalar);
            let new = match (kind, row.remove(&col), d) {
                (ColumnKind::Scalar, _, d) => d,
                (ColumnKind::Set, old, Value::Set(d)) => {
                    let mut s: BTreeSet<Atom> = old
                        .map(|o| o.as_set().iter().cloned().collect())
                        .unwrap_or_default();
                    for a in d {
                        if !s.remove(&a) {
                            s.insert(a);
                        }
                    }
                    Value::Set(s.into_iter().collect())
                }
                (ColumnKind::Map, old, Value::Map(d)) => {
                    let mut m = match old {
                        Some(Value::Map(m)) => m,
                        _ => BTreeMap::new(),
                    };
                    for (k, v) in d {
                        match m.get(&k) {
                            Some(cur) if *cur == v => {
                                m.remove(&k);
                            }
                            _ => {
                                m.insert(k, v);
                            }
                        }
                    }
                    Value::Map(m)
                }
                (ColumnKind::Map, _, Value::Set(s)) if s.is_empty() => Value::Map(BTreeMap::new()),
                (k, _, d) => {
                    return Err(Error::Protocol(format!(
                        "diff for {k:?} column {col} has the wrong shape: {d:?}"
                    )))
                }
            };
            row.insert(col, new);
        }
        self.index_row(uuid, true);
        Ok(())
    }

    /// Approximate memory held by this table's rows and indexes.
    pub fn approx_bytes(&self) -> usize {
        let rows: usize = self
            .rows
            .values()
            .map(|r| {
                r.iter()
                    .map(|(k, v)| k.capacity() + v.approx_bytes() + 32)
                    .sum::<usize>()
                    + 48
            })
            .sum();
        let map_slots = self.rows.capacity() * (std::mem::size_of::<(Uuid, Row)>() + 1);
        let idx: usize = self
            .indexes
            .iter()
            .map(|i| {
                i.map
                    .iter()
                    .map(|(k, s)| k.approx_bytes() + s.len() * 16 + 64)
                    .sum::<usize>()
            })
            .sum();
        rows + map_slots + idx
    }
}

/// The cache of every monitored table.
#[derive(Debug, Default)]
pub struct Cache {
    tables: BTreeMap<String, TableCache>,
}

impl Cache {
    /// Declares a monitored table with its column kinds and indexes.
    pub fn add_table(&mut self, name: &str, schema: &TableSchema, indexes: &[IndexSpec]) {
        let t = self.tables.entry(name.to_string()).or_default();
        t.kinds = schema.columns.clone();
        for spec in indexes {
            if !t.indexes.iter().any(|i| i.spec.as_ref() == Some(spec)) {
                t.indexes.push(Index {
                    spec: Some(spec.clone()),
                    map: BTreeMap::new(),
                });
            }
        }
        let uuids: Vec<Uuid> = t.rows.keys().copied().collect();
        for u in uuids {
            t.index_row(u, false);
            t.index_row(u, true);
        }
    }

    pub fn table(&self, name: &str) -> Option<&TableCache> {
        self.tables.get(name)
    }

    pub fn table_names(&self) -> impl Iterator<Item = &str> {
        self.tables.keys().map(String::as_str)
    }

    pub fn approx_bytes(&self) -> usize {
        self.tables.values().map(TableCache::approx_bytes).sum()
    }

    /// Applies the `<table-updates2>` of an `update2`/`update3` notification
    /// or of a monitor reply.
    pub fn apply_update2(&mut self, updates: &Json) -> Result<Vec<Change>> {
        let mut changes = Vec::new();
        for (table, rows) in objects(updates, "table-updates2")? {
            let t = self.tables.entry(table.clone()).or_default();
            for (uuid, ru) in objects(rows, "table-update2")? {
                let uuid = parse_uuid(uuid)?;
                let (kind, row) = objects(ru, "row-update2")?
                    .next()
                    .ok_or_else(|| Error::Protocol(format!("empty row update for {uuid}")))?;
                let change = match kind.as_str() {
                    "initial" | "insert" => t.put(uuid, row_from_json(row)?),
                    "modify" => {
                        t.apply_diff(uuid, row_from_json(row)?)?;
                        ChangeKind::Modify
                    }
                    "delete" => {
                        t.remove(uuid);
                        ChangeKind::Delete
                    }
                    other => return Err(Error::Protocol(format!("unknown row update {other:?}"))),
                };
                changes.push(Change {
                    table: table.clone(),
                    uuid,
                    kind: change,
                });
            }
        }
        Ok(changes)
    }

    /// Applies the `<table-updates>` of a (version 1) `update` notification.
    pub fn apply_update(&mut self, updates: &Json) -> Result<Vec<Change>> {
        let mut changes = Vec::new();
        for (table, rows) in objects(updates, "table-updates")? {
            let t = self.tables.entry(table.clone()).or_default();
            for (uuid, ru) in objects(rows, "table-update")? {
                let uuid = parse_uuid(uuid)?;
                let kind = match ru.get("new") {
                    Some(new) => t.put(uuid, row_from_json(new)?),
                    None => {
                        t.remove(uuid);
                        ChangeKind::Delete
                    }
                };
                changes.push(Change {
                    table: table.clone(),
                    uuid,
                    kind,
                });
            }
        }
        Ok(changes)
    }

    /// Replaces the monitored tables' contents with a full snapshot (a monitor
    /// reply after reconnecting without history), reporting only real changes.
    pub fn replace_all(&mut self, snapshot: Cache) -> Vec<Change> {
        let mut changes = Vec::new();
        let names: Vec<String> = self.tables.keys().cloned().collect();
        let mut snapshot = snapshot.tables;
        for name in names {
            let t = self.tables.get_mut(&name).expect("listed table");
            let mut new = snapshot.remove(&name).map(|s| s.rows).unwrap_or_default();
            let old: Vec<Uuid> = t.rows.keys().copied().collect();
            for u in old {
                match new.remove(&u) {
                    Some(row) if t.rows.get(&u) == Some(&row) => {}
                    Some(row) => {
                        t.put(u, row);
                        changes.push(Change {
                            table: name.clone(),
                            uuid: u,
                            kind: ChangeKind::Modify,
                        });
                    }
                    None => {
                        t.remove(u);
                        changes.push(Change {
                            table: name.clone(),
                            uuid: u,
                            kind: ChangeKind::Delete,
                        });
                    }
                }
            }
            for (u, row) in new {
                t.put(u, row);
                changes.push(Change {
                    table: name.clone(),
                    uuid: u,
                    kind: ChangeKind::Insert,
                });
            }
        }
        changes
    }

    /// An empty cache with the same tables and indexes (to receive a snapshot).
    pub fn empty_like(&self) -> Cache {
        Cache {
            tables: self
                .tables
                .iter()
                .map(|(n, t)| {
                    (
                        n.clone(),
                        TableCache {
                            kinds: t.kinds.clone(),
                            rows: HashMap::new(),
                            indexes: Vec::new(),
                        },
                    )
                })
                .collect(),
        }
    }
}

fn objects<'j>(j: &'j Json, what: &str) -> Result<impl Iterator<Item = (&'j String, &'j Json)>> {
    j.as_object()
        .map(|o| o.iter())
        .ok_or_else(|| Error::Protocol(format!("{what} is not an object: {j}")))
}

fn parse_uuid(s: &str) -> Result<Uuid> {
    Uuid::parse_str(s).map_err(|e| Error::Protocol(format!("bad row uuid {s:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const U1: &str = "11111111-1111-1111-1111-111111111111";

    fn cache() -> Cache {
        let mut ts = TableSchema::default();
        ts.columns.insert("name".into(), ColumnKind::Scalar);
        ts.columns.insert("tag".into(), ColumnKind::Scalar);
        ts.columns.insert("addresses".into(), ColumnKind::Set);
        ts.columns.insert("external_ids".into(), ColumnKind::Map);
        let mut c = Cache::default();
        c.add_table(
            "T",
            &ts,
            &[
                IndexSpec::column("name"),
                IndexSpec::map_key("external_ids", "pod"),
            ],
        );
        c
    }

    fn u1() -> Uuid {
        Uuid::parse_str(U1).unwrap()
    }

    #[test]
    fn insert_modify_delete_keep_indexes_right() {
        let mut c = cache();
        c.apply_update2(&json!({"T": {U1: {"insert": {"name": "a",
            "external_ids": ["map", [["pod", "ns/p"]]]}}}}))
            .unwrap();
        let t = c.table("T").unwrap();
        assert_eq!(
            t.lookup(&IndexSpec::column("name"), &"a".into()).unwrap(),
            vec![u1()]
        );
        assert_eq!(
            t.lookup(&IndexSpec::map_key("external_ids", "pod"), &"ns/p".into())
                .unwrap(),
            vec![u1()]
        );

        // Rename, set the optional tag, add addresses, change the pod key and add another key.
        let ch = c
            .apply_update2(&json!({"T": {U1: {"modify": {"name": "b", "tag": 7,
                "addresses": ["set", ["x", "y"]],
                "external_ids": ["map", [["pod", "ns/q"], ["x", "1"]]]}}}}))
            .unwrap();
        assert_eq!(ch[0].kind, ChangeKind::Modify);
        let t = c.table("T").unwrap();
        assert!(t
            .lookup(&IndexSpec::column("name"), &"a".into())
            .unwrap()
            .is_empty());
        assert_eq!(
            t.lookup(&IndexSpec::column("name"), &"b".into()).unwrap(),
            vec![u1()]
        );
        let row = t.get(&u1()).unwrap();
        assert_eq!(row["tag"], Value::atom(7i64));
        assert_eq!(
            row["external_ids"],
            Value::map([("pod", "ns/q"), ("x", "1")])
        );

        // A diff naming an existing pair with the same value removes it; a
        // set diff is the symmetric difference; an optional value is replaced.
        c.apply_update2(&json!({"T": {U1: {"modify": {"tag": ["set", []],
            "addresses": ["set", ["x", "z"]],
            "external_ids": ["map", [["x", "1"]]]}}}}))
            .unwrap();
        let row = c.table("T").unwrap().get(&u1()).unwrap();
        assert_eq!(row["tag"], Value::empty_set());
        assert_eq!(row["addresses"], Value::set(["y".into(), "z".into()]));
        assert_eq!(row["external_ids"], Value::map([("pod", "ns/q")]));

        c.apply_update2(&json!({"T": {U1: {"delete": null}}}))
            .unwrap();
        let t = c.table("T").unwrap();
        assert!(t.is_empty());
        assert!(t
            .lookup(&IndexSpec::column("name"), &"b".into())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn undeclared_index_fails_loudly() {
        let c = cache();
        assert!(c
            .table("T")
            .unwrap()
            .lookup(&IndexSpec::column("tag"), &1i64.into())
            .is_err());
    }

    #[test]
    fn version_one_updates_replace_rows() {
        let mut c = cache();
        c.apply_update(&json!({"T": {U1: {"new": {"name": "a"}}}}))
            .unwrap();
        c.apply_update(&json!({"T": {U1: {"old": {"name": "a"}, "new": {"name": "c"}}}}))
            .unwrap();
        assert_eq!(
            c.table("T").unwrap().get(&u1()).unwrap()["name"],
            Value::atom("c")
        );
        c.apply_update(&json!({"T": {U1: {"old": {"name": "c"}}}}))
            .unwrap();
        assert!(c.table("T").unwrap().is_empty());
    }

    #[test]
    fn snapshot_replacement_reports_only_differences() {
        let mut c = cache();
        c.apply_update2(&json!({"T": {U1: {"insert": {"name": "a"}}}}))
            .unwrap();
        let mut snap = c.empty_like();
        snap.apply_update2(&json!({"T": {U1: {"initial": {"name": "a"}},
            "22222222-2222-2222-2222-222222222222": {"initial": {"name": "z"}}}}))
            .unwrap();
        let ch = c.replace_all(snap);
        assert_eq!(ch.len(), 1);
        assert_eq!(ch[0].kind, ChangeKind::Insert);
        assert_eq!(c.table("T").unwrap().len(), 2);
        assert_eq!(
            c.table("T")
                .unwrap()
                .lookup(&IndexSpec::column("name"), &"z".into())
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn malformed_updates_are_errors() {
        let mut c = cache();
        assert!(c.apply_update2(&json!([1])).is_err());
        assert!(c
            .apply_update2(&json!({"T": {"not-a-uuid": {"insert": {}}}}))
            .is_err());
        assert!(c
            .apply_update2(&json!({"T": {U1: {"explode": {}}}}))
            .is_err());
    }
}
