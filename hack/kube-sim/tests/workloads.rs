//! Workloads on simulated nodes, driven and read with the real kubectl: a Deployment, a
//! DaemonSet and a StatefulSet reach Running and Ready, roll a template change as their
//! strategy says, and `kubectl rollout status` returns when done; nodes show as kubectl shows
//! them, and `kubectl label node` / `kubectl taint` move pods and daemons. Pods here are
//! sandboxes (no image is mapped to a process). Root: real namespaces.

#[allow(dead_code)]
mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::Kubectl;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use kube_sim::controllers::WorkloadControllers;
use kube_sim::nodes::{Simulator, SimulatorConfig};
use kube_sim::ApiServer;

struct Bed {
    server: ApiServer,
    sim: Simulator,
    controllers: WorkloadControllers,
    kubectl: Kubectl,
    _dir: tempfile::TempDir,
}

async fn bed() -> Bed {
    let server = ApiServer::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .expect("API server");
    let client = server.client().expect("client");
    let default: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "default"}})).expect("ns");
    let _ = Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &default)
        .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = SimulatorConfig::new(2, dir.path().join("nodes"));
    config.backoff.initial = Duration::from_millis(200);
    config.backoff.max = Duration::from_secs(1);
    let sim = Simulator::start(client.clone(), config)
        .await
        .expect("simulator");
    let controllers = WorkloadControllers::start(client);
    let kubectl = Kubectl::setup(&server, dir.path()).await;
    Bed {
        server,
        sim,
        controllers,
        kubectl,
        _dir: dir,
    }
}

impl Bed {
    async fn down(self) {
        self.controllers.shutdown().await;
        self.sim.shutdown().await;
        self.server.shutdown().await;
    }

    async fn apply(&self, manifest: &str) {
        let out = self
            .kubectl
            .run_with_input(&["apply", "-f", "-"], Some(manifest))
            .await;
        assert!(out.ok, "kubectl apply: {}", out.stderr);
    }

    async fn rollout(&self, target: &str) {
        let out = self
            .kubectl
            .run(&["rollout", "status", target, "--timeout=120s"])
            .await;
        assert!(
            out.ok,
            "rollout status {target}: {}{}",
            out.stdout, out.stderr
        );
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

    /// Poll until `kubectl get <target> -o jsonpath=<path>` prints `expected`.
    async fn until(&self, target: &[&str], path: &str, expected: &str) {
        let jsonpath = format!("jsonpath={path}");
        let mut args = vec!["get"];
        args.extend(target);
        args.extend(["-o", jsonpath.as_str()]);
        self.eventually(&args, |o| o == expected).await;
    }

    /// Poll until `check` holds on what kubectl prints for `args` (the controllers and the
    /// kubelet act asynchronously; no timing is asserted, only an upper bound to fail on).
    async fn eventually(&self, args: &[&str], check: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        for _ in 0..240 {
            let out = self.kubectl.run(args).await;
            last = format!("{}{}", out.stdout, out.stderr);
            if out.ok && check(&out.stdout) {
                return out.stdout;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!("kubectl {args:?} never satisfied the check; last output:\n{last}");
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
    bed.apply(&on_delete.replace("IMAGE", "busybox:2")).await;
    bed.until(&["daemonset", "agent"], "{.status.observedGeneration}", "2")
        .await;
    let updated = bed
        .kubectl
        .must(&[
            "get",
            "daemonset",
            "agent",
            "-o",
            "jsonpath={.status.updatedNumberScheduled}",
        ])
        .await;
    assert_eq!(updated, "0", "OnDelete replaces nothing by itself");
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
