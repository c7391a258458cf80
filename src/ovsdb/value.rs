//! RFC 7047 data: atoms, sets, maps and rows, and their JSON encoding
//! (`["uuid",…]`, `["named-uuid",…]`, `["set",[…]]`, `["map",[[k,v]…]]`).
//!
//! Every column value is held as a set or a map: a scalar is a set of one, an
//! absent optional a set of none. This is how the wire format behaves too.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde_json::{json, Value as Json};
pub use uuid::Uuid;

use super::error::{Error, Result};

/// One OVSDB atom.
#[derive(Debug, Clone)]
pub enum Atom {
    Integer(i64),
    Real(f64),
    Boolean(bool),
    String(String),
    Uuid(Uuid),
    /// A row inserted earlier in the same transaction (`uuid-name`).
    NamedUuid(String),
}

impl Atom {
    fn rank(&self) -> u8 {
        match self {
            Atom::Integer(_) => 0,
            Atom::Real(_) => 1,
            Atom::Boolean(_) => 2,
            Atom::String(_) => 3,
            Atom::Uuid(_) => 4,
            Atom::NamedUuid(_) => 5,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Atom::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_uuid(&self) -> Option<Uuid> {
        match self {
            Atom::Uuid(u) => Some(*u),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Atom::Integer(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Atom::Boolean(b) => Some(*b),
            _ => None,
        }
    }

    pub fn to_json(&self) -> Json {
        match self {
            Atom::Integer(i) => json!(i),
            Atom::Real(r) => json!(r),
            Atom::Boolean(b) => json!(b),
            Atom::String(s) => json!(s),
            Atom::Uuid(u) => json!(["uuid", u.to_string()]),
            Atom::NamedUuid(n) => json!(["named-uuid", n]),
        }
    }

    pub fn from_json(j: &Json) -> Result<Atom> {
        match j {
            Json::String(s) => Ok(Atom::String(s.clone())),
            Json::Bool(b) => Ok(Atom::Boolean(*b)),
            Json::Number(n) => match n.as_i64() {
                Some(i) => Ok(Atom::Integer(i)),
                None => n
                    .as_f64()
                    .map(Atom::Real)
                    .ok_or_else(|| Error::Protocol(format!("number out of range: {n}"))),
            },
            Json::Array(a) if a.len() == 2 => match (a[0].as_str(), a[1].as_str()) {
                (Some("uuid"), Some(u)) => Uuid::parse_str(u)
                    .map(Atom::Uuid)
                    .map_err(|e| Error::Protocol(format!("bad uuid {u:?}: {e}"))),
                (Some("named-uuid"), Some(n)) => Ok(Atom::NamedUuid(n.to_string())),
                _ => Err(Error::Protocol(format!("not an atom: {j}"))),
            },
            _ => Err(Error::Protocol(format!("not an atom: {j}"))),
        }
    }

    /// Heap and inline bytes this atom takes (for cache accounting).
    pub fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Atom>()
            + match self {
                Atom::String(s) | Atom::NamedUuid(s) => s.capacity(),
                _ => 0,
            }
    }
}

impl PartialEq for Atom {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Atom {}
impl PartialOrd for Atom {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Atom {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Atom::Integer(a), Atom::Integer(b)) => a.cmp(b),
            (Atom::Real(a), Atom::Real(b)) => a.total_cmp(b),
            (Atom::Boolean(a), Atom::Boolean(b)) => a.cmp(b),
            (Atom::String(a), Atom::String(b)) => a.cmp(b),
            (Atom::Uuid(a), Atom::Uuid(b)) => a.cmp(b),
            (Atom::NamedUuid(a), Atom::NamedUuid(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl From<&str> for Atom {
    fn from(s: &str) -> Atom {
        Atom::String(s.to_string())
    }
}
impl From<String> for Atom {
    fn from(s: String) -> Atom {
        Atom::String(s)
    }
}
impl From<i64> for Atom {
    fn from(i: i64) -> Atom {
        Atom::Integer(i)
    }
}
impl From<bool> for Atom {
    fn from(b: bool) -> Atom {
        Atom::Boolean(b)
    }
}
impl From<Uuid> for Atom {
    fn from(u: Uuid) -> Atom {
        Atom::Uuid(u)
    }
}

/// One column value: a set (sorted, no duplicates) or a map (sorted by key).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Value {
    Set(Vec<Atom>),
    Map(BTreeMap<Atom, Atom>),
}

impl Value {
    pub fn empty_set() -> Value {
        Value::Set(Vec::new())
    }

    pub fn atom(a: impl Into<Atom>) -> Value {
        Value::Set(vec![a.into()])
    }

    pub fn set<I: IntoIterator<Item = Atom>>(atoms: I) -> Value {
        let mut v: Vec<Atom> = atoms.into_iter().collect();
        v.sort();
        v.dedup();
        Value::Set(v)
    }

    pub fn map<K: Into<Atom>, V: Into<Atom>, I: IntoIterator<Item = (K, V)>>(pairs: I) -> Value {
        Value::Map(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    /// A map of strings, the shape of every `external_ids`/`options` column.
    pub fn string_map(m: &BTreeMap<String, String>) -> Value {
        Value::map(m.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// The single atom of a set of one.
    pub fn as_atom(&self) -> Option<&Atom> {
        match self {
            Value::Set(v) if v.len() == 1 => v.first(),
            _ => None,
        }
    }

    pub fn as_set(&self) -> &[Atom] {
        match self {
            Value::Set(v) => v,
            Value::Map(_) => &[],
        }
    }

    /// Value of `key` in a map column.
    pub fn map_get(&self, key: &str) -> Option<&Atom> {
        match self {
            Value::Map(m) => m.get(&Atom::String(key.to_string())),
            Value::Set(_) => None,
        }
    }

    pub fn to_json(&self) -> Json {
        match self {
            Value::Set(v) if v.len() == 1 => v[0].to_json(),
            Value::Set(v) => json!(["set", v.iter().map(Atom::to_json).collect::<Vec<_>>()]),
            Value::Map(m) => json!([
                "map",
                m.iter()
                    .map(|(k, v)| json!([k.to_json(), v.to_json()]))
                    .collect::<Vec<_>>()
            ]),
        }
    }

    pub fn from_json(j: &Json) -> Result<Value> {
        if let Json::Array(a) = j {
            if a.len() == 2 {
                match (a[0].as_str(), &a[1]) {
                    (Some("set"), Json::Array(items)) => {
                        return Ok(Value::set(
                            items
                                .iter()
                                .map(Atom::from_json)
                                .collect::<Result<Vec<_>>>()?,
                        ))
                    }
                    (Some("map"), Json::Array(pairs)) => {
                        let mut m = BTreeMap::new();
                        for p in pairs {
                            match p {
                                Json::Array(kv) if kv.len() == 2 => {
                                    m.insert(Atom::from_json(&kv[0])?, Atom::from_json(&kv[1])?);
                                }
                                _ => return Err(Error::Protocol(format!("bad map pair: {p}"))),
                            }
                        }
                        return Ok(Value::Map(m));
                    }
                    _ => {}
                }
            }
        }
        Ok(Value::Set(vec![Atom::from_json(j)?]))
    }

    pub fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Value>()
            + match self {
                Value::Set(v) => v.iter().map(Atom::approx_bytes).sum::<usize>(),
                // A BTreeMap node holds up to 11 pairs; count pairs plus node overhead.
                Value::Map(m) => m
                    .iter()
                    .map(|(k, v)| k.approx_bytes() + v.approx_bytes())
                    .sum::<usize>()
                    .saturating_add(m.len().div_ceil(11) * 96),
            }
    }
}

/// One row: column name → value. `_uuid` is kept out of it (see `cache`).
pub type Row = BTreeMap<String, Value>;

/// A row from `(column, value)` pairs.
pub fn row<const N: usize>(cols: [(&str, Value); N]) -> Row {
    cols.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

pub fn row_to_json(row: &Row) -> Json {
    Json::Object(row.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
}

pub fn row_from_json(j: &Json) -> Result<Row> {
    let obj = j
        .as_object()
        .ok_or_else(|| Error::Protocol(format!("row is not an object: {j}")))?;
    obj.iter()
        .map(|(k, v)| Ok((k.clone(), Value::from_json(v)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_sets_maps_and_uuids_as_rfc7047() {
        let u = Uuid::nil();
        assert_eq!(Value::atom("x").to_json(), json!("x"));
        assert_eq!(Value::empty_set().to_json(), json!(["set", []]));
        assert_eq!(
            Value::set([Atom::Uuid(u), Atom::NamedUuid("n".into())]).to_json(),
            json!(["set", [["uuid", u.to_string()], ["named-uuid", "n"]]])
        );
        assert_eq!(
            Value::map([("a", "1")]).to_json(),
            json!(["map", [["a", "1"]]])
        );
    }

    #[test]
    fn decodes_what_it_encodes() {
        let v = Value::map([("k", 3i64)]);
        assert_eq!(Value::from_json(&v.to_json()).unwrap(), v);
        let s = Value::set([Atom::from(2i64), Atom::from(1i64)]);
        assert_eq!(Value::from_json(&s.to_json()).unwrap(), s);
        assert_eq!(
            Value::from_json(&json!(1.5)).unwrap(),
            Value::atom(Atom::Real(1.5))
        );
        assert!(Value::from_json(&json!({"a": 1})).is_err());
        assert!(Value::from_json(&json!(["uuid", "nope"])).is_err());
    }
}
