//! The NetworkAttachmentDefinition kind (`k8s.cni.cncf.io/v1`) as Multus installs and reads
//! it: its CRD, its `ApiResource` for `DynamicObject` access, and reading a NAD's
//! `spec.config` (nad-client `GetNetworkAttachmentDefinition`).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject};
use kube::core::ApiResource;
use kube::Client;
use serde_json::{json, Value};

/// `k8s.cni.cncf.io/v1` `network-attachment-definitions`.
pub fn resource() -> ApiResource {
    ApiResource {
        group: "k8s.cni.cncf.io".into(),
        version: "v1".into(),
        api_version: "k8s.cni.cncf.io/v1".into(),
        kind: "NetworkAttachmentDefinition".into(),
        plural: "network-attachment-definitions".into(),
    }
}

/// The CRD Multus's deployment installs (namespaced, `spec.config` a string).
pub fn crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "network-attachment-definitions.k8s.cni.cncf.io"},
        "spec": {
            "group": "k8s.cni.cncf.io",
            "scope": "Namespaced",
            "names": {
                "plural": "network-attachment-definitions",
                "singular": "network-attachment-definition",
                "kind": "NetworkAttachmentDefinition",
                "shortNames": ["net-attach-def"]
            },
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": {"type": "object", "properties": {"config": {"type": "string"}}}
                    }
                }}
            }]
        }
    }))
    .expect("a valid CustomResourceDefinition")
}

/// The NAD's `spec.config`; errors are worded as Multus reports them.
pub async fn config(client: &Client, namespace: &str, name: &str) -> Result<String, String> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource());
    let nad = api.get(name).await.map_err(|e| {
        format!(
            "cannot find a network-attachment-definition ({name}) in namespace ({namespace}): {e}"
        )
    })?;
    nad.data
        .get("spec")
        .and_then(|s| s.get("config"))
        .and_then(Value::as_str)
        .filter(|c| !c.trim().is_empty())
        .map(str::to_string)
        .ok_or_else(|| {
            format!("network-attachment-definition {namespace}/{name} has no spec.config")
        })
}
