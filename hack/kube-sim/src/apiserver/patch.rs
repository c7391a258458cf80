//! The PATCH content types and how each changes an object: JSON merge patch (RFC 7386), JSON
//! patch (RFC 6902), strategic merge patch (lists of objects that Kubernetes merges by a key,
//! such as containers by `name`, are merged element by element; the `$patch`,
//! `$setElementOrder/…`, `$deleteFromPrimitiveList/…` and `$retainKeys` directives are obeyed),
//! and server-side apply (approximated by a merge of the applied configuration). The merge
//! keys come from a table of field names, not from the OpenAPI schema. Pure functions.

use serde_json::{Map, Value};

/// What kind of patch a request carries, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    Merge,
    Json,
    Strategic,
    Apply,
}

impl PatchKind {
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        let media = content_type.split(';').next().unwrap_or_default().trim();
        match media {
            "application/merge-patch+json" => Some(Self::Merge),
            "application/json-patch+json" => Some(Self::Json),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Some(Self::Apply),
            _ => None,
        }
    }
}

/// Parse the request body of a patch of `kind`.
pub fn parse_body(kind: PatchKind, body: &[u8]) -> Result<Value, String> {
    match kind {
        PatchKind::Apply => {
            serde_yaml::from_slice(body).map_err(|e| format!("error decoding YAML: {e}"))
        }
        _ => serde_json::from_slice(body).map_err(|e| format!("error decoding patch: {e}")),
    }
}

/// `current` after applying `patch` of `kind`.
pub fn apply(kind: PatchKind, current: &Value, patch: &Value) -> Result<Value, String> {
    let mut doc = current.clone();
    match kind {
        PatchKind::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| format!("invalid JSON patch: {e}"))?;
            for op in ops.0.iter() {
                // As in kube-apiserver, `test` for null passes when the path is absent
                // (kube-runtime's finalizer helper relies on it).
                if let json_patch::PatchOperation::Test(test) = op {
                    if test.value.is_null() && doc.pointer(test.path.as_str()).is_none() {
                        continue;
                    }
                }
                json_patch::patch(&mut doc, std::slice::from_ref(op))
                    .map_err(|e| format!("the JSON patch could not be applied: {e}"))?;
            }
        }
        PatchKind::Merge => json_patch::merge(&mut doc, patch),
        PatchKind::Strategic => strategic_merge(&mut doc, patch),
        PatchKind::Apply => json_patch::merge(&mut doc, &without_directives(patch)),
    }
    Ok(doc)
}

/// The key by which Kubernetes merges the elements of list `field` in a strategic merge
/// patch (its `patchMergeKey`), for lists of objects; `None` means the list is replaced.
/// `kubectl apply` of a changed container env or probe depends on this: without it the
/// patch's partial container would replace the whole one.
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    if !items.iter().all(Value::is_object) {
        return None;
    }
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        // Container ports merge by containerPort, a Service's by port.
        "ports" if items.iter().any(|i| i.get("containerPort").is_some()) => Some("containerPort"),
        "ports" => Some("port"),
        "conditions" | "addresses" => Some("type"),
        "ownerReferences" => Some("uid"),
        "hostAliases" => Some("ip"),
        _ => None,
    }
}

/// Applies a strategic merge patch to `target`: maps merge as in a merge patch (`null`
/// deletes), lists with a merge key merge element by element, other lists are replaced.
fn strategic_merge(target: &mut Value, patch: &Value) {
    let Value::Object(fields) = patch else {
        *target = without_directives(patch);
        return;
    };
    if fields.get("$patch").and_then(Value::as_str) == Some("replace") {
        *target = without_directives(patch);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(object) = target else {
        return;
    };
    for (field, value) in fields.iter().filter(|(k, _)| !k.starts_with('$')) {
        match (object.get_mut(field), value) {
            (_, Value::Null) => {
                object.remove(field);
            }
            (Some(Value::Array(current)), Value::Array(items)) => match merge_key(field, items) {
                Some(key) => merge_list(current, items, key),
                None => *current = strip_deleted(items),
            },
            (Some(current @ Value::Object(_)), Value::Object(_)) => strategic_merge(current, value),
            _ => {
                object.insert(field.clone(), without_directives(value));
            }
        }
    }
    for (directive, value) in fields {
        if let Some(field) = directive.strip_prefix("$setElementOrder/") {
            if let (Some(Value::Array(current)), Value::Array(order)) =
                (object.get_mut(field), value)
            {
                reorder(current, order, field);
            }
        } else if let Some(field) = directive.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(current)), Value::Array(gone)) =
                (object.get_mut(field), value)
            {
                current.retain(|v| !gone.contains(v));
            }
        } else if directive == "$retainKeys" {
            if let Value::Array(keep) = value {
                object.retain(|k, _| keep.iter().any(|kept| kept.as_str() == Some(k)));
            }
        }
    }
}

/// Merges the patch's `items` into `current` by `key`: an element with the key of an
/// existing one merges into it (or removes it, with `$patch: delete`), others are appended.
fn merge_list(current: &mut Vec<Value>, items: &[Value], key: &str) {
    for item in items {
        let id = item.get(key);
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        let existing = current
            .iter_mut()
            .find(|c| id.is_some() && c.get(key) == id);
        match (existing, delete) {
            (Some(_), true) => current.retain(|c| c.get(key) != id),
            (Some(element), false) => strategic_merge(element, item),
            (None, true) => {}
            (None, false) => current.push(without_directives(item)),
        }
    }
}

/// Orders `current` as `$setElementOrder/<field>` lists it; elements it does not name keep
/// their relative order after the named ones.
fn reorder(current: &mut [Value], order: &[Value], field: &str) {
    let Some(key) = merge_key(field, order) else {
        return;
    };
    let position = |element: &Value| {
        order
            .iter()
            .position(|o| o.get(key) == element.get(key))
            .unwrap_or(order.len())
    };
    current.sort_by_key(position);
}

/// A patch list as data: without the elements it asks to delete, and without directives.
fn strip_deleted(items: &[Value]) -> Vec<Value> {
    items
        .iter()
        .filter(|i| i.get("$patch").and_then(Value::as_str) != Some("delete"))
        .map(without_directives)
        .collect()
}

/// A strategic merge patch without its `$patch`, `$setElementOrder/…`, `$retainKeys` and
/// `$deleteFromPrimitiveList/…` keys, which a plain merge would store as data.
fn without_directives(patch: &Value) -> Value {
    match patch {
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), without_directives(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_directives).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn content_types_map_to_kinds() {
        assert_eq!(
            PatchKind::from_content_type("application/merge-patch+json"),
            Some(PatchKind::Merge)
        );
        assert_eq!(
            PatchKind::from_content_type("application/apply-patch+yaml; charset=utf-8"),
            Some(PatchKind::Apply)
        );
        assert_eq!(PatchKind::from_content_type("application/json"), None);
    }

    #[test]
    fn merge_json_and_strategic_patches_change_the_object() {
        let obj =
            json!({ "metadata": { "labels": { "a": "1", "b": "2" } }, "spec": { "x": [1, 2] } });
        let merged = apply(
            PatchKind::Merge,
            &obj,
            &json!({ "metadata": { "labels": { "a": null, "c": "3" } } }),
        )
        .expect("merge");
        assert_eq!(merged["metadata"]["labels"], json!({ "b": "2", "c": "3" }));
        let patched = apply(
            PatchKind::Json,
            &obj,
            &json!([{ "op": "add", "path": "/spec/x/-", "value": 3 }]),
        )
        .expect("json patch");
        assert_eq!(patched["spec"]["x"], json!([1, 2, 3]));
        let strategic = apply(
            PatchKind::Strategic,
            &obj,
            &json!({ "$setElementOrder/x": [], "spec": { "x": [9], "$retainKeys": ["x"] } }),
        )
        .expect("strategic");
        assert_eq!(strategic["spec"], json!({ "x": [9] }));
        assert!(apply(
            PatchKind::Json,
            &obj,
            &json!([{ "op": "remove", "path": "/nope" }])
        )
        .is_err());
        let absent_is_null = json!([{ "op": "test", "path": "/metadata/finalizers", "value": null },
                                    { "op": "add", "path": "/metadata/finalizers", "value": ["f"] }]);
        let with_finalizer =
            apply(PatchKind::Json, &obj, &absent_is_null).expect("test null on an absent path");
        assert_eq!(with_finalizer["metadata"]["finalizers"], json!(["f"]));
        let wrong = json!([{ "op": "test", "path": "/metadata/labels/a", "value": "9" }]);
        assert!(apply(PatchKind::Json, &obj, &wrong).is_err());
    }

    #[test]
    fn strategic_patches_merge_keyed_lists_element_by_element() {
        let deployment = json!({ "spec": { "template": { "spec": { "containers": [
            { "name": "web", "image": "app:v1", "args": ["--serve", "8080"],
              "env": [{ "name": "VERSION", "value": "v1" }, { "name": "MODE", "value": "x" }],
              "readinessProbe": { "httpGet": { "port": 8080 } } },
            { "name": "side", "image": "side:v1" },
        ] } } } });
        // What `kubectl apply` sends when only VERSION changed and MODE was removed.
        let patch = json!({ "spec": { "template": { "spec": {
            "$setElementOrder/containers": [{ "name": "web" }, { "name": "side" }],
            "containers": [{ "name": "web",
                "$setElementOrder/env": [{ "name": "VERSION" }],
                "env": [{ "name": "VERSION", "value": "v2" }, { "name": "MODE", "$patch": "delete" }] }],
        } } } });
        let patched = apply(PatchKind::Strategic, &deployment, &patch).expect("strategic");
        let containers = &patched["spec"]["template"]["spec"]["containers"];
        assert_eq!(
            containers[0],
            json!({ "name": "web", "image": "app:v1", "args": ["--serve", "8080"],
                    "env": [{ "name": "VERSION", "value": "v2" }],
                    "readinessProbe": { "httpGet": { "port": 8080 } } })
        );
        assert_eq!(containers[1], json!({ "name": "side", "image": "side:v1" }));

        // A new element is appended, then put where $setElementOrder says; args (no merge
        // key) are replaced; $deleteFromPrimitiveList removes values.
        let patch = json!({ "metadata": { "$deleteFromPrimitiveList/finalizers": ["a"] },
            "spec": { "template": { "spec": {
            "$setElementOrder/containers": [{ "name": "init" }, { "name": "web" }, { "name": "side" }],
            "containers": [{ "name": "init", "image": "i" }, { "name": "web", "args": ["--serve", "9090"] }],
        } } } });
        let mut with_finalizers = deployment.clone();
        with_finalizers["metadata"] = json!({ "finalizers": ["a", "b"] });
        let patched = apply(PatchKind::Strategic, &with_finalizers, &patch).expect("strategic");
        let containers = &patched["spec"]["template"]["spec"]["containers"];
        let names: Vec<&str> = containers
            .as_array()
            .expect("list")
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(names, ["init", "web", "side"]);
        assert_eq!(containers[1]["args"], json!(["--serve", "9090"]));
        assert_eq!(containers[1]["image"], "app:v1");
        assert_eq!(patched["metadata"]["finalizers"], json!(["b"]));

        // `$patch: replace` replaces a map instead of merging into it.
        let replaced = apply(
            PatchKind::Strategic,
            &json!({ "spec": { "a": 1, "b": 2 } }),
            &json!({ "spec": { "$patch": "replace", "c": 3 } }),
        )
        .expect("strategic");
        assert_eq!(replaced["spec"], json!({ "c": 3 }));
    }

    #[test]
    fn apply_bodies_are_yaml() {
        let body =
            parse_body(PatchKind::Apply, b"metadata:\n  name: x\nspec:\n  n: 1\n").expect("yaml");
        assert_eq!(body["spec"]["n"], 1);
    }
}
