//! The operator's end-to-end test bed: kube-sim's API server in-process, our
//! CRDs and Multus's NAD CRD installed, real OVN (NB/SB/northd) from
//! `OvnSandbox`, and the `kube-ovn operator` binary as a child process (so a
//! test can SIGKILL it). Helpers wait for what a user would observe.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube_ovn::api::ip::IP;
use kube_ovn::api::subnet::Subnet;
use kube_sim::ApiServer;

use crate::support::OvnSandbox;

pub const SEED_NAD: &str = include_str!("../../hack/demo/seed/01-nad.yaml");
pub const SEED_VPC_SUBNET: &str = include_str!("../../hack/demo/seed/02-vpc-subnet.yaml");
pub const SEED_POD: &str = include_str!("../../hack/demo/seed/03-multi-network-pod.yaml");
pub const SEED_FRONTEND: &str = include_str!("../../hack/demo/seed/04-frontend.yaml");
pub const SEED_TENANTS: &str = include_str!("../../hack/demo/seed/05-tenants.yaml");
pub const SEED_MULTI_PROVIDERS: &str =
    include_str!("../../hack/demo/seed/fragment-multi-provider.yaml");
pub const SEED_STATIC_IP: &str = include_str!("../../hack/demo/seed/fragment-static-ip.yaml");

pub const WAIT: Duration = Duration::from_secs(90);

/// A NAD of ours named `name` in `default`, with the right provider.
pub fn nad_yaml(name: &str) -> String {
    format!(
        "apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  config: '{{\"cniVersion\": \"0.3.1\", \"type\": \"kube-ovn\", \"server_socket\": \"/run/openvswitch/kube-ovn-daemon.sock\", \"provider\": \"{name}.default.ovn\"}}'\n"
    )
}

pub fn vpc_yaml(name: &str) -> String {
    format!("apiVersion: kubeovn.io/v1\nkind: Vpc\nmetadata:\n  name: {name}\nspec:\n  namespaces:\n  - default\n")
}

pub fn subnet_yaml(name: &str, vpc: &str, cidr: &str, provider: &str) -> String {
    format!("apiVersion: kubeovn.io/v1\nkind: Subnet\nmetadata:\n  name: {name}\nspec:\n  vpc: {vpc}\n  cidr: \"{cidr}\"\n  provider: {provider}\n")
}

/// A pod named `name` in `default` whose networks annotation is `networks`.
pub fn pod_yaml(name: &str, networks: &str) -> String {
    let networks = serde_json::to_string(networks).unwrap();
    format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  annotations:\n    k8s.v1.cni.cncf.io/networks: {networks}\nspec:\n  containers:\n  - name: app\n    image: nginx\n")
}

/// A pod from the seed's bare `metadata:` fragment.
pub fn pod_from_fragment(name: &str, fragment: &str) -> String {
    let mut doc: serde_yaml::Value = serde_yaml::from_str(fragment).unwrap();
    doc["apiVersion"] = "v1".into();
    doc["kind"] = "Pod".into();
    doc["metadata"]["name"] = name.into();
    doc["spec"] = serde_yaml::from_str("containers:\n- name: app\n  image: nginx\n").unwrap();
    serde_yaml::to_string(&doc).unwrap()
}

pub struct Cluster {
    pub api: ApiServer,
    pub client: kube::Client,
    pub ovn: OvnSandbox,
    pub dir: tempfile::TempDir,
    pub operator: Option<Child>,
    pub status_addr: SocketAddr,
    pub restarts: usize,
    /// `--log-level` of the operator.
    pub log_level: String,
}

/// GET `path` on the status endpoint at `addr`: the whole response, or `None` if it does not
/// answer.
pub async fn status_get_at(addr: SocketAddr, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut out = String::new();
    stream.read_to_string(&mut out).await.ok()?;
    Some(out)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    /// API server with CRDs, OVN with `nodes` chassis; no operator yet.
    pub async fn up(nodes: usize) -> Cluster {
        let api = ApiServer::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await
            .expect("kube-sim starts");
        let client = api.client().expect("kube client");
        let ovn = tokio::task::spawn_blocking(move || OvnSandbox::up(nodes))
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        api.write_kubeconfig(&dir.path().join("kubeconfig"))
            .unwrap();
        let cluster = Cluster {
            api,
            client,
            ovn,
            dir,
            operator: None,
            status_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, free_port())),
            restarts: 0,
            log_level: "info,kube_ovn=debug".into(),
        };
        cluster.install_crds().await;
        cluster
    }

    pub async fn install_crds(&self) {
        let crds: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let mut all = kube_ovn::api::crds();
        all.push(kube_sim::nodes::nad::crd());
        for crd in all {
            crds.create(&PostParams::default(), &crd).await.unwrap();
        }
    }

    /// Runs the real kubectl against the cluster; its stdout.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--cache-dir")
            .arg(self.dir.path().join("kubectl-cache"))
            .args(args)
            .output()
            .expect("kubectl is installed");
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    pub fn ipam_dir(&self) -> PathBuf {
        self.dir.path().join("ipam")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir
            .path()
            .join(format!("operator-{}.log", self.restarts))
    }

    /// The `kube-ovn operator` command line for this cluster: one operator alone
    /// (`--leader-elect=false`, so a restart does not wait for its predecessor's Lease).
    pub fn operator_command(&self) -> Command {
        let mut cmd = self.operator_command_with(&self.ipam_dir(), self.status_addr);
        cmd.args(["--leader-elect", "false"]);
        cmd
    }

    /// The command line of one operator replica with its own store and status address
    /// (leader election flags left to the caller).
    pub fn operator_command_with(
        &self,
        ipam_dir: &std::path::Path,
        status_addr: SocketAddr,
    ) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kube-ovn"));
        cmd.env("KUBECONFIG", self.kubeconfig())
            .args([
                "--log-format",
                "json",
                "--log-level",
                &self.log_level,
                "operator",
                "--ovn-nb",
            ])
            .arg(self.ovn.nb_endpoint())
            .arg("--ipam-db")
            .arg(ipam_dir)
            .arg("--status-addr")
            .arg(status_addr.to_string())
            .arg("--gc-interval")
            .arg("5");
        cmd
    }

    pub fn start_operator(&mut self) {
        self.start_operator_with(&[]);
    }

    /// `start_operator` with more flags on the command line.
    pub fn start_operator_with(&mut self, extra: &[&str]) {
        self.restarts += 1;
        let log = std::fs::File::create(self.log_path()).unwrap();
        let child = self
            .operator_command()
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning kube-ovn operator");
        self.operator = Some(child);
    }

    pub fn kill_operator(&mut self) {
        if let Some(mut child) = self.operator.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = child.wait();
        }
    }

    /// The operator's log so far (every run), for failure messages.
    pub fn operator_log(&self) -> String {
        let mut out = String::new();
        for i in 1..=self.restarts {
            let path = self.dir.path().join(format!("operator-{i}.log"));
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            out.push_str(&format!(
                "--- operator run {i} (last 40 lines)\n{}\n",
                tail.join("\n")
            ));
        }
        out
    }

    /// Creates every document of `yaml`.
    pub async fn apply(&self, yaml: &str) {
        for doc in serde_yaml::Deserializer::from_str(yaml) {
            let value: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
            if value.is_null() {
                continue;
            }
            let obj: DynamicObject = serde_json::from_value(value).unwrap();
            let types = obj.types.clone().expect("apiVersion and kind");
            let gvk = GroupVersionKind::try_from(&types).unwrap();
            let plural = match gvk.kind.as_str() {
                "NetworkAttachmentDefinition" => "network-attachment-definitions".to_owned(),
                "IP" => "ips".to_owned(),
                k => format!("{}s", k.to_lowercase()),
            };
            let ar = ApiResource::from_gvk_with_plural(&gvk, &plural);
            let api: Api<DynamicObject> = match gvk.kind.as_str() {
                "Vpc" | "Subnet" | "IP" | "IPPool" => Api::all_with(self.client.clone(), &ar),
                _ => Api::namespaced_with(
                    self.client.clone(),
                    obj.metadata.namespace.as_deref().unwrap_or("default"),
                    &ar,
                ),
            };
            api.create(&PostParams::default(), &obj)
                .await
                .unwrap_or_else(|e| panic!("creating {} {:?}: {e}", gvk.kind, obj.metadata.name));
        }
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    pub async fn delete_pod(&self, name: &str) {
        self.pods()
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }

    /// Polls `check` until it returns `Some` or `WAIT` passes.
    pub async fn eventually<T, F, Fut>(&self, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(v) = check().await {
                return v;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}\n{}", self.operator_log());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The pod's annotations once `<provider>.kubernetes.io/allocated` is "true".
    pub async fn allocated(&self, pod: &str, provider: &str) -> BTreeMap<String, String> {
        let key = format!("{provider}.kubernetes.io/allocated");
        self.eventually(&format!("pod {pod} allocated on {provider}"), || async {
            let p = self.pods().get_opt(pod).await.ok()??;
            let a = p.metadata.annotations.unwrap_or_default();
            (a.get(&key).map(String::as_str) == Some("true")).then_some(a)
        })
        .await
    }

    /// Events about `name` (any kind), as (reason, note).
    pub async fn events_about(&self, name: &str) -> Vec<(String, String)> {
        let events: Api<Event> = Api::all(self.client.clone());
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect()
    }

    /// Waits for an Event about `name` with `reason`; returns its message.
    pub async fn event(&self, name: &str, reason: &str) -> String {
        self.eventually(&format!("Event {reason} about {name}"), || async {
            self.events_about(name)
                .await
                .into_iter()
                .find(|(r, _)| r == reason)
                .map(|(_, note)| note)
        })
        .await
    }

    /// Names of the LSPs with `external_ids:vendor=kube-ovn` (read with ovn-nbctl).
    pub fn nb_pod_ports(&self) -> Vec<String> {
        let out = self.ovn.nbctl(&[
            "--bare",
            "--columns=name",
            "find",
            "Logical_Switch_Port",
            "external_ids:vendor=kube-ovn",
        ]);
        let mut v: Vec<String> = out
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        v.sort();
        v
    }

    /// `addresses` of LSP `name` (ovn-nbctl).
    pub fn lsp_addresses(&self, name: &str) -> String {
        self.ovn
            .nbctl(&["lsp-get-addresses", name])
            .trim()
            .to_owned()
    }

    pub async fn subnet(&self, name: &str) -> Option<Subnet> {
        Api::<Subnet>::all(self.client.clone())
            .get_opt(name)
            .await
            .unwrap()
    }

    /// `status.v4usingIPs` of the subnet once its status exists.
    pub async fn used(&self, subnet: &str) -> i64 {
        self.subnet(subnet)
            .await
            .and_then(|s| s.status)
            .map(|s| s.v4_using_ips)
            .unwrap_or(-1)
    }

    /// Waits until the subnet's used count is `n`.
    pub async fn wait_used(&self, subnet: &str, n: i64) {
        self.eventually(&format!("subnet {subnet} using {n} addresses"), || async {
            (self.used(subnet).await == n).then_some(())
        })
        .await
    }

    pub async fn ip_crs(&self) -> Vec<IP> {
        Api::<IP>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
    }

    /// The status endpoint's `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.status_get("/metrics")
            .await
            .expect("status endpoint answers")
    }

    /// GET `path` on the status endpoint: the whole response, or `None` if it does not answer.
    pub async fn status_get(&self, path: &str) -> Option<String> {
        status_get_at(self.status_addr, path).await
    }

    /// GET `path` on the status endpoint with `token` as the bearer token, if any: the
    /// status code and the body, once the endpoint answers.
    pub async fn status_call(&self, path: &str, token: Option<&str>) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let request = format!("GET {path} HTTP/1.0\r\nHost: x\r\n{auth}\r\n");
        let response = self
            .eventually(&format!("status endpoint answering {path}"), || async {
                let mut stream = tokio::net::TcpStream::connect(self.status_addr)
                    .await
                    .ok()?;
                stream.write_all(request.as_bytes()).await.ok()?;
                let mut out = String::new();
                stream.read_to_string(&mut out).await.ok()?;
                Some(out)
            })
            .await;
        let code = response
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("an HTTP status line in {response:?}"));
        let body = response
            .split_once("\r\n\r\n")
            .map_or("", |(_, body)| body)
            .to_owned();
        (code, body)
    }

    /// The operator's process id.
    pub fn operator_pid(&self) -> Option<u32> {
        self.operator.as_ref().map(Child::id)
    }

    /// Merges `annotations` into pod `name`.
    pub async fn annotate(&self, name: &str, annotations: serde_json::Value) {
        self.pods()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "metadata": { "annotations": annotations } })),
            )
            .await
            .unwrap();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_operator();
        if std::thread::panicking() {
            // Keep the full logs for a post-mortem.
            let keep =
                std::env::temp_dir().join(format!("kube-ovn-operator-logs-{}", std::process::id()));
            let _ = std::fs::create_dir_all(&keep);
            for i in 1..=self.restarts {
                let name = format!("operator-{i}.log");
                let _ = std::fs::copy(self.dir.path().join(&name), keep.join(&name));
            }
            eprintln!("operator logs kept in {}", keep.display());
        }
    }
}
