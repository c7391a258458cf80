//! `hack/bench.sh cni`: ADD and DEL latency of the `kube-ovn` plugin exec'd Multus-style
//! (config on stdin, CNI_* env, the plugin binary the node role installed) against
//! `kube-ovn node` on the OVN test bed, with the pods' annotations already present (as the
//! controller guarantees) — 100 sequential and 16 concurrent — and, in the same run and on the
//! same kind of network namespace, Debian's `bridge` + `host-local`. Both plugins are exec'd
//! in the node's netns (entered with setns before exec, as a runtime on the node would).
//!
//! Prints `BENCH cni add_p50_ms=… add_p99_ms=… del_p50_ms=… bridge_add_p50_ms=… ratio_p50=…
//! ovn_installed_wait_p50_ms=… preplugged_adds=…` plus the concurrent figures. The node
//! pre-plugs (`src/node/preplug.rs`) in the second the annotations sit before the ADDs start;
//! `KOVN_BENCH_NODE_ARGS=--preplug=false` measures ADD building everything itself.

#[path = "../tests/node_support/mod.rs"]
mod node_support;
#[path = "../tests/support/mod.rs"]
mod support;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use node_support::*;
use serde_json::{json, Value};
use support::OvnSandbox;

const SEQUENTIAL: usize = 100;
const CONCURRENT: usize = 16;

/// Execs `program` in the netns open at `netns` with `config` on stdin; the latency.
fn exec_cni(
    program: &Path,
    netns: &File,
    command: &str,
    config: &Value,
    env: &[(String, String)],
    cni_path: &Path,
) -> Duration {
    let fd = netns.as_raw_fd();
    let started = Instant::now();
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_PATH", cni_path)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    // SAFETY: setns(2) is async-signal-safe; only the child calls it, before exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = support::run_with_stdin(&mut cmd, config);
    let took = started.elapsed();
    out.assert_ok(&format!("{} {command}", program.display()));
    took
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// (p50, p99) in milliseconds.
fn percentiles(samples: &[Duration]) -> (f64, f64) {
    let mut v: Vec<f64> = samples.iter().copied().map(ms).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    (at(0.50), at(0.99))
}

/// A plain netns per pod, as a runtime makes them.
struct Pods {
    netns: Vec<String>,
    cids: Vec<String>,
}

impl Pods {
    fn new(prefix: &str, n: usize) -> Pods {
        let netns: Vec<String> = (0..n).map(|i| format!("{prefix}-b{i}")).collect();
        for ns in &netns {
            tool("ip", &["netns", "add", ns]);
        }
        let cids = (0..n)
            .map(|_| uuid::Uuid::new_v4().simple().to_string())
            .collect();
        Pods { netns, cids }
    }

    fn env(&self, i: usize, pod: &str, ifname: &str) -> Vec<(String, String)> {
        vec![
            ("CNI_CONTAINERID".into(), self.cids[i].clone()),
            ("CNI_NETNS".into(), format!("/var/run/netns/{}", self.netns[i])),
            ("CNI_IFNAME".into(), ifname.into()),
            (
                "CNI_ARGS".into(),
                format!("IgnoreUnknown=true;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID=uid-{pod}", self.cids[i]),
            ),
        ]
    }
}

impl Drop for Pods {
    fn drop(&mut self) {
        for ns in &self.netns {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// One plugin measured over pods `range`: each ADD, then each DEL (sequentially or all at once).
struct Run<'a> {
    program: &'a Path,
    cni_path: &'a Path,
    config: &'a Value,
    node_netns: &'a File,
}

impl Run<'_> {
    fn sequential(
        &self,
        pods: &Pods,
        range: std::ops::Range<usize>,
    ) -> (Vec<Duration>, Vec<Duration>) {
        let env = |i: usize| pods.env(i, &pod_name(i), "net1");
        let add = range
            .clone()
            .map(|i| {
                exec_cni(
                    self.program,
                    self.node_netns,
                    "ADD",
                    self.config,
                    &env(i),
                    self.cni_path,
                )
            })
            .collect();
        let del = range
            .map(|i| {
                exec_cni(
                    self.program,
                    self.node_netns,
                    "DEL",
                    self.config,
                    &env(i),
                    self.cni_path,
                )
            })
            .collect();
        (add, del)
    }

    /// Every pod of `range` at once; (ADD latencies, ADD wall time, DEL latencies).
    fn concurrent(
        &self,
        pods: &Pods,
        range: std::ops::Range<usize>,
    ) -> (Vec<Duration>, Duration, Vec<Duration>) {
        let phase = |command: &'static str| {
            let barrier = Arc::new(Barrier::new(range.len()));
            let started = Instant::now();
            let latencies = std::thread::scope(|s| {
                let handles: Vec<_> = range
                    .clone()
                    .map(|i| {
                        let barrier = barrier.clone();
                        let env = pods.env(i, &pod_name(i), "net1");
                        s.spawn(move || {
                            barrier.wait();
                            exec_cni(
                                self.program,
                                self.node_netns,
                                command,
                                self.config,
                                &env,
                                self.cni_path,
                            )
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("worker"))
                    .collect::<Vec<_>>()
            });
            (latencies, started.elapsed())
        };
        let (add, wall) = phase("ADD");
        let (del, _) = phase("DEL");
        (add, wall, del)
    }
}

fn pod_name(i: usize) -> String {
    format!("bench-{i}")
}

fn pod_ip(i: usize) -> String {
    assert!(i < 240, "one /24 subnet");
    format!("10.66.0.{}", 10 + i)
}

fn pod_mac(i: usize) -> String {
    format!("0a:58:0a:42:{:02x}:{:02x}", i / 256, i % 256)
}

/// `ovn_installed_wait_ms=` values the node role logged.
fn ovn_installed_waits(log: &str) -> Vec<Duration> {
    log.lines()
        .filter_map(|l| l.split("ovn_installed_wait_ms=").nth(1))
        .filter_map(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map(|m| Duration::from_secs_f64(m / 1e3))
        .collect()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let total = SEQUENTIAL + CONCURRENT;
    let sandbox = OvnSandbox::up(1);
    let kube = Kube::start();
    let dir = tempfile::Builder::new()
        .prefix("kovn-bench")
        .tempdir_in("/tmp")
        .expect("tmp");
    let kubeconfig = kube.kubeconfig_in(&sandbox.node_netns(1), dir.path());
    // KOVN_BENCH_LOG=info,kube_ovn=debug adds the per-step timings of each ADD to the log.
    let level = std::env::var("KOVN_BENCH_LOG").unwrap_or_else(|_| "info".into());
    let node_args = std::env::var("KOVN_BENCH_NODE_ARGS").unwrap_or_default();
    let node_args: Vec<&str> = node_args.split_whitespace().collect();
    let node = NodeDaemon::start_logged(&sandbox, 1, &kubeconfig, dir.path(), &node_args, &level);

    // The controller's part, done up front: LSPs in NB and allocation annotations.
    let mut nbctl: Vec<String> = vec!["--may-exist".into(), "ls-add".into(), SUBNET.into()];
    for i in 0..total {
        let lsp = format!("{}.default.{PROVIDER}", pod_name(i));
        nbctl.extend(
            [
                "--",
                "lsp-add",
                SUBNET,
                &lsp,
                "--",
                "lsp-set-addresses",
                &lsp,
                &format!("{} {}", pod_mac(i), pod_ip(i)),
            ]
            .map(String::from),
        );
    }
    sandbox.nbctl(&nbctl.iter().map(String::as_str).collect::<Vec<_>>());
    for i in 0..total {
        kube.create_pod(
            &pod_name(i),
            "node1",
            &allocation(PROVIDER, &pod_ip(i), &pod_mac(i)),
        );
    }
    // The gap a kubelet leaves between the controller's annotations and the CNI ADD (pause
    // image, netns, the primary CNI for eth0): the node sees the annotations and pre-plugs
    // meanwhile (`preplugged_adds=` counts the ADDs that adopted a pre-plugged interface).
    std::thread::sleep(Duration::from_secs(1));

    let pods = Pods::new(sandbox.prefix(), total);
    let node_netns =
        File::open(format!("/var/run/netns/{}", sandbox.node_netns(1))).expect("open node netns");
    let ours_config = nad_config("1.0.0", &node.socket);
    let ours = Run {
        program: &node.bin_dir.join("kube-ovn"),
        cni_path: &node.bin_dir,
        config: &ours_config,
        node_netns: &node_netns,
    };
    let bridge_config = json!({
        "cniVersion": "1.0.0", "name": "benchnet", "type": "bridge", "bridge": "kobench0",
        "isGateway": true, "ipMasq": false,
        "ipam": {"type": "host-local", "subnet": "10.245.0.0/16",
                 "dataDir": dir.path().join("host-local")},
    });
    let bridge = Run {
        program: Path::new("/usr/lib/cni/bridge"),
        cni_path: Path::new("/usr/lib/cni"),
        config: &bridge_config,
        node_netns: &node_netns,
    };

    // Warm both (page cache, first-bridge creation), then measure.
    let (_, _) = bridge.sequential(&pods, 0..1);
    let (_, _) = ours.sequential(&pods, 0..1);
    let log_before = node.log_text().len();

    let (add, del) = ours.sequential(&pods, 0..SEQUENTIAL);
    let waits = ovn_installed_waits(&node.log_text()[log_before..]);
    let preplugged = node.log_text()[log_before..]
        .matches("preplugged=true")
        .count();
    let (b_add, b_del) = bridge.sequential(&pods, 0..SEQUENTIAL);
    let (c_add, c_wall, c_del) = ours.concurrent(&pods, SEQUENTIAL..total);
    let (bc_add, bc_wall, bc_del) = bridge.concurrent(&pods, SEQUENTIAL..total);

    let (add50, add99) = percentiles(&add);
    let (del50, del99) = percentiles(&del);
    let (badd50, badd99) = percentiles(&b_add);
    let (bdel50, _) = percentiles(&b_del);
    let (wait50, wait99) = percentiles(&waits);
    let (cadd50, cadd99) = percentiles(&c_add);
    let (cdel50, _) = percentiles(&c_del);
    let (bcadd50, bcadd99) = percentiles(&bc_add);
    let (bcdel50, _) = percentiles(&bc_del);
    println!(
        "BENCH cni add_p50_ms={add50:.2} add_p99_ms={add99:.2} del_p50_ms={del50:.2} \
         del_p99_ms={del99:.2} bridge_add_p50_ms={badd50:.2} bridge_add_p99_ms={badd99:.2} \
         bridge_del_p50_ms={bdel50:.2} ratio_p50={:.2} ovn_installed_wait_p50_ms={wait50:.2} \
         ovn_installed_wait_p99_ms={wait99:.2} samples={SEQUENTIAL} preplugged_adds={preplugged}",
        add50 / badd50
    );
    println!(
        "BENCH cni concurrent={CONCURRENT} c_add_p50_ms={cadd50:.2} c_add_p99_ms={cadd99:.2} \
         c_add_wall_ms={:.2} c_del_p50_ms={cdel50:.2} bridge_c_add_p50_ms={bcadd50:.2} \
         bridge_c_add_p99_ms={bcadd99:.2} bridge_c_add_wall_ms={:.2} bridge_c_del_p50_ms={bcdel50:.2} \
         c_ratio_p50={:.2}",
        ms(c_wall),
        ms(bc_wall),
        cadd50 / bcadd50
    );
    let _ = std::fs::write(NODE_LOG, node.log_text());
    eprintln!("node log: {NODE_LOG}");
    drop(pods);
    drop(node);
}

/// Where the node role's log is copied at the end of a run.
const NODE_LOG: &str = "/tmp/kube-ovn-bench-cni-node.log";
