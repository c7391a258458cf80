//! Process pods: containers whose image is mapped to a local program (`sim-workload`) run as
//! real processes in their pod's network namespace, with env (downward API, ConfigMap,
//! Secret), volumes and API access; `kubectl logs` (`--tail`, `-f`, `--previous`) and
//! `kubectl exec` work through the API server; crashes restart with backoff, a failing
//! readiness probe takes the pod out of Ready; deletion sends SIGTERM then SIGKILL; and
//! shutting kube-sim down leaves no process behind.

#[allow(dead_code)]
mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, ContainerStatus, Event, Namespace, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::Client;
use serde_json::{json, Value};

use kube_sim::nodes::{pod_files, pod_netns_path, ContainerRuntime, Simulator, SimulatorConfig};
use kube_sim::ApiServer;

use common::{alive, pid_in, same_netns};

const WAIT: Duration = Duration::from_secs(90);
const IMAGE: &str = "sim-workload:v1";

struct Bed {
    server: ApiServer,
    client: Client,
    sim: Simulator,
    kubeconfig: PathBuf,
    dir: tempfile::TempDir,
}

async fn bed() -> Bed {
    let server = ApiServer::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .expect("API server");
    let client = server.client().expect("client");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let default: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "default"}})).expect("ns");
    let _ = namespaces.create(&PostParams::default(), &default).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let mut config = SimulatorConfig::new(1, dir.path().join("nodes"));
    config.backoff.initial = Duration::from_millis(200);
    config.backoff.max = Duration::from_secs(2);
    config.api_server = Some(server.addr());
    let entry = format!("{IMAGE}={}", env!("CARGO_BIN_EXE_sim-workload"));
    config.runtime = ContainerRuntime::from_entries([entry.as_str()]).expect("image map");
    let sim = Simulator::start(client.clone(), config)
        .await
        .expect("simulator");
    Bed {
        server,
        client,
        sim,
        kubeconfig,
        dir,
    }
}

impl Bed {
    /// Shuts everything down and checks nothing of it is left.
    async fn down(self) {
        let prefix = self.sim.netns_prefix().to_string();
        let state_dir = self.dir.path().display().to_string();
        self.sim.shutdown().await;
        self.server.shutdown().await;
        common::assert_nothing_left(&prefix, &state_dir);
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    async fn create(&self, pod: Value) -> Pod {
        let pod: Pod = serde_json::from_value(pod).expect("pod");
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .expect("create pod")
    }

    /// Waits until `check` holds for the pod.
    async fn until(&self, name: &str, what: &str, check: impl Fn(&Pod) -> bool) -> Pod {
        let cond = move |p: Option<&Pod>| p.is_some_and(&check);
        tokio::time::timeout(WAIT, await_condition(self.pods(), name, cond))
            .await
            .unwrap_or_else(|_| panic!("pod {name}: not {what} in time"))
            .expect("watch")
            .expect("pod exists")
    }

    async fn ready(&self, name: &str) -> Pod {
        self.until(name, "Ready", |p| condition(p, "Ready") == Some("True"))
            .await
    }

    async fn delete(&self, pod: &Pod) {
        let name = pod.metadata.name.clone().expect("name");
        let uid = pod.metadata.uid.clone().expect("uid");
        self.pods()
            .delete(&name, &DeleteParams::default())
            .await
            .expect("delete");
        tokio::time::timeout(
            WAIT,
            await_condition(self.pods(), &name, conditions::is_deleted(&uid)),
        )
        .await
        .unwrap_or_else(|_| panic!("pod {name} not gone in time"))
        .expect("watch");
    }

    /// Runs kubectl against the bed; (exit code, stdout, stderr).
    async fn kubectl(&self, args: &[&str]) -> (i32, String, String) {
        let output = tokio::process::Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .output()
            .await
            .expect("kubectl runs");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    async fn kubectl_ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.kubectl(args).await;
        assert_eq!(code, 0, "kubectl {args:?} failed: {err}");
        out
    }

    /// Waits until the pod's log (through kubectl) has a line containing `needle`.
    async fn log_line(&self, name: &str, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (_, out, _) = self.kubectl(&["logs", name]).await;
            if out.contains(needle) {
                return out;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "pod {name}: no log line with {needle:?} in {out}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The log file of the first run of `container`, read on the host.
    fn log_file(&self, pod: &Pod, container: &str) -> String {
        let node = self.sim.node("node-1").expect("node-1");
        let path = pod_files::log_path(&pod_files::pod_dir(node, pod), container, 0);
        std::fs::read_to_string(path).unwrap_or_default()
    }
}

impl Bed {
    /// Waits until pod `name` has an Event with `reason`; returns its message.
    async fn event(&self, name: &str, reason: &str) -> String {
        let api: Api<Event> = Api::namespaced(self.client.clone(), "default");
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let events = api.list(&ListParams::default()).await.expect("list events");
            let found = events.items.into_iter().find(|e| {
                e.involved_object.name.as_deref() == Some(name)
                    && e.reason.as_deref() == Some(reason)
            });
            if let Some(event) = found {
                return event.message.unwrap_or_default();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "pod {name}: no {reason} Event"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn condition<'a>(pod: &'a Pod, kind: &str) -> Option<&'a str> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| c.status.as_str())
}

fn first_container(pod: &Pod) -> Option<&ContainerStatus> {
    pod.status.as_ref()?.container_statuses.as_ref()?.first()
}

fn restarts(pod: &Pod) -> i32 {
    first_container(pod).map_or(0, |c| c.restart_count)
}

#[tokio::test]
async fn a_process_pod_sees_its_namespace_env_volumes_and_the_api_and_answers_logs_and_exec() {
    let bed = bed().await;
    let configs: Api<ConfigMap> = Api::namespaced(bed.client.clone(), "default");
    let config: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "app"}, "data": {"greeting": "hello"}}))
            .expect("cm");
    configs
        .create(&PostParams::default(), &config)
        .await
        .expect("cm");
    let secrets: Api<Secret> = Api::namespaced(bed.client.clone(), "default");
    let secret: Secret = serde_json::from_value(
        json!({"metadata": {"name": "app"}, "stringData": {"token": "s3cret"}}),
    )
    .expect("secret");
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("secret");
    let field = |path: &str| json!({"valueFrom": {"fieldRef": {"fieldPath": path}}});
    let env = |name: &str, mut value: Value| {
        value["name"] = json!(name);
        value
    };
    bed.create(json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "volumes": [
                {"name": "config", "configMap": {"name": "app"}},
                {"name": "secret", "secret": {"secretName": "app", "items": [{"key": "token", "path": "auth/token"}]}},
                {"name": "data", "emptyDir": {}},
            ],
            "initContainers": [{"name": "prepare", "image": IMAGE,
                "command": ["sh", "-c", "echo up > /sim-data/ready"],
                "volumeMounts": [{"name": "data", "mountPath": "/sim-data"}]}],
            "containers": [{"name": "app", "image": IMAGE,
                "args": ["--show-env", "POD_NAME,POD_NAMESPACE,NODE_NAME,HOST_IP,POD_IP,GREETING,CM_greeting,WHO",
                         "--show-file", "/sim-config/greeting", "--show-file", "/sim-secret/auth/token",
                         "--check-api", "--serve", "8080", "--ready-file", "/sim-data/ready", "--tick-ms", "200"],
                "env": [
                    env("POD_NAME", field("metadata.name")),
                    env("POD_NAMESPACE", field("metadata.namespace")),
                    env("NODE_NAME", field("spec.nodeName")),
                    env("HOST_IP", field("status.hostIP")),
                    env("POD_IP", field("status.podIP")),
                    env("GREETING", json!({"valueFrom": {"configMapKeyRef": {"name": "app", "key": "greeting"}}})),
                    env("WHO", json!({"value": "$(POD_NAME)@$(NODE_NAME)"})),
                ],
                "envFrom": [{"configMapRef": {"name": "app"}, "prefix": "CM_"}],
                "securityContext": {"privileged": true},
                "volumeMounts": [
                    {"name": "config", "mountPath": "/sim-config"},
                    {"name": "secret", "mountPath": "/sim-secret"},
                    {"name": "data", "mountPath": "/sim-data"},
                ],
                "startupProbe": {"exec": {"command": ["test", "-f", "/sim-data/ready"]}, "periodSeconds": 1},
                "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 1, "failureThreshold": 1},
                "livenessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
            }],
        },
    }))
    .await;
    let pod = bed.ready("web").await;
    let status = pod.status.clone().expect("status");
    let pod_ip = status.pod_ip.clone().expect("pod IP");

    // What the process sees, from its own log through `kubectl logs`.
    let log = bed.log_line("web", "api ok").await;
    for line in [
        "POD_NAME=web".to_string(),
        "POD_NAMESPACE=default".into(),
        "NODE_NAME=node-1".into(),
        format!("HOST_IP={}", status.host_ip.clone().expect("host IP")),
        format!("POD_IP={pod_ip}"),
        "GREETING=hello".into(),
        "CM_greeting=hello".into(),
        "WHO=web@node-1".into(),
        "file /sim-config/greeting: hello".into(),
        "file /sim-secret/auth/token: s3cret".into(),
        "api ok: 1 pods".into(),
    ] {
        assert!(
            log.lines().any(|l| l == line),
            "no line {line:?} in the log:\n{log}"
        );
    }
    let init = status
        .init_container_statuses
        .clone()
        .expect("init statuses");
    let init_state = init[0]
        .state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("init terminated");
    assert_eq!(init_state.exit_code, 0);

    // The process is in the pod's network namespace.
    let pid = pid_in(&log);
    let netns = pod_netns_path(&pod).expect("pod netns");
    assert!(
        same_netns(pid, &netns),
        "process {pid} is not in {}",
        netns.display()
    );

    let tail = bed.kubectl_ok(&["logs", "web", "--tail=1"]).await;
    assert_eq!(tail.lines().count(), 1, "--tail=1 gave {tail:?}");

    // kubectl exec runs in the pod's namespaces.
    let addresses = bed
        .kubectl_ok(&["exec", "web", "--", "ip", "addr", "show", "eth0"])
        .await;
    assert!(
        addresses.contains(&format!("inet {pod_ip}/")),
        "eth0 of web: {addresses}"
    );
    let (code, _, _) = bed
        .kubectl(&["exec", "web", "-c", "app", "--", "sh", "-c", "exit 3"])
        .await;
    assert_eq!(code, 3, "kubectl exec passes the exit code on");
    let seen = bed
        .kubectl_ok(&["exec", "web", "--", "cat", "/sim-config/greeting"])
        .await;
    assert_eq!(seen.trim(), "hello");

    // A pod without a mapped image is still a sandbox, and exec works there too.
    bed.create(
        json!({"metadata": {"name": "plain", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "pause"}]}}),
    )
    .await;
    let plain = bed.ready("plain").await;
    let plain_ip = plain.status.and_then(|s| s.pod_ip).expect("plain pod IP");
    let addresses = bed
        .kubectl_ok(&["exec", "plain", "--", "ip", "addr", "show"])
        .await;
    assert!(
        addresses.contains(&format!("inet {plain_ip}/")),
        "plain pod: {addresses}"
    );

    // A failing readiness probe takes the pod out of Ready; passing again brings it back.
    bed.kubectl_ok(&["exec", "web", "--", "rm", "/sim-data/ready"])
        .await;
    bed.until("web", "unready", |p| condition(p, "Ready") == Some("False"))
        .await;
    bed.kubectl_ok(&["exec", "web", "--", "sh", "-c", "echo up > /sim-data/ready"])
        .await;
    bed.ready("web").await;

    bed.down().await;
    for mount_point in ["/sim-config", "/sim-secret", "/sim-data"] {
        assert!(
            !Path::new(mount_point).exists(),
            "{mount_point} left on the host"
        );
    }
}

#[tokio::test]
async fn logs_follow_a_container_until_it_exits() {
    let bed = bed().await;
    bed.create(
        json!({"metadata": {"name": "short", "namespace": "default"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "app", "image": IMAGE,
            "args": ["--tick-ms", "100", "--exit-after-ms", "3000"]}]}}),
    )
    .await;
    bed.until("short", "Running", |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
    })
    .await;
    // Returns on its own once the container exits.
    let followed = bed.kubectl_ok(&["logs", "-f", "short"]).await;
    assert!(followed.contains("tick 1"), "followed: {followed}");
    assert!(followed.contains("exiting with 0"), "followed: {followed}");
    let pod = bed
        .until("short", "Succeeded", |p| {
            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded")
        })
        .await;
    let state = &pod
        .status
        .expect("status")
        .container_statuses
        .expect("statuses")[0];
    assert_eq!(state.restart_count, 0);
    bed.down().await;
}

#[tokio::test]
async fn a_crashing_container_restarts_with_backoff() {
    let bed = bed().await;
    bed.create(
        json!({"metadata": {"name": "crash", "namespace": "default"},
        "spec": {"containers": [{"name": "app", "image": IMAGE,
            "args": ["--exit-after-ms", "100", "--exit-code", "2"]}]}}),
    )
    .await;
    let pod = bed
        .until("crash", "restarted twice", |p| restarts(p) >= 2)
        .await;
    let state = &pod
        .status
        .expect("status")
        .container_statuses
        .expect("statuses")[0];
    let last = state
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("last state terminated");
    assert_eq!((last.exit_code, last.reason.as_deref()), (2, Some("Error")));
    let waiting = bed
        .until("crash", "in CrashLoopBackOff", |p| {
            first_container(p)
                .and_then(|c| c.state.as_ref()?.waiting.as_ref())
                .is_some_and(|w| w.reason.as_deref() == Some("CrashLoopBackOff"))
        })
        .await;
    assert_eq!(condition(&waiting, "Ready"), Some("False"));
    let backoff = bed.event("crash", "BackOff").await;
    assert!(
        backoff.contains("restarting failed container app"),
        "{backoff}"
    );
    let previous = bed.kubectl_ok(&["logs", "crash", "--previous"]).await;
    assert!(
        previous.contains("exiting with 2"),
        "previous log: {previous}"
    );
    bed.down().await;
}

#[tokio::test]
async fn a_failing_liveness_probe_restarts_the_container() {
    let bed = bed().await;
    // Nothing listens on 9999: the liveness probe fails, the container is killed and restarted.
    // The initial delay lets the program install its SIGTERM handler before the first probe.
    bed.create(json!({"metadata": {"name": "dead", "namespace": "default"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "app", "image": IMAGE,
            "args": ["--serve", "8080"],
            "livenessProbe": {"tcpSocket": {"port": 9999}, "initialDelaySeconds": 2,
                "periodSeconds": 1, "failureThreshold": 1}}]}}))
        .await;
    let pod = bed.until("dead", "restarted", |p| restarts(p) >= 1).await;
    let unhealthy = bed.event("dead", "Unhealthy").await;
    assert!(
        unhealthy.starts_with("Liveness probe failed"),
        "{unhealthy}"
    );
    let first = bed.log_file(&pod, "app");
    assert!(
        first.contains("SIGTERM received, exiting"),
        "the first run got no SIGTERM: {first}"
    );
    bed.down().await;
}

#[tokio::test]
async fn deleting_a_pod_sends_sigterm_then_sigkill_and_shutdown_stops_everything() {
    let bed = bed().await;
    bed.create(
        json!({"metadata": {"name": "stubborn", "namespace": "default"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "app", "image": IMAGE,
            "args": ["--ignore-sigterm"]}]}}),
    )
    .await;
    bed.create(
        json!({"metadata": {"name": "polite", "namespace": "default"},
        "spec": {"containers": [{"name": "app", "image": IMAGE}]}}),
    )
    .await;
    bed.create(
        json!({"metadata": {"name": "left-running", "namespace": "default"},
        "spec": {"hostNetwork": true, "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "app", "image": IMAGE, "args": ["--ignore-sigterm"]}]}}),
    )
    .await;
    let stubborn = bed.ready("stubborn").await;
    let polite = bed.ready("polite").await;
    bed.ready("left-running").await;
    let stubborn_pid = pid_in(&bed.log_line("stubborn", "started pid").await);
    let polite_pid = pid_in(&bed.log_line("polite", "started pid").await);
    let host_pid = pid_in(&bed.log_line("left-running", "started pid").await);

    bed.delete(&stubborn).await;
    assert!(!alive(stubborn_pid), "SIGKILL after the grace period");
    assert!(bed.log_file(&stubborn, "app").contains("ignoring SIGTERM"));
    bed.delete(&polite).await;
    assert!(!alive(polite_pid));
    assert!(bed
        .log_file(&polite, "app")
        .contains("SIGTERM received, exiting"));

    // `left-running` (hostNetwork, ignoring SIGTERM) is stopped by the shutdown.
    assert!(alive(host_pid));
    bed.down().await;
    assert!(!alive(host_pid), "shutdown stops every process");
}

#[tokio::test]
async fn kube_sim_serve_runs_the_images_of_an_image_map_file_and_stops_them_on_sigterm() {
    let dir = tempfile::tempdir_in("/tmp").expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    let image_map = dir.path().join("images");
    let entry = format!(
        "# test program\n{IMAGE}={}\n",
        env!("CARGO_BIN_EXE_sim-workload")
    );
    std::fs::write(&image_map, entry).expect("image map");
    let mut sim = tokio::process::Command::new(env!("CARGO_BIN_EXE_kube-sim"))
        .args(["serve", "--nodes", "1", "--kubeconfig"])
        .arg(&kubeconfig)
        .arg("--state-dir")
        .arg(dir.path().join("nodes"))
        .arg("--image-map-file")
        .arg(&image_map)
        .stderr(std::fs::File::create(dir.path().join("kube-sim.log")).expect("log file"))
        .kill_on_drop(true)
        .spawn()
        .expect("kube-sim starts");
    let kubectl = |args: &[&str]| {
        std::process::Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &kubeconfig)
            .output()
            .expect("kubectl runs")
    };
    let manifest = dir.path().join("pod.json");
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "served", "namespace": "default"},
        "spec": {"containers": [{"name": "app", "image": IMAGE}]}});
    std::fs::write(&manifest, pod.to_string()).expect("manifest");
    let manifest = manifest.display().to_string();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !kubectl(&["create", "-f", &manifest]).status.success() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "kube-sim never took the pod"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let waited = kubectl(&[
        "wait",
        "--for=condition=Ready",
        "pod/served",
        "--timeout=90s",
    ]);
    assert!(
        waited.status.success(),
        "{}",
        String::from_utf8_lossy(&waited.stderr)
    );
    let log = loop {
        let log = String::from_utf8_lossy(&kubectl(&["logs", "served"]).stdout).into_owned();
        if log.contains("started pid") {
            break log;
        }
        assert!(tokio::time::Instant::now() < deadline, "no log: {log}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let pid = pid_in(&log);
    assert!(alive(pid));

    let sim_pid = nix::unistd::Pid::from_raw(sim.id().expect("running") as i32);
    nix::sys::signal::kill(sim_pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let status = tokio::time::timeout(WAIT, sim.wait())
        .await
        .expect("kube-sim exits")
        .expect("wait");
    assert!(status.success(), "{status:?}");
    assert!(!alive(pid), "stopping kube-sim stops its containers");
}

#[tokio::test]
async fn init_containers_run_in_order_and_failures_reach_the_pod() {
    let bed = bed().await;
    let append = |word: &str| {
        json!({"name": format!("init-{word}"), "image": IMAGE,
            "command": ["sh", "-c", format!("echo {word} >> /sim-order/words")],
            "volumeMounts": [{"name": "order", "mountPath": "/sim-order"}]})
    };
    let (first, second) = (append("first"), append("second"));
    bed.create(json!({"metadata": {"name": "ordered", "namespace": "default"},
        "spec": {"volumes": [{"name": "order", "emptyDir": {}}],
            "initContainers": [first, second],
            "containers": [{"name": "app", "image": IMAGE, "args": ["--show-file", "/sim-order/words"],
                "volumeMounts": [{"name": "order", "mountPath": "/sim-order"}]}]}}))
        .await;
    bed.ready("ordered").await;
    let log = bed.log_line("ordered", "file /sim-order/words").await;
    assert!(
        log.contains("file /sim-order/words: first\nsecond"),
        "{log}"
    );

    // An init container that fails in a pod that never restarts fails the pod.
    bed.create(
        json!({"metadata": {"name": "doomed", "namespace": "default"},
        "spec": {"restartPolicy": "Never",
            "initContainers": [{"name": "init", "image": IMAGE, "command": ["sh", "-c", "exit 1"]}],
            "containers": [{"name": "app", "image": IMAGE}]}}),
    )
    .await;
    bed.until("doomed", "Failed", |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed")
    })
    .await;

    // A volume that cannot be prepared is reported on the pod, as kubelet does.
    bed.create(
        json!({"metadata": {"name": "unprepared", "namespace": "default"},
        "spec": {"volumes": [{"name": "config", "configMap": {"name": "absent"}}],
            "containers": [{"name": "app", "image": IMAGE,
                "volumeMounts": [{"name": "config", "mountPath": "/sim-absent"}]}]}}),
    )
    .await;
    let failed = bed.event("unprepared", "Failed").await;
    assert!(
        failed.contains("configmap \"absent\" not found"),
        "{failed}"
    );
    bed.down().await;
}
