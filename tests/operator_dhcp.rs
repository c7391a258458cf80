//! `Subnet.spec.enableDHCP` through the operator (kube-sim, real OVN NB): DHCP_Options rows
//! owned by the subnet (`external_ids` vendor, `ls`, `protocol`) referenced from its pod
//! ports, Kube-OVN's defaults under `dhcpV4Options`; an unknown option is an invalid spec
//! (condition, nothing written); disabling DHCP or deleting the subnet removes the rows.

mod operator_support;
mod support;

use kube::api::{Api, Patch, PatchParams};
use kube_ovn::api::subnet::Subnet;
use operator_support::*;
use serde_json::json;

const PROVIDER: &str = "kube-ovn-vpc-network.default.ovn";

fn dhcp_rows(c: &Cluster) -> Vec<String> {
    c.ovn
        .nbctl(&[
            "--bare",
            "--columns=_uuid",
            "find",
            "dhcp_options",
            "external_ids:ls=subnet-secondary",
        ])
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn enable_dhcp_writes_options_rows_on_the_ports_and_bad_options_are_a_condition() {
    let mut c = Cluster::up(0).await;
    c.start_operator();
    c.apply(SEED_NAD).await;
    c.apply(SEED_VPC_SUBNET).await;
    c.apply(&pod_yaml("p1", "default/kube-ovn-vpc-network"))
        .await;
    c.allocated("p1", PROVIDER).await;
    assert!(dhcp_rows(&c).is_empty(), "no DHCP without enableDHCP");
    let subnets: Api<Subnet> = Api::all(c.client.clone());
    let patch = |spec: serde_json::Value| {
        let subnets = subnets.clone();
        async move {
            subnets
                .patch(
                    "subnet-secondary",
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "spec": spec })),
                )
                .await
                .unwrap();
        }
    };

    patch(json!({"enableDHCP": true, "dhcpV4Options": "lease_time=600"})).await;
    let row = c
        .eventually("a DHCPv4 row", || async { dhcp_rows(&c).pop() })
        .await;
    let options = c.ovn.nbctl(&["get", "dhcp_options", &row, "options"]);
    eprintln!("options: {options}");
    for want in [
        "lease_time=\"600\"",
        "router=\"10.100.0.1\"",
        "server_id=\"169.254.0.254\"",
        "server_mac=",
    ] {
        assert!(options.contains(want), "{want} in {options}");
    }
    assert_eq!(
        c.ovn.nbctl(&["get", "dhcp_options", &row, "cidr"]),
        "\"10.100.0.0/16\""
    );
    let lsp = format!("p1.default.{PROVIDER}");
    c.eventually("p1's port references the row", || async {
        (c.ovn
            .nbctl(&["get", "logical_switch_port", &lsp, "dhcpv4_options"])
            == row)
            .then_some(())
    })
    .await;
    // A port created afterwards gets it at once.
    c.apply(&pod_yaml("p2", "default/kube-ovn-vpc-network"))
        .await;
    c.allocated("p2", PROVIDER).await;
    let lsp2 = format!("p2.default.{PROVIDER}");
    assert_eq!(
        c.ovn
            .nbctl(&["get", "logical_switch_port", &lsp2, "dhcpv4_options"]),
        row
    );

    // An option OVN does not know: Validated=False saying which; the rows stay as they were.
    patch(json!({"dhcpV4Options": "lease_tme=600"})).await;
    let message = c
        .eventually("InvalidDHCPOptions condition", || async {
            let s = subnets.get("subnet-secondary").await.ok()?.status?;
            s.conditions
                .into_iter()
                .find(|c| c.reason == "InvalidDHCPOptions")
                .map(|c| c.message)
        })
        .await;
    eprintln!("condition: {message}");
    assert!(
        message.contains("\"lease_tme\" is not an OVN DHCP option"),
        "{message}"
    );
    assert_eq!(dhcp_rows(&c), std::slice::from_ref(&row));

    // Off: the row and the references go.
    patch(json!({"enableDHCP": false, "dhcpV4Options": null})).await;
    c.eventually("DHCP rows removed", || async {
        dhcp_rows(&c).is_empty().then_some(())
    })
    .await;
    assert_eq!(
        c.ovn
            .nbctl(&["get", "logical_switch_port", &lsp, "dhcpv4_options"]),
        "[]"
    );

    // On again, then the subnet deleted: its rows go with it.
    patch(json!({"enableDHCP": true})).await;
    c.eventually("a DHCPv4 row again", || async { dhcp_rows(&c).pop() })
        .await;
    for pod in ["p1", "p2"] {
        c.delete_pod(pod).await;
    }
    c.wait_used("subnet-secondary", 0).await;
    subnets
        .delete("subnet-secondary", &Default::default())
        .await
        .unwrap();
    c.eventually("DHCP rows removed with the subnet", || async {
        dhcp_rows(&c).is_empty().then_some(())
    })
    .await;
}
