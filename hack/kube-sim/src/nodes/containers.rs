//! Process pods: their containers run as local processes (see `workloads` for which pods and
//! which argv). One task per pod runs the init containers in order, then every container in
//! its own restart loop (restartPolicy, CrashLoopBackOff-style backoff, `restartCount`,
//! `lastState`), with its startup/readiness/liveness probes; a status board collects container
//! states and one writer puts them into the pod's status (phase, `Ready`, container statuses).
//! Stopping a pod sends SIGTERM to each container's main process (as a container runtime
//! does), SIGKILL to its process group after the grace period or once the main process is
//! gone. Logs go to files under the pod directory (`pod_files`), read by `kubelet_api`.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use super::kubelet::{record_pod_event, Backoff};
use super::node::{in_netns, Node};
use super::pod_files::{self, MountPoints, PodAddresses};
use super::probes::{self, ProbeStreak, ProbeTiming};
use super::workloads::ContainerRuntime;

/// Where one container's processes (its own, its probes', `kubectl exec`'s) run.
#[derive(Debug, Clone)]
pub struct Placement {
    pub node: Node,
    pub netns: PathBuf,
    pub pod_ip: IpAddr,
    pub binds: Vec<(PathBuf, PathBuf)>,
    pub env: Vec<(String, String)>,
}

impl Placement {
    /// A command for `program` in the container's namespaces, environment and mounts, in a
    /// process group of its own (so stopping it stops what it started).
    pub fn command(&self, program: &str) -> Result<tokio::process::Command, String> {
        let mut command = self
            .node
            .command_in(&self.netns, &self.binds, program)
            .map_err(|e| e.to_string())?;
        command
            .env_clear()
            .envs(self.env.iter().cloned())
            .process_group(0)
            .kill_on_drop(true);
        Ok(command)
    }
}

/// Everything needed to run a pod's containers.
pub(crate) struct Launch {
    pub client: Client,
    pub node: Node,
    pub pod: Pod,
    /// The pod's network namespace (the node's for hostNetwork pods).
    pub netns: PathBuf,
    pub host_network: bool,
    pub addresses: PodAddresses,
    pub api_server: Option<SocketAddr>,
    pub runtime: ContainerRuntime,
    pub backoff: Backoff,
}

/// The process pods of all nodes, by pod UID.
#[derive(Default)]
pub(crate) struct Processes {
    pods: Mutex<HashMap<String, PodWorker>>,
    mount_points: MountPoints,
}

struct PodWorker {
    stop: CancellationToken,
    grace_ms: Arc<AtomicU64>,
    task: JoinHandle<()>,
    forwarder: Option<JoinHandle<()>>,
    board: Arc<StatusBoard>,
    placements: BTreeMap<String, Placement>,
    pod_dir: PathBuf,
    /// Mount points created for this pod's binds (see `MountPoints`).
    mount_points: Vec<PathBuf>,
}

/// One container with what it needs to run.
struct ContainerPlan {
    container: Container,
    /// `None`: an unmapped image, reported running without a process.
    argv: Option<Vec<String>>,
    placement: Placement,
}

/// What the pod task shares with its container loops.
struct PodRun {
    pod_name: String,
    /// For the container Events (Started, Killing, BackOff, Unhealthy).
    client: Client,
    pod: Pod,
    node: Node,
    pod_dir: PathBuf,
    board: Arc<StatusBoard>,
    backoff: Backoff,
    stop: CancellationToken,
    grace_ms: Arc<AtomicU64>,
}

impl Processes {
    /// Prepares the pod's files and starts its containers; errors are for the pod's Event.
    pub(crate) async fn launch(&self, launch: Launch) -> Result<(), String> {
        let uid = launch.pod.uid().unwrap_or_default();
        let spec = launch.pod.spec.clone().unwrap_or_default();
        if let Some(sidecar) = spec
            .init_containers
            .iter()
            .flatten()
            .find(|c| c.restart_policy.as_deref() == Some("Always"))
        {
            return Err(format!(
                "init container {:?}: restartPolicy Always (a sidecar) is not supported yet",
                sidecar.name
            ));
        }
        let pod_dir = pod_files::pod_dir(&launch.node, &launch.pod);
        let volumes =
            pod_files::prepare_volumes(&launch.client, &launch.node, &launch.pod, &pod_dir)
                .await
                .map_err(|e| e.to_string())?;
        let namespace = launch.pod.namespace().unwrap_or_default();
        let base_env = base_env(&launch, &pod_dir)?;
        let mut plans = plan_containers(&launch, &volumes, &base_env).await?;
        let init_count = spec.init_containers.as_ref().map_or(0, Vec::len);
        let main_plans = plans.split_off(init_count);
        let board = Arc::new(StatusBoard::new(&plans, &main_plans));
        let placements = plans
            .iter()
            .chain(&main_plans)
            .map(|p| (p.container.name.clone(), p.placement.clone()))
            .collect();
        let all_binds: Vec<(PathBuf, PathBuf)> = plans
            .iter()
            .chain(&main_plans)
            .flat_map(|p| p.placement.binds.iter().cloned())
            .collect();
        let mount_points = self
            .mount_points
            .claim(&launch.node, &all_binds)
            .map_err(|e| e.to_string())?;
        let forwarder = match launch.api_server.filter(|_| !launch.host_network) {
            // Nodes forward the API address already; a pod namespace needs its own.
            Some(api) => match forward_api_into(&launch.netns, api) {
                Ok(task) => Some(task),
                Err(e) => {
                    self.mount_points.release(&mount_points);
                    return Err(e);
                }
            },
            None => None,
        };
        let stop = CancellationToken::new();
        let grace =
            Duration::from_secs(spec.termination_grace_period_seconds.unwrap_or(30).max(0) as u64);
        let grace_ms = Arc::new(AtomicU64::new(grace.as_millis() as u64));
        let run = Arc::new(PodRun {
            pod_name: format!("{namespace}/{}", launch.pod.name_any()),
            client: launch.client.clone(),
            pod: launch.pod.clone(),
            node: launch.node.clone(),
            pod_dir: pod_dir.clone(),
            board: board.clone(),
            backoff: launch.backoff,
            stop: stop.clone(),
            grace_ms: grace_ms.clone(),
        });
        let restart_policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());
        let writer = StatusWriter {
            api: Api::namespaced(launch.client.clone(), &namespace),
            name: launch.pod.name_any(),
            addresses: launch.addresses.clone(),
            started: now(),
        };
        let task = tokio::spawn(run_pod(run, plans, main_plans, restart_policy, writer));
        self.pods.lock().expect("lock").insert(
            uid,
            PodWorker {
                stop,
                grace_ms,
                task,
                forwarder,
                board,
                placements,
                pod_dir,
                mount_points,
            },
        );
        Ok(())
    }

    pub(crate) fn runs(&self, uid: &str) -> bool {
        self.pods.lock().expect("lock").contains_key(uid)
    }

    /// Stops the pod's containers: SIGTERM, SIGKILL after `grace` (default: the pod's
    /// terminationGracePeriodSeconds). Unknown pods are fine.
    pub(crate) async fn stop(&self, uid: &str, grace: Option<Duration>) {
        let worker = self.pods.lock().expect("lock").remove(uid);
        let Some(worker) = worker else {
            return;
        };
        if let Some(grace) = grace {
            worker
                .grace_ms
                .store(grace.as_millis() as u64, Ordering::Relaxed);
        }
        worker.stop.cancel();
        if let Err(e) = worker.task.await {
            tracing::warn!(uid, error = %e, "a pod's container task ended badly");
        }
        if let Some(forwarder) = worker.forwarder {
            forwarder.abort();
        }
        self.mount_points.release(&worker.mount_points);
        // emptyDir contents go with the pod; its logs stay for post-mortems (and tests).
        if let Err(e) = std::fs::remove_dir_all(worker.pod_dir.join("volumes")) {
            tracing::debug!(uid, error = %e, "removing the pod's volumes");
        }
    }

    /// Stops every process pod (at shutdown), all at once.
    pub(crate) async fn stop_all(&self) {
        let uids: Vec<String> = self.pods.lock().expect("lock").keys().cloned().collect();
        futures::future::join_all(uids.iter().map(|uid| self.stop(uid, None))).await;
    }

    /// Where `container` of pod `uid` runs (for `kubectl exec`).
    pub(crate) fn placement(&self, uid: &str, container: &str) -> Option<Placement> {
        let pods = self.pods.lock().expect("lock");
        pods.get(uid)?.placements.get(container).cloned()
    }

    /// The container's current run (its restart count) and whether it is running now.
    pub(crate) fn current_run(&self, uid: &str, container: &str) -> Option<(u32, bool)> {
        let pods = self.pods.lock().expect("lock");
        let board = pods.get(uid)?.board.clone();
        drop(pods);
        board.current_run(container)
    }
}

/// What every container of the pod gets: `PATH`, `HOSTNAME`, and API access (a kubeconfig
/// in the pod directory plus the in-cluster variables).
fn base_env(launch: &Launch, pod_dir: &std::path::Path) -> Result<Vec<(String, String)>, String> {
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    let mut env = vec![
        ("PATH".to_string(), path),
        ("HOSTNAME".to_string(), launch.pod.name_any()),
    ];
    if let Some(api) = launch.api_server {
        let namespace = launch.pod.namespace().unwrap_or_default();
        let kubeconfig = pod_files::write_kubeconfig(pod_dir, api, &namespace)
            .map_err(|e| format!("writing the pod's kubeconfig: {e}"))?;
        env.extend([
            ("KUBECONFIG".to_string(), kubeconfig.display().to_string()),
            ("KUBERNETES_SERVICE_HOST".to_string(), api.ip().to_string()),
            (
                "KUBERNETES_SERVICE_PORT".to_string(),
                api.port().to_string(),
            ),
        ]);
    }
    Ok(env)
}

/// Init containers then containers, each with its argv, environment and mounts.
async fn plan_containers(
    launch: &Launch,
    volumes: &BTreeMap<String, PathBuf>,
    base_env: &[(String, String)],
) -> Result<Vec<ContainerPlan>, String> {
    let pod_ip = launch
        .addresses
        .pod_ips
        .first()
        .and_then(|ip| ip.parse().ok())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let mut plans = Vec::new();
    for container in super::workloads::all_containers(&launch.pod) {
        let env = pod_files::container_env(
            &launch.client,
            &launch.pod,
            container,
            &launch.addresses,
            base_env,
        )
        .await
        .map_err(|e| e.to_string())?;
        let binds = pod_files::container_binds(container, volumes).map_err(|e| e.to_string())?;
        let argv = launch.runtime.argv(container).map(|argv| {
            argv.iter()
                .map(|a| pod_files::expand(a, &env))
                .collect::<Vec<_>>()
        });
        plans.push(ContainerPlan {
            container: container.clone(),
            argv,
            placement: Placement {
                node: launch.node.clone(),
                netns: launch.netns.clone(),
                pod_ip,
                binds,
                env,
            },
        });
    }
    Ok(plans)
}

/// A listener on the API server's address inside `netns`, forwarding to it.
fn forward_api_into(netns: &std::path::Path, api: SocketAddr) -> Result<JoinHandle<()>, String> {
    let listener = in_netns(netns, move || {
        let listener = std::net::TcpListener::bind(api)?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    })
    .and_then(tokio::net::TcpListener::from_std)
    .map_err(|e| format!("forwarding the API server into the pod: {e}"))?;
    Ok(tokio::spawn(super::forward_api(listener, api)))
}

/// The pod task: init containers one after the other, then all containers.
async fn run_pod(
    run: Arc<PodRun>,
    init: Vec<ContainerPlan>,
    main: Vec<ContainerPlan>,
    restart_policy: String,
    writer: StatusWriter,
) {
    let writing = tokio::spawn(writer.run(run.board.clone(), run.stop.clone()));
    // An init container is retried until it succeeds, unless the pod never restarts.
    let init_policy = if restart_policy == "Never" {
        "Never"
    } else {
        "OnFailure"
    };
    let mut initialized = true;
    for plan in init {
        if plan.argv.is_none() {
            // An unmapped init container has nothing to run: it has done its job.
            run.board
                .set_terminated(&plan.container.name, 0, "Completed", now());
            continue;
        }
        match run_container(&run, plan, init_policy).await {
            Some(0) => continue,
            Some(_) => run.board.update(|b| b.failed = true),
            None => {}
        }
        initialized = false;
        break;
    }
    if initialized {
        run.board.update(|b| b.initialized = true);
        let mut containers = JoinSet::new();
        for plan in main {
            let run = run.clone();
            let policy = restart_policy.clone();
            containers.spawn(async move { run_container(&run, plan, &policy).await });
        }
        while containers.join_next().await.is_some() {}
    }
    // Nothing restarts any more: the writer finishes once the pod is stopped.
    let _ = writing.await;
}

/// How a run of a container ended.
enum RunEnd {
    Exited(ExitStatus),
    Unhealthy(String),
    Stopped,
}

/// Runs `plan` until it should no longer restart (its last exit code) or the pod is stopped
/// (`None`).
async fn run_container(run: &PodRun, plan: ContainerPlan, policy: &str) -> Option<i32> {
    let name = plan.container.name.clone();
    let Some(argv) = plan.argv.clone() else {
        run.board.set_running(&name, 0, true, true);
        run.stop.cancelled().await;
        return None;
    };
    let mut restarts = 0u32;
    let mut failures = 0u32;
    loop {
        let started = Instant::now();
        let started_at = now();
        let end = match spawn(run, &plan, &argv, restarts) {
            Ok(mut child) => {
                // Taken now: once reaped, the child no longer knows its pid.
                let group = child.id().map(|pid| Pid::from_raw(pid as i32));
                let startup_done = plan.container.startup_probe.is_none();
                let ready = startup_done && plan.container.readiness_probe.is_none();
                run.board.set_running(&name, restarts, startup_done, ready);
                run.event("Normal", "Started", &format!("Started container {name}"))
                    .await;
                let probing = run.stop.child_token();
                let (unhealthy, mut unhealthy_rx) = mpsc::channel(1);
                spawn_probes(run, &plan, &probing, unhealthy);
                let end = tokio::select! {
                    status = child.wait() => match status {
                        Ok(status) => RunEnd::Exited(status),
                        Err(e) => RunEnd::Unhealthy(format!("waiting for the process: {e}")),
                    },
                    Some(reason) = unhealthy_rx.recv() => RunEnd::Unhealthy(reason),
                    _ = run.stop.cancelled() => RunEnd::Stopped,
                };
                probing.cancel();
                let status = match &end {
                    RunEnd::Exited(status) => Some(*status),
                    _ => terminate(&mut child, run.grace()).await,
                };
                if let Some(group) = group {
                    // What is left of the container once its main process ended goes too.
                    let _ = killpg(group, Signal::SIGKILL);
                }
                let code = status.map_or(137, exit_code);
                let reason = if code == 0 { "Completed" } else { "Error" };
                if let RunEnd::Unhealthy(why) = &end {
                    tracing::info!(pod = %run.pod_name, container = %name, reason = %why, "killing an unhealthy container");
                    run.event("Warning", "Unhealthy", why).await;
                    let message = format!("Container {name} failed its probe, will be restarted");
                    run.event("Normal", "Killing", &message).await;
                }
                run.board.set_terminated(&name, code, reason, started_at);
                if matches!(end, RunEnd::Stopped) {
                    return None;
                }
                code
            }
            Err(reason) => {
                tracing::warn!(pod = %run.pod_name, container = %name, %reason, "starting a container");
                run.board.set_waiting(&name, "RunContainerError", &reason);
                run.event("Warning", "Failed", &format!("Error: {reason}"))
                    .await;
                128
            }
        };
        let restart = match policy {
            "Never" => false,
            "OnFailure" => end != 0,
            _ => true,
        };
        if !restart {
            run.board.update(|b| {
                if let Some(r) = b.record(&name) {
                    r.done = true
                }
            });
            return Some(end);
        }
        // A run that lasted well past the longest back-off was not a crash loop.
        if started.elapsed() > run.backoff.max * 2 {
            failures = 0;
        }
        failures += 1;
        let delay = run.backoff.after(failures);
        let message = format!(
            "back-off {delay:?} restarting failed container={name} pod={}",
            run.pod_name
        );
        if end != 0 {
            run.board.set_waiting(&name, "CrashLoopBackOff", &message);
            run.event(
                "Warning",
                "BackOff",
                &format!("Back-off restarting failed container {name}"),
            )
            .await;
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = run.stop.cancelled() => return None,
        }
        restarts += 1;
    }
}

fn spawn(
    run: &PodRun,
    plan: &ContainerPlan,
    argv: &[String],
    restart: u32,
) -> Result<tokio::process::Child, String> {
    let [program, args @ ..] = argv else {
        return Err("empty command".into());
    };
    let log_path = pod_files::log_path(&run.pod_dir, &plan.container.name, restart);
    if let Some(dir) = log_path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let log = std::fs::File::create(&log_path)
        .map_err(|e| format!("creating {}: {e}", log_path.display()))?;
    let err_log = log.try_clone().map_err(|e| e.to_string())?;
    let mut command = plan.placement.command(program)?;
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err_log);
    if let Some(dir) = plan
        .container
        .working_dir
        .as_deref()
        .filter(|d| !d.is_empty())
    {
        command.current_dir(dir);
    }
    let child = command
        .spawn()
        .map_err(|e| format!("exec {program}: {e}"))?;
    tracing::info!(pod = %run.pod_name, container = %plan.container.name, pid = ?child.id(), restart, "container started");
    Ok(child)
}

/// The probe loops of one run: startup first (until it passes), then readiness and liveness.
fn spawn_probes(
    run: &PodRun,
    plan: &ContainerPlan,
    probing: &CancellationToken,
    unhealthy: mpsc::Sender<String>,
) {
    let container = Arc::new(plan.container.clone());
    let placement = Arc::new(plan.placement.clone());
    let board = run.board.clone();
    let stop = probing.clone();
    let name = plan.container.name.clone();
    tokio::spawn(async move {
        // Probes until a verdict that `ends` accepts: (verdict, why the last attempt failed).
        let probe_loop = |kind: &'static str, probe: Probe, ends: fn(bool) -> bool| {
            let container = container.clone();
            let placement = placement.clone();
            async move {
                let timing = ProbeTiming::of(&probe);
                tokio::time::sleep(timing.initial_delay).await;
                let mut streak = ProbeStreak::default();
                loop {
                    let result = probes::check(&probe, &container, &placement).await;
                    if let Err(why) = &result {
                        tracing::debug!(container = %container.name, kind, %why, "probe failed");
                    }
                    match streak.record(result.is_ok(), &timing) {
                        Some(verdict) if ends(verdict) => return (verdict, result.err()),
                        _ => tokio::time::sleep(timing.period).await,
                    }
                }
            }
        };
        let run_probes = async {
            if let Some(probe) = container.startup_probe.clone() {
                if let (false, why) = probe_loop("startup", probe, |_| true).await {
                    let _ = unhealthy
                        .send(format!("Startup probe failed: {}", why.unwrap_or_default()))
                        .await;
                    return;
                }
                board.update(|b| {
                    if let Some(r) = b.record(&name) {
                        r.started = true;
                        r.ready = container.readiness_probe.is_none();
                    }
                });
            }
            let readiness = async {
                let Some(probe) = container.readiness_probe.clone() else {
                    return std::future::pending().await;
                };
                let timing = ProbeTiming::of(&probe);
                tokio::time::sleep(timing.initial_delay).await;
                let mut streak = ProbeStreak::default();
                loop {
                    let ok = probes::check(&probe, &container, &placement).await.is_ok();
                    if let Some(ready) = streak.record(ok, &timing) {
                        board.update(|b| {
                            if let Some(r) = b.record(&name) {
                                r.ready = ready;
                            }
                        });
                    }
                    tokio::time::sleep(timing.period).await;
                }
            };
            let liveness = async {
                let Some(probe) = container.liveness_probe.clone() else {
                    return std::future::pending().await;
                };
                let (_, why) = probe_loop("liveness", probe, |healthy| !healthy).await;
                let _ = unhealthy
                    .send(format!(
                        "Liveness probe failed: {}",
                        why.unwrap_or_default()
                    ))
                    .await;
            };
            tokio::join!(readiness, liveness);
        };
        tokio::select! {
            _ = run_probes => {}
            _ = stop.cancelled() => {}
        }
    });
}

impl PodRun {
    fn grace(&self) -> Duration {
        Duration::from_millis(self.grace_ms.load(Ordering::Relaxed))
    }

    async fn event(&self, kind: &str, reason: &str, message: &str) {
        record_pod_event(
            &self.client,
            &self.pod,
            Some(&self.node),
            kind,
            reason,
            message,
        )
        .await;
    }
}

/// SIGTERM to the process group, SIGKILL after `grace`; the exit status if it was reaped.
async fn terminate(child: &mut tokio::process::Child, grace: Duration) -> Option<ExitStatus> {
    let Some(pid) = child.id() else {
        return child.wait().await.ok();
    };
    // As a container runtime does: SIGTERM to the container's main process only (its
    // children are its business), SIGKILL after the grace period; once the main process is
    // gone, whatever it left behind goes with it (the end of a container's PID namespace).
    let main = Pid::from_raw(pid as i32);
    let _ = kill(main, Signal::SIGTERM);
    let status = match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status.ok(),
        Err(_) => {
            let _ = killpg(main, Signal::SIGKILL);
            child.wait().await.ok()
        }
    };
    let _ = killpg(main, Signal::SIGKILL);
    status
}

/// Exit code as kubelet reports it (128 + signal for a killed process).
fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(128)
}

fn now() -> Value {
    serde_json::to_value(Time(Timestamp::now())).expect("a Time serializes")
}

/// The state of every container of a pod, as its status shows it.
pub(crate) struct StatusBoard {
    state: Mutex<BoardState>,
    changed: Notify,
}

struct BoardState {
    init: Vec<ContainerRecord>,
    main: Vec<ContainerRecord>,
    initialized: bool,
    /// An init container failed and will not be retried.
    failed: bool,
    /// Condition type → (status, lastTransitionTime).
    conditions: BTreeMap<&'static str, (bool, Value)>,
}

struct ContainerRecord {
    name: String,
    image: String,
    restart_count: u32,
    state: Value,
    last_state: Value,
    running: bool,
    ready: bool,
    started: bool,
    /// Terminated and not to be restarted.
    done: bool,
    exit_code: Option<i32>,
}

impl BoardState {
    fn record(&mut self, name: &str) -> Option<&mut ContainerRecord> {
        self.init
            .iter_mut()
            .chain(self.main.iter_mut())
            .find(|r| r.name == name)
    }

    fn phase(&self) -> &'static str {
        if self.failed {
            return "Failed";
        }
        if !self.initialized {
            return "Pending";
        }
        if !self.main.is_empty() && self.main.iter().all(|r| r.done) {
            return match self.main.iter().all(|r| r.exit_code == Some(0)) {
                true => "Succeeded",
                false => "Failed",
            };
        }
        "Running"
    }
}

impl StatusBoard {
    fn new(init: &[ContainerPlan], main: &[ContainerPlan]) -> StatusBoard {
        let records = |plans: &[ContainerPlan]| {
            plans
                .iter()
                .map(|p| ContainerRecord {
                    name: p.container.name.clone(),
                    image: p.container.image.clone().unwrap_or_default(),
                    restart_count: 0,
                    state: json!({"waiting": {"reason": "PodInitializing"}}),
                    last_state: json!({}),
                    running: false,
                    ready: false,
                    started: false,
                    done: false,
                    exit_code: None,
                })
                .collect()
        };
        StatusBoard {
            state: Mutex::new(BoardState {
                init: records(init),
                main: records(main),
                initialized: false,
                failed: false,
                conditions: BTreeMap::new(),
            }),
            changed: Notify::new(),
        }
    }

    fn update(&self, change: impl FnOnce(&mut BoardState)) {
        change(&mut self.state.lock().expect("lock"));
        self.changed.notify_one();
    }

    fn set_running(&self, name: &str, restarts: u32, started: bool, ready: bool) {
        self.update(|b| {
            if let Some(r) = b.record(name) {
                r.restart_count = restarts;
                r.state = json!({"running": {"startedAt": now()}});
                r.running = true;
                r.ready = ready;
                r.started = started;
            }
        });
    }

    fn set_terminated(&self, name: &str, code: i32, reason: &str, started_at: Value) {
        self.update(|b| {
            if let Some(r) = b.record(name) {
                let terminated = json!({"terminated": {
                    "exitCode": code, "reason": reason, "startedAt": started_at, "finishedAt": now()}});
                r.last_state = terminated.clone();
                r.state = terminated;
                r.running = false;
                r.ready = false;
                r.started = false;
                r.exit_code = Some(code);
            }
        });
    }

    fn set_waiting(&self, name: &str, reason: &str, message: &str) {
        self.update(|b| {
            if let Some(r) = b.record(name) {
                r.state = json!({"waiting": {"reason": reason, "message": message}});
            }
        });
    }

    fn current_run(&self, name: &str) -> Option<(u32, bool)> {
        let mut state = self.state.lock().expect("lock");
        let r = state.record(name)?;
        Some((r.restart_count, r.running))
    }

    /// The status subresource as kubelet would write it now.
    fn render(&self, addresses: &PodAddresses, started: &Value) -> Value {
        let mut b = self.state.lock().expect("lock");
        let containers_ready = b.initialized && b.main.iter().all(|r| r.ready);
        let wanted = [
            ("PodReadyToStartContainers", true),
            ("Initialized", b.initialized),
            ("ContainersReady", containers_ready),
            ("Ready", containers_ready),
            ("PodScheduled", true),
        ];
        let mut conditions = Vec::new();
        for (kind, status) in wanted {
            let entry = b.conditions.entry(kind).or_insert_with(|| (status, now()));
            if entry.0 != status {
                *entry = (status, now());
            }
            conditions.push(
                json!({"type": kind, "status": if status { "True" } else { "False" },
                                   "lastTransitionTime": entry.1}),
            );
        }
        let statuses = |records: &[ContainerRecord]| -> Vec<Value> {
            records
                .iter()
                .map(|r| {
                    json!({"name": r.name, "image": r.image, "imageID": "",
                    "containerID": format!("kube-sim://{}", r.name),
                    "ready": r.ready, "started": r.started, "restartCount": r.restart_count,
                    "state": r.state, "lastState": r.last_state})
                })
                .collect()
        };
        let pod_ips: Vec<Value> = addresses
            .pod_ips
            .iter()
            .map(|ip| json!({"ip": ip}))
            .collect();
        json!({"status": {
            "phase": b.phase(),
            "hostIP": addresses.host_ip,
            "hostIPs": [{"ip": addresses.host_ip}],
            "podIP": addresses.pod_ips.first(),
            "podIPs": pod_ips,
            "startTime": started,
            "conditions": conditions,
            "initContainerStatuses": statuses(&b.init),
            "containerStatuses": statuses(&b.main),
        }})
    }
}

/// Writes the board into the pod's status whenever it changes.
struct StatusWriter {
    api: Api<Pod>,
    name: String,
    addresses: PodAddresses,
    started: Value,
}

impl StatusWriter {
    async fn run(self, board: Arc<StatusBoard>, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = board.changed.notified() => {}
                _ = stop.cancelled() => return,
            }
            let status = board.render(&self.addresses, &self.started);
            let written = self
                .api
                .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&status))
                .await;
            if let Err(e) = written {
                tracing::warn!(pod = %self.name, error = %e, "writing the pod status");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, done: bool, exit_code: Option<i32>) -> ContainerRecord {
        ContainerRecord {
            name: name.into(),
            image: String::new(),
            restart_count: 0,
            state: json!({}),
            last_state: json!({}),
            running: !done,
            ready: false,
            started: false,
            done,
            exit_code,
        }
    }

    fn board(initialized: bool, failed: bool, main: Vec<ContainerRecord>) -> BoardState {
        BoardState {
            init: Vec::new(),
            main,
            initialized,
            failed,
            conditions: BTreeMap::new(),
        }
    }

    #[test]
    fn phase_follows_init_containers_and_finished_containers() {
        assert_eq!(
            board(false, false, vec![record("a", false, None)]).phase(),
            "Pending"
        );
        assert_eq!(
            board(false, true, vec![record("a", false, None)]).phase(),
            "Failed"
        );
        assert_eq!(
            board(true, false, vec![record("a", false, None)]).phase(),
            "Running"
        );
        let finished = |code| vec![record("a", true, Some(0)), record("b", true, Some(code))];
        assert_eq!(board(true, false, finished(0)).phase(), "Succeeded");
        assert_eq!(board(true, false, finished(1)).phase(), "Failed");
        // One container still running (or to be restarted) keeps the pod Running.
        let mixed = vec![record("a", true, Some(1)), record("b", false, None)];
        assert_eq!(board(true, false, mixed).phase(), "Running");
    }
}
