//! The kubelet (+ Multus + scheduler) loop of all simulated nodes: one kube-runtime
//! `Controller` over pods, each pod reconciled on its own (a slow or failing pod never holds up
//! another). For a pod it binds a node if none is set (one pod at a time, so each pick sees the
//! previous binding; a pod no node fits is marked Unschedulable and waits for a node or pod
//! change, see `Simulator::start`), creates the sandbox (cluster default
//! network on eth0, then the `k8s.v1.cni.cncf.io/networks` delegates), writes
//! `k8s.v1.cni.cncf.io/network-status`, marks the pod Running; on failure it records an Event
//! and retries with exponential backoff. On deletion (the API server marks a bound pod with a
//! deletionTimestamp and waits, as kube-apiserver does for a kubelet) it tears the sandbox down
//! and confirms with a grace-0 delete. Pods bound to nodes it does not simulate are left alone.
//! A pod whose images are mapped to local programs (`workloads`) also gets its containers
//! started (`containers`), which then own the pod's status; deleting it stops them first.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt};
use serde_json::{json, Value};

use super::containers::{Launch, Processes};
use super::delegate::{apply_gateway_requests, Delegate, PodIdentity};
use super::fabric::Fabric;
use super::nad;
use super::node::Node;
use super::pod_files::PodAddresses;
use super::result::{
    network_statuses, render_network_status, CniResult, NETWORK_STATUS_ANNOTATION,
};
use super::sandbox::Sandbox;
use super::scheduler::{candidates, pick_node};
use super::selection::{
    parse_networks, NetworkSelection, DEFAULT_NETWORK_ANNOTATION, MULTUS_NAMESPACE,
    NETWORKS_ANNOTATION,
};
use super::workloads::ContainerRuntime;

/// Annotation naming the pod's network namespace (`/run/netns/<value>`), for tests and demos.
pub const NETNS_ANNOTATION: &str = "kube-sim.dev/netns";

#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    #[error("pod {pod}: {action}: {source}")]
    Api {
        pod: String,
        action: String,
        source: kube::Error,
    },
    /// Sandbox creation failed (already rolled back and reported as an Event).
    #[error("pod {pod}: {reason}")]
    Sandbox { pod: String, reason: String },
    /// The containers of a process pod could not start (sandbox removed, reported as an
    /// Event).
    #[error("pod {pod}: {reason}")]
    Containers { pod: String, reason: String },
}

/// Retry timing for failed pods.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    pub(crate) fn after(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(16);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// What a pod has on its node.
#[derive(Debug, Clone)]
pub(crate) struct Running {
    pub node: String,
    /// `None` for hostNetwork pods.
    pub sandbox: Option<Sandbox>,
}

/// Shared by every reconcile.
pub(crate) struct Context {
    pub client: Client,
    pub fabric: Arc<Fabric>,
    pub runtime: ContainerRuntime,
    /// The pods whose containers run as processes.
    pub processes: Arc<Processes>,
    /// Where processes reach the API server (see `SimulatorConfig::api_server`).
    pub api_server: Option<SocketAddr>,
    pub backoff: Backoff,
    pub running: Mutex<HashMap<String, Running>>,
    pub failures: Mutex<HashMap<String, u32>>,
    pub cursor: AtomicUsize,
    /// Held while a pod is placed and bound, so the next pick sees that binding (host ports,
    /// anti-affinity), as kube-scheduler places one pod at a time.
    pub scheduling: tokio::sync::Mutex<()>,
    /// The pods no node fits, as (namespace, name): retried when a node or pod changes.
    pub unschedulable: Arc<Mutex<BTreeSet<(String, String)>>>,
}

fn pod_ref(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

fn api_error(pod: &Pod, action: &str) -> impl FnOnce(kube::Error) -> KubeletError {
    let pod = pod_ref(pod);
    let action = action.to_string();
    move |source| KubeletError::Api {
        pod,
        action,
        source,
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

pub(crate) async fn reconcile(pod: Arc<Pod>, ctx: Arc<Context>) -> Result<Action, KubeletError> {
    let uid = pod.uid().unwrap_or_default();
    let node_name = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    let deleting = pod.metadata.deletion_timestamp.is_some();
    let Some(node_name) = node_name.filter(|n| !n.is_empty()) else {
        if !deleting {
            return schedule(&pod, &ctx).await;
        }
        return Ok(Action::await_change());
    };
    let Some(node) = ctx.fabric.node(&node_name).cloned() else {
        return Ok(Action::await_change());
    };
    if deleting {
        tear_down(&ctx, &node, &pod, &uid).await?;
        finish_deletion(&ctx, &pod).await?;
        ctx.failures.lock().expect("lock").remove(&uid);
        return Ok(Action::await_change());
    }
    if matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    ) {
        return Ok(Action::await_change());
    }
    let known = ctx.running.lock().expect("lock").get(&uid).cloned();
    let running = match known {
        Some(running) => running,
        None => start(&ctx, &node, &pod, &uid).await?,
    };
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    // A process pod's status is written by its containers.
    if phase != Some("Running") && !ctx.processes.runs(&uid) {
        mark_running(&ctx, &node, &pod, &running).await?;
    }
    ctx.failures.lock().expect("lock").remove(&uid);
    Ok(Action::await_change())
}

pub(crate) fn error_policy(pod: Arc<Pod>, error: &KubeletError, ctx: Arc<Context>) -> Action {
    let uid = pod.uid().unwrap_or_default();
    let mut failures = ctx.failures.lock().expect("lock");
    let count = failures.entry(uid).or_insert(0);
    *count += 1;
    let delay = ctx.backoff.after(*count);
    tracing::warn!(pod = %pod_ref(&pod), attempt = *count, retry_in = ?delay, error = %error, "pod not ready");
    Action::requeue(delay)
}

async fn schedule(pod: &Pod, ctx: &Context) -> Result<Action, KubeletError> {
    let _turn = ctx.scheduling.lock().await;
    let simulated: Vec<&str> = ctx.fabric.nodes.iter().map(|n| n.name.as_str()).collect();
    let candidates = candidates(&ctx.client, &simulated)
        .await
        .map_err(api_error(pod, "list nodes"))?;
    let placed = Api::<Pod>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await
        .map_err(api_error(pod, "list pods"))?
        .items;
    let mut cursor = ctx.cursor.load(Ordering::Relaxed);
    let picked = pick_node(&candidates, pod, &placed, &mut cursor).map(|c| c.name.clone());
    ctx.cursor.store(cursor, Ordering::Relaxed);
    let key = (pod.namespace().unwrap_or_default(), pod.name_any());
    let node = match picked {
        Ok(node) => {
            ctx.unschedulable.lock().expect("lock").remove(&key);
            node
        }
        Err(message) => {
            ctx.unschedulable.lock().expect("lock").insert(key);
            report_unschedulable(ctx, pod, &message).await?;
            // Node and pod changes retry it sooner (see `Simulator::start`).
            return Ok(Action::requeue(ctx.backoff.max));
        }
    };
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
    // POST pods/<name>/binding, as kube-scheduler binds; 409 means it is bound already.
    let binding = json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": pod.name_any(), "namespace": pod.namespace(), "uid": pod.uid()},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    match api
        .create_subresource::<_, Value>(
            "binding",
            &pod.name_any(),
            &PostParams::default(),
            &binding,
        )
        .await
    {
        Err(kube::Error::Api(s)) if s.code == 409 => return Ok(Action::await_change()),
        Err(e) => return Err(api_error(pod, "bind to a node")(e)),
        Ok(_) => {}
    }
    let message = format!("Successfully assigned {} to {node}", pod_ref(pod));
    record_event(ctx, pod, None, "Normal", "Scheduled", &message).await;
    Ok(Action::await_change())
}

/// Marks a pod no node fits as kube-scheduler does: `PodScheduled=False`, reason
/// `Unschedulable`, and a `FailedScheduling` Event; both only when the reason changed, so that
/// the retries a status write itself triggers come to rest.
async fn report_unschedulable(ctx: &Context, pod: &Pod, message: &str) -> Result<(), KubeletError> {
    let already = pod
        .status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .any(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.message.as_deref() == Some(message)
        });
    if already {
        return Ok(());
    }
    tracing::info!(pod = %pod_ref(pod), %message, "pod unschedulable");
    let now = serde_json::to_value(Time(Timestamp::now())).expect("a Time serializes");
    let patch = json!({"status": {
        "phase": "Pending",
        "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                        "message": message, "lastTransitionTime": now}],
    }});
    patch_status(ctx, pod, &patch, "set condition PodScheduled=False").await?;
    record_event(ctx, pod, None, "Warning", "FailedScheduling", message).await;
    Ok(())
}

/// Creates what the pod needs on `node`; on failure reports it as an Event and returns an
/// error (the controller retries with backoff).
async fn start(ctx: &Context, node: &Node, pod: &Pod, uid: &str) -> Result<Running, KubeletError> {
    let host_network = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    let outcome = if host_network {
        Ok(Running {
            node: node.name.clone(),
            sandbox: None,
        })
    } else {
        create_sandbox(ctx, node, pod, uid).await
    };
    let running = match outcome {
        Ok(running) => running,
        Err(reason) => {
            let message = format!("Failed to create pod sandbox: {reason}");
            record_event(
                ctx,
                pod,
                Some(node),
                "Warning",
                "FailedCreatePodSandBox",
                &message,
            )
            .await;
            return Err(KubeletError::Sandbox {
                pod: pod_ref(pod),
                reason,
            });
        }
    };
    if ctx.runtime.runs(pod) {
        let launch = Launch {
            client: ctx.client.clone(),
            node: node.clone(),
            pod: pod.clone(),
            netns: running
                .sandbox
                .as_ref()
                .map_or_else(|| node.netns_path(), Sandbox::netns_path),
            host_network,
            addresses: pod_addresses(node, &running),
            api_server: ctx.api_server,
            runtime: ctx.runtime.clone(),
            backoff: ctx.backoff,
        };
        if let Err(reason) = ctx.processes.launch(launch).await {
            let message = format!("Error: {reason}");
            record_event(ctx, pod, Some(node), "Warning", "Failed", &message).await;
            if let Some(sandbox) = &running.sandbox {
                let _ = sandbox.delete(node, &ctx.fabric.plugins).await;
            }
            return Err(KubeletError::Containers {
                pod: pod_ref(pod),
                reason,
            });
        }
    }
    ctx.running
        .lock()
        .expect("lock")
        .insert(uid.to_string(), running.clone());
    Ok(running)
}

/// Sandbox + network-status. Errors are the message for the pod's Event.
async fn create_sandbox(
    ctx: &Context,
    node: &Node,
    pod: &Pod,
    uid: &str,
) -> Result<Running, String> {
    let namespace = pod.namespace().unwrap_or_default();
    let mut delegates = vec![cluster_default(ctx, node, pod).await?];
    let annotation = pod
        .annotations()
        .get(NETWORKS_ANNOTATION)
        .cloned()
        .unwrap_or_default();
    let selections = parse_networks(&annotation, &namespace).map_err(|e| {
        format!("error loading k8s delegates: pod annotation {NETWORKS_ANNOTATION}: {e}")
    })?;
    for (i, selection) in selections.iter().enumerate() {
        let config = nad_config(ctx, node, pod, selection).await?;
        let delegate = Delegate::for_nad(selection, &config, i + 1).map_err(|e| e.to_string())?;
        delegates.push(delegate);
    }
    apply_gateway_requests(&mut delegates).map_err(|e| e.to_string())?;
    let identity = PodIdentity {
        namespace: namespace.clone(),
        name: pod.name_any(),
        uid: uid.to_string(),
    };
    let plugins = &ctx.fabric.plugins;
    let (sandbox, results) = Sandbox::create(
        node,
        identity,
        delegates,
        &ctx.fabric.pod_netns_prefix(),
        plugins,
    )
    .await
    .map_err(|e| e.to_string())?;
    match publish_network_status(ctx, node, pod, &sandbox, &results).await {
        Ok(()) => Ok(Running {
            node: node.name.clone(),
            sandbox: Some(sandbox),
        }),
        Err(reason) => {
            let _ = sandbox.delete(node, plugins).await;
            Err(reason)
        }
    }
}

/// The node's cluster default network, or the NAD the pod's `v1.multus-cni.io/default-network`
/// names instead (looked up in kube-system unless the value names a namespace).
async fn cluster_default(ctx: &Context, node: &Node, pod: &Pod) -> Result<Delegate, String> {
    let Some(value) = pod.annotations().get(DEFAULT_NETWORK_ANNOTATION) else {
        return Ok(ctx.fabric.primary_delegate(node));
    };
    let selections = parse_networks(value, MULTUS_NAMESPACE).map_err(|e| {
        format!("error loading the cluster default network from {DEFAULT_NETWORK_ANNOTATION}: {e}")
    })?;
    let [selection] = selections.as_slice() else {
        return Err(format!(
            "{DEFAULT_NETWORK_ANNOTATION}: exactly one default network must be given: {value}"
        ));
    };
    let config = nad_config(ctx, node, pod, selection).await?;
    let delegate = Delegate::for_nad(selection, &config, 0).map_err(|e| e.to_string())?;
    Ok(delegate.into_cluster_default(selection.interface.as_deref()))
}

/// The NAD's config; a missing NAD is also reported as Multus's `NoNetworkFound` Event.
async fn nad_config(
    ctx: &Context,
    node: &Node,
    pod: &Pod,
    selection: &NetworkSelection,
) -> Result<String, String> {
    let found = nad::config(&ctx.client, &selection.namespace, &selection.name).await;
    if let Err(message) = &found {
        record_event(ctx, pod, Some(node), "Warning", "NoNetworkFound", message).await;
    }
    found
}

/// Writes network-status (as Multus does, before the pod is Running) and emits Multus's
/// `AddedInterface` Events.
async fn publish_network_status(
    ctx: &Context,
    node: &Node,
    pod: &Pod,
    sandbox: &Sandbox,
    results: &[Value],
) -> Result<(), String> {
    let mut statuses = Vec::new();
    let mut added = Vec::new();
    for (delegate, raw) in sandbox.delegates.iter().zip(results) {
        let result =
            CniResult::parse(raw).map_err(|e| format!("network {}: {e}", delegate.network_name))?;
        let ips: Vec<&str> = result.ips.iter().map(|ip| ip.address.as_str()).collect();
        added.push(format!(
            "Add {} [{}] from {}",
            delegate.ifname,
            ips.join(" "),
            delegate.network_name
        ));
        statuses.extend(network_statuses(
            &result,
            &delegate.network_name,
            delegate.master,
        ));
    }
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
    let patch = json!({"metadata": {"annotations": {
        NETWORK_STATUS_ANNOTATION: render_network_status(&statuses),
        NETNS_ANNOTATION: sandbox.netns,
    }}});
    api.patch(
        &pod.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(|e| format!("error setting the networks status: {e}"))?;
    for message in added {
        record_event(ctx, pod, Some(node), "Normal", "AddedInterface", &message).await;
    }
    Ok(())
}

async fn mark_running(
    ctx: &Context,
    node: &Node,
    pod: &Pod,
    running: &Running,
) -> Result<(), KubeletError> {
    let PodAddresses { host_ip, pod_ips } = pod_addresses(node, running);
    let now = serde_json::to_value(Time(Timestamp::now())).expect("a Time serializes");
    let container_id = running
        .sandbox
        .as_ref()
        .map(|s| format!("kube-sim://{}", s.container_id))
        .unwrap_or_default();
    let containers: Vec<Value> = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .map(|c| {
            json!({"name": c.name, "image": c.image, "imageID": "", "containerID": container_id,
                   "ready": true, "started": true, "restartCount": 0,
                   "state": {"running": {"startedAt": now}}})
        })
        .collect();
    let conditions: Vec<Value> = [
        "PodReadyToStartContainers",
        "Initialized",
        "Ready",
        "ContainersReady",
        "PodScheduled",
    ]
    .iter()
    .map(|t| json!({"type": t, "status": "True", "lastTransitionTime": now}))
    .collect();
    let patch = json!({"status": {
        "phase": "Running",
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": pod_ips.first(),
        "podIPs": pod_ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>(),
        "startTime": now,
        "conditions": conditions,
        "containerStatuses": containers,
    }});
    patch_status(ctx, pod, &patch, "set status Running").await?;
    Ok(())
}

/// A merge patch of the pod's status; `action` names it in the error.
async fn patch_status(
    ctx: &Context,
    pod: &Pod,
    patch: &Value,
    action: &str,
) -> Result<(), KubeletError> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
    api.patch_status(
        &pod.name_any(),
        &PatchParams::default(),
        &Patch::Merge(patch),
    )
    .await
    .map_err(api_error(pod, action))?;
    Ok(())
}

/// The node's address and the pod's (eth0's; the node's for hostNetwork pods).
fn pod_addresses(node: &Node, running: &Running) -> PodAddresses {
    let host_ip = node.underlay_ip.to_string();
    let pod_ips: Vec<String> = match &running.sandbox {
        None => vec![host_ip.clone()],
        Some(sandbox) => sandbox
            .results
            .first()
            .and_then(Option::as_ref)
            .and_then(|raw| CniResult::parse(raw).ok())
            .map(|r| {
                r.sandbox_addresses("eth0")
                    .iter()
                    .map(|ip| ip.bare().to_string())
                    .collect()
            })
            .unwrap_or_default(),
    };
    PodAddresses { host_ip, pod_ips }
}

/// Stops the pod's containers and deletes its sandbox, whether or not the pod still exists.
pub(crate) async fn tear_down(
    ctx: &Context,
    node: &Node,
    pod: &Pod,
    uid: &str,
) -> Result<(), KubeletError> {
    let running = ctx.running.lock().expect("lock").get(uid).cloned();
    let Some(running) = running else {
        return Ok(());
    };
    let failed = |reason: String| KubeletError::Sandbox {
        pod: pod_ref(pod),
        reason,
    };
    let grace = pod
        .metadata
        .deletion_grace_period_seconds
        .map(|s| Duration::from_secs(s.max(0) as u64));
    ctx.processes.stop(uid, grace).await;
    if let Some(sandbox) = &running.sandbox {
        clear_network_status(ctx, pod, sandbox).await;
        if let Err(e) = sandbox.delete(node, &ctx.fabric.plugins).await {
            let message = format!("error killing pod: failed to \"KillPodSandbox\": {e}");
            record_event(ctx, pod, Some(node), "Warning", "FailedKillPod", &message).await;
            return Err(failed(e.to_string()));
        }
    }
    ctx.running.lock().expect("lock").remove(uid);
    Ok(())
}

/// Multus's DEL sets network-status to `[]` (when the pod's namespace still exists) before
/// deleting the delegates; failures are only logged, as there.
async fn clear_network_status(ctx: &Context, pod: &Pod, sandbox: &Sandbox) {
    let Some(namespace) = pod.namespace() else {
        return;
    };
    if !sandbox.netns_path().exists() {
        return;
    }
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = json!({"metadata": {"annotations": {NETWORK_STATUS_ANNOTATION: "[]"}}});
    if let Err(e) = api
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        if !is_not_found(&e) {
            tracing::warn!(pod = %pod_ref(pod), error = %e, "unsetting network-status");
        }
    }
}

/// Confirms the deletion with grace period 0, as kubelet does once the pod is torn down.
async fn finish_deletion(ctx: &Context, pod: &Pod) -> Result<(), KubeletError> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&pod.name_any(), &params).await {
        Err(e) if !is_not_found(&e) => Err(api_error(pod, "confirm deletion")(e)),
        _ => Ok(()),
    }
}

/// Tears down the sandboxes of `uids`, pods that no longer exist (deleted without waiting for
/// us).
pub(crate) async fn tear_down_vanished(ctx: &Context, uids: &HashSet<String>) {
    let vanished: Vec<(String, Running)> = ctx
        .running
        .lock()
        .expect("lock")
        .iter()
        .filter(|(uid, _)| uids.contains(*uid))
        .map(|(uid, r)| (uid.clone(), r.clone()))
        .collect();
    for (uid, running) in vanished {
        let Some(node) = ctx.fabric.node(&running.node).cloned() else {
            continue;
        };
        let pod = Pod {
            metadata: ObjectMeta {
                uid: Some(uid.clone()),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        };
        if let Err(e) = tear_down(ctx, &node, &pod, &uid).await {
            tracing::warn!(uid = %uid, error = %e, "tearing down the sandbox of a vanished pod");
        }
    }
}

/// A core/v1 Event about `pod`, as kubelet records them. Failing to record is only logged.
async fn record_event(
    ctx: &Context,
    pod: &Pod,
    node: Option<&Node>,
    kind: &str,
    reason: &str,
    message: &str,
) {
    record_pod_event(&ctx.client, pod, node, kind, reason, message).await
}

/// `record_event` for whoever has a client only (the containers of process pods).
pub(crate) async fn record_pod_event(
    client: &Client,
    pod: &Pod,
    node: Option<&Node>,
    kind: &str,
    reason: &str,
    message: &str,
) {
    let namespace = pod.namespace().unwrap_or_default();
    if namespace.is_empty() {
        return;
    }
    let now = Time(Timestamp::now());
    let suffix: u64 = rand::random();
    let component = if reason == "Scheduled" {
        "default-scheduler"
    } else {
        "kubelet"
    };
    let event = Event {
        metadata: ObjectMeta {
            name: Some(format!("{}.{suffix:016x}", pod.name_any())),
            namespace: Some(namespace.clone()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(pod.name_any()),
            namespace: Some(namespace.clone()),
            uid: pod.uid(),
            resource_version: pod.resource_version(),
            ..ObjectReference::default()
        },
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some(kind.into()),
        count: Some(1),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        source: Some(EventSource {
            component: Some(component.into()),
            host: node.map(|n| n.name.clone()),
        }),
        reporting_component: Some(component.into()),
        reporting_instance: node.map(|n| n.name.clone()),
        ..Event::default()
    };
    let api: Api<Event> = Api::namespaced(client.clone(), &namespace);
    if let Err(e) = api.create(&PostParams::default(), &event).await {
        tracing::warn!(pod = %pod_ref(pod), reason, error = %e, "recording an Event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(4),
        };
        let delays: Vec<Duration> = (1..=6).map(|n| b.after(n)).collect();
        assert_eq!(
            delays,
            [500, 1000, 2000, 4000, 4000, 4000]
                .map(Duration::from_millis)
                .to_vec()
        );
    }
}
