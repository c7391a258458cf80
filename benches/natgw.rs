//! `hack/bench.sh natgw`: the NAT gateway's dataplane on the test bed of tests/natgw_support
//! (pods, gateway and external host as network namespaces). Needs root, `nft` and `iperf3`.
//!
//! - Programming: 1000 DNAT rules (plus the FIP, SNAT and hairpin rules) as one netlink
//!   batch, median of several replacements of the whole table (`encode_ms`: building the
//!   messages, included in `program_ms`); baseline in the same run: the `nft` tool loading
//!   the same table (its own `nft list` output) with `nft -f`, also one atomic batch.
//! - Throughput: iperf3 TCP from a pod to the external host through the gateway, with the
//!   table in place (SNAT to the EIP, conntrack on), against plain routing between the same
//!   namespaces (no table: the external host routes the VPC back via the gateway), rounds
//!   alternating.
//!
//! Prints `BENCH natgw rules=1000 table_rules=… program_ms=… encode_ms=… nft_tool_ms=…
//! ratio_program_vs_nft=… snat_gbps=… routed_gbps=… ratio_snat_vs_routed=…`.
//! `KOVN_BENCH_SECONDS` (default 3) is the length of each iperf3 run, `KOVN_BENCH_ROUNDS`
//! (default 2) the rounds.

#[path = "../tests/cni_support/mod.rs"]
mod cni_support;
#[path = "../tests/natgw_support/mod.rs"]
mod natgw_support;

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kube_ovn::natgw::rules::{Dnat, Eip, Fip, Protocol, Snat};
use kube_ovn::natgw::{apply, nftables, plan, GatewayRules, Interfaces};
use natgw_support::*;

const RULES: u16 = 1000;
const EIP_1: &str = "172.19.0.11";
const EIP_2: &str = "172.19.0.12";

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("ip")
}

fn rules() -> GatewayRules {
    GatewayRules {
        eips: vec![
            Eip {
                name: "e1".into(),
                address: ip(EIP_1),
            },
            Eip {
                name: "e2".into(),
                address: ip(EIP_2),
            },
        ],
        fips: vec![Fip {
            name: "pod-b".into(),
            eip: ip(EIP_2),
            internal: ip(POD_B),
        }],
        dnats: (0..RULES)
            .map(|i| Dnat {
                name: format!("d{i}"),
                eip: ip(EIP_1),
                protocol: Protocol::Tcp,
                external_port: 10000 + i,
                internal: "10.100.0.2:80".parse().expect("internal"),
            })
            .collect(),
        snats: vec![Snat {
            name: "vpc".into(),
            eip: ip(EIP_1),
            internal: "10.100.0.0/24".parse().expect("cidr"),
        }],
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[v.len() / 2]
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// iperf3 from pod-a to the external host; Gbit/s received.
fn iperf(t: &Topology, seconds: u64) -> f64 {
    let mut server = Command::new("ip")
        .args([
            "netns",
            "exec",
            &t.ext.name,
            "iperf3",
            "-s",
            "-1",
            "-p",
            "5201",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 server");
    std::thread::sleep(Duration::from_millis(300));
    let out = t
        .pod_a
        .exec(&[
            "iperf3",
            "-c",
            EXT_HOST,
            "-p",
            "5201",
            "-t",
            &seconds.to_string(),
            "-J",
        ])
        .expect("iperf3 client");
    let _ = server.wait();
    let v: serde_json::Value = serde_json::from_str(&out).expect("iperf3 -J");
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .expect("bits_per_second")
        / 1e9
}

fn main() {
    let t = Topology::new();
    let interfaces = Interfaces {
        lan: LAN_IF.into(),
        external: EXT_IF.into(),
    };
    let wanted = plan(&rules(), &interfaces, None);
    {
        let (wanted, interfaces) = (wanted.clone(), interfaces.clone());
        t.gw.run(move || async move { apply(&wanted, &interfaces, true).await.expect("apply") });
    }

    // Programming: our batch (its encoding alone too), then the nft tool with the same table.
    let mut encode = Vec::new();
    for _ in 0..7 {
        let started = Instant::now();
        std::hint::black_box(nftables::batch(&wanted.table));
        encode.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let mut ours = Vec::new();
    for _ in 0..7 {
        let table = wanted.table.clone();
        let took =
            t.gw.run(move || async move { nftables::program(&table).expect("program").elapsed });
        ours.push(took.as_secs_f64() * 1e3);
    }
    let listing = t.gw.nft_text();
    let file = tempfile::NamedTempFile::new().expect("tempfile");
    std::fs::write(
        file.path(),
        format!("table ip kube-ovn-nat\ndelete table ip kube-ovn-nat\n{listing}"),
    )
    .expect("write nft file");
    let path = file.path().to_str().expect("utf-8 path").to_string();
    let mut tool = Vec::new();
    for _ in 0..7 {
        let started = Instant::now();
        t.gw.exec(&["nft", "-f", &path]).expect("nft -f");
        tool.push(started.elapsed().as_secs_f64() * 1e3);
    }
    assert_eq!(t.gw.nft_text(), listing, "nft -f loaded the same table");
    let (program_ms, nft_ms) = (median(ours), median(tool));

    // Throughput: SNAT (our table) against plain routing, alternating.
    let seconds = env_or("KOVN_BENCH_SECONDS", 3);
    let rounds = env_or("KOVN_BENCH_ROUNDS", 2);
    let (mut snat, mut routed) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        t.ext
            .ip(&["route", "replace", "10.100.0.0/24", "via", GW_EXT]);
        t.gw.exec(&["nft", "delete", "table", "ip", "kube-ovn-nat"])
            .expect("delete table");
        routed.push(iperf(&t, seconds));
        t.ext.ip(&["route", "del", "10.100.0.0/24"]);
        let table = wanted.table.clone();
        t.gw.run(move || async move { nftables::program(&table).expect("program") });
        snat.push(iperf(&t, seconds));
    }
    let (snat_gbps, routed_gbps) = (median(snat), median(routed));
    println!(
        "BENCH natgw rules={RULES} table_rules={} program_ms={program_ms:.1} \
         encode_ms={:.1} nft_tool_ms={nft_ms:.1} ratio_program_vs_nft={:.2} \
         snat_gbps={snat_gbps:.2} routed_gbps={routed_gbps:.2} ratio_snat_vs_routed={:.2}",
        wanted.table.rule_count(),
        median(encode),
        program_ms / nft_ms,
        snat_gbps / routed_gbps
    );
}
