//! `kube-ovn operator` end to end on kube-sim and real OVN: the seed's
//! manifests verbatim get addresses, annotations, IP CRs and logical switch
//! ports; deleting pods frees them; bad input gives Events or conditions and
//! allocates nothing; SIGKILL during a burst loses and leaks nothing.

mod operator_support;
mod support;

use ipnet::IpNet;
use kube::api::{Api, Patch, PatchParams};
use operator_support::*;
use serde_json::json;

const SEED_PROVIDER: &str = "kube-ovn-vpc-network.default.ovn";

fn in_cidr(ip: &str, cidr: &str) -> bool {
    let net: IpNet = cidr.parse().unwrap();
    net.contains(&ip.parse::<std::net::IpAddr>().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seed_manifests_get_addresses_ports_and_ip_crs_and_deleting_frees_them() {
    let mut c = Cluster::up(0).await;
    c.start_operator();
    c.apply(SEED_NAD).await;
    c.apply(SEED_VPC_SUBNET).await;
    c.apply(SEED_POD).await;

    // The seed's pod: an address in 10.100.0.0/16 and every annotation.
    let a = c.allocated("multi-network-pod", SEED_PROVIDER).await;
    let ann = |k: &str| a[&format!("{SEED_PROVIDER}.kubernetes.io/{k}")].clone();
    let ip = ann("ip_address");
    assert!(in_cidr(&ip, "10.100.0.0/16"), "address {ip}");
    assert_ne!(ip, "10.100.0.1", "the gateway is never handed out");
    assert_eq!(ann("cidr"), "10.100.0.0/16");
    assert_eq!(ann("gateway"), "10.100.0.1");
    assert_eq!(ann("logical_switch"), "subnet-secondary");
    assert_eq!(ann("logical_router"), "vpc-secondary");
    let mac = ann("mac_address");

    // The LSP in NB, as ovn-nbctl reads it.
    let lsp = format!("multi-network-pod.default.{SEED_PROVIDER}");
    assert_eq!(c.nb_pod_ports(), vec![lsp.clone()]);
    assert_eq!(c.lsp_addresses(&lsp), format!("{mac} {ip}"));
    let ls_ports = c.ovn.nbctl(&["lsp-list", "subnet-secondary"]);
    assert!(ls_ports.contains(&lsp), "{ls_ports}");
    assert!(
        ls_ports.contains("subnet-secondary-vpc-secondary"),
        "{ls_ports}"
    );
    let lrp = c.ovn.nbctl(&["lrp-list", "vpc-secondary"]);
    assert!(lrp.contains("vpc-secondary-subnet-secondary"), "{lrp}");
    let networks = c.ovn.nbctl(&[
        "get",
        "Logical_Router_Port",
        "vpc-secondary-subnet-secondary",
        "networks",
    ]);
    assert!(networks.contains("10.100.0.1/16"), "{networks}");
    let ids = c
        .ovn
        .nbctl(&["get", "Logical_Switch_Port", &lsp, "external_ids"]);
    for want in [
        "pod=\"default/multi-network-pod\"",
        "ls=subnet-secondary",
        "vendor=kube-ovn",
    ] {
        assert!(ids.contains(want), "{want} in {ids}");
    }

    // The IP CR.
    let ips = c.ip_crs().await;
    let cr = ips
        .iter()
        .find(|i| i.metadata.name.as_deref() == Some(lsp.as_str()))
        .expect("IP CR");
    assert_eq!(cr.spec.ip_address, ip);
    assert_eq!(cr.spec.mac_address, mac);
    assert_eq!(cr.spec.subnet, "subnet-secondary");

    // Status: subnet usage, conditions; VPC router and subnets.
    c.wait_used("subnet-secondary", 1).await;
    let subnet = c.subnet("subnet-secondary").await.unwrap();
    let status = subnet.status.unwrap();
    assert_eq!(status.cidr_block.as_deref(), Some("10.100.0.0/16"));
    assert_eq!(status.v4_available_ips, 65533 - 1);
    assert!(status
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.is_true()));
    let vpc: kube_ovn::api::vpc::Vpc = Api::all(c.client.clone())
        .get("vpc-secondary")
        .await
        .unwrap();
    let vs = vpc.status.unwrap();
    assert_eq!(vs.router.as_deref(), Some("vpc-secondary"));
    assert_eq!(vs.subnets, vec!["subnet-secondary".to_owned()]);

    // Re-reconciling an attached pod writes nothing: touch a label, the
    // annotations and the resourceVersion move only by our own touch.
    let before = c.pods().get("multi-network-pod").await.unwrap();
    let touched = c
        .pods()
        .patch(
            "multi-network-pod",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}})),
        )
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let after = c.pods().get("multi-network-pod").await.unwrap();
    assert_eq!(before.metadata.annotations, after.metadata.annotations);
    assert_eq!(
        touched.metadata.resource_version, after.metadata.resource_version,
        "the operator wrote to an attached pod"
    );
    assert_eq!(c.nb_pod_ports(), vec![lsp.clone()]);

    // Static IP, the seed's fragment (its NAD and subnet in their own VPC).
    c.apply(&nad_yaml("kube-ovn-network")).await;
    c.apply(&vpc_yaml("vpc-static")).await;
    c.apply(&subnet_yaml(
        "subnet-static",
        "vpc-static",
        "10.100.0.0/16",
        "kube-ovn-network.default.ovn",
    ))
    .await;
    c.apply(&pod_from_fragment("static-ip-pod", SEED_STATIC_IP))
        .await;
    let s = c
        .allocated("static-ip-pod", "kube-ovn-network.default.ovn")
        .await;
    assert_eq!(
        s["kube-ovn-network.default.ovn.kubernetes.io/ip_address"],
        "10.100.0.100"
    );

    // The JSON-list form with two networks: two attachments on two subnets.
    c.apply(&nad_yaml("kube-ovn-network-1")).await;
    c.apply(&nad_yaml("kube-ovn-network-2")).await;
    c.apply(&vpc_yaml("vpc-multi")).await;
    c.apply(&subnet_yaml(
        "subnet-n1",
        "vpc-multi",
        "10.201.0.0/24",
        "kube-ovn-network-1.default.ovn",
    ))
    .await;
    c.apply(&subnet_yaml(
        "subnet-n2",
        "vpc-multi",
        "10.202.0.0/24",
        "kube-ovn-network-2.default.ovn",
    ))
    .await;
    c.apply(&pod_from_fragment("two-nets", SEED_MULTI_PROVIDERS))
        .await;
    let one = c
        .allocated("two-nets", "kube-ovn-network-1.default.ovn")
        .await;
    let two = c
        .allocated("two-nets", "kube-ovn-network-2.default.ovn")
        .await;
    assert!(in_cidr(
        &one["kube-ovn-network-1.default.ovn.kubernetes.io/ip_address"],
        "10.201.0.0/24"
    ));
    assert!(in_cidr(
        &two["kube-ovn-network-2.default.ovn.kubernetes.io/ip_address"],
        "10.202.0.0/24"
    ));
    assert_eq!(
        one["kube-ovn-network-1.default.ovn.kubernetes.io/logical_switch"],
        "subnet-n1"
    );
    assert_eq!(
        two["kube-ovn-network-2.default.ovn.kubernetes.io/logical_switch"],
        "subnet-n2"
    );
    let ports = c.nb_pod_ports();
    assert!(
        ports.contains(&"two-nets.default.kube-ovn-network-1.default.ovn".to_owned()),
        "{ports:?}"
    );
    assert!(
        ports.contains(&"two-nets.default.kube-ovn-network-2.default.ovn".to_owned()),
        "{ports:?}"
    );
    assert_eq!(ports.len(), 4);

    // The same NAD twice (comma form with @ifname): the second attachment keys on <provider>.<ifname>.
    c.apply(&pod_yaml(
        "twice",
        "default/kube-ovn-vpc-network@net1,default/kube-ovn-vpc-network@net2",
    ))
    .await;
    let first = c.allocated("twice", SEED_PROVIDER).await;
    let second_key = format!("{SEED_PROVIDER}.net2");
    let second = c.allocated("twice", &second_key).await;
    let ip_a = &first[&format!("{SEED_PROVIDER}.kubernetes.io/ip_address")];
    let ip_b = &second[&format!("{second_key}.kubernetes.io/ip_address")];
    assert_ne!(ip_a, ip_b);
    let ports = c.nb_pod_ports();
    assert!(
        ports.contains(&format!("twice.default.{second_key}")),
        "{ports:?}"
    );

    // Deleting the pods frees ports, IP CRs and addresses.
    for pod in ["multi-network-pod", "static-ip-pod", "two-nets", "twice"] {
        c.delete_pod(pod).await;
    }
    c.eventually("every pod port gone from NB", || async {
        c.nb_pod_ports().is_empty().then_some(())
    })
    .await;
    c.eventually("every IP CR gone", || async {
        c.ip_crs().await.is_empty().then_some(())
    })
    .await;
    for subnet in [
        "subnet-secondary",
        "subnet-static",
        "subnet-n1",
        "subnet-n2",
    ] {
        c.wait_used(subnet, 0).await;
    }
    let metrics = c.metrics().await;
    assert!(
        metrics.contains("kube_ovn_pod_attachments_total 6"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kube_ovn_pod_attachments_released_total 6"),
        "{metrics}"
    );

    // Deleting Subnets and a Vpc removes their switches, router ports and router.
    let subnets: Api<kube_ovn::api::subnet::Subnet> = Api::all(c.client.clone());
    let vpcs: Api<kube_ovn::api::vpc::Vpc> = Api::all(c.client.clone());
    for s in ["subnet-n1", "subnet-n2"] {
        subnets.delete(s, &Default::default()).await.unwrap();
    }
    vpcs.delete("vpc-multi", &Default::default()).await.unwrap();
    c.eventually("switches and router of vpc-multi gone", || async {
        let switches = c
            .ovn
            .nbctl(&["--bare", "--columns=name", "list", "Logical_Switch"]);
        let routers = c
            .ovn
            .nbctl(&["--bare", "--columns=name", "list", "Logical_Router"]);
        let gone = !switches.contains("subnet-n1")
            && !switches.contains("subnet-n2")
            && !routers.lines().any(|l| l.trim() == "vpc-multi");
        let deleted = subnets.get_opt("subnet-n1").await.ok()?.is_none()
            && vpcs.get_opt("vpc-multi").await.ok()?.is_none();
        (gone && deleted).then_some(())
    })
    .await;
    let routers = c
        .ovn
        .nbctl(&["--bare", "--columns=name", "list", "Logical_Router"]);
    assert!(routers.contains("vpc-secondary"), "{routers}");

    // The freed static address can be taken again.
    c.apply(&pod_from_fragment("static-again", SEED_STATIC_IP))
        .await;
    let s = c
        .allocated("static-again", "kube-ovn-network.default.ovn")
        .await;
    assert_eq!(
        s["kube-ovn-network.default.ovn.kubernetes.io/ip_address"],
        "10.100.0.100"
    );
}

fn subnet_with(name: &str, vpc: &str, cidr: &str, provider: &str, extra: &str) -> String {
    format!("{}{extra}", subnet_yaml(name, vpc, cidr, provider))
}

/// Every pod's kube-ovn address on `provider`, by pod name.
async fn addresses(c: &Cluster, provider: &str) -> Vec<(String, String)> {
    let key = format!("{provider}.kubernetes.io/ip_address");
    c.pods()
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| {
            let ip = p.metadata.annotations.as_ref()?.get(&key)?.clone();
            Some((p.metadata.name.unwrap(), ip))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_gives_events_or_conditions_allocates_nothing_and_spares_other_pods() {
    let mut c = Cluster::up(0).await;
    c.start_operator();
    c.apply(SEED_NAD).await;
    c.apply(SEED_VPC_SUBNET).await;
    c.apply(&pod_yaml("good-1", "default/kube-ovn-vpc-network"))
        .await;
    c.allocated("good-1", SEED_PROVIDER).await;

    // A missing NAD: an Event naming it; once the NAD and a subnet appear, the pod proceeds.
    c.apply(&pod_yaml("waits-for-nad", "default/late-net"))
        .await;
    let m = c
        .event("waits-for-nad", "NetworkAttachmentDefinitionNotFound")
        .await;
    assert!(m.contains("default/late-net"), "{m}");

    // A provider with no subnet (the NAD exists now, its subnet not yet).
    c.apply(&nad_yaml("late-net")).await;
    let m = c.event("waits-for-nad", "NoSubnetForProvider").await;
    assert!(m.contains("late-net.default.ovn"), "{m}");
    c.apply(&subnet_yaml(
        "late",
        "vpc-secondary",
        "10.110.0.0/24",
        "late-net.default.ovn",
    ))
    .await;
    let a = c.allocated("waits-for-nad", "late-net.default.ovn").await;
    assert!(in_cidr(
        &a["late-net.default.ovn.kubernetes.io/ip_address"],
        "10.110.0.0/24"
    ));

    // A NAD of another plugin is not ours: skipped without a word.
    c.apply("apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\nmetadata:\n  name: macvlan-net\n  namespace: default\nspec:\n  config: '{\"cniVersion\": \"0.3.1\", \"type\": \"macvlan\", \"master\": \"eth0\"}'\n").await;
    c.apply(&pod_yaml(
        "mixed",
        "default/macvlan-net,default/kube-ovn-vpc-network",
    ))
    .await;
    let mixed = c.allocated("mixed", SEED_PROVIDER).await;
    assert!(
        !mixed.keys().any(|k| k.starts_with("macvlan-net.")),
        "{mixed:?}"
    );

    // Two subnets on one provider: ambiguous until the pod names one.
    c.apply(&nad_yaml("dup-net")).await;
    c.apply(&subnet_yaml(
        "dup-a",
        "vpc-secondary",
        "10.120.0.0/24",
        "dup-net.default.ovn",
    ))
    .await;
    c.apply(&subnet_yaml(
        "dup-b",
        "vpc-secondary",
        "10.121.0.0/24",
        "dup-net.default.ovn",
    ))
    .await;
    c.apply(&pod_yaml("ambiguous", "default/dup-net")).await;
    let m = c.event("ambiguous", "AmbiguousSubnet").await;
    assert!(
        m.contains("dup-a") && m.contains("dup-b") && m.contains("logical_switch"),
        "{m}"
    );
    c.apply("apiVersion: v1\nkind: Pod\nmetadata:\n  name: pinned\n  annotations:\n    k8s.v1.cni.cncf.io/networks: default/dup-net\n    dup-net.default.ovn.kubernetes.io/logical_switch: dup-b\nspec:\n  containers:\n  - name: app\n    image: nginx\n").await;
    let a = c.allocated("pinned", "dup-net.default.ovn").await;
    assert!(in_cidr(
        &a["dup-net.default.ovn.kubernetes.io/ip_address"],
        "10.121.0.0/24"
    ));

    // Static IPs: outside the CIDR, excluded, the gateway, taken.
    c.apply(&nad_yaml("excl-net")).await;
    c.apply(&subnet_with(
        "excl",
        "vpc-secondary",
        "10.130.0.0/24",
        "excl-net.default.ovn",
        "  gateway: 10.130.0.1\n  excludeIps:\n  - 10.130.0.10..10.130.0.20\n",
    ))
    .await;
    let static_pod = |name: &str, ip: &str| {
        pod_yaml(
            name,
            &format!(r#"[{{"name": "default/excl-net", "ips": ["{ip}"]}}]"#),
        )
    };
    c.apply(&static_pod("outside", "10.99.0.5")).await;
    c.apply(&static_pod("excluded", "10.130.0.15")).await;
    c.apply(&static_pod("gateway", "10.130.0.1")).await;
    c.apply(&static_pod("taker", "10.130.0.100/24")).await;
    let a = c.allocated("taker", "excl-net.default.ovn").await;
    assert_eq!(
        a["excl-net.default.ovn.kubernetes.io/ip_address"],
        "10.130.0.100"
    );
    c.apply(&static_pod("taken", "10.130.0.100")).await;
    let m = c.event("outside", "InvalidStaticIP").await;
    assert!(m.contains("10.99.0.5") && m.contains("excl"), "{m}");
    let m = c.event("excluded", "StaticIPExcluded").await;
    assert!(m.contains("10.130.0.15") && m.contains("excludeIps"), "{m}");
    let m = c.event("gateway", "StaticIPIsGateway").await;
    assert!(m.contains("10.130.0.1") && m.contains("gateway"), "{m}");
    let m = c.event("taken", "StaticIPTaken").await;
    assert!(m.contains("10.130.0.100") && m.contains("taker"), "{m}");

    // A kube-ovn NAD whose provider is not <nad>.<ns>.ovn: an Event on the NAD.
    c.apply("apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\nmetadata:\n  name: broken-net\n  namespace: default\nspec:\n  config: '{\"cniVersion\": \"0.3.1\", \"type\": \"kube-ovn\", \"server_socket\": \"/run/openvswitch/kube-ovn-daemon.sock\", \"provider\": \"other.default.ovn\"}'\n").await;
    let m = c.event("broken-net", "ProviderMismatch").await;
    assert!(
        m.contains("broken-net.default.ovn") && m.contains("other.default.ovn"),
        "{m}"
    );

    // Malformed annotation JSON.
    c.apply(&pod_yaml(
        "malformed",
        r#"[{"name": "default/kube-ovn-vpc-network""#,
    ))
    .await;
    let m = c.event("malformed", "InvalidNetworksAnnotation").await;
    assert!(m.contains("malformed"), "{m}");

    // Subnet validation: overlap in one VPC, no VPC, gateway outside the CIDR.
    c.apply(&nad_yaml("ovl-net")).await;
    c.apply(&subnet_yaml(
        "overlapping",
        "vpc-secondary",
        "10.100.7.0/24",
        "ovl-net.default.ovn",
    ))
    .await;
    c.apply("apiVersion: kubeovn.io/v1\nkind: Subnet\nmetadata:\n  name: no-vpc\nspec:\n  cidr: 10.140.0.0/24\n  provider: ovl-net.default.ovn\n").await;
    c.apply(&subnet_with(
        "bad-gw",
        "vpc-secondary",
        "10.150.0.0/24",
        "ovl-net.default.ovn",
        "  gateway: 10.151.0.1\n",
    ))
    .await;
    for (subnet, reason, words) in [
        (
            "overlapping",
            "CidrOverlap",
            ["subnet-secondary", "10.100.7.0/24"],
        ),
        ("no-vpc", "VpcRequired", ["spec.vpc", "no default VPC"]),
        ("bad-gw", "InvalidSubnet", ["10.151.0.1", "gateway"]),
    ] {
        let cond = c
            .eventually(&format!("condition {reason} on {subnet}"), || async {
                let s = c.subnet(subnet).await?;
                s.status?
                    .conditions
                    .into_iter()
                    .find(|x| x.type_ == "Validated" && x.reason == reason)
            })
            .await;
        for w in words {
            assert!(
                cond.message.contains(w),
                "{subnet}: {w} in {}",
                cond.message
            );
        }
        assert!(!c.event(subnet, reason).await.is_empty());
    }
    // Nothing of the invalid subnets reached OVN.
    let switches = c
        .ovn
        .nbctl(&["--bare", "--columns=name", "list", "Logical_Switch"]);
    for s in ["overlapping", "no-vpc", "bad-gw"] {
        assert!(
            !switches.lines().any(|l| l.trim() == s),
            "{s} in {switches}"
        );
    }

    // Nothing was allocated for any bad pod; the good ones kept working.
    let good = ["good-1", "mixed"];
    let seed = addresses(&c, SEED_PROVIDER).await;
    let mut names: Vec<&str> = seed.iter().map(|(n, _)| n.as_str()).collect();
    names.sort();
    assert_eq!(names, good);
    c.wait_used("subnet-secondary", 2).await;
    c.wait_used("excl", 1).await;
    c.wait_used("dup-a", 0).await;
    c.wait_used("dup-b", 1).await;
    let mut expected: Vec<String> = vec![
        format!("good-1.default.{SEED_PROVIDER}"),
        format!("mixed.default.{SEED_PROVIDER}"),
        "waits-for-nad.default.late-net.default.ovn".into(),
        "pinned.default.dup-net.default.ovn".into(),
        "taker.default.excl-net.default.ovn".into(),
    ];
    expected.sort();
    assert_eq!(c.nb_pod_ports(), expected);
    assert_eq!(c.ip_crs().await.len(), expected.len());
    c.apply(&pod_yaml("good-2", "default/kube-ovn-vpc-network"))
        .await;
    c.allocated("good-2", SEED_PROVIDER).await;
}

async fn create_pods(
    pods: Api<k8s_openapi::api::core::v1::Pod>,
    names: Vec<String>,
    networks: &str,
) {
    let mut set = tokio::task::JoinSet::new();
    let chunks: Vec<Vec<String>> = names
        .chunks(names.len().div_ceil(16).max(1))
        .map(|c| c.to_vec())
        .collect();
    for chunk in chunks {
        let pods = pods.clone();
        let networks = networks.to_owned();
        set.spawn(async move {
            for name in chunk {
                let pod: k8s_openapi::api::core::v1::Pod =
                    serde_yaml::from_str(&pod_yaml(&name, &networks)).unwrap();
                pods.create(&Default::default(), &pod).await.unwrap();
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_a_200_pod_burst_loses_and_leaks_nothing() {
    let mut c = Cluster::up(0).await;
    c.start_operator();
    c.apply(SEED_NAD).await;
    c.apply(SEED_VPC_SUBNET).await;
    c.wait_used("subnet-secondary", 0).await;

    let names: Vec<String> = (0..200).map(|i| format!("burst-{i}")).collect();
    // Kill while the burst is still being created and wired.
    let creating = tokio::spawn(create_pods(
        c.pods(),
        names.clone(),
        "default/kube-ovn-vpc-network",
    ));
    c.eventually("some pods annotated", || async {
        (addresses(&c, SEED_PROVIDER).await.len() >= 20).then_some(())
    })
    .await;
    c.kill_operator();
    creating.await.unwrap();
    let before = addresses(&c, SEED_PROVIDER).await.len();
    assert!(
        before < 200,
        "the kill came after the burst ({before} annotated)"
    );

    c.start_operator();
    c.eventually("all 200 pods annotated", || async {
        (addresses(&c, SEED_PROVIDER).await.len() == 200).then_some(())
    })
    .await;
    let ips: Vec<String> = addresses(&c, SEED_PROVIDER)
        .await
        .into_iter()
        .map(|(_, ip)| ip)
        .collect();
    let unique: std::collections::HashSet<&String> = ips.iter().collect();
    assert_eq!(unique.len(), 200, "duplicate addresses");
    let mut expected: Vec<String> = names
        .iter()
        .map(|n| format!("{n}.default.{SEED_PROVIDER}"))
        .collect();
    expected.sort();
    c.eventually("exactly the 200 pods' ports in NB", || async {
        (c.nb_pod_ports() == expected).then_some(())
    })
    .await;
    // Each port carries the address its pod was annotated with.
    for (name, ip) in addresses(&c, SEED_PROVIDER).await.iter().take(20) {
        let lsp = format!("{name}.default.{SEED_PROVIDER}");
        assert!(c.lsp_addresses(&lsp).ends_with(&format!(" {ip}")), "{lsp}");
    }
    c.wait_used("subnet-secondary", 200).await;
    c.eventually("200 IP CRs", || async {
        (c.ip_crs().await.len() == 200).then_some(())
    })
    .await;

    // Pods deleted while the operator is down: garbage-collected at start.
    c.kill_operator();
    for name in &names[..100] {
        c.delete_pod(name).await;
    }
    c.start_operator();
    let mut kept: Vec<String> = names[100..]
        .iter()
        .map(|n| format!("{n}.default.{SEED_PROVIDER}"))
        .collect();
    kept.sort();
    c.eventually("ports of deleted pods collected", || async {
        (c.nb_pod_ports() == kept).then_some(())
    })
    .await;
    c.wait_used("subnet-secondary", 100).await;
    c.eventually("IP CRs of deleted pods collected", || async {
        (c.ip_crs().await.len() == 100).then_some(())
    })
    .await;
    let metrics = c.metrics().await;
    assert!(
        metrics.contains("kube_ovn_gc_removed_total{kind=\"lsp\"} 100"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kube_ovn_gc_removed_total{kind=\"address\"} 100"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_mode_and_missing_crds_are_refused_plainly() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kube-ovn"))
        .args([
            "operator",
            "--non-primary-cni-mode=false",
            "--ovn-nb",
            "unix:/nonexistent",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("primary mode is not supported"), "{err}");

    let api = kube_sim::ApiServer::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    api.write_kubeconfig(&dir.path().join("kubeconfig"))
        .unwrap();
    let out = tokio::task::spawn_blocking({
        let dir = dir.path().to_owned();
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_kube-ovn"))
                .env("KUBECONFIG", dir.join("kubeconfig"))
                .args(["operator", "--ovn-nb", "unix:/nonexistent", "--ipam-db"])
                .arg(dir.join("ipam"))
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for crd in [
        "vpcs.kubeovn.io",
        "subnets.kubeovn.io",
        "ips.kubeovn.io",
        "network-attachment-definitions.k8s.cni.cncf.io",
    ] {
        assert!(err.contains(crd), "{crd} in {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn statefulset_pods_keep_their_address_until_scaled_down() {
    use k8s_openapi::api::apps::v1::StatefulSet;
    let mut c = Cluster::up(0).await;
    c.start_operator();
    c.apply(SEED_NAD).await;
    c.apply(SEED_VPC_SUBNET).await;
    c.wait_used("subnet-secondary", 0).await;
    let sts: StatefulSet = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": 2, "serviceName": "web",
                 "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "app", "image": "nginx"}]}}}
    }))
    .unwrap();
    let sts_api: Api<StatefulSet> = Api::namespaced(c.client.clone(), "default");
    let sts = sts_api.create(&Default::default(), &sts).await.unwrap();
    let uid = sts.metadata.uid.clone().unwrap();
    let sts_pod = |name: &str| {
        let mut pod: k8s_openapi::api::core::v1::Pod =
            serde_yaml::from_str(&pod_yaml(name, "default/kube-ovn-vpc-network")).unwrap();
        pod.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "apps/v1".into(),
                kind: "StatefulSet".into(),
                name: "web".into(),
                uid: uid.clone(),
                controller: Some(true),
                block_owner_deletion: None,
            },
        ]);
        pod
    };
    let ip_of = |a: &std::collections::BTreeMap<String, String>| {
        a[&format!("{SEED_PROVIDER}.kubernetes.io/ip_address")].clone()
    };
    for name in ["web-0", "web-1"] {
        c.pods()
            .create(&Default::default(), &sts_pod(name))
            .await
            .unwrap();
    }
    let ip0 = ip_of(&c.allocated("web-0", SEED_PROVIDER).await);
    let ip1 = ip_of(&c.allocated("web-1", SEED_PROVIDER).await);

    // web-0 goes away while the StatefulSet still wants it: everything stays.
    c.delete_pod("web-0").await;
    c.apply(&pod_yaml("ordinary", "default/kube-ovn-vpc-network"))
        .await;
    c.allocated("ordinary", SEED_PROVIDER).await; // the operator has moved on
    let lsp0 = format!("web-0.default.{SEED_PROVIDER}");
    assert!(c.nb_pod_ports().contains(&lsp0));
    c.wait_used("subnet-secondary", 3).await;
    c.pods()
        .create(&Default::default(), &sts_pod("web-0"))
        .await
        .unwrap();
    c.eventually("web-0 back with its address", || async {
        let p = c.pods().get_opt("web-0").await.ok()??;
        let a = p.metadata.annotations.unwrap_or_default();
        (a.get(&format!("{SEED_PROVIDER}.kubernetes.io/allocated"))
            .map(String::as_str)
            == Some("true"))
        .then(|| ip_of(&a))
    })
    .await
    .eq(&ip0)
    .then_some(())
    .expect("web-0 came back with another address");

    // Scaled down to 1: web-1 leaving releases its address and port.
    sts_api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .unwrap();
    c.delete_pod("web-1").await;
    let lsp1 = format!("web-1.default.{SEED_PROVIDER}");
    c.eventually("web-1's port released", || async {
        (!c.nb_pod_ports().contains(&lsp1)).then_some(())
    })
    .await;
    c.wait_used("subnet-secondary", 2).await;
    let _ = ip1;
}
