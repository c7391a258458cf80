//! Crash test for the sled-backed `Ipam` (harness = false: `main` is both
//! sides). The parent re-executes this binary as a child that allocates and
//! releases in a loop from 8 concurrent tasks, printing each operation only
//! after `Ipam` acknowledged it (durable). The parent SIGKILLs the child at a
//! random moment, 60 times, and after each kill reopens the store and checks:
//! the allocator is consistent (no address or MAC twice, indexes agree), every
//! acknowledged allocation is there with the same addresses and MAC, and every
//! acknowledged release is gone.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use kube_ovn::ipam::{AllocationRequest, Ipam, Release, Released, SubnetSpec};
use rand::Rng;

const CHILD_ENV: &str = "IPAM_CRASH_CHILD_DIR";
const RUN_ENV: &str = "IPAM_CRASH_RUN";
const KILLS: usize = 60;
const TASKS: usize = 8;

fn subnet() -> SubnetSpec {
    SubnetSpec::new("crash", "10.50.0.0/26,fd50::/122").with_exclude_ips(["10.50.0.60..10.50.0.62"])
}

fn main() {
    match std::env::var_os(CHILD_ENV) {
        Some(dir) => child(PathBuf::from(dir)),
        None => parent(),
    }
}

/// Writes one acknowledged event as a whole line.
fn report(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn child(dir: PathBuf) {
    let run: usize = std::env::var(RUN_ENV)
        .ok()
        .and_then(|r| r.parse().ok())
        .expect("run number in env");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let ipam = Arc::new(Ipam::open(&dir).expect("child open"));
        ipam.apply_subnet(subnet()).await.expect("subnet");
        // Free whatever earlier runs left: reconcile against "nothing live".
        // Intent first ("c"), acknowledgement after ("C").
        report("c");
        ipam.reconcile(&HashSet::new()).await.expect("reconcile");
        report("C");
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let ipam = ipam.clone();
            tasks.push(tokio::spawn(async move {
                let mut held: Vec<String> = Vec::new();
                for i in 0.. {
                    let key = format!("r{run}/t{t}/{i}");
                    let a = ipam
                        .allocate(&AllocationRequest::new(&key, "crash"))
                        .await
                        .unwrap_or_else(|e| panic!("child allocate {key}: {e}"));
                    report(&format!("A {key} {} {}", a.ip_annotation(), a.mac));
                    held.push(key);
                    if held.len() > 3 {
                        let old = held.remove(0);
                        report(&format!("r {old}"));
                        let r = ipam
                            .release(&old, Release::PodGone)
                            .await
                            .expect("child release");
                        assert!(matches!(r, Released::Freed(_)), "{old}: {r:?}");
                        report(&format!("R {old}"));
                    }
                }
            }));
        }
        for t in tasks {
            t.await.expect("child task");
        }
    });
}

/// What the parent knows from the child's lines. A release or reconcile the
/// child announced ("r", "c") but did not acknowledge ("R", "C") may or may
/// not have become durable before the kill.
#[derive(Default)]
struct Expected {
    /// key → "ips mac" that must be present.
    present: HashMap<String, String>,
    /// key → "ips mac" that may be present (then unchanged) or gone.
    maybe: HashMap<String, String>,
    /// Keys that must be absent.
    absent: HashSet<String>,
}

impl Expected {
    fn apply(&mut self, line: &str) {
        let mut parts = line.splitn(3, ' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("c"), None, None) => self.maybe.extend(self.present.drain()),
            (Some("C"), None, None) => self.absent.extend(self.maybe.drain().map(|(k, _)| k)),
            (Some("A"), Some(key), Some(rest)) => {
                self.present.insert(key.to_string(), rest.to_string());
            }
            (Some("r"), Some(key), None) => {
                let v = self
                    .present
                    .remove(key)
                    .expect("release of an acknowledged key");
                self.maybe.insert(key.to_string(), v);
            }
            (Some("R"), Some(key), None) => {
                self.maybe.remove(key);
                self.absent.insert(key.to_string());
            }
            _ => panic!("unexpected child line {line:?}"),
        }
    }
}

/// Runs one child and SIGKILLs it `kill_after` after spawning it or, with
/// `after_first_ack`, after its first acknowledged allocation (so half the
/// runs die mid-traffic however slow the machine is, the other half anywhere,
/// start-up included). Returns the complete lines it printed.
fn run_child(dir: &Path, run: usize, kill_after: Duration, after_first_ack: bool) -> Vec<String> {
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .env(CHILD_ENV, dir)
        .env(RUN_ENV, run.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        // Only complete lines count: a line cut by the kill was never acked.
        let mut r = BufReader::new(stdout);
        let mut buf = String::new();
        while r.read_line(&mut buf).map(|n| n > 0).unwrap_or(false) {
            if buf.ends_with('\n') && tx.send(buf.trim_end().to_string()).is_err() {
                break;
            }
            buf.clear();
        }
    });
    let mut lines = Vec::new();
    if after_first_ack {
        loop {
            match rx.recv_timeout(Duration::from_secs(120)) {
                Ok(line) => {
                    let ack = line.starts_with("A ");
                    lines.push(line);
                    if ack {
                        break;
                    }
                }
                Err(e) => {
                    let mut err = String::new();
                    if let Some(mut stderr) = child.stderr.take() {
                        let _ = child.kill();
                        let _ = std::io::Read::read_to_string(&mut stderr, &mut err);
                    }
                    panic!("child run {run} never acknowledged an allocation ({e}): {err}");
                }
            }
        }
    }
    std::thread::sleep(kill_after);
    if let Some(status) = child.try_wait().expect("try_wait") {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        panic!("child run {run} exited by itself ({status}): {err}");
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("SIGKILL child");
    child.wait().expect("reap child");
    lines.extend(rx.iter());
    lines
}

fn parent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ipam");
    let mut expected = Expected::default();
    let mut rng = rand::thread_rng();
    let mut acked_allocs = 0usize;
    let mut runs_with_progress = 0usize;
    for run in 0..KILLS {
        let after_first_ack = run % 2 == 0;
        let kill_after = Duration::from_millis(if after_first_ack {
            rng.gen_range(0..150)
        } else {
            rng.gen_range(0..250)
        });
        let lines = run_child(&path, run, kill_after, after_first_ack);
        let allocs = lines.iter().filter(|l| l.starts_with("A ")).count();
        acked_allocs += allocs;
        if allocs > 0 {
            runs_with_progress += 1;
        }
        for line in &lines {
            expected.apply(line);
        }

        let ipam = Ipam::open(&path).expect("parent reopen after kill");
        ipam.read(|a| a.check_consistency())
            .unwrap_or_else(|e| panic!("run {run}: inconsistent after kill: {e}"));
        for (key, want) in &expected.present {
            let got = ipam
                .get(key)
                .map(|a| format!("{} {}", a.ip_annotation(), a.mac));
            assert_eq!(
                got.as_ref(),
                Some(want),
                "run {run}: acknowledged {key} lost or changed"
            );
        }
        for (key, want) in &expected.maybe {
            if let Some(a) = ipam.get(key) {
                assert_eq!(
                    &format!("{} {}", a.ip_annotation(), a.mac),
                    want,
                    "run {run}: {key} changed"
                );
            }
        }
        for key in &expected.absent {
            assert!(
                ipam.get(key).is_none(),
                "run {run}: released {key} came back"
            );
        }
        if lines.iter().any(|l| l == "C") {
            // The reconcile was acknowledged: only this run's keys may remain.
            let prefix = format!("r{run}/");
            let leaked: Vec<String> = ipam.read(|a| {
                a.allocations()
                    .filter(|x| !x.key.starts_with(&prefix))
                    .map(|x| x.key.clone())
                    .collect()
            });
            assert!(
                leaked.is_empty(),
                "run {run}: keys survived the reconcile: {leaked:?}"
            );
        }
        let dropped = ipam.open_report().dropped.len();
        println!(
            "run {run:2}: killed {:3} ms after {}, {allocs:4} acked allocations, {} held after reload, {dropped} stale records dropped",
            kill_after.as_millis(),
            if after_first_ack { "first ack" } else { "spawn    " },
            ipam.read(|a| a.len()),
        );
    }
    assert!(
        runs_with_progress >= KILLS / 2,
        "the child made too little progress to test anything ({acked_allocs} allocations in {runs_with_progress} runs)"
    );
    println!("ipam_crash: {KILLS} kills, {acked_allocs} acknowledged allocations, all reloads consistent");
}
