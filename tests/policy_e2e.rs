//! Traffic policy with real traffic across two nodes (real OVN, the operator and node roles,
//! pods made through the plugin): SecurityGroups allow exactly their rules and change live,
//! ovn-trace agrees with what TCP showed, a pod without groups is unaffected, port security
//! drops a pod that changes its MAC or IP, a private subnet admits exactly its
//! `allowSubnets`, and a MultiNetworkPolicy restricts exactly its network's interfaces and
//! admits the pods of the namespaces its `namespaceSelector` peers select (live on a label
//! change) on a port given by name.

mod fullpath_support;
mod node_support;
mod operator_support;
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use fullpath_support::Bed;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube_ovn::api::security_group::SecurityGroup;
use node_support::PodNetns;
use operator_support::{nad_yaml, subnet_yaml, vpc_yaml};
use serde_json::json;

const NAD: &str = "sg-net";
const PROVIDER: &str = "sg-net.default.ovn";

/// Runs `f` on a thread inside network namespace `netns` (sockets keep the netns they were
/// made in).
fn in_netns<T: Send + 'static>(netns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{netns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open netns");
        // SAFETY: setns on this thread only, with a descriptor valid for the call.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns into {path}");
        f()
    })
    .join()
    .expect("netns thread")
}

/// Serves TCP `ports` in `pod` (each connection gets `hello` and is closed) for the process's
/// life.
fn serve(pod: &PodNetns, ports: &[u16]) {
    for &port in ports {
        let listener = in_netns(&pod.name, move || {
            TcpListener::bind(("0.0.0.0", port)).expect("bind in pod")
        });
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let _ = conn.write_all(b"hello");
            }
        });
    }
}

/// Whether `from` opens a TCP connection to `ip:port` and reads the greeting.
fn tcp(from: &PodNetns, ip: &str, port: u16) -> bool {
    tcp_from(&from.name, ip, port)
}

/// `tcp` from any network namespace (a node's, for a pod's eth0).
fn tcp_from(netns: &str, ip: &str, port: u16) -> bool {
    let addr: SocketAddr = format!("{ip}:{port}").parse().expect("address");
    in_netns(netns, move || {
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut got = String::new();
        s.read_to_string(&mut got).is_ok() && got == "hello"
    })
}

fn ping(bed: &Bed, from: &PodNetns, ip: &str) -> bool {
    bed.sandbox.ping(&from.name, ip)
}

/// Waits (up to 90 s, the other beds' patience) until `check` holds.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !check() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn lsp(pod: &str) -> String {
    format!("{pod}.default.{PROVIDER}")
}

fn mac_of(bed: &Bed, pod: &str) -> String {
    let p = bed.rt.block_on(bed.kube.pods().get(pod)).expect("pod");
    p.metadata.annotations.unwrap_or_default()[&format!("{PROVIDER}.kubernetes.io/mac_address")]
        .clone()
}

fn groups(bed: &Bed) -> Api<SecurityGroup> {
    Api::all(bed.client.clone())
}

fn group(bed: &Bed, name: &str) -> SecurityGroup {
    bed.rt
        .block_on(groups(bed).get(name))
        .expect("security group")
}

/// A group allowing TCP 80 in from `peer`'s members and everything out.
fn web_group(name: &str, peer: &str) -> String {
    format!(
        "apiVersion: kubeovn.io/v1
kind: SecurityGroup
metadata:
  name: {name}
spec:
  ingressRules:
  - ipVersion: ipv4
    protocol: tcp
    priority: 1
    remoteType: securityGroup
    remoteSecurityGroup: {peer}
    portRangeMin: 80
    portRangeMax: 80
    policy: allow
  egressRules:
  - ipVersion: ipv4
    protocol: all
    priority: 1
    remoteType: address
    remoteAddress: 0.0.0.0/0
    policy: allow
"
    )
}

/// What ovn-trace says of a TCP packet from `from` to `to`: whether it reaches `to`'s port.
fn trace_tcp(bed: &Bed, from: (&str, &str), to: (&str, &str), port: u16) -> (bool, String) {
    let (from_pod, from_ip) = from;
    let (to_pod, to_ip) = to;
    let flow = format!(
        "inport == \"{}\" && eth.src == {} && eth.dst == {} && ip4.src == {from_ip} && ip4.dst == {to_ip} && ip.ttl == 64 && tcp && tcp.src == 40000 && tcp.dst == {port}",
        lsp(from_pod),
        mac_of(bed, from_pod),
        mac_of(bed, to_pod),
    );
    let out = Command::new("ovn-trace")
        .arg(format!("--db={}", bed.sandbox.sb_endpoint()))
        .args(["--ct=new", "--ct=new", "--minimal", "sg-subnet", &flow])
        .output()
        .expect("ovn-trace");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "ovn-trace failed: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `--minimal` prints the final `output("<port>");` only for a packet that gets there.
    let reached = text.contains(&format!("output(\"{}\")", lsp(to_pod)));
    (reached, text)
}

fn one_subnet_bed() -> Bed {
    let bed = Bed::up();
    bed.apply(&nad_yaml(NAD));
    bed.apply(&vpc_yaml("vpc-sg"));
    bed.apply(&subnet_yaml(
        "sg-subnet",
        "vpc-sg",
        "10.30.0.0/24",
        PROVIDER,
    ));
    bed
}

#[test]
fn security_groups_allow_only_their_rules_live_and_port_security_drops_spoofing() {
    let bed = one_subnet_bed();
    bed.apply(&web_group("sg-a", "sg-b"));
    bed.apply(&web_group("sg-b", "sg-a"));
    let net = format!("default/{NAD}");
    let sg_key = format!("{PROVIDER}.kubernetes.io/security_groups");
    let (a, a_ip) = bed.pod_with(1, "pod-a", &net, PROVIDER, &[(&sg_key, "sg-a")]);
    let (b, b_ip) = bed.pod_with(2, "pod-b", &net, PROVIDER, &[(&sg_key, "sg-b")]);
    let (c, c_ip) = bed.pod(1, "pod-c", &net, PROVIDER);
    let (d, d_ip) = bed.pod(2, "pod-d", &net, PROVIDER);
    for p in [&a, &b, &c, &d] {
        serve(p, &[80, 81]);
    }

    // Each group reports its one member; NB has its port group and the rule's ACL.
    eventually("both groups ready with one member each", || {
        ["sg-a", "sg-b"].iter().all(|g| {
            group(&bed, g)
                .status
                .is_some_and(|s| s.ready && s.members == 1)
        })
    });
    let status = group(&bed, "sg-a").status.unwrap();
    assert_eq!(status.port_group.as_deref(), Some("ovn.sg.sg.a"));
    let acls = bed.sandbox.nbctl(&["acl-list", "ovn.sg.sg.a"]);
    assert!(
        acls.contains("18483")
            && acls.contains("tcp.dst == 80")
            && acls.contains("$ovn.sg.sg.b.associated.v4"),
        "{acls}"
    );
    bed.sandbox.nbctl(&["--wait=hv", "sync"]);

    // TCP 80 passes both ways across the nodes; ping and TCP 81 do not.
    eventually("a reaches b on TCP 80", || tcp(&a, &b_ip, 80));
    eventually("b reaches a on TCP 80", || tcp(&b, &a_ip, 80));
    assert!(!tcp(&a, &b_ip, 81), "a reached b on TCP 81");
    assert!(!tcp(&b, &a_ip, 81), "b reached a on TCP 81");
    assert!(!ping(&bed, &a, &b_ip), "a pinged b");
    assert!(!ping(&bed, &b, &a_ip), "b pinged a");
    // A pod without groups can't get into a protected one, and is itself unaffected.
    assert!(!tcp(&c, &a_ip, 80), "c (no group) reached a on TCP 80");
    assert!(
        ping(&bed, &c, &d_ip),
        "c cannot ping d (neither names a group)"
    );
    assert!(tcp(&c, &d_ip, 81), "c cannot reach d on TCP 81");
    assert!(tcp(&d, &c_ip, 80), "d cannot reach c on TCP 80");

    // ovn-trace agrees: TCP 80 from a reaches b's port, TCP 81 does not.
    let (allowed, text) = trace_tcp(&bed, ("pod-a", &a_ip), ("pod-b", &b_ip), 80);
    assert!(allowed, "ovn-trace drops a→b TCP 80:\n{text}");
    let (denied, text) = trace_tcp(&bed, ("pod-a", &a_ip), ("pod-b", &b_ip), 81);
    assert!(!denied, "ovn-trace lets a→b TCP 81 through:\n{text}");

    // Removing sg-b's ingress rule closes b's TCP 80 live; a's stays open.
    bed.rt
        .block_on(groups(&bed).patch(
            "sg-b",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"ingressRules": null}})),
        ))
        .expect("patch sg-b");
    eventually("a no longer reaches b on TCP 80", || !tcp(&a, &b_ip, 80));
    assert!(tcp(&b, &a_ip, 80), "b lost TCP 80 to a");
    let (allowed, text) = trace_tcp(&bed, ("pod-a", &a_ip), ("pod-b", &b_ip), 80);
    assert!(!allowed, "ovn-trace still lets a→b TCP 80 through:\n{text}");

    // Membership is live too: b leaves its group (its interface stays) and is open again.
    let link_before = b.ip(&["-o", "link", "show", "net1"]);
    let mut removal = serde_json::Map::new();
    removal.insert(sg_key.clone(), serde_json::Value::Null);
    bed.kube.annotate("pod-b", removal.into());
    eventually("sg-b has no member", || {
        group(&bed, "sg-b").status.is_some_and(|s| s.members == 0)
    });
    eventually("a pings b once b names no group", || ping(&bed, &a, &b_ip));
    assert_eq!(
        b.ip(&["-o", "link", "show", "net1"]),
        link_before,
        "b's net1 was rebuilt"
    );

    // Deleting a group removes its rows; a, naming only a missing group, stays closed.
    bed.rt
        .block_on(groups(&bed).delete("sg-a", &Default::default()))
        .expect("delete sg-a");
    eventually("port group of sg-a gone", || {
        !bed.sandbox
            .nbctl(&["--bare", "--columns=name", "list", "Port_Group"])
            .contains("ovn.sg.sg.a")
    });
    assert!(!ping(&bed, &b, &a_ip), "a is open after its group went");

    // Port security: e's port carries its MAC and IP; a new MAC or IP loses connectivity,
    // while c (no port security) may change its IP and still talk.
    let ps_key = format!("{PROVIDER}.kubernetes.io/port_security");
    let (e, e_ip) = bed.pod_with(1, "pod-e", &net, PROVIDER, &[(&ps_key, "true")]);
    let e_mac = mac_of(&bed, "pod-e");
    let security =
        bed.sandbox
            .nbctl(&["get", "Logical_Switch_Port", &lsp("pod-e"), "port_security"]);
    assert!(security.contains(&format!("{e_mac} {e_ip}")), "{security}");
    eventually("e pings d", || ping(&bed, &e, &d_ip));
    e.ip(&["link", "set", "net1", "address", "0a:00:00:00:99:99"]);
    assert!(!ping(&bed, &e, &d_ip), "e pinged d with a forged MAC");
    e.ip(&["link", "set", "net1", "address", &e_mac]);
    eventually("e pings d with its own MAC again", || ping(&bed, &e, &d_ip));
    e.ip(&["addr", "del", &format!("{e_ip}/24"), "dev", "net1"]);
    e.ip(&["addr", "add", "10.30.0.222/24", "dev", "net1"]);
    assert!(!ping(&bed, &e, &d_ip), "e pinged d from a forged IP");
    c.ip(&["addr", "del", &format!("{c_ip}/24"), "dev", "net1"]);
    c.ip(&["addr", "add", "10.30.0.223/24", "dev", "net1"]);
    eventually("c (no port security) pings d from a new IP", || {
        ping(&bed, &c, &d_ip)
    });
}

#[test]
fn a_private_subnet_admits_exactly_its_allowed_subnets_and_a_later_mnp_crd_is_picked_up() {
    let bed = Bed::up();
    bed.apply(&vpc_yaml("vpc-priv"));
    for (nad, subnet, cidr) in [
        ("priv-net", "priv", "10.41.0.0/24"),
        ("allowed-net", "allowed", "10.42.0.0/24"),
        ("other-net", "other", "10.43.0.0/24"),
    ] {
        bed.apply(&nad_yaml(nad));
        let mut yaml = subnet_yaml(subnet, "vpc-priv", cidr, &format!("{nad}.default.ovn"));
        if subnet == "priv" {
            yaml.push_str("  private: true\n  allowSubnets:\n  - 10.42.0.0/24\n");
        }
        bed.apply(&yaml);
    }
    let pod = |n: usize, name: &str, nad: &str| {
        let (p, ip) = bed.pod(
            n,
            name,
            &format!("default/{nad}"),
            &format!("{nad}.default.ovn"),
        );
        // The subnets share one router: reach the others through the gateway.
        let gw = format!("{}.1", ip.rsplit_once('.').unwrap().0);
        p.ip(&["route", "add", "10.40.0.0/13", "via", &gw, "dev", "net1"]);
        (p, ip)
    };
    let (p1, p1_ip) = pod(1, "priv-1", "priv-net");
    let (p2, p2_ip) = pod(2, "priv-2", "priv-net");
    let (q, _) = pod(2, "allowed-1", "allowed-net");
    let (r, _) = pod(1, "other-1", "other-net");
    eventually("the private subnet's ACLs are in NB", || {
        bed.sandbox
            .nbctl(&["acl-list", "priv"])
            .contains("10.42.0.0/24")
    });
    let acls = bed.sandbox.nbctl(&["acl-list", "priv"]);
    assert!(acls.contains("to-lport  1000 (ip) drop"), "{acls}");
    bed.sandbox.nbctl(&["--wait=hv", "sync"]);

    eventually("the allowed subnet reaches the private one", || {
        ping(&bed, &q, &p1_ip)
    });
    assert!(
        ping(&bed, &p1, &p2_ip),
        "the private subnet's own pods cannot talk"
    );
    assert!(
        !ping(&bed, &r, &p1_ip),
        "a subnet not in allowSubnets reached the private one"
    );
    assert!(
        !ping(&bed, &r, &p2_ip),
        "a subnet not in allowSubnets reached the private one"
    );

    // Opening it up removes the ACLs.
    bed.rt
        .block_on(
            Api::<kube_ovn::api::subnet::Subnet>::all(bed.client.clone()).patch(
                "priv",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"private": false, "allowSubnets": null}})),
            ),
        )
        .expect("patch subnet");
    eventually("the other subnet reaches the no longer private one", || {
        ping(&bed, &r, &p1_ip)
    });
    assert!(bed.sandbox.nbctl(&["acl-list", "priv"]).trim().is_empty());

    // The operator started without the MultiNetworkPolicy CRD: installing it now is enough
    // (no restart) for a policy to apply: deny all ingress to priv-1 on priv-net.
    let crd = serde_yaml::from_str(include_str!("../crds/multi-networkpolicy.yaml"))
        .expect("the community's CRD");
    bed.rt
        .block_on(
            Api::<CustomResourceDefinition>::all(bed.client.clone())
                .create(&PostParams::default(), &crd),
        )
        .expect("install the MultiNetworkPolicy CRD");
    label(&bed, "priv-1", "locked");
    assert!(
        ping(&bed, &p2, &p1_ip),
        "priv-2 reaches priv-1 before the policy"
    );
    bed.apply(
        "apiVersion: k8s.cni.cncf.io/v1beta1
kind: MultiNetworkPolicy
metadata:
  name: lock
  namespace: default
  annotations:
    k8s.v1.cni.cncf.io/policy-for: priv-net
spec:
  podSelector:
    matchLabels:
      app: locked
  policyTypes:
  - Ingress
",
    );
    eventually("the late policy's port group is in NB", || {
        bed.sandbox
            .nbctl(&["--bare", "--columns=name", "list", "Port_Group"])
            .contains("ovn.mnp.default.lock")
    });
    bed.sandbox.nbctl(&["--wait=hv", "sync"]);
    eventually("priv-2 loses priv-1 under the late policy", || {
        !ping(&bed, &p2, &p1_ip)
    });
}

fn label(bed: &Bed, pod: &str, app: &str) {
    bed.rt
        .block_on(bed.kube.pods().patch(
            pod,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"app": app}}})),
        ))
        .expect("label pod");
}

#[test]
fn a_multi_network_policy_restricts_its_networks_interfaces_only() {
    let crd_yaml = include_str!("../crds/multi-networkpolicy.yaml");
    let crd = serde_yaml::from_str(crd_yaml).expect("the community's CRD");
    let bed = Bed::up_with_crds(&[crd]);
    bed.apply(&vpc_yaml("vpc-mnp"));
    for (nad, cidr) in [("mnp-a", "10.51.0.0/24"), ("mnp-b", "10.52.0.0/24")] {
        bed.apply(&nad_yaml(nad));
        bed.apply(&subnet_yaml(
            nad,
            "vpc-mnp",
            cidr,
            &format!("{nad}.default.ovn"),
        ));
    }
    let on = |n: usize, name: &str, nad: &str, app: &str| {
        let made = bed.pod(
            n,
            name,
            &format!("default/{nad}"),
            &format!("{nad}.default.ovn"),
        );
        label(&bed, name, app);
        serve(&made.0, &[80, 81]);
        made
    };
    let (server, server_ip) = on(1, "server", "mnp-a", "server");
    let (client, _) = on(2, "client", "mnp-a", "client");
    let (intruder, _) = on(2, "intruder", "mnp-a", "other");
    let (_server_b, server_b_ip) = on(1, "server-b", "mnp-b", "server");
    let (intruder_b, _) = on(2, "intruder-b", "mnp-b", "other");
    eventually("intruder reaches server before any policy", || {
        tcp(&intruder, &server_ip, 81)
    });

    bed.apply(
        "apiVersion: k8s.cni.cncf.io/v1beta1
kind: MultiNetworkPolicy
metadata:
  name: web-from-client
  namespace: default
  annotations:
    k8s.v1.cni.cncf.io/policy-for: mnp-a
spec:
  podSelector:
    matchLabels:
      app: server
  policyTypes:
  - Ingress
  ingress:
  - from:
    - podSelector:
        matchLabels:
          app: client
    ports:
    - protocol: TCP
      port: 80
",
    );
    eventually("the intruder loses TCP 80 to the server", || {
        !tcp(&intruder, &server_ip, 80)
    });
    bed.sandbox.nbctl(&["--wait=hv", "sync"]);
    eventually("the client reaches the server on TCP 80", || {
        tcp(&client, &server_ip, 80)
    });
    assert!(!tcp(&client, &server_ip, 81), "client reached TCP 81");
    assert!(!tcp(&intruder, &server_ip, 81), "intruder reached TCP 81");
    // The same pod selector on another network, and the server's eth0, are untouched.
    assert!(
        tcp(&intruder_b, &server_b_ip, 81),
        "the policy restricted mnp-b"
    );
    assert!(
        tcp_from(&bed.sandbox.node_netns(1), &server.eth0_ip, 81),
        "the policy restricted eth0"
    );
    let members = bed.sandbox.nbctl(&[
        "--bare",
        "--columns=ports",
        "list",
        "Port_Group",
        "ovn.mnp.default.web_from_client",
    ]);
    assert_eq!(
        members.split_whitespace().count(),
        1,
        "only server's net1 is a member"
    );

    // Deleting it restores traffic.
    let policies: Api<kube_ovn::api::multi_network_policy::MultiNetworkPolicy> =
        Api::namespaced(bed.client.clone(), "default");
    bed.rt
        .block_on(policies.delete("web-from-client", &Default::default()))
        .expect("delete policy");
    eventually("the intruder reaches the server again", || {
        tcp(&intruder, &server_ip, 81)
    });

    // A namespaceSelector peer: the pods of the labelled namespace get in (on the named port
    // only), a pod of another namespace and the policy's own namespace's pods do not, until a
    // label change.
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(bed.client.clone());
    for (ns, labels) in [("mnp-blue", json!({"team": "a"})), ("mnp-red", json!({}))] {
        let object = serde_json::from_value(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}}),
        )
        .expect("namespace");
        bed.rt
            .block_on(namespaces.create(&Default::default(), &object))
            .expect("create namespace");
    }
    let from_ns = |ns: &str, name: &str| {
        let made = bed.pod_in(ns, 2, name, "default/mnp-a", "mnp-a.default.ovn", &[]);
        serve(&made.0, &[81]);
        made.0
    };
    let blue = from_ns("mnp-blue", "blue-client");
    let red = from_ns("mnp-red", "red-client");
    // The rule's port is by name: the server's container port `web` is TCP 81.
    bed.rt
        .block_on(bed.kube.pods().patch(
            "server",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"containers": [{"name": "c", "image": "busybox",
                "ports": [{"name": "web", "containerPort": 81, "protocol": "TCP"}]}]}}),
            ),
        ))
        .expect("name the server's port");
    bed.apply(
        "apiVersion: k8s.cni.cncf.io/v1beta1
kind: MultiNetworkPolicy
metadata:
  name: from-team-a
  namespace: default
  annotations:
    k8s.v1.cni.cncf.io/policy-for: mnp-a
spec:
  podSelector:
    matchLabels:
      app: server
  ingress:
  - from:
    - namespaceSelector:
        matchLabels:
          team: a
    ports:
    - port: web
",
    );
    eventually("the red namespace's pod loses the server", || {
        !tcp(&red, &server_ip, 81)
    });
    bed.sandbox.nbctl(&["--wait=hv", "sync"]);
    eventually("the blue namespace's pod reaches the server", || {
        tcp(&blue, &server_ip, 81)
    });
    assert!(
        !tcp(&blue, &server_ip, 80),
        "the blue pod reached a port the named port does not name"
    );
    assert!(
        !tcp(&client, &server_ip, 81),
        "a pod of the policy's unlabelled namespace reached the server"
    );
    bed.rt
        .block_on(namespaces.patch(
            "mnp-red",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": "a"}}})),
        ))
        .expect("label namespace");
    eventually("labelling the red namespace lets its pod in", || {
        tcp(&red, &server_ip, 81)
    });
    assert!(
        !tcp(&intruder, &server_ip, 81),
        "the intruder reached the server"
    );
}
