//! The OpenAPI v3 documents `kubectl` reads before it writes: `/openapi/v3` (the index of
//! group-versions) and `/openapi/v3/<api|apis/group>/<version>` (one PATCH operation per
//! kind, declaring the `fieldValidation` query parameter). That is enough for kubectl to
//! leave validation to the server (`fieldValidation=Strict`), which checks custom resources
//! against their CRD schema; no object schemas are published.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use serde_json::{json, Value};

use super::resources::{ResourceTable, ResourceType};

/// `GET /openapi/v3`.
pub fn index(table: &ResourceTable) -> Value {
    let mut paths = serde_json::Map::new();
    for (gv, resources) in by_group_version(table) {
        let hash = content_hash(&group_version_document(&gv, &resources));
        paths.insert(
            gv.clone(),
            json!({ "serverRelativeURL": format!("/openapi/v3/{gv}?hash={hash}") }),
        );
    }
    json!({ "paths": paths })
}

/// `GET /openapi/v3/<gv>` where `gv` is `api/v1` or `apis/<group>/<version>`.
pub fn document(table: &ResourceTable, gv: &str) -> Option<Value> {
    by_group_version(table)
        .remove(gv)
        .map(|resources| group_version_document(gv, &resources))
}

fn by_group_version(table: &ResourceTable) -> BTreeMap<String, Vec<(ResourceType, String)>> {
    let mut out: BTreeMap<String, Vec<(ResourceType, String)>> = BTreeMap::new();
    for rt in table.types() {
        for version in &rt.versions {
            let gv = if rt.group.is_empty() {
                format!("api/{version}")
            } else {
                format!("apis/{}/{version}", rt.group)
            };
            out.entry(gv)
                .or_default()
                .push((rt.clone(), version.clone()));
        }
    }
    out
}

fn group_version_document(gv: &str, resources: &[(ResourceType, String)]) -> Value {
    let mut paths = serde_json::Map::new();
    for (rt, version) in resources {
        let path = if rt.namespaced {
            format!("/{gv}/namespaces/{{namespace}}/{}/{{name}}", rt.plural)
        } else {
            format!("/{gv}/{}/{{name}}", rt.plural)
        };
        paths.insert(
            path,
            json!({
                "patch": {
                    "operationId": format!("patch{}", rt.kind),
                    "x-kubernetes-action": "patch",
                    "x-kubernetes-group-version-kind": { "group": rt.group, "version": version, "kind": rt.kind },
                    "parameters": [
                        { "name": "fieldManager", "in": "query", "schema": { "type": "string" } },
                        { "name": "fieldValidation", "in": "query", "schema": { "type": "string" } },
                        { "name": "force", "in": "query", "schema": { "type": "boolean" } },
                    ],
                    "responses": { "200": { "description": "OK" } },
                }
            }),
        );
    }
    json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes (kube-sim)", "version": "v1.33.0" },
        "paths": paths,
    })
}

fn content_hash(doc: &Value) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    doc.to_string().hash(&mut hasher);
    format!("{:016X}", hasher.finish())
}
