//! IPAM benchmark (`hack/bench.sh ipam`). Prints, in one run:
//! - in-memory allocate/release latency at 0/50/90/99 % full for an IPv4 /16
//!   and an IPv6 /64 (a /64 cannot be filled: its "fill" is the same number of
//!   held addresses as the /16 case, scattered by churn);
//! - durable allocations per second (sled, group commit) with 1 and 64
//!   concurrent callers, and with one flush per allocation (64 callers, each
//!   flushing for itself) as the baseline. sled already merges concurrent
//!   `flush` calls that find the same buffer in flight, so this baseline is
//!   stronger than a lone flusher;
//! - reload time of a store holding 100,000 allocations;
//! - Debian's `host-local` IPAM plugin (exec'd with CNI_COMMAND=ADD, files in
//!   a temp dataDir) allocations per second, as the external baseline.
//!
//! `IPAM_BENCH_ONLY=memory|durable|reload|host_local` runs one part, and
//! `IPAM_BENCH_CASE=v4_16_fill99` one in-memory case (for profiling); the full
//! run is what `hack/bench.sh ipam` reports.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube_ovn::ipam::{AllocationRequest, Allocator, CommitMode, Ipam, Release, SubnetSpec};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const V4_CAPACITY: usize = 65_533; // /16 minus network, broadcast, gateway
const OPS: usize = 20_000;

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// The timed allocation, a symbol of its own so a profiler can collect
/// exactly it (`valgrind --tool=callgrind --toggle-collect='*steady_allocate*'`).
#[inline(never)]
fn steady_allocate(
    a: &mut Allocator,
    req: &AllocationRequest,
) -> Result<(kube_ovn::ipam::Allocated, bool), kube_ovn::ipam::IpamError> {
    a.allocate(req)
}

/// The timed release, likewise.
#[inline(never)]
fn steady_release(a: &mut Allocator, key: &str) -> kube_ovn::ipam::Released {
    a.release(key, Release::Claim)
}

fn in_memory(case: &str, cidr: &str, fill_pct: usize) {
    let mut a = Allocator::new();
    a.add_subnet(SubnetSpec::new("s", cidr)).expect("subnet");
    let fill = V4_CAPACITY * fill_pct / 100;
    let mut held: Vec<String> = Vec::with_capacity(fill + 1);
    for i in 0..fill {
        let key = format!("ns/fill-{i}/p");
        a.allocate(&AllocationRequest::new(&key, "s"))
            .expect("fill");
        held.push(key);
    }
    let mut rng = StdRng::seed_from_u64(7);
    let mut alloc_ns = Vec::with_capacity(OPS);
    let mut release_ns = Vec::with_capacity(OPS);
    // Steady state at the fill level: each step releases a random holder and
    // allocates a new key, which also scatters the free addresses. The
    // request is built just before the call, as the controller does (one
    // built ahead in a large array would add its own cache misses to the
    // measurement).
    for i in 0..OPS + OPS / 10 {
        let req = &AllocationRequest::new(format!("ns/churn-{i}/p"), "s");
        let t = Instant::now();
        let got = steady_allocate(&mut a, req);
        let alloc_t = t.elapsed();
        got.expect("allocation at steady fill");
        held.push(req.key.clone());
        let victim = held.swap_remove(rng.gen_range(0..held.len()));
        let t = Instant::now();
        let released = steady_release(&mut a, &victim);
        let release_t = t.elapsed();
        assert!(matches!(released, kube_ovn::ipam::Released::Freed(_)));
        if i >= OPS / 10 {
            alloc_ns.push(alloc_t.as_nanos() as u64);
            release_ns.push(release_t.as_nanos() as u64);
        }
    }
    a.check_consistency().expect("consistent after churn");
    alloc_ns.sort_unstable();
    release_ns.sort_unstable();
    println!(
        "BENCH ipam case={case}_fill{fill_pct} alloc_p50_ns={} alloc_p99_ns={} release_p99_ns={} release_p50_ns={} held={}",
        percentile(&alloc_ns, 0.50),
        percentile(&alloc_ns, 0.99),
        percentile(&release_ns, 0.99),
        percentile(&release_ns, 0.50),
        held.len(),
    );
}

/// Allocations per second through `Ipam` with `callers` concurrent tasks,
/// and the mean number of changes per flush.
fn durable(
    rt: &tokio::runtime::Runtime,
    mode: CommitMode,
    callers: usize,
    total: usize,
) -> (f64, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    rt.block_on(async {
        let ipam = Arc::new(Ipam::open_with(dir.path().join("ipam"), mode).expect("open"));
        ipam.add_subnet(SubnetSpec::new("s", "10.0.0.0/14"))
            .await
            .expect("subnet");
        let per = total / callers;
        let started = Instant::now();
        let tasks: Vec<_> = (0..callers)
            .map(|c| {
                let ipam = ipam.clone();
                tokio::spawn(async move {
                    for i in 0..per {
                        ipam.allocate(&AllocationRequest::new(format!("ns/p{c}-{i}/x"), "s"))
                            .await
                            .expect("durable allocation");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("caller");
        }
        let rate = (per * callers) as f64 / started.elapsed().as_secs_f64();
        let stats = ipam.commit_stats();
        (rate, stats.writes as f64 / stats.flushes.max(1) as f64)
    })
}

fn reload_100k(rt: &tokio::runtime::Runtime) -> (Duration, Duration, Duration, usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ipam");
    rt.block_on(async {
        let ipam = Arc::new(Ipam::open(&path).expect("open"));
        ipam.add_subnet(SubnetSpec::new("s", "10.0.0.0/14,fd00::/64"))
            .await
            .expect("subnet");
        let tasks: Vec<_> = (0..100)
            .map(|c| {
                let ipam = ipam.clone();
                tokio::spawn(async move {
                    for i in 0..1000 {
                        ipam.allocate(&AllocationRequest::new(
                            format!("ns/p{c}-{i}/net1.ns.ovn"),
                            "s",
                        ))
                        .await
                        .expect("fill");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("filler");
        }
    });
    // Let sled's background threads release the file lock, then time a cold open.
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let ipam = Ipam::open(&path).expect("reopen");
    let elapsed = started.elapsed();
    let n = ipam.read(|a| a.len());
    ipam.read(|a| a.check_consistency())
        .expect("consistent reload");
    let report = ipam.open_report();
    (elapsed, report.read, report.rebuild, n)
}

/// host-local ADDs per second, sequential (each is a process exec, as a
/// container runtime does it).
fn host_local(n: usize) -> f64 {
    let plugin = "/usr/lib/cni/host-local";
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = format!(
        r#"{{"cniVersion":"0.3.1","name":"bench","type":"bridge","ipam":{{"type":"host-local","subnet":"10.0.0.0/16","dataDir":"{}"}}}}"#,
        dir.path().display()
    );
    let started = Instant::now();
    for i in 0..n {
        let mut child = Command::new(plugin)
            .env("CNI_COMMAND", "ADD")
            .env("CNI_CONTAINERID", format!("bench-{i}"))
            .env("CNI_NETNS", "/var/run/netns/bench")
            .env("CNI_IFNAME", "net1")
            .env("CNI_PATH", "/usr/lib/cni")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("exec host-local");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(conf.as_bytes())
            .expect("write config");
        let out = child.wait_with_output().expect("host-local output");
        assert!(
            out.status.success(),
            "host-local ADD failed: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    // IPAM_BENCH_ONLY=memory|durable|reload|host_local runs one part (profiling).
    let only = std::env::var("IPAM_BENCH_ONLY").ok();
    let run = |part: &str| only.as_deref().is_none_or(|o| o == part);
    if !run("memory") {
        return main_rest(run);
    }
    // IPAM_BENCH_CASE=v4_16_fill99 (for example) runs one in-memory case.
    let case_filter = std::env::var("IPAM_BENCH_CASE").ok();
    for (case, cidr) in [("v4_16", "10.0.0.0/16"), ("v6_64", "fd00:1::/64")] {
        for fill in [0, 50, 90, 99] {
            if case_filter
                .as_deref()
                .is_none_or(|c| c == format!("{case}_fill{fill}"))
            {
                in_memory(case, cidr, fill);
            }
        }
    }

    main_rest(run)
}

fn main_rest(run: impl Fn(&str) -> bool) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut d64 = f64::NAN;
    if run("durable") {
        let (d1, _) = durable(&rt, CommitMode::Group, 1, 1_000);
        let batch;
        (d64, batch) = durable(&rt, CommitMode::Group, 64, 32_000);
        let (each, _) = durable(&rt, CommitMode::FlushEach, 64, 3_200);
        println!(
        "BENCH ipam durable_1={d1:.0} durable_64={d64:.0} flush_each={each:.0} ratio_durable64_vs_flush_each={:.1} changes_per_flush_64={batch:.1}",
        d64 / each
    );
    }
    if run("reload") {
        let (reload, read, rebuild, n) = reload_100k(&rt);
        println!(
            "BENCH ipam reload_100k_ms={} read_ms={} rebuild_ms={} allocations={n}",
            reload.as_millis(),
            read.as_millis(),
            rebuild.as_millis()
        );
    }
    if run("host_local") {
        let hl = host_local(300);
        println!(
            "BENCH ipam host_local_per_s={hl:.0} ratio_durable64_vs_host_local={:.1}",
            d64 / hl
        );
    }
}
