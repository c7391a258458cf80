//! The operator's VPC NAT gateway side on kube-sim (with its StatefulSet controller) and real
//! OVN NB: the seed's VpcNatGateway applied verbatim becomes the StatefulSet of the contract
//! and the VPC route 0.0.0.0/0 → 10.100.0.254 in NB; the lanIp cannot be taken by a pod; the
//! external network comes from the KubeOvn object; EIPs get addresses of it; conflicting FIPs
//! leave the later one not validated; deleting the gateway takes the route away and frees the
//! lanIp. The gateway pod's process (the nat-gw role) is not run here.

mod operator_support;
mod support;

use std::collections::BTreeMap;

use ipnet::IpNet;
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube_ovn::api::condition::{find_condition, Condition};
use kube_ovn::api::kubeovn::KubeOvn;
use kube_ovn::api::nad::NetworkAttachmentDefinition;
use kube_ovn::api::nat::{IptablesEIP, IptablesFIPRule, VpcNatGateway};
use kube_ovn::api::vpc::Vpc;
use kube_sim::controllers::WorkloadControllers;
use operator_support::*;
use serde_json::json;

const SEED_GATEWAY: &str = include_str!("../hack/demo/seed/06-vpc-nat-gw.yaml");
const LAN: &str = "kube-ovn-vpc-network.default.ovn";
const EXT: &str = "ovn-vpc-external-network.kube-system";
const GW_POD: &str = "vpc-nat-gw-vpc-nat-gw-0";

/// The install switch with an external central (nothing of it runs here), an image for the
/// gateways and the external network on eth1.
const KUBE_OVN: &str = r#"
apiVersion: operator.kubeovn.io/v1alpha1
kind: KubeOvn
metadata:
  name: kube-ovn
spec:
  image: kube-ovn:dev
  ovnCentral:
    mode: External
    nbAddress: tcp:127.0.0.1:6641
    sbAddress: tcp:127.0.0.1:6642
  natGateway:
    externalNetwork:
      interface: eth1
      cidr: 172.18.0.0/16
      gateway: 172.18.0.1
      excludeIps: ["172.18.0.2..172.18.0.9"]
"#;

fn in_cidr(ip: &str, cidr: &str) -> bool {
    let net: IpNet = cidr.parse().unwrap();
    net.contains(&ip.parse::<std::net::IpAddr>().unwrap())
}

async fn create<K>(c: &Cluster, yaml: &str) -> K
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let obj: K = serde_yaml::from_str(yaml).unwrap();
    Api::<K>::all(c.client.clone())
        .create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("creating {yaml}: {e}"))
}

fn condition(conditions: &[Condition], type_: &str) -> Option<(bool, String, String)> {
    find_condition(conditions, type_).map(|c| (c.is_true(), c.reason.clone(), c.message.clone()))
}

/// The lines of `ovn-nbctl lr-route-list <router>` naming `prefix` via `nexthop`.
fn nb_routes(c: &Cluster, router: &str, prefix: &str, nexthop: &str) -> usize {
    c.ovn
        .nbctl(&["lr-route-list", router])
        .lines()
        .filter(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words.contains(&prefix) && words.contains(&nexthop)
        })
        .count()
}

async fn gateway(c: &Cluster, name: &str) -> Option<VpcNatGateway> {
    Api::<VpcNatGateway>::all(c.client.clone())
        .get_opt(name)
        .await
        .unwrap()
}

async fn eip(c: &Cluster, name: &str) -> Option<IptablesEIP> {
    Api::<IptablesEIP>::all(c.client.clone())
        .get_opt(name)
        .await
        .unwrap()
}

/// The EIP's `status.ip` once it has one.
async fn eip_ip(c: &Cluster, name: &str) -> String {
    c.eventually(&format!("EIP {name} allocated"), || async {
        let ip = eip(c, name).await?.status?.ip;
        (!ip.is_empty()).then_some(ip)
    })
    .await
}

/// The FIP's `Validated` condition once it has one.
async fn fip_validated(c: &Cluster, name: &str) -> (bool, String, String) {
    c.eventually(&format!("FIP {name} validated or refused"), || async {
        let fip = Api::<IptablesFIPRule>::all(c.client.clone())
            .get_opt(name)
            .await
            .unwrap()?;
        condition(&fip.status?.rule.conditions, "Validated")
    })
    .await
}

fn fip_yaml(name: &str, eip: &str, ip: &str) -> String {
    format!("apiVersion: kubeovn.io/v1\nkind: IptablesFIPRule\nmetadata:\n  name: {name}\nspec:\n  eip: {eip}\n  internalIp: {ip}\n")
}

fn eip_yaml(name: &str, v4ip: Option<&str>) -> String {
    let v4ip = v4ip.map(|ip| format!("  v4ip: {ip}\n")).unwrap_or_default();
    format!("apiVersion: kubeovn.io/v1\nkind: IptablesEIP\nmetadata:\n  name: {name}\nspec:\n  natGwDp: vpc-nat-gw\n{v4ip}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seed_nat_gateway_gets_statefulset_route_reserved_lan_ip_and_eips() {
    let mut c = Cluster::up(0).await;
    let _controllers = WorkloadControllers::start(c.client.clone());
    c.start_operator();
    create::<KubeOvn>(&c, KUBE_OVN).await;
    c.apply(SEED_NAD).await;
    c.apply(SEED_VPC_SUBNET).await;

    // 1. The external network from the KubeOvn object: an IPAM-only Subnet and a macvlan NAD.
    let ext_subnet = c
        .eventually("the external Subnet ready", || async {
            let s = c.subnet("ovn-vpc-external-network").await?;
            let ready = condition(&s.status.as_ref()?.conditions, "Ready")?;
            ready.0.then_some(s)
        })
        .await;
    assert_eq!(ext_subnet.spec.provider.as_deref(), Some(EXT));
    assert_eq!(ext_subnet.spec.cidr_block.as_deref(), Some("172.18.0.0/16"));
    let nad = Api::<NetworkAttachmentDefinition>::namespaced(c.client.clone(), "kube-system")
        .get("ovn-vpc-external-network")
        .await
        .unwrap();
    let config: serde_json::Value = serde_json::from_str(&nad.spec.config).unwrap();
    assert_eq!(config["type"], "macvlan");
    assert_eq!(config["master"], "eth1");
    assert_eq!(config["mode"], "bridge");
    assert_eq!(config["ipam"]["type"], "kube-ovn");
    assert_eq!(config["ipam"]["provider"], EXT);
    assert_eq!(
        config["ipam"]["server_socket"],
        "/run/openvswitch/kube-ovn-daemon.sock"
    );
    // An IPAM-only subnet: no logical switch in NB.
    assert!(!c
        .ovn
        .nbctl(&["ls-list"])
        .contains("ovn-vpc-external-network"));

    // 2. The seed's gateway, verbatim.
    create::<VpcNatGateway>(&c, SEED_GATEWAY).await;
    let gw = c
        .eventually("the gateway Ready", || async {
            let g = gateway(&c, "vpc-nat-gw").await?;
            let ready = condition(&g.status.as_ref()?.conditions, "Ready")?;
            ready.0.then_some(g)
        })
        .await;
    let status = gw.status.unwrap();
    assert_eq!(status.external_subnets, ["ovn-vpc-external-network"]);
    let sts = Api::<StatefulSet>::namespaced(c.client.clone(), "kube-system")
        .get("vpc-nat-gw-vpc-nat-gw")
        .await
        .expect("the gateway's StatefulSet");
    let labels = sts.metadata.labels.clone().unwrap();
    assert_eq!(labels["app"], "vpc-nat-gw-vpc-nat-gw");
    assert_eq!(labels["ovn.kubernetes.io/vpc-nat-gw"], "true");
    let owner = &sts.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("VpcNatGateway", "vpc-nat-gw")
    );
    let spec = sts.spec.unwrap();
    assert_eq!(spec.replicas, Some(1));
    let a = spec.template.metadata.unwrap().annotations.unwrap();
    assert_eq!(
        a["k8s.v1.cni.cncf.io/networks"],
        "default/kube-ovn-vpc-network,kube-system/ovn-vpc-external-network"
    );
    assert_eq!(a["ovn.kubernetes.io/vpc_nat_gw"], "vpc-nat-gw");
    assert_eq!(
        a[&format!("{LAN}.kubernetes.io/ip_address")],
        "10.100.0.254"
    );
    assert_eq!(
        a[&format!("{LAN}.kubernetes.io/logical_switch")],
        "subnet-secondary"
    );
    assert!(
        !a.contains_key(&format!("{EXT}.kubernetes.io/routes")),
        "eth0 keeps the gateway pod's default route"
    );
    let pod = spec.template.spec.unwrap();
    let container = &pod.containers[0];
    let gateway_v4 = container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "GATEWAY_V4")
        .and_then(|e| e.value.clone());
    assert_eq!(
        gateway_v4.as_deref(),
        Some("172.18.0.1"),
        "the external gateway, for the role's policy route"
    );
    assert_eq!(container.name, "vpc-nat-gw");
    assert_eq!(container.image.as_deref(), Some("kube-ovn:dev"));
    assert_eq!(
        container.command.as_deref(),
        Some(&["kube-ovn".to_owned(), "nat-gw".to_owned()][..])
    );
    assert_eq!(pod.service_account_name.as_deref(), Some("kube-ovn-nat-gw"));

    // 3. The VPC's default route to the lanIp, in NB.
    c.eventually("0.0.0.0/0 via 10.100.0.254 in NB", || async {
        (nb_routes(&c, "vpc-secondary", "0.0.0.0/0", "10.100.0.254") == 1).then_some(())
    })
    .await;
    let ids = c.ovn.nbctl(&[
        "--bare",
        "--columns=external_ids",
        "find",
        "Logical_Router_Static_Route",
        "nexthop=10.100.0.254",
    ]);
    assert!(ids.contains("vpc-nat-gw=vpc-nat-gw"), "{ids}");
    assert!(ids.contains("vendor=kube-ovn"), "{ids}");

    // 4. The gateway pod (made by the StatefulSet) gets both attachments: the lanIp on the
    // LAN (with its port in NB), an address of the external subnet without a port.
    let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(c.client.clone(), "kube-system");
    let gw_annotations: BTreeMap<String, String> = c
        .eventually("the gateway pod attached on both networks", || async {
            let p = pods.get_opt(GW_POD).await.ok()??;
            let a = p.metadata.annotations.unwrap_or_default();
            let both = [LAN, EXT].iter().all(|k| {
                a.get(&format!("{k}.kubernetes.io/allocated"))
                    .map(String::as_str)
                    == Some("true")
            });
            both.then_some(a)
        })
        .await;
    assert_eq!(
        gw_annotations[&format!("{LAN}.kubernetes.io/ip_address")],
        "10.100.0.254"
    );
    let gw_ext_ip = gw_annotations[&format!("{EXT}.kubernetes.io/ip_address")].clone();
    assert!(in_cidr(&gw_ext_ip, "172.18.0.0/16"), "{gw_ext_ip}");
    assert_eq!(
        gw_ext_ip, "172.18.0.10",
        "the first address after the excluded ones"
    );
    assert_eq!(
        gw_annotations[&format!("{EXT}.kubernetes.io/gateway")],
        "172.18.0.1"
    );
    assert_eq!(
        c.nb_pod_ports(),
        vec![format!("{GW_POD}.kube-system.{LAN}")],
        "a LAN port only: the external leg is macvlan"
    );
    c.eventually("the gateway's status names its pod", || async {
        (gateway(&c, "vpc-nat-gw").await?.status?.pod.as_deref() == Some(GW_POD)).then_some(())
    })
    .await;

    // 5. No pod can take the lanIp.
    c.apply(&pod_yaml(
        "squatter",
        r#"[{"name":"kube-ovn-vpc-network","namespace":"default","ips":["10.100.0.254"]}]"#,
    ))
    .await;
    let m = c.event("squatter", "StaticIPTaken").await;
    assert!(m.contains("10.100.0.254"), "{m}");

    // 6. EIPs from the external subnet: dynamic, static, and a static one already taken.
    create::<IptablesEIP>(&c, &eip_yaml("eip-dynamic", None)).await;
    create::<IptablesEIP>(&c, &eip_yaml("eip-static", Some("172.18.0.100"))).await;
    let dynamic = eip_ip(&c, "eip-dynamic").await;
    assert!(in_cidr(&dynamic, "172.18.0.0/16"), "{dynamic}");
    assert_ne!(
        dynamic, gw_ext_ip,
        "an EIP never gets the gateway pod's own address"
    );
    assert_eq!(eip_ip(&c, "eip-static").await, "172.18.0.100");
    create::<IptablesEIP>(&c, &eip_yaml("eip-clash", Some("172.18.0.100"))).await;
    let clash = c
        .eventually("the clashing EIP refused", || async {
            let e = eip(&c, "eip-clash").await?;
            condition(&e.status?.conditions, "Validated").filter(|v| !v.0)
        })
        .await;
    assert_eq!(clash.1, "AddressTaken");
    assert!(
        clash.2.contains("iptables-eip \"eip-static\""),
        "{}",
        clash.2
    );
    assert_eq!(eip(&c, "eip-clash").await.unwrap().status.unwrap().ip, "");

    // 7. Two FIPs on one EIP: the later one is not validated.
    create::<IptablesFIPRule>(&c, &fip_yaml("fip-first", "eip-dynamic", "10.100.0.5")).await;
    let first = fip_validated(&c, "fip-first").await;
    assert!(first.0, "{first:?}");
    create::<IptablesFIPRule>(&c, &fip_yaml("fip-second", "eip-dynamic", "10.100.0.6")).await;
    let second = fip_validated(&c, "fip-second").await;
    assert_eq!(
        (second.0, second.1.as_str()),
        (false, "Conflict"),
        "{second:?}"
    );
    assert!(second.2.contains("fip \"fip-first\""), "{}", second.2);
    let fip = Api::<IptablesFIPRule>::all(c.client.clone())
        .get("fip-first")
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(fip.rule.v4ip, dynamic);
    assert_eq!(fip.rule.nat_gw_dp, "vpc-nat-gw");
    assert_eq!(fip.internal_ip, "10.100.0.5");
    assert!(
        !fip.rule.ready,
        "status.ready is the nat-gw role's, never the operator's"
    );
    c.eventually("eip-dynamic says a FIP uses it", || async {
        (eip(&c, "eip-dynamic").await?.status?.nat == "fip").then_some(())
    })
    .await;

    // 8. An EIP named by rules stays until they are gone.
    let eips: Api<IptablesEIP> = Api::all(c.client.clone());
    eips.delete("eip-dynamic", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let held = eip(&c, "eip-dynamic").await.expect("held by its finalizer");
    assert!(held.metadata.deletion_timestamp.is_some());
    assert!(held
        .metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == "kube-ovn.io/eip-in-use"));
    let fips: Api<IptablesFIPRule> = Api::all(c.client.clone());
    for f in ["fip-first", "fip-second"] {
        fips.delete(f, &DeleteParams::default()).await.unwrap();
    }
    c.eventually("eip-dynamic gone once no rule names it", || async {
        eip(&c, "eip-dynamic").await.is_none().then_some(())
    })
    .await;

    // 9. Vpc.spec.staticRoutes and policyRoutes apply too, and go when removed.
    let vpcs: Api<Vpc> = Api::all(c.client.clone());
    let policy = "ip4.dst == 10.200.0.0/16";
    let has_policy = || {
        c.ovn
            .nbctl(&["lr-policy-list", "vpc-secondary"])
            .lines()
            .any(|l| l.contains(policy) && l.contains("reroute") && l.contains("10.100.0.253"))
    };
    let routes = |r: serde_json::Value, p: serde_json::Value| json!({"spec": {"staticRoutes": r, "policyRoutes": p}});
    vpcs.patch(
        "vpc-secondary",
        &PatchParams::default(),
        &Patch::Merge(routes(
            json!([{"cidr": "192.168.0.0/16", "nextHopIP": "10.100.0.253"}]),
            json!([{"priority": 31000, "match": policy, "action": "reroute", "nextHopIP": "10.100.0.253"}]),
        )),
    )
    .await
    .unwrap();
    c.eventually("the spec's route and policy in NB", || async {
        (nb_routes(&c, "vpc-secondary", "192.168.0.0/16", "10.100.0.253") == 1 && has_policy())
            .then_some(())
    })
    .await;
    vpcs.patch(
        "vpc-secondary",
        &PatchParams::default(),
        &Patch::Merge(routes(json!(null), json!(null))),
    )
    .await
    .unwrap();
    c.eventually("the spec's route and policy gone", || async {
        (nb_routes(&c, "vpc-secondary", "192.168.0.0/16", "10.100.0.253") == 0 && !has_policy())
            .then_some(())
    })
    .await;
    assert_eq!(
        nb_routes(&c, "vpc-secondary", "0.0.0.0/0", "10.100.0.254"),
        1
    );

    // 10. A gateway whose lanIp a pod already holds: not ready, nothing applied.
    c.apply(&pod_yaml(
        "holder",
        r#"[{"name":"kube-ovn-vpc-network","namespace":"default","ips":["10.100.0.200"]}]"#,
    ))
    .await;
    c.allocated("holder", LAN).await;
    create::<VpcNatGateway>(
        &c,
        "apiVersion: kubeovn.io/v1\nkind: VpcNatGateway\nmetadata:\n  name: gw-late\nspec:\n  vpc: vpc-secondary\n  subnet: subnet-secondary\n  lanIp: 10.100.0.200\n",
    )
    .await;
    let late = c
        .eventually("gw-late not ready", || async {
            let g = gateway(&c, "gw-late").await?;
            condition(&g.status?.conditions, "Ready").filter(|r| !r.0)
        })
        .await;
    assert_eq!(late.1, "LanIpInUse");
    assert!(late.2.contains("pod default/holder"), "{}", late.2);
    assert_eq!(
        nb_routes(&c, "vpc-secondary", "0.0.0.0/0", "10.100.0.200"),
        0
    );
    assert!(
        Api::<StatefulSet>::namespaced(c.client.clone(), "kube-system")
            .get_opt("vpc-nat-gw-gw-late")
            .await
            .unwrap()
            .is_none()
    );

    // 11. Deleting the gateway: its StatefulSet and route go, the lanIp is free again (a pod
    // asking for it now gets it; the squatter's own retry timer is not waited for).
    let gateways: Api<VpcNatGateway> = Api::all(c.client.clone());
    gateways
        .delete("vpc-nat-gw", &DeleteParams::default())
        .await
        .unwrap();
    c.eventually("the gateway gone", || async {
        gateway(&c, "vpc-nat-gw").await.is_none().then_some(())
    })
    .await;
    assert_eq!(
        nb_routes(&c, "vpc-secondary", "0.0.0.0/0", "10.100.0.254"),
        0
    );
    c.eventually("the StatefulSet gone", || async {
        Api::<StatefulSet>::namespaced(c.client.clone(), "kube-system")
            .get_opt("vpc-nat-gw-vpc-nat-gw")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    c.delete_pod("squatter").await;
    c.apply(&pod_yaml(
        "newcomer",
        r#"[{"name":"kube-ovn-vpc-network","namespace":"default","ips":["10.100.0.254"]}]"#,
    ))
    .await;
    let a = c.allocated("newcomer", LAN).await;
    assert_eq!(
        a[&format!("{LAN}.kubernetes.io/ip_address")],
        "10.100.0.254"
    );

    // 12. The external network goes with its setting.
    Api::<KubeOvn>::all(c.client.clone())
        .patch(
            "kube-ovn",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"natGateway": null}})),
        )
        .await
        .unwrap();
    c.eventually("the external Subnet and NAD gone", || async {
        let nad = Api::<NetworkAttachmentDefinition>::namespaced(c.client.clone(), "kube-system")
            .get_opt("ovn-vpc-external-network")
            .await
            .unwrap();
        (c.subnet("ovn-vpc-external-network").await.is_none() && nad.is_none()).then_some(())
    })
    .await;
    c.kill_operator();
}
