//! The node daemon's CNI endpoint: axum over a unix socket (mode 0600), speaking the JSON of
//! `cni::protocol`, dispatching to a [`CniHandler`] that the node role implements.
//!
//! Transport only: no pod, OVS or netlink knowledge lives here. Every failure reaches the shim
//! as a CNI error body (an unreadable request is code 6), never as a dropped connection.

use std::future::Future;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tracing::Instrument;

use crate::cni::protocol::{CniRequest, CniResponse, ADD_PATH, CHECK_PATH, DEL_PATH, HEALTH_PATH};
use crate::cni::{CniError, ErrorCode};

/// What the node role does for each CNI command. Errors are answered to the shim as they are
/// (their `cniVersion` set to the request's), so they should name the object and the reason.
pub trait CniHandler: Send + Sync + 'static {
    /// Builds the interface and answers what was configured.
    fn add(&self, req: CniRequest) -> impl Future<Output = Result<CniResponse, CniError>> + Send;
    /// Removes what ADD built; must succeed when there is nothing to remove.
    fn del(&self, req: CniRequest) -> impl Future<Output = Result<(), CniError>> + Send;
    /// Verifies that what ADD built is still in place.
    fn check(&self, req: CniRequest) -> impl Future<Output = Result<(), CniError>> + Send;
    /// Whether ADD can be served now (STATUS and the readiness probe).
    fn health(&self) -> impl Future<Output = Result<(), CniError>> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("CNI socket {path}: another daemon is already serving it")]
    InUse { path: PathBuf },
    #[error("CNI socket {path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
}

/// Binds the CNI socket at `path`: refuses if a live daemon answers there, replaces a stale
/// socket, and appears at `path` only once it is mode 0600 (bound under a temporary name in the
/// same directory, then renamed). Must be called inside a tokio runtime.
pub fn bind(path: &Path) -> Result<tokio::net::UnixListener, ServerError> {
    let err = |op| {
        move |source| ServerError::Io {
            path: path.to_path_buf(),
            op,
            source,
        }
    };
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(ServerError::InUse {
            path: path.to_path_buf(),
        });
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err("create directory"))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let listener = std::os::unix::net::UnixListener::bind(&tmp).map_err(err("bind"))?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .map_err(err("chmod 0600"))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(err("rename into place")));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    listener
        .set_nonblocking(true)
        .map_err(err("set non-blocking"))?;
    tokio::net::UnixListener::from_std(listener).map_err(err("register"))
}

/// The routes of the CNI protocol over `handler`.
pub fn router<H: CniHandler>(handler: Arc<H>) -> Router {
    Router::new()
        .route(ADD_PATH, post(add::<H>))
        .route(DEL_PATH, post(del::<H>))
        .route(CHECK_PATH, post(check::<H>))
        .route(HEALTH_PATH, get(health::<H>))
        .with_state(handler)
}

/// Serves `handler` on `listener` until `shutdown` completes.
pub async fn serve<H: CniHandler>(
    listener: tokio::net::UnixListener,
    handler: Arc<H>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    axum::serve(listener, router(handler))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn add<H: CniHandler>(State(h): State<Arc<H>>, body: Bytes) -> Response {
    dispatch(
        "ADD",
        &body,
        |req| async move { h.add(req).await },
        |resp| (StatusCode::OK, Json::<CniResponse>(resp)).into_response(),
    )
    .await
}

async fn del<H: CniHandler>(State(h): State<Arc<H>>, body: Bytes) -> Response {
    dispatch(
        "DEL",
        &body,
        |req| async move { h.del(req).await },
        no_content,
    )
    .await
}

async fn check<H: CniHandler>(State(h): State<Arc<H>>, body: Bytes) -> Response {
    dispatch(
        "CHECK",
        &body,
        |req| async move { h.check(req).await },
        no_content,
    )
    .await
}

fn no_content(_: ()) -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// Decodes the request, runs `call` in a span naming the pod, and answers its outcome.
async fn dispatch<T, Fut>(
    command: &'static str,
    body: &[u8],
    call: impl FnOnce(CniRequest) -> Fut,
    ok: impl FnOnce(T) -> Response,
) -> Response
where
    Fut: Future<Output = Result<T, CniError>>,
{
    let req = match decode(body) {
        Ok(r) => r,
        Err(e) => return error_response(e),
    };
    let version = req.cni_version.clone();
    let span = request_span(command, &req);
    let started = Instant::now();
    let result = call(req).instrument(span.clone()).await;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    let _entered = span.enter();
    match result {
        Ok(value) => {
            tracing::info!(ms, "{command} done");
            ok(value)
        }
        Err(e) => {
            tracing::warn!(ms, code = e.code, msg = %e.msg, "{command} failed");
            error_response(e.in_version(&version))
        }
    }
}

async fn health<H: CniHandler>(State(h): State<Arc<H>>) -> Response {
    match h.health().await {
        Ok(()) => (StatusCode::OK, "ok").into_response(),
        Err(e) => error_response(e),
    }
}

fn decode(body: &[u8]) -> Result<CniRequest, CniError> {
    serde_json::from_slice(body).map_err(|e| {
        CniError::new(ErrorCode::Decode, "CNI request body is not a valid request")
            .with_details(e.to_string())
    })
}

fn request_span(command: &'static str, req: &CniRequest) -> tracing::Span {
    tracing::info_span!("cni", command, pod = %req.pod_name, namespace = %req.pod_namespace,
        provider = %req.provider, container = %req.container_id, ifname = %req.ifname)
}

fn error_response(e: CniError) -> Response {
    let status = match e.code {
        c if c == ErrorCode::TryAgainLater as u32 || c == ErrorCode::PluginNotAvailable as u32 => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        c if c <= ErrorCode::InvalidNetworkConfig as u32 && c != ErrorCode::Io as u32 => {
            StatusCode::BAD_REQUEST
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    tracing::warn!(code = e.code, msg = %e.msg, "CNI request failed");
    (status, Json(e)).into_response()
}
