//! What the operator tells people, served by axum on `--status-addr`:
//!
//! - `/healthz` (the process answers), `/readyz` (a follower is ready; the leader once every
//!   pod present when it took over was reconciled once), `/metrics` (Prometheus text,
//!   `metrics.rs`): open, for probes and scrapers.
//! - `/api/v1/status`, `/api/v1/subnets`, `/api/v1/pods/{ns}/{name}/networks` (`api.rs`):
//!   JSON, behind a bearer token that the API server authenticates and authorizes
//!   (`access.rs`; 401 without a valid token, 403 without RBAC on the path).
//!
//! A caller of `/api/*` needs `get` on the non-resource URL of the path, which a cluster
//! admin grants once for all of them (the kube-rbac-proxy convention, so `kubectl auth
//! can-i get /api/v1/status --as <user>` answers for the operator too):
//!
//! ```yaml
//! kind: ClusterRole          # bound with a ClusterRoleBinding (a RoleBinding cannot
//! rules:                     # grant non-resource URLs)
//! - nonResourceURLs: ["/api/*"]
//!   verbs: [get]
//! ```
//!
//! The operator's ServiceAccount needs `create` on `tokenreviews` (authentication.k8s.io)
//! and `subjectaccessreviews` (authorization.k8s.io) to ask the API server.
//!
//! The server starts before the controllers exist (the operator first waits for OVN NB and
//! the IPAM store): `StatusApi::set_context` hands it their `Context` later; until then the
//! endpoints that read it answer 503.

mod access;
pub mod api;
mod metrics;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use kube::ResourceExt;
use tracing::{debug, info, warn};

use access::Verdict;
pub use metrics::{render_subnet_usage, Histogram, Metrics};

use super::context::Context;

/// The status server's view of the operator: metrics from the start, the controllers'
/// shared state once they run. Cheap to clone.
#[derive(Clone)]
pub struct StatusApi {
    inner: Arc<Inner>,
}

struct Inner {
    client: kube::Client,
    metrics: Arc<Metrics>,
    context: RwLock<Option<Arc<Context>>>,
    access: access::AccessCheck,
}

impl StatusApi {
    /// `client` reads the KubeOvn object and asks the API server about tokens.
    pub fn new(client: kube::Client, metrics: Arc<Metrics>) -> Self {
        Self {
            inner: Arc::new(Inner {
                access: access::AccessCheck::new(client.clone()),
                client,
                metrics,
                context: RwLock::new(None),
            }),
        }
    }

    /// The controllers run: serve their state.
    pub fn set_context(&self, ctx: Arc<Context>) {
        *self
            .inner
            .context
            .write()
            .expect("status context lock poisoned") = Some(ctx);
    }

    fn client(&self) -> &kube::Client {
        &self.inner.client
    }

    /// The controllers' state, once they run.
    fn context(&self) -> Option<Arc<Context>> {
        self.inner
            .context
            .read()
            .expect("status context lock poisoned")
            .clone()
    }

    /// The Prometheus text: the counters, plus per-subnet gauges once the controllers run.
    fn render_metrics(&self) -> String {
        let mut text = self.inner.metrics.render();
        if let Some(ctx) = self.context() {
            let mut usages: Vec<(String, crate::ipam::Usage)> = ctx
                .subnets
                .state()
                .iter()
                .filter_map(|s| {
                    let name = s.name_any();
                    ctx.ipam.usage(&name).ok().map(|u| (name, u))
                })
                .collect();
            usages.sort_by(|a, b| a.0.cmp(&b.0));
            text.push_str(&render_subnet_usage(
                usages.iter().map(|(name, usage)| (name.as_str(), usage)),
            ));
        }
        text
    }
}

/// The routes, with `/api/*` behind the access check.
pub fn router(api: StatusApi) -> Router {
    let guarded = Router::new()
        .route("/api/v1/status", get(api::installation))
        .route("/api/v1/subnets", get(api::subnets))
        .route("/api/v1/pods/{namespace}/{name}/networks", get(api::pod))
        .route_layer(middleware::from_fn_with_state(api.clone(), require_access));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(|State(api): State<StatusApi>| async move { api.inner.metrics.readiness() }),
        )
        .route(
            "/metrics",
            get(|State(api): State<StatusApi>| async move { api.render_metrics() }),
        )
        .merge(guarded)
        .with_state(api)
}

/// Lets the request through only if its bearer token may `get` its path.
async fn require_access(State(api): State<StatusApi>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match api.inner.access.check(authorization, &path).await {
        Ok(Verdict::Allowed { user }) => {
            debug!(%user, %path, "status API request allowed");
            next.run(request).await
        }
        Ok(Verdict::Unauthenticated(reason)) => {
            let mut response = api::error(StatusCode::UNAUTHORIZED, reason);
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            response
        }
        Ok(Verdict::Forbidden(reason)) => api::error(StatusCode::FORBIDDEN, reason),
        Err(e) => {
            warn!("{e}");
            api::error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
    }
}

/// Serves the status endpoints on `addr` until the task is dropped.
pub async fn serve(addr: SocketAddr, api: StatusApi) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("status endpoint: binding {addr}: {e}"))?;
    info!(%addr, "status endpoint listening (/healthz, /readyz, /metrics, /api/v1/*)");
    axum::serve(listener, router(api).into_make_service())
        .await
        .map_err(|e| anyhow::anyhow!("status endpoint {addr}: {e}"))
}
