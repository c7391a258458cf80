//! The policy apply against a real NB (no chassis): one pass writes the planned rows, a second
//! writes nothing, changes become differences, rows of others are never touched, and what is
//! no longer planned goes (ACL rows included).

mod support;

use kube_ovn::api::security_group::{SecurityGroupRule, SecurityGroupSpec};
use kube_ovn::api::subnet::SubnetAcl;
use kube_ovn::operator::policy::apply_policy;
use kube_ovn::operator::policy::plan::SubnetPolicy;
use kube_ovn::ovn::{external_ids, LspSpec, Northbound};
use support::OvnSandbox;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn port(nb: &Northbound, rt: &tokio::runtime::Runtime, name: &str, ip: &str, groups: &str) {
    let spec = LspSpec {
        name: name.into(),
        switch: "ls1".into(),
        mac: format!("0a:58:0a:00:00:{}", &ip[ip.len() - 2..])
            .parse()
            .unwrap(),
        ips: vec![ip.parse().unwrap()],
        port_security: false,
        external_ids: external_ids::ours([
            (external_ids::POD, "default/x"),
            (external_ids::SECURITY_GROUPS, groups),
        ]),
    };
    rt.block_on(nb.ensure_logical_switch_port(&spec)).unwrap();
}

fn web() -> SecurityGroupSpec {
    SecurityGroupSpec {
        ingress_rules: vec![SecurityGroupRule {
            ip_version: "ipv4".into(),
            protocol: Some("tcp".into()),
            priority: Some(10),
            remote_type: "address".into(),
            remote_address: Some("10.9.0.0/16".into()),
            port_range_min: Some(80),
            port_range_max: Some(80),
            policy: "allow".into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn lines(sb: &OvnSandbox, args: &[&str]) -> Vec<String> {
    sb.nbctl(args)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn policy_passes_write_differences_only_and_leave_others_rows_alone() {
    let sb = OvnSandbox::up(0);
    let rt = rt();
    let nb = rt.block_on(Northbound::connect(&sb.nb_endpoint())).unwrap();
    rt.block_on(nb.ensure_switch("ls1", &external_ids::ours([])))
        .unwrap();
    port(&nb, &rt, "p11", "10.0.0.11", "web");
    port(&nb, &rt, "p12", "10.0.0.12", "web/db");
    // Someone else's rows.
    sb.nbctl(&["pg-add", "theirs"]);
    sb.nbctl(&[
        "acl-add",
        "ls1",
        "to-lport",
        "500",
        "ip4.src == 1.2.3.4",
        "drop",
    ]);

    let groups = vec![("web".to_string(), web())];
    let private = SubnetPolicy {
        name: "ls1".into(),
        cidrs: vec!["10.0.0.0/24".parse().unwrap()],
        private: true,
        allow_subnets: vec!["10.1.0.0/24".into()],
        acls: vec![SubnetAcl {
            direction: "from-lport".into(),
            priority: 1500,
            r#match: "ip4.dst == 8.8.8.8".into(),
            action: "drop".into(),
        }],
    };
    let (_, wrote) = rt
        .block_on(apply_policy(&nb, &groups, std::slice::from_ref(&private)))
        .unwrap();
    assert!(wrote);
    assert_eq!(
        lines(
            &sb,
            &[
                "--bare",
                "--columns=name",
                "find",
                "Port_Group",
                "external_ids:vendor=kube-ovn"
            ]
        )
        .len(),
        2,
        "web's group and the deny-all group"
    );
    let members = sb.nbctl(&[
        "--bare",
        "--columns=ports",
        "list",
        "Port_Group",
        "ovn.sg.web",
    ]);
    assert_eq!(members.split_whitespace().count(), 2);
    let members_v4 = || {
        sb.nbctl(&[
            "--bare",
            "--columns=addresses",
            "list",
            "Address_Set",
            "ovn.sg.web.associated.v4",
        ])
        .trim()
        .to_owned()
    };
    assert_eq!(members_v4(), "10.0.0.11 10.0.0.12");
    let switch_acls = sb.nbctl(&["acl-list", "ls1"]);
    assert!(switch_acls.contains("1.2.3.4"), "{switch_acls}");
    assert!(
        switch_acls.contains("10.1.0.0/24") && switch_acls.contains("8.8.8.8"),
        "{switch_acls}"
    );
    let acl_rows = lines(&sb, &["--bare", "--columns=_uuid", "list", "ACL"]).len();

    // Nothing changed: nothing is written.
    let (_, wrote) = rt
        .block_on(apply_policy(&nb, &groups, std::slice::from_ref(&private)))
        .unwrap();
    assert!(!wrote, "an unchanged policy wrote to NB");

    // A member goes (its port is deleted by the pod controller): the sets follow.
    rt.block_on(nb.delete_logical_switch_port("p11")).unwrap();
    let (_, wrote) = rt
        .block_on(apply_policy(&nb, &groups, std::slice::from_ref(&private)))
        .unwrap();
    assert!(wrote);
    assert_eq!(members_v4(), "10.0.0.12");
    assert_eq!(
        lines(&sb, &["--bare", "--columns=_uuid", "list", "ACL"]).len(),
        acl_rows
    );

    // The group and the subnet's policy go: our rows go with them, others' stay.
    let public = SubnetPolicy {
        private: false,
        allow_subnets: vec![],
        acls: vec![],
        ..private
    };
    let (_, wrote) = rt.block_on(apply_policy(&nb, &[], &[public])).unwrap();
    assert!(wrote);
    let mut pgs = lines(&sb, &["--bare", "--columns=name", "list", "Port_Group"]);
    pgs.sort();
    assert_eq!(
        pgs,
        vec!["ovn.sg.kubeovn_deny_all".to_string(), "theirs".to_string()],
        "p12 still names db, so deny-all stays"
    );
    assert!(lines(&sb, &["--bare", "--columns=name", "list", "Address_Set"]).is_empty());
    let switch_acls = sb.nbctl(&["acl-list", "ls1"]);
    assert_eq!(switch_acls.trim().lines().count(), 1, "{switch_acls}");
    assert!(switch_acls.contains("1.2.3.4"));
    // Deny-all's two ACLs and the foreign one are every ACL row left.
    assert_eq!(
        lines(&sb, &["--bare", "--columns=_uuid", "list", "ACL"]).len(),
        3
    );
}
