//! A cluster installed the way a user installs kube-ovn: kube-sim (API server, nodes running
//! mapped images as processes, workload controllers), then either `kube-ovn crd` and
//! `kube-ovn render` applied with the real `kubectl`, or the OLM bundle applied as OLM does
//! (`install_from_olm_bundle`), then a `KubeOvn` object. Shared by `tests/install_e2e.rs`,
//! `tests/olm_install.rs` and `benches/install.rs`. Root: real namespaces, OVS and OVN.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{EnvVar, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube_ovn::api::kubeovn::KubeOvn;
use kube_ovn::olm::csv::ClusterServiceVersion;
use kube_sim::apiserver::ApiServer;
use kube_sim::controllers::WorkloadControllers;
use kube_sim::nodes::{ContainerRuntime, Simulator, SimulatorConfig};

/// The image the simulated nodes run as this build's binary.
pub const IMAGE: &str = "kube-ovn:dev";
/// The image the committed OLM bundle names (`kube-ovn olm-bundle`'s default); also this
/// build's binary on the simulated nodes.
pub const RELEASE_IMAGE: &str = concat!("kube-ovn:v", env!("CARGO_PKG_VERSION"));
/// The guide's network (hack/demo/seed): its provider and subnet.
pub const PROVIDER: &str = "kube-ovn-vpc-network.default.ovn";
pub const SEED_CIDR: &str = "10.100.0.0/16";
/// The KubeOvn spec lines this bed needs: no OVS kernel module here, so the userspace
/// datapath, tunnelling through each node's `ul1`.
pub const SPEC_NETDEV: &str = "  nonPrimaryCNI: true\n  datapath: Netdev\n  tunnelInterface: ul1\n";
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
        Installed::up_with(nodes, None).await
    }

    /// As [`Installed::up`], the nodes also on kube-sim's external network numbered from
    /// `external` (a /24), with its external host.
    pub async fn up_with(nodes: usize, external: Option<Ipv4Addr>) -> Installed {
        let installed = Installed::start_with(nodes, external).await;
        let crds = installed.kube_ovn(&["crd"]);
        installed.kubectl_stdin(&["apply", "-f", "-"], &crds);
        installed
    }

    /// kube-sim with `nodes` nodes and Multus's NAD CRD, none of kube-ovn's CRDs.
    pub async fn start(nodes: usize) -> Installed {
        Installed::start_with(nodes, None).await
    }

    async fn start_with(nodes: usize, external: Option<Ipv4Addr>) -> Installed {
        let api = ApiServer::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await
            .expect("kube-sim starts");
        let client = api.client().expect("kube client");
        let dir = tempfile::tempdir().expect("temp dir");
        api.write_kubeconfig(&dir.path().join("kubeconfig"))
            .expect("kubeconfig");
        let mut config = SimulatorConfig::new(nodes, dir.path().join("nodes"));
        config.api_server = Some(api.addr());
        config.fabric.external_net = external;
        let binary = env!("CARGO_BIN_EXE_kube-ovn");
        let entries = [IMAGE, RELEASE_IMAGE].map(|image| format!("{image}={binary}"));
        config.runtime =
            ContainerRuntime::from_entries(entries.iter().map(String::as_str)).expect("image map");
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
        installed.kubectl_stdin(
            &["apply", "-f", "-"],
            &serde_yaml::to_string(&kube_sim::nodes::nad::crd()).expect("NAD CRD as YAML"),
        );
        installed
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// kube-sim's external network (beds made with [`Installed::up_with`]).
    pub fn external(&self) -> kube_sim::nodes::ExternalNetwork {
        self.sim()
            .external()
            .expect("a bed with an external network")
            .clone()
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

    /// What OLM does when a Subscription resolves the bundle in `dir` (AllNamespaces, the
    /// operator in `namespace`): the bundle's CRDs and other manifests; a ServiceAccount per
    /// account the CSV names; its `permissions` as a Role and RoleBinding in `namespace` and its
    /// `clusterPermissions` as a ClusterRole and ClusterRoleBinding; the Deployments of
    /// `install.spec.deployments`, with the labels, pod annotations and env OLM adds. Waits
    /// until the operator Deployment is available; returns the CSV.
    pub async fn install_from_olm_bundle(
        &self,
        dir: &Path,
        namespace: &str,
    ) -> ClusterServiceVersion {
        let bundle = kube_ovn::olm::Bundle::read(dir).expect("the bundle directory");
        let csv: ClusterServiceVersion =
            serde_yaml::from_str(&bundle.files[kube_ovn::olm::CSV_FILE]).expect("the CSV");
        let csv_name = csv.metadata.name.clone().expect("the CSV's name");
        let namespace_manifest =
            format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {namespace}\n");
        self.kubectl_stdin(&["apply", "-f", "-"], &namespace_manifest);
        // CRDs first (OLM waits for them to be established), then the other objects.
        let manifests: Vec<(&String, serde_json::Value)> = bundle
            .files
            .iter()
            .filter(|(path, _)| {
                path.starts_with("manifests/") && path.as_str() != kube_ovn::olm::CSV_FILE
            })
            .map(|(path, text)| (path, serde_yaml::from_str(text).expect("a manifest")))
            .collect();
        let (crds, others): (Vec<_>, Vec<_>) = manifests
            .into_iter()
            .partition(|(_, v)| v["kind"] == "CustomResourceDefinition");
        for (_, crd) in crds.iter().chain(&others) {
            let text = serde_yaml::to_string(crd).expect("YAML");
            self.kubectl_stdin(&["apply", "-n", namespace, "-f", "-"], &text);
        }
        let install = csv.spec.install.clone().expect("spec.install");
        let subject = |account: &str| Subject {
            kind: "ServiceAccount".into(),
            name: account.into(),
            namespace: Some(namespace.into()),
            api_group: None,
        };
        let meta = |name: String, ns: Option<&str>| ObjectMeta {
            name: Some(name),
            namespace: ns.map(str::to_owned),
            labels: Some(BTreeMap::from([
                ("olm.owner".to_owned(), csv_name.clone()),
                (
                    "olm.owner.kind".to_owned(),
                    "ClusterServiceVersion".to_owned(),
                ),
                ("olm.owner.namespace".to_owned(), namespace.to_owned()),
            ])),
            ..Default::default()
        };
        let mut objects: Vec<String> = Vec::new();
        let accounts: BTreeSet<&str> = install
            .spec
            .permissions
            .iter()
            .chain(&install.spec.cluster_permissions)
            .map(|p| p.service_account_name.as_str())
            .collect();
        for account in &accounts {
            objects.push(to_yaml(&ServiceAccount {
                metadata: meta((*account).to_owned(), Some(namespace)),
                ..Default::default()
            }));
        }
        for p in &install.spec.permissions {
            let name = format!("{csv_name}-{}", p.service_account_name);
            objects.push(to_yaml(&Role {
                metadata: meta(name.clone(), Some(namespace)),
                rules: Some(p.rules.clone()),
            }));
            objects.push(to_yaml(&RoleBinding {
                metadata: meta(name.clone(), Some(namespace)),
                role_ref: RoleRef {
                    api_group: "rbac.authorization.k8s.io".into(),
                    kind: "Role".into(),
                    name,
                },
                subjects: Some(vec![subject(&p.service_account_name)]),
            }));
        }
        for p in &install.spec.cluster_permissions {
            let name = format!("{csv_name}-{}", p.service_account_name);
            objects.push(to_yaml(&ClusterRole {
                metadata: meta(name.clone(), None),
                rules: Some(p.rules.clone()),
                aggregation_rule: None,
            }));
            objects.push(to_yaml(&ClusterRoleBinding {
                metadata: meta(name.clone(), None),
                role_ref: RoleRef {
                    api_group: "rbac.authorization.k8s.io".into(),
                    kind: "ClusterRole".into(),
                    name,
                },
                subjects: Some(vec![subject(&p.service_account_name)]),
            }));
        }
        for d in &install.spec.deployments {
            let mut spec = d.spec.clone();
            let template = spec.template.metadata.get_or_insert_with(Default::default);
            template
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .extend([
                    (
                        "olm.operatorGroup".to_owned(),
                        "global-operators".to_owned(),
                    ),
                    ("olm.operatorNamespace".to_owned(), namespace.to_owned()),
                    ("olm.targetNamespaces".to_owned(), String::new()),
                    ("olmcahash".to_owned(), "0".to_owned()),
                ]);
            for c in spec
                .template
                .spec
                .iter_mut()
                .flat_map(|p| p.containers.iter_mut())
            {
                c.env.get_or_insert_with(Vec::new).push(EnvVar {
                    name: "OPERATOR_CONDITION_NAME".into(),
                    value: Some(csv_name.clone()),
                    value_from: None,
                });
            }
            let mut metadata = meta(d.name.clone(), Some(namespace));
            metadata
                .labels
                .get_or_insert_with(BTreeMap::new)
                .extend(d.label.clone());
            objects.push(to_yaml(&Deployment {
                metadata,
                spec: Some(spec),
                status: None,
            }));
        }
        for object in objects {
            self.kubectl_stdin(&["apply", "-f", "-"], &object);
        }
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
        let name = install.spec.deployments[0].name.clone();
        eventually(
            "the operator Deployment available",
            Duration::from_secs(120),
            || async {
                let status = deployments.get(&name).await.ok()?.status?;
                (status.available_replicas? >= 1).then_some(())
            },
        )
        .await;
        csv
    }

    /// Whether the API server's RBAC lets `user` do `verb` on `resource` (`group`, in
    /// `namespace` unless cluster-wide): a SubjectAccessReview.
    pub async fn can(
        &self,
        user: &str,
        verb: &str,
        group: &str,
        resource: &str,
        namespace: Option<&str>,
    ) -> bool {
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.to_owned()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(verb.to_owned()),
                    group: Some(group.to_owned()),
                    resource: Some(resource.to_owned()),
                    namespace: namespace.map(str::to_owned),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .expect("a SubjectAccessReview");
        answer.status.expect("the review's status").allowed
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

    /// [`eventually`], with what [`Installed::diagnostics`] shows when it times out.
    pub async fn eventually<T, F, Fut>(&self, what: &str, limit: Duration, probe: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        match poll_until(limit, probe).await {
            Some(v) => v,
            None => panic!(
                "timed out after {limit:?} waiting for {what}\n{}",
                self.diagnostics()
            ),
        }
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
                self.kubectl_output(&["logs", "-n", NAMESPACE, workload, "--tail", "60"], None);
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

/// A pod on `node` with the guide's network.
pub fn pod_manifest(name: &str, node: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\n  annotations:\n    k8s.v1.cni.cncf.io/networks: default/kube-ovn-vpc-network\nspec:\n  nodeName: {node}\n  containers:\n  - name: app\n    image: nginx\n"
    )
}

/// The guide's NAD, Vpc and Subnet, verbatim.
pub fn apply_seed_network(bed: &Installed) {
    let seed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("hack/demo/seed");
    for file in ["01-nad.yaml", "02-vpc-subnet.yaml"] {
        let path = seed.join(file);
        bed.kubectl(&["apply", "-f", path.to_str().expect("UTF-8 path")]);
    }
}

/// The pod's address on the guide's network and its network namespace, once attached and
/// Running.
pub async fn attached(bed: &Installed, name: &str) -> (String, String) {
    let pods: Api<Pod> = Api::namespaced(bed.client.clone(), "default");
    let key = format!("{PROVIDER}.kubernetes.io/ip_address");
    eventually(
        &format!("pod {name} Running with an address"),
        Duration::from_secs(90),
        || async {
            let pod = pods.get(name).await.ok()?;
            let ip = pod.metadata.annotations.as_ref()?.get(&key)?.clone();
            Some((ip, running_netns(&pod)?))
        },
    )
    .await
}

/// The network namespace of `pod` once it is Running (kube-sim's annotation).
pub fn running_netns(pod: &Pod) -> Option<String> {
    let running = pod.status.as_ref()?.phase.as_deref() == Some("Running");
    let netns = pod
        .metadata
        .annotations
        .as_ref()?
        .get("kube-sim.dev/netns")?;
    running.then(|| netns.clone())
}

/// A netns name or path as a path.
pub fn netns_path(netns: &str) -> String {
    if netns.starts_with('/') {
        netns.to_owned()
    } else {
        format!("/run/netns/{netns}")
    }
}

/// `ping` from inside a pod's network namespace.
pub fn ping(netns: &str, ip: &str, count: u32, interval: &str) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", netns_path(netns)))
        .args(["ping", "-n", "-q", "-c", &count.to_string(), "-i", interval])
        .args(["-W", "1", ip]);
    cmd
}

fn to_yaml<T: serde::Serialize>(obj: &T) -> String {
    serde_yaml::to_string(obj).expect("an object serializes")
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
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    match poll_until(limit, probe).await {
        Some(v) => v,
        None => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// Polls `probe` every 200 ms until it gives `Some`; `None` after `limit`.
async fn poll_until<T, F, Fut>(limit: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
