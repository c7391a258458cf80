//! The Deployment controller: one ReplicaSet per pod template (`<deployment>-<hash>`, labelled
//! and selected by `pod-template-hash`, numbered by `deployment.kubernetes.io/revision`), the
//! rollout between them (RollingUpdate within maxSurge/maxUnavailable, or Recreate: all old
//! pods gone before the new ones start), old ReplicaSets pruned past `revisionHistoryLimit`, and
//! the status `kubectl rollout status` reads; a paused Deployment only reports. The rollout step
//! is `plan_rollout`, the status `rollout_status`; both pure. Not modelled: `minReadySeconds`
//! (a pod is available once Ready), the progress deadline, proportional scaling while paused.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, ReplicaSetSpec};
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};

use super::revision::template_hash;
use super::{
    api_error, controlled_by, controller_ref, retry_soon, scaled, write_status, ControllerError,
};

pub const TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";

/// A ReplicaSet as a rollout weighs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaSetState {
    pub name: String,
    /// spec.replicas
    pub replicas: i32,
    /// status.replicas: pods that exist
    pub pods: i32,
    pub ready: i32,
    pub available: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Recreate,
    RollingUpdate {
        max_surge: i32,
        max_unavailable: i32,
    },
}

/// The next spec.replicas of the new ReplicaSet and of each old one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    pub new_replicas: i32,
    pub old_replicas: Vec<(String, i32)>,
}

/// One step of a rollout towards `desired` pods of the new template. `old` is oldest first.
/// Called again whenever a ReplicaSet's counts change, it converges as kube-controller-manager
/// does: scale the new one up within the surge, scale old ones down within the unavailability
/// budget (unhealthy pods first).
pub fn plan_rollout(
    desired: i32,
    strategy: Strategy,
    new: Option<&ReplicaSetState>,
    old: &[ReplicaSetState],
) -> Rollout {
    let new_now = new.map_or(0, |n| n.replicas);
    let mut old_replicas: Vec<(String, i32)> =
        old.iter().map(|o| (o.name.clone(), o.replicas)).collect();
    let new_replicas = match strategy {
        Strategy::Recreate => {
            if old.iter().any(|o| o.replicas > 0 || o.pods > 0) {
                for (_, r) in &mut old_replicas {
                    *r = 0;
                }
                new_now.min(desired)
            } else {
                desired
            }
        }
        Strategy::RollingUpdate {
            max_surge,
            max_unavailable,
        } => {
            let total: i32 = new_now + old.iter().map(|o| o.replicas).sum::<i32>();
            let new_replicas = if new_now >= desired {
                desired
            } else {
                let room = (desired + max_surge - total).max(0);
                (new_now + room).min(desired)
            };
            let min_available = desired - max_unavailable;
            let new_unavailable = new.map_or(0, |n| (n.replicas - n.available).max(0));
            // First the old pods that are not available anyway, within what may go down.
            let mut budget = total - min_available - new_unavailable;
            for (state, (_, r)) in old.iter().zip(old_replicas.iter_mut()) {
                if budget <= 0 {
                    break;
                }
                let unhealthy = (state.replicas - state.available).max(0);
                let down = unhealthy.min(budget);
                *r -= down;
                budget -= down;
            }
            // Then available ones, keeping min_available available.
            let available: i32 =
                new.map_or(0, |n| n.available) + old.iter().map(|o| o.available).sum::<i32>();
            let mut budget = available - min_available;
            for (_, r) in &mut old_replicas {
                if budget <= 0 {
                    break;
                }
                let down = (*r).min(budget);
                *r -= down;
                budget -= down;
            }
            new_replicas
        }
    };
    Rollout {
        new_replicas,
        old_replicas,
    }
}

/// The status fields `kubectl rollout status` and `kubectl get` read.
pub fn rollout_status(
    generation: i64,
    desired: i32,
    min_available: i32,
    new: Option<&ReplicaSetState>,
    old: &[ReplicaSetState],
    previous_conditions: &[Value],
) -> Value {
    let all = || new.into_iter().chain(old.iter());
    let pods: i32 = all().map(|r| r.pods).sum();
    let ready: i32 = all().map(|r| r.ready).sum();
    let available: i32 = all().map(|r| r.available).sum();
    let updated = new.map_or(0, |n| n.pods);
    let complete = updated == desired && available >= desired && pods == desired;
    // A condition that says the same keeps its times: a status that does not change is not
    // written, so it wakes no watcher (and no reconcile of this Deployment).
    let condition = |kind: &str, ok: bool, reason: &str, message: String| {
        let status = if ok { "True" } else { "False" };
        let previous = previous_conditions
            .iter()
            .find(|c| c["type"] == kind && c["status"] == status);
        if let Some(same) = previous.filter(|c| c["reason"] == reason && c["message"] == message) {
            return same.clone();
        }
        let now = crate::apiserver::store::now();
        let since = previous
            .and_then(|c| c["lastTransitionTime"].as_str().map(str::to_string))
            .unwrap_or_else(|| now.clone());
        json!({ "type": kind, "status": status, "reason": reason,
                "message": message, "lastUpdateTime": now, "lastTransitionTime": since })
    };
    let new_name = new.map(|n| n.name.as_str()).unwrap_or_default();
    json!({
        "observedGeneration": generation,
        "replicas": pods,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": available,
        "unavailableReplicas": (desired - available).max(0),
        "conditions": [
            if available >= min_available {
                condition("Available", true, "MinimumReplicasAvailable",
                          "Deployment has minimum availability.".into())
            } else {
                condition("Available", false, "MinimumReplicasUnavailable",
                          "Deployment does not have minimum availability.".into())
            },
            if complete {
                condition("Progressing", true, "NewReplicaSetAvailable",
                          format!("ReplicaSet \"{new_name}\" has successfully progressed."))
            } else {
                condition("Progressing", true, "ReplicaSetUpdated",
                          format!("ReplicaSet \"{new_name}\" is progressing."))
            },
        ],
    })
}

fn state_of(rs: &ReplicaSet) -> ReplicaSetState {
    let status = rs.status.clone().unwrap_or_default();
    ReplicaSetState {
        name: rs.name_any(),
        replicas: rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0),
        pods: status.replicas,
        ready: status.ready_replicas.unwrap_or(0),
        available: status.available_replicas.unwrap_or(0),
    }
}

fn revision_of(rs: &ReplicaSet) -> i64 {
    rs.annotations()
        .get(REVISION_ANNOTATION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

pub(super) async fn run(client: Arc<Client>) {
    Controller::new(
        Api::<Deployment>::all((*client).clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<ReplicaSet>::all((*client).clone()),
        watcher::Config::default(),
    )
    .run(reconcile, retry_soon, client)
    .for_each(|_| async {})
    .await;
}

async fn reconcile(
    deploy: Arc<Deployment>,
    client: Arc<Client>,
) -> Result<Action, ControllerError> {
    if deploy.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let d = deploy.as_ref();
    let ns = d.namespace().unwrap_or_default();
    let uid = d.uid().unwrap_or_default();
    let spec = d.spec.clone().unwrap_or_default();
    let desired = spec.replicas.unwrap_or(1);
    let strategy_spec = spec.strategy.clone().unwrap_or_default();
    let rolling = strategy_spec.rolling_update.clone().unwrap_or_default();
    let max_surge = scaled(rolling.max_surge.as_ref(), "25%", desired, true);
    let mut max_unavailable = scaled(rolling.max_unavailable.as_ref(), "25%", desired, false);
    if max_surge == 0 && max_unavailable == 0 {
        max_unavailable = 1;
    }
    let strategy = match strategy_spec.type_.as_deref() {
        Some("Recreate") => Strategy::Recreate,
        _ => Strategy::RollingUpdate {
            max_surge,
            max_unavailable,
        },
    };
    let min_available = match strategy {
        Strategy::Recreate => 0,
        Strategy::RollingUpdate { .. } => desired - max_unavailable,
    };

    let api: Api<ReplicaSet> = Api::namespaced((*client).clone(), &ns);
    let mut owned: Vec<ReplicaSet> = api
        .list(&Default::default())
        .await
        .map_err(api_error(d, "list replica sets"))?
        .items
        .into_iter()
        .filter(|rs| controlled_by(&rs.metadata, &uid))
        .collect();
    owned.sort_by_key(revision_of);
    let hash = template_hash(&spec.template);
    let new_name = format!("{}-{hash}", d.name_any());
    let newest_revision = owned.iter().map(revision_of).max().unwrap_or(0);
    let new_rs = owned.iter().find(|rs| rs.name_any() == new_name).cloned();
    let old: Vec<&ReplicaSet> = owned
        .iter()
        .filter(|rs| rs.name_any() != new_name)
        .collect();
    let old_states: Vec<ReplicaSetState> = old.iter().map(|rs| state_of(rs)).collect();
    let new_state = new_rs.as_ref().map(state_of);
    let step = plan_rollout(desired, strategy, new_state.as_ref(), &old_states);

    // A paused Deployment (`kubectl rollout pause`) rolls nothing; it only reports.
    let paused = spec.paused.unwrap_or(false);
    match &new_rs {
        _ if paused => {}
        None => {
            let mut template = spec.template.clone();
            let mut meta = template.metadata.clone().unwrap_or_default();
            let mut labels = meta.labels.take().unwrap_or_default();
            labels.insert(TEMPLATE_HASH_LABEL.into(), hash.clone());
            meta.labels = Some(labels.clone());
            template.metadata = Some(meta);
            let mut selector = spec.selector.clone();
            selector
                .match_labels
                .get_or_insert_with(BTreeMap::new)
                .insert(TEMPLATE_HASH_LABEL.into(), hash.clone());
            let rs = ReplicaSet {
                metadata: ObjectMeta {
                    name: Some(new_name.clone()),
                    namespace: Some(ns.clone()),
                    labels: Some(labels),
                    annotations: Some(BTreeMap::from([(
                        REVISION_ANNOTATION.to_string(),
                        (newest_revision + 1).to_string(),
                    )])),
                    owner_references: Some(vec![controller_ref(d)]),
                    ..Default::default()
                },
                spec: Some(ReplicaSetSpec {
                    replicas: Some(step.new_replicas),
                    selector,
                    template: Some(template),
                    min_ready_seconds: spec.min_ready_seconds,
                }),
                status: None,
            };
            match api.create(&PostParams::default(), &rs).await {
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                other => {
                    other.map_err(api_error(d, "create a replica set"))?;
                }
            }
        }
        Some(rs) => {
            let mut patch = json!({});
            if state_of(rs).replicas != step.new_replicas {
                patch["spec"] = json!({ "replicas": step.new_replicas });
            }
            // A template that comes back (rollout undo) becomes the newest revision again.
            if revision_of(rs) < newest_revision {
                patch["metadata"] = json!({ "annotations": {
                    REVISION_ANNOTATION: (newest_revision + 1).to_string() } });
            }
            if patch != json!({}) {
                scale(&api, d, &new_name, &patch).await?;
            }
        }
    }
    for ((name, replicas), state) in step.old_replicas.iter().zip(&old_states) {
        if *replicas != state.replicas && !paused {
            scale(&api, d, name, &json!({ "spec": { "replicas": replicas } })).await?;
        }
    }
    prune_history(&api, d, &old, spec.revision_history_limit.unwrap_or(10)).await?;

    let revision = match &new_rs {
        Some(rs) if revision_of(rs) >= newest_revision => revision_of(rs),
        _ => newest_revision + 1,
    };
    let deployments: Api<Deployment> = Api::namespaced((*client).clone(), &ns);
    if d.annotations().get(REVISION_ANNOTATION) != Some(&revision.to_string()) {
        let patch =
            json!({ "metadata": { "annotations": { REVISION_ANNOTATION: revision.to_string() } } });
        deployments
            .patch(
                &d.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(api_error(d, "annotate the revision"))?;
    }
    let previous: Vec<Value> = d
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|cs| {
            cs.iter()
                .filter_map(|c| serde_json::to_value(c).ok())
                .collect()
        })
        .unwrap_or_default();
    let status = rollout_status(
        d.metadata.generation.unwrap_or(1),
        desired,
        min_available,
        new_state.as_ref(),
        &old_states,
        &previous,
    );
    write_status(&client, d, status).await?;
    Ok(Action::await_change())
}

async fn scale(
    api: &Api<ReplicaSet>,
    d: &Deployment,
    name: &str,
    patch: &Value,
) -> Result<(), ControllerError> {
    api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map(drop)
        .map_err(api_error(d, "scale a replica set"))
}

/// Delete the oldest idle ReplicaSets past the history limit.
async fn prune_history(
    api: &Api<ReplicaSet>,
    d: &Deployment,
    old: &[&ReplicaSet],
    limit: i32,
) -> Result<(), ControllerError> {
    let idle: Vec<&&ReplicaSet> = old
        .iter()
        .filter(|rs| {
            let s = state_of(rs);
            s.replicas == 0 && s.pods == 0
        })
        .collect();
    let surplus = idle
        .len()
        .saturating_sub(usize::try_from(limit).unwrap_or(0));
    for rs in idle.iter().take(surplus) {
        match api.delete(&rs.name_any(), &DeleteParams::default()).await {
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            other => {
                other.map_err(api_error(d, "prune an old replica set"))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(name: &str, replicas: i32, available: i32) -> ReplicaSetState {
        ReplicaSetState {
            name: name.into(),
            replicas,
            pods: replicas,
            ready: available,
            available,
        }
    }

    const ROLLING_ONE_BY_ONE: Strategy = Strategy::RollingUpdate {
        max_surge: 1,
        max_unavailable: 0,
    };

    #[test]
    fn a_first_rollout_creates_the_new_replica_set_at_full_size() {
        let step = plan_rollout(3, ROLLING_ONE_BY_ONE, None, &[]);
        assert_eq!(step.new_replicas, 3);
        let step = plan_rollout(3, Strategy::Recreate, None, &[]);
        assert_eq!(step.new_replicas, 3);
    }

    #[test]
    fn a_rolling_update_surges_one_then_retires_one_per_available_new_pod() {
        let old = [rs("old", 2, 2)];
        // Surge: one new pod, no old pod down while nothing new is available.
        let step = plan_rollout(2, ROLLING_ONE_BY_ONE, None, &old);
        assert_eq!(step.new_replicas, 1);
        assert_eq!(step.old_replicas, vec![("old".to_string(), 2)]);
        // The new pod is available: one old pod goes; no second surge yet.
        let new = rs("new", 1, 1);
        let step = plan_rollout(2, ROLLING_ONE_BY_ONE, Some(&new), &old);
        assert_eq!(step.old_replicas, vec![("old".to_string(), 1)]);
        assert_eq!(step.new_replicas, 1);
        // Room again: the second new pod.
        let step = plan_rollout(2, ROLLING_ONE_BY_ONE, Some(&new), &[rs("old", 1, 1)]);
        assert_eq!(step.new_replicas, 2);
        // Both new pods available: the last old one goes.
        let step = plan_rollout(
            2,
            ROLLING_ONE_BY_ONE,
            Some(&rs("new", 2, 2)),
            &[rs("old", 1, 1)],
        );
        assert_eq!(step.old_replicas, vec![("old".to_string(), 0)]);
    }

    #[test]
    fn unavailable_old_pods_are_retired_first_within_max_unavailable() {
        let strategy = Strategy::RollingUpdate {
            max_surge: 0,
            max_unavailable: 1,
        };
        let step = plan_rollout(3, strategy, None, &[rs("old", 3, 3)]);
        assert_eq!(step.old_replicas, vec![("old".to_string(), 2)]);
        assert_eq!(step.new_replicas, 0);
        // An old pod that is not available anyway goes first, and only it.
        let step = plan_rollout(3, strategy, Some(&rs("new", 1, 1)), &[rs("old", 2, 1)]);
        assert_eq!(step.old_replicas, vec![("old".to_string(), 1)]);
        // Below the minimum already: nothing more goes.
        let step = plan_rollout(3, strategy, Some(&rs("new", 1, 0)), &[rs("old", 2, 1)]);
        assert_eq!(step.old_replicas, vec![("old".to_string(), 2)]);
    }

    #[test]
    fn recreate_waits_for_every_old_pod_to_be_gone() {
        let step = plan_rollout(2, Strategy::Recreate, None, &[rs("old", 2, 2)]);
        assert_eq!((step.new_replicas, step.old_replicas[0].1), (0, 0));
        let draining = ReplicaSetState {
            pods: 1,
            ..rs("old", 0, 0)
        };
        let step = plan_rollout(2, Strategy::Recreate, None, &[draining]);
        assert_eq!(step.new_replicas, 0);
        let step = plan_rollout(2, Strategy::Recreate, None, &[rs("old", 0, 0)]);
        assert_eq!(step.new_replicas, 2);
    }

    #[test]
    fn status_reports_a_finished_rollout_as_kubectl_waits_for() {
        let new = rs("web-abc", 2, 2);
        let status = rollout_status(3, 2, 1, Some(&new), &[rs("web-old", 0, 0)], &[]);
        assert_eq!(status["observedGeneration"], 3);
        assert_eq!(status["updatedReplicas"], 2);
        assert_eq!(status["availableReplicas"], 2);
        assert_eq!(status["conditions"][1]["reason"], "NewReplicaSetAvailable");
        let status = rollout_status(3, 2, 1, Some(&new), &[rs("web-old", 1, 1)], &[]);
        assert_eq!(status["replicas"], 3);
        assert_eq!(status["conditions"][1]["reason"], "ReplicaSetUpdated");
        // Unchanged conditions come back as they were, times included.
        let earlier = json!({ "type": "Available", "status": "True",
            "reason": "MinimumReplicasAvailable", "message": "Deployment has minimum availability.",
            "lastUpdateTime": "2020-01-01T00:00:00Z", "lastTransitionTime": "2020-01-01T00:00:00Z" });
        let again = rollout_status(3, 2, 1, Some(&new), &[], std::slice::from_ref(&earlier));
        assert_eq!(again["conditions"][0], earlier);
    }
}
