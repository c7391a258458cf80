//! The node's view of its own pods, fed by a watch limited to this node
//! (`fieldSelector spec.nodeName=<node>`), so that a CNI ADD waits on a
//! notification for its pod's annotations instead of polling the API.
//!
//! Pure in-memory index: unit-tested by feeding it watch events. The glue that
//! runs the watcher lives with the node role.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;
use tokio::sync::watch;

/// What the node needs of a pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodView {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub annotations: BTreeMap<String, String>,
    /// Set once the API server marked the pod for deletion.
    pub terminating: bool,
    /// Its containers ran to completion (phase `Succeeded` or `Failed`): no sandbox will
    /// start again.
    pub finished: bool,
    /// `status.podIPs`: set once its sandbox runs with every CNI ADD done. Empty for
    /// hostNetwork pods (their addresses are the node's).
    pub pod_ips: Vec<std::net::IpAddr>,
}

impl PodView {
    pub fn from_pod(pod: &Pod) -> PodView {
        let m = &pod.metadata;
        PodView {
            namespace: m.namespace.clone().unwrap_or_default(),
            name: m.name.clone().unwrap_or_default(),
            uid: m.uid.clone().unwrap_or_default(),
            annotations: m.annotations.clone().unwrap_or_default(),
            terminating: m.deletion_timestamp.is_some(),
            finished: pod
                .status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .is_some_and(|p| p == "Succeeded" || p == "Failed"),
            pod_ips: pod_ips(pod),
        }
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.get(key).map(String::as_str)
    }
}

fn pod_ips(pod: &Pod) -> Vec<std::net::IpAddr> {
    let host_network = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    let Some(status) = pod.status.as_ref().filter(|_| !host_network) else {
        return Vec::new();
    };
    let listed = status.pod_ips.iter().flatten().map(|p| p.ip.as_str());
    let mut ips: Vec<std::net::IpAddr> = listed
        .chain(status.pod_ip.as_deref())
        .filter_map(|ip| ip.parse().ok())
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

type Key = (String, String);

/// Pods of this node by (namespace, name), with change notification.
pub struct PodIndex {
    pods: Mutex<HashMap<Key, PodView>>,
    /// Pods listed since the last `Init`, swapped in at `InitDone`.
    relist: Mutex<Option<HashMap<Key, PodView>>>,
    /// Bumped on every change; waiters subscribe before they look.
    generation: watch::Sender<u64>,
    /// Whether the first full list has arrived.
    synced: watch::Sender<bool>,
}

/// Why waiting for a pod ended without the wanted state.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    #[error("pod {namespace}/{name} not found on this node within {waited:?}")]
    NotFound {
        namespace: String,
        name: String,
        waited: Duration,
    },
    #[error("pod {namespace}/{name}: {reason} (waited {waited:?})")]
    NotReady {
        namespace: String,
        name: String,
        reason: String,
        waited: Duration,
    },
}

impl Default for PodIndex {
    fn default() -> Self {
        PodIndex {
            pods: Mutex::new(HashMap::new()),
            relist: Mutex::new(None),
            generation: watch::channel(0).0,
            synced: watch::channel(false).0,
        }
    }
}

fn key_of(v: &PodView) -> Key {
    (v.namespace.clone(), v.name.clone())
}

impl PodIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one watch event.
    pub fn apply(&self, event: watcher::Event<Pod>) {
        match event {
            watcher::Event::Apply(pod) => {
                let v = PodView::from_pod(&pod);
                self.lock_pods().insert(key_of(&v), v);
            }
            watcher::Event::Delete(pod) => {
                let v = PodView::from_pod(&pod);
                self.lock_pods().remove(&key_of(&v));
            }
            watcher::Event::Init => {
                *self.lock_relist() = Some(HashMap::new());
                return;
            }
            watcher::Event::InitApply(pod) => {
                let v = PodView::from_pod(&pod);
                self.lock_relist()
                    .get_or_insert_with(HashMap::new)
                    .insert(key_of(&v), v);
                return;
            }
            watcher::Event::InitDone => {
                let fresh = self.lock_relist().take().unwrap_or_default();
                *self.lock_pods() = fresh;
                self.synced.send_replace(true);
            }
        }
        self.generation.send_modify(|g| *g += 1);
    }

    /// The current view of a pod.
    pub fn get(&self, namespace: &str, name: &str) -> Option<PodView> {
        self.lock_pods()
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Number of pods known.
    pub fn len(&self) -> usize {
        self.lock_pods().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until `ready` returns `Ok(value)` for the pod, or `timeout` passes.
    ///
    /// `ready` returns `Err(reason)` while the pod is not ready yet; the last
    /// reason is reported on timeout, so the CNI error says what was missing.
    pub async fn wait_for<T>(
        &self,
        namespace: &str,
        name: &str,
        timeout: Duration,
        ready: impl Fn(&PodView) -> Result<T, String>,
    ) -> Result<T, WaitError> {
        let mut changes = self.generation.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last_reason = None;
        loop {
            changes.mark_unchanged();
            if let Some(view) = self.get(namespace, name) {
                match ready(&view) {
                    Ok(v) => return Ok(v),
                    Err(reason) => last_reason = Some(reason),
                }
            }
            let changed = tokio::time::timeout_at(deadline, changes.changed()).await;
            if !matches!(changed, Ok(Ok(()))) {
                return Err(match last_reason {
                    Some(reason) => WaitError::NotReady {
                        namespace: namespace.to_string(),
                        name: name.to_string(),
                        reason,
                        waited: timeout,
                    },
                    None => WaitError::NotFound {
                        namespace: namespace.to_string(),
                        name: name.to_string(),
                        waited: timeout,
                    },
                });
            }
        }
    }

    /// Tells subscribers that something about this node's pods changed outside the API (an
    /// ADD plugged an interface), so passes that work from the index run again.
    pub fn touch(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// Subscribes to change notifications (a generation counter).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// All pods currently known (for live QoS updates and GC).
    pub fn snapshot(&self) -> Vec<PodView> {
        self.lock_pods().values().cloned().collect()
    }

    fn lock_pods(&self) -> std::sync::MutexGuard<'_, HashMap<Key, PodView>> {
        self.pods.lock().expect("pod index lock poisoned")
    }

    fn lock_relist(&self) -> std::sync::MutexGuard<'_, Option<HashMap<Key, PodView>>> {
        self.relist.lock().expect("pod index lock poisoned")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn pod(name: &str, annotations: &[(&str, &str)]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn allocated(v: &PodView) -> Result<String, String> {
        match v.annotation("p.kubernetes.io/ip_address") {
            Some(ip) => Ok(ip.to_string()),
            None => Err("no p.kubernetes.io/ip_address yet".into()),
        }
    }

    #[tokio::test]
    async fn a_waiter_wakes_when_the_annotation_arrives() {
        let index = Arc::new(PodIndex::new());
        index.apply(watcher::Event::Apply(pod("a", &[])));
        let waiter = {
            let index = index.clone();
            tokio::spawn(async move {
                index
                    .wait_for("default", "a", Duration::from_secs(30), allocated)
                    .await
            })
        };
        tokio::task::yield_now().await;
        index.apply(watcher::Event::Apply(pod(
            "a",
            &[("p.kubernetes.io/ip_address", "10.100.0.2")],
        )));
        assert_eq!(waiter.await.expect("join"), Ok("10.100.0.2".to_string()));
    }

    #[tokio::test]
    async fn an_already_ready_pod_returns_at_once() {
        let index = PodIndex::new();
        index.apply(watcher::Event::Apply(pod(
            "a",
            &[("p.kubernetes.io/ip_address", "10.100.0.3")],
        )));
        let got = index
            .wait_for("default", "a", Duration::from_millis(1), allocated)
            .await;
        assert_eq!(got, Ok("10.100.0.3".to_string()));
    }

    #[tokio::test]
    async fn timeout_names_what_was_missing() {
        let index = PodIndex::new();
        index.apply(watcher::Event::Apply(pod("a", &[])));
        let err = index
            .wait_for("default", "a", Duration::from_millis(20), allocated)
            .await
            .expect_err("never annotated");
        assert!(
            err.to_string()
                .contains("no p.kubernetes.io/ip_address yet"),
            "{err}"
        );
        let err = index
            .wait_for("default", "ghost", Duration::from_millis(20), allocated)
            .await
            .expect_err("absent");
        assert!(matches!(err, WaitError::NotFound { .. }), "{err:?}");
    }

    #[test]
    fn a_relist_replaces_the_index_and_drops_vanished_pods() {
        let index = PodIndex::new();
        index.apply(watcher::Event::Apply(pod("old", &[])));
        assert!(!index.is_synced());
        index.apply(watcher::Event::Init);
        index.apply(watcher::Event::InitApply(pod("new", &[])));
        // Until the relist completes, the old view still answers.
        assert!(index.get("default", "old").is_some());
        index.apply(watcher::Event::InitDone);
        assert!(index.get("default", "old").is_none());
        assert_eq!(
            index.get("default", "new").map(|p| p.uid),
            Some("uid-new".into())
        );
        assert!(index.is_synced());
        index.apply(watcher::Event::Delete(pod("new", &[])));
        assert!(index.is_empty());
    }
}
