//! The PATCH content types and how each changes an object: JSON merge patch (RFC 7386), JSON
//! patch (RFC 6902), strategic merge patch (handled as a merge patch, after dropping the `$…`
//! directives), and server-side apply (approximated by a merge of the applied configuration).
//! Pure functions.

use serde_json::Value;

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
            json_patch::patch(&mut doc, &ops)
                .map_err(|e| format!("the JSON patch could not be applied: {e}"))?;
        }
        PatchKind::Merge => json_patch::merge(&mut doc, patch),
        PatchKind::Strategic | PatchKind::Apply => {
            json_patch::merge(&mut doc, &without_directives(patch))
        }
    }
    Ok(doc)
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
    }

    #[test]
    fn apply_bodies_are_yaml() {
        let body =
            parse_body(PatchKind::Apply, b"metadata:\n  name: x\nspec:\n  n: 1\n").expect("yaml");
        assert_eq!(body["spec"]["n"], 1);
    }
}
