//! `pods/log` and `pods/exec`: proxied to the kubelet of the pod's node, as kube-apiserver
//! does. The kubelet endpoint is `127.0.0.1:<status.daemonEndpoints.kubeletEndpoint.Port>` of
//! the Node (kube-sim's nodes are simulated in-host, see `nodes::kubelet_api`). Plain requests
//! stream the kubelet's body back (`kubectl logs -f`); upgrade requests (`kubectl exec`'s
//! WebSocket) are answered with the kubelet's `101` and then spliced byte for byte.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;

use super::http::Shared;
use super::status::ApiError;

/// `GET /api/v1/namespaces/{namespace}/pods/{name}/log`.
pub async fn pod_log(
    State(shared): State<Arc<Shared>>,
    Path((namespace, name)): Path<(String, String)>,
    request: Request,
) -> Response {
    proxy(&shared, &namespace, &name, "containerLogs", request)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `GET|POST /api/v1/namespaces/{namespace}/pods/{name}/exec`.
pub async fn pod_exec(
    State(shared): State<Arc<Shared>>,
    Path((namespace, name)): Path<(String, String)>,
    request: Request,
) -> Response {
    proxy(&shared, &namespace, &name, "exec", request)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// The kubelet address of the pod's node.
fn kubelet_of(shared: &Shared, namespace: &str, name: &str) -> Result<String, ApiError> {
    let store = &shared.store;
    let pods = store
        .resolve("", "v1", "pods")
        .ok_or_else(|| ApiError::path_not_found("pods"))?;
    let pod = store.get(&pods, "v1", Some(namespace), name)?;
    let node_name = pod["spec"]["nodeName"].as_str().unwrap_or_default();
    if node_name.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let nodes = store
        .resolve("", "v1", "nodes")
        .ok_or_else(|| ApiError::path_not_found("nodes"))?;
    let node = store.get(&nodes, "v1", None, node_name)?;
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .filter(|p| *p > 0)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "node {node_name} (of pod {namespace}/{name}) has no kubelet endpoint: is it simulated by kube-sim?"
            ))
        })?;
    Ok(format!("127.0.0.1:{port}"))
}

fn unreachable(kubelet: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("error dialing the kubelet at {kubelet}: {e}"))
}

async fn proxy(
    shared: &Shared,
    namespace: &str,
    name: &str,
    kubelet_path: &str,
    mut request: Request,
) -> Result<Response, ApiError> {
    let kubelet = kubelet_of(shared, namespace, name)?;
    let query = request
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let stream = tokio::net::TcpStream::connect(&kubelet)
        .await
        .map_err(|e| unreachable(&kubelet, e))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(&kubelet, e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(error = %e, "kubelet connection ended");
        }
    });
    let upgrading = request.headers().contains_key(header::UPGRADE);
    let client_upgrade = upgrading.then(|| hyper::upgrade::on(&mut request));
    let mut forwarded = hyper::Request::builder()
        .method(request.method().clone())
        .uri(format!("/{kubelet_path}/{namespace}/{name}{query}"));
    for (key, value) in request.headers() {
        if key != header::HOST {
            forwarded = forwarded.header(key, value);
        }
    }
    let forwarded = forwarded
        .header(
            header::HOST,
            HeaderValue::from_str(&kubelet).map_err(|e| unreachable(&kubelet, e))?,
        )
        .body(request.into_body())
        .map_err(|e| unreachable(&kubelet, e))?;
    let mut response = sender
        .send_request(forwarded)
        .await
        .map_err(|e| unreachable(&kubelet, e))?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        if !response.status().is_success() {
            // The kubelet's plain-text refusal, as the Status kubectl prints.
            let code = response.status();
            let body = axum::body::to_bytes(Body::new(response.into_body()), 64 * 1024)
                .await
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            let mut error = ApiError::bad_request(body);
            error.code = code.as_u16();
            return Err(error);
        }
        let (parts, body) = response.into_parts();
        return Ok(Response::from_parts(parts, Body::new(body)));
    }
    let kubelet_upgrade = hyper::upgrade::on(&mut response);
    if let Some(client_upgrade) = client_upgrade {
        tokio::spawn(async move {
            let (Ok(client), Ok(kubelet)) = (client_upgrade.await, kubelet_upgrade.await) else {
                tracing::debug!("an upgraded pods/exec connection failed");
                return;
            };
            let _ = tokio::io::copy_bidirectional(
                &mut TokioIo::new(client),
                &mut TokioIo::new(kubelet),
            )
            .await;
        });
    }
    let (parts, _) = response.into_parts();
    Ok(Response::from_parts(parts, Body::empty()))
}
