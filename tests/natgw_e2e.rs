//! The guide's third scenario end to end, as users run it: kube-sim nodes on an external
//! network (a bridge outside the cluster with an external host and its router), kube-ovn
//! installed from `kube-ovn render`, a KubeOvn naming that network, then the seed's
//! VpcNatGateway applied verbatim. The gateway's StatefulSet pod runs `kube-ovn nat-gw`; a
//! VPC pod on the other node reaches a host beyond the router through SNAT (the host sees the
//! EIP), the external host reaches the pod through DNAT and through a FIP; rules change live;
//! a deleted gateway pod comes back with its rules; the VPC's default route follows the
//! gateway. Root: namespaces, OVS, OVN, nftables.

mod install_support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Duration;

use install_support::*;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams};
use kube_ovn::api::nat::{
    IptablesDnatRule, IptablesEIP, IptablesFIPRule, IptablesSnatRule, VpcNatGateway,
};

/// The external network's /24 (kube-sim's external host is its `.1`, the router).
const EXTERNAL_NET: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 0);
const GATEWAY_POD: &str = "vpc-nat-gw-vpc-nat-gw-0";
const LAN_IP: &str = "10.100.0.254";

/// Runs `f` on a thread inside `netns` (sockets made there stay in it).
fn in_netns<T: Send + 'static>(netns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = netns_path(netns);
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: setns on this thread only, with a valid fd.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns into {path}");
        f()
    })
    .join()
    .expect("netns thread")
}

/// A TCP server in `netns` on `addr` that answers each connection with the peer's address.
fn echo_peer_server(netns: &str, addr: SocketAddr) {
    let listener: TcpListener = in_netns(netns, move || {
        TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"))
    });
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let peer = stream
                .peer_addr()
                .map(|p| p.ip().to_string())
                .unwrap_or_default();
            let _ = stream.write_all(peer.as_bytes());
        }
    });
}

/// From `netns`, connects to `to` and reads what the server says (the peer address it saw);
/// `None` if it cannot connect within a second.
fn ask_peer(netns: &str, to: SocketAddr) -> Option<String> {
    in_netns(netns, move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(1)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        Some(text)
    })
}

fn apply(bed: &Installed, yaml: &str) {
    bed.kubectl_stdin(&["apply", "-f", "-"], yaml);
}

fn seed(file: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("hack/demo/seed")
        .join(file)
        .to_string_lossy()
        .into_owned()
}

async fn eip_address(bed: &Installed, name: &str) -> String {
    let api: Api<IptablesEIP> = Api::all(bed.client.clone());
    bed.eventually(
        &format!("EIP {name} allocated and ready"),
        Duration::from_secs(60),
        || async {
            let s = api.get(name).await.ok()?.status?;
            (s.ready && !s.ip.is_empty()).then_some(s.ip)
        },
    )
    .await
}

/// `(ready, Validated condition message)` of a rule.
async fn rule_state<K>(bed: &Installed, name: &str) -> Option<(bool, String, String)>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + serde::Serialize,
{
    let api: Api<K> = Api::all(bed.client.clone());
    let value = serde_json::to_value(api.get(name).await.ok()?).ok()?;
    let status = value.get("status")?;
    let ready = status
        .get("ready")
        .and_then(|r| r.as_bool())
        .unwrap_or(false);
    let validated = status
        .get("conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Validated")?;
    Some((
        ready,
        validated["status"].as_str()?.to_owned(),
        validated["message"].as_str().unwrap_or("").to_owned(),
    ))
}

async fn wait_rule_ready<K>(bed: &Installed, name: &str)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + serde::Serialize,
{
    bed.eventually(
        &format!("rule {name} ready"),
        Duration::from_secs(60),
        || async {
            let (ready, validated, _) = rule_state::<K>(bed, name).await?;
            (ready && validated == "True").then_some(())
        },
    )
    .await;
}

/// The VPC router's static routes toward the gateway's lanIp.
async fn default_route_to_gateway(bed: &Installed) -> bool {
    bed.nbctl(&["lr-route-list", "vpc-secondary"])
        .await
        .lines()
        .any(|l| l.contains("0.0.0.0/0") && l.contains(LAN_IP))
}

/// The gateway pod, Running, with its netns and node.
async fn gateway_pod(bed: &Installed, not_uid: Option<String>) -> (String, String, String) {
    let pods: Api<Pod> = Api::namespaced(bed.client.clone(), NAMESPACE);
    bed.eventually("the gateway pod Running", Duration::from_secs(120), || {
        let pods = pods.clone();
        let not_uid = not_uid.clone();
        async move {
            let pod = pods.get(GATEWAY_POD).await.ok()?;
            let uid = pod.metadata.uid.clone()?;
            if Some(&uid) == not_uid.as_ref() {
                return None;
            }
            let node = pod.spec.as_ref()?.node_name.clone()?;
            Some((uid, running_netns(&pod)?, node))
        }
    })
    .await
}

/// What a person would look at when traffic through the gateway fails.
fn gateway_state(bed: &Installed, gw_netns: &str, app_netns: &str) -> String {
    let name = |n: &str| n.rsplit('/').next().unwrap().to_owned();
    let mut text = String::new();
    for (ns, args) in [
        (name(gw_netns), "-4 addr"),
        (name(gw_netns), "-4 rule"),
        (name(gw_netns), "-4 route show table all"),
        (name(app_netns), "-4 route"),
        (name(app_netns), "-4 addr"),
    ] {
        let out = std::process::Command::new("ip")
            .args(["-n", &ns])
            .args(args.split(' '))
            .output()
            .expect("ip");
        text += &format!(
            "--- ip -n {ns} {args}\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let out = std::process::Command::new("nsenter")
        .args([
            format!("--net={}", netns_path(gw_netns)),
            "nft".into(),
            "list".into(),
            "ruleset".into(),
        ])
        .output()
        .expect("nft");
    text += &format!(
        "--- nft list ruleset\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    text += &format!(
        "--- gateway log\n{}",
        bed.kubectl(&["logs", "-n", NAMESPACE, GATEWAY_POD])
    );
    text
}

/// Polls `probe` like `eventually`, printing the gateway's state before failing.
async fn through_gateway<T, F, Fut>(
    bed: &Installed,
    netns: (&str, &str),
    what: &str,
    mut probe: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "timed out waiting for {what}\n{}",
                gateway_state(bed, netns.0, netns.1)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn addresses_in(netns: &str) -> String {
    let out = std::process::Command::new("ip")
        .args(["-n", netns.rsplit('/').next().unwrap(), "-4", "-o", "addr"])
        .output()
        .expect("ip addr");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_seed_nat_gateway_gives_a_vpc_snat_dnat_and_fip_across_nodes() {
    let bed = Installed::up_with(2, Some(EXTERNAL_NET)).await;
    let ext = bed.external();
    bed.install_operator().await;
    bed.annotate_tunnel_addresses();
    let started = std::time::Instant::now();
    bed.apply_kube_ovn(&format!(
        "{SPEC_NETDEV}  natGateway:\n    externalNetwork:\n      interface: ext0\n      cidr: {}\n      gateway: {}\n      excludeIps:\n      - 172.18.0.1..172.18.0.9\n",
        ext.cidr, ext.router
    ));
    bed.wait_available(started);

    // The guide's network and NAT gateway, verbatim.
    apply_seed_network(&bed);
    bed.kubectl(&["apply", "-f", &seed("06-vpc-nat-gw.yaml")]);
    let (gw_uid, gw_netns, gw_node) = gateway_pod(&bed, None).await;
    let gw_addresses = addresses_in(&gw_netns);
    assert!(
        gw_addresses.contains(&format!("{LAN_IP}/")),
        "lanIp on the gateway's LAN leg: {gw_addresses}"
    );
    assert!(
        gw_addresses.contains("172.18.0."),
        "an external address on the gateway's external leg: {gw_addresses}"
    );
    let gateways: Api<VpcNatGateway> = Api::all(bed.client.clone());
    let status = bed
        .eventually(
            "the gateway's status names its pod and addresses",
            Duration::from_secs(30),
            || async {
                let s = gateways.get("vpc-nat-gw").await.ok()?.status?;
                (!s.lan_ips.is_empty() && !s.external_ips.is_empty()).then_some(s)
            },
        )
        .await;
    assert_eq!(status.pod.as_deref(), Some(GATEWAY_POD));
    assert_eq!(status.lan_ips, [LAN_IP]);
    assert!(
        status
            .external_ips
            .iter()
            .all(|ip| ip.starts_with("172.18.0.")),
        "{:?}",
        status.external_ips
    );
    bed.eventually(
        "the VPC's default route via lanIp",
        Duration::from_secs(30),
        || async { default_route_to_gateway(&bed).await.then_some(()) },
    )
    .await;

    // A VPC pod on the other node.
    let app_node = bed.nodes.iter().find(|n| **n != gw_node).unwrap().clone();
    // In secondary mode eth0 keeps the pod's default route: what should go out through the
    // gateway (and the replies of what comes in) is routed via net1's gateway.
    apply(
        &bed,
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: app-1\n  namespace: default\n  annotations:\n    k8s.v1.cni.cncf.io/networks: default/kube-ovn-vpc-network\n    {PROVIDER}.kubernetes.io/routes: '[{{\"dst\": \"{}\", \"gw\": \"10.100.0.1\"}}, {{\"dst\": \"{}/32\", \"gw\": \"10.100.0.1\"}}]'\nspec:\n  nodeName: {app_node}\n  containers:\n  - name: app\n    image: nginx\n",
            ext.cidr, ext.beyond
        ),
    );
    let (app_ip, app_netns) = attached(&bed, "app-1").await;
    let app_ip: Ipv4Addr = app_ip.parse().unwrap();

    // SNAT: the host beyond the router sees the EIP.
    apply(
        &bed,
        "apiVersion: kubeovn.io/v1\nkind: IptablesEIP\nmetadata:\n  name: eip-snat\nspec:\n  natGwDp: vpc-nat-gw\n---\napiVersion: kubeovn.io/v1\nkind: IptablesSnatRule\nmetadata:\n  name: snat-vpc\nspec:\n  eip: eip-snat\n  internalCIDR: 10.100.0.0/16\n",
    );
    let snat_eip = eip_address(&bed, "eip-snat").await;
    wait_rule_ready::<IptablesSnatRule>(&bed, "snat-vpc").await;
    let beyond = SocketAddr::from((ext.beyond, 9000));
    echo_peer_server(&ext.netns, beyond);
    let via_gateway = |what: &'static str, from: String, to: SocketAddr| {
        let (bed, gw_netns, app_netns) = (&bed, gw_netns.clone(), app_netns.clone());
        async move {
            through_gateway(bed, (&gw_netns, &app_netns), what, || {
                let from = from.clone();
                async move { ask_peer(&from, to) }
            })
            .await
        }
    };
    let seen = via_gateway(
        "the VPC pod to reach the host beyond the router",
        app_netns.clone(),
        beyond,
    )
    .await;
    assert_eq!(seen, snat_eip, "the external host sees the EIP as source");
    let out = ping(&app_netns, &ext.beyond.to_string(), 3, "0.2")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ping through SNAT: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    // DNAT (TCP) and FIP, from the external host.
    echo_peer_server(&app_netns, SocketAddr::from((app_ip, 80)));
    apply(
        &bed,
        &format!("apiVersion: kubeovn.io/v1\nkind: IptablesEIP\nmetadata:\n  name: eip-dnat\nspec:\n  natGwDp: vpc-nat-gw\n---\napiVersion: kubeovn.io/v1\nkind: IptablesDnatRule\nmetadata:\n  name: dnat-web\nspec:\n  eip: eip-dnat\n  externalPort: \"8080\"\n  protocol: tcp\n  internalIp: {app_ip}\n  internalPort: \"80\"\n---\napiVersion: kubeovn.io/v1\nkind: IptablesEIP\nmetadata:\n  name: eip-fip\nspec:\n  natGwDp: vpc-nat-gw\n---\napiVersion: kubeovn.io/v1\nkind: IptablesFIPRule\nmetadata:\n  name: fip-app\nspec:\n  eip: eip-fip\n  internalIp: {app_ip}\n"),
    );
    let dnat_eip: Ipv4Addr = eip_address(&bed, "eip-dnat").await.parse().unwrap();
    let fip_eip: Ipv4Addr = eip_address(&bed, "eip-fip").await.parse().unwrap();
    wait_rule_ready::<IptablesDnatRule>(&bed, "dnat-web").await;
    wait_rule_ready::<IptablesFIPRule>(&bed, "fip-app").await;
    let via_dnat = SocketAddr::from((dnat_eip, 8080));
    let seen = via_gateway(
        "the external host reaches the pod through DNAT",
        ext.netns.clone(),
        via_dnat,
    )
    .await;
    assert_eq!(
        seen,
        ext.router.to_string(),
        "DNAT keeps the external client's address"
    );
    // Hairpin: the pod reaching its own DNAT from inside the VPC comes back through the
    // gateway, masqueraded to the gateway's LAN address.
    let seen = via_gateway(
        "the VPC pod to reach its own DNAT (hairpin)",
        app_netns.clone(),
        via_dnat,
    )
    .await;
    assert_eq!(seen, LAN_IP, "hairpin traffic is masqueraded to lanIp");
    let via_fip = SocketAddr::from((fip_eip, 80));
    let seen = via_gateway(
        "the external host reaches the pod through its FIP",
        ext.netns.clone(),
        via_fip,
    )
    .await;
    assert_eq!(seen, ext.router.to_string());
    let out = ping(&ext.netns, &fip_eip.to_string(), 3, "0.2")
        .output()
        .unwrap();
    assert!(out.status.success(), "ping the FIP from outside");
    // With a FIP, the pod's own outbound traffic leaves as the FIP (its SNAT wins over the
    // subnet's).
    let seen = via_gateway(
        "the FIP pod reaches the host beyond the router",
        app_netns.clone(),
        beyond,
    )
    .await;
    assert_eq!(seen, fip_eip.to_string(), "a FIP pod leaves as its FIP");

    // A conflicting DNAT (same EIP and port) is refused with a condition, and the first one
    // keeps working.
    apply(
        &bed,
        &format!("apiVersion: kubeovn.io/v1\nkind: IptablesDnatRule\nmetadata:\n  name: dnat-clash\nspec:\n  eip: eip-dnat\n  externalPort: \"8080\"\n  protocol: tcp\n  internalIp: {app_ip}\n  internalPort: \"81\"\n"),
    );
    let (ready, validated, message) = bed
        .eventually(
            "the clashing DNAT's condition",
            Duration::from_secs(30),
            || async {
                let s = rule_state::<IptablesDnatRule>(&bed, "dnat-clash").await?;
                (s.1 == "False").then_some(s)
            },
        )
        .await;
    assert!(!ready, "a refused rule is not ready");
    assert_eq!(validated, "False");
    assert!(
        message.contains("8080"),
        "the condition says why: {message}"
    );
    assert!(ask_peer(&ext.netns, via_dnat).is_some());
    bed.kubectl(&["delete", "iptables-dnat-rules", "dnat-clash"]);

    // Live: removing the DNAT cuts it; adding it back restores it.
    bed.kubectl(&["delete", "iptables-dnat-rules", "dnat-web"]);
    bed.eventually(
        "the DNAT is gone from the data path",
        Duration::from_secs(30),
        || async { ask_peer(&ext.netns, via_dnat).is_none().then_some(()) },
    )
    .await;
    apply(
        &bed,
        &format!("apiVersion: kubeovn.io/v1\nkind: IptablesDnatRule\nmetadata:\n  name: dnat-web\nspec:\n  eip: eip-dnat\n  externalPort: \"8080\"\n  protocol: tcp\n  internalIp: {app_ip}\n  internalPort: \"80\"\n"),
    );
    via_gateway("the DNAT is back", ext.netns.clone(), via_dnat).await;

    // The gateway pod deleted: the StatefulSet brings it back and it rebuilds every rule.
    let pods: Api<Pod> = Api::namespaced(bed.client.clone(), NAMESPACE);
    pods.delete(GATEWAY_POD, &DeleteParams::default())
        .await
        .expect("delete the gateway pod");
    let (_, gw_netns_2, _) = gateway_pod(&bed, Some(gw_uid)).await;
    assert_ne!(gw_netns_2, gw_netns, "a new pod sandbox");
    for (what, to) in [("DNAT", via_dnat), ("FIP", via_fip)] {
        bed.eventually(
            &format!("{what} works after the gateway pod's restart"),
            Duration::from_secs(60),
            || async { ask_peer(&ext.netns, to) },
        )
        .await;
    }

    // Deleting the gateway takes the VPC's default route with it.
    bed.kubectl(&["delete", "vpc-nat-gateways", "vpc-nat-gw"]);
    bed.eventually(
        "the VPC's default route removed with the gateway",
        Duration::from_secs(30),
        || async { (!default_route_to_gateway(&bed).await).then_some(()) },
    )
    .await;
    // The install has no IPAMClaim CRD (optional): the leader says so once, not at every
    // retry of its watch (the follower never watches).
    let log = bed.kubectl(&[
        "logs",
        "-n",
        NAMESPACE,
        "-l",
        "app=kube-ovn-operator",
        "--tail=-1",
    ]);
    let said = log
        .lines()
        .filter(|l| l.contains("ipamclaims") && l.contains("not served"))
        .count();
    let warned = log
        .lines()
        .filter(|l| l.contains("ipamclaims") && l.contains("watch failed"))
        .count();
    // Once per leadership (normally one).
    let leaderships = log.matches("acquired leadership").count();
    assert!(
        said >= 1 && said <= leaderships && warned == 0,
        "said {said} times in {leaderships} leaderships, warned {warned} times:\n{log}"
    );
    bed.shutdown().await;
}
