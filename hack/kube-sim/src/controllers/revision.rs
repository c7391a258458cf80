//! Template revisions: the hash that names a pod template (`pod-template-hash`,
//! `controller-revision-hash`) and the ControllerRevisions that DaemonSets and StatefulSets keep
//! of their templates (what `kubectl rollout history` and `rollout undo` read). Deployments keep
//! their history as ReplicaSets instead (`deployment.rs`).

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use super::{api_error, controlled_by, controller_ref, ControllerError};

/// A short, stable name for a pod template: equal templates hash equal, in every run
/// (FNV-1a over the template's JSON, whose keys serde keeps sorted), spelled in the alphabet
/// Kubernetes uses for generated names.
pub fn template_hash(template: &PodTemplateSpec) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let text = serde_json::to_string(template).unwrap_or_default();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (0..10)
        .map(|_| {
            let c = ALPHABET[(hash % ALPHABET.len() as u64) as usize] as char;
            hash /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

/// The ControllerRevisions `owner` controls, oldest revision first.
pub async fn owned<K: Resource<DynamicType = ()>>(
    client: &Client,
    owner: &K,
) -> Result<Vec<ControllerRevision>, ControllerError> {
    let uid = owner.meta().uid.clone().unwrap_or_default();
    let api: Api<ControllerRevision> =
        Api::namespaced(client.clone(), &owner.namespace().unwrap_or_default());
    let mut found: Vec<ControllerRevision> = api
        .list(&Default::default())
        .await
        .map_err(api_error(owner, "list controller revisions"))?
        .items
        .into_iter()
        .filter(|r| controlled_by(&r.metadata, &uid))
        .collect();
    found.sort_by_key(|r| r.revision);
    Ok(found)
}

/// The template a revision recorded.
pub fn template_of(revision: &ControllerRevision) -> Option<PodTemplateSpec> {
    let data = revision.data.as_ref()?;
    serde_json::from_value(data.0.pointer("/spec/template")?.clone()).ok()
}

/// Make sure `name` records `template` as the newest revision of `owner` (creating it, or
/// renumbering it when an older template comes back), and return its revision number.
pub async fn ensure<K: Resource<DynamicType = ()>>(
    client: &Client,
    owner: &K,
    existing: &[ControllerRevision],
    name: &str,
    template: &PodTemplateSpec,
) -> Result<i64, ControllerError> {
    let newest = existing.iter().map(|r| r.revision).max().unwrap_or(0);
    let api: Api<ControllerRevision> =
        Api::namespaced(client.clone(), &owner.namespace().unwrap_or_default());
    match existing.iter().find(|r| r.name_any() == name) {
        Some(current) if current.revision == newest => Ok(newest),
        Some(_) => {
            let patch = json!({ "revision": newest + 1 });
            api.patch(name, &Default::default(), &kube::api::Patch::Merge(&patch))
                .await
                .map_err(api_error(owner, "renumber a controller revision"))?;
            Ok(newest + 1)
        }
        None => {
            let revision = ControllerRevision {
                metadata: ObjectMeta {
                    name: Some(name.to_string()),
                    namespace: owner.namespace(),
                    labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
                    owner_references: Some(vec![controller_ref(owner)]),
                    ..Default::default()
                },
                data: Some(RawExtension(json!({ "spec": { "template": template } }))),
                revision: newest + 1,
            };
            match api.create(&PostParams::default(), &revision).await {
                Ok(_) => Ok(newest + 1),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(newest + 1),
                Err(e) => Err(api_error(owner, "create a controller revision")(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(image: &str) -> PodTemplateSpec {
        serde_json::from_value(json!({
            "metadata": { "labels": { "app": "web" } },
            "spec": { "containers": [{ "name": "web", "image": image }] },
        }))
        .expect("template")
    }

    #[test]
    fn equal_templates_hash_equal_and_a_change_changes_the_hash() {
        let hash = template_hash(&template("web:1"));
        assert_eq!(hash, template_hash(&template("web:1")));
        assert_ne!(hash, template_hash(&template("web:2")));
        assert_eq!(hash.len(), 10);
        assert!(hash.bytes().all(|b| b.is_ascii_alphanumeric()));
    }
}
