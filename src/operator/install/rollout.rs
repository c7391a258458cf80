//! The install's status from what the cluster shows: per component `{desired, ready,
//! version}` read from the workloads' own status, and the `Available`, `Progressing` and
//! `Degraded` conditions derived from them. Pure: the controller passes the observed
//! workloads in.

use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::render::VERSION_LABEL;
use crate::api::condition::{set_condition, Condition, ConditionStatus};
use crate::api::kubeovn::{CentralStatus, ComponentStatus, KubeOvnStatus};

pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";

/// A workload as the status reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub name: String,
    pub desired: u32,
    pub ready: u32,
    /// Pods of the current template.
    pub updated: u32,
    /// The workload controller saw the current spec.
    pub current: bool,
    /// The version label of its pod template.
    pub version: Option<String>,
}

fn template_version(labels: Option<&std::collections::BTreeMap<String, String>>) -> Option<String> {
    labels.and_then(|l| l.get(VERSION_LABEL)).cloned()
}

impl Observed {
    pub fn daemon_set(ds: &DaemonSet) -> Observed {
        let status = ds.status.clone().unwrap_or_default();
        Observed {
            name: ds.metadata.name.clone().unwrap_or_default(),
            desired: status.desired_number_scheduled.max(0) as u32,
            ready: status.number_ready.max(0) as u32,
            updated: status.updated_number_scheduled.unwrap_or(0).max(0) as u32,
            current: status.observed_generation.is_some()
                && status.observed_generation == ds.metadata.generation,
            version: template_version(
                ds.spec
                    .as_ref()
                    .and_then(|s| s.template.metadata.as_ref())
                    .and_then(|m| m.labels.as_ref()),
            ),
        }
    }

    pub fn stateful_set(sts: &StatefulSet) -> Observed {
        let status = sts.status.clone().unwrap_or_default();
        let desired = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        Observed {
            name: sts.metadata.name.clone().unwrap_or_default(),
            desired: desired.max(0) as u32,
            ready: status.ready_replicas.unwrap_or(0).max(0) as u32,
            updated: status.updated_replicas.unwrap_or(0).max(0) as u32,
            current: status.observed_generation.is_some()
                && status.observed_generation == sts.metadata.generation,
            version: template_version(
                sts.spec
                    .as_ref()
                    .and_then(|s| s.template.metadata.as_ref())
                    .and_then(|m| m.labels.as_ref()),
            ),
        }
    }

    fn done(&self) -> bool {
        self.current && self.ready >= self.desired && self.updated >= self.desired
    }

    fn component(&self) -> ComponentStatus {
        ComponentStatus {
            name: self.name.clone(),
            desired: self.desired,
            ready: self.ready,
            version: if self.done() {
                self.version.clone()
            } else {
                None
            },
        }
    }
}

/// What happened to the spec this round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Rendered and applied; `expected` names the workloads that should exist.
    Applied { expected: Vec<String> },
    /// Refused (spec or cluster): a reason and what to fix; nothing was applied.
    Refused { reason: String, message: String },
    /// The install is being removed.
    Uninstalling { remaining: Vec<String> },
}

/// The new status from the previous one, this round's outcome and the workloads seen.
pub fn status(
    previous: &KubeOvnStatus,
    generation: Option<i64>,
    outcome: &Outcome,
    observed: &[Observed],
    central: Option<CentralStatus>,
    now: Time,
) -> KubeOvnStatus {
    let mut s = previous.clone();
    s.observed_generation = generation;
    let cond = |type_: &str, status: ConditionStatus, reason: &str, message: String| {
        Condition::new(type_, status, reason, message, generation, now.clone())
    };
    use ConditionStatus::{False, True};
    match outcome {
        Outcome::Refused { reason, message } => {
            // What runs keeps running; the status says the spec was not applied.
            set_condition(
                &mut s.conditions,
                cond(DEGRADED, True, reason, message.clone()),
            );
            set_condition(
                &mut s.conditions,
                cond(PROGRESSING, False, reason, "the spec is not applied".into()),
            );
            if previous.conditions.iter().all(|c| c.type_ != AVAILABLE) {
                set_condition(
                    &mut s.conditions,
                    cond(AVAILABLE, False, reason, message.clone()),
                );
            }
        }
        Outcome::Uninstalling { remaining } => {
            let message = format!("removing {}", remaining.join(", "));
            set_condition(
                &mut s.conditions,
                cond(AVAILABLE, False, "Uninstalling", message.clone()),
            );
            set_condition(
                &mut s.conditions,
                cond(PROGRESSING, True, "Uninstalling", message),
            );
        }
        Outcome::Applied { expected } => {
            if let Some(central) = central {
                s.central = Some(central);
            }
            s.components = expected
                .iter()
                .map(|name| match observed.iter().find(|o| &o.name == name) {
                    Some(o) => o.component(),
                    None => ComponentStatus {
                        name: name.clone(),
                        ..Default::default()
                    },
                })
                .collect();
            let pending: Vec<String> = expected
                .iter()
                .filter(|name| !observed.iter().any(|o| &o.name == *name && o.done()))
                .map(|name| {
                    let c = s.components.iter().find(|c| &c.name == name);
                    let (ready, desired) = c.map_or((0, 0), |c| (c.ready, c.desired));
                    format!("{name} {ready}/{desired} ready")
                })
                .collect();
            // A component not seen yet is not ready, whatever its counts.
            let unready: Vec<String> = expected
                .iter()
                .filter(|name| {
                    observed
                        .iter()
                        .find(|o| &o.name == *name)
                        .is_none_or(|o| o.ready < o.desired)
                })
                .map(|name| {
                    let c = s.components.iter().find(|c| &c.name == name);
                    let (ready, desired) = c.map_or((0, 0), |c| (c.ready, c.desired));
                    format!("{name} {ready}/{desired} ready")
                })
                .collect();
            if unready.is_empty() {
                set_condition(
                    &mut s.conditions,
                    cond(
                        AVAILABLE,
                        True,
                        "AllComponentsReady",
                        summary(&s.components),
                    ),
                );
            } else {
                set_condition(
                    &mut s.conditions,
                    cond(AVAILABLE, False, "ComponentsNotReady", unready.join(", ")),
                );
            }
            if pending.is_empty() {
                set_condition(
                    &mut s.conditions,
                    cond(
                        PROGRESSING,
                        False,
                        "RolloutComplete",
                        summary(&s.components),
                    ),
                );
                let versions: Vec<_> = s.components.iter().map(|c| c.version.clone()).collect();
                if let Some(Some(v)) = versions.first() {
                    if versions.iter().all(|x| x.as_ref() == Some(v)) {
                        s.version = Some(v.clone());
                    }
                }
            } else {
                set_condition(
                    &mut s.conditions,
                    cond(PROGRESSING, True, "RollingOut", pending.join(", ")),
                );
            }
            set_condition(
                &mut s.conditions,
                cond(DEGRADED, False, "AsExpected", String::new()),
            );
        }
    }
    s
}

fn summary(components: &[ComponentStatus]) -> String {
    components
        .iter()
        .map(|c| format!("{} {}/{}", c.name, c.ready, c.desired))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether a status says the install serves (central reachable, nodes ready).
pub fn is_available(status: &KubeOvnStatus) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == AVAILABLE && c.is_true())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::condition::find_condition;

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(100).unwrap())
    }

    fn obs(name: &str, desired: u32, ready: u32, updated: u32) -> Observed {
        Observed {
            name: name.into(),
            desired,
            ready,
            updated,
            current: true,
            version: Some("0.1.0".into()),
        }
    }

    fn names() -> Vec<String> {
        ["ovn-central", "ovs-ovn", "kube-ovn-cni"]
            .map(String::from)
            .to_vec()
    }

    #[test]
    fn available_once_every_component_is_ready_and_then_the_version_is_set() {
        let prev = KubeOvnStatus::default();
        let applied = Outcome::Applied { expected: names() };
        let rolling = [obs("ovn-central", 1, 1, 1), obs("ovs-ovn", 2, 1, 2)];
        let s = status(&prev, Some(1), &applied, &rolling, None, now());
        let avail = find_condition(&s.conditions, AVAILABLE).unwrap();
        assert!(!avail.is_true());
        assert!(
            avail.message.contains("ovs-ovn 1/2 ready"),
            "{}",
            avail.message
        );
        assert!(
            avail.message.contains("kube-ovn-cni 0/0"),
            "missing component counts as not ready: {}",
            avail.message
        );
        assert!(find_condition(&s.conditions, PROGRESSING)
            .unwrap()
            .is_true());
        assert_eq!(s.version, None);

        let done = [
            obs("ovn-central", 1, 1, 1),
            obs("ovs-ovn", 2, 2, 2),
            obs("kube-ovn-cni", 2, 2, 2),
        ];
        let s = status(&s, Some(1), &applied, &done, None, now());
        assert!(is_available(&s));
        assert!(!find_condition(&s.conditions, PROGRESSING)
            .unwrap()
            .is_true());
        assert!(!find_condition(&s.conditions, DEGRADED).unwrap().is_true());
        assert_eq!(s.version.as_deref(), Some("0.1.0"));
        assert_eq!(
            s.components[1],
            ComponentStatus {
                name: "ovs-ovn".into(),
                desired: 2,
                ready: 2,
                version: Some("0.1.0".into())
            }
        );
        assert_eq!(s.observed_generation, Some(1));
    }

    #[test]
    fn a_refused_spec_is_degraded_and_keeps_what_was_available() {
        let applied = Outcome::Applied {
            expected: vec!["kube-ovn-cni".into()],
        };
        let ok = status(
            &KubeOvnStatus::default(),
            Some(1),
            &applied,
            &[obs("kube-ovn-cni", 1, 1, 1)],
            None,
            now(),
        );
        assert!(is_available(&ok));
        let refused = Outcome::Refused {
            reason: "InvalidImage".into(),
            message: "spec.image …".into(),
        };
        let s = status(&ok, Some(2), &refused, &[], None, now());
        let degraded = find_condition(&s.conditions, DEGRADED).unwrap();
        assert!(degraded.is_true());
        assert_eq!(degraded.reason, "InvalidImage");
        assert!(is_available(&s), "a bad edit does not take down what runs");
        // A first spec that is refused is not available.
        let s = status(
            &KubeOvnStatus::default(),
            Some(1),
            &refused,
            &[],
            None,
            now(),
        );
        assert!(!is_available(&s));
    }

    #[test]
    fn an_old_template_is_still_rolling_out() {
        let mut o = obs("kube-ovn-cni", 2, 2, 1);
        let applied = Outcome::Applied {
            expected: vec!["kube-ovn-cni".into()],
        };
        let s = status(
            &KubeOvnStatus::default(),
            Some(1),
            &applied,
            &[o.clone()],
            None,
            now(),
        );
        assert!(find_condition(&s.conditions, PROGRESSING)
            .unwrap()
            .is_true());
        assert_eq!(s.components[0].version, None);
        o.updated = 2;
        o.current = false;
        let s = status(&s, Some(1), &applied, &[o], None, now());
        assert!(
            find_condition(&s.conditions, PROGRESSING)
                .unwrap()
                .is_true(),
            "the controller has not seen the new spec"
        );
    }
}
