//! The StatefulSet controller: pods with stable names `<set>-0…<set>-(n-1)` (hostname and
//! subdomain set, labelled `statefulset.kubernetes.io/pod-name` and `apps.kubernetes.io/pod-index`),
//! created in order and each only once the one before is Running and Ready (OrderedReady) or
//! all at once (Parallel), removed from the highest ordinal down. Updates: RollingUpdate
//! replaces one pod at a time from the highest ordinal down to `partition` (pods below the
//! partition keep the current revision), OnDelete replaces a pod only once it was deleted.
//! Templates are ControllerRevisions; pods carry `controller-revision-hash: <set>-<hash>`.
//! `plan_stateful` decides, pure.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use kube::runtime::controller::Action;
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::daemonset::REVISION_HASH_LABEL;
use super::revision::{self, template_hash};
use super::{
    controller_ref, create_pod, delete_pod, is_ready, owned_pods, pod_from_template, retry_soon,
    write_status, ControllerError,
};

pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// A pod of the set, by ordinal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatefulPod {
    pub revision: String,
    pub running_and_ready: bool,
    pub terminating: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodManagement {
    OrderedReady,
    Parallel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatefulUpdate {
    OnDelete,
    RollingUpdate { partition: i32 },
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatefulPlan {
    /// Ordinals to create, with the revision each gets.
    pub create: Vec<(i32, String)>,
    /// Ordinals to delete.
    pub delete: Vec<i32>,
}

/// What to create and delete for `replicas` pods of `update_revision` (`current_revision`
/// below a rolling update's partition).
pub fn plan_stateful(
    replicas: i32,
    management: PodManagement,
    update: StatefulUpdate,
    pods: &BTreeMap<i32, StatefulPod>,
    current_revision: &str,
    update_revision: &str,
) -> StatefulPlan {
    let ordered = management == PodManagement::OrderedReady;
    let mut plan = StatefulPlan::default();
    let partition = match update {
        StatefulUpdate::RollingUpdate { partition } => partition,
        StatefulUpdate::OnDelete => replicas,
    };
    let revision_for = |ordinal: i32| {
        if ordinal < partition && update != StatefulUpdate::OnDelete {
            current_revision
        } else {
            update_revision
        }
    };
    let mut healthy = true;
    for ordinal in 0..replicas {
        match pods.get(&ordinal) {
            None => {
                plan.create
                    .push((ordinal, revision_for(ordinal).to_string()));
                healthy = false;
                if ordered {
                    return plan;
                }
            }
            Some(p) if p.terminating || !p.running_and_ready => {
                healthy = false;
                if ordered {
                    return plan;
                }
            }
            Some(_) => {}
        }
    }
    // Scale down from the highest ordinal, one at a time when ordered.
    let condemned: Vec<i32> = pods
        .keys()
        .rev()
        .copied()
        .filter(|o| *o >= replicas)
        .collect();
    for ordinal in condemned {
        if pods[&ordinal].terminating {
            if ordered {
                return plan;
            }
            continue;
        }
        if ordered && !healthy {
            return plan;
        }
        plan.delete.push(ordinal);
        if ordered {
            return plan;
        }
    }
    if !healthy || !plan.delete.is_empty() {
        return plan;
    }
    if let StatefulUpdate::RollingUpdate { partition } = update {
        let stale = (partition.max(0)..replicas)
            .rev()
            .find(|o| pods.get(o).is_some_and(|p| p.revision != update_revision));
        if let Some(ordinal) = stale {
            plan.delete.push(ordinal);
        }
    }
    plan
}

pub(super) async fn run(client: Arc<Client>) {
    Controller::new(
        Api::<StatefulSet>::all((*client).clone()),
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

fn ordinal_of(set: &str, pod: &Pod) -> Option<i32> {
    pod.name_any()
        .strip_prefix(set)?
        .strip_prefix('-')?
        .parse()
        .ok()
}

async fn reconcile(sts: Arc<StatefulSet>, client: Arc<Client>) -> Result<Action, ControllerError> {
    if sts.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let sts = sts.as_ref();
    let name = sts.name_any();
    let ns = sts.namespace().unwrap_or_default();
    let uid = sts.uid().unwrap_or_default();
    let spec = sts.spec.clone().unwrap_or_default();
    if !spec
        .volume_claim_templates
        .clone()
        .unwrap_or_default()
        .is_empty()
    {
        let reason = "volumeClaimTemplates are not supported yet (kube-sim serves no PersistentVolumeClaims)";
        return Err(super::refuse(&client, sts, reason).await);
    }
    let replicas = spec.replicas.unwrap_or(1);
    let template = spec.template.clone();
    let update_revision = format!("{name}-{}", template_hash(&template));
    let revisions: Vec<ControllerRevision> = revision::owned(&client, sts).await?;
    revision::ensure(&client, sts, &revisions, &update_revision, &template).await?;
    let status = sts.status.clone().unwrap_or_default();
    let current_revision = status
        .current_revision
        .clone()
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| update_revision.clone());

    let pods = owned_pods(&client, sts, &uid).await?;
    let by_ordinal: BTreeMap<i32, (&Pod, StatefulPod)> = pods
        .iter()
        .filter_map(|p| {
            let view = StatefulPod {
                revision: p
                    .labels()
                    .get(REVISION_HASH_LABEL)
                    .cloned()
                    .unwrap_or_default(),
                running_and_ready: p.status.as_ref().and_then(|s| s.phase.as_deref())
                    == Some("Running")
                    && is_ready(p),
                terminating: p.metadata.deletion_timestamp.is_some(),
            };
            Some((ordinal_of(&name, p)?, (p, view)))
        })
        .collect();
    let views: BTreeMap<i32, StatefulPod> = by_ordinal
        .iter()
        .map(|(o, (_, v))| (*o, v.clone()))
        .collect();
    let management = match spec.pod_management_policy.as_deref() {
        Some("Parallel") => PodManagement::Parallel,
        _ => PodManagement::OrderedReady,
    };
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    let update = match strategy.type_.as_deref() {
        Some("OnDelete") => StatefulUpdate::OnDelete,
        _ => StatefulUpdate::RollingUpdate {
            partition: strategy
                .rolling_update
                .and_then(|r| r.partition)
                .unwrap_or(0),
        },
    };
    let plan = plan_stateful(
        replicas,
        management,
        update,
        &views,
        &current_revision,
        &update_revision,
    );
    for (ordinal, revision_name) in &plan.create {
        let recorded: Option<PodTemplateSpec> = revisions
            .iter()
            .find(|r| r.name_any() == *revision_name)
            .and_then(revision::template_of);
        let pod_template = recorded.as_ref().unwrap_or(&template);
        let pod_name = format!("{name}-{ordinal}");
        let labels = BTreeMap::from([
            (REVISION_HASH_LABEL.to_string(), revision_name.clone()),
            (POD_NAME_LABEL.to_string(), pod_name.clone()),
            (POD_INDEX_LABEL.to_string(), ordinal.to_string()),
        ]);
        let mut pod = pod_from_template(pod_template, controller_ref(sts), &ns, &labels);
        pod.metadata.name = Some(pod_name.clone());
        let pod_spec = pod.spec.get_or_insert_with(Default::default);
        pod_spec.hostname = Some(pod_name);
        if !spec.service_name.as_deref().unwrap_or_default().is_empty() {
            pod_spec.subdomain = spec.service_name.clone();
        }
        create_pod(&client, sts, &pod).await?;
    }
    for ordinal in &plan.delete {
        delete_pod(&client, sts, &ns, &format!("{name}-{ordinal}")).await?;
    }

    let live: Vec<&StatefulPod> = views.values().filter(|p| !p.terminating).collect();
    let ready = live.iter().filter(|p| p.running_and_ready).count();
    let updated = live
        .iter()
        .filter(|p| p.revision == update_revision)
        .count();
    let current = live
        .iter()
        .filter(|p| p.revision == current_revision)
        .count();
    let replicas_usize = usize::try_from(replicas).unwrap_or(0);
    // The update is the current revision once every pod runs it and is ready.
    let done = updated == replicas_usize && ready == replicas_usize && live.len() == replicas_usize;
    let (current_revision, current) = if done {
        (update_revision.clone(), updated)
    } else {
        (current_revision, current)
    };
    let status = json!({
        "observedGeneration": sts.metadata.generation,
        "replicas": live.len(),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "currentReplicas": current,
        "updatedReplicas": updated,
        "currentRevision": current_revision,
        "updateRevision": update_revision,
        "collisionCount": 0,
    });
    write_status(&client, sts, status).await?;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(revision: &str) -> StatefulPod {
        StatefulPod {
            revision: revision.into(),
            running_and_ready: true,
            terminating: false,
        }
    }

    fn set(pods: &[(i32, StatefulPod)]) -> BTreeMap<i32, StatefulPod> {
        pods.iter().cloned().collect()
    }

    const ROLLING: StatefulUpdate = StatefulUpdate::RollingUpdate { partition: 0 };

    #[test]
    fn ordered_ready_creates_one_pod_after_the_previous_is_ready() {
        let plan = plan_stateful(
            3,
            PodManagement::OrderedReady,
            ROLLING,
            &set(&[]),
            "r1",
            "r1",
        );
        assert_eq!(plan.create, vec![(0, "r1".to_string())]);
        let starting = StatefulPod {
            running_and_ready: false,
            ..ready("r1")
        };
        let plan = plan_stateful(
            3,
            PodManagement::OrderedReady,
            ROLLING,
            &set(&[(0, starting)]),
            "r1",
            "r1",
        );
        assert_eq!(plan, StatefulPlan::default());
        let plan = plan_stateful(
            3,
            PodManagement::OrderedReady,
            ROLLING,
            &set(&[(0, ready("r1"))]),
            "r1",
            "r1",
        );
        assert_eq!(plan.create, vec![(1, "r1".to_string())]);
    }

    #[test]
    fn parallel_creates_every_missing_pod_at_once() {
        let plan = plan_stateful(
            3,
            PodManagement::Parallel,
            ROLLING,
            &set(&[(1, ready("r1"))]),
            "r1",
            "r1",
        );
        assert_eq!(
            plan.create,
            vec![(0, "r1".to_string()), (2, "r1".to_string())]
        );
    }

    #[test]
    fn scaling_down_removes_the_highest_ordinal_first() {
        let pods = set(&[(0, ready("r1")), (1, ready("r1")), (2, ready("r1"))]);
        let plan = plan_stateful(1, PodManagement::OrderedReady, ROLLING, &pods, "r1", "r1");
        assert_eq!(plan.delete, vec![2]);
        let plan = plan_stateful(1, PodManagement::Parallel, ROLLING, &pods, "r1", "r1");
        assert_eq!(plan.delete, vec![2, 1]);
    }

    #[test]
    fn a_rolling_update_goes_down_from_the_highest_ordinal_to_the_partition() {
        let pods = set(&[(0, ready("r1")), (1, ready("r1")), (2, ready("r1"))]);
        let plan = plan_stateful(3, PodManagement::OrderedReady, ROLLING, &pods, "r1", "r2");
        assert_eq!(plan.delete, vec![2]);
        let pods = set(&[(0, ready("r1")), (1, ready("r1")), (2, ready("r2"))]);
        let plan = plan_stateful(3, PodManagement::OrderedReady, ROLLING, &pods, "r1", "r2");
        assert_eq!(plan.delete, vec![1]);
        // Recreated pods take the update revision; below the partition, the current one.
        let partitioned = StatefulUpdate::RollingUpdate { partition: 2 };
        let pods = set(&[(0, ready("r1")), (2, ready("r2"))]);
        let plan = plan_stateful(3, PodManagement::Parallel, partitioned, &pods, "r1", "r2");
        assert_eq!(plan.create, vec![(1, "r1".to_string())]);
        let pods = set(&[(0, ready("r1")), (1, ready("r1")), (2, ready("r2"))]);
        assert_eq!(
            plan_stateful(
                3,
                PodManagement::OrderedReady,
                partitioned,
                &pods,
                "r1",
                "r2"
            ),
            StatefulPlan::default()
        );
    }

    #[test]
    fn on_delete_replaces_only_deleted_pods() {
        let pods = set(&[(0, ready("r1")), (2, ready("r1"))]);
        let plan = plan_stateful(
            3,
            PodManagement::Parallel,
            StatefulUpdate::OnDelete,
            &pods,
            "r1",
            "r2",
        );
        assert_eq!(plan.create, vec![(1, "r2".to_string())]);
        assert!(plan.delete.is_empty());
    }
}
