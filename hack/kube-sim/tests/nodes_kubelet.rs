//! The node simulator against the kube-sim API server, as a CNI plugin under test would see
//! it: real namespaces, Debian's `bridge` plugin as a NAD's secondary network, network-status
//! as Multus writes it, deletion releasing addresses, pods on two nodes pinging, and failures
//! (missing NAD, malformed annotation, failing delegate) reported as Events and retried
//! without holding up other pods.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::Client;
use serde_json::{json, Value};

use kube_sim::nodes::node::{netns_with_prefix, processes_mentioning};
use kube_sim::nodes::{nad, Simulator, SimulatorConfig, NETNS_ANNOTATION};
use kube_sim::ApiServer;

const WAIT: Duration = Duration::from_secs(90);

struct Bed {
    server: ApiServer,
    client: Client,
    sim: Simulator,
    _dir: tempfile::TempDir,
}

async fn bed(nodes: usize) -> Bed {
    let server = ApiServer::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .expect("API server");
    let client = server.client().expect("client");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let default: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "default"}})).expect("ns");
    let _ = namespaces.create(&PostParams::default(), &default).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &nad::crd())
        .await
        .expect("NAD CRD");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = SimulatorConfig::new(nodes, dir.path());
    config.backoff.initial = Duration::from_millis(200);
    config.backoff.max = Duration::from_secs(2);
    config.api_server = Some(server.addr());
    let sim = Simulator::start(client.clone(), config)
        .await
        .expect("simulator");
    Bed {
        server,
        client,
        sim,
        _dir: dir,
    }
}

impl Bed {
    async fn down(self) {
        let prefix = self.sim.netns_prefix().to_string();
        let state_dir = self._dir.path().display().to_string();
        self.sim.shutdown().await;
        self.server.shutdown().await;
        assert!(
            netns_with_prefix(&prefix).is_empty(),
            "namespaces left behind"
        );
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        assert!(!mounts.contains(&state_dir), "mounts left behind");
        let left = processes_mentioning(&format!("/run/netns/{prefix}-"));
        assert!(left.is_empty(), "processes left behind: {left:?}");
    }

    async fn nad(&self, name: &str, config: &str) {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), "default", &nad::resource());
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "k8s.cni.cncf.io/v1",
            "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"config": config},
        }))
        .expect("NAD");
        api.create(&PostParams::default(), &object)
            .await
            .expect("create NAD");
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    async fn pod(&self, name: &str, networks: Option<&str>, spec: Value) -> Pod {
        let mut annotations = serde_json::Map::new();
        if let Some(n) = networks {
            annotations.insert("k8s.v1.cni.cncf.io/networks".into(), Value::from(n));
        }
        let mut spec = spec;
        spec["containers"] = json!([{"name": "app", "image": "nginx"}]);
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "annotations": annotations},
            "spec": spec,
        }))
        .expect("pod");
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .expect("create pod")
    }

    async fn running(&self, name: &str) -> Pod {
        let cond = |p: Option<&Pod>| {
            p.and_then(|p| p.status.as_ref())
                .and_then(|s| s.phase.as_deref())
                == Some("Running")
        };
        tokio::time::timeout(WAIT, await_condition(self.pods(), name, cond))
            .await
            .unwrap_or_else(|_| panic!("pod {name} not Running in time"))
            .expect("watch")
            .expect("pod exists")
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

    /// Events with `reason` about pod `name`, waiting until there are at least `count`.
    async fn events(&self, name: &str, reason: &str, count: usize) -> Vec<Event> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), "default");
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let events: Vec<Event> = api
                .list(&ListParams::default())
                .await
                .expect("list events")
                .items
                .into_iter()
                .filter(|e| {
                    e.involved_object.name.as_deref() == Some(name)
                        && e.reason.as_deref() == Some(reason)
                })
                .collect();
            if events.len() >= count {
                return events;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "fewer than {count} {reason} events for {name}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn annotation<'a>(pod: &'a Pod, key: &str) -> &'a str {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
        .unwrap_or_else(|| panic!("annotation {key} missing"))
}

fn in_netns(netns: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", netns])
        .args(args)
        .output()
        .expect("ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mac_of(netns: &str, ifname: &str) -> String {
    let out = in_netns(netns, &["cat", &format!("/sys/class/net/{ifname}/address")]);
    out.trim().to_string()
}

const BRIDGE_NAD: &str = r#"{"cniVersion":"0.3.1","type":"bridge","bridge":"blue0",
  "ipam":{"type":"host-local","subnet":"192.168.60.0/24"}}"#;

#[tokio::test]
async fn bridge_secondary_network_gets_net1_and_network_status() {
    let bed = bed(1).await;
    bed.nad("blue", BRIDGE_NAD).await;
    bed.pod("a", Some("blue"), json!({})).await;
    let pod = bed.running("a").await;

    let node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .expect("bound");
    assert_eq!(node, "node-1");
    let netns = annotation(&pod, NETNS_ANNOTATION).to_string();
    let status: Vec<Value> =
        serde_json::from_str(annotation(&pod, "k8s.v1.cni.cncf.io/network-status"))
            .expect("network-status JSON");
    assert_eq!(status.len(), 2, "{status:?}");
    let pod_ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("podIP");
    assert_eq!(
        status[0],
        json!({"name": "kube-sim-primary", "interface": "eth0", "ips": [pod_ip], "mac": mac_of(&netns, "eth0"),
               "default": true, "dns": {}, "gateway": ["10.244.0.1"]})
    );
    let net1_ip = status[1]["ips"][0].as_str().expect("net1 ip").to_string();
    assert!(net1_ip.starts_with("192.168.60."), "{status:?}");
    assert_eq!(
        status[1],
        json!({"name": "default/blue", "interface": "net1", "ips": [net1_ip], "mac": mac_of(&netns, "net1"), "dns": {}})
    );
    let addrs = in_netns(&netns, &["ip", "-o", "-4", "addr"]);
    assert!(
        addrs.contains(&format!("eth0    inet {pod_ip}/24")),
        "{addrs}"
    );
    assert!(
        addrs.contains(&format!("net1    inet {net1_ip}/24")),
        "{addrs}"
    );
    bed.events("a", "AddedInterface", 2).await;

    // A process on the node reaches the API at the host kubeconfig's address.
    let n1 = bed.sim.node("node-1").expect("node");
    let url = format!("{}/api", bed.server.url());
    let out = n1
        .command("curl")
        .expect("command")
        .args(["-sS", "--max-time", "10", &url])
        .output()
        .await
        .expect("curl");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        body.contains("APIVersions"),
        "from inside node-1: {body} {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let lease = n1
        .host_path(Path::new("/var/lib/cni/networks/kube-sim-primary"))
        .join(&pod_ip);
    let blue_lease = n1
        .host_path(Path::new("/var/lib/cni/networks/blue"))
        .join(&net1_ip);
    assert!(
        lease.exists() && blue_lease.exists(),
        "host-local holds both addresses"
    );

    // Watch the pod through its deletion: Multus's DEL empties network-status first.
    let (watching, watch_started) = tokio::sync::oneshot::channel();
    let history = tokio::spawn({
        use futures::StreamExt;
        let stream = kube::runtime::watcher::watch_object(bed.pods(), "a");
        async move {
            let mut seen = Vec::new();
            let mut watching = Some(watching);
            let mut stream = Box::pin(stream);
            while let Some(Ok(Some(p))) = stream.next().await {
                let annotations = p.metadata.annotations.unwrap_or_default();
                seen.push(
                    annotations
                        .get("k8s.v1.cni.cncf.io/network-status")
                        .cloned(),
                );
                if let Some(tx) = watching.take() {
                    let _ = tx.send(());
                }
            }
            seen
        }
    });
    watch_started.await.expect("the watch saw the pod");
    bed.delete(&pod).await;
    let seen = tokio::time::timeout(WAIT, history)
        .await
        .expect("watch ends")
        .expect("task");
    assert!(seen.contains(&Some("[]".to_string())), "{seen:?}");
    assert!(
        !Path::new("/run/netns").join(&netns).exists(),
        "pod namespace removed"
    );
    assert!(!lease.exists(), "eth0 address released");
    assert!(!blue_lease.exists(), "net1 address released");
    bed.down().await;
}

#[tokio::test]
async fn pods_on_two_nodes_ping_each_other() {
    let bed = bed(2).await;
    bed.pod("p1", None, json!({"nodeName": "node-1"})).await;
    bed.pod(
        "p2",
        None,
        json!({"nodeSelector": {"kubernetes.io/hostname": "node-2"}}),
    )
    .await;
    let p1 = bed.running("p1").await;
    let p2 = bed.running("p2").await;
    assert_eq!(
        p2.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some("node-2")
    );
    let ip1 = p1
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("ip1");
    let ip2 = p2
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("ip2");
    assert!(
        ip1.starts_with("10.244.0.") && ip2.starts_with("10.244.1."),
        "{ip1} {ip2}"
    );
    for (from, to) in [(&p1, &ip2), (&p2, &ip1)] {
        let netns = annotation(from, NETNS_ANNOTATION);
        let ok = Command::new("ip")
            .args(["netns", "exec", netns, "ping", "-c", "2", "-W", "5", to])
            .output()
            .expect("ping")
            .status
            .success();
        assert!(ok, "ping {to} from {netns}");
    }
    // A hostNetwork pod gets no sandbox: it runs with its node's address.
    bed.pod(
        "h",
        None,
        json!({"nodeName": "node-2", "hostNetwork": true}),
    )
    .await;
    let h = bed.running("h").await;
    let node2 = bed.sim.node("node-2").expect("node-2");
    assert_eq!(
        h.status.as_ref().and_then(|s| s.pod_ip.clone()),
        Some(node2.underlay_ip.to_string())
    );
    assert!(kube_sim::nodes::pod_netns_path(&h).is_none());
    assert!(kube_sim::nodes::pod_netns_path(&p1).is_some_and(|p| p.exists()));
    bed.delete(&h).await;
    bed.delete(&p1).await;
    bed.delete(&p2).await;
    bed.down().await;
}

#[tokio::test]
async fn failures_become_events_and_retries_without_blocking_others() {
    let bed = bed(1).await;
    bed.nad(
        "broken",
        r#"{"cniVersion":"1.0.0","type":"no-such-plugin"}"#,
    )
    .await;
    bed.pod("missing", Some("later"), json!({})).await;
    bed.pod("malformed", Some("a/b/c"), json!({})).await;
    bed.pod("failing", Some("broken"), json!({})).await;
    bed.pod("fine", None, json!({})).await;

    bed.running("fine").await;
    let missing = bed.events("missing", "FailedCreatePodSandBox", 2).await;
    assert!(missing[0]
        .message
        .as_deref()
        .unwrap_or_default()
        .contains("network-attachment-definition (later)"));
    bed.events("missing", "NoNetworkFound", 1).await;
    let malformed = bed.events("malformed", "FailedCreatePodSandBox", 2).await;
    assert!(malformed[0]
        .message
        .as_deref()
        .unwrap_or_default()
        .contains("a/b/c"));
    let failing = bed.events("failing", "FailedCreatePodSandBox", 2).await;
    assert!(failing[0]
        .message
        .as_deref()
        .unwrap_or_default()
        .contains("no-such-plugin"));

    // The retry picks up a NAD created later.
    bed.nad("later", BRIDGE_NAD).await;
    bed.running("missing").await;

    for name in ["missing", "malformed", "failing", "fine"] {
        let pod = bed.pods().get(name).await.expect("pod");
        bed.delete(&pod).await;
    }
    assert!(netns_with_prefix(&format!("{}-p-", bed.sim.netns_prefix())).is_empty());
    bed.down().await;
}

/// A delegate that records how it was exec'd (in the node's private /run/openvswitch) and
/// answers like the kube-ovn shim does (0.3.1, one sandbox interface, `ips[].interface` 0).
const PROBE_PLUGIN: &str = r#"#!/bin/sh
log=/run/openvswitch/probe.log
input=$(cat)
{
  echo "COMMAND=$CNI_COMMAND"
  echo "ARGS=$CNI_ARGS"
  echo "IFNAME=$CNI_IFNAME"
  echo "NETNS=$CNI_NETNS"
  echo "CONTAINERID=$CNI_CONTAINERID"
  echo "STDIN=$input"
} >> $log
if [ "$CNI_COMMAND" = ADD ]; then
  printf '{"cniVersion":"0.3.1","interfaces":[{"name":"%s","mac":"02:00:00:00:00:07","sandbox":"%s"}],"ips":[{"version":"4","address":"10.100.0.7/16","gateway":"10.100.0.1","interface":0}],"dns":{}}' "$CNI_IFNAME" "$CNI_NETNS"
fi
"#;

#[tokio::test]
async fn delegate_is_execd_inside_its_node_exactly_as_multus_does() {
    use std::os::unix::fs::PermissionsExt;
    let bed = bed(2).await;
    for node in bed.sim.nodes() {
        let plugin = node.host_path(Path::new("/opt/cni/bin/probe"));
        std::fs::write(&plugin, PROBE_PLUGIN).expect("write plugin");
        std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    bed.nad(
        "probe-net",
        r#"{"cniVersion":"0.3.1","type":"probe","server_socket":"/run/openvswitch/kube-ovn-daemon.sock",
            "provider":"probe-net.default.ovn"}"#,
    )
    .await;
    let networks = r#"[{"name":"probe-net","interface":"net5","ips":["10.100.0.7"],"mac":"02:00:00:00:00:07"}]"#;
    bed.pod("k", Some(networks), json!({"nodeName": "node-2"}))
        .await;
    let pod = bed.running("k").await;
    let uid = pod.metadata.uid.clone().expect("uid");
    let netns = annotation(&pod, NETNS_ANNOTATION).to_string();

    let node2 = bed.sim.node("node-2").expect("node-2");
    let log_path = node2.host_path(Path::new("/run/openvswitch/probe.log"));
    let log = std::fs::read_to_string(&log_path).expect("the plugin ran on node-2");
    assert!(!bed
        .sim
        .node("node-1")
        .expect("node-1")
        .host_path(Path::new("/run/openvswitch/probe.log"))
        .exists());
    assert!(!Path::new("/run/openvswitch/probe.log").exists());
    let field = |text: &str, key: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{key} missing in {text}"))
            .to_string()
    };
    let container_id = field(&log, "CONTAINERID");
    assert_eq!(container_id.len(), 64);
    assert_eq!(field(&log, "COMMAND"), "ADD");
    assert_eq!(
        field(&log, "ARGS"),
        format!(
            "IgnoreUnknown=true;K8S_POD_NAMESPACE=default;K8S_POD_NAME=k;K8S_POD_INFRA_CONTAINER_ID={container_id};\
             K8S_POD_UID={uid};MAC=02:00:00:00:00:07;IP=10.100.0.7"
        )
    );
    assert_eq!(field(&log, "IFNAME"), "net5");
    assert_eq!(field(&log, "NETNS"), format!("/run/netns/{netns}"));
    let stdin: Value = serde_json::from_str(&field(&log, "STDIN")).expect("stdin JSON");
    assert_eq!(
        stdin,
        json!({"cniVersion": "0.3.1", "name": "probe-net", "type": "probe",
               "server_socket": "/run/openvswitch/kube-ovn-daemon.sock", "provider": "probe-net.default.ovn"})
    );
    let status: Vec<Value> =
        serde_json::from_str(annotation(&pod, "k8s.v1.cni.cncf.io/network-status"))
            .expect("network-status JSON");
    assert_eq!(
        status[1],
        json!({"name": "default/probe-net", "interface": "net5", "ips": ["10.100.0.7"],
               "mac": "02:00:00:00:00:07", "dns": {}})
    );

    // DEL after the NAD is gone still reaches the plugin, without IP/MAC and (0.3.1) without
    // prevResult.
    let nads: Api<DynamicObject> =
        Api::namespaced_with(bed.client.clone(), "default", &nad::resource());
    nads.delete("probe-net", &DeleteParams::default())
        .await
        .expect("delete NAD");
    bed.delete(&pod).await;
    let log = std::fs::read_to_string(&log_path).expect("log");
    let del = log
        .split("COMMAND=")
        .find(|chunk| chunk.starts_with("DEL"))
        .expect("a DEL call");
    assert_eq!(
        field(del, "ARGS"),
        format!(
            "IgnoreUnknown=true;K8S_POD_NAMESPACE=default;K8S_POD_NAME=k;K8S_POD_INFRA_CONTAINER_ID={container_id};\
             K8S_POD_UID={uid}"
        )
    );
    let del_stdin: Value = serde_json::from_str(&field(del, "STDIN")).expect("stdin JSON");
    assert!(del_stdin.get("prevResult").is_none());
    assert_eq!(del_stdin["name"], "probe-net");
    bed.down().await;
}

#[tokio::test]
async fn default_network_annotation_replaces_eth0() {
    let bed = bed(1).await;
    bed.nad("blue", BRIDGE_NAD).await;
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "dn", "namespace": "default",
                     "annotations": {"v1.multus-cni.io/default-network": "default/blue"}},
        "spec": {"containers": [{"name": "app", "image": "nginx"}]},
    }))
    .expect("pod");
    bed.pods()
        .create(&PostParams::default(), &pod)
        .await
        .expect("create");
    let pod = bed.running("dn").await;
    let pod_ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("podIP");
    assert!(pod_ip.starts_with("192.168.60."), "{pod_ip}");
    let status: Vec<Value> =
        serde_json::from_str(annotation(&pod, "k8s.v1.cni.cncf.io/network-status"))
            .expect("network-status JSON");
    assert_eq!(status.len(), 1, "{status:?}");
    assert_eq!(status[0]["name"], "default/blue");
    assert_eq!(status[0]["interface"], "eth0");
    assert_eq!(status[0]["default"], true);
    bed.delete(&pod).await;
    bed.down().await;
}

#[tokio::test]
async fn dropping_the_simulator_without_shutdown_still_removes_its_namespaces() {
    let bed = bed(2).await;
    bed.pod("x", None, json!({})).await;
    bed.running("x").await;
    let prefix = bed.sim.netns_prefix().to_string();
    assert!(!netns_with_prefix(&prefix).is_empty());
    drop(bed.sim);
    // The aborted pod loop releases the last reference to the nodes a moment later.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !netns_with_prefix(&prefix).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "namespaces left: {:?}",
            netns_with_prefix(&prefix)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bed.server.shutdown().await;
}
