//! The chassis of a node deleted from the cluster leave SB: the operator's garbage collection
//! (kube-sim, real OVN SB) removes the Chassis and Chassis_Private rows our node roles made
//! (`other_config:ovn-cms-options=kube-ovn`) whose Node is gone, and leaves every other
//! chassis alone: a live node's, and another system's (unmarked) even without a Node.

mod operator_support;
mod support;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, PostParams};
use operator_support::*;
use serde_json::json;

fn add_chassis(c: &Cluster, name: &str, ip: &str, ours: bool) {
    c.ovn.sbctl(&["chassis-add", name, "geneve", ip]);
    if ours {
        c.ovn.sbctl(&[
            "set",
            "chassis",
            name,
            "other_config:ovn-cms-options=kube-ovn",
        ]);
    }
    c.ovn
        .sbctl(&["create", "chassis_private", &format!("name={name}")]);
}

fn names(c: &Cluster, table: &str) -> Vec<String> {
    let mut out: Vec<String> = c
        .ovn
        .sbctl(&["--bare", "--columns=name", "list", table])
        .split_whitespace()
        .map(String::from)
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chassis_of_deleted_nodes_leave_sb_and_no_other_chassis_does() {
    let mut c = Cluster::up(0).await;
    let nodes: Api<Node> = Api::all(c.client.clone());
    for name in ["node-a", "node-b"] {
        let node = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        nodes.create(&PostParams::default(), &node).await.unwrap();
    }
    add_chassis(&c, "node-a", "172.30.9.10", true);
    add_chassis(&c, "node-b", "172.30.9.11", true);
    add_chassis(&c, "ghost", "172.30.9.12", true);
    add_chassis(&c, "foreign", "172.30.9.13", false);

    // The operator, told where SB is (its tests name NB; an install names both).
    let sb = c.ovn.sb_endpoint();
    c.start_operator_with(&["--ovn-sb", &sb]);

    let want = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    c.eventually("the ghost chassis (no Node) leaves SB", || async {
        (names(&c, "Chassis") == want(&["foreign", "node-a", "node-b"])).then_some(())
    })
    .await;
    assert_eq!(
        names(&c, "Chassis_Private"),
        want(&["foreign", "node-a", "node-b"])
    );

    nodes
        .delete("node-b", &DeleteParams::default())
        .await
        .unwrap();
    c.eventually(
        "node-b's chassis leaves SB once its Node is deleted",
        || async { (names(&c, "Chassis") == want(&["foreign", "node-a"])).then_some(()) },
    )
    .await;
    assert_eq!(names(&c, "Chassis_Private"), want(&["foreign", "node-a"]));
    assert!(
        c.operator_log()
            .contains("removed the chassis of deleted nodes"),
        "{}",
        c.operator_log()
    );
}
