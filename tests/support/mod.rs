//! Test support: the OVN test bed (`hack/ovn-sandbox.sh`) as a Rust value.
//!
//! `OvnSandbox::up(n)` brings up NB/SB, northd and `n` nodes under a fresh
//! temporary directory; dropping it tears everything down, also when the test
//! panicked. Names derive from the directory, so tests run in parallel.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// What one exec of a CNI plugin (ours or Debian's) gave back.
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {:?} {}",
                self.stdout, self.stderr
            )
        })
    }

    pub fn assert_ok(&self, what: &str) {
        assert_eq!(self.code, 0, "{what}: {} {}", self.stdout, self.stderr);
    }

    /// A CNI error with `code` whose message names `needle`.
    pub fn assert_error(&self, code: u32, needle: &str) {
        assert_eq!(self.code, 1, "exit status; {} {}", self.stdout, self.stderr);
        let j = self.json();
        assert_eq!(j["code"], code, "{j}");
        let msg = j["msg"].as_str().expect("msg");
        assert!(msg.contains(needle), "msg lacks {needle:?}: {j}");
    }
}

/// Runs `cmd` as libcni runs a plugin: `stdin` (the network config) on its
/// standard input, standard output and error captured.
pub fn run_with_stdin(cmd: &mut Command, stdin: &serde_json::Value) -> Outcome {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.to_string().as_bytes())
        .expect("write the config");
    let out = child.wait_with_output().expect("plugin ran");
    Outcome {
        code: out.status.code().expect("exit code"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The repository root (where `hack/` lives).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn sandbox_script() -> PathBuf {
    repo_root().join("hack/ovn-sandbox.sh")
}

/// Runs a command and returns its output, panicking with stderr when it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs a command and returns its trimmed stdout.
pub fn stdout(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run(cmd).stdout).trim().to_string()
}

/// A running OVN test bed.
pub struct OvnSandbox {
    dir: tempfile::TempDir,
    prefix: String,
    nodes: usize,
}

impl OvnSandbox {
    /// Brings up central and `nodes` chassis; returns once every chassis registered.
    pub fn up(nodes: usize) -> OvnSandbox {
        // Short path: OVS control sockets live in it and unix paths max out at 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("kovn")
            .tempdir_in("/tmp")
            .expect("creating a sandbox directory in /tmp");
        let path = dir.path().to_path_buf();
        // The script wants to create the directory itself.
        std::fs::remove_dir(&path).expect("emptying the sandbox directory");
        let prefix = stdout(Command::new(sandbox_script()).arg("prefix").arg(&path));
        let sandbox = OvnSandbox { dir, prefix, nodes };
        run(Command::new(sandbox_script())
            .arg("up")
            .arg(&path)
            .arg(nodes.to_string()));
        sandbox
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Namespace prefix: every namespace of this sandbox starts with `<prefix>-`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// OVSDB endpoint of the northbound database, e.g. `unix:/tmp/kovnX/central/nb.sock`.
    pub fn nb_endpoint(&self) -> String {
        format!("unix:{}/central/nb.sock", self.dir().display())
    }

    pub fn sb_endpoint(&self) -> String {
        format!("unix:{}/central/sb.sock", self.dir().display())
    }

    /// OVSDB endpoint of node `n`'s Open_vSwitch database (nodes count from 1).
    pub fn node_db_endpoint(&self, n: usize) -> String {
        format!("unix:{}/n{n}/db.sock", self.dir().display())
    }

    /// Network namespace of node `n`.
    pub fn node_netns(&self, n: usize) -> String {
        format!("{}-n{n}", self.prefix)
    }

    /// Network namespace of a pod made by [`OvnSandbox::attach_pod`].
    pub fn pod_netns(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// Runs `ovn-nbctl` against this sandbox's NB and returns stdout.
    pub fn nbctl(&self, args: &[&str]) -> String {
        stdout(
            Command::new("ovn-nbctl")
                .arg(format!("--db={}", self.nb_endpoint()))
                .arg("--timeout=20")
                .args(args),
        )
    }

    /// Runs `ovn-sbctl` against this sandbox's SB and returns stdout.
    pub fn sbctl(&self, args: &[&str]) -> String {
        stdout(
            Command::new("ovn-sbctl")
                .arg(format!("--db={}", self.sb_endpoint()))
                .arg("--timeout=20")
                .args(args),
        )
    }

    /// Runs `ovs-vsctl` against node `n` and returns stdout.
    pub fn vsctl(&self, n: usize, args: &[&str]) -> String {
        stdout(
            Command::new("ovs-vsctl")
                .arg(format!("--db={}", self.node_db_endpoint(n)))
                .arg("--timeout=20")
                .args(args),
        )
    }

    /// Makes a netns "pod" whose `net1` is plugged into node `n`'s br-int with
    /// `iface-id`, and waits until ovn-controller reports it installed.
    pub fn attach_pod(&self, n: usize, name: &str, iface_id: &str, mac: &str, cidr: &str) {
        run(Command::new(sandbox_script())
            .arg("pod")
            .arg(self.dir())
            .args([&n.to_string(), name, iface_id, mac, cidr]));
    }

    /// Runs a command inside a network namespace.
    pub fn exec_in(&self, netns: &str, argv: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", netns])
            .args(argv)
            .output()
            .expect("spawning ip netns exec")
    }

    /// Pings `ip` from `netns`; true when replies came back.
    pub fn ping(&self, netns: &str, ip: &str) -> bool {
        self.exec_in(netns, &["ping", "-c", "3", "-i", "0.2", "-W", "2", ip])
            .status
            .success()
    }

    /// Pids of every daemon this sandbox started (from their pidfiles).
    pub fn daemon_pids(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for entry in walk_pidfiles(self.dir()) {
            if let Ok(text) = std::fs::read_to_string(&entry) {
                if let Ok(pid) = text.trim().parse() {
                    pids.push(pid);
                }
            }
        }
        pids
    }
}

fn walk_pidfiles(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(subdirs) = std::fs::read_dir(dir) else {
        return out;
    };
    for sub in subdirs.flatten() {
        if let Ok(files) = std::fs::read_dir(sub.path()) {
            out.extend(
                files
                    .flatten()
                    .map(|f| f.path())
                    .filter(|p| p.extension().is_some_and(|e| e == "pid")),
            );
        }
    }
    out
}

impl Drop for OvnSandbox {
    fn drop(&mut self) {
        let status = Command::new(sandbox_script())
            .arg("down")
            .arg(self.dir.path())
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!(
                "ovn-sandbox down {} failed: {status:?}",
                self.dir.path().display()
            );
        }
    }
}

/// Names of network namespaces that start with `prefix`.
pub fn netns_with_prefix(prefix: &str) -> Vec<String> {
    let list = stdout(Command::new("ip").args(["netns", "list"]));
    list.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// Whether a process with this pid exists and is not a zombie.
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}
