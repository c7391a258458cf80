//! The DaemonSet controller: one pod per node that admits the template (its nodeSelector and
//! required node affinity against the node's labels, its tolerations against the node's
//! taints: the scheduler's rules, read live, so `kubectl label node` and `kubectl taint` move daemons; a `NoSchedule` taint
//! keeps new daemons off but leaves a running one), bound to that node at creation. Updates follow the strategy: RollingUpdate within maxUnavailable (replace in place)
//! or maxSurge (new pod beside the old until it is ready), or OnDelete (a new pod only where
//! the old one was deleted). Templates are recorded as ControllerRevisions and pods labelled
//! `controller-revision-hash`. `plan_daemons` decides, pure.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{Node as NodeObject, Pod, PodSpec};
use kube::runtime::controller::Action;
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::revision::{self, template_hash};
use super::{
    api_error, controller_ref, create_pod, delete_pod, is_active, is_ready, owned_pods,
    pod_from_template, retry_soon, scaled, write_status, ControllerError,
};
use crate::nodes::scheduler::Candidate;

pub const REVISION_HASH_LABEL: &str = "controller-revision-hash";

/// A daemon pod as the controller weighs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonPod {
    pub name: String,
    pub node: String,
    /// Of the current template.
    pub updated: bool,
    pub ready: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaemonUpdate {
    OnDelete,
    RollingUpdate {
        max_unavailable: i32,
        max_surge: i32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DaemonPlan {
    /// Nodes that get a pod of the current template.
    pub create_on: Vec<String>,
    pub delete: Vec<String>,
}

/// Where daemons of a template belong.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Placement {
    /// Nodes that should run one: they admit the template.
    pub eligible: BTreeSet<String>,
    /// Nodes whose daemon may stay though no new one would be placed (a `NoSchedule` taint).
    pub tolerated: BTreeSet<String>,
}

/// Where pods of `template` belong among `nodes`.
pub fn placement(nodes: &[Candidate], template: &PodSpec) -> Placement {
    let names = |keep: &dyn Fn(&Candidate) -> bool| {
        nodes
            .iter()
            .filter(|n| keep(n))
            .map(|n| n.name.clone())
            .collect()
    };
    Placement {
        eligible: names(&|n| n.admits(template)),
        tolerated: names(&|n| !n.admits(template) && n.keeps(template)),
    }
}

/// Pods to create and delete so that every eligible node runs one pod (of the current
/// template, as far as the update strategy allows this step) and no other node runs any,
/// except the daemons a `NoSchedule` taint merely tolerates.
pub fn plan_daemons(place: &Placement, pods: &[DaemonPod], update: DaemonUpdate) -> DaemonPlan {
    let eligible = &place.eligible;
    let mut plan = DaemonPlan::default();
    let mut by_node: BTreeMap<&str, Vec<&DaemonPod>> = BTreeMap::new();
    for pod in pods {
        if eligible.contains(&pod.node) {
            by_node.entry(pod.node.as_str()).or_default().push(pod);
        } else if !place.tolerated.contains(&pod.node) {
            plan.delete.push(pod.name.clone());
        }
    }
    for node in eligible {
        if !by_node.contains_key(node.as_str()) {
            plan.create_on.push(node.clone());
        }
    }
    let DaemonUpdate::RollingUpdate {
        max_unavailable,
        max_surge,
    } = update
    else {
        return plan;
    };
    // Nodes without a ready pod count against maxUnavailable, those still to be created too.
    let mut unavailable = eligible.len()
        - by_node
            .values()
            .filter(|ps| ps.iter().any(|p| p.ready))
            .count();
    let mut surging = by_node
        .values()
        .filter(|ps| ps.iter().any(|p| p.updated) && ps.iter().any(|p| !p.updated))
        .count();
    for (node, node_pods) in &by_node {
        let new = node_pods.iter().find(|p| p.updated);
        let old: Vec<&&DaemonPod> = node_pods.iter().filter(|p| !p.updated).collect();
        if old.is_empty() {
            continue;
        }
        match new {
            // A surged new pod is ready: the old one retires.
            Some(new) if new.ready => plan.delete.extend(old.iter().map(|p| p.name.clone())),
            Some(_) => {}
            None if old.iter().all(|p| !p.ready) => {
                // Down already: replacing it costs nothing.
                plan.delete.extend(old.iter().map(|p| p.name.clone()));
            }
            None if max_surge > 0 => {
                if surging < usize::try_from(max_surge).unwrap_or(0) {
                    plan.create_on.push((*node).to_string());
                    surging += 1;
                }
            }
            None => {
                if unavailable < usize::try_from(max_unavailable).unwrap_or(0) {
                    plan.delete.extend(old.iter().map(|p| p.name.clone()));
                    unavailable += 1;
                }
            }
        }
    }
    plan
}

pub(super) async fn run(client: Arc<Client>) {
    let nodes = watcher::watcher(
        Api::<NodeObject>::all((*client).clone()),
        watcher::Config::default(),
    )
    .map(|_| ());
    Controller::new(
        Api::<DaemonSet>::all((*client).clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<Pod>::all((*client).clone()),
        watcher::Config::default(),
    )
    .reconcile_all_on(nodes)
    .run(reconcile, retry_soon, client)
    .for_each(|_| async {})
    .await;
}

async fn reconcile(ds: Arc<DaemonSet>, client: Arc<Client>) -> Result<Action, ControllerError> {
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ds = ds.as_ref();
    let ns = ds.namespace().unwrap_or_default();
    let uid = ds.uid().unwrap_or_default();
    let spec = ds.spec.clone().unwrap_or_default();
    let template = spec.template.clone();
    let hash = template_hash(&template);
    let revisions: Vec<ControllerRevision> = revision::owned(&client, ds).await?;
    revision::ensure(
        &client,
        ds,
        &revisions,
        &format!("{}-{hash}", ds.name_any()),
        &template,
    )
    .await?;

    let nodes: Vec<Candidate> = Api::<NodeObject>::all((*client).clone())
        .list(&Default::default())
        .await
        .map_err(api_error(ds, "list nodes"))?
        .items
        .iter()
        .map(Candidate::of)
        .collect();
    let place = placement(&nodes, &template.spec.clone().unwrap_or_default());
    let eligible = &place.eligible;
    let pods: Vec<Pod> = owned_pods(&client, ds, &uid)
        .await?
        .into_iter()
        .filter(is_active)
        .collect();
    let views: Vec<DaemonPod> = pods
        .iter()
        .map(|p| DaemonPod {
            name: p.name_any(),
            node: p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default(),
            updated: p.labels().get(REVISION_HASH_LABEL) == Some(&hash),
            ready: is_ready(p),
        })
        .collect();
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    let desired = i32::try_from(eligible.len()).unwrap_or(i32::MAX);
    let update = match strategy.type_.as_deref() {
        Some("OnDelete") => DaemonUpdate::OnDelete,
        _ => {
            let rolling = strategy.rolling_update.clone().unwrap_or_default();
            let max_surge = scaled(rolling.max_surge.as_ref(), "0%", desired, true);
            let max_unavailable = scaled(rolling.max_unavailable.as_ref(), "1", desired, true);
            DaemonUpdate::RollingUpdate {
                max_unavailable: if max_surge == 0 {
                    max_unavailable.max(1)
                } else {
                    max_unavailable
                },
                max_surge,
            }
        }
    };
    let plan = plan_daemons(&place, &views, update);
    let labels = BTreeMap::from([(REVISION_HASH_LABEL.to_string(), hash.clone())]);
    for node in &plan.create_on {
        let mut pod = pod_from_template(&template, controller_ref(ds), &ns, &labels);
        pod.metadata.generate_name = Some(format!("{}-", ds.name_any()));
        // The controller places its pods itself, as the DaemonSet controller once did.
        pod.spec.get_or_insert_with(Default::default).node_name = Some(node.clone());
        create_pod(&client, ds, &pod).await?;
    }
    for name in &plan.delete {
        delete_pod(&client, ds, &ns, name).await?;
    }

    let on_eligible = |p: &&DaemonPod| eligible.contains(&p.node);
    let nodes_with = |f: &dyn Fn(&DaemonPod) -> bool| {
        views
            .iter()
            .filter(on_eligible)
            .filter(|p| f(p))
            .map(|p| p.node.as_str())
            .collect::<BTreeSet<_>>()
            .len()
    };
    let ready = nodes_with(&|p| p.ready);
    let status = json!({
        "observedGeneration": ds.metadata.generation,
        "desiredNumberScheduled": eligible.len(),
        "currentNumberScheduled": nodes_with(&|_| true),
        "numberMisscheduled": views.iter().filter(|p| !eligible.contains(&p.node)).count(),
        "numberReady": ready,
        "updatedNumberScheduled": nodes_with(&|p| p.updated),
        "numberAvailable": ready,
        "numberUnavailable": eligible.len().saturating_sub(ready),
    });
    write_status(&client, ds, status).await?;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: &str, updated: bool, ready: bool) -> DaemonPod {
        DaemonPod {
            name: name.into(),
            node: node.into(),
            updated,
            ready,
        }
    }

    fn nodes(names: &[&str]) -> Placement {
        Placement {
            eligible: names.iter().map(|n| n.to_string()).collect(),
            tolerated: BTreeSet::new(),
        }
    }

    const ONE_AT_A_TIME: DaemonUpdate = DaemonUpdate::RollingUpdate {
        max_unavailable: 1,
        max_surge: 0,
    };

    #[test]
    fn every_eligible_node_gets_one_pod_and_others_lose_theirs() {
        let plan = plan_daemons(
            &nodes(&["a", "b"]),
            &[pod("p-c", "c", true, true), pod("p-a", "a", true, true)],
            ONE_AT_A_TIME,
        );
        assert_eq!(plan.create_on, vec!["b"]);
        assert_eq!(plan.delete, vec!["p-c"]);
    }

    #[test]
    fn selectors_and_taints_decide_eligibility() {
        let mut a = Candidate {
            name: "a".into(),
            ..Default::default()
        };
        a.labels.insert("role".into(), "edge".into());
        let mut b = a.clone();
        b.name = "b".into();
        b.taints = vec![k8s_openapi::api::core::v1::Taint {
            key: "dedicated".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        }];
        let c = Candidate {
            name: "c".into(),
            ..Default::default()
        };
        let template = PodSpec {
            node_selector: Some(BTreeMap::from([("role".into(), "edge".into())])),
            ..Default::default()
        };
        let place = placement(&[a, b, c], &template);
        assert_eq!(place.eligible, nodes(&["a"]).eligible);
        // b's NoSchedule taint keeps a new daemon off, not one already there.
        assert_eq!(place.tolerated, nodes(&["b"]).eligible);
        let plan = plan_daemons(
            &place,
            &[pod("p-b", "b", true, true), pod("p-c", "c", true, true)],
            ONE_AT_A_TIME,
        );
        assert_eq!(plan.delete, vec!["p-c"]);
        assert_eq!(plan.create_on, vec!["a"]);
    }

    #[test]
    fn a_rolling_update_replaces_one_node_at_a_time() {
        let old = [pod("p-a", "a", false, true), pod("p-b", "b", false, true)];
        let plan = plan_daemons(&nodes(&["a", "b"]), &old, ONE_AT_A_TIME);
        assert_eq!(plan.delete, vec!["p-a"]);
        // Node a is being replaced (no pod yet): b waits.
        let plan = plan_daemons(&nodes(&["a", "b"]), &old[1..], ONE_AT_A_TIME);
        assert_eq!(plan.create_on, vec!["a"]);
        assert!(plan.delete.is_empty());
        // a's new pod is ready: b's turn.
        let now = [pod("n-a", "a", true, true), pod("p-b", "b", false, true)];
        assert_eq!(
            plan_daemons(&nodes(&["a", "b"]), &now, ONE_AT_A_TIME).delete,
            vec!["p-b"]
        );
    }

    #[test]
    fn a_surge_starts_the_new_pod_beside_the_old_until_it_is_ready() {
        let surge = DaemonUpdate::RollingUpdate {
            max_unavailable: 0,
            max_surge: 1,
        };
        let old = [pod("p-a", "a", false, true), pod("p-b", "b", false, true)];
        let plan = plan_daemons(&nodes(&["a", "b"]), &old, surge);
        assert_eq!(
            (plan.create_on, plan.delete),
            (vec!["a".to_string()], vec![])
        );
        let surged = [old[0].clone(), old[1].clone(), pod("n-a", "a", true, false)];
        assert_eq!(
            plan_daemons(&nodes(&["a", "b"]), &surged, surge),
            DaemonPlan::default()
        );
        let ready = [old[0].clone(), old[1].clone(), pod("n-a", "a", true, true)];
        let plan = plan_daemons(&nodes(&["a", "b"]), &ready, surge);
        assert_eq!(plan.delete, vec!["p-a"]);
    }

    #[test]
    fn on_delete_waits_for_the_old_pod_to_be_deleted() {
        let old = [pod("p-a", "a", false, true)];
        assert_eq!(
            plan_daemons(&nodes(&["a"]), &old, DaemonUpdate::OnDelete),
            DaemonPlan::default()
        );
        assert_eq!(
            plan_daemons(&nodes(&["a"]), &[], DaemonUpdate::OnDelete).create_on,
            vec!["a"]
        );
    }
}
