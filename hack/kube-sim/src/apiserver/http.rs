//! The HTTP face of the API server: URL routing (discovery paths, resource paths with their
//! namespace, name and subresource), query parameters, content types, watch streams
//! (newline-delimited JSON, bookmarks, timeouts) and Table responses for `kubectl get`.
//! Object semantics live in `store.rs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::auth;
use super::events;
use super::openapi;
use super::patch::{self, PatchKind};
use super::protobuf;
use super::resources::{ResourceTable, ResourceType};
use super::scale::{self, ScaleRequest};
use super::selector::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{
    Change, ChangeKind, DeleteOptions, Part, Propagation, Store, WatchFrom, WriteOptions,
};

/// What every request handler shares.
pub struct Shared {
    pub store: Arc<Store>,
    pub address: String,
    pub bookmark_interval: Duration,
    pub shutdown: CancellationToken,
    /// ServiceAccount tokens issued by TokenRequest.
    pub tokens: auth::Tokens,
}

/// A request path, understood.
#[derive(Debug, Clone, PartialEq)]
enum Route {
    Version,
    Health,
    CoreVersions,
    Groups,
    Group(String),
    ResourceList { group: String, version: String },
    Resource(ResourcePath),
    OpenApiIndex,
    OpenApi(String),
    NotFound,
}

#[derive(Debug, Clone, PartialEq)]
struct ResourcePath {
    group: String,
    version: String,
    namespace: Option<String>,
    plural: String,
    name: Option<String>,
    subresource: Option<String>,
    /// The legacy `/watch/` path prefix.
    watch: bool,
}

fn route(path: &str, table: &ResourceTable) -> Route {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        ["version"] => Route::Version,
        ["healthz" | "livez" | "readyz", ..] => Route::Health,
        ["api"] => Route::CoreVersions,
        ["api", version] => Route::ResourceList {
            group: String::new(),
            version: version.to_string(),
        },
        ["api", version, rest @ ..] => resource_route("", version, rest, table),
        ["apis"] => Route::Groups,
        ["apis", group] => Route::Group(group.to_string()),
        ["apis", group, version] => Route::ResourceList {
            group: group.to_string(),
            version: version.to_string(),
        },
        ["apis", group, version, rest @ ..] => resource_route(group, version, rest, table),
        ["openapi", "v3"] => Route::OpenApiIndex,
        ["openapi", "v3", gv @ ..] => Route::OpenApi(gv.join("/")),
        _ => Route::NotFound,
    }
}

fn resource_route(group: &str, version: &str, rest: &[&str], table: &ResourceTable) -> Route {
    let (watch, rest) = match rest {
        ["watch", rest @ ..] => (true, rest),
        rest => (false, rest),
    };
    let (namespace, rest): (Option<String>, &[&str]) = match rest {
        ["namespaces", ns, plural, ..]
            if table
                .find(group, version, plural)
                .is_some_and(|t| t.namespaced) =>
        {
            (Some(ns.to_string()), &rest[2..])
        }
        rest => (None, rest),
    };
    match rest {
        [plural, tail @ ..] if tail.len() <= 2 => Route::Resource(ResourcePath {
            group: group.to_string(),
            version: version.to_string(),
            namespace,
            plural: plural.to_string(),
            name: tail.first().map(|s| s.to_string()),
            subresource: tail.get(1).map(|s| s.to_string()),
            watch,
        }),
        _ => Route::NotFound,
    }
}

/// The one handler: every request goes through here.
pub async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query: HashMap<String, String> = Query::<HashMap<String, String>>::try_from_uri(&uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let table = shared.store.table();
    let path = uri.path().to_string();
    tracing::debug!(%method, %uri, "request");
    let result = match route(&path, &table) {
        Route::Version => Ok(json_response(StatusCode::OK, version_info())),
        Route::Health => Ok((StatusCode::OK, "ok").into_response()),
        Route::CoreVersions => Ok(json_response(
            StatusCode::OK,
            table.core_versions(&shared.address),
        )),
        Route::Groups => Ok(json_response(StatusCode::OK, table.group_list())),
        Route::Group(g) => table
            .group(&g)
            .map(ok)
            .ok_or_else(|| ApiError::path_not_found(&path)),
        Route::ResourceList { group, version } => table
            .resource_list(&group, &version)
            .map(ok)
            .ok_or_else(|| ApiError::path_not_found(&path)),
        Route::Resource(rp) => match table.find(&rp.group, &rp.version, &rp.plural) {
            Some(rt) => {
                serve_resource(&shared, rt.clone(), rp, method, &query, &headers, &body).await
            }
            None => Err(ApiError::path_not_found(&path)),
        },
        Route::OpenApiIndex => Ok(ok(openapi::index(&table))),
        Route::OpenApi(gv) => openapi::document(&table, &gv)
            .map(ok)
            .ok_or_else(|| ApiError::path_not_found(&path)),
        Route::NotFound => Err(ApiError::path_not_found(&path)),
    };
    result.unwrap_or_else(|e| {
        tracing::debug!(%uri, error = %e, "request failed");
        e.into_response()
    })
}

fn ok(value: Value) -> Response {
    json_response(StatusCode::OK, value)
}

fn json_response(code: StatusCode, value: Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-kube-sim",
        "gitCommit": "kube-sim",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "none",
        "compiler": "rustc",
        "platform": "linux/amd64",
    })
}

async fn serve_resource(
    shared: &Arc<Shared>,
    rt: ResourceType,
    rp: ResourcePath,
    method: Method,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let store = &shared.store;
    let ns = if rt.namespaced {
        rp.namespace.as_deref()
    } else {
        None
    };
    if rp.namespace.is_some() && !rt.namespaced {
        return Err(ApiError::path_not_found(&format!(
            "namespaced path for cluster-scoped {}",
            rt.qualified_name()
        )));
    }
    if query.get("dryRun").is_some_and(|d| !d.is_empty()) {
        return Err(ApiError::bad_request(
            "kube-sim: dryRun is not supported yet",
        ));
    }
    if let Some(review) = auth::Review::of(&rt.group, &rt.plural) {
        if method != Method::POST || rp.name.is_some() {
            return Err(ApiError::method_not_allowed(format!(
                "{}: only create is supported",
                rt.qualified_name()
            )));
        }
        let answer = auth::answer(
            store,
            &shared.tokens,
            review,
            ns,
            headers,
            parse_body(body)?,
        )?;
        return Ok(json_response(StatusCode::CREATED, answer));
    }
    let version = rp.version.as_str();
    let part = match rp.subresource.as_deref() {
        None => Part::Main,
        Some("status") if rt.status_subresource => Part::Status,
        Some("scale") if scale::serves(&rt) => {
            let name = rp.name.as_deref().unwrap_or_default();
            let request = match method {
                Method::GET => ScaleRequest::Get,
                Method::PUT => ScaleRequest::Replace(parse_body(body)?),
                Method::PATCH => {
                    let kind = patch_kind(headers)?;
                    ScaleRequest::Patch(
                        kind,
                        patch::parse_body(kind, body).map_err(ApiError::bad_request)?,
                    )
                }
                other => {
                    return Err(ApiError::method_not_allowed(format!(
                        "{other} is not supported on a scale"
                    )))
                }
            };
            return scale::serve(store, &rt, version, ns, name, request).map(ok);
        }
        Some("binding") if rt.group.is_empty() && rt.plural == "pods" && method == Method::POST => {
            let name = rp.name.as_deref().unwrap_or_default();
            return bind_pod(store, &rt, ns, name, body);
        }
        Some("token")
            if rt.group.is_empty() && rt.plural == "serviceaccounts" && method == Method::POST =>
        {
            let name = rp.name.as_deref().unwrap_or_default();
            let answer =
                shared
                    .tokens
                    .request(store, ns.unwrap_or_default(), name, parse_body(body)?)?;
            return Ok(json_response(StatusCode::CREATED, answer));
        }
        Some(other) => {
            return Err(ApiError::path_not_found(&format!(
                "{}/{other}",
                rt.qualified_name()
            )));
        }
    };
    let opts = WriteOptions {
        strict: query.get("fieldValidation").is_some_and(|v| v == "Strict"),
        field_manager: query.get("fieldManager").cloned(),
        force: query.get("force").is_some_and(|v| v == "true"),
    };
    let watch = rp.watch || query.get("watch").is_some_and(|v| v == "true" || v == "1");
    match (method, rp.name.as_deref()) {
        (Method::GET, None) if watch => watch_response(shared, &rt, version, ns, query),
        (Method::GET, Some(name)) if watch => {
            let mut q = query.clone();
            q.insert("fieldSelector".into(), format!("metadata.name={name}"));
            watch_response(shared, &rt, version, ns, &q)
        }
        (Method::GET, None) => {
            let (labels, fields) = selectors(&rt, query)?;
            let list = store.list(&rt, version, ns, &labels, &fields);
            Ok(render(&rt, headers, list, true))
        }
        (Method::GET, Some(name)) => Ok(render(
            &rt,
            headers,
            store.get(&rt, version, ns, name)?,
            false,
        )),
        (Method::POST, None) => {
            let object = parse_body(body)?;
            Ok(json_response(
                StatusCode::CREATED,
                store.create(&rt, version, ns, object, &opts)?,
            ))
        }
        (Method::PUT, Some(name)) => {
            let object = parse_body(body)?;
            Ok(ok(
                store.replace(&rt, version, ns, name, object, part, &opts)?
            ))
        }
        (Method::PATCH, Some(name)) => {
            let kind = patch_kind(headers)?;
            let patch_body = patch::parse_body(kind, body).map_err(ApiError::bad_request)?;
            let existed = store.get(&rt, version, ns, name).is_ok();
            let result = store.patch(&rt, version, ns, name, kind, &patch_body, part, &opts)?;
            let code = if existed {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            Ok(json_response(code, result))
        }
        (Method::DELETE, Some(name)) => {
            let opts = delete_options(query, body)?;
            Ok(ok(store.delete(&rt, version, ns, name, &opts)?))
        }
        (Method::DELETE, None) => {
            let (labels, fields) = selectors(&rt, query)?;
            let opts = delete_options(query, body)?;
            let list = store.list(&rt, version, ns, &labels, &fields);
            let mut deleted = Vec::new();
            for item in list["items"].as_array().into_iter().flatten() {
                let name = item
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let item_ns = item.pointer("/metadata/namespace").and_then(Value::as_str);
                if let Ok(last) = store.delete(&rt, version, item_ns, name, &opts) {
                    deleted.push(last);
                }
            }
            let mut list = list;
            list["items"] = Value::Array(deleted);
            Ok(ok(list))
        }
        (method, _) => Err(ApiError::method_not_allowed(format!(
            "{method} is not supported on {}{}",
            rt.qualified_name(),
            rp.name.map(|n| format!("/{n}")).unwrap_or_default()
        ))),
    }
}

/// The kind of patch a PATCH request's content type names.
fn patch_kind(headers: &HeaderMap) -> Result<PatchKind, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    PatchKind::from_content_type(content_type)
        .ok_or_else(|| ApiError::unsupported_media_type(content_type))
}

/// A request body as JSON: JSON as it is, Kubernetes protobuf (told by its magic) decoded.
fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    if protobuf::is_protobuf(body) {
        return protobuf::decode(body).map_err(|e| match e {
            protobuf::DecodeError::UnsupportedKind { .. } => {
                ApiError::unsupported_media_type(&format!("{} ({e})", protobuf::MEDIA_TYPE))
            }
            other => ApiError::bad_request(format!("error decoding protobuf body: {other}")),
        });
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding request body: {e}")))
}

fn selectors(
    rt: &ResourceType,
    query: &HashMap<String, String>,
) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(
        query
            .get("labelSelector")
            .map(String::as_str)
            .unwrap_or_default(),
    )
    .map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse(
        query
            .get("fieldSelector")
            .map(String::as_str)
            .unwrap_or_default(),
        |l| rt.supports_field(l),
    )
    .map_err(ApiError::bad_request)?;
    // events.k8s.io Events are stored as core Events: select on the core field names.
    let fields = if events::is_events_v1(&rt.group, &rt.plural) {
        FieldSelector(
            fields
                .0
                .into_iter()
                .map(|mut req| {
                    req.path = events::core_field_label(&req.path);
                    req
                })
                .collect(),
        )
    } else {
        fields
    };
    Ok((labels, fields))
}

fn delete_options(
    query: &HashMap<String, String>,
    body: &Bytes,
) -> Result<DeleteOptions, ApiError> {
    let body: Value = if body.is_empty() {
        json!({})
    } else {
        parse_body(body)?
    };
    let policy = query
        .get("propagationPolicy")
        .map(String::as_str)
        .or_else(|| body.get("propagationPolicy").and_then(Value::as_str))
        .or_else(
            || match body.get("orphanDependents").and_then(Value::as_bool) {
                Some(true) => Some("Orphan"),
                _ => None,
            },
        );
    let propagation = match policy {
        None | Some("Background") => Propagation::Background,
        Some("Foreground") => Propagation::Foreground,
        Some("Orphan") => Propagation::Orphan,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unknown propagationPolicy {other:?}"
            )))
        }
    };
    let grace = query
        .get("gracePeriodSeconds")
        .and_then(|g| g.parse().ok())
        .or_else(|| body.get("gracePeriodSeconds").and_then(Value::as_i64));
    let text = |p: &str| body.pointer(p).and_then(Value::as_str).map(str::to_string);
    Ok(DeleteOptions {
        grace_period_seconds: grace,
        propagation,
        precondition_uid: text("/preconditions/uid"),
        precondition_resource_version: text("/preconditions/resourceVersion"),
    })
}

/// POST pods/<name>/binding: what the scheduler does to bind a pod to a node.
fn bind_pod(
    store: &Store,
    rt: &ResourceType,
    ns: Option<&str>,
    name: &str,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let binding = parse_body(body)?;
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request("binding has no target.name"))?;
    let pod = store.get(rt, "v1", ns, name)?;
    if pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty())
    {
        return Err(ApiError::conflict(
            &rt.plural,
            "",
            name,
            "pod is already assigned to a node",
        ));
    }
    let patch_body = json!({ "spec": { "nodeName": node } });
    store.patch(
        rt,
        "v1",
        ns,
        name,
        PatchKind::Merge,
        &patch_body,
        Part::Main,
        &WriteOptions::default(),
    )?;
    Ok(json_response(
        StatusCode::CREATED,
        json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201 }),
    ))
}

/// `kubectl get` asks for a Table; everyone else gets the object or list itself.
fn render(rt: &ResourceType, headers: &HeaderMap, value: Value, is_list: bool) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !accept.contains("as=Table") {
        return ok(value);
    }
    let objects: Vec<Value> = if is_list {
        value["items"].as_array().cloned().unwrap_or_default()
    } else {
        vec![value.clone()]
    };
    // A CRD that lists its columns shows exactly those; everything else ends with AGE.
    let with_age = !rt.custom || rt.printer_columns.is_empty();
    let mut columns = vec![
        json!({ "name": "Name", "type": "string", "format": "name", "description": "Name of the object" }),
    ];
    for column in &rt.printer_columns {
        // Dates are shown as ages, the way the API server renders them.
        let kind = if column.kind == "date" {
            "string"
        } else {
            column.kind.as_str()
        };
        columns.push(
            json!({ "name": column.name, "type": kind, "format": "", "description": "",
                             "priority": column.priority }),
        );
    }
    if with_age {
        columns.push(json!({ "name": "Age", "type": "string", "format": "", "description": "Time since creation" }));
    }
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut cells = vec![o.pointer("/metadata/name").cloned().unwrap_or(Value::Null)];
            for column in &rt.printer_columns {
                let cell = column.cell(o);
                cells.push(match (column.kind.as_str(), cell.as_str()) {
                    ("date", Some(time)) => json!(age(Some(time))),
                    _ => cell,
                });
            }
            if with_age {
                cells.push(json!(age(o
                    .pointer("/metadata/creationTimestamp")
                    .and_then(Value::as_str))));
            }
            json!({ "cells": cells, "object": o })
        })
        .collect();
    let resource_version = value
        .pointer("/metadata/resourceVersion")
        .cloned()
        .unwrap_or(json!(""));
    ok(json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": { "resourceVersion": resource_version },
        "columnDefinitions": columns,
        "rows": rows,
    }))
}

/// Age as kubectl shows it: 42s, 5m, 3h, 2d.
fn age(created: Option<&str>) -> String {
    let Some(created) = created.and_then(|c| c.parse::<jiff::Timestamp>().ok()) else {
        return "<unknown>".into();
    };
    let secs = (jiff::Timestamp::now().as_second() - created.as_second()).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// Start a watch and stream its events as newline-delimited JSON.
fn watch_response(
    shared: &Arc<Shared>,
    rt: &ResourceType,
    version: &str,
    ns: Option<&str>,
    query: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let (labels, fields) = selectors(rt, query)?;
    let from = match query.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => WatchFrom::Now,
        Some(rv) => WatchFrom::After(
            rv.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?,
        ),
    };
    let send_initial = query.get("sendInitialEvents").is_some_and(|v| v == "true");
    let from = if send_initial { WatchFrom::Now } else { from };
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|v| v == "true");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(1800);
    let filter = WatchFilter {
        rt: rt.clone(),
        version: version.to_string(),
        namespace: ns.map(str::to_string),
        labels,
        fields,
    };
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let started = shared.store.watch(rt, from);
    let shared = shared.clone();
    tokio::spawn(async move {
        let start = match started {
            Ok(start) => start,
            Err(gone) => {
                let _ = tx.send(event_line("ERROR", &gone.to_status())).await;
                return;
            }
        };
        let stream = WatchStream {
            filter,
            tx,
            bookmarks,
            shared,
        };
        stream
            .run(
                start.backlog,
                start.live,
                start.resource_version,
                send_initial,
                Duration::from_secs(timeout),
            )
            .await;
    });
    let body = Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|line| (Ok::<_, std::convert::Infallible>(line), rx))
    }));
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()))
}

/// Which changes a watch shows, and how.
struct WatchFilter {
    rt: ResourceType,
    version: String,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl WatchFilter {
    fn selects(&self, object: &Value) -> bool {
        let in_namespace = self.namespace.as_deref().is_none_or(|ns| {
            object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                == Some(ns)
        });
        in_namespace && self.labels.matches(object) && self.fields.matches(object)
    }

    /// The event this change is for the watcher, if any: a modification that moves an object
    /// into or out of the selection is an ADDED or a DELETED.
    fn event_for(&self, change: &Change) -> Option<(&'static str, Value)> {
        let now = self.selects(&change.object);
        let kind = match change.kind {
            ChangeKind::Added | ChangeKind::Deleted if now => change.kind.as_str(),
            ChangeKind::Modified => match (
                change.previous.as_ref().is_some_and(|p| self.selects(p)),
                now,
            ) {
                (true, true) => "MODIFIED",
                (false, true) => "ADDED",
                (true, false) => "DELETED",
                (false, false) => return None,
            },
            _ => return None,
        };
        Some((
            kind,
            super::store::present(&self.rt, &self.version, &change.object),
        ))
    }
}

struct WatchStream {
    filter: WatchFilter,
    tx: mpsc::Sender<Bytes>,
    bookmarks: bool,
    shared: Arc<Shared>,
}

impl WatchStream {
    async fn run(
        self,
        backlog: Vec<Arc<Change>>,
        mut live: broadcast::Receiver<Arc<Change>>,
        start_rv: u64,
        send_initial: bool,
        timeout: Duration,
    ) {
        let collection = super::store::CollectionKey::of(&self.filter.rt);
        let mut last_rv = 0;
        // Every change up to `seen_rv` (in any resource) has been through this watch, so a
        // bookmark at `seen_rv` never makes a resuming client skip an event.
        let mut seen_rv = start_rv;
        for change in backlog {
            last_rv = last_rv.max(change.resource_version);
            if !self.send_change(&change).await {
                return;
            }
        }
        if send_initial && !self.send_bookmark(start_rv, true).await {
            return;
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(self.shared.bookmark_interval);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = self.shared.shutdown.cancelled() => return,
                _ = self.tx.closed() => return,
                _ = ticker.tick(), if self.bookmarks => {
                    if !self.send_bookmark(seen_rv, false).await {
                        return;
                    }
                }
                received = live.recv() => match received {
                    Ok(change) => {
                        seen_rv = seen_rv.max(change.resource_version);
                        if change.collection != collection || change.resource_version <= last_rv {
                            continue;
                        }
                        if !self.send_change(&change).await {
                            return;
                        }
                    }
                    // A watcher this far behind re-lists, as with a real server.
                    Err(_) => return,
                },
            }
        }
    }

    async fn send_change(&self, change: &Change) -> bool {
        match self.filter.event_for(change) {
            Some((kind, object)) => self.tx.send(event_line(kind, &object)).await.is_ok(),
            None => true,
        }
    }

    async fn send_bookmark(&self, rv: u64, initial_events_end: bool) -> bool {
        let rt = &self.filter.rt;
        let mut metadata = json!({ "resourceVersion": rv.to_string() });
        if initial_events_end {
            metadata["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
        }
        let object = json!({ "kind": rt.kind, "apiVersion": rt.api_version(&self.filter.version), "metadata": metadata });
        self.tx.send(event_line("BOOKMARK", &object)).await.is_ok()
    }
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({ "type": kind, "object": object }).to_string();
    line.push('\n');
    Bytes::from(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_route_to_namespaced_and_cluster_resources() {
        let table = ResourceTable::builtin();
        let Route::Resource(rp) = route("/api/v1/namespaces/default/pods/p1/status", &table) else {
            panic!("not a resource route")
        };
        assert_eq!(rp.namespace.as_deref(), Some("default"));
        assert_eq!(
            (
                rp.plural.as_str(),
                rp.name.as_deref(),
                rp.subresource.as_deref()
            ),
            ("pods", Some("p1"), Some("status"))
        );
        let Route::Resource(rp) = route("/api/v1/namespaces/default", &table) else {
            panic!("not a resource route")
        };
        assert_eq!(
            (rp.plural.as_str(), rp.name.as_deref(), rp.namespace),
            ("namespaces", Some("default"), None)
        );
        let Route::Resource(rp) = route("/api/v1/namespaces/kube-system/status", &table) else {
            panic!("not a resource route")
        };
        assert_eq!(
            (rp.name.as_deref(), rp.subresource.as_deref()),
            (Some("kube-system"), Some("status"))
        );
        let Route::Resource(rp) = route("/apis/apps/v1/watch/namespaces/ns1/daemonsets", &table)
        else {
            panic!("not a resource route")
        };
        assert!(rp.watch);
        assert_eq!(rp.namespace.as_deref(), Some("ns1"));
        assert_eq!(
            route("/apis/apps/v1", &table),
            Route::ResourceList {
                group: "apps".into(),
                version: "v1".into()
            }
        );
        assert_eq!(route("/openapi/v2", &table), Route::NotFound);
    }
}
