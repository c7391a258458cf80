//! What an API server does with a CRD's structural schema, offline: checks a JSON value
//! against a `JSONSchemaProps` (types, formats, required fields, enums, patterns, bounds,
//! `anyOf`, list types, unknown fields) and checks that a schema is structural. Used on the
//! alm-examples (against the bundle's CRDs) and on the CSV (against OLM's own CSV schema).
//!
//! Unknown fields are reported, not silently dropped: an API server would prune them, so a
//! sample that relies on one does not do what it says. Not evaluated: CEL rules
//! (`x-kubernetes-validations`), `date-time` beyond its shape.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use serde_json::Value;

/// The errors of `value` against `schema` (the root of an object: `apiVersion`, `kind`,
/// `metadata` are allowed there). Each names the path, e.g. `.spec.gateway: …`.
pub fn validate_object(schema: &JSONSchemaProps, value: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let cache = Patterns::default();
    check(
        &Ctx {
            root: true,
            patterns: &cache,
        },
        "",
        schema,
        value,
        &mut errors,
    );
    errors
}

/// Compiled `pattern`s, by source.
#[derive(Default)]
struct Patterns(std::cell::RefCell<BTreeMap<String, Option<regex::Regex>>>);

struct Ctx<'a> {
    root: bool,
    patterns: &'a Patterns,
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(60).collect::<String>())
    } else {
        text
    }
}

fn type_matches(ty: &str, value: &Value) -> bool {
    match ty {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        _ => true,
    }
}

fn check(
    ctx: &Ctx<'_>,
    path: &str,
    schema: &JSONSchemaProps,
    value: &Value,
    errors: &mut Vec<String>,
) {
    if value.is_null() {
        if schema.nullable != Some(true) {
            errors.push(format!("{}: null is not allowed", display(path)));
        }
        return;
    }
    let int_or_string = schema.x_kubernetes_int_or_string == Some(true);
    if int_or_string {
        if !(value.is_string() || value.is_i64() || value.is_u64()) {
            errors.push(format!(
                "{}: {} is neither an integer nor a string",
                display(path),
                short(value)
            ));
            return;
        }
    } else if let Some(ty) = schema.type_.as_deref() {
        if !type_matches(ty, value) {
            errors.push(format!(
                "{}: {} is {}, not {ty}",
                display(path),
                short(value),
                type_name(value)
            ));
            return;
        }
    }
    if let Some(branches) = &schema.any_of {
        // Structural schemas put only value checks in anyOf (int-or-string's patterns).
        let mut any = false;
        let mut first = Vec::new();
        for (i, branch) in branches.iter().enumerate() {
            let mut branch_errors = Vec::new();
            check(ctx, path, branch, value, &mut branch_errors);
            if branch_errors.is_empty() {
                any = true;
                break;
            }
            if i == 0 {
                first = branch_errors;
            }
        }
        if !any {
            errors.push(format!(
                "{}: matches no anyOf branch ({})",
                display(path),
                first.join("; ")
            ));
        }
    }
    if let Some(all) = &schema.all_of {
        for branch in all {
            check(ctx, path, branch, value, errors);
        }
    }
    if let Some(values) = &schema.enum_ {
        if !values.iter().any(|v| v.0 == *value) {
            let allowed: Vec<String> = values.iter().map(|v| v.0.to_string()).collect();
            errors.push(format!(
                "{}: {} is not one of {}",
                display(path),
                short(value),
                allowed.join(", ")
            ));
        }
    }
    match value {
        Value::String(s) => check_string(ctx, path, schema, s, errors),
        Value::Number(_) => check_number(path, schema, value, errors),
        Value::Array(items) => check_array(ctx, path, schema, items, errors),
        Value::Object(map) => check_object(ctx, path, schema, map, errors),
        _ => {}
    }
}

fn display(path: &str) -> &str {
    if path.is_empty() {
        "(root)"
    } else {
        path
    }
}

fn check_string(
    ctx: &Ctx<'_>,
    path: &str,
    schema: &JSONSchemaProps,
    s: &str,
    errors: &mut Vec<String>,
) {
    let len = s.chars().count() as i64;
    if let Some(max) = schema.max_length {
        if len > max {
            errors.push(format!("{}: longer than {max} characters", display(path)));
        }
    }
    if let Some(min) = schema.min_length {
        if len < min {
            errors.push(format!("{}: shorter than {min} characters", display(path)));
        }
    }
    if let Some(pattern) = &schema.pattern {
        let mut cache = ctx.patterns.0.borrow_mut();
        let re = cache
            .entry(pattern.clone())
            .or_insert_with(|| regex::Regex::new(pattern).ok());
        match re {
            Some(re) if !re.is_match(s) => errors.push(format!(
                "{}: {s:?} does not match the pattern {pattern}",
                display(path)
            )),
            Some(_) => {}
            None => errors.push(format!(
                "{}: the schema's pattern {pattern:?} does not compile",
                display(path)
            )),
        }
    }
    let well_formed = match schema.format.as_deref() {
        Some("byte") => base64::engine::general_purpose::STANDARD.decode(s).is_ok(),
        Some("date-time") => s.len() >= 20 && s.as_bytes()[4] == b'-' && s.as_bytes()[10] == b'T',
        _ => true,
    };
    if !well_formed {
        errors.push(format!(
            "{}: {s:?} is not of format {}",
            display(path),
            schema.format.as_deref().unwrap_or("")
        ));
    }
}

fn check_number(path: &str, schema: &JSONSchemaProps, value: &Value, errors: &mut Vec<String>) {
    let Some(n) = value.as_f64() else { return };
    match schema.format.as_deref() {
        Some("int32") if value.as_i64().is_none_or(|i| i32::try_from(i).is_err()) => {
            errors.push(format!("{}: {n} is out of int32 range", display(path)));
        }
        Some("int64") if value.as_i64().is_none() => {
            errors.push(format!("{}: {n} is out of int64 range", display(path)));
        }
        _ => {}
    }
    if let Some(max) = schema.maximum {
        if n > max || (schema.exclusive_maximum == Some(true) && n == max) {
            errors.push(format!("{}: {n} is above the maximum {max}", display(path)));
        }
    }
    if let Some(min) = schema.minimum {
        if n < min || (schema.exclusive_minimum == Some(true) && n == min) {
            errors.push(format!("{}: {n} is below the minimum {min}", display(path)));
        }
    }
}

fn check_array(
    ctx: &Ctx<'_>,
    path: &str,
    schema: &JSONSchemaProps,
    items: &[Value],
    errors: &mut Vec<String>,
) {
    let len = items.len() as i64;
    if let Some(max) = schema.max_items {
        if len > max {
            errors.push(format!("{}: more than {max} items", display(path)));
        }
    }
    if let Some(min) = schema.min_items {
        if len < min {
            errors.push(format!("{}: fewer than {min} items", display(path)));
        }
    }
    match schema.x_kubernetes_list_type.as_deref() {
        Some("set") => {
            let mut seen = BTreeSet::new();
            for item in items {
                if !seen.insert(item.to_string()) {
                    errors.push(format!(
                        "{}: duplicate {} in a set",
                        display(path),
                        short(item)
                    ));
                }
            }
        }
        Some("map") => {
            let keys = schema
                .x_kubernetes_list_map_keys
                .clone()
                .unwrap_or_default();
            let mut seen = BTreeSet::new();
            for item in items {
                let key: Vec<String> = keys.iter().map(|k| item[k].to_string()).collect();
                if !seen.insert(key.clone()) {
                    errors.push(format!(
                        "{}: duplicate entry for key {}",
                        display(path),
                        key.join("/")
                    ));
                }
            }
        }
        _ => {}
    }
    if let Some(JSONSchemaPropsOrArray::Schema(item_schema)) = &schema.items {
        let child = Ctx {
            root: false,
            patterns: ctx.patterns,
        };
        for (i, item) in items.iter().enumerate() {
            check(&child, &format!("{path}[{i}]"), item_schema, item, errors);
        }
    }
}

fn check_object(
    ctx: &Ctx<'_>,
    path: &str,
    schema: &JSONSchemaProps,
    map: &serde_json::Map<String, Value>,
    errors: &mut Vec<String>,
) {
    let embedded = ctx.root || schema.x_kubernetes_embedded_resource == Some(true);
    for required in schema.required.iter().flatten() {
        if !map.contains_key(required) {
            errors.push(format!("{path}.{required}: required field missing"));
        }
    }
    if let Some(max) = schema.max_properties {
        if map.len() as i64 > max {
            errors.push(format!("{}: more than {max} properties", display(path)));
        }
    }
    let preserves = schema.x_kubernetes_preserve_unknown_fields == Some(true);
    let child = Ctx {
        root: false,
        patterns: ctx.patterns,
    };
    for (key, item) in map {
        let item_path = format!("{path}.{key}");
        // An object's type and metadata are the API server's, whatever the schema says.
        if embedded && ["apiVersion", "kind", "metadata"].contains(&key.as_str()) {
            continue;
        }
        if let Some(property) = schema.properties.as_ref().and_then(|p| p.get(key)) {
            check(&child, &item_path, property, item, errors);
            continue;
        }
        match &schema.additional_properties {
            Some(JSONSchemaPropsOrBool::Schema(values)) => {
                check(&child, &item_path, values, item, errors)
            }
            Some(JSONSchemaPropsOrBool::Bool(true)) => {}
            _ if preserves => {}
            _ => errors.push(format!(
                "{item_path}: unknown field (an API server prunes it)"
            )),
        }
    }
}

/// Kubernetes' structural-schema rules a generator can break: every node has a type (or
/// preserves unknown fields, or is int-or-string), no `$ref`, `anyOf`/`oneOf`/`allOf`
/// branches carry no types of their own, and no node has both `properties` and
/// `additionalProperties`.
pub fn structural_errors(path: &str, schema: &JSONSchemaProps) -> Vec<String> {
    let mut errors = Vec::new();
    structural(path, schema, &mut errors);
    errors
}

fn structural(path: &str, schema: &JSONSchemaProps, errors: &mut Vec<String>) {
    if schema.ref_path.is_some() {
        errors.push(format!("{path}: $ref is not allowed"));
    }
    let preserves = schema.x_kubernetes_preserve_unknown_fields == Some(true);
    let int_or_string = schema.x_kubernetes_int_or_string == Some(true);
    if schema.type_.is_none() && !preserves && !int_or_string {
        errors.push(format!("{path}: no type"));
    }
    for combinator in [&schema.any_of, &schema.one_of, &schema.all_of]
        .into_iter()
        .flatten()
    {
        for branch in combinator {
            if branch.type_.is_some() {
                errors.push(format!("{path}: a typed branch in anyOf/oneOf/allOf"));
            }
        }
    }
    for (name, property) in schema.properties.iter().flatten() {
        structural(&format!("{path}.{name}"), property, errors);
    }
    match &schema.items {
        Some(JSONSchemaPropsOrArray::Schema(items)) => {
            structural(&format!("{path}[]"), items, errors)
        }
        Some(JSONSchemaPropsOrArray::Schemas(_)) => {
            errors.push(format!("{path}: items is a list of schemas"))
        }
        None => {}
    }
    if let Some(JSONSchemaPropsOrBool::Schema(values)) = &schema.additional_properties {
        if schema.properties.is_some() {
            errors.push(format!("{path}: both properties and additionalProperties"));
        }
        structural(&format!("{path}{{}}"), values, errors);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(v: Value) -> JSONSchemaProps {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn types_required_enums_and_unknown_fields() {
        let s = schema(json!({
            "type": "object",
            "required": ["spec"],
            "properties": {"spec": {"type": "object", "properties": {
                "mode": {"type": "string", "enum": ["A", "B"]},
                "n": {"type": "integer", "format": "int32", "minimum": 1},
                "q": {"anyOf": [{"type": "integer"}, {"type": "string", "pattern": "^[0-9]+m$"}],
                      "x-kubernetes-int-or-string": true}
            }}}
        }));
        let ok = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a"},
                        "spec": {"mode": "A", "n": 3, "q": "200m"}});
        assert_eq!(validate_object(&s, &ok), Vec::<String>::new());
        let bad = json!({"spec": {"mode": "C", "n": 0, "q": "lots", "extra": 1}});
        let errors = validate_object(&s, &bad);
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with(".spec.mode: \"C\" is not one of")),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with(".spec.n: 0 is below the minimum")),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with(".spec.q: matches no anyOf branch")),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e == ".spec.extra: unknown field (an API server prunes it)"),
            "{errors:?}"
        );
        let errors = validate_object(&s, &json!({}));
        assert_eq!(errors, vec![".spec: required field missing".to_owned()]);
        let errors = validate_object(&s, &json!({"spec": {"n": "3"}}));
        assert_eq!(
            errors,
            vec![".spec.n: \"3\" is string, not integer".to_owned()]
        );
    }

    #[test]
    fn a_schema_with_an_untyped_node_is_not_structural() {
        let s = schema(json!({"type": "object", "properties": {"a": {}}}));
        assert_eq!(structural_errors("x", &s), vec!["x.a: no type".to_owned()]);
    }
}
