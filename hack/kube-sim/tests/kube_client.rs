//! The real `kube` client against the in-process API server: CRUD with optimistic
//! concurrency, selectors, patches, the status subresource, watches (including 410 Gone),
//! finalizers and garbage collection.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::core::Status;
use kube_sim::{ApiServer, ServerOptions};
use serde_json::json;

async fn server() -> ApiServer {
    ApiServer::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .expect("server starts")
}

fn api_error(err: kube::Error) -> Status {
    match err {
        kube::Error::Api(status) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn config_map(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": name, "labels": labels },
        "data": { "k": "v" },
    }))
    .expect("valid ConfigMap")
}

#[tokio::test]
async fn crud_with_conflicts_selectors_and_patches() {
    let server = server().await;
    let client = server.client().expect("client");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    let created = cms
        .create(
            &PostParams::default(),
            &config_map("a", json!({ "app": "web" })),
        )
        .await
        .expect("create");
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    let first_rv = created
        .metadata
        .resource_version
        .clone()
        .expect("resourceVersion");
    cms.create(
        &PostParams::default(),
        &config_map("b", json!({ "app": "db" })),
    )
    .await
    .expect("create b");

    let again = cms
        .create(&PostParams::default(), &config_map("a", json!({})))
        .await
        .expect_err("exists");
    let again = api_error(again);
    assert_eq!((again.code, again.reason.as_str()), (409, "AlreadyExists"));

    let web = cms
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("list");
    assert_eq!(web.items.len(), 1);
    let not_web = cms
        .list(&ListParams::default().labels("app notin (web)"))
        .await
        .expect("list");
    assert_eq!(not_web.items[0].metadata.name.as_deref(), Some("b"));
    let by_name = cms
        .list(&ListParams::default().fields("metadata.name=b"))
        .await
        .expect("list");
    assert_eq!(by_name.items.len(), 1);
    let bad = cms
        .list(&ListParams::default().fields("data.k=v"))
        .await
        .expect_err("unsupported field");
    assert_eq!(api_error(bad).code, 400);

    let mut changed = created.clone();
    changed.data = Some([("k".to_string(), "w".to_string())].into());
    let replaced = cms
        .replace("a", &PostParams::default(), &changed)
        .await
        .expect("replace");
    assert_ne!(
        replaced.metadata.resource_version.as_deref(),
        Some(first_rv.as_str())
    );
    let stale = cms
        .replace("a", &PostParams::default(), &changed)
        .await
        .expect_err("stale");
    let stale = api_error(stale);
    assert_eq!((stale.code, stale.reason.as_str()), (409, "Conflict"));

    let merged = cms
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({ "data": { "x": "1" } })),
        )
        .await
        .expect("merge patch");
    assert_eq!(
        merged
            .data
            .as_ref()
            .and_then(|d| d.get("x"))
            .map(String::as_str),
        Some("1")
    );
    let json_patched = cms
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(json!([{ "op": "remove", "path": "/data/x" }]))
                    .expect("ops"),
            ),
        )
        .await
        .expect("json patch");
    assert!(json_patched
        .data
        .as_ref()
        .is_some_and(|d| !d.contains_key("x")));

    let applied = cms
        .patch(
            "c",
            &PatchParams::apply("test").force(),
            &Patch::Apply(json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "c" }, "data": { "z": "1" } })),
        )
        .await
        .expect("server-side apply creates");
    assert_eq!(applied.metadata.name.as_deref(), Some("c"));

    cms.delete("a", &DeleteParams::default())
        .await
        .expect("delete");
    let gone = cms.get("a").await.expect_err("deleted");
    assert_eq!(api_error(gone).code, 404);
    server.shutdown().await;
}

#[tokio::test]
async fn generate_name_and_unknown_namespace() {
    let server = server().await;
    let client = server.client().expect("client");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let mut cm = config_map("", json!({}));
    cm.metadata.name = None;
    cm.metadata.generate_name = Some("gen-".into());
    let created = cms
        .create(&PostParams::default(), &cm)
        .await
        .expect("create");
    let name = created.metadata.name.expect("name");
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");
    let nowhere: Api<ConfigMap> = Api::namespaced(client, "nowhere");
    let err = nowhere
        .create(&PostParams::default(), &config_map("x", json!({})))
        .await
        .expect_err("no namespace");
    assert_eq!(api_error(err).code, 404);
}

#[tokio::test]
async fn status_subresource_is_separate_from_the_main_resource() {
    let server = server().await;
    let pods: Api<Pod> = Api::namespaced(server.client().expect("client"), "default");
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "p" },
        "spec": { "containers": [{ "name": "c", "image": "nginx" }] },
        "status": { "phase": "Running" },
    }))
    .expect("pod");
    let created = pods
        .create(&PostParams::default(), &pod)
        .await
        .expect("create");
    assert_eq!(
        created.status.and_then(|s| s.phase).as_deref(),
        Some("Pending")
    );
    let main = pods
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": { "phase": "Failed" } })),
        )
        .await
        .expect("patch main");
    assert_eq!(
        main.status.and_then(|s| s.phase).as_deref(),
        Some("Pending")
    );
    let status = pods
        .patch_status(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": { "phase": "Running", "podIP": "10.0.0.5" }, "spec": { "nodeName": "x" } })),
        )
        .await
        .expect("patch status");
    assert_eq!(
        status.status.as_ref().and_then(|s| s.pod_ip.as_deref()),
        Some("10.0.0.5")
    );
    assert_eq!(status.spec.and_then(|s| s.node_name), None);
}

#[tokio::test]
async fn watch_streams_changes_and_old_versions_are_gone() {
    let server = ApiServer::start_with(
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        ServerOptions {
            history_limit: 5,
            ..ServerOptions::default()
        },
    )
    .await
    .expect("server");
    let cms: Api<ConfigMap> = Api::namespaced(server.client().expect("client"), "default");
    let list = cms.list(&ListParams::default()).await.expect("list");
    let rv = list
        .metadata
        .resource_version
        .expect("list resourceVersion");

    let mut stream = cms
        .watch(&WatchParams::default().labels("app=web"), &rv)
        .await
        .expect("watch")
        .boxed();
    cms.create(
        &PostParams::default(),
        &config_map("w", json!({ "app": "web" })),
    )
    .await
    .expect("create");
    cms.create(
        &PostParams::default(),
        &config_map("other", json!({ "app": "db" })),
    )
    .await
    .expect("create");
    cms.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({ "data": { "k": "2" } })),
    )
    .await
    .expect("patch");
    cms.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": { "labels": { "app": "x" } } })),
    )
    .await
    .expect("relabel");
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match tokio::time::timeout(Duration::from_secs(30), stream.try_next()).await {
            Ok(Ok(Some(WatchEvent::Added(cm)))) => {
                seen.push(format!("ADDED {}", cm.metadata.name.unwrap_or_default()))
            }
            Ok(Ok(Some(WatchEvent::Modified(cm)))) => {
                seen.push(format!("MODIFIED {}", cm.metadata.name.unwrap_or_default()))
            }
            Ok(Ok(Some(WatchEvent::Deleted(cm)))) => {
                seen.push(format!("DELETED {}", cm.metadata.name.unwrap_or_default()))
            }
            Ok(Ok(Some(WatchEvent::Bookmark(_)))) => {}
            other => panic!("unexpected watch item {other:?}"),
        }
    }
    assert_eq!(seen, ["ADDED w", "MODIFIED w", "DELETED w"]);

    for i in 0..10 {
        cms.create(
            &PostParams::default(),
            &config_map(&format!("n{i}"), json!({})),
        )
        .await
        .expect("create");
    }
    let mut old = cms
        .watch(&WatchParams::default(), &rv)
        .await
        .expect("watch")
        .boxed();
    match old.try_next().await {
        Ok(Some(WatchEvent::Error(e))) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected 410 Gone, got {other:?}"),
    }
}

#[tokio::test]
async fn finalizers_delay_deletion_and_owners_collect_children() {
    let server = server().await;
    let client = server.client().expect("client");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let mut held = config_map("held", json!({}));
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    cms.create(&PostParams::default(), &held)
        .await
        .expect("create");
    cms.delete("held", &DeleteParams::default())
        .await
        .expect("delete");
    let marked = cms.get("held").await.expect("still there");
    assert!(marked.metadata.deletion_timestamp.is_some());
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": { "finalizers": null } })),
    )
    .await
    .expect("drop finalizer");
    assert_eq!(
        api_error(cms.get("held").await.expect_err("gone")).code,
        404
    );

    let owner = cms
        .create(&PostParams::default(), &config_map("owner", json!({})))
        .await
        .expect("owner");
    cms.create(&PostParams::default(), &child_of("child", &owner))
        .await
        .expect("child");
    cms.delete("owner", &DeleteParams::default())
        .await
        .expect("delete owner");
    assert_eq!(
        api_error(cms.get("child").await.expect_err("collected")).code,
        404
    );
    // A dependent of an owner that no longer exists is collected as soon as it appears.
    let late = cms
        .create(&PostParams::default(), &child_of("late", &owner))
        .await
        .expect("create");
    assert_eq!(late.metadata.name.as_deref(), Some("late"));
    assert_eq!(
        api_error(cms.get("late").await.expect_err("collected")).code,
        404
    );

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(json!({ "metadata": { "name": "doomed" } })).expect("ns");
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("create ns");
    let inside: Api<ConfigMap> = Api::namespaced(client, "doomed");
    inside
        .create(&PostParams::default(), &config_map("c", json!({})))
        .await
        .expect("create inside");
    namespaces
        .delete("doomed", &DeleteParams::default())
        .await
        .expect("delete ns");
    assert_eq!(
        api_error(namespaces.get("doomed").await.expect_err("ns gone")).code,
        404
    );
    assert_eq!(
        api_error(inside.get("c").await.expect_err("content gone")).code,
        404
    );
}

#[tokio::test]
async fn crd_schemas_are_enforced_for_the_kube_client() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::DynamicObject;
    use kube::discovery::ApiResource;

    let server = server().await;
    let client = server.client().expect("client");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/crds.yaml"
    ))
    .expect("fixture");
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let crd: CustomResourceDefinition = serde::Deserialize::deserialize(doc).expect("a CRD");
        crds.create(&PostParams::default(), &crd)
            .await
            .expect("create CRD");
        // Installing CRDs by server-side apply, again and again, settles.
        let apply = PatchParams::apply("installer").force();
        let name = crd.metadata.name.clone().expect("name");
        let first = crds
            .patch(&name, &apply, &Patch::Apply(&crd))
            .await
            .expect("apply CRD");
        let second = crds
            .patch(&name, &apply, &Patch::Apply(&crd))
            .await
            .expect("apply CRD again");
        assert_eq!(
            first.metadata.resource_version,
            second.metadata.resource_version
        );
    }
    let resource = ApiResource {
        group: "kubeovn.io".into(),
        version: "v1".into(),
        api_version: "kubeovn.io/v1".into(),
        kind: "Subnet".into(),
        plural: "subnets".into(),
    };
    let subnets: Api<DynamicObject> = Api::all_with(client, &resource);
    let subnet = |spec: serde_json::Value| -> DynamicObject {
        serde_json::from_value(json!({ "apiVersion": "kubeovn.io/v1", "kind": "Subnet",
                                       "metadata": { "name": "s1" }, "spec": spec }))
        .expect("object")
    };
    let err = subnets
        .create(&PostParams::default(), &subnet(json!({ "cidrBlock": 10 })))
        .await
        .expect_err("422");
    let err = api_error(err);
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert!(
        err.message.contains("spec.cidrBlock") && err.message.contains("must be of type string"),
        "{}",
        err.message
    );
    let causes = err.details.expect("details").causes;
    assert_eq!(causes[0].field, "spec.cidrBlock");

    let created = subnets
        .create(
            &PostParams::default(),
            &subnet(json!({ "cidrBlock": "10.0.0.0/24", "unknownField": 1 })),
        )
        .await
        .expect("valid subnet");
    assert_eq!(created.data["spec"]["cidrBlock"], "10.0.0.0/24");
    assert!(
        created.data["spec"].get("unknownField").is_none(),
        "unknown fields are pruned"
    );
    let err = subnets
        .patch(
            "s1",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "private": "yes" } })),
        )
        .await
        .expect_err("a patch is checked too");
    assert_eq!(api_error(err).code, 422);
    let status = subnets
        .patch_status(
            "s1",
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": { "v4usingIPs": 3 } })),
        )
        .await
        .expect("status");
    assert_eq!(status.data["status"]["v4usingIPs"], 3);
}

#[tokio::test]
async fn the_guides_spec_less_pod_is_accepted_but_nameless_containers_are_not() {
    let server = server().await;
    let pods: Api<Pod> = Api::namespaced(server.client().expect("client"), "default");
    // The user guide's `frontend` pod has no spec; it must work verbatim.
    let pod: Pod =
        serde_json::from_value(json!({ "metadata": { "name": "frontend" } })).expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("a spec-less pod is accepted");
    let pod: Pod = serde_json::from_value(
        json!({ "metadata": { "name": "noimage" }, "spec": { "containers": [{ "name": "app" }] } }),
    )
    .expect("pod");
    let err = api_error(
        pods.create(&PostParams::default(), &pod)
            .await
            .expect_err("no image"),
    );
    assert_eq!(err.code, 422);
    assert!(
        err.message
            .contains("spec.containers[0].image: Required value"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn server_side_apply_owns_fields_and_repeats_are_no_ops() {
    let server = server().await;
    let cms: Api<ConfigMap> = Api::namespaced(server.client().expect("client"), "default");
    let apply = |manager: &'static str, data: serde_json::Value| {
        let cms = cms.clone();
        async move {
            let config = json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "ssa" }, "data": data });
            cms.patch("ssa", &PatchParams::apply(manager), &Patch::Apply(config))
                .await
                .expect("apply")
        }
    };
    let first = apply("operator", json!({ "a": "1", "b": "2" })).await;
    let again = apply("operator", json!({ "a": "1", "b": "2" })).await;
    assert_eq!(
        first.metadata.resource_version, again.metadata.resource_version,
        "the same apply is a no-op"
    );
    assert_eq!(
        again.metadata.managed_fields.as_ref().map(Vec::len),
        Some(1)
    );

    apply("other", json!({ "c": "3" })).await;
    let shrunk = apply("operator", json!({ "a": "1" })).await;
    let data = shrunk.data.expect("data");
    assert_eq!(
        data.keys().cloned().collect::<Vec<_>>(),
        ["a", "c"],
        "b was operator's alone; c is other's"
    );
}

fn child_of(name: &str, owner: &ConfigMap) -> ConfigMap {
    let mut child = config_map(name, json!({}));
    child.metadata.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: owner.metadata.name.clone().expect("name"),
            uid: owner.metadata.uid.clone().expect("uid"),
            ..Default::default()
        },
    ]);
    child
}
