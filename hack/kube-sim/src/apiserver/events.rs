//! One store, two APIs for Events: objects are kept in core/v1 form and served at
//! events.k8s.io/v1 by renaming fields (`regarding` is `involvedObject`, `note` is `message`,
//! the `deprecated…` fields are the core ones), as kube-apiserver does, so that an Event
//! written by kube-runtime's `Recorder` shows in `kubectl get events` and one written the
//! kubelet's way shows to an events.k8s.io reader. Pure functions.

use serde_json::{Map, Value};

/// (events.k8s.io/v1 name, core/v1 name) of the fields whose names differ.
const RENAMED: [(&str, &str); 7] = [
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
    ("reportingController", "reportingComponent"),
];

/// Whether a resource is the events.k8s.io view of core Events.
pub fn is_events_v1(group: &str, plural: &str) -> bool {
    group == "events.k8s.io" && plural == "events"
}

/// An events.k8s.io/v1 Event in core/v1 form.
pub fn to_core(event: &Value) -> Value {
    let mut core = rename(event, |k| {
        RENAMED.iter().find(|(v1, _)| *v1 == k).map(|(_, c)| *c)
    });
    core["apiVersion"] = Value::from("v1");
    core
}

/// A core/v1 Event in events.k8s.io/v1 form.
pub fn from_core(event: &Value, api_version: &str) -> Value {
    let mut v1 = rename(event, |k| {
        RENAMED.iter().find(|(_, c)| *c == k).map(|(v1, _)| *v1)
    });
    v1["apiVersion"] = Value::from(api_version);
    v1
}

/// A field selector label of events.k8s.io/v1 as the core/v1 label (`regarding.name` is
/// `involvedObject.name`).
pub fn core_field_label(label: &str) -> String {
    let (head, rest) = label
        .split_once('.')
        .map_or((label, None), |(h, r)| (h, Some(r)));
    let head = RENAMED
        .iter()
        .find(|(v1, _)| *v1 == head)
        .map_or(head, |(_, c)| c);
    match rest {
        Some(rest) => format!("{head}.{rest}"),
        None => head.to_string(),
    }
}

fn rename(event: &Value, map: impl Fn(&str) -> Option<&'static str>) -> Value {
    let Some(fields) = event.as_object() else {
        return event.clone();
    };
    let renamed: Map<String, Value> = fields
        .iter()
        .map(|(k, v)| (map(k).map_or_else(|| k.clone(), str::to_string), v.clone()))
        .collect();
    Value::Object(renamed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_convert_both_ways() {
        let v1 = json!({ "apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": { "name": "e" },
                         "regarding": { "kind": "Pod", "name": "p" }, "note": "n", "reason": "R",
                         "reportingController": "c", "deprecatedCount": 2 });
        let core = to_core(&v1);
        assert_eq!(core["involvedObject"]["name"], "p");
        assert_eq!(
            (core["message"].as_str(), core["count"].as_i64()),
            (Some("n"), Some(2))
        );
        assert_eq!(
            (
                core["apiVersion"].as_str(),
                core["reportingComponent"].as_str()
            ),
            (Some("v1"), Some("c"))
        );
        assert_eq!(from_core(&core, "events.k8s.io/v1"), v1);
        assert_eq!(core_field_label("regarding.name"), "involvedObject.name");
        assert_eq!(core_field_label("reason"), "reason");
    }
}
