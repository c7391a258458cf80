//! The whole path on the real test bed, two nodes, as one value: real OVN (`OvnSandbox`),
//! kube-sim's API server, the `kube-ovn operator` binary against both, `kube-ovn node` in each
//! sandbox node, and pods whose net1 is made by exec'ing the installed plugin Multus-style
//! (node_support's exec, not kube-sim's kubelet emulation). Tests that need real traffic
//! between pods of the operator's making start here.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{json, Value};

use crate::node_support::*;
use crate::support::OvnSandbox;

/// The bed; dropping it stops the operator (and, on a failed test, prints the logs' tails).
pub struct Bed {
    pub sandbox: OvnSandbox,
    pub kube: Kube,
    pub rt: tokio::runtime::Runtime,
    pub client: kube::Client,
    pub dir: tempfile::TempDir,
    pub nodes: Vec<NodeDaemon>,
    pub operator: Child,
}

impl Drop for Bed {
    fn drop(&mut self) {
        let _ = self.operator.kill();
        let _ = self.operator.wait();
        if std::thread::panicking() {
            let log =
                std::fs::read_to_string(self.dir.path().join("operator.log")).unwrap_or_default();
            // Debug lines (NB echoes, retries) would bury the cause.
            let tail: Vec<&str> = log
                .lines()
                .rev()
                .filter(|l| !l.contains(" DEBUG ") && !l.contains(" TRACE "))
                .take(40)
                .collect();
            eprintln!(
                "--- operator log (last 40 lines above debug, newest first)\n{}",
                tail.join("\n")
            );
            for (i, n) in self.nodes.iter().enumerate() {
                let log = n.log_text();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                eprintln!(
                    "--- node {} log (last 20 lines, newest first)\n{}",
                    i + 1,
                    tail.join("\n")
                );
            }
        }
    }
}

impl Bed {
    pub fn up() -> Bed {
        Self::up_with_crds(&[])
    }

    /// `up` with more CRDs installed before the operator starts (e.g. the community's
    /// MultiNetworkPolicy, which the operator looks for at start).
    pub fn up_with_crds(extra: &[CustomResourceDefinition]) -> Bed {
        let sandbox = OvnSandbox::up(2);
        let kube = Kube::start();
        let dir = tempfile::Builder::new()
            .prefix("kovn-e2e")
            .tempdir_in("/tmp")
            .unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let client = rt.block_on(async { kube.server.client() }).unwrap();
        rt.block_on(async {
            // Kube::start made ours; the NAD CRD is Multus's.
            let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
            crds.create(&PostParams::default(), &kube_sim::nodes::nad::crd())
                .await
                .unwrap();
            for crd in extra {
                crds.create(&PostParams::default(), crd).await.unwrap();
            }
        });
        let kubeconfig = dir.path().join("kubeconfig");
        kube.server.write_kubeconfig(&kubeconfig).unwrap();
        let log = std::fs::File::create(dir.path().join("operator.log")).unwrap();
        let operator = Command::new(env!("CARGO_BIN_EXE_kube-ovn"))
            .env("KUBECONFIG", &kubeconfig)
            .args(["--log-level", "info,kube_ovn=debug", "operator", "--ovn-nb"])
            .arg(sandbox.nb_endpoint())
            .arg("--ipam-db")
            .arg(dir.path().join("ipam"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let nodes = (1..=2)
            .map(|n| {
                let kc = kube.kubeconfig_in(&sandbox.node_netns(n), dir.path());
                NodeDaemon::start(&sandbox, n, &kc, dir.path(), &[])
            })
            .collect();
        Bed {
            sandbox,
            kube,
            rt,
            client,
            dir,
            nodes,
            operator,
        }
    }

    pub fn apply(&self, yaml: &str) {
        for doc in serde_yaml::Deserializer::from_str(yaml) {
            let value: Value = serde::Deserialize::deserialize(doc).unwrap();
            let obj: DynamicObject = serde_json::from_value(value).unwrap();
            let gvk = GroupVersionKind::try_from(obj.types.as_ref().unwrap()).unwrap();
            let plural = match gvk.kind.as_str() {
                "NetworkAttachmentDefinition" => "network-attachment-definitions".to_owned(),
                "SecurityGroup" => "security-groups".to_owned(),
                "MultiNetworkPolicy" => "multi-networkpolicies".to_owned(),
                k => format!("{}s", k.to_lowercase()),
            };
            let ar = ApiResource::from_gvk_with_plural(&gvk, &plural);
            let api: Api<DynamicObject> = if gvk.group == "kubeovn.io" {
                Api::all_with(self.client.clone(), &ar)
            } else {
                Api::namespaced_with(self.client.clone(), "default", &ar)
            };
            self.rt
                .block_on(api.create(&PostParams::default(), &obj))
                .unwrap();
        }
    }

    /// Creates pod `name` on node `n` with the networks annotation `networks`,
    /// waits for the operator's allocation on `provider`, then runs the
    /// plugin's ADD for net1 as Multus would. Returns the pod and its net1 address.
    pub fn pod(&self, n: usize, name: &str, networks: &str, provider: &str) -> (PodNetns, String) {
        self.pod_with(n, name, networks, provider, &[])
    }

    /// `pod` with more annotations on the pod from the start.
    pub fn pod_with(
        &self,
        n: usize,
        name: &str,
        networks: &str,
        provider: &str,
        extra: &[(&str, &str)],
    ) -> (PodNetns, String) {
        self.pod_in("default", n, name, networks, provider, extra)
    }

    /// `pod_with` in `namespace` (which must exist).
    pub fn pod_in(
        &self,
        namespace: &str,
        n: usize,
        name: &str,
        networks: &str,
        provider: &str,
        extra: &[(&str, &str)],
    ) -> (PodNetns, String) {
        let mut annotations = BTreeMap::from([(
            "k8s.v1.cni.cncf.io/networks".to_owned(),
            networks.to_owned(),
        )]);
        annotations.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self.kube
            .create_pod_in(namespace, name, &format!("node{n}"), &annotations);
        let pods: Api<k8s_openapi::api::core::v1::Pod> =
            Api::namespaced(self.client.clone(), namespace);
        let key = format!("{provider}.kubernetes.io/ip_address");
        let deadline = Instant::now() + Duration::from_secs(60);
        let ip = loop {
            let pod = self.rt.block_on(pods.get(name)).unwrap();
            let allocated = pod.metadata.annotations.unwrap_or_default();
            if allocated
                .get(&format!("{provider}.kubernetes.io/allocated"))
                .map(String::as_str)
                == Some("true")
            {
                break allocated[&key].clone();
            }
            assert!(Instant::now() < deadline, "pod {name} never allocated");
            std::thread::sleep(Duration::from_millis(100));
        };
        let mut netns = PodNetns::new(&self.sandbox, n, name, self.dir.path());
        netns.namespace = namespace.to_owned();
        let nad = provider.split('.').next().unwrap();
        let config = json!({"cniVersion": "0.3.1", "name": nad, "type": "kube-ovn",
            "server_socket": self.nodes[n - 1].socket, "provider": provider});
        let out = plugin(
            &self.nodes[n - 1].bin_dir,
            "ADD",
            &config,
            &netns.env("net1"),
        );
        out.assert_ok(&format!("ADD {name}"));
        let result = out.json();
        // The annotation's addresses (`v4,v6` for dual stack), in the result's order.
        let got: Vec<&str> = result["ips"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["address"].as_str().unwrap().split('/').next().unwrap())
            .collect();
        assert_eq!(
            got.join(","),
            ip,
            "the CNI result carries the operator's addresses"
        );
        (netns, ip)
    }
}
