//! API behaviour the node simulator and our controllers lean on, through the `kube` client:
//! pod binding and graceful pod deletion, deletion propagation policies, events written by
//! kube-runtime's `Recorder`, watch bookmarks, and the `kube-sim` binary itself.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Event as CoreEvent, Node, ObjectReference, Pod};
use k8s_openapi::api::events::v1::Event as EventV1;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    Api, DeleteParams, ListParams, PostParams, PropagationPolicy, WatchEvent, WatchParams,
};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, ResourceExt};
use kube_sim::{ApiServer, ServerOptions};
use serde_json::json;

async fn start() -> (ApiServer, Client) {
    let options = ServerOptions {
        bookmark_interval: Duration::from_millis(200),
        ..ServerOptions::default()
    };
    let server = ApiServer::start_with(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), options)
        .await
        .expect("server starts");
    let client = server.client().expect("client");
    (server, client)
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": { "containers": [{ "name": "app", "image": "nginx" }] },
    }))
    .expect("pod")
}

async fn create_node(client: &Client, name: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": { "name": name },
        "status": { "conditions": [{ "type": "Ready", "status": "True" }] },
    }))
    .expect("node");
    let created = nodes
        .create(&PostParams::default(), &node)
        .await
        .expect("create node");
    assert!(
        created.status.and_then(|s| s.conditions).is_some(),
        "a node keeps the status it registers with"
    );
}

async fn bind(client: &Client, pod: &str, node: &str) -> Result<(), kube::Error> {
    let request = http::Request::post(format!("/api/v1/namespaces/default/pods/{pod}/binding"))
        .header("content-type", "application/json")
        .body(
            serde_json::to_vec(&json!({
                "apiVersion": "v1", "kind": "Binding",
                "metadata": { "name": pod },
                "target": { "apiVersion": "v1", "kind": "Node", "name": node },
            }))
            .expect("json"),
        )
        .expect("request");
    client.request_text(request).await.map(|_| ())
}

#[tokio::test]
async fn a_bound_pod_waits_for_its_kubelet_to_finish_deletion() {
    let (_server, client) = start().await;
    create_node(&client, "node-1").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(&PostParams::default(), &pod("p"))
        .await
        .expect("create");
    bind(&client, "p", "node-1").await.expect("bind");
    let bound = pods.get("p").await.expect("get");
    assert_eq!(
        bound.spec.and_then(|s| s.node_name).as_deref(),
        Some("node-1")
    );
    assert!(
        bind(&client, "p", "node-1").await.is_err(),
        "a bound pod cannot be bound again"
    );
    let on_node = pods
        .list(&ListParams::default().fields("spec.nodeName=node-1"))
        .await
        .expect("list");
    assert_eq!(on_node.items.len(), 1);

    pods.delete("p", &DeleteParams::default())
        .await
        .expect("delete");
    let terminating = pods
        .get("p")
        .await
        .expect("still there while the kubelet tears down");
    assert!(terminating.metadata.deletion_timestamp.is_some());
    assert_eq!(terminating.metadata.deletion_grace_period_seconds, Some(30));
    // The kubelet's final word: delete with a zero grace period.
    pods.delete(
        "p",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        },
    )
    .await
    .expect("final delete");
    assert!(pods.get_opt("p").await.expect("get").is_none());

    pods.create(&PostParams::default(), &pod("unbound"))
        .await
        .expect("create");
    pods.delete("unbound", &DeleteParams::default())
        .await
        .expect("delete");
    assert!(
        pods.get_opt("unbound").await.expect("get").is_none(),
        "an unbound pod goes at once"
    );
}

fn owned_by(name: &str, owner: &ConfigMap) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": { "name": name, "ownerReferences": [OwnerReference {
            api_version: "v1".into(), kind: "ConfigMap".into(),
            name: owner.name_any(), uid: owner.uid().expect("uid"), ..Default::default()
        }] },
    }))
    .expect("child")
}

#[tokio::test]
async fn propagation_policies_decide_what_happens_to_dependents() {
    let (_server, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let plain = |name: &str| -> ConfigMap {
        serde_json::from_value(json!({ "metadata": { "name": name } })).expect("cm")
    };

    let owner = cms
        .create(&PostParams::default(), &plain("orphaning"))
        .await
        .expect("owner");
    cms.create(&PostParams::default(), &owned_by("kept", &owner))
        .await
        .expect("child");
    let orphan = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Orphan),
        ..DeleteParams::default()
    };
    cms.delete("orphaning", &orphan).await.expect("delete");
    let kept = cms.get("kept").await.expect("an orphan survives");
    assert!(
        kept.owner_references().is_empty(),
        "and loses its owner reference"
    );

    let owner = cms
        .create(&PostParams::default(), &plain("fg"))
        .await
        .expect("owner");
    let child = cms
        .create(&PostParams::default(), &owned_by("fg-child", &owner))
        .await
        .expect("child");
    cms.create(&PostParams::default(), &owned_by("fg-grandchild", &child))
        .await
        .expect("grandchild");
    cms.delete("fg", &DeleteParams::foreground())
        .await
        .expect("delete");
    for name in ["fg", "fg-child", "fg-grandchild"] {
        assert!(
            cms.get_opt(name).await.expect("get").is_none(),
            "{name} is gone"
        );
    }

    let a = cms
        .create(&PostParams::default(), &plain("owner-a"))
        .await
        .expect("owner");
    let b = cms
        .create(&PostParams::default(), &plain("owner-b"))
        .await
        .expect("owner");
    let mut shared = owned_by("shared", &a);
    shared
        .metadata
        .owner_references
        .as_mut()
        .expect("refs")
        .extend(owned_by("x", &b).metadata.owner_references.expect("refs"));
    cms.create(&PostParams::default(), &shared)
        .await
        .expect("child of two");
    cms.delete("owner-a", &DeleteParams::default())
        .await
        .expect("delete a");
    assert!(
        cms.get_opt("shared").await.expect("get").is_some(),
        "one owner left keeps it"
    );
    cms.delete("owner-b", &DeleteParams::default())
        .await
        .expect("delete b");
    assert!(
        cms.get_opt("shared").await.expect("get").is_none(),
        "no owner left collects it"
    );
}

#[tokio::test]
async fn recorder_events_land_in_events_k8s_io() {
    let (_server, client) = start().await;
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "kube-sim-test".into(),
            instance: None,
        },
    );
    let reference = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some("p".into()),
        namespace: Some("default".into()),
        ..Default::default()
    };
    let event = Event {
        type_: EventType::Warning,
        reason: "NetworkAttachmentNotFound".into(),
        note: Some("default/missing not found".into()),
        action: "Attach".into(),
        secondary: None,
    };
    recorder.publish(&event, &reference).await.expect("publish");
    recorder
        .publish(&event, &reference)
        .await
        .expect("publish again (a series)");
    let events: Api<EventV1> = Api::namespaced(client.clone(), "default");
    let listed = events
        .list(&ListParams::default().fields("reason=NetworkAttachmentNotFound"))
        .await
        .expect("list");
    assert_eq!(listed.items.len(), 1);
    let ev = &listed.items[0];
    assert_eq!(
        ev.regarding.as_ref().and_then(|r| r.name.as_deref()),
        Some("p")
    );
    assert_eq!(ev.series.as_ref().map(|s| s.count), Some(2));

    // The same Event through the core API, as `kubectl get events` and kubelet read them.
    let core: Api<CoreEvent> = Api::namespaced(client.clone(), "default");
    let listed = core
        .list(&ListParams::default().fields("involvedObject.name=p"))
        .await
        .expect("list core");
    assert_eq!(listed.items.len(), 1);
    assert_eq!(
        listed.items[0].message.as_deref(),
        Some("default/missing not found")
    );
    assert_eq!(
        listed.items[0].reporting_component.as_deref(),
        Some("kube-sim-test")
    );

    // And a core Event (the kubelet's way) through events.k8s.io.
    let kubelet_event: CoreEvent = serde_json::from_value(json!({
        "metadata": { "name": "p.kubelet" },
        "involvedObject": { "kind": "Pod", "name": "p", "namespace": "default" },
        "reason": "FailedCreatePodSandBox", "message": "delegate failed", "type": "Warning", "count": 1,
        "source": { "component": "kubelet", "host": "node-1" },
    }))
    .expect("core event");
    core.create(&PostParams::default(), &kubelet_event)
        .await
        .expect("create core event");
    let seen = events
        .get("p.kubelet")
        .await
        .expect("visible at events.k8s.io");
    assert_eq!(seen.note.as_deref(), Some("delegate failed"));
    assert_eq!(
        seen.deprecated_source.and_then(|s| s.host).as_deref(),
        Some("node-1")
    );
}

#[tokio::test]
async fn watches_get_bookmarks_when_they_ask() {
    let (_server, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let rv = cms
        .list(&ListParams::default())
        .await
        .expect("list")
        .metadata
        .resource_version
        .expect("rv");
    let mut stream = cms
        .watch(&WatchParams::default(), &rv)
        .await
        .expect("watch")
        .boxed();
    match tokio::time::timeout(Duration::from_secs(60), stream.try_next()).await {
        Ok(Ok(Some(WatchEvent::Bookmark(b)))) => assert!(!b.metadata.resource_version.is_empty()),
        other => panic!("expected a bookmark, got {other:?}"),
    }
    let mut ending = cms
        .watch(&WatchParams::default().timeout(1).disable_bookmarks(), &rv)
        .await
        .expect("watch")
        .boxed();
    let end = tokio::time::timeout(Duration::from_secs(60), ending.try_next())
        .await
        .expect("the watch ends");
    assert!(
        matches!(end, Ok(None)),
        "timeoutSeconds ends the stream: {end:?}"
    );
}

#[tokio::test]
async fn the_binary_serves_writes_a_kubeconfig_and_dumps_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    let dump = dir.path().join("dump.json");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kube-sim"))
        .args(["serve", "--kubeconfig"])
        .arg(&kubeconfig)
        .arg("--dump")
        .arg(&dump)
        .kill_on_drop(true)
        .spawn()
        .expect("kube-sim starts");
    let mut waited = 0;
    while !kubeconfig.exists() {
        assert!(waited < 600, "no kubeconfig written");
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    let text = std::fs::read_to_string(&kubeconfig).expect("kubeconfig");
    let config = kube::config::Kubeconfig::from_yaml(&text).expect("a valid kubeconfig");
    let options = kube::config::KubeConfigOptions::default();
    let client_config = kube::Config::from_custom_kubeconfig(config, &options)
        .await
        .expect("config");
    let client = Client::try_from(client_config).expect("client");
    let cms: Api<ConfigMap> = Api::namespaced(client, "kube-system");
    let cm: ConfigMap =
        serde_json::from_value(json!({ "metadata": { "name": "dumped" } })).expect("cm");
    cms.create(&PostParams::default(), &cm)
        .await
        .expect("create");

    let pid = nix::unistd::Pid::from_raw(child.id().expect("running") as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("exits")
        .expect("wait");
    assert!(status.success(), "{status:?}");
    let dumped: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&dump).expect("dump written on exit"))
            .expect("JSON");
    let names: Vec<&str> = dumped["objects"]["configmaps"]
        .as_array()
        .expect("configmaps")
        .iter()
        .filter_map(|o| o["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, ["dumped"]);
}

#[tokio::test]
async fn delete_collection_takes_what_the_selector_matches() {
    let (_server, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    for (name, tier) in [("a", "web"), ("b", "web"), ("c", "db")] {
        let cm: ConfigMap = serde_json::from_value(
            json!({ "metadata": { "name": name, "labels": { "tier": tier } } }),
        )
        .expect("cm");
        cms.create(&PostParams::default(), &cm)
            .await
            .expect("create");
    }
    cms.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("tier=web"),
    )
    .await
    .expect("delete");
    let left: Vec<String> = cms
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .iter()
        .map(|c| c.name_any())
        .collect();
    assert_eq!(left, ["c"]);
}
