//! The node simulator: kubelet + Multus on N simulated nodes, talking to the API only through
//! the `kube` client. `Simulator::start` builds the nodes (`fabric`), registers them as Node
//! objects and runs the pod loop (`kubelet`); `Simulator::shutdown` tears everything down.
//!
//! Use from a test (root, real namespaces):
//!
//! ```ignore
//! let server = kube_sim::ApiServer::start("127.0.0.1:0".parse()?).await?;
//! let mut config = SimulatorConfig::new(2, tempdir.path());
//! config.fabric.cni_bin_dirs = vec![dir_with_plugins];   // searched before /opt/cni/bin
//! config.api_server = Some(server.addr());               // node processes reach the API
//! // containers of this image run as that program (others stay network sandboxes):
//! config.runtime = ContainerRuntime::from_entries(["app:v1=target/debug/app"])?;
//! let sim = Simulator::start(server.client()?, config).await?;
//! let node = sim.node("node-1").unwrap();
//! let daemon = node.command(kube_ovn_binary)?.args(["node", "--kubeconfig", kc]).spawn()?;
//! // … create NADs and pods; pod_netns_path(&pod) is the pod's namespace …
//! sim.shutdown().await;
//! ```
//!
//! Rooms: `selection` (networks annotation), `delegate` (per-network config, CNI_ARGS,
//! runtimeConfig), `exec` (running plugins), `result` (CNI results, network-status),
//! `sandbox` (one pod's namespace and delegates), `node`/`fabric` (namespaces, mounts,
//! underlay, cluster default network), `scheduler` (with `affinity`), `kubelet`; process
//! pods: `workloads` (image map), `containers` (lifecycle, status), `pod_files` (volumes,
//! env), `probes`, `kubelet_api` (the kubelet endpoint serving logs and exec).

pub mod affinity;
pub mod containers;
pub mod delegate;
pub mod exec;
pub mod fabric;
pub mod kubelet;
pub mod kubelet_api;
pub mod nad;
pub mod node;
pub mod pod_files;
pub mod probes;
pub mod result;
pub mod sandbox;
pub mod scheduler;
pub mod selection;
pub mod workloads;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node as NodeObject, Pod, Taint};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::Client;
use serde_json::json;

pub use fabric::{ExternalNetwork, Fabric, FabricConfig};
pub use kubelet::{Backoff, NETNS_ANNOTATION};
pub use node::{Node, TUNNEL_NIC};
pub use workloads::ContainerRuntime;

/// The label kubectl reads a node's ROLES from (`node-role.kubernetes.io/<role>`).
pub const ROLE_LABEL_PREFIX: &str = "node-role.kubernetes.io/";

/// Everything `Simulator::start` needs besides the client.
#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    pub fabric: FabricConfig,
    /// Extra labels per node name (every node also gets `kubernetes.io/hostname`,
    /// `kubernetes.io/os=linux`, `kubernetes.io/arch=amd64` and the role label
    /// `node-role.kubernetes.io/worker`, which a role label given here replaces).
    pub node_labels: BTreeMap<String, BTreeMap<String, String>>,
    /// Taints per node name, registered in the Node's `spec.taints` (`kubectl taint` changes
    /// them later); the scheduler and the DaemonSet controller honour them.
    pub node_taints: BTreeMap<String, Vec<Taint>>,
    pub backoff: Backoff,
    pub runtime: ContainerRuntime,
    /// The API server's address (a `127.0.0.1` one): every node then listens on the same
    /// address inside its namespace and forwards to it, so the kubeconfig written for the
    /// host works unchanged for processes started with `Node::command`.
    pub api_server: Option<SocketAddr>,
}

impl SimulatorConfig {
    /// `nodes` nodes with their state under `state_dir`; plugins from `cni_bin_dirs` first.
    pub fn new(nodes: usize, state_dir: impl Into<PathBuf>) -> SimulatorConfig {
        SimulatorConfig {
            fabric: FabricConfig::new(nodes, state_dir),
            node_labels: BTreeMap::new(),
            node_taints: BTreeMap::new(),
            backoff: Backoff {
                initial: Duration::from_millis(500),
                max: Duration::from_secs(10),
            },
            runtime: ContainerRuntime::default(),
            api_server: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimulatorError {
    #[error(transparent)]
    Node(#[from] node::NodeError),
    #[error("node {node}: registering the Node object: {source}")]
    Register { node: String, source: kube::Error },
    #[error("kubelet endpoint: {0}")]
    KubeletEndpoint(String),
    #[error("node {node}: forwarding {addr} to the API server: {source}")]
    Forward {
        node: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The running simulator.
pub struct Simulator {
    fabric: Arc<Fabric>,
    context: Arc<kubelet::Context>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// The pod loop.
    pods: Option<tokio::task::JoinHandle<()>>,
    /// API forwarders and the orphan sweeper.
    tasks: Vec<tokio::task::JoinHandle<()>>,
    client: Client,
}

/// For `Controller::watches`: whatever changed, the pods waiting for a node.
fn waiting_pods<K>(
    unschedulable: Arc<Mutex<BTreeSet<(String, String)>>>,
) -> impl Fn(K) -> Vec<ObjectRef<Pod>> {
    move |_changed| {
        unschedulable
            .lock()
            .expect("lock")
            .iter()
            .map(|(namespace, name)| ObjectRef::new(name).within(namespace))
            .collect()
    }
}

impl Simulator {
    pub async fn start(
        client: Client,
        config: SimulatorConfig,
    ) -> Result<Simulator, SimulatorError> {
        let fabric = Arc::new(Fabric::up(&config.fabric).await?);
        for node in &fabric.nodes {
            let extra = config
                .node_labels
                .get(&node.name)
                .cloned()
                .unwrap_or_default();
            let mut labels = BTreeMap::from([
                ("kubernetes.io/hostname".to_string(), node.name.clone()),
                ("kubernetes.io/os".to_string(), "linux".to_string()),
                ("kubernetes.io/arch".to_string(), "amd64".to_string()),
            ]);
            if !extra.keys().any(|k| k.starts_with(ROLE_LABEL_PREFIX)) {
                labels.insert(format!("{ROLE_LABEL_PREFIX}worker"), String::new());
            }
            labels.extend(extra);
            let taints = config
                .node_taints
                .get(&node.name)
                .cloned()
                .unwrap_or_default();
            register_node(&client, node, &labels, &taints).await?;
        }
        let context = Arc::new(kubelet::Context {
            client: client.clone(),
            fabric: fabric.clone(),
            runtime: config.runtime.clone(),
            processes: Arc::default(),
            api_server: config.api_server,
            backoff: config.backoff,
            running: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            cursor: AtomicUsize::new(0),
            scheduling: tokio::sync::Mutex::new(()),
            unschedulable: Arc::default(),
        });
        let mut tasks = Vec::new();
        if let Some(addr) = config.api_server {
            for node in &fabric.nodes {
                let listener = node::listen_inside(node, addr)
                    .and_then(tokio::net::TcpListener::from_std)
                    .map_err(|source| SimulatorError::Forward {
                        node: node.name.clone(),
                        addr,
                        source,
                    })?;
                tasks.push(tokio::spawn(forward_api(listener, addr)));
            }
        }
        tasks.push(kubelet_api::serve(context.clone()).await?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        // A pod no node fitted is retried when any node changes (a label, a taint, cordon) or
        // any pod does (one deleted frees its node, its host ports, its anti-affinity domain).
        let controller =
            Controller::new(Api::<Pod>::all(client.clone()), watcher::Config::default())
                .watches(
                    Api::<NodeObject>::all(client.clone()),
                    watcher::Config::default(),
                    waiting_pods(context.unschedulable.clone()),
                )
                .watches(
                    Api::<Pod>::all(client.clone()),
                    watcher::Config::default(),
                    waiting_pods(context.unschedulable.clone()),
                )
                .graceful_shutdown_on(async move {
                    let _ = stopped.await;
                });
        let store = controller.store();
        let pods = tokio::spawn(
            controller
                .run(kubelet::reconcile, kubelet::error_policy, context.clone())
                .for_each(|_| async {}),
        );
        let sweeper_context = context.clone();
        let sweeper = tokio::spawn(async move {
            if store.wait_until_ready().await.is_err() {
                return;
            }
            // A sandbox is torn down only if its pod was missing on two sweeps in a row.
            let mut missing_before: HashSet<String> = HashSet::new();
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let live: HashSet<String> = store
                    .state()
                    .iter()
                    .filter_map(|p| p.metadata.uid.clone())
                    .collect();
                let missing: HashSet<String> = sweeper_context
                    .running
                    .lock()
                    .expect("lock")
                    .keys()
                    .filter(|uid| !live.contains(*uid))
                    .cloned()
                    .collect();
                let confirmed: HashSet<String> =
                    missing.intersection(&missing_before).cloned().collect();
                if !confirmed.is_empty() {
                    kubelet::tear_down_vanished(&sweeper_context, &confirmed).await;
                }
                missing_before = missing;
            }
        });
        Ok(Simulator {
            fabric,
            context,
            stop: Some(stop),
            pods: Some(pods),
            tasks: {
                tasks.push(sweeper);
                tasks
            },
            client,
        })
    }

    pub fn nodes(&self) -> &[Node] {
        &self.fabric.nodes
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.fabric.node(name)
    }

    /// The network outside the cluster, if the fabric has one.
    pub fn external(&self) -> Option<&ExternalNetwork> {
        self.fabric.external.as_ref()
    }

    /// Prefix of every network namespace the simulator made.
    pub fn netns_prefix(&self) -> &str {
        &self.fabric.prefix
    }

    /// Stops the pod loop, deletes every sandbox (CNI DEL, namespaces), unregisters the nodes
    /// and removes the node namespaces.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // The pod loop finishes the reconciles in flight (a CNI call half done would leave
        // state behind); the other tasks just stop.
        if let Some(mut pods) = self.pods.take() {
            if tokio::time::timeout(Duration::from_secs(30), &mut pods)
                .await
                .is_err()
            {
                pods.abort();
            }
        }
        for task in self.tasks.drain(..) {
            task.abort();
            let _ = task.await;
        }
        self.context.processes.stop_all().await;
        let running: Vec<kubelet::Running> = self
            .context
            .running
            .lock()
            .expect("lock")
            .drain()
            .map(|(_, r)| r)
            .collect();
        for r in running {
            if let (Some(node), Some(sandbox)) = (self.fabric.node(&r.node), r.sandbox) {
                if let Err(e) = sandbox.delete(node, &self.fabric.plugins).await {
                    tracing::warn!(node = %node.name, error = %e, "deleting a sandbox at shutdown");
                }
            }
        }
        let api: Api<NodeObject> = Api::all(self.client.clone());
        for node in &self.fabric.nodes {
            let _ = api.delete(&node.name, &DeleteParams::default()).await;
        }
        self.fabric.down().await;
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        for task in self.tasks.iter().chain(self.pods.iter()) {
            task.abort();
        }
    }
}

/// The network namespace of a pod the simulator runs (`None` for hostNetwork pods and pods
/// without a sandbox yet).
pub fn pod_netns_path(pod: &Pod) -> Option<PathBuf> {
    let name = pod.metadata.annotations.as_ref()?.get(NETNS_ANNOTATION)?;
    Some(std::path::Path::new(node::NETNS_DIR).join(name))
}

/// Accepts connections inside a node and splices each to the API server on the host.
pub(crate) async fn forward_api(listener: tokio::net::TcpListener, api: SocketAddr) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            match tokio::net::TcpStream::connect(api).await {
                Ok(mut outbound) => {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
                Err(e) => {
                    tracing::warn!(api = %api, error = %e, "forwarding a node's API connection")
                }
            }
        });
    }
}

/// Creates (or refreshes) the Node object as `kubectl get nodes -o wide` shows a kubelet's:
/// labels, taints, addresses, capacity, node info; and marks it Ready.
async fn register_node(
    client: &Client,
    node: &Node,
    labels: &BTreeMap<String, String>,
    taints: &[Taint],
) -> Result<(), SimulatorError> {
    let api: Api<NodeObject> = Api::all(client.clone());
    let registering = |source| SimulatorError::Register {
        node: node.name.clone(),
        source,
    };
    let cidr = format!("{}/{}", node.pod_cidr.0, node.pod_cidr.1);
    let object: NodeObject = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node.name, "labels": labels,
                     "annotations": {NETNS_ANNOTATION: node.netns}},
        "spec": {"podCIDR": cidr, "podCIDRs": [cidr], "taints": taints},
    }))
    .expect("a valid Node");
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let patch = json!({"metadata": {"labels": labels, "annotations": {NETNS_ANNOTATION: node.netns}}, "spec": {"podCIDR": cidr, "podCIDRs": [cidr], "taints": taints}});
            api.patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(registering)?;
        }
        Err(e) => return Err(registering(e)),
    }
    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    let status = json!({"status": {
        "addresses": [{"type": "InternalIP", "address": node.underlay_ip.to_string()},
                      {"type": "Hostname", "address": node.name}],
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                        "message": "kube-sim node is ready", "lastHeartbeatTime": now, "lastTransitionTime": now}],
        "capacity": {"pods": "110", "cpu": "2", "memory": "4Gi"},
        "allocatable": {"pods": "110", "cpu": "2", "memory": "4Gi"},
        "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux", "osImage": "kube-sim",
                     "kernelVersion": kernel_version(), "kubeletVersion": KUBELET_VERSION,
                     "kubeProxyVersion": KUBELET_VERSION, "containerRuntimeVersion": "kube-sim://0.1.0",
                     "machineID": "", "systemUUID": "", "bootID": ""},
    }});
    api.patch_status(&node.name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .map_err(registering)?;
    Ok(())
}

/// The kubelet version nodes report (the Kubernetes API version kube-sim's clients are built for).
const KUBELET_VERSION: &str = "v1.33.0-kube-sim";

/// The host's kernel: the nodes share it.
fn kernel_version() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}
