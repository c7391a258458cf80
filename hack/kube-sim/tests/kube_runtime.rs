//! kube-runtime, unchanged, against the in-process API server: watchers (list-then-watch and
//! streaming lists), a reflector, and a `Controller` with a finalizer that owns children,
//! writes status with server-side apply and is woken by changes to what it owns.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::runtime::{conditions, reflector, wait::await_condition, watcher, WatchStreamExt};
use kube::{Client, CustomResource, CustomResourceExt, Resource, ResourceExt};
use kube_sim::ApiServer;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, JsonSchema)]
#[kube(
    group = "example.kube-sim.io",
    version = "v1",
    kind = "Widget",
    namespaced,
    status = "WidgetStatus"
)]
pub struct WidgetSpec {
    color: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WidgetStatus {
    rendered_color: String,
}

const FINALIZER: &str = "example.kube-sim.io/cleanup";

async fn start() -> (ApiServer, Client) {
    let server = ApiServer::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .expect("server starts");
    let client = server.client().expect("client");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &Widget::crd())
        .await
        .expect("create CRD");
    let established = await_condition(
        crds,
        "widgets.example.kube-sim.io",
        conditions::is_crd_established(),
    );
    tokio::time::timeout(Duration::from_secs(30), established)
        .await
        .expect("CRD established in time")
        .expect("wait");
    (server, client)
}

/// Poll `check` until it yields a value (an upper bound keeps a broken server from hanging the test).
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..600 {
        if let Some(v) = check().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("gave up waiting for {what}");
}

fn widget(name: &str, color: &str) -> Widget {
    Widget::new(
        name,
        WidgetSpec {
            color: color.into(),
        },
    )
}

#[tokio::test]
async fn watchers_and_reflectors_follow_the_server() {
    let (_server, client) = start().await;
    let widgets: Api<Widget> = Api::namespaced(client.clone(), "default");
    widgets
        .create(&PostParams::default(), &widget("before", "red"))
        .await
        .expect("create");

    let (reader, writer) = reflector::store::<Widget>();
    let feed =
        reflector(writer, watcher(widgets.clone(), watcher::Config::default())).applied_objects();
    tokio::spawn(feed.for_each(|_| async {}));
    let (streamed_reader, streamed_writer) = reflector::store::<Widget>();
    let streamed = reflector(
        streamed_writer,
        watcher(
            widgets.clone(),
            watcher::Config::default().streaming_lists(),
        ),
    );
    tokio::spawn(streamed.applied_objects().for_each(|_| async {}));
    reader.wait_until_ready().await.expect("reflector ready");
    streamed_reader
        .wait_until_ready()
        .await
        .expect("streaming reflector ready");
    assert_eq!(reader.state().len(), 1);
    assert_eq!(streamed_reader.state().len(), 1);

    widgets
        .create(&PostParams::default(), &widget("after", "blue"))
        .await
        .expect("create");
    widgets
        .patch(
            "before",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "color": "green" } })),
        )
        .await
        .expect("patch");
    for store in [&reader, &streamed_reader] {
        eventually("the reflector to see both widgets", || async {
            let state = store.state();
            let before = state.iter().find(|w| w.name_any() == "before")?;
            (state.len() == 2 && before.spec.color == "green").then_some(())
        })
        .await;
    }
    widgets
        .delete("after", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("the reflector to forget the deleted widget", || async {
        (reader.state().len() == 1).then_some(())
    })
    .await;

    let mut events = watcher(widgets.clone(), watcher::Config::default()).boxed();
    let mut initial = Vec::new();
    loop {
        match events
            .try_next()
            .await
            .expect("watch works")
            .expect("stream continues")
        {
            watcher::Event::Init => {}
            watcher::Event::InitApply(w) => initial.push(w.name_any()),
            watcher::Event::InitDone => break,
            other => panic!("unexpected event before InitDone: {other:?}"),
        }
    }
    assert_eq!(initial, ["before"]);
    widgets
        .create(&PostParams::default(), &widget("third", "pink"))
        .await
        .expect("create");
    match events
        .try_next()
        .await
        .expect("watch works")
        .expect("stream continues")
    {
        watcher::Event::Apply(w) => assert_eq!(w.name_any(), "third"),
        other => panic!("expected the new widget, got {other:?}"),
    }
}

struct Context {
    client: Client,
    cleanups: AtomicUsize,
}

#[derive(Debug, thiserror::Error)]
enum ReconcileError {
    #[error(transparent)]
    Finalizer(#[from] Box<kube::runtime::finalizer::Error<kube::Error>>),
}

async fn reconcile(widget: Arc<Widget>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let ns = widget.namespace().expect("widgets are namespaced");
    let widgets: Api<Widget> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&widgets, FINALIZER, widget, |event| async {
        match event {
            Finalizer::Apply(w) => render(&ctx, &w).await,
            Finalizer::Cleanup(_) => {
                ctx.cleanups.fetch_add(1, Ordering::SeqCst);
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(|e| ReconcileError::Finalizer(Box::new(e)))
}

/// Apply: a ConfigMap owned by the widget, then the widget's status.
async fn render(ctx: &Context, w: &Widget) -> Result<Action, kube::Error> {
    let ns = w.namespace().unwrap_or_default();
    let owner = w
        .controller_owner_ref(&())
        .expect("a stored widget has a uid");
    let cm: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": format!("{}-rendered", w.name_any()), "ownerReferences": [owner] },
        "data": { "color": w.spec.color },
    }))
    .expect("valid ConfigMap");
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let params = PatchParams::apply("widget-controller").force();
    cms.patch(&cm.name_any(), &params, &Patch::Apply(&cm))
        .await?;
    let status = json!({
        "apiVersion": Widget::api_version(&()), "kind": Widget::kind(&()),
        "status": { "renderedColor": w.spec.color },
    });
    let widgets: Api<Widget> = Api::namespaced(ctx.client.clone(), &ns);
    widgets
        .patch_status(&w.name_any(), &params, &Patch::Apply(status))
        .await?;
    Ok(Action::await_change())
}

fn error_policy(_w: Arc<Widget>, _e: &ReconcileError, _ctx: Arc<Context>) -> Action {
    Action::requeue(Duration::from_millis(200))
}

#[tokio::test]
async fn a_controller_reconciles_owns_and_finalizes() {
    let (_server, client) = start().await;
    let widgets: Api<Widget> = Api::namespaced(client.clone(), "default");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let ctx = Arc::new(Context {
        client: client.clone(),
        cleanups: AtomicUsize::new(0),
    });
    let controller = Controller::new(widgets.clone(), watcher::Config::default())
        .owns(cms.clone(), watcher::Config::default())
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(e) = result {
                eprintln!("reconcile failed: {e:?}");
            }
        });
    tokio::spawn(controller);

    widgets
        .create(&PostParams::default(), &widget("w1", "red"))
        .await
        .expect("create");
    let rendered = |color: &'static str| {
        let cms = cms.clone();
        let widgets = widgets.clone();
        move || {
            let cms = cms.clone();
            let widgets = widgets.clone();
            async move {
                let cm = cms.get_opt("w1-rendered").await.ok()??;
                let w = widgets.get("w1").await.ok()?;
                let status_color = w.status.map(|s| s.rendered_color).unwrap_or_default();
                let cm_color = cm
                    .data
                    .and_then(|d| d.get("color").cloned())
                    .unwrap_or_default();
                (cm_color == color && status_color == color && w.metadata.finalizers.is_some())
                    .then_some(())
            }
        }
    };
    eventually("the widget to be rendered red", rendered("red")).await;

    widgets
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "color": "blue" } })),
        )
        .await
        .expect("patch spec");
    eventually("the widget to be re-rendered blue", rendered("blue")).await;

    cms.delete("w1-rendered", &DeleteParams::default())
        .await
        .expect("delete child");
    eventually("the owned ConfigMap to be recreated", rendered("blue")).await;

    widgets
        .delete("w1", &DeleteParams::default())
        .await
        .expect("delete widget");
    eventually("the finalizer to run and the widget to go", || async {
        (widgets.get_opt("w1").await.ok()?.is_none() && ctx.cleanups.load(Ordering::SeqCst) == 1)
            .then_some(())
    })
    .await;
    eventually("the owned ConfigMap to be collected", || async {
        cms.get_opt("w1-rendered")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
}
