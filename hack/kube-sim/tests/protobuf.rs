//! Writes in Kubernetes protobuf, as client-go sends them (the real Multus writes a pod's
//! status and its Events this way): bodies encoded with the maintained `k8s-pb` message
//! types, framed with the `k8s\0` magic and a `runtime.Unknown`, read back as JSON.

use std::net::{Ipv4Addr, SocketAddr};

use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_pb::api::core::v1 as pb;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as pb_meta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use kube::api::{Api, PostParams};
use kube_sim::ApiServer;
use prost::Message;

const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

fn framed(api_version: &str, kind: &str, object: &impl Message) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(object.encode_to_vec()),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut body = b"k8s\0".to_vec();
    body.extend(unknown.encode_to_vec());
    body
}

async fn send(client: &kube::Client, method: &str, path: &str, body: Vec<u8>) -> String {
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("Content-Type", PROTOBUF)
        .header("Accept", format!("{PROTOBUF},application/json"))
        .body(body)
        .expect("request");
    client
        .request_text(request)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

fn time(seconds: i64) -> Option<pb_meta::Time> {
    Some(pb_meta::Time {
        seconds: Some(seconds),
        nanos: Some(0),
    })
}

fn meta(name: &str) -> Option<pb_meta::ObjectMeta> {
    Some(pb_meta::ObjectMeta {
        name: Some(name.into()),
        namespace: Some("default".into()),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protobuf_pod_status_update_and_event_are_stored() {
    let server = ApiServer::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .expect("server starts");
    let client = server.client().expect("client");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "p" },
        "spec": { "containers": [{ "name": "c", "image": "busybox" }] },
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create pod");

    let status = pb::Pod {
        metadata: meta("p"),
        spec: Some(pb::PodSpec::default()),
        status: Some(pb::PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some("10.16.0.5".into()),
            pod_ips: vec![pb::PodIp {
                ip: Some("10.16.0.5".into()),
            }],
            conditions: vec![pb::PodCondition {
                r#type: Some("Ready".into()),
                status: Some("True".into()),
                last_transition_time: time(1_700_000_000),
                ..Default::default()
            }],
            ..Default::default()
        }),
    };
    send(
        &client,
        "PUT",
        "/api/v1/namespaces/default/pods/p/status",
        framed("v1", "Pod", &status),
    )
    .await;
    let stored = pods.get("p").await.expect("get pod");
    let status = stored.status.expect("status");
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert_eq!(status.pod_ip.as_deref(), Some("10.16.0.5"));
    assert_eq!(status.pod_ips.expect("podIPs")[0].ip, "10.16.0.5");
    let ready = &status.conditions.expect("conditions")[0];
    assert_eq!(
        (ready.type_.as_str(), ready.status.as_str()),
        ("Ready", "True")
    );
    assert_eq!(
        serde_json::to_value(&ready.last_transition_time).expect("time"),
        serde_json::json!("2023-11-14T22:13:20Z")
    );
    assert_eq!(
        stored.spec.expect("spec").containers[0].image.as_deref(),
        Some("busybox"),
        "a status update leaves the spec alone"
    );

    let event = pb::Event {
        metadata: meta("p.1"),
        involved_object: Some(pb::ObjectReference {
            kind: Some("Pod".into()),
            namespace: Some("default".into()),
            name: Some("p".into()),
            ..Default::default()
        }),
        reason: Some("AddedInterface".into()),
        message: Some("Add net1 [10.100.0.2/16] from default/vpc-net".into()),
        source: Some(pb::EventSource {
            component: Some("multus".into()),
            host: None,
        }),
        first_timestamp: time(1_700_000_000),
        last_timestamp: time(1_700_000_000),
        count: Some(1),
        r#type: Some("Normal".into()),
        ..Default::default()
    };
    send(
        &client,
        "POST",
        "/api/v1/namespaces/default/events",
        framed("v1", "Event", &event),
    )
    .await;
    let events: Api<Event> = Api::namespaced(client, "default");
    let stored = events.get("p.1").await.expect("get event");
    assert_eq!(stored.reason.as_deref(), Some("AddedInterface"));
    assert_eq!(stored.involved_object.name.as_deref(), Some("p"));
    assert_eq!(
        stored.source.and_then(|s| s.component).as_deref(),
        Some("multus")
    );
    assert_eq!(stored.count, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protobuf_body_of_an_unsupported_group_is_a_415_naming_it() {
    let server = ApiServer::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .expect("server starts");
    let client = server.client().expect("client");
    let body = framed(
        "rbac.authorization.k8s.io/v1",
        "Role",
        &pb_meta::ObjectMeta::default(),
    );
    let request = http::Request::builder()
        .method("POST")
        .uri("/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles")
        .header("Content-Type", PROTOBUF)
        .body(body)
        .expect("request");
    match client.request_text(request).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 415, "{status:?}");
            assert!(status.message.contains("Role"), "{}", status.message);
        }
        other => panic!("expected a 415, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_wrapper_types_and_embedded_structs_read_back_as_json() {
    use k8s_openapi::api::apps::v1::DaemonSet;
    use k8s_openapi::api::events::v1::Event as EventV1;
    use k8s_pb::api::apps::v1 as pb_apps;
    use k8s_pb::apimachinery::pkg::api::resource::Quantity;
    use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;

    let server = ApiServer::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .expect("server starts");
    let client = server.client().expect("client");

    let labels = std::collections::BTreeMap::from([("app".to_string(), "agent".to_string())]);
    let container = pb::Container {
        name: Some("agent".into()),
        image: Some("kube-ovn:v1".into()),
        resources: Some(pb::ResourceRequirements {
            limits: [(
                "cpu".to_string(),
                Quantity {
                    string: Some("100m".into()),
                },
            )]
            .into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let volume = pb::Volume {
        name: Some("config".into()),
        volume_source: Some(pb::VolumeSource {
            config_map: Some(pb::ConfigMapVolumeSource {
                local_object_reference: Some(pb::LocalObjectReference {
                    name: Some("settings".into()),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    let daemonset = pb_apps::DaemonSet {
        metadata: meta("agent"),
        spec: Some(pb_apps::DaemonSetSpec {
            selector: Some(pb_meta::LabelSelector {
                match_labels: labels.clone(),
                match_expressions: vec![],
            }),
            template: Some(pb::PodTemplateSpec {
                metadata: Some(pb_meta::ObjectMeta {
                    labels,
                    ..Default::default()
                }),
                spec: Some(pb::PodSpec {
                    containers: vec![container],
                    volumes: vec![volume],
                    host_network: Some(true),
                    ..Default::default()
                }),
            }),
            update_strategy: Some(pb_apps::DaemonSetUpdateStrategy {
                r#type: Some("RollingUpdate".into()),
                rolling_update: Some(pb_apps::RollingUpdateDaemonSet {
                    max_unavailable: Some(IntOrString {
                        r#type: Some(1),
                        int_val: None,
                        str_val: Some("50%".into()),
                    }),
                    max_surge: Some(IntOrString {
                        r#type: Some(0),
                        int_val: Some(0),
                        str_val: None,
                    }),
                }),
            }),
            ..Default::default()
        }),
        status: None,
    };
    send(
        &client,
        "POST",
        "/apis/apps/v1/namespaces/default/daemonsets",
        framed("apps/v1", "DaemonSet", &daemonset),
    )
    .await;
    let stored = Api::<DaemonSet>::namespaced(client.clone(), "default")
        .get("agent")
        .await
        .expect("get daemonset");
    let stored = serde_json::to_value(&stored).expect("json");
    let pod_spec = &stored["spec"]["template"]["spec"];
    assert_eq!(pod_spec["hostNetwork"], true);
    assert_eq!(
        pod_spec["containers"][0]["resources"]["limits"]["cpu"],
        "100m"
    );
    assert_eq!(
        pod_spec["volumes"][0],
        serde_json::json!({ "name": "config", "configMap": { "name": "settings" } })
    );
    let rolling = &stored["spec"]["updateStrategy"]["rollingUpdate"];
    assert_eq!(rolling["maxUnavailable"], "50%");
    assert_eq!(rolling["maxSurge"], 0);

    let event = k8s_pb::api::events::v1::Event {
        metadata: meta("agent.1"),
        event_time: Some(pb_meta::MicroTime {
            seconds: Some(1_700_000_000),
            nanos: Some(123_456_000),
        }),
        reporting_controller: Some("multus".into()),
        reporting_instance: Some("node-1".into()),
        action: Some("Attach".into()),
        reason: Some("AddedInterface".into()),
        regarding: Some(pb::ObjectReference {
            kind: Some("Pod".into()),
            namespace: Some("default".into()),
            name: Some("p".into()),
            ..Default::default()
        }),
        note: Some("Add net1".into()),
        r#type: Some("Normal".into()),
        ..Default::default()
    };
    send(
        &client,
        "POST",
        "/apis/events.k8s.io/v1/namespaces/default/events",
        framed("events.k8s.io/v1", "Event", &event),
    )
    .await;
    let stored = Api::<EventV1>::namespaced(client, "default")
        .get("agent.1")
        .await
        .expect("get event");
    assert_eq!(stored.note.as_deref(), Some("Add net1"));
    assert_eq!(
        serde_json::to_value(&stored.event_time).expect("time"),
        serde_json::json!("2023-11-14T22:13:20.123456Z")
    );
}
