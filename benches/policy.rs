//! `hack/bench.sh policy`: security groups into a real OVN NB (central of the OVN test bed,
//! no chassis needed).
//!
//! 1. NB holds 1,000 member attachments (logical switch ports whose pods name one of 100 groups,
//!    10 each, as the pod controller writes them). `apply_ms`: from handing the policy
//!    controller's apply (`operator::policy::apply_policy`) 100 groups of 10 rules each until NB
//!    has committed every Port_Group, Address_Set and ACL (one transaction; checked afterwards
//!    with ovn-nbctl).
//! 2. `update_ms`: one rule of one group changed, until NB has committed the difference.
//! 3. Baseline in the same run: the same rows written the classic way, one `ovn-nbctl`
//!    process with every `pg-add`/`acl-add`/`create Address_Set` in one transaction
//!    (`nbctl_ms`), into a fresh NB; and one group's ACLs replaced the way Kube-OVN updates a
//!    group (clear the port group's ACLs, add them all again, one ovn-nbctl process:
//!    `nbctl_update_ms`).
//!
//! Prints `BENCH policy groups=100 rules=1000 members=1000 acls=… apply_ms=… update_ms=…
//! nbctl_ms=… nbctl_update_ms=… ratio_apply_vs_nbctl=… ratio_update_vs_nbctl=…`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::Command;
use std::time::Instant;

use kube_ovn::api::security_group::{SecurityGroupRule, SecurityGroupSpec};
use kube_ovn::operator::policy::apply_policy;
use kube_ovn::operator::policy::plan::{plan, Member};
use kube_ovn::ovn::{external_ids, LspSpec, Northbound};
use support::OvnSandbox;

const GROUPS: usize = 100;
const RULES_PER_GROUP: usize = 10;
const MEMBERS: usize = 1000;

fn group_name(g: usize) -> String {
    format!("sg-{g}")
}

/// Ten rules: five ingress (TCP ports from the next group, or from a CIDR), five egress.
fn group_spec(g: usize, first_port: i32) -> SecurityGroupSpec {
    let rule = |i: usize, remote_sg: bool| SecurityGroupRule {
        ip_version: "ipv4".into(),
        protocol: Some("tcp".into()),
        priority: Some(i as i32 + 1),
        remote_type: if remote_sg {
            "securityGroup"
        } else {
            "address"
        }
        .into(),
        remote_address: (!remote_sg).then(|| format!("10.{}.{i}.0/24", 100 + g % 100)),
        remote_security_group: remote_sg.then(|| group_name((g + 1) % GROUPS)),
        port_range_min: Some(first_port + i as i32),
        port_range_max: Some(first_port + i as i32),
        policy: "allow".into(),
        ..Default::default()
    };
    SecurityGroupSpec {
        ingress_rules: (0..RULES_PER_GROUP / 2)
            .map(|i| rule(i, i.is_multiple_of(2)))
            .collect(),
        egress_rules: (RULES_PER_GROUP / 2..RULES_PER_GROUP)
            .map(|i| rule(i, !i.is_multiple_of(2)))
            .collect(),
        allow_same_group_traffic: Some(g.is_multiple_of(2)),
        tier: None,
    }
}

fn member_ip(i: usize) -> IpAddr {
    format!("10.50.{}.{}", i / 250, i % 250 + 2)
        .parse()
        .expect("ip")
}

fn member_port(i: usize) -> String {
    format!("pod-{i}.default.bench.default.ovn")
}

fn count(sb: &OvnSandbox, table: &str) -> usize {
    sb.nbctl(&["--bare", "--columns=_uuid", "list", table])
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

/// The planned rows as ovn-nbctl commands, one transaction.
fn nbctl_args(groups: &[(String, SecurityGroupSpec)], members: &[Member]) -> Vec<String> {
    let p = plan(groups, members, &[]);
    let mut args = vec!["--bare".to_owned()];
    let mut cmd = |c: Vec<String>| {
        args.push("--".into());
        args.extend(c);
    };
    for s in &p.nb.address_sets {
        let addrs: Vec<String> = s.addresses.iter().map(|a| format!("\"{a}\"")).collect();
        cmd(vec![
            "create".into(),
            "Address_Set".into(),
            format!("name={}", s.name),
            format!("addresses=[{}]", addrs.join(",")),
        ]);
    }
    for g in &p.nb.port_groups {
        let mut c = vec!["pg-add".to_owned(), g.name.clone()];
        c.extend(g.ports.iter().cloned());
        cmd(c);
        for a in &g.acls {
            cmd(acl_add(&g.name, a));
        }
    }
    args
}

fn acl_add(parent: &str, a: &kube_ovn::ovn::nb::policy::AclSpec) -> Vec<String> {
    vec![
        "--type=port-group".into(),
        "acl-add".into(),
        parent.into(),
        a.direction.clone(),
        a.priority.to_string(),
        a.match_.clone(),
        a.action.clone(),
    ]
}

fn nbctl_timed(sb: &OvnSandbox, args: &[String]) -> f64 {
    let started = Instant::now();
    let out = Command::new("ovn-nbctl")
        .arg(format!("--db={}", sb.nb_endpoint()))
        .args(args)
        .output()
        .expect("ovn-nbctl");
    let ms = started.elapsed().as_secs_f64() * 1e3;
    assert!(
        out.status.success(),
        "ovn-nbctl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ms
}

/// A switch with the member ports, as the pod controller leaves them.
async fn members_in_nb(nb: &Northbound) -> Vec<Member> {
    nb.apply(|t| {
        t.ensure_switch("bench", &external_ids::ours([]))?;
        for i in 0..MEMBERS {
            let group = group_name(i % GROUPS);
            let spec = LspSpec {
                name: member_port(i),
                switch: "bench".into(),
                mac: format!("0a:58:0a:32:{:02x}:{:02x}", i / 256, i % 256)
                    .parse()
                    .expect("mac"),
                ips: vec![member_ip(i)],
                port_security: false,
                external_ids: external_ids::ours([
                    (external_ids::POD, format!("default/pod-{i}").as_str()),
                    (external_ids::SECURITY_GROUPS, group.as_str()),
                ]),
            };
            t.ensure_logical_switch_port(&spec)?;
        }
        Ok(())
    })
    .await
    .expect("member ports");
    kube_ovn::operator::policy::members(nb).expect("members")
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let groups: Vec<(String, SecurityGroupSpec)> = (0..GROUPS)
        .map(|g| (group_name(g), group_spec(g, 8000)))
        .collect();

    // Ours.
    let sb = OvnSandbox::up(0);
    let nb = rt
        .block_on(Northbound::connect(&sb.nb_endpoint()))
        .expect("NB");
    let members = rt.block_on(members_in_nb(&nb));
    assert_eq!(members.len(), MEMBERS);
    let started = Instant::now();
    let (planned, wrote) = rt.block_on(apply_policy(&nb, &groups, &[])).expect("apply");
    let apply_ms = started.elapsed().as_secs_f64() * 1e3;
    assert!(wrote);
    let acls: usize = planned.nb.port_groups.iter().map(|g| g.acls.len()).sum();
    assert_eq!(count(&sb, "ACL"), acls, "NB holds every planned ACL");
    assert_eq!(count(&sb, "Port_Group"), GROUPS + 1);
    assert_eq!(count(&sb, "Address_Set"), 2 * GROUPS);
    assert!(planned
        .groups
        .values()
        .all(|g| g.problems.is_empty() && g.members == 10));
    let rules: usize = groups
        .iter()
        .map(|(_, s)| s.ingress_rules.len() + s.egress_rules.len())
        .sum();

    let mut changed = groups.clone();
    changed[42].1.ingress_rules[0].port_range_min = Some(9443);
    changed[42].1.ingress_rules[0].port_range_max = Some(9443);
    let started = Instant::now();
    let (_, wrote) = rt
        .block_on(apply_policy(&nb, &changed, &[]))
        .expect("update");
    let update_ms = started.elapsed().as_secs_f64() * 1e3;
    assert!(wrote);
    let pg42 = kube_ovn::operator::policy::plan::port_group_name(&group_name(42));
    assert!(sb.nbctl(&["acl-list", &pg42]).contains("tcp.dst == 9443"));
    drop(nb);
    drop(sb);

    // Baseline: ovn-nbctl, one process, one transaction, into a fresh NB with the same ports.
    let sb = OvnSandbox::up(0);
    let nb = rt
        .block_on(Northbound::connect(&sb.nb_endpoint()))
        .expect("NB");
    let members = rt.block_on(members_in_nb(&nb));
    let nbctl_ms = nbctl_timed(&sb, &nbctl_args(&groups, &members));
    assert_eq!(count(&sb, "ACL"), acls, "ovn-nbctl wrote the same ACLs");
    let changed_plan = plan(&changed, &members, &[]);
    let group42 = changed_plan
        .nb
        .port_groups
        .iter()
        .find(|g| g.name == pg42)
        .expect("group 42");
    let mut update = vec![
        "--".to_owned(),
        "--type=port-group".into(),
        "acl-del".into(),
        pg42.clone(),
    ];
    for a in &group42.acls {
        update.push("--".into());
        update.extend(acl_add(&pg42, a));
    }
    let nbctl_update_ms = nbctl_timed(&sb, &update);
    let distinct: BTreeSet<&str> = changed_plan.groups.keys().map(String::as_str).collect();
    assert_eq!(distinct.len(), GROUPS);

    println!(
        "BENCH policy groups={GROUPS} rules={rules} members={MEMBERS} acls={acls} apply_ms={apply_ms:.1} update_ms={update_ms:.1} nbctl_ms={nbctl_ms:.1} nbctl_update_ms={nbctl_update_ms:.1} ratio_apply_vs_nbctl={:.2} ratio_update_vs_nbctl={:.2}",
        apply_ms / nbctl_ms,
        update_ms / nbctl_update_ms
    );
}
