//! kube-sim's workload controllers, the part of kube-controller-manager that turns
//! Deployments, ReplicaSets, DaemonSets and StatefulSets into pods: one kube-runtime
//! `Controller` per kind, talking to the API only through the `kube` client, like the real
//! ones. Each kind has its room: `deployment` (ReplicaSets per template, rolling and recreate
//! rollouts), `replicaset` (pods per ReplicaSet), `daemonset` (a pod per admitting node),
//! `statefulset` (ordered, stable pods), `revision` (ControllerRevisions and template hashes).
//! Their planning (which pods or ReplicaSets to create, scale or delete for an observed state)
//! is pure and unit-tested; the reconcilers read, plan, write and report status.
//!
//! Pods are left to the scheduler and kubelet of `nodes` (DaemonSet pods are bound to their
//! node at creation, as their controller picks it). Garbage collection of dependents is the
//! API server's (`apiserver/store/lifecycle.rs`): every object created here carries a
//! controller ownerReference.
//!
//! ```text
//! let controllers = WorkloadControllers::start(server.client()?);
//! ...
//! controllers.shutdown().await;
//! ```

pub mod daemonset;
pub mod deployment;
pub mod replicaset;
pub mod revision;
pub mod statefulset;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Client, Resource, ResourceExt};
use serde_json::Value;

/// The field manager of everything the controllers write.
pub const MANAGER: &str = "kube-sim-controller-manager";

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("{object}: {action}: {source}")]
    Api {
        object: String,
        action: String,
        source: kube::Error,
    },
    #[error("{object}: {reason}")]
    Invalid { object: String, reason: String },
}

/// `ns/name` of an object, for errors and logs.
pub fn object_ref<K: Resource<DynamicType = ()>>(object: &K) -> String {
    format!(
        "{} {}/{}",
        K::kind(&()),
        object.namespace().unwrap_or_default(),
        object.name_any()
    )
}

pub(crate) fn api_error<'a, K: Resource<DynamicType = ()>>(
    object: &'a K,
    action: &'a str,
) -> impl FnOnce(kube::Error) -> ControllerError + 'a {
    move |source| ControllerError::Api {
        object: object_ref(object),
        action: action.to_string(),
        source,
    }
}

/// Retry a failed reconcile soon (the usual cause is a conflict with another writer); a spec
/// kube-sim cannot run waits for a change instead.
pub(crate) fn retry_soon<K: Resource<DynamicType = ()>>(
    object: Arc<K>,
    error: &ControllerError,
    _: Arc<Client>,
) -> Action {
    tracing::warn!(object = %object_ref(object.as_ref()), %error, "reconcile failed");
    match error {
        ControllerError::Invalid { .. } => Action::await_change(),
        ControllerError::Api { .. } => Action::requeue(Duration::from_secs(1)),
    }
}

/// The running controllers. Dropping the handle stops them.
pub struct WorkloadControllers {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl WorkloadControllers {
    pub fn start(client: Client) -> Self {
        let client = Arc::new(client);
        Self {
            tasks: vec![
                tokio::spawn(deployment::run(client.clone())),
                tokio::spawn(replicaset::run(client.clone())),
                tokio::spawn(daemonset::run(client.clone())),
                tokio::spawn(statefulset::run(client)),
            ],
        }
    }

    pub async fn shutdown(mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for WorkloadControllers {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The ownerReference a controller puts on what it creates.
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Whether `meta` names the object with `uid` as its controller.
pub fn controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && r.uid == uid)
}

/// A pod that counts: not being deleted, not finished.
pub fn is_active(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && !matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

/// The pod's `Ready` condition is True.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// An `IntOrString` of a rollout (`maxSurge: 25%`) as a count of `total`, rounding as asked.
pub fn scaled(value: Option<&IntOrString>, default: &str, total: i32, round_up: bool) -> i32 {
    let percent = |p: &str| -> Option<i32> {
        let p: f64 = p.strip_suffix('%')?.parse().ok()?;
        let exact = p * f64::from(total) / 100.0;
        Some(if round_up {
            exact.ceil()
        } else {
            exact.floor()
        } as i32)
    };
    match value {
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(s)) => s.parse().ok().or_else(|| percent(s)).unwrap_or_default(),
        None => percent(default).unwrap_or_default(),
    }
}

/// A pod of `template` owned by `owner`, with `labels` added to the template's.
pub fn pod_from_template(
    template: &PodTemplateSpec,
    owner: OwnerReference,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Pod {
    let mut meta = template.metadata.clone().unwrap_or_default();
    let mut all = meta.labels.take().unwrap_or_default();
    all.extend(labels.clone());
    meta.labels = Some(all);
    meta.namespace = Some(namespace.to_string());
    meta.owner_references = Some(vec![owner]);
    Pod {
        metadata: meta,
        spec: template.spec.clone(),
        status: None,
    }
}

pub(crate) async fn create_pod<K: Resource<DynamicType = ()>>(
    client: &Client,
    owner: &K,
    pod: &Pod,
) -> Result<(), ControllerError> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    match Api::<Pod>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), pod)
        .await
    {
        // A pod of a fixed name (StatefulSet) may exist already; the next reconcile sees it.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        other => other.map(drop).map_err(api_error(owner, "create a pod")),
    }
}

pub(crate) async fn delete_pod<K: Resource<DynamicType = ()>>(
    client: &Client,
    owner: &K,
    namespace: &str,
    name: &str,
) -> Result<(), ControllerError> {
    match Api::<Pod>::namespaced(client.clone(), namespace)
        .delete(name, &Default::default())
        .await
    {
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        other => other.map(drop).map_err(api_error(owner, "delete a pod")),
    }
}

/// Write `status` with a merge patch of the status subresource.
pub(crate) async fn write_status<K>(
    client: &Client,
    owner: &K,
    status: Value,
) -> Result<(), ControllerError>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), &owner.namespace().unwrap_or_default());
    api.patch_status(
        &owner.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&serde_json::json!({ "status": status })),
    )
    .await
    .map(drop)
    .map_err(api_error(owner, "write status"))
}

/// Tell the user why `object` cannot be run, as a Warning Event (`kubectl describe` shows it),
/// and hand back the error that stops retrying until the spec changes.
pub(crate) async fn refuse<K: Resource<DynamicType = ()>>(
    client: &Client,
    object: &K,
    reason: &str,
) -> ControllerError {
    let ns = object.namespace().unwrap_or_default();
    let event = k8s_openapi::api::core::v1::Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}.", object.name_any())),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        involved_object: object.object_ref(&()),
        reason: Some("NotSupported".into()),
        message: Some(reason.to_string()),
        type_: Some("Warning".into()),
        source: Some(k8s_openapi::api::core::v1::EventSource {
            component: Some(MANAGER.into()),
            host: None,
        }),
        count: Some(1),
        ..Default::default()
    };
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), &ns);
    if let Err(e) = events.create(&PostParams::default(), &event).await {
        tracing::warn!(object = %object_ref(object), error = %e, "recording an Event");
    }
    ControllerError::Invalid {
        object: object_ref(object),
        reason: reason.to_string(),
    }
}

/// The pods in `namespace` that `uid` controls.
pub(crate) async fn owned_pods<K: Resource<DynamicType = ()>>(
    client: &Client,
    owner: &K,
    uid: &str,
) -> Result<Vec<Pod>, ControllerError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &owner.namespace().unwrap_or_default());
    Ok(api
        .list(&Default::default())
        .await
        .map_err(api_error(owner, "list pods"))?
        .items
        .into_iter()
        .filter(|p| controlled_by(&p.metadata, uid))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollout_bounds_scale_percentages_and_take_counts() {
        let pct = |s: &str| IntOrString::String(s.into());
        assert_eq!(scaled(Some(&pct("25%")), "0%", 3, true), 1);
        assert_eq!(scaled(Some(&pct("25%")), "0%", 3, false), 0);
        assert_eq!(scaled(Some(&IntOrString::Int(2)), "0%", 3, false), 2);
        assert_eq!(scaled(None, "25%", 8, false), 2);
        assert_eq!(scaled(Some(&pct("3")), "0%", 10, false), 3);
    }
}
