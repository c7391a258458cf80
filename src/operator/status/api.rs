//! The JSON documents of `/api/v1/*` and their handlers: the installation's status (from the
//! `KubeOvn` object's status: version, components, central, conditions), usage per subnet
//! (from the controllers' subnet store and IPAM) and a pod's secondary attachments (from its annotations and IP CRs). The documents are built by
//! pure functions; the handlers only gather their inputs. Who may call them is `access.rs`.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use kube::api::{Api, DynamicObject};
use kube::core::ApiResource;
use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;
use serde::Serialize;
use serde_json::{json, Value};

use super::StatusApi;
use crate::api::annotations::{Provider, ProviderKey, NETWORKS};
use crate::api::attachment_id::{self, AttachmentId};
use crate::api::ip::IpSpec;
use crate::api::kubeovn::{KubeOvn, KUBE_OVN_SINGLETON};
use crate::api::nad::parse_kube_ovn_config;
use crate::api::selection::parse_networks;
use crate::api::subnet::Subnet;
use crate::ipam::{FamilyUsage, Usage};

/// A JSON error body: `{"error": "..."}`.
pub fn error(code: StatusCode, message: impl Into<String>) -> Response {
    (code, Json(json!({ "error": message.into() }))).into_response()
}

/// The 503 of the endpoints that read the controllers' state before they run.
fn not_started() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "not ready: the controllers have not started yet (waiting for OVN NB and the IPAM store)",
    )
}

/// `GET /api/v1/status`.
pub async fn installation(State(api): State<StatusApi>) -> Response {
    let resource = ApiResource::erase::<KubeOvn>(&());
    let kube_ovns: Api<DynamicObject> = Api::all_with(api.client().clone(), &resource);
    match kube_ovns.get_opt(KUBE_OVN_SINGLETON).await {
        Ok(found) => {
            let object = found.and_then(|o| serde_json::to_value(o).ok());
            Json(installation_status(object.as_ref())).into_response()
        }
        Err(e) => error(
            StatusCode::BAD_GATEWAY,
            format!("reading KubeOvn {KUBE_OVN_SINGLETON:?}: {e}"),
        ),
    }
}

/// The status document from the `KubeOvn` object, if there is one. Read as JSON, so status
/// fields a newer controller writes (per-component rollout) show without a type change here.
pub fn installation_status(kube_ovn: Option<&Value>) -> Value {
    let Some(object) = kube_ovn else {
        return json!({
            "version": crate::VERSION,
            "installed": false,
            "message": format!(
                "KubeOvn {KUBE_OVN_SINGLETON:?} does not exist: create it to install kube-ovn"
            ),
            "components": [],
            "conditions": [],
        });
    };
    let status = object.get("status").cloned().unwrap_or_else(|| json!({}));
    let components: Vec<Value> = status
        .get("components")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| {
            json!({
                "name": c.get("name").cloned().unwrap_or(Value::Null),
                "desired": c.get("desired").cloned().unwrap_or(Value::Null),
                "ready": c.get("ready").cloned().unwrap_or(Value::Null),
                "version": c.get("version").cloned().unwrap_or(Value::Null),
            })
        })
        .collect();
    json!({
        "version": crate::VERSION,
        "installed": true,
        "kubeOvn": {
            "name": object.pointer("/metadata/name").cloned().unwrap_or(Value::Null),
            "generation": object.pointer("/metadata/generation").cloned().unwrap_or(Value::Null),
            "observedGeneration": status.get("observedGeneration").cloned().unwrap_or(Value::Null),
            "version": status.get("version").cloned().unwrap_or(Value::Null),
        },
        "components": components,
        "central": status.get("central").cloned().unwrap_or(Value::Null),
        "conditions": status.get("conditions").cloned().unwrap_or_else(|| json!([])),
    })
}

/// One subnet's usage as `/api/v1/subnets` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubnetUsage {
    pub name: String,
    pub cidr: Option<String>,
    pub vpc: Option<String>,
    pub provider: String,
    pub gateway: Option<String>,
    /// Why the subnet takes no attachments, if it does not.
    pub problem: Option<String>,
    /// Attachments holding addresses of the subnet.
    pub used: u128,
    /// Free addresses (dual stack: the scarcer family).
    pub available: u128,
    pub total: u128,
    /// IPAM's counts per family.
    pub families: Vec<FamilyUsage>,
}

/// The usage document of `subnet`, with IPAM's `usage` when IPAM knows it.
pub fn subnet_usage(
    subnet: &Subnet,
    usage: Option<&Usage>,
    problem: Option<String>,
) -> SubnetUsage {
    let name = subnet.name_any();
    SubnetUsage {
        cidr: subnet.spec.cidr_block(&name).ok().map(str::to_owned),
        vpc: subnet.spec.vpc.clone(),
        provider: subnet.provider().to_owned(),
        gateway: subnet.spec.gateway.clone(),
        problem,
        used: usage.map_or(0, |u| u.used),
        available: usage.map_or(0, |u| u.available),
        total: usage.map_or(0, |u| u.total),
        families: usage.map(|u| u.families.clone()).unwrap_or_default(),
        name,
    }
}

/// `GET /api/v1/subnets`.
pub async fn subnets(State(api): State<StatusApi>) -> Response {
    let Some(ctx) = api.context() else {
        return not_started();
    };
    let mut subnets = ctx.subnets.state();
    subnets.sort_by_key(|s| s.name_any());
    let usages: Vec<SubnetUsage> = subnets
        .iter()
        .map(|s| {
            let name = s.name_any();
            subnet_usage(
                s,
                ctx.ipam.usage(&name).ok().as_ref(),
                ctx.subnet_problem(&name),
            )
        })
        .collect();
    Json(json!({ "subnets": usages })).into_response()
}

/// One secondary attachment of a pod.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodNetwork {
    /// `ns/nad`.
    pub network: String,
    pub provider: String,
    /// Prefix of the attachment's annotations (the provider, or `<provider>.<ifname>`).
    pub attachment_key: String,
    pub interface: String,
    /// IPAM committed and the logical switch port exists.
    pub allocated: bool,
    pub ips: Vec<String>,
    pub mac: Option<String>,
    pub cidr: Option<String>,
    pub gateway: Option<String>,
    pub subnet: Option<String>,
    pub vpc: Option<String>,
    pub logical_switch_port: String,
    /// The IP CR recording the address, when it exists.
    pub ip_cr: Option<String>,
}

/// The kube-ovn attachments a pod asks for, with what the controller recorded for each.
/// `is_kube_ovn(namespace, nad)` tells our NADs from other plugins'; `ip_cr(name)` finds an
/// IP CR. An attachment with recorded annotations counts even if its NAD is gone.
pub fn pod_networks(
    namespace: &str,
    pod: &str,
    annotations: &BTreeMap<String, String>,
    is_kube_ovn: impl Fn(&str, &str) -> bool,
    ip_cr: impl Fn(&str) -> Option<IpSpec>,
) -> Result<Vec<PodNetwork>, String> {
    let Some(value) = annotations.get(NETWORKS) else {
        return Ok(Vec::new());
    };
    let selections = parse_networks(value, namespace).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for selection in &selections {
        let Ok(provider) = Provider::for_nad(&selection.name, &selection.namespace) else {
            continue;
        };
        let key = AttachmentId::key_for(&selections, &provider, &selection.interface);
        let note = |k: ProviderKey| annotations.get(&key.annotation(k)).cloned();
        let port = attachment_id::port_name(namespace, pod, key.as_str());
        let record = ip_cr(&port);
        let recorded = note(ProviderKey::LogicalSwitch).is_some() || record.is_some();
        if !recorded && !is_kube_ovn(&selection.namespace, &selection.name) {
            continue;
        }
        let ips = note(ProviderKey::IpAddress)
            .or_else(|| record.as_ref().map(|r| r.ip_address.clone()))
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|ip| !ip.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        out.push(PodNetwork {
            network: selection.network_name(),
            provider: provider.to_string(),
            attachment_key: key.to_string(),
            interface: selection.interface.clone(),
            allocated: note(ProviderKey::Allocated).as_deref() == Some("true"),
            ips,
            mac: note(ProviderKey::MacAddress)
                .or_else(|| record.as_ref().map(|r| r.mac_address.clone())),
            cidr: note(ProviderKey::Cidr),
            gateway: note(ProviderKey::Gateway),
            subnet: note(ProviderKey::LogicalSwitch)
                .or_else(|| record.as_ref().map(|r| r.subnet.clone())),
            vpc: note(ProviderKey::LogicalRouter),
            ip_cr: record.is_some().then(|| port.clone()),
            logical_switch_port: port,
        });
    }
    Ok(out)
}

/// `GET /api/v1/pods/{namespace}/{name}/networks`.
pub async fn pod(
    State(api): State<StatusApi>,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    let Some(ctx) = api.context() else {
        return not_started();
    };
    let Some(pod) = ctx.pods.get(&ObjectRef::new(&name).within(&namespace)) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("pod {namespace}/{name} not found"),
        );
    };
    let empty = BTreeMap::new();
    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    let networks = pod_networks(
        &namespace,
        &name,
        annotations,
        |ns, nad| {
            ctx.nads
                .get(&ObjectRef::new(nad).within(ns))
                .is_some_and(|n| parse_kube_ovn_config(nad, &n.spec.config).is_ok())
        },
        |port| ctx.ips.get(&ObjectRef::new(port)).map(|ip| ip.spec.clone()),
    );
    match networks {
        Ok(networks) => Json(json!({
            "namespace": namespace,
            "name": name,
            "node": pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            "networks": networks,
        }))
        .into_response(),
        Err(reason) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("pod {namespace}/{name}: {reason}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn without_a_kube_ovn_object_the_status_says_so() {
        let doc = installation_status(None);
        assert_eq!(doc["installed"], json!(false));
        assert_eq!(doc["components"], json!([]));
        assert!(doc["message"].as_str().unwrap().contains("does not exist"));
        assert_eq!(doc["version"], json!(crate::VERSION));
    }

    #[test]
    fn components_and_conditions_come_from_the_kube_ovn_status() {
        let object = json!({
            "metadata": {"name": "kube-ovn", "generation": 2},
            "status": {
                "version": "1.2.3",
                "observedGeneration": 2,
                "conditions": [{"type": "Available", "status": "True", "reason": "AllReady"}],
                "components": [
                    {"name": "kube-ovn-cni", "desired": 2, "ready": 1, "version": "1.2.3", "extra": 1}
                ],
                "central": {"nodes": ["n1"], "nbAddress": "tcp:10.0.0.1:6641"},
            },
        });
        let doc = installation_status(Some(&object));
        assert_eq!(doc["installed"], json!(true));
        assert_eq!(doc["kubeOvn"]["version"], json!("1.2.3"));
        assert_eq!(doc["kubeOvn"]["observedGeneration"], json!(2));
        assert_eq!(
            doc["components"],
            json!([{"name": "kube-ovn-cni", "desired": 2, "ready": 1, "version": "1.2.3"}])
        );
        assert_eq!(doc["conditions"][0]["type"], json!("Available"));
        assert_eq!(doc["central"]["nbAddress"], json!("tcp:10.0.0.1:6641"));
    }

    #[test]
    fn a_pods_attachments_come_from_its_annotations_and_ip_crs() {
        let p = "n1.default.ovn";
        let a = annotations(&[
            (NETWORKS, "default/n1, default/n1@net9, default/macvlan"),
            (&format!("{p}.kubernetes.io/allocated"), "true"),
            (&format!("{p}.kubernetes.io/ip_address"), "10.1.0.5,fd00::5"),
            (
                &format!("{p}.kubernetes.io/mac_address"),
                "0a:00:00:00:00:05",
            ),
            (&format!("{p}.kubernetes.io/cidr"), "10.1.0.0/24,fd00::/120"),
            (&format!("{p}.kubernetes.io/gateway"), "10.1.0.1,fd00::1"),
            (&format!("{p}.kubernetes.io/logical_switch"), "s1"),
            (&format!("{p}.kubernetes.io/logical_router"), "v1"),
        ]);
        let networks = pod_networks(
            "default",
            "web",
            &a,
            |_, nad| nad == "n1",
            |port| {
                (port == "web.default.n1.default.ovn").then(|| IpSpec {
                    subnet: "s1".into(),
                    ip_address: "10.1.0.5,fd00::5".into(),
                    ..Default::default()
                })
            },
        )
        .unwrap();
        assert_eq!(networks.len(), 2, "{networks:?}");
        let first = &networks[0];
        assert_eq!(first.network, "default/n1");
        assert_eq!(first.interface, "net1");
        assert!(first.allocated);
        assert_eq!(first.ips, vec!["10.1.0.5", "fd00::5"]);
        assert_eq!(first.mac.as_deref(), Some("0a:00:00:00:00:05"));
        assert_eq!(first.gateway.as_deref(), Some("10.1.0.1,fd00::1"));
        assert_eq!(first.subnet.as_deref(), Some("s1"));
        assert_eq!(first.vpc.as_deref(), Some("v1"));
        assert_eq!(first.logical_switch_port, "web.default.n1.default.ovn");
        assert_eq!(first.ip_cr.as_deref(), Some("web.default.n1.default.ovn"));
        // The same NAD again: its own key, not yet wired.
        let second = &networks[1];
        assert_eq!(second.attachment_key, "n1.default.ovn.net9");
        assert_eq!(second.interface, "net9");
        assert!(!second.allocated);
        assert!(second.ips.is_empty());
        assert_eq!(
            second.logical_switch_port,
            "web.default.n1.default.ovn.net9"
        );
        assert_eq!(second.ip_cr, None);
    }

    #[test]
    fn a_broken_networks_annotation_is_reported() {
        let a = annotations(&[(NETWORKS, "[{\"name\": ")]);
        let err = pod_networks("default", "web", &a, |_, _| true, |_| None).unwrap_err();
        assert!(err.contains(NETWORKS), "{err}");
    }
}
