//! Server-side apply's field ownership, approximated: each Apply manager owns the fields of
//! its last applied configuration (maps are walked, lists and scalars are whole fields); a
//! field the manager applied before and leaves out now is removed, unless another Apply
//! manager also owns it. Ownership is recorded in `metadata.managedFields` as FieldsV1.
//! Conflicts between managers are not modelled (every apply behaves as if forced).
//! Pure functions.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

/// A field, as the keys leading to it: `["spec", "cidrBlock"]`.
pub type FieldPath = Vec<String>;

/// Fields that identify an object rather than configure it; nobody owns them.
fn is_identity(path: &[String]) -> bool {
    matches!(path, [only] if only == "apiVersion" || only == "kind")
        || matches!(path, [m, f] if m == "metadata"
            && matches!(f.as_str(), "name" | "namespace" | "resourceVersion" | "uid" | "managedFields" | "creationTimestamp" | "generation"))
}

/// The fields a configuration sets.
pub fn field_paths(config: &Value) -> BTreeSet<FieldPath> {
    let mut out = BTreeSet::new();
    walk(config, &mut Vec::new(), &mut out);
    out.retain(|p| !is_identity(p));
    out
}

fn walk(value: &Value, prefix: &mut Vec<String>, out: &mut BTreeSet<FieldPath>) {
    match value {
        Value::Object(fields) if !fields.is_empty() => {
            for (k, v) in fields {
                prefix.push(k.clone());
                walk(v, prefix, out);
                prefix.pop();
            }
        }
        _ if !prefix.is_empty() => {
            out.insert(prefix.clone());
        }
        _ => {}
    }
}

/// FieldsV1 form: `{"f:spec":{"f:cidrBlock":{}}}`.
pub fn encode(paths: &BTreeSet<FieldPath>) -> Value {
    let mut root = Map::new();
    for path in paths {
        insert(&mut root, path);
    }
    Value::Object(root)
}

fn insert(node: &mut Map<String, Value>, path: &[String]) {
    if let Some((first, rest)) = path.split_first() {
        let child = node
            .entry(format!("f:{first}"))
            .or_insert_with(|| json!({}));
        if let Some(map) = child.as_object_mut() {
            insert(map, rest);
        }
    }
}

/// The paths of a FieldsV1 document (only the `f:` keys this module writes).
pub fn decode(fields: &Value) -> BTreeSet<FieldPath> {
    let mut out = BTreeSet::new();
    decode_into(fields, &mut Vec::new(), &mut out);
    out
}

fn decode_into(node: &Value, prefix: &mut Vec<String>, out: &mut BTreeSet<FieldPath>) {
    let children: Vec<(&String, &Value)> = node
        .as_object()
        .map(|m| m.iter().filter(|(k, _)| k.starts_with("f:")).collect())
        .unwrap_or_default();
    if children.is_empty() {
        if !prefix.is_empty() {
            out.insert(prefix.clone());
        }
        return;
    }
    for (k, v) in children {
        prefix.push(k[2..].to_string());
        decode_into(v, prefix, out);
        prefix.pop();
    }
}

/// Remove one field (and any map it leaves empty).
pub fn remove(object: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    match object
        .pointer_mut(&to_pointer(parents))
        .and_then(Value::as_object_mut)
    {
        Some(map) => {
            map.remove(last);
        }
        None => return,
    }
    // Drop maps emptied by the removal, innermost first (but never the object itself).
    for depth in (1..=parents.len()).rev() {
        let pointer = to_pointer(&parents[..depth]);
        let empty = object
            .pointer(&pointer)
            .and_then(Value::as_object)
            .is_some_and(Map::is_empty);
        if !empty {
            break;
        }
        let parent_pointer = to_pointer(&parents[..depth - 1]);
        if let Some(parent) = object
            .pointer_mut(&parent_pointer)
            .and_then(Value::as_object_mut)
        {
            parent.remove(&parents[depth - 1]);
        }
    }
}

fn to_pointer(path: &[String]) -> String {
    path.iter()
        .map(|k| format!("/{}", k.replace('~', "~0").replace('/', "~1")))
        .collect()
}

/// One Apply manager's record.
pub struct ApplyRecord<'a> {
    pub manager: &'a str,
    pub api_version: &'a str,
    pub subresource: Option<&'a str>,
    pub time: &'a str,
}

/// `merged` (the object after merging `config`) with the fields `record.manager` applied
/// before and left out of `config` removed, and its managedFields entry replaced.
pub fn apply_ownership(
    previous: &Value,
    mut merged: Value,
    config: &Value,
    record: &ApplyRecord<'_>,
    in_scope: impl Fn(&FieldPath) -> bool,
) -> Value {
    let entries: Vec<Value> = previous
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let is_mine = |e: &Value| {
        e.get("manager").and_then(Value::as_str) == Some(record.manager)
            && e.get("operation").and_then(Value::as_str) == Some("Apply")
            && e.get("subresource").and_then(Value::as_str) == record.subresource
    };
    let owned_before: BTreeSet<FieldPath> = entries
        .iter()
        .filter(|e| is_mine(e))
        .flat_map(|e| decode(&e["fieldsV1"]))
        .collect();
    let owned_by_others: BTreeSet<FieldPath> = entries
        .iter()
        .filter(|e| !is_mine(e) && e.get("operation").and_then(Value::as_str) == Some("Apply"))
        .flat_map(|e| decode(&e["fieldsV1"]))
        .collect();
    let now_owned: BTreeSet<FieldPath> = field_paths(config)
        .into_iter()
        .filter(|p| in_scope(p))
        .collect();
    for path in owned_before.difference(&now_owned) {
        if !owned_by_others.contains(path) {
            remove(&mut merged, path);
        }
    }
    let mut kept: Vec<Value> = entries.into_iter().filter(|e| !is_mine(e)).collect();
    let mut entry = json!({
        "manager": record.manager,
        "operation": "Apply",
        "apiVersion": record.api_version,
        "time": record.time,
        "fieldsType": "FieldsV1",
        "fieldsV1": encode(&now_owned),
    });
    if let Some(sub) = record.subresource {
        entry["subresource"] = json!(sub);
    }
    kept.push(entry);
    merged["metadata"]["managedFields"] = Value::Array(kept);
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(keys: &[&str]) -> FieldPath {
        keys.iter().map(|k| k.to_string()).collect()
    }

    #[test]
    fn paths_round_trip_through_fields_v1() {
        let config = json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "c", "labels": { "a": "1" } },
                             "data": { "x": "1", "y": "2" }, "list": [1, 2] });
        let paths = field_paths(&config);
        assert_eq!(
            paths.iter().cloned().collect::<Vec<_>>(),
            [
                p(&["data", "x"]),
                p(&["data", "y"]),
                p(&["list"]),
                p(&["metadata", "labels", "a"])
            ]
        );
        assert_eq!(encode(&paths)["f:data"]["f:x"], json!({}));
        assert_eq!(decode(&encode(&paths)), paths);
    }

    #[test]
    fn a_field_left_out_of_the_next_apply_is_removed_unless_someone_else_owns_it() {
        let record = ApplyRecord {
            manager: "op",
            api_version: "v1",
            subresource: None,
            time: "t",
        };
        let first =
            json!({ "metadata": { "labels": { "a": "1", "b": "2" } }, "data": { "x": "1" } });
        let object = apply_ownership(
            &json!({ "metadata": {} }),
            first.clone(),
            &first,
            &record,
            |_| true,
        );
        let other = ApplyRecord {
            manager: "other",
            ..record
        };
        let shared = json!({ "data": { "x": "1" } });
        let object = apply_ownership(&object, object.clone(), &shared, &other, |_| true);

        let second = json!({ "metadata": { "labels": { "a": "1" } } });
        let mut merged = object.clone();
        json_patch::merge(&mut merged, &second);
        let record = ApplyRecord {
            manager: "op",
            api_version: "v1",
            subresource: None,
            time: "t",
        };
        let result = apply_ownership(&object, merged, &second, &record, |_| true);
        assert_eq!(
            result["metadata"]["labels"],
            json!({ "a": "1" }),
            "b was only op's"
        );
        assert_eq!(result["data"]["x"], "1", "x is also other's");
        assert_eq!(
            result["metadata"]["managedFields"].as_array().map(Vec::len),
            Some(2)
        );
    }

    #[test]
    fn removing_the_last_field_drops_the_emptied_maps() {
        let mut obj = json!({ "spec": { "a": { "b": 1 } }, "keep": 1 });
        remove(&mut obj, &p(&["spec", "a", "b"]));
        assert_eq!(obj, json!({ "keep": 1 }));
    }
}
