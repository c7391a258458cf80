//! The Kubernetes API emulator: an in-process HTTP server that the real `kube` client and
//! `kubectl` talk to. `ApiServer::start` runs it on a tokio runtime and hands back where it
//! listens, a kubeconfig for it, and a way to stop it. The parts: `resources` (what is
//! served, discovery), `openapi` (what kubectl reads before writing), `store` (objects and
//! their semantics), `apply` (server-side apply ownership), `events` (the two Event APIs),
//! `http` (routing, watches, tables), `printers` (computed table cells), `scale` (the scale
//! subresource), `protobuf` (protobuf request bodies), `schema` (CRD and metadata validation),
//! `patch`, `selector`, `status` (error bodies), `kubelet_proxy` (pods/log and pods/exec,
//! proxied to the node's kubelet), `auth` (TokenRequest, TokenReview and the access reviews)
//! with `rbac` (the RBAC authorizer they ask).
//!
//! In a test:
//!
//! ```text
//! let server = ApiServer::start("127.0.0.1:0".parse()?).await?;
//! let client = server.client()?;                 // a kube::Client for it
//! server.write_kubeconfig(&dir.join("kubeconfig"))?;   // for kubectl or a child process
//! ...
//! server.shutdown().await;                       // or just drop it
//! ```
//!
//! Protobuf request bodies of core/v1, apps/v1, events.k8s.io/v1 and the auth groups are decoded by
//! `protobuf` (other groups get a 415 naming the kind); answers are always JSON.
//!
//! Not modelled (each fails loudly or is documented where it matters): protobuf answers,
//! `dryRun`, aggregated discovery, admission webhooks, server-side apply conflicts between
//! managers, pagination (`limit` returns everything), authenticating its own requests (every
//! request without a token acts as the admin; see `auth`), `pods/attach` and
//! `pods/portforward`, exec with a TTY, and exec over SPDY (kubectl before 1.30).

pub mod apply;
pub mod auth;
pub mod events;
pub mod http;
pub mod kubelet_proxy;
pub mod openapi;
pub mod patch;
pub mod printers;
pub mod protobuf;
pub mod rbac;
pub mod resources;
pub mod scale;
pub mod schema;
pub mod selector;
pub mod status;
pub mod store;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use store::Store;

/// How the server behaves where tests may want to tune it.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Changes kept per resource for watches that resume from a resourceVersion; older
    /// resourceVersions get 410 Gone.
    pub history_limit: usize,
    /// How often a watch that asked for bookmarks gets one.
    pub bookmark_interval: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            history_limit: 2000,
            bookmark_interval: Duration::from_secs(2),
        }
    }
}

/// A running API server. Dropping it stops it.
pub struct ApiServer {
    addr: SocketAddr,
    store: Arc<Store>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl ApiServer {
    /// Serve on `addr` (port 0 picks a free port) with default options.
    pub async fn start(addr: SocketAddr) -> anyhow::Result<Self> {
        Self::start_with(addr, ServerOptions::default()).await
    }

    pub async fn start_with(addr: SocketAddr, options: ServerOptions) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the API server to {addr}"))?;
        let addr = listener
            .local_addr()
            .context("reading the API server's address")?;
        let store = Arc::new(Store::new(options.history_limit));
        let shutdown = CancellationToken::new();
        let shared = Arc::new(http::Shared {
            store: store.clone(),
            address: addr.to_string(),
            bookmark_interval: options.bookmark_interval,
            shutdown: shutdown.clone(),
            tokens: auth::Tokens::default(),
        });
        let pod_path = "/api/v1/namespaces/{namespace}/pods/{name}";
        let app = axum::Router::new()
            .route(
                &format!("{pod_path}/log"),
                axum::routing::get(kubelet_proxy::pod_log),
            )
            .route(
                &format!("{pod_path}/exec"),
                axum::routing::any(kubelet_proxy::pod_exec),
            )
            .fallback(http::handle)
            .with_state(shared);
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "API server stopped");
            }
        });
        tracing::info!(%addr, "API server listening");
        Ok(Self {
            addr,
            store,
            shutdown,
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The objects, for inspection and the debugging dump.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// A kubeconfig (context `kube-sim`, namespace `default`, no credentials) for this server.
    pub fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kube-sim\n  cluster:\n    server: {url}\n\
             contexts:\n- name: kube-sim\n  context:\n    cluster: kube-sim\n    user: kube-sim\n    namespace: default\n\
             current-context: kube-sim\nusers:\n- name: kube-sim\n  user: {{}}\n",
            url = self.url()
        )
    }

    /// Write the kubeconfig atomically (a reader polling for the file never sees half of it).
    pub fn write_kubeconfig(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let partial = path.with_extension("partial");
        std::fs::write(&partial, self.kubeconfig_yaml())
            .with_context(|| format!("writing kubeconfig {}", partial.display()))?;
        std::fs::rename(&partial, path)
            .with_context(|| format!("moving kubeconfig into {}", path.display()))
    }

    /// A `kube` client for this server.
    pub fn client(&self) -> anyhow::Result<kube::Client> {
        let uri = self.url().parse().context("the server URL is a URI")?;
        let mut config = kube::Config::new(uri);
        config.default_namespace = "default".to_string();
        kube::Client::try_from(config).context("building a kube client for kube-sim")
    }

    /// Write every object as JSON to `path`.
    pub fn dump_to(&self, path: &Path) -> anyhow::Result<()> {
        let text =
            serde_json::to_string_pretty(&self.store.dump()).context("rendering the dump")?;
        std::fs::write(path, text).with_context(|| format!("writing dump {}", path.display()))
    }

    /// Stop serving: open watches end, the listener closes.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
