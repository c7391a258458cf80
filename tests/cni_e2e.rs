//! The real `kube-ovn` binary exec'd as a CNI plugin, Multus-style (config on stdin, CNI_* env),
//! against a CNI server on a temporary socket whose handler builds the interface with the real
//! netlink layer in a real netns (no OVS here: the port plumbing belongs to the node role).

mod cni_support;
mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kube_ovn::api::mac::MacAddr;
use kube_ovn::cni::protocol::{CniRequest, CniResponse, IpConfig, PodInterface, RouteConfig};
use kube_ovn::cni::{CniError, ErrorCode};
use kube_ovn::node::attachment::{host_veth_name, VethPlan};
use kube_ovn::node::netlink::{inspect, Netlink};
use kube_ovn::node::server::{self, CniHandler};
use serde_json::{json, Value};

use cni_support::{host_link_exists, Netns};
use support::{run_with_stdin, Outcome};

const VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
const MTU: u32 = 1400;

/// A node daemon stand-in: hands out addresses from 10.77.0.0/24 and fd00:77::/64 and builds the
/// interface with `node::netlink`.
struct TestDaemon {
    netlink: Netlink,
    next: AtomicU32,
    given: Mutex<HashMap<(String, String), CniResponse>>,
    calls: AtomicU32,
}

impl TestDaemon {
    fn plan(req: &CniRequest, resp: &CniResponse) -> VethPlan {
        VethPlan {
            host_name: host_veth_name(&req.container_id, &req.ifname),
            pod_netns: PathBuf::from(&req.netns),
            pod_ifname: req.ifname.clone(),
            mac: resp.interface.mac,
            mtu: MTU,
            addresses: resp.ips.iter().map(|ip| ip.address).collect(),
            routes: resp.routes.clone(),
            tx_checksum_off: true,
        }
    }
}

impl CniHandler for TestDaemon {
    async fn add(&self, req: CniRequest) -> Result<CniResponse, CniError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if req.pod_name == "refused" {
            return Err(CniError::new(
                ErrorCode::TryAgainLater,
                "pod default/refused: no annotations after 3s",
            )
            .with_details("waited for attachnet.default.ovn.kubernetes.io/allocated"));
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed) + 10;
        let mac = req
            .mac
            .unwrap_or(MacAddr([0x0a, 0x58, 0x0a, 0x4d, 0x00, n as u8]));
        let resp = CniResponse {
            interface: PodInterface {
                name: req.ifname.clone(),
                mac,
                mtu: Some(MTU),
                sandbox: req.netns.clone(),
            },
            ips: vec![
                IpConfig {
                    address: format!("10.77.0.{n}/24").parse().expect("v4"),
                    gateway: Some("10.77.0.1".parse().expect("gw")),
                },
                IpConfig {
                    address: format!("fd00:77::{n:x}/64").parse().expect("v6"),
                    gateway: Some("fd00:77::1".parse().expect("gw6")),
                },
            ],
            routes: vec![RouteConfig {
                dst: "10.78.0.0/16".parse().expect("dst"),
                gw: Some("10.77.0.1".parse().expect("gw")),
            }],
        };
        self.netlink
            .create_veth_in_netns(&Self::plan(&req, &resp))
            .await
            .map_err(|e| e.to_cni())?;
        self.given
            .lock()
            .expect("lock")
            .insert((req.container_id, req.ifname), resp.clone());
        Ok(resp)
    }

    async fn del(&self, req: CniRequest) -> Result<(), CniError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.netlink
            .delete_link(&host_veth_name(&req.container_id, &req.ifname))
            .await
            .map_err(|e| e.to_cni())?;
        self.given
            .lock()
            .expect("lock")
            .remove(&(req.container_id, req.ifname));
        Ok(())
    }

    async fn check(&self, req: CniRequest) -> Result<(), CniError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let Some(want) = self
            .given
            .lock()
            .expect("lock")
            .get(&(req.container_id.clone(), req.ifname.clone()))
            .cloned()
        else {
            return Err(CniError::new(
                ErrorCode::UnknownContainer,
                format!("no attachment {}/{}", req.container_id, req.ifname),
            ));
        };
        let plan = Self::plan(&req, &want);
        let state = inspect(&plan.pod_netns, &plan.pod_ifname)
            .await
            .map_err(|e| e.to_cni())?
            .ok_or_else(|| {
                CniError::new(
                    ErrorCode::Io,
                    format!("{} is gone from {}", req.ifname, req.netns),
                )
            })?;
        let mut addrs = state.addresses.clone();
        addrs.sort();
        let mut want_addrs = plan.addresses.clone();
        want_addrs.sort();
        if state.mac != plan.mac
            || state.mtu != plan.mtu
            || addrs != want_addrs
            || state.routes != plan.routes
        {
            return Err(CniError::new(
                ErrorCode::Io,
                format!("{} does not match: {state:?}", req.ifname),
            ));
        }
        Ok(())
    }

    async fn health(&self) -> Result<(), CniError> {
        Ok(())
    }
}

/// The daemon serving on a temporary socket from its own runtime thread.
struct Daemon {
    socket: PathBuf,
    handler: Arc<TestDaemon>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start() -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("run/kube-ovn-daemon.sock");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let sock = socket.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let handler = Arc::new(TestDaemon {
                    netlink: Netlink::new().expect("netlink"),
                    next: AtomicU32::new(0),
                    given: Mutex::new(HashMap::new()),
                    calls: AtomicU32::new(0),
                });
                let listener = server::bind(&sock).expect("bind CNI socket");
                ready_tx.send(handler.clone()).expect("ready");
                server::serve(listener, handler, async move {
                    let _ = stopped.await;
                })
                .await
                .expect("serve");
            });
        });
        let handler = ready_rx.recv().expect("daemon started");
        Daemon {
            socket,
            handler,
            stop: Some(stop),
            thread: Some(thread),
            _dir: dir,
        }
    }

    fn calls(&self) -> u32 {
        self.handler.calls.load(Ordering::Relaxed)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A pod netns made with `ip netns add`, with an eth0 that a primary CNI would have set up.
struct Pod {
    ns: Netns,
    container_id: String,
}

impl Pod {
    fn new(tag: &str) -> Pod {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let pod = Pod {
            ns: Netns::new(tag),
            container_id: format!("{:x}{:07x}{n:03x}c0ffee", n % 16, std::process::id()),
        };
        pod.ip(&[
            "link", "add", "eth0", "type", "veth", "peer", "name", "eth0peer",
        ]);
        pod.ip(&["addr", "add", "192.168.250.2/24", "dev", "eth0"]);
        pod.ip(&["link", "set", "eth0", "up"]);
        pod.ip(&["link", "set", "eth0peer", "up"]);
        pod.ip(&[
            "route",
            "add",
            "default",
            "via",
            "192.168.250.1",
            "dev",
            "eth0",
        ]);
        pod
    }
    fn netns(&self) -> String {
        self.ns.path().display().to_string()
    }
    fn ip(&self, args: &[&str]) -> String {
        self.ns.ip(args)
    }
    fn ip_json(&self, args: &[&str]) -> Value {
        self.ns.ip_json(args)
    }
    fn has_link(&self, name: &str) -> bool {
        self.ns.has_link(name)
    }
    fn host_veth(&self, ifname: &str) -> String {
        host_veth_name(&self.container_id, ifname)
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_veth("net1")])
            .output();
    }
}

fn multus_args(ns: &str, pod: &str) -> String {
    format!("IgnoreUnknown=true;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={pod};K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1")
}

/// Execs the plugin as libcni does.
fn exec(command: &str, config: &Value, env: &[(&str, &str)]) -> Outcome {
    run_with_stdin(
        Command::new(env!("CARGO_BIN_EXE_kube-ovn"))
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_PATH", "/opt/cni/bin")
            .envs(env.iter().copied()),
        config,
    )
}

fn conf(version: &str, socket: &Path) -> Value {
    json!({"cniVersion": version, "type": "kube-ovn", "server_socket": socket, "provider": "attachnet.default.ovn"})
}

fn pod_env(pod: &Pod, args: &str) -> Vec<(&'static str, String)> {
    vec![
        ("CNI_CONTAINERID", pod.container_id.clone()),
        ("CNI_NETNS", pod.netns()),
        ("CNI_IFNAME", "net1".to_string()),
        ("CNI_ARGS", args.to_string()),
    ]
}

fn as_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[test]
fn every_spec_version_adds_checks_and_deletes_through_the_real_binary() {
    let daemon = Daemon::start();
    for (i, version) in VERSIONS.iter().enumerate() {
        let pod = Pod::new("ver");
        let mac = format!("0a:58:0a:4d:01:{i:02x}");
        let args = format!("{};MAC={mac}", multus_args("default", &format!("web-{i}")));
        let env = pod_env(&pod, &args);
        let mut config = conf(version, &daemon.socket);
        if *version == "0.3.1" {
            config["name"] = json!("attachnet"); // libcni fills it from the NAD name; either form works
        }

        let started = Instant::now();
        let add = exec("ADD", &config, &as_refs(&env));
        eprintln!("ADD {version} via exec took {:?}", started.elapsed());
        assert_eq!(add.code, 0, "ADD {version}: {} {}", add.stdout, add.stderr);
        let result = add.json();

        // The result is in the requested version's shape.
        assert_eq!(result["cniVersion"], *version);
        let iface = &result["interfaces"][0];
        assert_eq!(iface["name"], "net1");
        assert_eq!(iface["mac"], mac);
        assert_eq!(iface["sandbox"], pod.netns());
        assert_eq!(
            iface.get("mtu").is_some(),
            *version == "1.1.0",
            "{version}: {iface}"
        );
        let ips = result["ips"].as_array().expect("ips");
        assert_eq!(ips.len(), 2);
        for ip in ips {
            assert_eq!(ip["interface"], 0);
            assert_eq!(
                ip.get("version").is_some(),
                version.starts_with("0."),
                "{version}: {ip}"
            );
        }
        if version.starts_with("0.") {
            assert_eq!(ips[0]["version"], "4");
            assert_eq!(ips[1]["version"], "6");
        }
        assert_eq!(
            result["routes"],
            json!([{"dst": "10.78.0.0/16", "gw": "10.77.0.1"}])
        );

        // The kernel agrees: MAC, MTU, addresses, routes, no default route via net1, eth0 untouched.
        let link = &pod.ip_json(&["link", "show", "net1"])[0];
        assert_eq!(link["address"], mac.as_str());
        assert_eq!(link["mtu"], MTU);
        let addrs: Vec<String> = pod.ip_json(&["addr", "show", "net1", "scope", "global"])[0]
            ["addr_info"]
            .as_array()
            .expect("addr_info")
            .iter()
            .filter_map(|a| Some(format!("{}/{}", a.get("local")?.as_str()?, a["prefixlen"]))) // `ip -j` leaves `{}` for filtered entries
            .collect();
        let mut want: Vec<String> = ips
            .iter()
            .map(|ip| ip["address"].as_str().expect("address").to_string())
            .collect();
        want.sort();
        let mut addrs = addrs;
        addrs.sort();
        assert_eq!(addrs, want);
        let routes = pod.ip(&["route", "show", "dev", "net1"]);
        assert!(routes.contains("10.78.0.0/16 via 10.77.0.1"), "{routes}");
        assert!(!routes.contains("default"), "{routes}");
        assert!(!pod
            .ip(&["-6", "route", "show", "dev", "net1"])
            .contains("default"));
        assert_eq!(
            pod.ip(&["route", "show", "default"]).trim(),
            "default via 192.168.250.1 dev eth0"
        );
        assert!(pod
            .ip(&["addr", "show", "eth0"])
            .contains("192.168.250.2/24"));
        assert!(host_link_exists(&pod.host_veth("net1")));

        // CHECK (0.4.0 and later), with prevResult as libcni sends it.
        let mut with_prev = config.clone();
        with_prev["prevResult"] = result.clone();
        let check = exec("CHECK", &with_prev, &as_refs(&env));
        if version.starts_with("0.3") {
            check.assert_error(ErrorCode::IncompatibleVersion as u32, "CHECK");
        } else {
            assert_eq!(
                check.code, 0,
                "CHECK {version}: {} {}",
                check.stdout, check.stderr
            );
            assert_eq!(check.stdout, "");
        }

        // DEL twice; nothing remains.
        for round in 0..2 {
            let del = exec("DEL", &with_prev, &as_refs(&env));
            assert_eq!(
                del.code, 0,
                "DEL #{round} {version}: {} {}",
                del.stdout, del.stderr
            );
            assert_eq!(del.stdout, "");
        }
        assert!(
            !host_link_exists(&pod.host_veth("net1")),
            "host veth left after DEL"
        );
        assert!(!pod.has_link("net1"), "net1 left after DEL");
        assert!(pod.has_link("eth0"));
    }
}

#[test]
fn runtime_config_ips_and_mac_reach_the_daemon_when_declared() {
    let daemon = Daemon::start();
    let pod = Pod::new("rc");
    let args = multus_args("default", "web-rc");
    let env = pod_env(&pod, &args);
    let mut config = conf("1.0.0", &daemon.socket);
    config["capabilities"] = json!({"ips": true, "mac": true});
    config["runtimeConfig"] = json!({"ips": ["10.77.0.200/24"], "mac": "0a:58:0a:4d:02:02"});
    let add = exec("ADD", &config, &as_refs(&env));
    assert_eq!(add.code, 0, "{} {}", add.stdout, add.stderr);
    assert_eq!(add.json()["interfaces"][0]["mac"], "0a:58:0a:4d:02:02");
    assert_eq!(
        pod.ip_json(&["link", "show", "net1"])[0]["address"],
        "0a:58:0a:4d:02:02"
    );
    assert_eq!(exec("DEL", &config, &as_refs(&env)).code, 0);
    assert!(!pod.has_link("net1"));
}

#[test]
fn bad_input_gives_the_right_code_names_the_problem_and_creates_nothing() {
    let daemon = Daemon::start();
    let pod = Pod::new("bad");
    let args = multus_args("default", "web-bad");
    let env = pod_env(&pod, &args);
    let env = as_refs(&env);
    let nothing_created = |what: &str| {
        assert!(
            !host_link_exists(&pod.host_veth("net1")),
            "{what}: a host veth was created"
        );
        assert!(!pod.has_link("net1"), "{what}: net1 was created");
    };

    let mut no_socket = conf("0.3.1", &daemon.socket);
    no_socket
        .as_object_mut()
        .expect("object")
        .remove("server_socket");
    exec("ADD", &no_socket, &env)
        .assert_error(ErrorCode::InvalidNetworkConfig as u32, "server_socket");
    nothing_created("no server_socket");

    // No provider: answered by the plugin at once (the daemon is not asked), saying what to
    // write; DEL of such a pod still succeeds.
    let mut no_provider = conf("0.3.1", &daemon.socket);
    let object = no_provider.as_object_mut().expect("object");
    object.remove("provider");
    object.insert("name".into(), json!("attachnet"));
    let out = exec("ADD", &no_provider, &env);
    assert_eq!(
        out.json(),
        json!({
            "cniVersion": "0.3.1",
            "code": ErrorCode::InvalidNetworkConfig as u32,
            "msg": "network config \"attachnet\" has no \"provider\", so kube-ovn never allocates an address for it; add \"provider\": \"attachnet.<nad namespace>.ovn\" to the config in the NetworkAttachmentDefinition's spec.config"
        }),
        "{}",
        out.stdout
    );
    nothing_created("no provider");

    exec("ADD", &conf("0.2.0", &daemon.socket), &env)
        .assert_error(ErrorCode::IncompatibleVersion as u32, "0.2.0");
    nothing_created("unknown cniVersion");

    let no_pod: Vec<_> = env
        .iter()
        .filter(|(k, _)| *k != "CNI_ARGS")
        .copied()
        .chain([("CNI_ARGS", "IgnoreUnknown=1")])
        .collect();
    let out = exec("ADD", &conf("1.0.0", &daemon.socket), &no_pod);
    out.assert_error(ErrorCode::InvalidEnvironment as u32, "K8S_POD_NAMESPACE");
    assert!(out.json()["msg"]
        .as_str()
        .expect("msg")
        .contains("K8S_POD_NAME"));
    assert_eq!(out.json()["cniVersion"], "1.0.0");
    nothing_created("missing K8S_POD_*");

    let gone: Vec<_> = env
        .iter()
        .map(|(k, v)| {
            if *k == "CNI_NETNS" {
                (*k, "/var/run/netns/kube-ovn-gone-netns")
            } else {
                (*k, *v)
            }
        })
        .collect();
    exec("ADD", &conf("1.0.0", &daemon.socket), &gone).assert_error(
        ErrorCode::UnknownContainer as u32,
        "/var/run/netns/kube-ovn-gone-netns",
    );
    nothing_created("netns gone");
    let del = exec("DEL", &conf("1.0.0", &daemon.socket), &gone);
    assert_eq!(
        del.code, 0,
        "DEL with a gone netns succeeds: {} {}",
        del.stdout, del.stderr
    );

    let no_netns: Vec<_> = env
        .iter()
        .filter(|(k, _)| *k != "CNI_NETNS")
        .copied()
        .collect();
    assert_eq!(
        exec("DEL", &conf("0.3.1", &daemon.socket), &no_netns).code,
        0,
        "DEL without CNI_NETNS succeeds"
    );

    // The daemon's own errors pass through unchanged.
    let refused_args = multus_args("default", "refused");
    let refused: Vec<_> = env
        .iter()
        .map(|(k, v)| {
            if *k == "CNI_ARGS" {
                (*k, refused_args.as_str())
            } else {
                (*k, *v)
            }
        })
        .collect();
    let out = exec("ADD", &conf("0.4.0", &daemon.socket), &refused);
    out.assert_error(
        ErrorCode::TryAgainLater as u32,
        "pod default/refused: no annotations after 3s",
    );
    assert_eq!(
        out.json()["details"],
        "waited for attachnet.default.ovn.kubernetes.io/allocated"
    );
    assert_eq!(out.json()["cniVersion"], "0.4.0");
    nothing_created("daemon refused");

    // Only the three well-formed requests (ADD refused, DEL gone netns, DEL no netns) reached it.
    assert_eq!(daemon.calls(), 3);
}

#[test]
fn a_dead_daemon_is_try_again_later_naming_the_socket() {
    let pod = Pod::new("dead");
    let args = multus_args("default", "web-dead");
    let env = pod_env(&pod, &args);
    let dir = tempfile::tempdir().expect("tempdir");

    // No socket file at all.
    let missing = dir.path().join("missing.sock");
    let out = exec("ADD", &conf("1.1.0", &missing), &as_refs(&env));
    out.assert_error(
        ErrorCode::TryAgainLater as u32,
        &missing.display().to_string(),
    );
    assert_eq!(out.json()["cniVersion"], "1.1.0");

    // A stale socket file whose daemon is gone.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind"));
    exec("ADD", &conf("0.3.1", &stale), &as_refs(&env)).assert_error(
        ErrorCode::TryAgainLater as u32,
        &stale.display().to_string(),
    );
    exec("DEL", &conf("0.3.1", &stale), &as_refs(&env)).assert_error(
        ErrorCode::TryAgainLater as u32,
        &stale.display().to_string(),
    );

    // STATUS says not available; GC does not need the daemon.
    exec("STATUS", &conf("1.1.0", &stale), &[]).assert_error(
        ErrorCode::PluginNotAvailable as u32,
        &stale.display().to_string(),
    );
    assert!(!host_link_exists(&pod.host_veth("net1")));
    assert!(!pod.has_link("net1"));
}

#[test]
fn status_and_gc_follow_the_version_gates() {
    let daemon = Daemon::start();
    let status = exec("STATUS", &conf("1.1.0", &daemon.socket), &[]);
    assert_eq!(
        (status.code, status.stdout.as_str()),
        (0, ""),
        "{}",
        status.stderr
    );
    exec("STATUS", &conf("1.0.0", &daemon.socket), &[])
        .assert_error(ErrorCode::IncompatibleVersion as u32, "STATUS");

    let mut gc = conf("1.1.0", &daemon.socket);
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "abc", "ifname": "net1"}]);
    let out = exec("GC", &gc, &[]);
    assert_eq!((out.code, out.stdout.as_str()), (0, ""), "{}", out.stderr);
    exec("GC", &conf("0.4.0", &daemon.socket), &[])
        .assert_error(ErrorCode::IncompatibleVersion as u32, "GC");
}

#[test]
fn the_server_answers_garbage_with_a_decode_error_and_keeps_serving() {
    let daemon = Daemon::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let answer =
            kube_ovn::cni::client::call(&daemon.socket, "/api/v1/add", Some(b"{not json".to_vec()))
                .await
                .expect("the daemon answers");
        assert_eq!(answer.status, 400);
        let err: CniError = serde_json::from_slice(&answer.body).expect("a CNI error body");
        assert_eq!(err.code, ErrorCode::Decode as u32);
        let health = kube_ovn::cni::client::call(&daemon.socket, "/healthz", None)
            .await
            .expect("health");
        assert_eq!(health.status, 200);
    });
    let mode = std::fs::metadata(&daemon.socket)
        .expect("socket")
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    // A second daemon on the same socket is refused instead of stealing it.
    let err = rt
        .block_on(async { server::bind(&daemon.socket).map(|_| ()) })
        .expect_err("in use");
    assert!(err.to_string().contains("already serving"), "{err}");
}

#[test]
fn a_daemon_that_accepts_but_never_answers_is_bounded_by_the_response_wait() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("hung.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let err = rt
        .block_on(kube_ovn::cni::client::call_with(
            &socket,
            "/api/v1/add",
            Some(b"{}".to_vec()),
            std::time::Duration::from_millis(500),
            std::time::Duration::from_millis(300),
        ))
        .expect_err("no answer");
    assert_eq!(err.code, ErrorCode::TryAgainLater as u32);
    assert!(
        err.msg.contains(&socket.display().to_string()) && err.msg.contains("no answer"),
        "{}",
        err.msg
    );
    drop(listener);
}
