//! Rendering: a pure function from the `KubeOvn` spec, the operator's version and image, and
//! the observed nodes to every object the install consists of (the templates of `assets/`
//! filled in). No I/O: `apply.rs` writes what this returns, and the unit tests below read it.
//!
//! Every object carries the labels `app.kubernetes.io/managed-by: kube-ovn-operator` (orphans
//! are found by it), `part-of: kube-ovn`, `component` and `version`, and an owner reference to
//! the `KubeOvn` object.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, Namespace, NodeAffinity, NodeSelector, NodeSelectorRequirement,
    NodeSelectorTerm, PodSpec, PodTemplateSpec, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::assets::{self, TemplateError};
use crate::api::kubeovn::{CentralStatus, DatapathType, KubeOvnSpec, NodeOvsMode, OvnCentralMode};

pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGER_NAME: &str = "kube-ovn-operator";
pub const PART_OF: &str = "app.kubernetes.io/part-of";
pub const COMPONENT: &str = "app.kubernetes.io/component";
pub const VERSION_LABEL: &str = "app.kubernetes.io/version";
/// The label selector of everything the install created.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=kube-ovn-operator";

pub const OVN_CENTRAL: &str = "ovn-central";
pub const OVS_OVN: &str = "ovs-ovn";
pub const KUBE_OVN_CNI: &str = "kube-ovn-cni";

/// NB and SB client ports of the embedded central (Kube-OVN's).
pub const NB_PORT: u16 = 6641;
pub const SB_PORT: u16 = 6642;

/// A node as rendering needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedNode {
    pub name: String,
    /// Its InternalIP.
    pub address: Option<IpAddr>,
    pub labels: BTreeMap<String, String>,
    pub ready: bool,
    pub unschedulable: bool,
}

/// The operator's own identity, which every rendered workload runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    pub version: String,
    /// The image the operator runs (`RELATED_IMAGE_KUBE_OVN` or its pod's).
    pub image: Option<String>,
}

/// Why the install can't be rendered from the cluster as it is (spec checks are `validate.rs`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("spec.ovnCentral.replicas is {wanted} but only {found} node(s) can run a member ({nodes}); add Ready nodes or label them kube-ovn/role=master")]
    NotEnoughNodes {
        wanted: u32,
        found: usize,
        nodes: String,
    },
    #[error("central node {node} has no InternalIP address")]
    NodeWithoutAddress { node: String },
    #[error("no image to run: set spec.image, or run the operator with RELATED_IMAGE_KUBE_OVN")]
    NoImage,
    #[error(transparent)]
    Template(#[from] TemplateError),
}

impl RenderError {
    pub fn reason(&self) -> &'static str {
        match self {
            RenderError::NotEnoughNodes { .. } => "NotEnoughNodes",
            RenderError::NodeWithoutAddress { .. } => "NodeWithoutAddress",
            RenderError::NoImage => "ImageUnknown",
            RenderError::Template(_) => "TemplateBroken",
        }
    }
}

/// Everything the install consists of.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub namespace: Namespace,
    pub service_accounts: Vec<ServiceAccount>,
    pub cluster_roles: Vec<ClusterRole>,
    pub cluster_role_bindings: Vec<ClusterRoleBinding>,
    /// In the install's namespace.
    pub role_bindings: Vec<RoleBinding>,
    pub central: Option<StatefulSet>,
    pub ovs_ovn: Option<DaemonSet>,
    pub cni: DaemonSet,
    /// Where NB and SB are, as written to the status and given to the nodes.
    pub endpoints: CentralStatus,
}

/// Nodes labelled so are preferred for central members (Kube-OVN's label).
pub const CENTRAL_NODE_LABEL: (&str, &str) = ("kube-ovn/role", "master");

/// The nodes that run central members: the previous choice while all of it still exists,
/// else Ready schedulable nodes, labelled `kube-ovn/role=master` first, by name.
pub fn choose_central_nodes(
    replicas: u32,
    nodes: &[ObservedNode],
    previous: &[String],
) -> Result<Vec<ObservedNode>, RenderError> {
    let wanted = replicas as usize;
    let by_name = |n: &str| nodes.iter().find(|o| o.name == n);
    if previous.len() == wanted && previous.iter().all(|p| by_name(p).is_some()) {
        return Ok(previous
            .iter()
            .filter_map(|p| by_name(p).cloned())
            .collect());
    }
    let mut candidates: Vec<&ObservedNode> = nodes
        .iter()
        .filter(|n| n.ready && !n.unschedulable && n.address.is_some())
        .collect();
    let labelled = |n: &ObservedNode| {
        n.labels.get(CENTRAL_NODE_LABEL.0).map(String::as_str) == Some(CENTRAL_NODE_LABEL.1)
    };
    candidates.sort_by(|a, b| (!labelled(a), &a.name).cmp(&(!labelled(b), &b.name)));
    if candidates.len() < wanted {
        return Err(RenderError::NotEnoughNodes {
            wanted: replicas,
            found: candidates.len(),
            nodes: if candidates.is_empty() {
                "none Ready".into()
            } else {
                candidates
                    .iter()
                    .map(|n| n.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        });
    }
    Ok(candidates.into_iter().take(wanted).cloned().collect())
}

/// What rendering reads.
pub struct Input<'a> {
    pub spec: &'a KubeOvnSpec,
    pub owner: OwnerReference,
    pub operator: &'a Operator,
    /// The central members' nodes (`choose_central_nodes`); unused with an external central.
    pub central_nodes: &'a [ObservedNode],
}

fn endpoints_of(addresses: &[IpAddr], port: u16) -> String {
    addresses
        .iter()
        .map(|a| match a {
            IpAddr::V4(v4) => format!("tcp:{v4}:{port}"),
            IpAddr::V6(v6) => format!("tcp:[{v6}]:{port}"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Renders the install.
pub fn render(input: &Input<'_>) -> Result<Rendered, RenderError> {
    let spec = input.spec;
    let image = spec
        .image
        .clone()
        .or_else(|| input.operator.image.clone())
        .ok_or(RenderError::NoImage)?;
    let ns = spec.namespace.as_str();
    let common = Common {
        namespace: ns,
        owner: &input.owner,
        version: &input.operator.version,
        image: &image,
        pull_policy: spec.image_pull_policy.as_deref(),
        log_level: spec.log_level.as_deref(),
    };

    let (central, endpoints) = match spec.ovn_central.mode {
        OvnCentralMode::External => (
            None,
            CentralStatus {
                nodes: Vec::new(),
                nb_address: spec.ovn_central.nb_address.clone().unwrap_or_default(),
                sb_address: spec.ovn_central.sb_address.clone().unwrap_or_default(),
            },
        ),
        OvnCentralMode::Embedded => {
            let mut addresses = Vec::new();
            for n in input.central_nodes {
                addresses.push(n.address.ok_or_else(|| RenderError::NodeWithoutAddress {
                    node: n.name.clone(),
                })?);
            }
            let names: Vec<String> = input.central_nodes.iter().map(|n| n.name.clone()).collect();
            let sts = render_central(&common, spec, &names, &addresses)?;
            (
                Some(sts),
                CentralStatus {
                    nodes: names,
                    nb_address: endpoints_of(&addresses, NB_PORT),
                    sb_address: endpoints_of(&addresses, SB_PORT),
                },
            )
        }
    };
    let ovs_ovn = match spec.node_ovs {
        NodeOvsMode::Embedded => Some(render_ovs_ovn(&common, spec)?),
        NodeOvsMode::Host => None,
    };
    let cni = render_cni(&common, spec, &endpoints.sb_address)?;

    let rbac = assets::node_rbac()?;
    let service_accounts = rbac
        .service_accounts
        .into_iter()
        .map(|mut sa| {
            let component = sa.metadata.name.clone().unwrap_or_default();
            common.meta(&mut sa.metadata, &component, true);
            sa
        })
        .collect();
    let cluster_roles = rbac
        .cluster_roles
        .into_iter()
        .map(|mut r| {
            common.meta(&mut r.metadata, "rbac", false);
            r
        })
        .collect();
    let cluster_role_bindings = rbac
        .cluster_role_bindings
        .into_iter()
        .map(|mut b| {
            common.meta(&mut b.metadata, "rbac", false);
            for s in b.subjects.iter_mut().flatten() {
                if s.kind == "ServiceAccount" {
                    s.namespace = Some(ns.to_owned());
                }
            }
            b
        })
        .collect();
    let role_bindings = rbac
        .role_bindings
        .into_iter()
        .map(|mut b| {
            common.meta(&mut b.metadata, "rbac", true);
            for s in b.subjects.iter_mut().flatten() {
                if s.kind == "ServiceAccount" {
                    s.namespace = Some(ns.to_owned());
                }
            }
            b
        })
        .collect();
    Ok(Rendered {
        namespace: Namespace {
            metadata: ObjectMeta {
                name: Some(ns.to_owned()),
                ..Default::default()
            },
            ..Default::default()
        },
        service_accounts,
        cluster_roles,
        cluster_role_bindings,
        role_bindings,
        central,
        ovs_ovn,
        cni,
        endpoints,
    })
}

/// What every rendered object shares.
struct Common<'a> {
    namespace: &'a str,
    owner: &'a OwnerReference,
    version: &'a str,
    image: &'a str,
    pull_policy: Option<&'a str>,
    log_level: Option<&'a str>,
}

impl Common<'_> {
    fn labels(&self, component: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (MANAGED_BY.to_owned(), MANAGER_NAME.to_owned()),
            (PART_OF.to_owned(), "kube-ovn".to_owned()),
            (COMPONENT.to_owned(), component.to_owned()),
            (VERSION_LABEL.to_owned(), self.version.to_owned()),
        ])
    }

    /// Our labels and owner on an object's metadata (namespaced objects get the namespace).
    fn meta(&self, meta: &mut ObjectMeta, component: &str, namespaced: bool) {
        meta.labels
            .get_or_insert_with(BTreeMap::new)
            .extend(self.labels(component));
        meta.owner_references = Some(vec![self.owner.clone()]);
        if namespaced {
            meta.namespace = Some(self.namespace.to_owned());
        }
    }

    /// Labels, image, pull policy and log level on a workload's pod template.
    fn pod(&self, template: &mut PodTemplateSpec, component: &str) -> Result<(), RenderError> {
        let meta = template.metadata.get_or_insert_with(Default::default);
        meta.labels
            .get_or_insert_with(BTreeMap::new)
            .extend(self.labels(component));
        let spec = pod_spec(template, component)?;
        for c in &mut spec.containers {
            c.image = Some(self.image.to_owned());
            c.image_pull_policy = self.pull_policy.map(str::to_owned);
            if let Some(level) = self.log_level {
                let args = c.args.get_or_insert_with(Vec::new);
                args.push("--log-level".into());
                args.push(level.to_owned());
            }
        }
        Ok(())
    }
}

fn pod_spec<'t>(
    template: &'t mut PodTemplateSpec,
    component: &str,
) -> Result<&'t mut PodSpec, RenderError> {
    template.spec.as_mut().ok_or_else(|| {
        RenderError::Template(TemplateError {
            file: "workload",
            reason: format!("{component}: pod template without spec"),
        })
    })
}

fn main_container<'s>(
    spec: &'s mut PodSpec,
    component: &str,
) -> Result<&'s mut Container, RenderError> {
    spec.containers.first_mut().ok_or_else(|| {
        RenderError::Template(TemplateError {
            file: "workload",
            reason: format!("{component}: no container"),
        })
    })
}

/// Sets env `name` (replacing a template value).
fn set_env(container: &mut Container, name: &str, value: String) {
    let env = container.env.get_or_insert_with(Vec::new);
    env.retain(|e| e.name != name);
    env.push(EnvVar {
        name: name.to_owned(),
        value: Some(value),
        value_from: None,
    });
}

fn render_central(
    common: &Common<'_>,
    spec: &KubeOvnSpec,
    nodes: &[String],
    addresses: &[IpAddr],
) -> Result<StatefulSet, RenderError> {
    let mut sts = assets::ovn_central()?;
    common.meta(&mut sts.metadata, OVN_CENTRAL, true);
    let s = sts.spec.get_or_insert_with(Default::default);
    s.replicas = Some(spec.ovn_central.replicas as i32);
    common.pod(&mut s.template, OVN_CENTRAL)?;
    let pod = pod_spec(&mut s.template, OVN_CENTRAL)?;
    // Members are pinned to the chosen nodes: their addresses are the cluster's identity.
    let affinity = pod.affinity.get_or_insert_with(Default::default);
    affinity.node_affinity = Some(NodeAffinity {
        required_during_scheduling_ignored_during_execution: Some(NodeSelector {
            node_selector_terms: vec![NodeSelectorTerm {
                match_expressions: Some(vec![NodeSelectorRequirement {
                    key: "kubernetes.io/hostname".into(),
                    operator: "In".into(),
                    values: Some(nodes.to_vec()),
                }]),
                match_fields: None,
            }],
        }),
        preferred_during_scheduling_ignored_during_execution: None,
    });
    let members = addresses
        .iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(",");
    set_env(
        main_container(pod, OVN_CENTRAL)?,
        "OVN_CENTRAL_MEMBERS",
        members,
    );
    Ok(sts)
}

/// nodeSelector and tolerations of the node-level DaemonSets.
fn node_placement(pod: &mut PodSpec, spec: &KubeOvnSpec) {
    if !spec.node_selector.is_empty() {
        pod.node_selector = Some(spec.node_selector.clone());
    }
    // The node roles must run wherever pods may get secondary interfaces, tainted nodes
    // included unless the user narrows it.
    let tolerations = pod.tolerations.get_or_insert_with(Vec::new);
    if spec.tolerations.is_empty() {
        tolerations.push(k8s_openapi::api::core::v1::Toleration {
            operator: Some("Exists".into()),
            ..Default::default()
        });
    } else {
        tolerations.extend(spec.tolerations.iter().cloned());
    }
}

fn render_ovs_ovn(common: &Common<'_>, spec: &KubeOvnSpec) -> Result<DaemonSet, RenderError> {
    let mut ds = assets::ovs_ovn()?;
    common.meta(&mut ds.metadata, OVS_OVN, true);
    let s = ds.spec.get_or_insert_with(Default::default);
    common.pod(&mut s.template, OVS_OVN)?;
    node_placement(pod_spec(&mut s.template, OVS_OVN)?, spec);
    Ok(ds)
}

fn render_cni(
    common: &Common<'_>,
    spec: &KubeOvnSpec,
    sb_address: &str,
) -> Result<DaemonSet, RenderError> {
    let mut ds = assets::kube_ovn_cni()?;
    common.meta(&mut ds.metadata, KUBE_OVN_CNI, true);
    let s = ds.spec.get_or_insert_with(Default::default);
    common.pod(&mut s.template, KUBE_OVN_CNI)?;
    let pod = pod_spec(&mut s.template, KUBE_OVN_CNI)?;
    node_placement(pod, spec);
    let cni_dir = spec.cni_bin_dir.clone();
    for v in pod.volumes.iter_mut().flatten() {
        if v.name == "cni-bin" {
            if let Some(hp) = &mut v.host_path {
                hp.path = cni_dir.clone();
            }
        }
    }
    let container = main_container(pod, KUBE_OVN_CNI)?;
    for m in container.volume_mounts.iter_mut().flatten() {
        if m.name == "cni-bin" {
            m.mount_path = cni_dir.clone();
        }
    }
    let args = container.args.get_or_insert_with(Vec::new);
    let datapath = match spec.datapath {
        DatapathType::System => "system",
        DatapathType::Netdev => "netdev",
    };
    args.extend(["--datapath".to_owned(), datapath.to_owned()]);
    if let Some(nic) = &spec.tunnel_interface {
        args.extend(["--tunnel-nic".to_owned(), nic.clone()]);
    }
    args.extend(["--cni-bin-dir".to_owned(), cni_dir]);
    if let Some(mtu) = spec.mtu {
        args.extend(["--mtu".to_owned(), mtu.to_string()]);
    }
    // ovn-controller's pidfile and control socket: with our chassis, in the shared OVS run
    // directory; with the host's, where the host's packages put them (the node's default).
    if spec.node_ovs == NodeOvsMode::Embedded {
        args.extend(["--ovn-run-dir".to_owned(), "/run/openvswitch".to_owned()]);
    }
    set_env(container, "OVN_SB", sb_address.to_owned());
    Ok(ds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::kubeovn::OvnCentral;

    fn node(name: &str, ip: &str) -> ObservedNode {
        ObservedNode {
            name: name.into(),
            address: Some(ip.parse().unwrap()),
            labels: BTreeMap::new(),
            ready: true,
            unschedulable: false,
        }
    }

    fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "operator.kubeovn.io/v1alpha1".into(),
            kind: "KubeOvn".into(),
            name: "kube-ovn".into(),
            uid: "u1".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    fn operator() -> Operator {
        Operator {
            version: "0.1.0".into(),
            image: Some("kube-ovn:dev".into()),
        }
    }

    fn args(ds: &DaemonSet) -> Vec<String> {
        ds.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .args
            .clone()
            .unwrap()
    }

    fn env(c: &Container, name: &str) -> Option<String> {
        c.env
            .iter()
            .flatten()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    }

    #[test]
    fn central_nodes_prefer_the_label_then_names_and_stay_once_chosen() {
        let mut nodes = vec![
            node("c", "10.0.0.3"),
            node("a", "10.0.0.1"),
            node("b", "10.0.0.2"),
        ];
        nodes[0]
            .labels
            .insert("kube-ovn/role".into(), "master".into());
        let names = |v: Vec<ObservedNode>| v.into_iter().map(|n| n.name).collect::<Vec<_>>();
        assert_eq!(names(choose_central_nodes(1, &nodes, &[]).unwrap()), ["c"]);
        assert_eq!(
            names(choose_central_nodes(3, &nodes, &[]).unwrap()),
            ["c", "a", "b"]
        );
        // A node added later does not move an existing member.
        nodes.push(node("0", "10.0.0.9"));
        nodes[0].labels.clear();
        assert_eq!(
            names(choose_central_nodes(1, &nodes, &["c".into()]).unwrap()),
            ["c"]
        );
        // Not ready nodes don't count.
        nodes.iter_mut().for_each(|n| n.ready = n.name == "a");
        assert!(matches!(
            choose_central_nodes(3, &nodes, &[]),
            Err(RenderError::NotEnoughNodes {
                wanted: 3,
                found: 1,
                ..
            })
        ));
    }

    #[test]
    fn embedded_install_renders_central_chassis_and_node_with_the_central_addresses() {
        let spec = KubeOvnSpec {
            ovn_central: OvnCentral {
                replicas: 3,
                ..Default::default()
            },
            datapath: DatapathType::Netdev,
            tunnel_interface: Some("ul1".into()),
            ..Default::default()
        };
        let nodes = [
            node("n1", "172.31.0.10"),
            node("n2", "172.31.0.11"),
            node("n3", "172.31.0.12"),
        ];
        let op = operator();
        let r = render(&Input {
            spec: &spec,
            owner: owner(),
            operator: &op,
            central_nodes: &nodes,
        })
        .unwrap();
        assert_eq!(
            r.endpoints.sb_address,
            "tcp:172.31.0.10:6642,tcp:172.31.0.11:6642,tcp:172.31.0.12:6642"
        );
        assert_eq!(r.endpoints.nodes, ["n1", "n2", "n3"]);
        let central = r.central.unwrap();
        let s = central.spec.unwrap();
        assert_eq!(s.replicas, Some(3));
        let pod = s.template.spec.unwrap();
        assert_eq!(
            env(&pod.containers[0], "OVN_CENTRAL_MEMBERS").as_deref(),
            Some("172.31.0.10,172.31.0.11,172.31.0.12")
        );
        assert_eq!(pod.containers[0].image.as_deref(), Some("kube-ovn:dev"));
        let pinned = pod.affinity.unwrap().node_affinity.unwrap();
        let term = &pinned
            .required_during_scheduling_ignored_during_execution
            .unwrap()
            .node_selector_terms[0];
        assert_eq!(
            term.match_expressions.as_ref().unwrap()[0]
                .values
                .as_deref(),
            Some(&["n1".to_string(), "n2".into(), "n3".into()][..])
        );
        let cni_args = args(&r.cni);
        for pair in [
            ["--datapath", "netdev"],
            ["--tunnel-nic", "ul1"],
            ["--cni-bin-dir", "/opt/cni/bin"],
        ] {
            assert!(
                cni_args.windows(2).any(|w| w == pair),
                "{cni_args:?} lacks {pair:?}"
            );
        }
        let cni_pod = r.cni.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert_eq!(
            env(&cni_pod.containers[0], "OVN_SB").as_deref(),
            Some(r.endpoints.sb_address.as_str())
        );
        assert!(r.ovs_ovn.is_some());
        // Everything is ours: labelled, owned, in the namespace.
        let labels = r.cni.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[MANAGED_BY], MANAGER_NAME);
        assert_eq!(labels[VERSION_LABEL], "0.1.0");
        assert_eq!(r.cni.metadata.namespace.as_deref(), Some("kube-system"));
        assert_eq!(
            r.cni.metadata.owner_references.as_ref().unwrap()[0].uid,
            "u1"
        );
        assert!(r
            .cluster_role_bindings
            .iter()
            .flat_map(|b| b.subjects.iter().flatten())
            .all(|s| s.namespace.as_deref() == Some("kube-system")));
        // The NAT gateways' account reads pods of the install's namespace only.
        let [pods] = r.role_bindings.as_slice() else {
            panic!("one RoleBinding: {:?}", r.role_bindings)
        };
        assert_eq!(pods.metadata.namespace.as_deref(), Some("kube-system"));
        assert_eq!(pods.subjects.as_ref().unwrap()[0].name, "kube-ovn-nat-gw");
        assert!(r
            .service_accounts
            .iter()
            .any(|s| s.metadata.name.as_deref() == Some("kube-ovn-nat-gw")));
    }

    #[test]
    fn external_central_and_host_ovs_render_only_the_node_role() {
        let spec = KubeOvnSpec {
            namespace: "kube-ovn".into(),
            image: Some("r.io/kube-ovn:v2".into()),
            ovn_central: OvnCentral {
                mode: OvnCentralMode::External,
                nb_address: Some("tcp:10.0.0.1:6641".into()),
                sb_address: Some("tcp:10.0.0.1:6642".into()),
                ..Default::default()
            },
            node_ovs: NodeOvsMode::Host,
            cni_bin_dir: "/var/lib/cni/bin".into(),
            ..Default::default()
        };
        let op = operator();
        let r = render(&Input {
            spec: &spec,
            owner: owner(),
            operator: &op,
            central_nodes: &[],
        })
        .unwrap();
        assert!(r.central.is_none() && r.ovs_ovn.is_none());
        assert_eq!(r.endpoints.sb_address, "tcp:10.0.0.1:6642");
        let pod = r.cni.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert_eq!(pod.containers[0].image.as_deref(), Some("r.io/kube-ovn:v2"));
        assert!(!args(&r.cni).contains(&"--ovn-run-dir".to_string()));
        let cni_volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "cni-bin")
            .unwrap();
        assert_eq!(
            cni_volume.host_path.as_ref().unwrap().path,
            "/var/lib/cni/bin"
        );
        assert_eq!(r.namespace.metadata.name.as_deref(), Some("kube-ovn"));
    }

    #[test]
    fn no_image_is_an_error_that_says_where_to_set_one() {
        let op = Operator {
            version: "0.1.0".into(),
            image: None,
        };
        let spec = KubeOvnSpec::default();
        let e = render(&Input {
            spec: &spec,
            owner: owner(),
            operator: &op,
            central_nodes: &[node("n1", "10.0.0.1")],
        })
        .unwrap_err();
        assert_eq!(e.reason(), "ImageUnknown");
    }
}
