//! The `kubectl get` cells of built-in kinds that no single field holds, as kube-apiserver's
//! table printers compute them: a node's STATUS and ROLES, a Deployment's READY `2/3`. Plain
//! field columns are JSON pointers in `resources.rs`; rendering the Table is in `http.rs`.

use serde_json::{json, Value};

fn int(object: &Value, pointer: &str) -> i64 {
    object.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

/// `Ready`, `NotReady` or `Unknown`, with `,SchedulingDisabled` when cordoned.
pub fn node_status(node: &Value) -> Value {
    let ready = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .map(|c| c["status"] == "True");
    let mut status = match ready {
        Some(true) => "Ready".to_string(),
        Some(false) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if node.pointer("/spec/unschedulable") == Some(&json!(true)) {
        status.push_str(",SchedulingDisabled");
    }
    json!(status)
}

/// The roles of `node-role.kubernetes.io/<role>` labels, comma-separated, or `<none>`.
pub fn node_roles(node: &Value) -> Value {
    let roles: Vec<&str> = node
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/"))
        .filter(|r| !r.is_empty())
        .collect();
    json!(if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.join(",")
    })
}

/// The node's first InternalIP.
pub fn node_internal_ip(node: &Value) -> Value {
    node.pointer("/status/addresses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|a| a["type"] == "InternalIP")
        .map_or(json!("<none>"), |a| a["address"].clone())
}

/// `ready/desired` of a Deployment or StatefulSet.
pub fn ready_of_replicas(object: &Value) -> Value {
    json!(format!(
        "{}/{}",
        int(object, "/status/readyReplicas"),
        int(object, "/spec/replicas")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cordoned_worker_reads_as_kubectl_shows_it() {
        let node = json!({
            "metadata": { "labels": { "node-role.kubernetes.io/worker": "", "zone": "a" } },
            "spec": { "unschedulable": true },
            "status": {
                "conditions": [{ "type": "Ready", "status": "True" }],
                "addresses": [{ "type": "Hostname", "address": "n1" },
                              { "type": "InternalIP", "address": "172.18.0.2" }],
            },
        });
        assert_eq!(node_status(&node), json!("Ready,SchedulingDisabled"));
        assert_eq!(node_roles(&node), json!("worker"));
        assert_eq!(node_internal_ip(&node), json!("172.18.0.2"));
        assert_eq!(node_roles(&json!({})), json!("<none>"));
        assert_eq!(node_status(&json!({})), json!("Unknown"));
    }

    #[test]
    fn ready_counts_read_ready_over_desired() {
        let deployment = json!({ "spec": { "replicas": 3 }, "status": { "readyReplicas": 2 } });
        assert_eq!(ready_of_replicas(&deployment), json!("2/3"));
    }
}
