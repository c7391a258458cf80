//! The `scale` subresource of Deployments, ReplicaSets and StatefulSets (what `kubectl scale`
//! writes): an `autoscaling/v1` Scale read from the object (`spec.replicas`, `status.replicas`,
//! the selector as a string) and written back to its `spec.replicas`. Routing is in `http.rs`.

use serde_json::{json, Value};

use super::patch::{self, PatchKind};
use super::resources::ResourceType;
use super::status::ApiError;
use super::store::{Part, Store, WriteOptions};

/// What a request does to a Scale.
pub enum ScaleRequest {
    Get,
    Replace(Value),
    Patch(PatchKind, Value),
}

/// Whether `rt` has a scale subresource.
pub fn serves(rt: &ResourceType) -> bool {
    rt.group == "apps"
        && matches!(
            rt.plural.as_str(),
            "deployments" | "replicasets" | "statefulsets"
        )
}

/// The Scale of `object`.
pub fn scale_of(object: &Value) -> Value {
    let selector: Vec<String> = object
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    let meta = &object["metadata"];
    json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {
            "name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": { "replicas": object.pointer("/spec/replicas").cloned().unwrap_or(json!(1)) },
        "status": {
            "replicas": object.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector.join(","),
        },
    })
}

pub fn serve(
    store: &Store,
    rt: &ResourceType,
    version: &str,
    ns: Option<&str>,
    name: &str,
    request: ScaleRequest,
) -> Result<Value, ApiError> {
    let current = scale_of(&store.get(rt, version, ns, name)?);
    let wanted = match request {
        ScaleRequest::Get => return Ok(current),
        ScaleRequest::Replace(body) => body,
        ScaleRequest::Patch(kind, body) => {
            patch::apply(kind, &current, &body).map_err(ApiError::bad_request)?
        }
    };
    let replicas = wanted
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .filter(|r| *r >= 0)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "scale of {} {name}: spec.replicas must be a number of at least 0",
                rt.qualified_name()
            ))
        })?;
    let object = store.patch(
        rt,
        version,
        ns,
        name,
        PatchKind::Merge,
        &json!({ "spec": { "replicas": replicas } }),
        Part::Main,
        &WriteOptions::default(),
    )?;
    Ok(scale_of(&object))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scale_shows_desired_and_current_replicas_and_the_selector() {
        let deployment = json!({
            "metadata": { "name": "web", "namespace": "default" },
            "spec": { "replicas": 3, "selector": { "matchLabels": { "app": "web" } } },
            "status": { "replicas": 2 },
        });
        let scale = scale_of(&deployment);
        assert_eq!(scale["spec"]["replicas"], 3);
        assert_eq!(
            scale["status"],
            json!({ "replicas": 2, "selector": "app=web" })
        );
    }
}
