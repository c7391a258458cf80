//! The ReplicaSet controller: keeps `spec.replicas` active pods of the template (created with
//! `generateName: <rs>-`), deletes the surplus least-advanced first, and reports the counts a
//! Deployment's rollout reads (`replicas`, `readyReplicas`, `availableReplicas`). Which pods to
//! create or delete is `plan_replicas`, pure.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::Action;
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::{
    controller_ref, create_pod, delete_pod, is_active, is_ready, owned_pods, pod_from_template,
    retry_soon, write_status, ControllerError,
};

/// A pod as the ReplicaSet controller weighs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaPod {
    pub name: String,
    pub scheduled: bool,
    pub running: bool,
    pub ready: bool,
    /// creationTimestamp as RFC 3339 (sorts as time).
    pub created: String,
}

impl ReplicaPod {
    pub fn of(pod: &Pod) -> Self {
        Self {
            name: pod.name_any(),
            scheduled: pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_some_and(|n| !n.is_empty()),
            running: pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"),
            ready: is_ready(pod),
            created: pod
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default(),
        }
    }
}

/// What to do to reach `desired` active pods.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplicaPlan {
    pub create: usize,
    pub delete: Vec<String>,
}

/// Create the missing pods, or delete the surplus: unscheduled before scheduled, pending before
/// running, not ready before ready, newest before oldest (as kube-controller-manager ranks).
pub fn plan_replicas(desired: usize, active: &[ReplicaPod]) -> ReplicaPlan {
    if active.len() <= desired {
        return ReplicaPlan {
            create: desired - active.len(),
            delete: Vec::new(),
        };
    }
    let mut ranked: Vec<&ReplicaPod> = active.iter().collect();
    ranked.sort_by_key(|p| (p.scheduled, p.running, p.ready, Reverse(p.created.clone())));
    ReplicaPlan {
        create: 0,
        delete: ranked[..active.len() - desired]
            .iter()
            .map(|p| p.name.clone())
            .collect(),
    }
}

pub(super) async fn run(client: Arc<Client>) {
    Controller::new(
        Api::<ReplicaSet>::all((*client).clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<Pod>::all((*client).clone()),
        watcher::Config::default(),
    )
    .run(reconcile, retry_soon, client)
    .for_each(|_| async {})
    .await;
}

async fn reconcile(rs: Arc<ReplicaSet>, client: Arc<Client>) -> Result<Action, ControllerError> {
    if rs.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let uid = rs.uid().unwrap_or_default();
    let ns = rs.namespace().unwrap_or_default();
    let spec = rs.spec.clone().unwrap_or_default();
    let desired = usize::try_from(spec.replicas.unwrap_or(1)).unwrap_or(0);
    let pods = owned_pods(&client, rs.as_ref(), &uid).await?;
    let active: Vec<&Pod> = pods.iter().filter(|p| is_active(p)).collect();
    let views: Vec<ReplicaPod> = active.iter().map(|p| ReplicaPod::of(p)).collect();
    let plan = plan_replicas(desired, &views);
    let template = spec.template.clone().unwrap_or_default();
    let mut pod = pod_from_template(
        &template,
        controller_ref(rs.as_ref()),
        &ns,
        &BTreeMap::new(),
    );
    pod.metadata.generate_name = Some(format!("{}-", rs.name_any()));
    for _ in 0..plan.create {
        create_pod(&client, rs.as_ref(), &pod).await?;
    }
    for name in &plan.delete {
        delete_pod(&client, rs.as_ref(), &ns, name).await?;
    }
    let ready = views.iter().filter(|p| p.ready).count();
    let status = json!({
        "replicas": views.len(),
        "fullyLabeledReplicas": views.len(),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "observedGeneration": rs.metadata.generation,
    });
    write_status(&client, rs.as_ref(), status).await?;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, scheduled: bool, running: bool, ready: bool, created: &str) -> ReplicaPod {
        ReplicaPod {
            name: name.into(),
            scheduled,
            running,
            ready,
            created: created.into(),
        }
    }

    #[test]
    fn missing_pods_are_created() {
        let active = [pod("a", true, true, true, "1")];
        assert_eq!(
            plan_replicas(3, &active),
            ReplicaPlan {
                create: 2,
                delete: vec![]
            }
        );
        assert_eq!(plan_replicas(1, &active), ReplicaPlan::default());
    }

    #[test]
    fn the_surplus_goes_least_advanced_first() {
        let active = [
            pod("ready-old", true, true, true, "1"),
            pod("ready-new", true, true, true, "2"),
            pod("pending", true, false, false, "1"),
            pod("unscheduled", false, false, false, "1"),
        ];
        assert_eq!(
            plan_replicas(1, &active).delete,
            vec!["unscheduled", "pending", "ready-new"]
        );
    }
}
