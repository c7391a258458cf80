//! What the kubectl-driven and process tests share: running the real `kubectl` against a
//! kube-sim server with its own kubeconfig and cache, and reading what it prints; finding and
//! checking the processes of `sim-workload` containers.

use std::path::{Path, PathBuf};

use kube_sim::ApiServer;

pub struct Kubectl {
    kubeconfig: PathBuf,
    cache: PathBuf,
}

pub struct Outcome {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Kubectl {
    pub async fn setup(server: &ApiServer, dir: &Path) -> Self {
        let kubeconfig = dir.join("kubeconfig");
        server
            .write_kubeconfig(&kubeconfig)
            .expect("write kubeconfig");
        Self {
            kubeconfig,
            cache: dir.join("cache"),
        }
    }

    pub async fn run(&self, args: &[&str]) -> Outcome {
        self.run_with_input(args, None).await
    }

    pub async fn run_with_input(&self, args: &[&str], input: Option<&str>) -> Outcome {
        use tokio::io::AsyncWriteExt;
        let mut cmd = tokio::process::Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(args);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd
            .spawn()
            .expect("kubectl is installed (hack/test.sh installs it)");
        let mut stdin = child.stdin.take().expect("stdin is piped");
        if let Some(text) = input {
            stdin.write_all(text.as_bytes()).await.expect("write stdin");
        }
        drop(stdin);
        let out = child.wait_with_output().await.expect("kubectl runs");
        Outcome {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub async fn must(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(
            out.ok,
            "kubectl {args:?} failed:\n{}\n{}",
            out.stdout, out.stderr
        );
        out.stdout
    }

    pub async fn yaml(&self, args: &[&str]) -> serde_yaml::Value {
        let mut full = args.to_vec();
        full.extend(["-o", "yaml"]);
        serde_yaml::from_str(&self.must(&full).await).expect("kubectl prints YAML")
    }
}

/// The pid a `sim-workload` process printed first (`started pid N`) in its log.
pub fn pid_in(log: &str) -> i32 {
    log.lines()
        .find_map(|l| l.strip_prefix("started pid "))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid in the log: {log}"))
}

/// Whether `pid` is a running process (not gone, not a zombie).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| !stat.contains(") Z "))
        .unwrap_or(false)
}

/// Whether `pid` runs in the network namespace `netns` (a bind-mounted namespace file).
pub fn same_netns(pid: i32, netns: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let of_pid = std::fs::metadata(format!("/proc/{pid}/ns/net")).expect("pid netns");
    let expected = std::fs::metadata(netns).expect("netns");
    (of_pid.dev(), of_pid.ino()) == (expected.dev(), expected.ino())
}

/// Asserts that no network namespace of a simulator (`netns_prefix`) and no process mentioning
/// its state directory outlived its shutdown.
pub fn assert_nothing_left(netns_prefix: &str, state_dir: &str) {
    assert!(
        kube_sim::nodes::node::netns_with_prefix(netns_prefix).is_empty(),
        "namespaces left behind"
    );
    let left = kube_sim::nodes::node::processes_mentioning(state_dir);
    assert!(left.is_empty(), "processes left behind: {left:?}");
}

/// An API server, simulated nodes, the workload controllers and kubectl, for the tests that
/// drive workloads through kubectl.
pub struct Bed {
    pub server: ApiServer,
    pub sim: kube_sim::nodes::Simulator,
    pub controllers: kube_sim::controllers::WorkloadControllers,
    pub kubectl: Kubectl,
    pub dir: tempfile::TempDir,
}

impl Bed {
    /// `nodes` nodes, namespace `default`, a short retry backoff (1 s at most) unless
    /// `adjust` changes it or anything else of the simulator's configuration.
    pub async fn start(
        nodes: usize,
        adjust: impl FnOnce(&mut kube_sim::nodes::SimulatorConfig),
    ) -> Bed {
        use k8s_openapi::api::core::v1::Namespace;
        use kube::api::{Api, PostParams};
        let server = ApiServer::start(std::net::SocketAddr::from((
            std::net::Ipv4Addr::LOCALHOST,
            0,
        )))
        .await
        .expect("API server");
        let client = server.client().expect("client");
        let default: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "default"}}))
                .expect("ns");
        let _ = Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &default)
            .await;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = kube_sim::nodes::SimulatorConfig::new(nodes, dir.path().join("nodes"));
        config.backoff.initial = std::time::Duration::from_millis(200);
        config.backoff.max = std::time::Duration::from_secs(1);
        config.api_server = Some(server.addr());
        adjust(&mut config);
        let sim = kube_sim::nodes::Simulator::start(client.clone(), config)
            .await
            .expect("simulator");
        let controllers = kube_sim::controllers::WorkloadControllers::start(client);
        let kubectl = Kubectl::setup(&server, dir.path()).await;
        Bed {
            server,
            sim,
            controllers,
            kubectl,
            dir,
        }
    }

    /// Shuts everything down and checks no namespace or process of it is left.
    pub async fn down(self) {
        let prefix = self.sim.netns_prefix().to_string();
        let state_dir = self.dir.path().display().to_string();
        self.controllers.shutdown().await;
        self.sim.shutdown().await;
        self.server.shutdown().await;
        assert_nothing_left(&prefix, &state_dir);
    }

    pub async fn apply(&self, manifest: &str) {
        let out = self
            .kubectl
            .run_with_input(&["apply", "-f", "-"], Some(manifest))
            .await;
        assert!(out.ok, "kubectl apply: {}", out.stderr);
    }

    /// What `kubectl get <target> -o jsonpath=<path>` prints.
    pub async fn field(&self, target: &[&str], path: &str) -> String {
        let jsonpath = format!("jsonpath={path}");
        let mut args = vec!["get"];
        args.extend(target);
        args.extend(["-o", jsonpath.as_str()]);
        self.kubectl.must(&args).await
    }

    /// Poll until `kubectl get <target> -o jsonpath=<path>` prints `expected`.
    pub async fn until(&self, target: &[&str], path: &str, expected: &str) {
        let jsonpath = format!("jsonpath={path}");
        let mut args = vec!["get"];
        args.extend(target);
        args.extend(["-o", jsonpath.as_str()]);
        self.eventually(&args, |o| o == expected).await;
    }

    /// Poll until `check` holds on what kubectl prints for `args` (the controllers and the
    /// kubelet act asynchronously; no timing is asserted, only an upper bound to fail on).
    pub async fn eventually(&self, args: &[&str], check: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        for _ in 0..240 {
            let out = self.kubectl.run(args).await;
            last = format!("{}{}", out.stdout, out.stderr);
            if out.ok && check(&out.stdout) {
                return out.stdout;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        panic!("kubectl {args:?} never satisfied the check; last output:\n{last}");
    }
}
