//! Checking custom objects against their CRD's `openAPIV3Schema`, as kube-apiserver does:
//! types (string, integer, number, boolean, object, array), `required`, `enum`, `nullable`,
//! nested `properties`, `items` and `additionalProperties`, `x-kubernetes-int-or-string` and
//! `x-kubernetes-preserve-unknown-fields`; and pruning the fields the schema does not know.
//! Pure functions over `serde_json::Value`.

use serde_json::{Map, Value};

use super::status::FieldError;

/// Every violation of `schema` by `object` (a whole custom object; `metadata` is not checked).
pub fn validate(schema: &Value, object: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    check_object_properties(schema, object, "", &mut errors, true);
    errors
}

fn check(schema: &Value, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    if value.is_null() {
        if !flag(schema, "nullable") && schema.get("type").is_some() {
            errors.push(type_error(path, schema_type(schema), "null"));
        }
        return;
    }
    if flag(schema, "x-kubernetes-int-or-string") {
        if !(value.is_string() || is_integer(value)) {
            errors.push(type_error(path, "integer-or-string", json_type(value)));
        }
        return;
    }
    let expected = schema_type(schema);
    let type_ok = match expected {
        "string" => value.is_string(),
        "integer" => is_integer(value),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        _ => true,
    };
    if !type_ok {
        errors.push(type_error(path, expected, json_type(value)));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
            errors.push(FieldError {
                field: path.to_string(),
                reason: "FieldValueNotSupported",
                detail: format!("{value}: supported values: {}", list.join(", ")),
            });
        }
    }
    match value {
        Value::Object(_) => check_object_properties(schema, value, path, errors, false),
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(item_schema, item, &format!("{path}[{i}]"), errors);
                }
            }
        }
        _ => {}
    }
}

fn check_object_properties(
    schema: &Value,
    value: &Value,
    path: &str,
    errors: &mut Vec<FieldError>,
    root: bool,
) {
    let Some(fields) = value.as_object() else {
        return;
    };
    for name in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !fields.contains_key(name) {
            errors.push(FieldError {
                field: join(path, name),
                reason: "FieldValueRequired",
                detail: String::new(),
            });
        }
    }
    let properties = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    for (name, child) in fields {
        if root && matches!(name.as_str(), "metadata" | "apiVersion" | "kind") {
            continue;
        }
        let child_schema = properties.and_then(|p| p.get(name)).or(additional);
        if let Some(child_schema) = child_schema {
            check(child_schema, child, &join(path, name), errors);
        }
    }
}

/// Remove the fields `schema` does not declare (unless it preserves unknown fields); returns
/// their paths, which strict field validation reports instead of dropping silently.
pub fn prune(schema: &Value, object: &mut Value) -> Vec<String> {
    let mut pruned = Vec::new();
    prune_at(schema, object, "", &mut pruned, true);
    pruned
}

fn prune_at(schema: &Value, value: &mut Value, path: &str, pruned: &mut Vec<String>, root: bool) {
    match value {
        Value::Object(fields) => prune_object(schema, fields, path, pruned, root),
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune_at(item_schema, item, &format!("{path}[{i}]"), pruned, false);
                }
            }
        }
        _ => {}
    }
}

fn prune_object(
    schema: &Value,
    fields: &mut Map<String, Value>,
    path: &str,
    pruned: &mut Vec<String>,
    root: bool,
) {
    let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields")
        || flag(schema, "x-kubernetes-embedded-resource")
        || schema
            .get("additionalProperties")
            .is_some_and(|a| a == &Value::Bool(true));
    let properties = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    let names: Vec<String> = fields.keys().cloned().collect();
    for name in names {
        if root && matches!(name.as_str(), "metadata" | "apiVersion" | "kind") {
            continue;
        }
        let child_path = join(path, &name);
        match properties.and_then(|p| p.get(&name)).or(additional) {
            Some(child_schema) => {
                if let Some(child) = fields.get_mut(&name) {
                    prune_at(child_schema, child, &child_path, pruned, false);
                }
            }
            None if !preserve => {
                fields.remove(&name);
                pruned.push(child_path);
            }
            None => {}
        }
    }
}

fn type_error(path: &str, expected: &str, actual: &str) -> FieldError {
    FieldError {
        field: path.to_string(),
        reason: "FieldValueTypeInvalid",
        detail: format!("\"{actual}\": {path} in body must be of type {expected}: \"{actual}\""),
    }
}

fn schema_type(schema: &Value) -> &str {
    schema.get("type").and_then(Value::as_str).unwrap_or("")
}

fn flag(schema: &Value, name: &str) -> bool {
    schema.get(name).and_then(Value::as_bool).unwrap_or(false)
}

fn is_integer(value: &Value) -> bool {
    value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0)
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) if is_integer(value) => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn subnet_schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["cidrBlock"],
                    "properties": {
                        "cidrBlock": { "type": "string" },
                        "vlanId": { "x-kubernetes-int-or-string": true },
                        "private": { "type": "boolean" },
                        "excludeIps": { "type": "array", "items": { "type": "string" } },
                        "protocol": { "type": "string", "enum": ["IPv4", "IPv6", "Dual"] },
                        "extra": { "type": "object", "x-kubernetes-preserve-unknown-fields": true },
                        "labels": { "type": "object", "additionalProperties": { "type": "string" } }
                    }
                },
                "status": { "type": "object", "properties": { "v4usingIPs": { "type": "number" } } }
            }
        })
    }

    #[test]
    fn a_number_where_a_string_is_declared_names_the_field() {
        let obj = json!({ "apiVersion": "kubeovn.io/v1", "kind": "Subnet", "metadata": { "name": "s" },
                          "spec": { "cidrBlock": 10 } });
        let errors = validate(&subnet_schema(), &obj);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "spec.cidrBlock");
        assert_eq!(
            errors[0].to_string(),
            "spec.cidrBlock: Invalid value: \"integer\": spec.cidrBlock in body must be of type string: \"integer\""
        );
    }

    #[test]
    fn required_enum_items_and_maps_are_checked() {
        let obj = json!({ "spec": { "excludeIps": ["a", 1], "protocol": "IPX", "labels": { "a": true },
                                    "vlanId": "10", "private": "yes" } });
        let fields: Vec<String> = validate(&subnet_schema(), &obj)
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert!(fields.contains(&"spec.cidrBlock".to_string()), "{fields:?}");
        assert!(
            fields.contains(&"spec.excludeIps[1]".to_string()),
            "{fields:?}"
        );
        assert!(fields.contains(&"spec.protocol".to_string()), "{fields:?}");
        assert!(fields.contains(&"spec.labels.a".to_string()), "{fields:?}");
        assert!(fields.contains(&"spec.private".to_string()), "{fields:?}");
        assert_eq!(fields.len(), 5, "{fields:?}");
    }

    #[test]
    fn int_or_string_accepts_both() {
        for vlan in [json!(10), json!("10")] {
            let obj = json!({ "spec": { "cidrBlock": "10.0.0.0/24", "vlanId": vlan } });
            assert!(validate(&subnet_schema(), &obj).is_empty());
        }
        let obj = json!({ "spec": { "cidrBlock": "10.0.0.0/24", "vlanId": true } });
        assert_eq!(validate(&subnet_schema(), &obj).len(), 1);
    }

    #[test]
    fn unknown_fields_are_pruned_except_where_preserved() {
        let mut obj = json!({ "apiVersion": "v", "kind": "Subnet", "metadata": { "name": "s", "x": 1 },
                              "spec": { "cidrBlock": "10.0.0.0/24", "cidr": "x", "extra": { "any": 1 } },
                              "junk": true });
        let pruned = prune(&subnet_schema(), &mut obj);
        assert_eq!(pruned, vec!["junk".to_string(), "spec.cidr".to_string()]);
        assert_eq!(obj["spec"]["extra"]["any"], 1);
        assert_eq!(obj["metadata"]["x"], 1);
        assert!(obj["spec"].get("cidr").is_none());
    }
}
