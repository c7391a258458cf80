//! IP pools end to end (kube-sim, real OVN NB, the `kube-ovn operator` binary): an IPPool
//! reserves part of a subnet for the pods that name it in `<provider>.kubernetes.io/ip_pool`,
//! an address list hands its entries to a Deployment's pods one each (a StatefulSet's by
//! ordinal), and a pool that is exhausted, outside its subnet or names no subnet is said so on
//! the pod (an Event) and on the IPPool (`Ready=False`), with nothing allocated.

mod operator_support;
mod support;

use kube::api::Api;
use kube_ovn::api::ippool::IPPool;
use operator_support::*;

const PROVIDER: &str = "kube-ovn-vpc-network.default.ovn";

fn ippool_yaml(name: &str, subnet: &str, ips: &[&str], namespaces: &[&str]) -> String {
    format!(
        "apiVersion: kubeovn.io/v1\nkind: IPPool\nmetadata:\n  name: {name}\nspec:\n  subnet: {subnet}\n  ips: {}\n  namespaces: {}\n",
        serde_json::to_string(ips).unwrap(),
        serde_json::to_string(namespaces).unwrap()
    )
}

/// A pod on the seed network with extra annotations.
fn pod_with(name: &str, annotations: &[(&str, &str)]) -> String {
    let mut doc: serde_yaml::Value =
        serde_yaml::from_str(&pod_yaml(name, "default/kube-ovn-vpc-network")).unwrap();
    for (k, v) in annotations {
        doc["metadata"]["annotations"][*k] = (*v).into();
    }
    serde_yaml::to_string(&doc).unwrap()
}

fn ip_of(a: &std::collections::BTreeMap<String, String>) -> String {
    a[&format!("{PROVIDER}.kubernetes.io/ip_address")].clone()
}

async fn pool_ready(c: &Cluster, name: &str) -> (String, String, i64, i64) {
    let api: Api<IPPool> = Api::all(c.client.clone());
    let p = api.get(name).await.unwrap();
    let status = p.status.unwrap_or_default();
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (format!("{:?}", c.status), c.message.clone()))
        .unwrap_or_default();
    (
        ready.0,
        ready.1,
        status.v4_using_ips,
        status.v4_available_ips,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pools_and_address_lists_hand_out_only_their_addresses_and_say_when_they_cannot() {
    let mut c = Cluster::up(0).await;
    c.start_operator();
    c.apply(SEED_NAD).await;
    c.apply(SEED_VPC_SUBNET).await;
    c.wait_used("subnet-secondary", 0).await;
    c.apply(&ippool_yaml(
        "web-pool",
        "subnet-secondary",
        &["10.100.7.10..10.100.7.11"],
        &["default"],
    ))
    .await;
    c.eventually("web-pool Ready with 2 addresses", || async {
        let (ready, _, used, available) = pool_ready(&c, "web-pool").await;
        (ready == "True" && used == 0 && available == 2).then_some(())
    })
    .await;

    // An ordinary pod never gets a pool's address: the pool is reserved.
    c.apply(&pod_yaml("plain", "default/kube-ovn-vpc-network"))
        .await;
    let plain = ip_of(&c.allocated("plain", PROVIDER).await);
    assert!(!plain.starts_with("10.100.7."), "plain pod got {plain}");

    // Three replicas naming the pool: two get its two addresses, the third an Event.
    let pool = format!("{PROVIDER}.kubernetes.io/ip_pool");
    for name in ["web-a", "web-b"] {
        c.apply(&pod_with(name, &[(&pool, "web-pool")])).await;
    }
    let mut got: Vec<String> = Vec::new();
    for name in ["web-a", "web-b"] {
        got.push(ip_of(&c.allocated(name, PROVIDER).await));
    }
    got.sort();
    assert_eq!(got, ["10.100.7.10", "10.100.7.11"]);
    c.apply(&pod_with("web-c", &[(&pool, "web-pool")])).await;
    let m = c.event("web-c", "IPPoolExhausted").await;
    eprintln!("exhausted: {m}");
    assert!(m.contains("web-pool"), "{m}");
    c.eventually("web-pool shows 2 used", || async {
        let (_, _, used, available) = pool_ready(&c, "web-pool").await;
        (used == 2 && available == 0).then_some(())
    })
    .await;
    // web-a goes: web-c takes its address.
    c.delete_pod("web-a").await;
    let c_ip = ip_of(&c.allocated("web-c", PROVIDER).await);
    assert!(got.contains(&c_ip), "web-c got {c_ip}");

    // An address list: each pod takes the first free entry.
    let list = "10.100.8.1,10.100.8.2";
    for name in ["list-a", "list-b"] {
        c.apply(&pod_with(name, &[(&pool, list)])).await;
        let ip = ip_of(&c.allocated(name, PROVIDER).await);
        assert!(list.split(',').any(|e| e == ip), "{name} got {ip}");
    }
    let (a, b) = (
        ip_of(&c.allocated("list-a", PROVIDER).await),
        ip_of(&c.allocated("list-b", PROVIDER).await),
    );
    assert_ne!(a, b);
    c.apply(&pod_with("list-c", &[(&pool, list)])).await;
    let m = c.event("list-c", "IPPoolExhausted").await;
    eprintln!("list exhausted: {m}");
    assert!(m.contains("every address") && m.contains(&pool), "{m}");

    // An address outside the subnet: an Event naming it, nothing allocated.
    c.apply(&pod_with("list-out", &[(&pool, "10.200.0.5")]))
        .await;
    let m = c.event("list-out", "InvalidStaticIP").await;
    eprintln!("outside: {m}");
    assert!(m.contains("10.200.0.5"), "{m}");

    // A pool outside its subnet, and a pool naming no subnet: Ready=False on the pool, an
    // Event on a pod that names it, nothing allocated.
    c.apply(&ippool_yaml(
        "outside",
        "subnet-secondary",
        &["10.101.0.5"],
        &[],
    ))
    .await;
    c.apply(&ippool_yaml(
        "orphan",
        "no-such-subnet",
        &["10.100.9.1"],
        &[],
    ))
    .await;
    let outside = c
        .eventually("outside not Ready", || async {
            let (ready, message, _, _) = pool_ready(&c, "outside").await;
            (ready == "False" && message.contains("usable range")).then_some(message)
        })
        .await;
    eprintln!("outside pool: {outside}");
    assert!(outside.contains("outside the usable range"), "{outside}");
    let orphan = c
        .eventually("orphan not Ready", || async {
            let (ready, message, _, _) = pool_ready(&c, "orphan").await;
            (ready == "False" && message.contains("does not exist")).then_some(message)
        })
        .await;
    assert!(orphan.contains("no-such-subnet"), "{orphan}");
    c.apply(&pod_with("uses-outside", &[(&pool, "outside")]))
        .await;
    let m = c.event("uses-outside", "IPPoolUnusable").await;
    eprintln!("uses outside: {m}");
    c.apply(&pod_with("uses-orphan", &[(&pool, "orphan")]))
        .await;
    let m = c.event("uses-orphan", "IPPoolUnusable").await;
    assert!(m.contains("no-such-subnet"), "{m}");
    c.apply(&pod_with("uses-nothing", &[(&pool, "not-a-pool")]))
        .await;
    let m = c.event("uses-nothing", "IPPoolNotFound").await;
    assert!(m.contains("not-a-pool"), "{m}");
    c.apply(&pod_with("bad-value", &[(&pool, "10.100.8.1,nonsense")]))
        .await;
    let m = c.event("bad-value", "InvalidIPPool").await;
    assert!(m.contains("nonsense"), "{m}");

    // Nothing of the refused pods holds an address: plain, web-b, web-c, list-a, list-b.
    c.wait_used("subnet-secondary", 5).await;
    for pod in [
        "list-c",
        "list-out",
        "uses-outside",
        "uses-orphan",
        "uses-nothing",
        "bad-value",
    ] {
        let p = c.pods().get(pod).await.unwrap();
        let a = p.metadata.annotations.unwrap_or_default();
        assert!(
            !a.contains_key(&format!("{PROVIDER}.kubernetes.io/allocated")),
            "{pod} was allocated"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claimed_address_outlives_its_pod_comes_back_with_the_claim_and_goes_with_it() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::CustomResourceExt;
    use kube_ovn::api::ipamclaim::IPAMClaim;
    let mut c = Cluster::up(0).await;
    let crds: Api<CustomResourceDefinition> = Api::all(c.client.clone());
    crds.create(&Default::default(), &IPAMClaim::crd())
        .await
        .unwrap();
    c.start_operator();
    c.apply(SEED_NAD).await;
    c.apply(SEED_VPC_SUBNET).await;
    c.wait_used("subnet-secondary", 0).await;
    c.apply("apiVersion: k8s.cni.cncf.io/v1alpha1\nkind: IPAMClaim\nmetadata:\n  name: vm1.net1\n  namespace: default\nspec:\n  network: kube-ovn-vpc-network\n  interface: net1\n")
        .await;
    let claimed = r#"[{"name":"kube-ovn-vpc-network","ipam-claim-reference":"vm1.net1"}]"#;

    c.apply(&pod_yaml("virt-launcher-vm1-aaaaa", claimed)).await;
    let ip = ip_of(&c.allocated("virt-launcher-vm1-aaaaa", PROVIDER).await);
    let claims: Api<IPAMClaim> = Api::namespaced(c.client.clone(), "default");
    let status = c
        .eventually("claim status.ips", || async {
            claims
                .get("vm1.net1")
                .await
                .ok()?
                .status
                .filter(|s| !s.ips.is_empty())
        })
        .await;
    assert_eq!(status.ips, [format!("{ip}/16")]);
    assert_eq!(status.owner_pod.unwrap().name, "virt-launcher-vm1-aaaaa");

    // The pod goes (the VM stops): its port goes, the address stays with the claim.
    c.delete_pod("virt-launcher-vm1-aaaaa").await;
    let lsp = format!("virt-launcher-vm1-aaaaa.default.{PROVIDER}");
    c.eventually("the old launcher's port removed", || async {
        (!c.nb_pod_ports().contains(&lsp)).then_some(())
    })
    .await;
    c.apply(&pod_yaml("filler", "default/kube-ovn-vpc-network"))
        .await;
    let filler = ip_of(&c.allocated("filler", PROVIDER).await);
    assert_ne!(filler, ip, "a pod without the claim never gets its address");
    c.wait_used("subnet-secondary", 2).await;

    // The VM starts again: a new launcher pod with the same claim gets the same address.
    c.apply(&pod_yaml("virt-launcher-vm1-bbbbb", claimed)).await;
    let again = ip_of(&c.allocated("virt-launcher-vm1-bbbbb", PROVIDER).await);
    assert_eq!(again, ip, "the claim's address came back");
    c.eventually("claim owner updated", || async {
        let s = claims.get("vm1.net1").await.ok()?.status?;
        (s.owner_pod?.name == "virt-launcher-vm1-bbbbb").then_some(())
    })
    .await;

    // A second pod with the claim while the first runs: refused, nothing allocated.
    c.apply(&pod_yaml("virt-launcher-vm1-ccccc", claimed)).await;
    let m = c.event("virt-launcher-vm1-ccccc", "IPAMClaimInUse").await;
    assert!(m.contains("held by pod virt-launcher-vm1-bbbbb"), "{m}");
    c.delete_pod("virt-launcher-vm1-ccccc").await;

    // Bad references: an Event, nothing allocated.
    c.apply(&pod_yaml(
        "no-claim",
        r#"[{"name":"kube-ovn-vpc-network","ipam-claim-reference":"missing"}]"#,
    ))
    .await;
    let m = c.event("no-claim", "IPAMClaimNotFound").await;
    assert!(m.contains("default/missing"), "{m}");
    c.apply(&pod_yaml(
        "claim-and-ips",
        r#"[{"name":"kube-ovn-vpc-network","ipam-claim-reference":"vm1.net1","ips":["10.100.0.50"]}]"#,
    ))
    .await;
    let m = c.event("claim-and-ips", "InvalidNetworksAnnotation").await;
    assert!(m.contains("mutually exclusive"), "{m}");
    c.wait_used("subnet-secondary", 2).await;

    // The VM is deleted: pod and claim go, and so does the address.
    c.delete_pod("virt-launcher-vm1-bbbbb").await;
    claims
        .delete("vm1.net1", &Default::default())
        .await
        .unwrap();
    c.wait_used("subnet-secondary", 1).await;
}
