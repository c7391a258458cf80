//! A pod sandbox on a node: its network namespace and its delegates, added in order (cluster
//! default first, then the annotation's networks) and deleted in reverse, as Multus does. The
//! delegates and their results are cached in the node's `/var/lib/cni/multus/<containerID>`
//! before anything is added, so DEL works after the NAD (or the pod) is gone.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::delegate::{Delegate, PodIdentity};
use super::exec::{CniError, Invocation};
use super::node::{self, Node, NETNS_DIR};

/// Where a node keeps its sandbox caches (inside the node).
pub const CACHE_DIR: &str = "/var/lib/cni/multus";

/// What was (or is being) set up for one sandbox; the on-disk cache.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sandbox {
    pub container_id: String,
    /// Name of the pod's network namespace under `/run/netns`.
    pub netns: String,
    pub pod: PodIdentity,
    pub delegates: Vec<Delegate>,
    /// ADD results by delegate position (`None`: not added yet).
    pub results: Vec<Option<Value>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("pod {pod}: {what}: {reason}")]
    Io {
        pod: String,
        what: String,
        reason: String,
    },
    #[error("[{pod}:{network}]: error adding container to network {network:?}: {source}")]
    Add {
        pod: String,
        network: String,
        source: Box<CniError>,
    },
    #[error("pod {pod}: DEL failed: {}", .errors.join(" / "))]
    Del { pod: String, errors: Vec<String> },
}

/// How plugins are found and how long they may take.
#[derive(Debug, Clone)]
pub struct PluginSettings {
    /// CNI path as the node sees it.
    pub cni_path: Vec<PathBuf>,
    pub timeout: Duration,
}

impl Sandbox {
    pub fn netns_path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.netns)
    }

    fn pod_ref(&self) -> String {
        format!("{}/{}", self.pod.namespace, self.pod.name)
    }

    fn invocation<'a>(
        &'a self,
        node: &'a Node,
        netns: &'a Path,
        settings: &'a PluginSettings,
    ) -> Invocation<'a> {
        Invocation {
            node,
            pod: &self.pod,
            container_id: &self.container_id,
            netns,
            cni_path: &settings.cni_path,
            timeout: settings.timeout,
        }
    }

    fn cache_path(node: &Node, container_id: &str) -> PathBuf {
        node.host_path(&Path::new(CACHE_DIR).join(container_id))
    }

    fn save(&self, node: &Node) -> Result<(), SandboxError> {
        let path = Self::cache_path(node, &self.container_id);
        let io = |e: std::io::Error| SandboxError::Io {
            pod: self.pod_ref(),
            what: format!("write cache {}", path.display()),
            reason: e.to_string(),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let bytes = serde_json::to_vec_pretty(self).expect("a Sandbox always serializes");
        std::fs::write(&path, bytes).map_err(io)
    }

    /// Every sandbox cached on `node` (e.g. to tear down what survived its pod).
    pub fn cached(node: &Node) -> Vec<Sandbox> {
        let dir = node.host_path(Path::new(CACHE_DIR));
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok())
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect()
    }

    /// Creates the sandbox: network namespace `<netns_prefix><container id prefix>`, then ADD
    /// of every delegate in order. On a failure everything added so far (the failed delegate
    /// included, as Multus does) is deleted in reverse and the namespace removed.
    pub async fn create(
        node: &Node,
        pod: PodIdentity,
        delegates: Vec<Delegate>,
        netns_prefix: &str,
        settings: &PluginSettings,
    ) -> Result<(Sandbox, Vec<Value>), SandboxError> {
        let container_id = new_container_id();
        let mut sandbox = Sandbox {
            netns: format!("{netns_prefix}{}", &container_id[..12]),
            container_id,
            results: vec![None; delegates.len()],
            pod,
            delegates,
        };
        let io = |what: &str, reason: String| SandboxError::Io {
            pod: sandbox.pod_ref(),
            what: what.to_string(),
            reason,
        };
        sandbox.save(node)?;
        node::add_netns(&sandbox.netns)
            .await
            .map_err(|e| io("create network namespace", e))?;
        let netns = sandbox.netns_path();
        for i in 0..sandbox.delegates.len() {
            let delegate = &sandbox.delegates[i];
            let added = match interface_exists(&sandbox.netns, &delegate.ifname).await {
                true => Err(CniError {
                    plugin: String::new(),
                    network: delegate.network_name.clone(),
                    command: "ADD",
                    message: format!("interface name {} already exists", delegate.ifname),
                }),
                false => match sandbox
                    .invocation(node, &netns, settings)
                    .add(delegate)
                    .await
                {
                    Ok(result) => rewrite_default_route(&sandbox.netns, delegate)
                        .await
                        .map(|()| result)
                        .map_err(|message| CniError {
                            plugin: String::new(),
                            network: delegate.network_name.clone(),
                            command: "ADD",
                            message,
                        }),
                    Err(e) => Err(e),
                },
            };
            match added {
                Ok(result) => {
                    sandbox.results[i] = Some(result);
                    sandbox.save(node)?;
                }
                Err(source) => {
                    let error = SandboxError::Add {
                        pod: sandbox.pod_ref(),
                        network: delegate.network_name.clone(),
                        source: Box::new(source),
                    };
                    sandbox.roll_back(node, i, settings).await;
                    return Err(error);
                }
            }
        }
        let results = sandbox.results.iter().flatten().cloned().collect();
        Ok((sandbox, results))
    }

    /// Tears the sandbox down: DEL of every delegate in reverse (errors collected), then the
    /// namespace and the cache are removed. Safe to repeat.
    pub async fn delete(&self, node: &Node, settings: &PluginSettings) -> Result<(), SandboxError> {
        match self.delegates.len() {
            0 => self.remove_netns_and_cache(node).await,
            n => self.delete_up_to(node, n - 1, settings).await,
        }
    }

    /// After a failed ADD: DEL delegates `last..=0` ignoring their errors (DEL must be
    /// idempotent; Multus ignores them too), then drop the namespace and the cache, so a retry
    /// starts from nothing.
    async fn roll_back(&self, node: &Node, last: usize, settings: &PluginSettings) {
        if let Err(e) = self.delete_up_to(node, last, settings).await {
            tracing::warn!(pod = %self.pod_ref(), error = %e, "rollback after a failed ADD");
        }
        if let Err(e) = self.remove_netns_and_cache(node).await {
            tracing::warn!(pod = %self.pod_ref(), error = %e, "rollback after a failed ADD");
        }
    }

    async fn delete_up_to(
        &self,
        node: &Node,
        last: usize,
        settings: &PluginSettings,
    ) -> Result<(), SandboxError> {
        let netns = self.netns_path();
        let mut errors = Vec::new();
        for i in (0..=last).rev() {
            let prev = self.results.get(i).and_then(Option::as_ref);
            if let Err(e) = self
                .invocation(node, &netns, settings)
                .del(&self.delegates[i], prev)
                .await
            {
                errors.push(e.to_string());
            }
        }
        if !errors.is_empty() {
            return Err(SandboxError::Del {
                pod: self.pod_ref(),
                errors,
            });
        }
        self.remove_netns_and_cache(node).await
    }

    async fn remove_netns_and_cache(&self, node: &Node) -> Result<(), SandboxError> {
        node::del_netns(&self.netns)
            .await
            .map_err(|e| SandboxError::Io {
                pod: self.pod_ref(),
                what: "remove network namespace".into(),
                reason: e,
            })?;
        let cache = Self::cache_path(node, &self.container_id);
        match std::fs::remove_file(&cache) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(SandboxError::Io {
                pod: self.pod_ref(),
                what: format!("remove cache {}", cache.display()),
                reason: e.to_string(),
            }),
            _ => Ok(()),
        }
    }
}

/// What Multus does after a delegate's ADD for `default-route` (`DeleteDefaultGW`, then
/// `SetDefaultGW`): drop every default route on the interface, then add one via each requested
/// gateway. The ADD result (and so network-status) is left as the plugin returned it.
async fn rewrite_default_route(netns: &str, delegate: &Delegate) -> Result<(), String> {
    if !delegate.rewrites_default_route() {
        return Ok(());
    }
    let ifname = delegate.ifname.as_str();
    for family in ["-4", "-6"] {
        // Delete until none is left on the interface.
        while node::ip(&[
            "-n", netns, family, "route", "del", "default", "dev", ifname,
        ])
        .await
        .is_ok()
        {}
    }
    for gateway in &delegate.gateway_request {
        let gateway = gateway.to_string();
        node::ip(&[
            "-n", netns, "route", "add", "default", "via", &gateway, "dev", ifname,
        ])
        .await
        .map_err(|e| format!("error setting default gateway: {e}"))?;
    }
    Ok(())
}

/// Multus `validateIfName`: ADD fails if the name is taken in the pod's namespace.
async fn interface_exists(netns: &str, ifname: &str) -> bool {
    node::ip(&["-n", netns, "link", "show", "dev", ifname])
        .await
        .is_ok()
}

/// 64 hex characters, like a container runtime's sandbox ID.
fn new_container_id() -> String {
    let mut rng = rand::thread_rng();
    (0..32)
        .map(|_| format!("{:02x}", rng.gen::<u8>()))
        .collect()
}
