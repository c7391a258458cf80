//! Workloads on simulated nodes, driven and read with the real kubectl: a Deployment, a
//! DaemonSet and a StatefulSet reach Running and Ready, roll a template change as their
//! strategy says, and `kubectl rollout status` returns when done; nodes show as kubectl shows
//! them, and `kubectl label node` / `kubectl taint` move pods and daemons. Most pods here are
//! sandboxes; the image `sim-workload:v1` is mapped to the `sim-workload` program, whose
//! workloads run as real processes: Ready through HTTP probes, in the right network
//! namespaces, answering `kubectl logs` (`-f`) and `kubectl exec`, and gone after a roll.
//! What one process pod does alone is `nodes_processes.rs`. Root: real namespaces.

#[allow(dead_code)]
mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{alive, pid_in, same_netns, Bed};
use futures::TryStreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::runtime::watcher;
use kube::ResourceExt;
use kube_sim::nodes::{pod_netns_path, ContainerRuntime};
use tokio::io::AsyncBufReadExt;

/// The image kube-sim runs as the `sim-workload` program.
const IMAGE: &str = "sim-workload:v1";

async fn bed() -> Bed {
    bed_with(ContainerRuntime::SandboxOnly).await
}

/// A bed whose nodes run `sim-workload:v1` as the `sim-workload` program.
async fn bed_of_processes() -> Bed {
    let entry = format!("{IMAGE}={}", env!("CARGO_BIN_EXE_sim-workload"));
    bed_with(ContainerRuntime::from_entries([entry.as_str()]).expect("image map")).await
}

async fn bed_with(runtime: ContainerRuntime) -> Bed {
    Bed::start(2, |config| config.runtime = runtime).await
}

impl Bed {
    async fn rollout(&self, target: &str) {
        let out = self
            .kubectl
            .run(&["rollout", "status", target, "--timeout=120s"])
            .await;
        if !out.ok {
            let state = self
                .kubectl
                .run(&["get", "replicasets", "-o", "yaml"])
                .await;
            panic!(
                "rollout status {target}: {}{}\n{}{}",
                out.stdout, out.stderr, state.stdout, state.stderr
            );
        }
    }

    fn pod_api(&self) -> Api<Pod> {
        Api::namespaced(self.server.client().expect("client"), "default")
    }

    /// The pods with `selector` that are Running, Ready and not being deleted.
    async fn ready_pods(&self, selector: &str) -> Vec<Pod> {
        let list = self
            .pod_api()
            .list(&ListParams::default().labels(selector))
            .await
            .expect("list pods");
        let mut pods: Vec<Pod> = list
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && ready(p))
            .collect();
        pods.sort_by_key(|p| p.name_any());
        pods
    }

    /// The process of each Ready pod with `selector` (pod name → pid, from the program's
    /// `started pid N` line read through `kubectl logs`), once there are `count` of them.
    async fn processes(&self, selector: &str, count: usize) -> BTreeMap<String, i32> {
        for _ in 0..240 {
            let pods = self.ready_pods(selector).await;
            if pods.len() == count {
                let mut pids = BTreeMap::new();
                for pod in &pods {
                    let log = self.kubectl.must(&["logs", &pod.name_any()]).await;
                    pids.insert(pod.name_any(), pid_in(&log));
                }
                return pids;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!("{selector}: never {count} Ready pods");
    }

    /// Waits until none of `pids` is a live process.
    async fn gone(&self, pids: &BTreeMap<String, i32>) {
        for _ in 0..240 {
            if pids.values().all(|pid| !alive(*pid)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("old processes still running: {pids:?}");
    }

    /// The network namespace `pod`'s processes must be in: its own, or its node's for
    /// hostNetwork pods.
    fn netns_of(&self, pod: &Pod) -> PathBuf {
        let spec = pod.spec.as_ref().expect("spec");
        if spec.host_network == Some(true) {
            let node = spec.node_name.as_deref().expect("scheduled");
            self.sim.node(node).expect("a simulated node").netns_path()
        } else {
            pod_netns_path(pod).expect("the pod's netns is recorded")
        }
    }

    /// `name node revision-label` of the pods with `selector`, sorted.
    async fn pods(&self, selector: &str, label: &str) -> Vec<(String, String, String)> {
        let jsonpath = format!(
            "{{range .items[*]}}{{.metadata.name}} {{.spec.nodeName}} {{.status.phase}} {{.metadata.labels.{}}}{{\"\\n\"}}{{end}}",
            label.replace('.', "\\.")
        );
        let out = self
            .kubectl
            .must(&[
                "get",
                "pods",
                "-l",
                selector,
                "-o",
                &format!("jsonpath={jsonpath}"),
            ])
            .await;
        let mut pods: Vec<(String, String, String)> = out
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                (f.len() == 4 && f[2] == "Running")
                    .then(|| (f[0].to_string(), f[1].to_string(), f[3].to_string()))
            })
            .collect();
        pods.sort();
        pods
    }

    /// `kubectl get <kind> -l <selector> -o name`.
    async fn names(&self, kind: &str, selector: &str) -> String {
        self.kubectl
            .must(&["get", kind, "-l", selector, "-o", "name"])
            .await
    }

    /// Applies the second template of the OnDelete DaemonSet `agent` and checks that it
    /// replaces no pod by itself.
    async fn apply_on_delete_template(&self, manifest: &str) {
        self.apply(manifest).await;
        self.until(&["daemonset", "agent"], "{.status.observedGeneration}", "2")
            .await;
        let updated = self
            .field(&["daemonset", "agent"], "{.status.updatedNumberScheduled}")
            .await;
        assert_eq!(updated, "0", "OnDelete replaces nothing by itself");
    }
}

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: IMAGE}]}
";

const DAEMONSET: &str = "apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  updateStrategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: 1}}
  template:
    metadata: {labels: {app: agent}}
    spec: {containers: [{name: agent, image: IMAGE}]}
";

const STATEFULSET: &str = "apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  replicas: 2
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: db, image: IMAGE}]}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workloads_roll_out_and_roll_a_template_change() {
    let bed = bed().await;

    bed.apply(&DEPLOYMENT.replace("IMAGE", "busybox:1")).await;
    bed.apply(&DAEMONSET.replace("IMAGE", "busybox:1")).await;
    bed.apply(&STATEFULSET.replace("IMAGE", "busybox:1")).await;
    bed.rollout("deployment/web").await;
    bed.rollout("daemonset/agent").await;
    bed.rollout("statefulset/db").await;

    let web = bed.pods("app=web", "pod-template-hash").await;
    assert_eq!(web.len(), 2, "{web:?}");
    let agents = bed.pods("app=agent", "controller-revision-hash").await;
    let mut nodes: Vec<&str> = agents.iter().map(|p| p.1.as_str()).collect();
    nodes.sort();
    assert_eq!(
        nodes,
        vec!["node-1", "node-2"],
        "one daemon per node: {agents:?}"
    );
    let db = bed.pods("app=db", "controller-revision-hash").await;
    let names: Vec<&str> = db.iter().map(|p| p.0.as_str()).collect();
    assert_eq!(names, vec!["db-0", "db-1"]);
    let listed = bed.kubectl.must(&["get", "deployment", "web"]).await;
    assert!(listed.contains("2/2"), "{listed}");

    // A template change rolls each kind to the new template, and rollout status waits for it.
    bed.apply(&DEPLOYMENT.replace("IMAGE", "busybox:2")).await;
    bed.apply(&DAEMONSET.replace("IMAGE", "busybox:2")).await;
    bed.apply(&STATEFULSET.replace("IMAGE", "busybox:2")).await;
    bed.rollout("deployment/web").await;
    bed.rollout("daemonset/agent").await;
    bed.rollout("statefulset/db").await;

    let rolled = bed
        .eventually(&["get", "pods", "-l", "app=web", "-o", "name"], |o| {
            o.lines().count() == 2
        })
        .await;
    let new_web = bed.pods("app=web", "pod-template-hash").await;
    assert_eq!(new_web.len(), 2, "{rolled}");
    assert!(
        new_web.iter().all(|p| p.2 != web[0].2),
        "every web pod runs the new template: {new_web:?} (was {web:?})"
    );
    let replica_sets = bed
        .kubectl
        .must(&[
            "get",
            "replicasets",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].spec.replicas}",
        ])
        .await;
    let mut counts: Vec<&str> = replica_sets.split(' ').collect();
    counts.sort();
    assert_eq!(
        counts,
        vec!["0", "2"],
        "old ReplicaSet scaled to 0, new to 2"
    );
    let history = bed
        .kubectl
        .must(&["rollout", "history", "deployment/web"])
        .await;
    assert!(history.contains('1') && history.contains('2'), "{history}");

    let new_agents = bed
        .eventually(
            &[
                "get",
                "pods",
                "-l",
                "app=agent",
                "-o",
                "jsonpath={.items[*].metadata.labels.controller-revision-hash}",
            ],
            |o| o.split(' ').count() == 2 && !o.contains(&agents[0].2),
        )
        .await;
    assert!(!new_agents.contains(&agents[0].2), "{new_agents}");
    let revisions = bed
        .kubectl
        .must(&["get", "controllerrevisions", "-o", "name"])
        .await;
    assert!(
        revisions.lines().count() >= 4,
        "two per DaemonSet and StatefulSet: {revisions}"
    );

    let new_db = bed.pods("app=db", "controller-revision-hash").await;
    assert_eq!(new_db.len(), 2);
    assert!(
        new_db.iter().all(|p| p.2 != db[0].2),
        "both StatefulSet pods run the update revision: {new_db:?}"
    );

    let out = bed
        .kubectl
        .must(&["scale", "deployment/web", "--replicas=3"])
        .await;
    assert!(out.contains("scaled"), "{out}");
    bed.rollout("deployment/web").await;
    bed.eventually(&["get", "pods", "-l", "app=web", "-o", "name"], |o| {
        o.lines().count() == 3
    })
    .await;
    assert_eq!(bed.pods("app=web", "pod-template-hash").await.len(), 3);

    for workload in ["daemonset/agent", "statefulset/db"] {
        let history = bed.kubectl.must(&["rollout", "history", workload]).await;
        let revisions: Vec<&str> = history
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|r| r.parse::<u32>().is_ok())
            .collect();
        assert_eq!(revisions, vec!["1", "2"], "{workload}: {history}");
    }

    // Deleting a workload takes what it owns with it (ReplicaSets, pods, revisions).
    for workload in ["deployment/web", "daemonset/agent", "statefulset/db"] {
        bed.kubectl
            .must(&["delete", workload, "--wait=false"])
            .await;
    }
    bed.eventually(
        &["get", "replicasets,controllerrevisions,pods", "-o", "name"],
        str::is_empty,
    )
    .await;

    bed.down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_labels_and_taints_steer_pods_and_daemons() {
    let bed = bed().await;

    let nodes = bed.kubectl.must(&["get", "nodes", "-o", "wide"]).await;
    let header = nodes.lines().next().unwrap_or_default();
    for column in ["STATUS", "ROLES", "VERSION", "INTERNAL-IP"] {
        assert!(header.contains(column), "{nodes}");
    }
    for node in ["node-1", "node-2"] {
        let line = nodes
            .lines()
            .find(|l| l.starts_with(node))
            .unwrap_or_default();
        assert!(line.contains("Ready") && line.contains("worker"), "{nodes}");
    }
    let labels = bed
        .kubectl
        .must(&["get", "node", "node-1", "-o", "jsonpath={.metadata.labels}"])
        .await;
    assert!(
        labels.contains("\"kubernetes.io/hostname\":\"node-1\"")
            && labels.contains("\"kubernetes.io/os\":\"linux\""),
        "{labels}"
    );
    let allocatable = bed
        .kubectl
        .must(&[
            "get",
            "node",
            "node-1",
            "-o",
            "jsonpath={.status.allocatable.pods}",
        ])
        .await;
    assert_eq!(allocatable, "110");

    // A pod that selects a label no node has waits; labelling a node places it there.
    bed.apply("apiVersion: v1\nkind: Pod\nmetadata: {name: picky}\nspec:\n  nodeSelector: {zone: b}\n  containers: [{name: c, image: busybox}]\n").await;
    bed.kubectl
        .must(&["label", "node", "node-2", "zone=b"])
        .await;
    bed.until(
        &["pod", "picky"],
        "{.spec.nodeName} {.status.phase}",
        "node-2 Running",
    )
    .await;

    // A tainted node takes no new pods that do not tolerate it.
    bed.kubectl
        .must(&["taint", "node", "node-1", "dedicated=infra:NoSchedule"])
        .await;
    for name in ["t1", "t2"] {
        bed.apply(&format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers: [{{name: c, image: busybox}}]\n")).await;
    }
    for name in ["t1", "t2"] {
        bed.until(
            &["pod", name],
            "{.spec.nodeName} {.status.phase}",
            "node-2 Running",
        )
        .await;
    }

    // Daemons follow: one on each node that admits them, and a label brings one where its
    // selector now matches; a NoExecute taint takes one away.
    bed.apply(&DAEMONSET.replace("IMAGE", "busybox:1")).await;
    bed.until(
        &["daemonset", "agent"],
        "{.status.desiredNumberScheduled}",
        "1",
    )
    .await;
    bed.rollout("daemonset/agent").await;
    bed.kubectl
        .must(&["taint", "node", "node-1", "dedicated=infra:NoSchedule-"])
        .await;
    bed.until(&["daemonset", "agent"], "{.status.numberReady}", "2")
        .await;
    bed.kubectl
        .must(&["taint", "node", "node-2", "drain=now:NoExecute"])
        .await;
    bed.eventually(
        &[
            "get",
            "pods",
            "-l",
            "app=agent",
            "-o",
            "jsonpath={.items[*].spec.nodeName}",
        ],
        |o| o == "node-1",
    )
    .await;

    let edge = DAEMONSET
        .replace("name: agent", "name: edge")
        .replace("app: agent", "app: edge")
        .replace(
            "    spec: {containers",
            "    spec: {nodeSelector: {role: edge}, containers",
        );
    bed.apply(&edge.replace("IMAGE", "busybox:1")).await;
    bed.until(&["daemonset", "edge"], "{.status.observedGeneration}", "1")
        .await;
    let none = bed.names("pods", "app=edge").await;
    assert!(none.is_empty(), "{none}");
    bed.kubectl
        .must(&["label", "node", "node-1", "role=edge"])
        .await;
    bed.eventually(
        &[
            "get",
            "pods",
            "-l",
            "app=edge",
            "-o",
            "jsonpath={.items[*].spec.nodeName}",
        ],
        |o| o == "node-1",
    )
    .await;

    bed.down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_delete_waits_and_a_stateful_update_goes_down_from_the_highest_ordinal() {
    use futures::TryStreamExt;
    use k8s_openapi::api::core::v1::Pod;
    use kube::runtime::watcher;

    let bed = bed().await;
    let client = bed.server.client().expect("client");

    let on_delete = DAEMONSET.replace(
        "{type: RollingUpdate, rollingUpdate: {maxUnavailable: 1}}",
        "{type: OnDelete}",
    );
    bed.apply(&on_delete.replace("IMAGE", "busybox:1")).await;
    bed.until(&["daemonset", "agent"], "{.status.numberReady}", "2")
        .await;
    bed.apply_on_delete_template(&on_delete.replace("IMAGE", "busybox:2"))
        .await;
    let on_node_1 = bed
        .kubectl
        .must(&[
            "get",
            "pods",
            "-l",
            "app=agent",
            "--field-selector",
            "spec.nodeName=node-1",
            "-o",
            "name",
        ])
        .await;
    bed.kubectl
        .must(&["delete", on_node_1.trim(), "--wait=false"])
        .await;
    bed.until(
        &["daemonset", "agent"],
        "{.status.updatedNumberScheduled}",
        "1",
    )
    .await;

    // Record the order in which StatefulSet pods go away during an update.
    let deleted = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = deleted.clone();
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let watch = tokio::spawn(async move {
        let stream = watcher(pods, watcher::Config::default().labels("app=db"));
        futures::pin_mut!(stream);
        while let Ok(Some(event)) = stream.try_next().await {
            if let watcher::Event::Delete(pod) = event {
                let name = pod.metadata.name.unwrap_or_default();
                seen.lock().expect("lock").push(name);
            }
        }
    });
    let three = STATEFULSET.replace("replicas: 2", "replicas: 3");
    bed.apply(&three.replace("IMAGE", "busybox:1")).await;
    bed.rollout("statefulset/db").await;
    bed.apply(&three.replace("IMAGE", "busybox:2")).await;
    bed.rollout("statefulset/db").await;
    bed.until(&["statefulset", "db"], "{.status.updatedReplicas}", "3")
        .await;
    watch.abort();
    let order = deleted.lock().expect("lock").clone();
    assert_eq!(order, vec!["db-2", "db-1", "db-0"], "reverse ordinal order");

    // A partition keeps the pods below it on the old template.
    let partitioned = three.replace(
        "  serviceName: db\n",
        "  serviceName: db\n  updateStrategy: {type: RollingUpdate, rollingUpdate: {partition: 2}}\n",
    );
    bed.apply(&partitioned.replace("IMAGE", "busybox:3")).await;
    bed.rollout("statefulset/db").await;
    let images = bed
        .kubectl
        .must(&[
            "get",
            "pods",
            "-l",
            "app=db",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.spec.containers[0].image} {end}",
        ])
        .await;
    assert!(
        images.contains("db-0=busybox:2")
            && images.contains("db-1=busybox:2")
            && images.contains("db-2=busybox:3"),
        "{images}"
    );

    bed.down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_deployment_waits_for_resume_and_claims_are_refused_by_name() {
    let bed = bed().await;
    bed.apply(&DEPLOYMENT.replace("IMAGE", "busybox:1")).await;
    bed.rollout("deployment/web").await;

    bed.kubectl
        .must(&["rollout", "pause", "deployment/web"])
        .await;
    bed.apply(&DEPLOYMENT.replace("IMAGE", "busybox:2")).await;
    bed.until(&["deployment", "web"], "{.status.observedGeneration}", "3")
        .await;
    let sets = bed.names("replicasets", "app=web").await;
    assert_eq!(sets.lines().count(), 1, "paused: no new ReplicaSet: {sets}");
    bed.kubectl
        .must(&["rollout", "resume", "deployment/web"])
        .await;
    bed.rollout("deployment/web").await;
    let images = bed
        .kubectl
        .must(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].spec.containers[0].image}",
        ])
        .await;
    assert_eq!(images, "busybox:2 busybox:2");

    let claims = STATEFULSET.replace(
        "  serviceName: db\n",
        "  serviceName: db\n  volumeClaimTemplates: [{metadata: {name: data}, spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}}]\n",
    );
    bed.apply(&claims.replace("IMAGE", "busybox:1")).await;
    let warning = bed
        .eventually(
            &[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=db",
                "-o",
                "jsonpath={.items[*].message}",
            ],
            |o| !o.is_empty(),
        )
        .await;
    assert!(
        warning.contains("volumeClaimTemplates are not supported yet"),
        "{warning}"
    );
    let pods = bed.names("pods", "app=db").await;
    assert!(pods.is_empty(), "{pods}");

    bed.down().await;
}

/// A workload of `kind` running `sim-workload` on `port` with an HTTP readiness probe; its
/// `VERSION` (which the program prints) tells the template revisions apart.
fn workload(kind: &str, name: &str, port: u16, version: &str, extra_spec: &str) -> String {
    let (strategy, replicas) = match kind {
        "Deployment" => (
            "  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}\n",
            "  replicas: 2\n",
        ),
        "DaemonSet" => ("  updateStrategy: {type: OnDelete}\n", ""),
        _ => ("  serviceName: db\n", "  replicas: 2\n"),
    };
    format!(
        "apiVersion: apps/v1
kind: {kind}
metadata: {{name: {name}}}
spec:
{replicas}{strategy}  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
{extra_spec}      terminationGracePeriodSeconds: 5
      containers:
      - name: {name}
        image: {IMAGE}
        args: [--serve, \"{port}\", --tick-ms, \"300\", --show-env, VERSION]
        env: [{{name: VERSION, value: {version}}}]
        readinessProbe: {{httpGet: {{path: /ready, port: {port}}}, periodSeconds: 1}}
"
    )
}

fn web_of_processes(version: &str) -> String {
    workload("Deployment", "web", 8080, version, "")
}

fn agents_of_processes(version: &str) -> String {
    workload(
        "DaemonSet",
        "agent",
        8081,
        version,
        "      hostNetwork: true\n",
    )
}

fn db_of_processes(version: &str) -> String {
    workload("StatefulSet", "db", 8082, version, "")
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Records, from a watch of objects with `selector`, the highest total of `weight` over the
/// objects at any moment (e.g. the replicas all ReplicaSets of a Deployment ask for), and the
/// order in which objects were deleted.
struct Watch {
    task: tokio::task::JoinHandle<()>,
    most_at_once: Arc<Mutex<i64>>,
    deleted: Arc<Mutex<Vec<String>>>,
}

impl Watch {
    fn start<K>(api: Api<K>, selector: &str, weight: fn(&K) -> i64) -> Watch
    where
        K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    {
        let most_at_once = Arc::new(Mutex::new(0));
        let deleted = Arc::new(Mutex::new(Vec::new()));
        let (most, gone) = (most_at_once.clone(), deleted.clone());
        let config = watcher::Config::default().labels(selector);
        let task = tokio::spawn(async move {
            let mut live = BTreeMap::new();
            let stream = watcher(api, config);
            futures::pin_mut!(stream);
            while let Ok(Some(event)) = stream.try_next().await {
                match event {
                    watcher::Event::Apply(object) | watcher::Event::InitApply(object) => {
                        live.insert(object.name_any(), weight(&object));
                    }
                    watcher::Event::Delete(object) => {
                        live.remove(&object.name_any());
                        gone.lock().expect("lock").push(object.name_any());
                    }
                    watcher::Event::Init | watcher::Event::InitDone => {}
                }
                let mut most = most.lock().expect("lock");
                *most = (*most).max(live.values().sum());
            }
        });
        Watch {
            task,
            most_at_once,
            deleted,
        }
    }

    fn stop(self) -> (i64, Vec<String>) {
        self.task.abort();
        let most = *self.most_at_once.lock().expect("lock");
        let deleted = self.deleted.lock().expect("lock").clone();
        (most, deleted)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workloads_of_processes_run_ready_answer_logs_and_exec_and_roll_by_strategy() {
    let bed = bed_of_processes().await;

    bed.apply(&web_of_processes("v1")).await;
    bed.apply(&agents_of_processes("v1")).await;
    bed.apply(&db_of_processes("v1")).await;
    bed.rollout("deployment/web").await;
    bed.rollout("statefulset/db").await;
    bed.until(&["daemonset", "agent"], "{.status.numberReady}", "2")
        .await;

    // Every pod is Running and Ready (the HTTP readiness probe answers), and its process runs
    // in its own network namespace, or its node's for the host-network daemons.
    let web = bed.processes("app=web", 2).await;
    let agents = bed.processes("app=agent", 2).await;
    let db = bed.processes("app=db", 2).await;
    assert_eq!(db.keys().collect::<Vec<_>>(), ["db-0", "db-1"]);
    let mut nodes = Vec::new();
    for selector in ["app=web", "app=agent", "app=db"] {
        for pod in bed.ready_pods(selector).await {
            let pids = [&web, &agents, &db];
            let pid = pids
                .iter()
                .find_map(|m| m.get(&pod.name_any()))
                .expect("a process of the pod");
            assert!(alive(*pid), "{}: process {pid} runs", pod.name_any());
            let netns = bed.netns_of(&pod);
            assert!(
                same_netns(*pid, &netns),
                "{}: process {pid} is in {}",
                pod.name_any(),
                netns.display()
            );
            if selector == "app=agent" {
                nodes.push(pod.spec.and_then(|s| s.node_name).expect("node"));
            }
        }
    }
    nodes.sort();
    assert_eq!(nodes, ["node-1", "node-2"], "one daemon per node");

    // Logs of a workload (kubectl picks one of its pods), and of one pod followed.
    let logs = bed.kubectl.must(&["logs", "deployment/web"]).await;
    assert!(
        logs.contains("serving on 8080") && logs.contains("VERSION=v1"),
        "{logs}"
    );
    let first = web.keys().next().expect("a web pod").clone();
    let seen = bed.kubectl.must(&["logs", &first]).await;
    let last_tick = ticks(&seen).last().copied().unwrap_or(0);
    let followed = follow_until_tick(&bed, &first, last_tick + 2).await;
    assert!(
        followed.contains("started pid"),
        "-f starts at the beginning: {followed}"
    );

    // exec runs in the pod's network namespace: it shows the pod's address on eth0.
    for name in [first.as_str(), "db-1"] {
        let pod = bed.pod_api().get(name).await.expect("pod");
        let ip = pod.status.and_then(|s| s.pod_ip).expect("pod IP");
        let addrs = bed
            .kubectl
            .must(&["exec", name, "--", "ip", "addr", "show"])
            .await;
        assert!(
            addrs.contains("eth0") && addrs.contains(&format!("inet {ip}/")),
            "{name} ({ip}): {addrs}"
        );
    }

    // RollingUpdate with maxSurge 1, maxUnavailable 0: one new pod at a time, the ReplicaSets
    // never asking for more than replicas + 1 pods, and rollout status returns once all run the new template.
    let replica_sets: Api<ReplicaSet> =
        Api::namespaced(bed.server.client().expect("client"), "default");
    let watch = Watch::start(replica_sets, "app=web", |rs| {
        rs.spec
            .as_ref()
            .and_then(|s| s.replicas)
            .map_or(0, i64::from)
    });
    bed.apply(&web_of_processes("v2")).await;
    bed.rollout("deployment/web").await;
    let new_web = bed.processes("app=web", 2).await;
    let (most, _) = watch.stop();
    assert!(
        most <= 3,
        "at most one surge pod at a time: the ReplicaSets asked for {most} pods at once"
    );
    assert!(new_web.keys().all(|n| !web.contains_key(n)), "{new_web:?}");
    let logs = bed.kubectl.must(&["logs", "deployment/web"]).await;
    assert!(logs.contains("VERSION=v2"), "{logs}");
    bed.gone(&web).await;

    // OnDelete: the new template waits for a delete; the old daemons keep running until then.
    bed.apply_on_delete_template(&agents_of_processes("v2"))
        .await;
    assert!(agents.values().all(|pid| alive(*pid)), "{agents:?}");
    for (name, pid) in &agents {
        bed.kubectl.must(&["delete", "pod", name]).await;
        bed.gone(&BTreeMap::from([(name.clone(), *pid)])).await;
    }
    bed.until(
        &["daemonset", "agent"],
        "{.status.updatedNumberScheduled} {.status.numberReady}",
        "2 2",
    )
    .await;
    let new_agents = bed.processes("app=agent", 2).await;
    assert!(new_agents.keys().all(|n| !agents.contains_key(n)));
    for name in new_agents.keys() {
        let log = bed.kubectl.must(&["logs", name]).await;
        assert!(log.contains("VERSION=v2"), "{name}: {log}");
    }

    // A StatefulSet rolls from the highest ordinal down; the names stay, the processes change.
    let watch = Watch::start(bed.pod_api(), "app=db", |_| 1);
    bed.apply(&db_of_processes("v2")).await;
    bed.rollout("statefulset/db").await;
    bed.until(&["statefulset", "db"], "{.status.updatedReplicas}", "2")
        .await;
    let new_db = bed.processes("app=db", 2).await;
    let (_, deleted) = watch.stop();
    assert_eq!(deleted, ["db-1", "db-0"], "reverse ordinal order");
    bed.gone(&db).await;
    for (name, pid) in &new_db {
        assert!(
            !db.values().any(|old| old == pid),
            "{name} has a new process"
        );
        let log = bed.kubectl.must(&["logs", name]).await;
        assert!(log.contains("VERSION=v2"), "{name}: {log}");
    }

    bed.down().await;
}

/// The `tick N` numbers of a log.
fn ticks(log: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|l| l.strip_prefix("tick ")?.trim().parse().ok())
        .collect()
}

/// Follows `pod`'s log with `kubectl logs -f` until it shows tick `until` (written after the
/// follow started); returns what it printed.
async fn follow_until_tick(bed: &Bed, pod: &str, until: u64) -> String {
    let kubeconfig = bed.dir.path().join("kubeconfig");
    let mut child = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["logs", "-f", pod])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kubectl runs");
    let stdout = child.stdout.take().expect("piped");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut printed = String::new();
    let read = async {
        while let Some(line) = lines.next_line().await.expect("read kubectl") {
            printed.push_str(&line);
            printed.push('\n');
            if ticks(&line).first().is_some_and(|n| *n >= until) {
                return true;
            }
        }
        false
    };
    let reached = tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .unwrap_or(false);
    let _ = child.kill().await;
    assert!(
        reached,
        "kubectl logs -f {pod} never showed tick {until}: {printed}"
    );
    printed
}
