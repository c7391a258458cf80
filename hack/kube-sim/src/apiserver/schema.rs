//! Checking custom objects against their CRD's `openAPIV3Schema`, as kube-apiserver does:
//! types (string, integer, number, boolean, object, array), `required`, `enum`, `nullable`,
//! nested `properties`, `items` and `additionalProperties`, `x-kubernetes-int-or-string` and
//! `x-kubernetes-preserve-unknown-fields`; and pruning the fields the schema does not know.
//! Also the few checks of built-in kinds that tests depend on (a Pod needs containers), and
//! of metadata for every kind (names, label keys and values).
//! Pure functions over `serde_json::Value`.

use serde_json::{Map, Value};

use super::status::FieldError;

/// Every violation of `schema` by `object` (a whole custom object; `metadata` is not checked).
pub fn validate(schema: &Value, object: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    check_object_properties(schema, object, "", &mut errors, true);
    errors
}

/// Metadata rules of every kind: the name is a DNS-1123 subdomain (a DNS-1123 label for
/// namespaces), label keys are `[prefix/]name` and label values are at most 63 characters of
/// alphanumerics, `-`, `_` and `.`, beginning and ending with an alphanumeric.
pub fn validate_metadata(kind: &str, object: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if let Some(name) = object.pointer("/metadata/name").and_then(Value::as_str) {
        let ok = if kind == "Namespace" {
            is_dns_label(name)
        } else {
            is_dns_subdomain(name)
        };
        if !ok {
            let rule = if kind == "Namespace" {
                "RFC 1123 label"
            } else {
                "RFC 1123 subdomain"
            };
            errors.push(FieldError::invalid(
                "metadata.name",
                format!("{name:?}: a lowercase {rule} must consist of lower case alphanumeric characters, '-' or '.'"),
            ));
        }
    }
    let labels = object
        .pointer("/metadata/labels")
        .and_then(Value::as_object);
    for (key, value) in labels.into_iter().flatten() {
        let field = format!("metadata.labels[{key}]");
        if !is_qualified_name(key) {
            errors.push(FieldError::invalid(
                field.clone(),
                format!("{key:?}: name part must be a valid label key"),
            ));
        }
        match value.as_str() {
            Some(v) if is_label_value(v) => {}
            Some(v) => errors.push(FieldError::invalid(
                field,
                format!("{v:?}: a valid label must be 63 characters or less, alphanumerics, '-', '_' or '.'"),
            )),
            None => errors.push(FieldError::type_invalid(&field, "string", json_type(value))),
        }
    }
    errors
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn is_label_value(v: &str) -> bool {
    let inner_ok = v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let ends_ok = v.chars().next().is_none_or(|c| c.is_ascii_alphanumeric())
        && v.chars().last().is_none_or(|c| c.is_ascii_alphanumeric());
    v.len() <= 63 && inner_ok && ends_ok
}

fn is_qualified_name(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    prefix.is_none_or(is_dns_subdomain) && !name.is_empty() && is_label_value(name)
}

/// The checks kube-apiserver makes on built-in kinds that matter to us: each container of a Pod
/// has a name and an image. Unlike kube-apiserver, a Pod without containers is accepted: the
/// user guide's pod manifests (shared/seed) have no `spec`, and they must work verbatim here;
/// such a pod is a network sandbox only, which is all the node simulator runs anyway.
pub fn validate_builtin(group: &str, kind: &str, object: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if (group, kind) == ("", "Pod") {
        if let Some(containers) = object.pointer("/spec/containers").and_then(Value::as_array) {
            {
                for (i, c) in containers.iter().enumerate() {
                    for field in ["name", "image"] {
                        if c.get(field)
                            .and_then(Value::as_str)
                            .is_none_or(str::is_empty)
                        {
                            errors.push(FieldError::required(
                                format!("spec.containers[{i}].{field}"),
                                "",
                            ));
                        }
                    }
                }
            }
        }
    }
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
            errors.push(FieldError::not_supported(path, &value.to_string(), &list));
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
            errors.push(FieldError::required(join(path, name), ""));
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
    FieldError::type_invalid(path, expected, actual)
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
    fn pod_containers_need_names_and_images_but_a_spec_less_pod_is_accepted() {
        let pod = json!({ "spec": { "containers": [{ "name": "app", "image": "nginx" }] } });
        assert!(validate_builtin("", "Pod", &pod).is_empty());
        let fields = |o: Value| -> Vec<String> {
            validate_builtin("", "Pod", &o)
                .into_iter()
                .map(|e| e.field)
                .collect()
        };
        // The guide's `frontend` pod, verbatim, has no spec.
        assert!(fields(json!({ "metadata": { "name": "frontend" } })).is_empty());
        assert_eq!(
            fields(json!({ "spec": { "containers": [{ "name": "app" }] } })),
            ["spec.containers[0].image"]
        );
    }

    #[test]
    fn names_and_labels_follow_the_metadata_rules() {
        let ok = json!({ "metadata": { "name": "subnet-secondary.v1",
                                        "labels": { "kubeovn.io/provider": "kube-ovn-vpc-network.default.ovn", "a": "" } } });
        assert!(validate_metadata("Subnet", &ok).is_empty());
        let fields = |kind: &str, o: Value| -> Vec<String> {
            validate_metadata(kind, &o)
                .into_iter()
                .map(|e| e.field)
                .collect()
        };
        assert_eq!(
            fields("Pod", json!({ "metadata": { "name": "Upper" } })),
            ["metadata.name"]
        );
        assert_eq!(
            fields("Namespace", json!({ "metadata": { "name": "a.b" } })),
            ["metadata.name"]
        );
        let long = "x".repeat(64);
        assert_eq!(
            fields(
                "Pod",
                json!({ "metadata": { "name": "p", "labels": { "k": long, "bad key!": "v", "n": 1 } } })
            ),
            [
                "metadata.labels[bad key!]",
                "metadata.labels[k]",
                "metadata.labels[n]"
            ]
        );
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
