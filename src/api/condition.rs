//! Status conditions shared by every kube-ovn CRD (`type`, `status`, `reason`,
//! `message`, `lastTransitionTime`, `observedGeneration`, as Kubernetes API
//! conventions and Kube-OVN write them), and the pure update rule controllers use:
//! the transition time moves only when the status changes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The condition every controller maintains.
pub const READY: &str = "Ready";
/// Set by validation: `False` with a reason naming what to fix.
pub const VALIDATED: &str = "Validated";
/// Present (`True`) while the spec sets fields this mode does not act on; its message names
/// each field and what to use instead. Absent when there are none.
pub const UNSUPPORTED: &str = "Unsupported";

/// `status` of a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

/// One status condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `Validated`, …
    #[serde(rename = "type")]
    pub type_: String,
    pub status: ConditionStatus,
    /// One CamelCase word, e.g. `CidrOverlap`.
    #[serde(default)]
    pub reason: String,
    /// What is wrong and how to fix it, naming the objects involved.
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// Kube-OVN writes it; kept so its tools keep reading our status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<Time>,
    /// The `metadata.generation` this condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl Condition {
    /// A condition as of `now` (its transition time, unless `set_condition` keeps an older one).
    pub fn new(
        type_: &str,
        status: ConditionStatus,
        reason: &str,
        message: impl Into<String>,
        observed_generation: Option<i64>,
        now: Time,
    ) -> Self {
        Self {
            type_: type_.to_owned(),
            status,
            reason: reason.to_owned(),
            message: message.into(),
            last_transition_time: Some(now.clone()),
            last_update_time: Some(now),
            observed_generation,
        }
    }

    /// Whether this condition is `True`.
    pub fn is_true(&self) -> bool {
        self.status == ConditionStatus::True
    }
}

/// Puts `new` into `conditions`, replacing the one of the same type. The old
/// transition time is kept when the status did not change; nothing changes (and
/// `false` is returned) when status, reason, message and generation are equal.
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        None => {
            conditions.push(new);
            true
        }
        Some(old) => {
            if old.status == new.status
                && old.reason == new.reason
                && old.message == new.message
                && old.observed_generation == new.observed_generation
            {
                return false;
            }
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            *old = new;
            true
        }
    }
}

/// The condition of `type_`, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn transition_time_moves_only_with_status() {
        let mut conditions = Vec::new();
        let first = Condition::new(
            READY,
            ConditionStatus::False,
            "CidrOverlap",
            "a",
            Some(1),
            at(10),
        );
        assert!(set_condition(&mut conditions, first));
        assert!(!set_condition(
            &mut conditions,
            Condition::new(
                READY,
                ConditionStatus::False,
                "CidrOverlap",
                "a",
                Some(1),
                at(20)
            )
        ));
        assert!(set_condition(
            &mut conditions,
            Condition::new(
                READY,
                ConditionStatus::False,
                "GatewayOutsideCidr",
                "b",
                Some(2),
                at(30)
            )
        ));
        let ready = find_condition(&conditions, READY).unwrap();
        assert_eq!(ready.last_transition_time, Some(at(10)));
        assert_eq!(ready.last_update_time, Some(at(30)));
        assert_eq!(ready.reason, "GatewayOutsideCidr");

        assert!(set_condition(
            &mut conditions,
            Condition::new(READY, ConditionStatus::True, "Ok", "", Some(2), at(40))
        ));
        let ready = find_condition(&conditions, READY).unwrap();
        assert!(ready.is_true());
        assert_eq!(ready.last_transition_time, Some(at(40)));
        assert_eq!(conditions.len(), 1);
    }

    #[test]
    fn serializes_with_kubernetes_field_names() {
        let c = Condition::new(
            VALIDATED,
            ConditionStatus::True,
            "Ok",
            "fine",
            Some(3),
            at(0),
        );
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["type"], "Validated");
        assert_eq!(json["status"], "True");
        assert_eq!(json["lastTransitionTime"], "1970-01-01T00:00:00Z");
        assert_eq!(json["observedGeneration"], 3);
    }
}
