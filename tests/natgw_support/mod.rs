//! Test bed for the NAT gateway: a VPC LAN (two pods on a bridge), the gateway with a LAN and
//! an external leg, and an external host, each a network namespace joined by veths:
//!
//! ```text
//!  pod-a 10.100.0.2 ─┐
//!  pod-b 10.100.0.3 ─┤ br0 (switch) ── lan0 10.100.0.254 [gw] ext0 172.19.0.10 ── eth1 172.19.0.1 [ext]
//! ```
//!
//! The pods route everything via 10.100.0.254; the external host has no route back to the
//! VPC, so only NATed traffic gets answers. Also: running code inside a netns (a thread that
//! `setns`es and runs its own tokio runtime), TCP servers that answer with the peer address
//! they saw, and clients that read it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::cni_support::{tool, Netns};

pub const LAN_IF: &str = "lan0";
pub const EXT_IF: &str = "ext0";
pub const POD_A: &str = "10.100.0.2";
pub const POD_B: &str = "10.100.0.3";
pub const GW_LAN: &str = "10.100.0.254";
pub const GW_EXT: &str = "172.19.0.10";
pub const EXT_HOST: &str = "172.19.0.1";

pub struct Topology {
    pub pod_a: Netns,
    pub pod_b: Netns,
    pub switch: Netns,
    pub gw: Netns,
    pub ext: Netns,
}

impl Topology {
    pub fn new() -> Topology {
        let t = Topology {
            pod_a: Netns::new("nga"),
            pod_b: Netns::new("ngb"),
            switch: Netns::new("ngsw"),
            gw: Netns::new("nggw"),
            ext: Netns::new("ngext"),
        };
        let sw = &t.switch;
        sw.ip(&["link", "add", "br0", "type", "bridge"]);
        sw.ip(&["link", "set", "br0", "up"]);
        for (port, peer, peer_if) in [
            ("p-a", &t.pod_a, "eth1"),
            ("p-b", &t.pod_b, "eth1"),
            ("p-gw", &t.gw, LAN_IF),
        ] {
            sw.ip(&[
                "link", "add", port, "type", "veth", "peer", "name", peer_if, "netns", &peer.name,
            ]);
            sw.ip(&["link", "set", port, "master", "br0", "up"]);
            peer.ip(&["link", "set", peer_if, "up"]);
            peer.ip(&["link", "set", "lo", "up"]);
        }
        t.gw.ip(&[
            "link",
            "add",
            EXT_IF,
            "type",
            "veth",
            "peer",
            "name",
            "eth1",
            "netns",
            &t.ext.name,
        ]);
        t.gw.ip(&["link", "set", EXT_IF, "up"]);
        t.ext.ip(&["link", "set", "eth1", "up"]);
        t.ext.ip(&["link", "set", "lo", "up"]);
        t.pod_a
            .ip(&["addr", "add", &format!("{POD_A}/24"), "dev", "eth1"]);
        t.pod_b
            .ip(&["addr", "add", &format!("{POD_B}/24"), "dev", "eth1"]);
        for pod in [&t.pod_a, &t.pod_b] {
            pod.ip(&["route", "add", "default", "via", GW_LAN]);
        }
        t.gw.ip(&["addr", "add", &format!("{GW_LAN}/24"), "dev", LAN_IF]);
        t.gw.ip(&["addr", "add", &format!("{GW_EXT}/24"), "dev", EXT_IF]);
        t.gw.ip(&["route", "add", "default", "via", EXT_HOST]);
        // A new netns copies the host's IPv4 forwarding: start the gateway from off.
        t.gw.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=0"])
            .expect("forwarding off");
        t.ext
            .ip(&["addr", "add", &format!("{EXT_HOST}/24"), "dev", "eth1"]);
        // Learn from gratuitous ARP, so the test can see the gateway announce an EIP.
        t.ext
            .exec(&["sysctl", "-qw", "net.ipv4.conf.eth1.arp_accept=1"])
            .ok();
        t
    }
}

pub trait NetnsExt {
    fn exec(&self, argv: &[&str]) -> Result<String, String>;
    fn ping(&self, ip: &str) -> bool;
    /// Runs `f`'s future on a thread inside this netns, on that thread's own runtime.
    fn run<T, F, Fut>(&self, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T>;
    fn serve(&self, addr: &str) -> Server;
    fn connect(&self, addr: &str) -> std::io::Result<Connection>;
    /// The `nft -j list table ip kube-ovn-nat` rules of this netns, as JSON objects.
    fn nft_rules(&self) -> Vec<serde_json::Value>;
    fn nft_text(&self) -> String;
    /// Lines of `/proc/net/nf_conntrack` that contain every one of `needles`.
    fn conntrack(&self, needles: &[&str]) -> Vec<String>;
}

impl NetnsExt for Netns {
    fn exec(&self, argv: &[&str]) -> Result<String, String> {
        let out: Output = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(argv)
            .output()
            .expect("ip netns exec");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "{argv:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn ping(&self, ip: &str) -> bool {
        self.exec(&["ping", "-c", "1", "-W", "2", ip]).is_ok()
    }

    fn run<T, F, Fut>(&self, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T>,
    {
        let path = self.path();
        std::thread::spawn(move || {
            enter(&path);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(f())
        })
        .join()
        .expect("netns thread")
    }

    fn serve(&self, addr: &str) -> Server {
        let path = self.path();
        let addr: SocketAddr = addr.parse().expect("server address");
        let listener = std::thread::spawn(move || {
            enter(&path);
            TcpListener::bind(addr).expect("bind")
        })
        .join()
        .expect("bind thread");
        Server::start(listener)
    }

    fn connect(&self, addr: &str) -> std::io::Result<Connection> {
        let path = self.path();
        let addr: SocketAddr = addr.parse().expect("address");
        std::thread::spawn(move || {
            enter(&path);
            let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
            stream.set_read_timeout(Some(Duration::from_secs(3)))?;
            let mut c = Connection {
                reader: BufReader::new(stream.try_clone()?),
                stream,
                seen_as: String::new(),
            };
            c.seen_as = c.line()?;
            Ok(c)
        })
        .join()
        .expect("connect thread")
    }

    fn nft_rules(&self) -> Vec<serde_json::Value> {
        let json = self
            .exec(&["nft", "-j", "list", "table", "ip", "kube-ovn-nat"])
            .expect("nft list table");
        let v: serde_json::Value = serde_json::from_str(&json).expect("nft -j output");
        v["nftables"]
            .as_array()
            .expect("nftables array")
            .iter()
            .filter_map(|o| o.get("rule").cloned())
            .collect()
    }

    fn nft_text(&self) -> String {
        self.exec(&["nft", "list", "table", "ip", "kube-ovn-nat"])
            .expect("nft list table")
    }

    fn conntrack(&self, needles: &[&str]) -> Vec<String> {
        self.exec(&["cat", "/proc/net/nf_conntrack"])
            .expect("read conntrack")
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .map(String::from)
            .collect()
    }
}

/// Moves the calling thread into the netns at `path`.
fn enter(path: &std::path::Path) {
    let f = std::fs::File::open(path).expect("open netns");
    // SAFETY: setns on this thread only; the fd is valid for the call.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns into {}", path.display());
}

/// A TCP server: to each client it first writes the address it saw the client as, then
/// echoes lines until the client closes.
pub struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(listener: TcpListener) -> Server {
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut clients = Vec::new();
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, peer)) => {
                        stream.set_nonblocking(false).expect("blocking");
                        clients.push(std::thread::spawn(move || echo(stream, peer)));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Server {
            stop,
            thread: Some(thread),
        }
    }
}

fn echo(mut stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    if writeln!(stream, "{}", peer.ip()).is_err() {
        return;
    }
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
        if stream.write_all(line.as_bytes()).is_err() {
            return;
        }
        line.clear();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A client connection; `seen_as` is the address the server saw it as.
pub struct Connection {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    pub seen_as: String,
}

impl Connection {
    fn line(&mut self) -> std::io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed",
            ));
        }
        Ok(line.trim().to_string())
    }

    /// Sends `text` and reads the echo.
    pub fn echo(&mut self, text: &str) -> std::io::Result<String> {
        writeln!(self.stream, "{text}")?;
        self.line()
    }
}

/// Runs a tool in the test's own netns that must succeed.
pub fn sh(cmd: &str, args: &[&str]) -> String {
    tool(cmd, args)
}

/// `kube-ovn nat-gw` running inside a netns, stopped with SIGTERM on drop.
pub struct NatGwProcess {
    child: Option<std::process::Child>,
    pub log: std::path::PathBuf,
}

impl NatGwProcess {
    /// Starts the role in `netns` for gateway `gateway`, as pod `kube-system/<pod>`.
    pub fn start(
        netns: &Netns,
        gateway: &str,
        pod: &str,
        kubeconfig: &std::path::Path,
        log: std::path::PathBuf,
    ) -> NatGwProcess {
        let child = Command::new("ip")
            .args(["netns", "exec", &netns.name])
            .arg(env!("CARGO_BIN_EXE_kube-ovn"))
            .arg("--log-level=info,kube_ovn=debug")
            .arg(format!("--log-file={}", log.display()))
            .arg("nat-gw")
            .env("KUBECONFIG", kubeconfig)
            .env("GATEWAY_NAME", gateway)
            .env("POD_NAME", pod)
            .env("POD_NAMESPACE", "kube-system")
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("spawn kube-ovn nat-gw");
        NatGwProcess {
            child: Some(child),
            log,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with the log if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("kube-ovn nat-gw exited with {status}:\n{}", self.log_text());
            }
        }
    }

    /// SIGTERM, then the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        // `ip netns exec` execs the program, so the child pid is the program's.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(s)) = child.try_wait() {
                return Some(s);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for NatGwProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Polls `check` every 100 ms until it is true or `timeout` passes.
pub fn wait_for(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    check()
}
