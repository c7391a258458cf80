//! A cluster installed the way a user installs kube-ovn: kube-sim (API server, nodes running
//! mapped images as processes, workload controllers), `kube-ovn crd` and `kube-ovn render`
//! applied with the real `kubectl`, then a `KubeOvn` object. Shared by `tests/install_e2e.rs`
//! and `benches/install.rs`. Root: real namespaces, OVS and OVN.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams};
use kube_ovn::api::kubeovn::KubeOvn;
use kube_sim::apiserver::ApiServer;
use kube_sim::controllers::WorkloadControllers;
use kube_sim::nodes::{ContainerRuntime, Simulator, SimulatorConfig};

/// The image the simulated nodes run as this build's binary.
pub const IMAGE: &str = "kube-ovn:dev";
/// The namespace of the install.
pub const NAMESPACE: &str = "kube-system";
/// Processes of ours that must be gone from a node after an uninstall.
const OUR_PROGRAMS: [&str; 5] = [
    "ovsdb-server",
    "ovs-vswitchd",
    "ovn-controller",
    "ovn-northd",
    "kube-ovn",
];

pub struct Installed {
    pub api: ApiServer,
    pub client: kube::Client,
    pub sim: Option<Simulator>,
    pub controllers: Option<WorkloadControllers>,
    pub dir: tempfile::TempDir,
    /// Node names, `node-1`…
    pub nodes: Vec<String>,
}

impl Installed {
    /// kube-sim with `nodes` nodes, the CRDs (from `kube-ovn crd`) and Multus's NAD CRD.
    pub async fn up(nodes: usize) -> Installed {
        let api = ApiServer::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await
            .expect("kube-sim starts");
        let client = api.client().expect("kube client");
        let dir = tempfile::tempdir().expect("temp dir");
        api.write_kubeconfig(&dir.path().join("kubeconfig"))
            .expect("kubeconfig");
        let mut config = SimulatorConfig::new(nodes, dir.path().join("nodes"));
        config.api_server = Some(api.addr());
        let entry = format!("{IMAGE}={}", env!("CARGO_BIN_EXE_kube-ovn"));
        config.runtime = ContainerRuntime::from_entries([entry.as_str()]).expect("image map");
        let sim = Simulator::start(client.clone(), config)
            .await
            .expect("simulator");
        let controllers = WorkloadControllers::start(client.clone());
        let names = sim.nodes().iter().map(|n| n.name.clone()).collect();
        let installed = Installed {
            api,
            client,
            sim: Some(sim),
            controllers: Some(controllers),
            dir,
            nodes: names,
        };
        let crds = installed.kube_ovn(&["crd"]);
        installed.kubectl_stdin(&["apply", "-f", "-"], &crds);
        installed.kubectl_stdin(
            &["apply", "-f", "-"],
            &serde_yaml::to_string(&kube_sim::nodes::nad::crd()).expect("NAD CRD as YAML"),
        );
        installed
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    fn sim(&self) -> &Simulator {
        self.sim.as_ref().expect("the simulator runs")
    }

    /// The name of a node's network namespace.
    pub fn node_netns(&self, node: &str) -> String {
        self.sim()
            .node(node)
            .expect("a node of the bed")
            .netns
            .clone()
    }

    /// A node-private directory as the host sees it (`/opt/cni/bin` → its state dir copy).
    pub fn node_path(&self, node: &str, path: &str) -> PathBuf {
        self.sim()
            .node(node)
            .expect("a node of the bed")
            .host_path(Path::new(path))
    }

    /// Runs this build's `kube-ovn` with `args`; its stdout.
    pub fn kube_ovn(&self, args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_kube-ovn"))
            .args(args)
            .output()
            .expect("run kube-ovn");
        assert!(
            out.status.success(),
            "kube-ovn {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8")
    }

    /// `kubectl ARGS` against the bed.
    pub fn kubectl_output(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new("kubectl")
            .env("KUBECONFIG", self.kubeconfig())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        let mut input = child.stdin.take().expect("stdin");
        if let Some(text) = stdin {
            input
                .write_all(text.as_bytes())
                .expect("write kubectl's stdin");
        }
        drop(input);
        child.wait_with_output().expect("kubectl finishes")
    }

    /// `kubectl ARGS` that must succeed; its stdout.
    pub fn kubectl(&self, args: &[&str]) -> String {
        self.kubectl_stdin(args, "")
    }

    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> String {
        let out = self.kubectl_output(args, Some(stdin));
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The operator as `kube-ovn render | kubectl apply -f -` installs it, Available.
    pub async fn install_operator(&self) {
        let manifests = self.kube_ovn(&["render", "--image", IMAGE, "--no-crds", "--no-sample"]);
        self.kubectl_stdin(&["apply", "-f", "-"], &manifests);
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), NAMESPACE);
        eventually(
            "the operator Deployment available",
            Duration::from_secs(120),
            || async {
                let d = deployments.get("kube-ovn-operator").await.ok()?;
                let status = d.status?;
                (status.available_replicas? >= 1).then_some(())
            },
        )
        .await;
    }

    /// Each node's tunnel address (kube-sim leaves its tunnel NIC without one), as a Node
    /// annotation the node role reads.
    pub fn annotate_tunnel_addresses(&self) {
        for node in &self.nodes {
            let ip = self.sim().node(node).expect("node").tunnel_ip;
            let annotation = format!("kube-ovn.io/tunnel-address={ip}/24");
            self.kubectl(&["annotate", "--overwrite", "node", node, &annotation]);
        }
    }

    /// `kubectl apply` of the KubeOvn `kube-ovn` with this spec (YAML lines under `spec:`).
    pub fn apply_kube_ovn(&self, spec: &str) {
        let manifest = format!(
            "apiVersion: operator.kubeovn.io/v1alpha1\nkind: KubeOvn\nmetadata:\n  name: kube-ovn\nspec:\n{spec}"
        );
        self.kubectl_stdin(&["apply", "-f", "-"], &manifest);
    }

    /// Waits for `Available=True` on the KubeOvn; how long it took from `since`.
    pub fn wait_available(&self, since: Instant) -> Duration {
        let out = self.kubectl_output(
            &[
                "wait",
                "--for=condition=Available",
                "kubeovn/kube-ovn",
                "--timeout=180s",
            ],
            None,
        );
        if !out.status.success() {
            panic!(
                "KubeOvn not Available: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.diagnostics()
            );
        }
        since.elapsed()
    }

    /// What a person would look at when the install does not come up.
    pub fn diagnostics(&self) -> String {
        let mut text = String::new();
        for args in [
            &["get", "kubeovn", "kube-ovn", "-o", "yaml"][..],
            &["get", "pods", "-A", "-o", "wide"][..],
        ] {
            let out = self.kubectl_output(args, None);
            text.push_str(&String::from_utf8_lossy(&out.stdout));
        }
        for workload in [
            "deployment/kube-ovn-operator",
            "statefulset/ovn-central",
            "daemonset/ovs-ovn",
            "daemonset/kube-ovn-cni",
        ] {
            let out =
                self.kubectl_output(&["logs", "-n", NAMESPACE, workload, "--tail", "30"], None);
            text.push_str(&format!(
                "--- {workload}\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        text
    }

    /// The NB address the operator publishes in the KubeOvn status.
    pub async fn nb_address(&self) -> String {
        let api: Api<KubeOvn> = Api::all(self.client.clone());
        let obj = api.get("kube-ovn").await.expect("the KubeOvn");
        obj.status
            .and_then(|s| s.central)
            .map(|c| c.nb_address)
            .expect("central endpoints in the status")
    }

    /// `ovn-nbctl ARGS` from inside the first node (NB listens on the nodes' addresses).
    pub async fn nbctl(&self, args: &[&str]) -> String {
        let db = format!("--db={}", self.nb_address().await);
        let mut argv = vec!["ovn-nbctl", "--timeout=10", db.as_str()];
        argv.extend_from_slice(args);
        let out = self.in_node(&self.nodes[0], &argv);
        assert!(
            out.status.success(),
            "ovn-nbctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `argv` in a node's network namespace.
    pub fn in_node(&self, node: &str, argv: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.node_netns(node)])
            .args(argv)
            .output()
            .expect("ip netns exec")
    }

    /// Deletes the KubeOvn and waits until it is gone (the finalizer ran); how long it took.
    pub async fn uninstall(&self) -> Duration {
        let started = Instant::now();
        let api: Api<KubeOvn> = Api::all(self.client.clone());
        api.delete("kube-ovn", &DeleteParams::default())
            .await
            .expect("delete the KubeOvn");
        eventually("the KubeOvn gone", Duration::from_secs(180), || async {
            api.get_opt("kube-ovn").await.ok()?.is_none().then_some(())
        })
        .await;
        // The node roles and chassis clean up as their pods stop: wait for the pods to go.
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), NAMESPACE);
        let ours = ListParams::default().labels("app.kubernetes.io/managed-by=kube-ovn-operator");
        eventually(
            "the install's pods gone",
            Duration::from_secs(120),
            || async { pods.list(&ours).await.ok()?.items.is_empty().then_some(()) },
        )
        .await;
        started.elapsed()
    }

    /// What of ours is still on the nodes: processes in a node's network namespace, our
    /// binary in its CNI dir, OVS databases and sockets, OVS bridges and ports, veths.
    pub fn leftovers(&self) -> Vec<String> {
        let mut found = Vec::new();
        for node in &self.nodes {
            let netns = Path::new("/run/netns").join(self.node_netns(node));
            for (pid, program) in processes_in(&netns) {
                found.push(format!("{node}: process {program} ({pid})"));
            }
            let cni = self.node_path(node, "/opt/cni/bin").join("kube-ovn");
            if cni.exists() {
                found.push(format!("{node}: {}", cni.display()));
            }
            let run = self.node_path(node, "/run/openvswitch");
            for entry in std::fs::read_dir(&run).into_iter().flatten().flatten() {
                found.push(format!("{node}: {}", entry.path().display()));
            }
            let links = self.in_node(node, &["ip", "-o", "link", "show"]);
            for line in String::from_utf8_lossy(&links.stdout).lines() {
                let name = line.split(':').nth(1).unwrap_or("").trim();
                let name = name.split('@').next().unwrap_or(name);
                if is_ours(name) {
                    found.push(format!("{node}: link {name}"));
                }
            }
        }
        found
    }

    /// The last `lines` lines of every log kube-sim kept for containers named `container`
    /// (pods gone included): what to read when something was left behind.
    pub fn kept_logs(&self, container: &str, lines: usize) -> String {
        let mut text = String::new();
        for node in &self.nodes {
            let pods = self.dir.path().join("nodes").join(node).join("pods");
            for pod in std::fs::read_dir(&pods).into_iter().flatten().flatten() {
                let dir = pod.path().join("logs").join(container);
                for log in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                    let body = std::fs::read_to_string(log.path()).unwrap_or_default();
                    let all: Vec<&str> = body.lines().collect();
                    let tail = &all[all.len().saturating_sub(lines)..];
                    text.push_str(&format!(
                        "--- {}\n{}\n",
                        log.path().display(),
                        tail.join("\n")
                    ));
                }
            }
        }
        text
    }

    pub async fn shutdown(mut self) {
        if let Some(c) = self.controllers.take() {
            c.shutdown().await;
        }
        if let Some(s) = self.sim.take() {
            s.shutdown().await;
        }
    }
}

/// Links an install of ours makes on a node: OVS's bridges and datapath ports, and the
/// host ends of pod veths.
fn is_ours(link: &str) -> bool {
    ["br-int", "br-phy", "ovs-netdev", "genev_sys"]
        .iter()
        .any(|p| link.starts_with(p))
        || link.ends_with("_h")
        || link.ends_with("_p")
}

/// Our programs running in the network namespace at `netns`: (pid, program).
fn processes_in(netns: &Path) -> Vec<(i32, String)> {
    let Ok(target) = std::fs::metadata(netns) else {
        return Vec::new();
    };
    use std::os::unix::fs::MetadataExt;
    let inode = target.ino();
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(ns) = std::fs::metadata(entry.path().join("ns/net")) else {
            continue;
        };
        if ns.ino() != inode {
            continue;
        }
        let Ok(exe) = std::fs::read_link(entry.path().join("exe")) else {
            continue;
        };
        let program = exe
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if OUR_PROGRAMS.contains(&program.as_str()) {
            found.insert((pid, program));
        }
    }
    found.into_iter().collect()
}

/// Polls `probe` every 200 ms until it gives `Some`, or panics with `what` after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
