//! Test bed for the node role: kube-sim's API server in-process (our CRDs and the `KubeOvn`
//! object `kube-ovn` in place, so a stopping node role is a restart, not an uninstall),
//! reachable from a sandbox node's netns through a forwarder; `kube-ovn node --ovs external`
//! run inside that netns against the node's OVS (the sandbox's, or `kube-ovn chassis` on a
//! [`ChassisNode`]); pods as network namespaces with eth0 from Debian's `bridge` +
//! `host-local` plugins; the `kube-ovn` plugin exec'd Multus-style (config on stdin, CNI_*
//! env).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube_ovn::api::kubeovn::{KubeOvn, KUBE_OVN_SINGLETON};
use kube_sim::ApiServer;
use serde_json::{json, Value};

pub use crate::support::Outcome;
use crate::support::{run_with_stdin, OvnSandbox};

pub const PROVIDER: &str = "attachnet.default.ovn";
pub const SUBNET: &str = "s1";
pub const CIDR: &str = "10.66.0.0/24";
pub const GATEWAY: &str = "10.66.0.1";

/// kube-sim's API server on its own runtime, with a forwarder into each sandbox node's netns.
/// Tests stay synchronous; every API call runs on the server's runtime.
pub struct Kube {
    pub server: ApiServer,
    pub client: kube::Client,
    rt: tokio::runtime::Runtime,
}

impl Kube {
    pub fn start() -> Kube {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (server, client) = rt.block_on(async {
            let server = ApiServer::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
                .await
                .expect("kube-sim API server starts");
            let client = server.client().expect("kube client");
            let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
            for crd in kube_ovn::api::crds() {
                crds.create(&PostParams::default(), &crd)
                    .await
                    .expect("create CRD");
            }
            (server, client)
        });
        let kube = Kube { server, client, rt };
        kube.create_kubeovn();
        kube
    }

    fn kubeovns(&self) -> Api<KubeOvn> {
        Api::all(self.client.clone())
    }

    /// Creates the `KubeOvn` object `kube-ovn` (the install is in place).
    pub fn create_kubeovn(&self) {
        let k: KubeOvn = serde_json::from_value(json!({
            "apiVersion": "operator.kubeovn.io/v1alpha1", "kind": "KubeOvn",
            "metadata": {"name": KUBE_OVN_SINGLETON}, "spec": {},
        }))
        .expect("KubeOvn");
        self.rt
            .block_on(self.kubeovns().create(&PostParams::default(), &k))
            .expect("create KubeOvn");
    }

    /// Deletes the `KubeOvn` object (the install is being removed).
    pub fn delete_kubeovn(&self) {
        self.rt
            .block_on(
                self.kubeovns()
                    .delete(KUBE_OVN_SINGLETON, &Default::default()),
            )
            .expect("delete KubeOvn");
    }

    /// Creates Node `name` with `annotations`.
    pub fn create_node(&self, name: &str, annotations: &BTreeMap<String, String>) {
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "annotations": annotations},
        }))
        .expect("node");
        self.rt
            .block_on(Api::<Node>::all(self.client.clone()).create(&PostParams::default(), &node))
            .expect("create node");
    }

    /// Sets pod `name`'s `status.podIP(s)` as the kubelet does once the sandbox runs.
    pub fn set_pod_ip(&self, name: &str, ip: &str) {
        self.rt
            .block_on(self.pods().patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}),
                ),
            ))
            .expect("set pod IP");
    }

    /// A kubeconfig file reachable from inside `netns` (a forwarder on its 127.0.0.1).
    pub fn kubeconfig_in(&self, netns: &str, dir: &Path) -> PathBuf {
        let listener = listener_in_netns(netns);
        let port = listener.local_addr().expect("addr").port();
        let target = self.server.addr();
        listener.set_nonblocking(true).expect("nonblocking");
        let _entered = self.rt.enter();
        let listener = tokio::net::TcpListener::from_std(listener).expect("register listener");
        self.rt.spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        let path = dir.join(format!("kubeconfig-{netns}"));
        let yaml = self
            .server
            .kubeconfig_yaml()
            .replace(&self.server.url(), &format!("http://127.0.0.1:{port}"));
        std::fs::write(&path, yaml).expect("write kubeconfig");
        path
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    /// Creates pod `name` on `node` with `annotations`.
    pub fn create_pod(&self, name: &str, node: &str, annotations: &BTreeMap<String, String>) {
        self.create_pod_in("default", name, node, annotations)
    }

    /// `create_pod` in `namespace`.
    pub fn create_pod_in(
        &self,
        namespace: &str,
        name: &str,
        node: &str,
        annotations: &BTreeMap<String, String>,
    ) {
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
        }))
        .expect("pod");
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        self.rt
            .block_on(api.create(&PostParams::default(), &pod))
            .expect("create pod");
    }

    /// Deletes pod `name`.
    pub fn delete_pod(&self, name: &str) {
        self.rt
            .block_on(self.pods().delete(name, &Default::default()))
            .expect("delete pod");
    }

    /// The note of an Event with `reason` about pod `name` that contains `text`, waiting up
    /// to `timeout`.
    pub fn event_note(
        &self,
        name: &str,
        reason: &str,
        text: &str,
        timeout: Duration,
    ) -> Option<String> {
        let events: Api<k8s_openapi::api::events::v1::Event> = Api::all(self.client.clone());
        let deadline = Instant::now() + timeout;
        loop {
            let notes: Vec<String> = self
                .rt
                .block_on(events.list(&Default::default()))
                .expect("list events")
                .items
                .into_iter()
                .filter(|e| {
                    e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                        && e.reason.as_deref() == Some(reason)
                })
                .filter_map(|e| e.note)
                .collect();
            if let Some(note) = notes.into_iter().find(|n| n.contains(text)) {
                return Some(note);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Merges `annotations` into pod `name` (a `null` value removes a key).
    pub fn annotate(&self, name: &str, annotations: Value) {
        self.rt
            .block_on(self.pods().patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": annotations}})),
            ))
            .expect("annotate pod");
    }
}

/// A TCP listener on 127.0.0.1 inside `netns` (a socket keeps the netns it was made in).
fn listener_in_netns(netns: &str) -> std::net::TcpListener {
    let path = format!("/var/run/netns/{netns}");
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).expect("open node netns");
        // SAFETY: setns on this short-lived thread only; the fd is valid for the call.
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns into {path}");
        std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind in node netns")
    })
    .join()
    .expect("listener thread")
}

/// The allocation annotations the controller writes for attachment `key`.
pub fn allocation(key: &str, ip: &str, mac: &str) -> BTreeMap<String, String> {
    [
        ("allocated", "true"),
        ("ip_address", ip),
        ("mac_address", mac),
        ("cidr", CIDR),
        ("gateway", GATEWAY),
        ("logical_switch", SUBNET),
        ("logical_router", "vpc1"),
    ]
    .into_iter()
    .map(|(k, v)| (format!("{key}.kubernetes.io/{k}"), v.to_string()))
    .collect()
}

/// What the operator would put in NB for a pod attachment (the test stands in for it).
pub fn create_lsp(sandbox: &OvnSandbox, pod: &str, ip: &str, mac: &str) {
    let lsp = format!("{pod}.default.{PROVIDER}");
    sandbox.nbctl(&[
        "--may-exist",
        "ls-add",
        SUBNET,
        "--",
        "lsp-add",
        SUBNET,
        &lsp,
        "--",
        "lsp-set-addresses",
        &lsp,
        &format!("{mac} {ip}"),
    ]);
}

/// `kube-ovn node --ovs external` running in a sandbox node's netns.
pub struct NodeDaemon {
    child: Option<Child>,
    pub socket: PathBuf,
    pub log: PathBuf,
    pub bin_dir: PathBuf,
}

impl NodeDaemon {
    pub fn start(
        sandbox: &OvnSandbox,
        n: usize,
        kubeconfig: &Path,
        dir: &Path,
        extra: &[&str],
    ) -> NodeDaemon {
        Self::start_logged(sandbox, n, kubeconfig, dir, extra, "kube_ovn=debug,info")
    }

    /// `start` with this `--log-level`.
    pub fn start_logged(
        sandbox: &OvnSandbox,
        n: usize,
        kubeconfig: &Path,
        dir: &Path,
        extra: &[&str],
        log_level: &str,
    ) -> NodeDaemon {
        let node_dir = sandbox.dir().join(format!("n{n}"));
        let args = [
            format!("--node-name=node{n}"),
            "--ovs=external".into(),
            format!("--ovs-db={}", sandbox.node_db_endpoint(n)),
            format!("--ovn-run-dir={}", node_dir.display()),
            "--datapath=netdev".into(),
            format!("--ovn-sb={}", sandbox.sb_endpoint()),
            format!("--encap-ip=172.30.0.{}", 10 + n),
        ];
        let mut args = args.to_vec();
        args.extend(extra.iter().map(|a| a.to_string()));
        let mut d = Self::launch(
            &sandbox.node_netns(n),
            &format!("n{n}"),
            kubeconfig,
            dir,
            &args,
            log_level,
        );
        d.wait_healthy(Duration::from_secs(60));
        d
    }

    /// Spawns `kube-ovn node <args>` in `netns` with its CNI socket, log and bin dir under
    /// `dir` (named after `tag`); does not wait.
    pub fn launch(
        netns: &str,
        tag: &str,
        kubeconfig: &Path,
        dir: &Path,
        args: &[String],
        log_level: &str,
    ) -> NodeDaemon {
        let socket = dir.join(format!("{tag}-cni.sock"));
        let log = dir.join(format!("{tag}-node.log"));
        let bin_dir = dir.join(format!("{tag}-bin"));
        let child = Command::new("ip")
            .args(["netns", "exec", netns])
            .arg(env!("CARGO_BIN_EXE_kube-ovn"))
            .arg(format!("--log-level={log_level}"))
            .arg(format!("--log-file={}", log.display()))
            .arg("node")
            .arg(format!("--cni-socket={}", socket.display()))
            .arg(format!("--cni-bin-dir={}", bin_dir.display()))
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn kube-ovn node");
        NodeDaemon {
            child: Some(child),
            socket,
            log,
            bin_dir,
        }
    }

    /// Waits until `/healthz` on the CNI socket answers 200.
    pub fn wait_healthy(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("kube-ovn node exited with {status}:\n{}", self.log_text());
                }
            }
            let (status, body) = health(&self.socket);
            if status == 200 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node not healthy: {status} {body}\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits for the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        stop_child(self.child.take()?)
    }
}

impl Drop for NodeDaemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `GET /healthz` over the CNI socket: (status, body); (0, reason) when unreachable.
pub fn health(socket: &Path) -> (u16, String) {
    let Ok(mut s) = UnixStream::connect(socket) else {
        return (0, "not listening".into());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET /healthz HTTP/1.0\r\nHost: kube-ovn\r\n\r\n")
        .is_err()
    {
        return (0, "write failed".into());
    }
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

/// A pod: a netns with eth0 from the primary `bridge` plugin run in the node's netns.
pub struct PodNetns {
    pub name: String,
    pub pod: String,
    /// The pod's namespace (`default` unless set after `new`), as CNI_ARGS pass it.
    pub namespace: String,
    pub container_id: String,
    pub eth0_ip: String,
}

/// The first two octets of the beds' eth0 subnets (`<this>.<node>.0/24`, gateway `.1`): one
/// per bed, held for the process's life with an advisory lock on `/run/kovn-test-eth0-<o>`,
/// so beds running at once on this machine (tests in parallel, other test processes) never
/// give two pods the same eth0 address, which would confuse the node role's search for a
/// pod's netns by address. 10.160–10.199: clear of kube-sim's 10.244.0.0/16.
pub fn eth0_net(sandbox: &OvnSandbox) -> String {
    use std::os::fd::AsRawFd;
    static NETS: std::sync::Mutex<Vec<(String, u32, std::fs::File)>> =
        std::sync::Mutex::new(Vec::new());
    let mut nets = NETS.lock().expect("eth0 nets");
    if let Some((_, o, _)) = nets.iter().find(|(p, _, _)| p == sandbox.prefix()) {
        return format!("10.{o}");
    }
    for o in 160..200u32 {
        if nets.iter().any(|(_, taken, _)| *taken == o) {
            continue;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(format!("/run/kovn-test-eth0-{o}"))
            .expect("lock file");
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            nets.push((sandbox.prefix().to_string(), o, file));
            return format!("10.{o}");
        }
    }
    panic!("more than 40 test beds at once hold an eth0 subnet")
}

impl PodNetns {
    pub fn new(sandbox: &OvnSandbox, n: usize, pod: &str, dir: &Path) -> PodNetns {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}-p{seq}", sandbox.prefix());
        tool("ip", &["netns", "add", &name]);
        tool("ip", &["-n", &name, "link", "set", "lo", "up"]);
        let container_id = uuid::Uuid::new_v4().simple().to_string();
        let conf = json!({
            "cniVersion": "1.0.0", "name": "primary", "type": "bridge", "bridge": "cni0",
            "isGateway": true, "ipMasq": false,
            "ipam": {"type": "host-local", "subnet": format!("{}.{n}.0/24", eth0_net(sandbox)),
                     "dataDir": dir.join(format!("host-local-n{n}"))},
        });
        let out = primary_cni(sandbox, n, "ADD", &conf, &container_id, &name);
        let result: Value = serde_json::from_str(&out).expect("bridge result");
        let eth0_ip = result["ips"][0]["address"]
            .as_str()
            .expect("eth0 address")
            .split('/')
            .next()
            .expect("ip")
            .to_string();
        PodNetns {
            name,
            pod: pod.to_string(),
            namespace: "default".to_string(),
            container_id,
            eth0_ip,
        }
    }

    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        tool("ip", &all)
    }

    pub fn ip_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["-j"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ip(&all)).expect("ip -j output")
    }

    /// `tc qdisc show dev <ifname>` inside the pod.
    pub fn tc_qdiscs(&self, ifname: &str) -> String {
        tool(
            "ip",
            &[
                "netns", "exec", &self.name, "tc", "qdisc", "show", "dev", ifname,
            ],
        )
    }

    pub fn has_link(&self, name: &str) -> bool {
        Command::new("ip")
            .args(["-n", &self.name, "link", "show", name])
            .output()
            .expect("ip")
            .status
            .success()
    }

    /// CNI_* env of this pod as Multus passes it to a delegate.
    pub fn env(&self, ifname: &str) -> Vec<(String, String)> {
        vec![
            ("CNI_CONTAINERID".into(), self.container_id.clone()),
            ("CNI_NETNS".into(), self.path()),
            ("CNI_IFNAME".into(), ifname.into()),
            (
                "CNI_ARGS".into(),
                format!(
                    "IgnoreUnknown=true;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID=uid-{}",
                    self.namespace, self.pod, self.container_id, self.pod
                ),
            ),
        ]
    }
}

impl Drop for PodNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs Debian's `bridge` plugin in node `n`'s netns; its stdout.
fn primary_cni(
    sandbox: &OvnSandbox,
    n: usize,
    command: &str,
    conf: &Value,
    container_id: &str,
    netns: &str,
) -> String {
    let out = run_with_stdin(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &sandbox.node_netns(n),
                "/usr/lib/cni/bridge",
            ])
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container_id)
            .env("CNI_NETNS", format!("/var/run/netns/{netns}"))
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/usr/lib/cni"),
        conf,
    );
    out.assert_ok(&format!("bridge {command}"));
    out.stdout
}

/// The NAD config Multus hands the plugin.
pub fn nad_config(version: &str, socket: &Path) -> Value {
    json!({"cniVersion": version, "name": "attachnet", "type": "kube-ovn",
           "server_socket": socket, "provider": PROVIDER})
}

/// Execs the installed `kube-ovn` plugin as libcni does.
pub fn plugin(bin_dir: &Path, command: &str, config: &Value, env: &[(String, String)]) -> Outcome {
    run_with_stdin(
        Command::new(bin_dir.join("kube-ovn"))
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_PATH", bin_dir)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        config,
    )
}

/// Runs a tool that must succeed; its stdout.
pub fn tool(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().expect("spawn tool");
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether link `name` exists in netns `netns`.
pub fn link_in(netns: &str, name: &str) -> bool {
    Command::new("ip")
        .args(["-n", netns, "link", "show", name])
        .output()
        .expect("ip")
        .status
        .success()
}

/// A sandbox node `n` with no OVS of the sandbox's: netns `<prefix>-n<n>` with its underlay
/// NIC `ul0` (into the sandbox's underlay bridge), its Node object annotated with the tunnel
/// address `172.30.0.<10+n>/24`, and `kube-ovn chassis` running there on `<sandbox>/n<n>` (the
/// paths [`NodeDaemon::start`] expects).
pub struct ChassisNode {
    pub n: usize,
    pub netns: String,
    pub run_dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub chassis: Option<ChassisDaemon>,
}

/// The NIC that carries a [`ChassisNode`]'s tunnels.
pub const TUNNEL_NIC: &str = "ul0";

impl ChassisNode {
    pub fn up(sandbox: &OvnSandbox, kube: &Kube, n: usize, dir: &Path) -> ChassisNode {
        let netns = sandbox.node_netns(n);
        let underlay = format!("{}-ul", sandbox.prefix());
        tool("ip", &["netns", "add", &netns]);
        tool("ip", &["-n", &netns, "link", "set", "lo", "up"]);
        let peer = format!("v{n}");
        tool(
            "ip",
            &[
                "link", "add", TUNNEL_NIC, "netns", &netns, "mtu", "1500", "type", "veth", "peer",
                "name", &peer, "netns", &underlay, "mtu", "1500",
            ],
        );
        tool(
            "ip",
            &["-n", &underlay, "link", "set", &peer, "master", "br0", "up"],
        );
        tool(
            "ip",
            &[
                "netns", "exec", &underlay, "ethtool", "-K", &peer, "tx", "off",
            ],
        );
        tool("ip", &["-n", &netns, "link", "set", TUNNEL_NIC, "up"]);
        kube.create_node(
            &format!("node{n}"),
            &BTreeMap::from([(
                "kube-ovn.io/tunnel-address".to_string(),
                format!("172.30.0.{}/24", 10 + n),
            )]),
        );
        let kubeconfig = kube.kubeconfig_in(&netns, dir);
        let mut node = ChassisNode {
            n,
            netns,
            run_dir: sandbox.dir().join(format!("n{n}")),
            kubeconfig,
            chassis: None,
        };
        node.start_chassis(dir);
        node
    }

    /// Starts `kube-ovn chassis` and waits until its `/readyz` answers 200.
    pub fn start_chassis(&mut self, dir: &Path) {
        let log = dir.join(format!("n{}-chassis.log", self.n));
        let child = Command::new("ip")
            .args(["netns", "exec", &self.netns])
            .arg(env!("CARGO_BIN_EXE_kube-ovn"))
            .arg("--log-level=info")
            .arg(format!("--log-file={}", log.display()))
            .arg("chassis")
            .arg(format!("--ovs-run-dir={}", self.run_dir.display()))
            .arg(format!("--node-name=node{}", self.n))
            .arg("--status-addr=127.0.0.1:10665")
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn kube-ovn chassis");
        let mut chassis = ChassisDaemon {
            child: Some(child),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.readyz() != "200" {
            if let Some(child) = chassis.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "kube-ovn chassis exited with {status}:\n{}",
                        chassis.log_text()
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "chassis not ready: {}\n{}",
                self.readyz(),
                chassis.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self.chassis = Some(chassis);
    }

    /// The HTTP status of the chassis's `/readyz` ("000" when nothing answers).
    pub fn readyz(&self) -> String {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.netns,
                "curl",
                "-s",
                "-o",
                "/dev/null",
            ])
            .args(["-w", "%{http_code}", "--max-time", "2"])
            .arg("http://127.0.0.1:10665/readyz")
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// SIGTERM to the chassis; its exit status.
    pub fn stop_chassis(&mut self) -> Option<std::process::ExitStatus> {
        self.chassis.take()?.stop()
    }

    /// Pids of the OVS/OVN daemons (from the pidfiles in the run dir).
    pub fn daemon_pids(&self) -> Vec<i32> {
        ["ovsdb-server", "ovs-vswitchd", "ovn-controller"]
            .iter()
            .filter_map(|d| std::fs::read_to_string(self.run_dir.join(format!("{d}.pid"))).ok())
            .filter_map(|t| t.trim().parse().ok())
            .collect()
    }

    /// Processes still running in the node's netns.
    pub fn netns_pids(&self) -> Vec<String> {
        Command::new("ip")
            .args(["netns", "pids", &self.netns])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// `kube-ovn chassis` in a [`ChassisNode`]'s netns.
pub struct ChassisDaemon {
    child: Option<Child>,
    pub log: PathBuf,
}

impl ChassisDaemon {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn stop(mut self) -> Option<std::process::ExitStatus> {
        stop_child(self.child.take()?)
    }
}

impl Drop for ChassisDaemon {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            stop_child(child);
        }
    }
}

/// SIGTERM, then the exit status (SIGKILL after 20 s).
fn stop_child(mut child: Child) -> Option<std::process::ExitStatus> {
    // `ip netns exec` execs the program, so the child pid is the program's.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return child.wait().ok();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
