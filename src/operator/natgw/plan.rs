//! The VpcNatGateway's pure half: validation against the subnets it names (`validate`) and
//! the StatefulSet that runs its pod (`render_statefulset`), both from values only. The
//! controller (`gateway.rs`) gathers the values, reserves the lanIp and writes what this
//! returns; the unit tests below read it.
//!
//! The pod gets two attachments, both injected here (upstream forgets the LAN one in
//! non-primary mode, #6744): the LAN subnet's NAD with the lanIp, and the external subnets'
//! IPAM-only NADs. No default route on either: eth0 keeps the pod's; the first external
//! subnet's IPv4 gateway is passed as `GATEWAY_V4`, through which the nat-gw role
//! policy-routes what it forwards. Other VPC subnets are routed via the LAN subnet's gateway.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Container, EnvVar, EnvVarSource, ObjectFieldSelector, PodSpec, PodTemplateSpec,
    SecurityContext,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::ResourceExt;

use crate::api::allocation::PodRoute;
use crate::api::annotations::{Provider, ProviderKey, NETWORKS, VPC_NAT_GW};
use crate::api::nat::VpcNatGateway;

/// The external subnet a gateway uses when it names none (Kube-OVN's).
pub const EXTERNAL_NETWORK: &str = "ovn-vpc-external-network";
/// The ServiceAccount of the gateway pods (rendered by the install, `assets/node-rbac.yaml`).
pub const SERVICE_ACCOUNT: &str = "kube-ovn-nat-gw";
/// The gateway pods' container.
pub const CONTAINER: &str = "vpc-nat-gw";
/// Label on every gateway's StatefulSet and pod (Kube-OVN's).
pub const GATEWAY_LABEL: &str = "ovn.kubernetes.io/vpc-nat-gw";

/// `vpc-nat-gw-<gw>`: the StatefulSet (and `app` label) of gateway `gw`.
pub fn statefulset_name(gw: &str) -> String {
    format!("vpc-nat-gw-{gw}")
}

/// The one pod of gateway `gw`'s StatefulSet.
pub fn pod_name(gw: &str) -> String {
    format!("{}-0", statefulset_name(gw))
}

/// A subnet as the gateway needs it: the spec's VPC and provider, and IPAM's CIDRs and
/// gateways (`None`: IPAM does not know the subnet yet).
#[derive(Debug, Clone, PartialEq)]
pub struct SubnetFacts {
    pub name: String,
    pub vpc: Option<String>,
    pub provider: String,
    pub cidrs: Option<Vec<IpNet>>,
    pub gateways: Vec<IpAddr>,
}

/// What is wrong with a gateway: a condition reason and what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayProblem {
    pub reason: &'static str,
    pub message: String,
}

fn problem(reason: &'static str, message: String) -> GatewayProblem {
    GatewayProblem { reason, message }
}

/// One external leg of the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalLeg {
    pub subnet: String,
    /// `<nad>.<ns>`: the IPAM-only provider, which names the NAD.
    pub provider: Provider,
    /// The subnet's gateway (the first leg's IPv4 one becomes `GATEWAY_V4`).
    pub gateway: Option<IpAddr>,
}

/// A gateway that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidGateway {
    pub name: String,
    pub vpc: String,
    pub subnet: String,
    pub lan_ip: IpAddr,
    /// The LAN subnet's provider (`<nad>.<ns>.ovn`), which names its NAD.
    pub lan_provider: Provider,
    /// Routes of the LAN leg: the VPC's other subnets via the LAN gateway, and `spec.routes`.
    pub lan_routes: Vec<PodRoute>,
    pub externals: Vec<ExternalLeg>,
}

impl ValidGateway {
    /// The external subnets, in order.
    pub fn external_subnets(&self) -> Vec<String> {
        self.externals.iter().map(|e| e.subnet.clone()).collect()
    }
}

/// The external subnets `gw` uses: its own list, else `ovn-vpc-external-network`.
pub fn external_subnets(gw: &VpcNatGateway) -> Vec<String> {
    if gw.spec.external_subnets.is_empty() {
        vec![EXTERNAL_NETWORK.to_owned()]
    } else {
        gw.spec.external_subnets.clone()
    }
}

/// Validates `gw` against the Vpcs (`vpc_exists`) and subnets (`subnets`, every one the
/// cluster has). Pure.
pub fn validate(
    gw: &VpcNatGateway,
    vpc_exists: impl Fn(&str) -> bool,
    subnets: &[SubnetFacts],
) -> Result<ValidGateway, GatewayProblem> {
    let name = gw.name_any();
    let spec = &gw.spec;
    let find = |s: &str| subnets.iter().find(|f| f.name == s);
    // Refused rather than ignored: a gateway without the asked limit would look right.
    let mut unsupported = Vec::new();
    if spec
        .qos_policy
        .as_deref()
        .is_some_and(|q| !q.trim().is_empty())
    {
        unsupported.push("spec.qosPolicy");
    }
    if spec.no_default_eip.is_some() {
        unsupported.push("spec.noDefaultEIP");
    }
    if !unsupported.is_empty() {
        return Err(problem(
            "NotSupported",
            format!(
                "vpc-nat-gw {name:?}: {} not supported yet; remove it (nothing was applied)",
                unsupported.join(" and ")
            ),
        ));
    }
    if spec.vpc.trim().is_empty() || !vpc_exists(&spec.vpc) {
        return Err(problem(
            "VpcNotFound",
            format!(
                "vpc-nat-gw {name:?}: VPC {:?} does not exist; create the Vpc or fix spec.vpc",
                spec.vpc
            ),
        ));
    }
    let lan = find(&spec.subnet).ok_or_else(|| {
        problem(
            "SubnetNotFound",
            format!(
                "vpc-nat-gw {name:?}: subnet {:?} does not exist; create it or fix spec.subnet",
                spec.subnet
            ),
        )
    })?;
    if lan.vpc.as_deref() != Some(spec.vpc.as_str()) {
        return Err(problem(
            "SubnetNotInVpc",
            format!(
                "vpc-nat-gw {name:?}: subnet {:?} belongs to VPC {:?}, not {:?}",
                spec.subnet,
                lan.vpc.as_deref().unwrap_or(""),
                spec.vpc
            ),
        ));
    }
    let lan_provider = Provider::parse(&lan.provider)
        .ok()
        .filter(|p| p.interface().is_none())
        .ok_or_else(|| {
            problem(
                "InvalidSubnet",
                format!(
                    "vpc-nat-gw {name:?}: subnet {:?} has provider {:?}, not <nad>.<namespace>.ovn",
                    spec.subnet, lan.provider
                ),
            )
        })?;
    let Some(lan_cidrs) = &lan.cidrs else {
        return Err(problem(
            "SubnetNotReady",
            format!(
                "vpc-nat-gw {name:?}: subnet {:?} is not set up yet (see its status)",
                spec.subnet
            ),
        ));
    };
    let lan_ip: IpAddr = spec.lan_ip.trim().parse().map_err(|_| {
        problem(
            "InvalidLanIp",
            format!(
                "vpc-nat-gw {name:?}: lanIp {:?} is not an IP address",
                spec.lan_ip
            ),
        )
    })?;
    let Some(lan_cidr) = lan_cidrs.iter().find(|c| c.contains(&lan_ip)) else {
        return Err(problem(
            "InvalidLanIp",
            format!(
                "vpc-nat-gw {name:?}: lanIp {lan_ip} is outside subnet {:?} ({})",
                spec.subnet,
                lan_cidrs
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        ));
    };
    if lan.gateways.contains(&lan_ip) {
        return Err(problem(
            "InvalidLanIp",
            format!(
                "vpc-nat-gw {name:?}: lanIp {lan_ip} is the gateway of subnet {:?}",
                spec.subnet
            ),
        ));
    }
    if lan_ip == lan_cidr.network() || (lan_ip.is_ipv4() && lan_ip == lan_cidr.broadcast()) {
        return Err(problem(
            "InvalidLanIp",
            format!("vpc-nat-gw {name:?}: lanIp {lan_ip} is not a host address of {lan_cidr}"),
        ));
    }
    let lan_gateway = lan
        .gateways
        .iter()
        .find(|g| g.is_ipv4() == lan_ip.is_ipv4())
        .copied();

    let mut externals = Vec::new();
    for ext in external_subnets(gw) {
        let facts = find(&ext).ok_or_else(|| {
            problem(
                "ExternalSubnetNotFound",
                format!(
                    "vpc-nat-gw {name:?}: external subnet {ext:?} does not exist; create it \
                     (or set KubeOvn spec.natGateway.externalNetwork for {EXTERNAL_NETWORK})"
                ),
            )
        })?;
        let provider = Provider::parse_ipam_only(&facts.provider).map_err(|_| {
            problem(
                "InvalidExternalSubnet",
                format!(
                    "vpc-nat-gw {name:?}: external subnet {ext:?} has provider {:?}, not \
                     <nad>.<namespace> (an underlay network with kube-ovn IPAM)",
                    facts.provider
                ),
            )
        })?;
        if facts.cidrs.is_none() {
            return Err(problem(
                "SubnetNotReady",
                format!(
                    "vpc-nat-gw {name:?}: external subnet {ext:?} is not set up yet (see its status)"
                ),
            ));
        }
        let gateway = facts.gateways.iter().find(|g| g.is_ipv4()).copied();
        externals.push(ExternalLeg {
            subnet: ext,
            provider,
            gateway: gateway.or_else(|| facts.gateways.first().copied()),
        });
    }

    let mut lan_routes = Vec::new();
    if let Some(via) = lan_gateway {
        let mut others: Vec<&SubnetFacts> = subnets
            .iter()
            .filter(|s| s.vpc.as_deref() == Some(spec.vpc.as_str()) && s.name != spec.subnet)
            .collect();
        others.sort_by(|a, b| a.name.cmp(&b.name));
        for other in others {
            for cidr in other.cidrs.iter().flatten() {
                if cidr.addr().is_ipv4() == via.is_ipv4() {
                    lan_routes.push(PodRoute {
                        dst: Some(cidr.to_string()),
                        gw: Some(via.to_string()),
                    });
                }
            }
        }
    }
    for (i, r) in spec.routes.iter().enumerate() {
        let bad = || {
            problem(
                "InvalidRoute",
                format!(
                    "vpc-nat-gw {name:?}: spec.routes[{i}] ({:?} via {:?}) is not a CIDR via an address",
                    r.cidr, r.next_hop_ip
                ),
            )
        };
        let dst: IpNet = r.cidr.trim().parse().map_err(|_| bad())?;
        let via: IpAddr = r.next_hop_ip.trim().parse().map_err(|_| bad())?;
        lan_routes.push(PodRoute {
            dst: Some(dst.trunc().to_string()),
            gw: Some(via.to_string()),
        });
    }

    Ok(ValidGateway {
        name,
        vpc: spec.vpc.clone(),
        subnet: spec.subnet.clone(),
        lan_ip,
        lan_provider,
        lan_routes,
        externals,
    })
}

/// What the install decides for every workload the operator runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Install {
    /// KubeOvn `spec.namespace` (the gateways' StatefulSets live there).
    pub namespace: String,
    /// The image every role runs; `None`: unknown (no KubeOvn image, no operator image).
    pub image: Option<String>,
    pub pull_policy: Option<String>,
    pub log_level: Option<String>,
}

impl Default for Install {
    fn default() -> Self {
        Install {
            namespace: "kube-system".into(),
            image: None,
            pull_policy: None,
            log_level: None,
        }
    }
}

fn labels(gw: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app".to_owned(), statefulset_name(gw)),
        (GATEWAY_LABEL.to_owned(), "true".to_owned()),
    ])
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_owned(),
                api_version: None,
            }),
            ..Default::default()
        }),
    }
}

/// The pod annotations of the gateway (contract with the nat-gw role and the node role).
pub fn pod_annotations(valid: &ValidGateway) -> BTreeMap<String, String> {
    let lan = &valid.lan_provider;
    let mut networks = vec![format!("{}/{}", lan.namespace(), lan.nad())];
    networks.extend(
        valid
            .externals
            .iter()
            .map(|e| format!("{}/{}", e.provider.namespace(), e.provider.nad())),
    );
    let json =
        |routes: &[PodRoute]| serde_json::to_string(routes).expect("routes serialize to JSON");
    let mut out = BTreeMap::from([
        (NETWORKS.to_owned(), networks.join(",")),
        (VPC_NAT_GW.to_owned(), valid.name.clone()),
        (
            lan.annotation(ProviderKey::LogicalSwitch),
            valid.subnet.clone(),
        ),
        (
            lan.annotation(ProviderKey::IpAddress),
            valid.lan_ip.to_string(),
        ),
    ]);
    if !valid.lan_routes.is_empty() {
        out.insert(lan.annotation(ProviderKey::Routes), json(&valid.lan_routes));
    }
    // No default route on the external leg: the pod keeps eth0's (it reaches the API server
    // through it, and a second default route makes the IPAM step fail). The nat-gw role routes
    // forwarded traffic out of the external leg by policy routing to GATEWAY_V4.
    for ext in &valid.externals {
        out.insert(
            ext.provider.annotation(ProviderKey::LogicalSwitch),
            ext.subnet.clone(),
        );
    }
    out
}

/// The env var naming the external network's IPv4 gateway (the nat-gw role's policy route).
pub const GATEWAY_V4_ENV: &str = "GATEWAY_V4";

/// The first external network's IPv4 gateway: where the gateway sends what it forwards out.
fn external_gateway_v4(valid: &ValidGateway) -> Option<std::net::IpAddr> {
    valid
        .externals
        .first()
        .and_then(|e| e.gateway)
        .filter(|g| g.is_ipv4())
}

/// The gateway's node selector from its `"key: value"` strings.
fn node_selector(gw: &VpcNatGateway) -> Result<BTreeMap<String, String>, GatewayProblem> {
    let mut out = BTreeMap::new();
    for entry in &gw.spec.selector {
        let Some((k, v)) = entry.split_once(':') else {
            return Err(problem(
                "InvalidSelector",
                format!(
                    "vpc-nat-gw {:?}: spec.selector entry {entry:?} is not \"key: value\"",
                    gw.name_any()
                ),
            ));
        };
        out.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    Ok(out)
}

/// The StatefulSet `vpc-nat-gw-<gw>` in the install's namespace, owned by the gateway.
pub fn render_statefulset(
    gw: &VpcNatGateway,
    valid: &ValidGateway,
    install: &Install,
    owner: OwnerReference,
) -> Result<StatefulSet, GatewayProblem> {
    let name = statefulset_name(&valid.name);
    let image = install.image.clone().ok_or_else(|| {
        problem(
            "ImageUnknown",
            format!(
                "vpc-nat-gw {:?}: no image to run: set the KubeOvn spec.image, or run the \
                 operator with RELATED_IMAGE_KUBE_OVN",
                valid.name
            ),
        )
    })?;
    let affinity = match &gw.spec.affinity {
        None => None,
        Some(value) => Some(
            serde_json::from_value::<Affinity>(value.clone()).map_err(|e| {
                problem(
                    "InvalidAffinity",
                    format!("vpc-nat-gw {:?}: spec.affinity: {e}", valid.name),
                )
            })?,
        ),
    };
    let selector = node_selector(gw)?;
    let mut args = Vec::new();
    if let Some(level) = &install.log_level {
        args.extend(["--log-level".to_owned(), level.clone()]);
    }
    let container = Container {
        name: CONTAINER.to_owned(),
        image: Some(image),
        image_pull_policy: install.pull_policy.clone(),
        command: Some(vec!["kube-ovn".into(), "nat-gw".into()]),
        args: (!args.is_empty()).then_some(args),
        env: Some(
            [
                EnvVar {
                    name: "GATEWAY_NAME".into(),
                    value: Some(valid.name.clone()),
                    value_from: None,
                },
                field_env("POD_NAME", "metadata.name"),
                field_env("POD_NAMESPACE", "metadata.namespace"),
            ]
            .into_iter()
            .chain(external_gateway_v4(valid).map(|gw| EnvVar {
                name: GATEWAY_V4_ENV.into(),
                value: Some(gw.to_string()),
                value_from: None,
            }))
            .collect(),
        ),
        security_context: Some(SecurityContext {
            privileged: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok(StatefulSet {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(install.namespace.clone()),
            labels: Some(labels(&valid.name)),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(name),
            selector: LabelSelector {
                match_labels: Some(labels(&valid.name)),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(&valid.name)),
                    annotations: Some(pod_annotations(valid)),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(SERVICE_ACCOUNT.into()),
                    containers: vec![container],
                    node_selector: (!selector.is_empty()).then_some(selector),
                    tolerations: (!gw.spec.tolerations.is_empty())
                        .then(|| gw.spec.tolerations.clone()),
                    affinity,
                    termination_grace_period_seconds: Some(10),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::api::nat::NatGatewayRoute;

    pub(crate) fn seed_gateway() -> VpcNatGateway {
        crate::api::seed::document(crate::api::seed::VPC_NAT_GATEWAY)
    }

    pub(crate) fn facts() -> Vec<SubnetFacts> {
        vec![
            SubnetFacts {
                name: "subnet-secondary".into(),
                vpc: Some("vpc-secondary".into()),
                provider: "kube-ovn-vpc-network.default.ovn".into(),
                cidrs: Some(vec!["10.100.0.0/16".parse().unwrap()]),
                gateways: vec!["10.100.0.1".parse().unwrap()],
            },
            SubnetFacts {
                name: "subnet-more".into(),
                vpc: Some("vpc-secondary".into()),
                provider: "more.default.ovn".into(),
                cidrs: Some(vec!["10.101.0.0/24".parse().unwrap()]),
                gateways: vec!["10.101.0.1".parse().unwrap()],
            },
            SubnetFacts {
                name: "elsewhere".into(),
                vpc: Some("vpc-other".into()),
                provider: "elsewhere.default.ovn".into(),
                cidrs: Some(vec!["10.200.0.0/24".parse().unwrap()]),
                gateways: vec!["10.200.0.1".parse().unwrap()],
            },
            SubnetFacts {
                name: EXTERNAL_NETWORK.into(),
                vpc: None,
                provider: "ovn-vpc-external-network.kube-system".into(),
                cidrs: Some(vec!["172.18.0.0/16".parse().unwrap()]),
                gateways: vec!["172.18.0.1".parse().unwrap()],
            },
        ]
    }

    fn vpcs(v: &str) -> bool {
        v == "vpc-secondary" || v == "vpc-other"
    }

    fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "kubeovn.io/v1".into(),
            kind: "VpcNatGateway".into(),
            name: "vpc-nat-gw".into(),
            uid: "u1".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    fn install() -> Install {
        Install {
            image: Some("kube-ovn:dev".into()),
            ..Default::default()
        }
    }

    #[test]
    fn the_seed_gateway_renders_its_statefulset_per_the_contract() {
        let gw = seed_gateway();
        let valid = validate(&gw, vpcs, &facts()).expect("the seed's gateway is valid");
        assert_eq!(valid.external_subnets(), [EXTERNAL_NETWORK]);
        let sts = render_statefulset(&gw, &valid, &install(), owner()).unwrap();
        assert_eq!(sts.metadata.name.as_deref(), Some("vpc-nat-gw-vpc-nat-gw"));
        assert_eq!(sts.metadata.namespace.as_deref(), Some("kube-system"));
        let labels = sts.metadata.labels.clone().unwrap();
        assert_eq!(labels["app"], "vpc-nat-gw-vpc-nat-gw");
        assert_eq!(labels["ovn.kubernetes.io/vpc-nat-gw"], "true");
        assert_eq!(sts.metadata.owner_references.as_ref().unwrap()[0].uid, "u1");
        let spec = sts.spec.unwrap();
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(spec.selector.match_labels.as_ref(), Some(&labels));
        let template = spec.template;
        let a = template.metadata.unwrap().annotations.unwrap();
        assert_eq!(
            a["k8s.v1.cni.cncf.io/networks"],
            "default/kube-ovn-vpc-network,kube-system/ovn-vpc-external-network"
        );
        assert_eq!(a["ovn.kubernetes.io/vpc_nat_gw"], "vpc-nat-gw");
        let p = "kube-ovn-vpc-network.default.ovn.kubernetes.io";
        assert_eq!(a[&format!("{p}/logical_switch")], "subnet-secondary");
        assert_eq!(a[&format!("{p}/ip_address")], "10.100.0.254");
        let lan_routes: serde_json::Value =
            serde_json::from_str(&a[&format!("{p}/routes")]).unwrap();
        assert_eq!(
            lan_routes,
            serde_json::json!([{"dst": "10.101.0.0/24", "gw": "10.100.0.1"}]),
            "the VPC's other subnets via the LAN gateway, nothing of other VPCs"
        );
        let e = "ovn-vpc-external-network.kube-system.kubernetes.io";
        assert!(
            !a.contains_key(&format!("{e}/routes")),
            "no default route on the external leg: eth0 keeps the pod's default route"
        );
        assert_eq!(a[&format!("{e}/logical_switch")], EXTERNAL_NETWORK);

        let pod = template.spec.unwrap();
        assert_eq!(pod.service_account_name.as_deref(), Some("kube-ovn-nat-gw"));
        let c = &pod.containers[0];
        assert_eq!(c.name, "vpc-nat-gw");
        assert_eq!(c.image.as_deref(), Some("kube-ovn:dev"));
        assert_eq!(
            c.command.as_deref(),
            Some(&["kube-ovn".to_owned(), "nat-gw".to_owned()][..])
        );
        assert_eq!(c.security_context.as_ref().unwrap().privileged, Some(true));
        let env: BTreeMap<_, _> =
            c.env
                .iter()
                .flatten()
                .map(|e| {
                    let v = e.value.clone().unwrap_or_else(|| {
                        e.value_from.clone().unwrap().field_ref.unwrap().field_path
                    });
                    (e.name.as_str(), v)
                })
                .collect();
        assert_eq!(env["GATEWAY_NAME"], "vpc-nat-gw");
        assert_eq!(env["POD_NAME"], "metadata.name");
        assert_eq!(env["POD_NAMESPACE"], "metadata.namespace");
        assert_eq!(env["GATEWAY_V4"], "172.18.0.1", "the role's policy route");
    }

    #[test]
    fn placement_and_extra_routes_come_from_the_spec() {
        let mut gw = seed_gateway();
        gw.spec.selector = vec!["kubernetes.io/os: linux".into()];
        gw.spec.routes = vec![NatGatewayRoute {
            cidr: "192.168.5.7/24".into(),
            next_hop_ip: "10.100.0.9".into(),
        }];
        gw.spec.affinity = Some(serde_json::json!({"nodeAffinity": {}}));
        let valid = validate(&gw, vpcs, &facts()).unwrap();
        assert_eq!(
            valid.lan_routes.last().unwrap(),
            &PodRoute {
                dst: Some("192.168.5.0/24".into()),
                gw: Some("10.100.0.9".into())
            }
        );
        let install = Install {
            namespace: "kube-ovn".into(),
            log_level: Some("debug".into()),
            ..install()
        };
        let sts = render_statefulset(&gw, &valid, &install, owner()).unwrap();
        assert_eq!(sts.metadata.namespace.as_deref(), Some("kube-ovn"));
        let pod = sts.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.node_selector.unwrap()["kubernetes.io/os"], "linux");
        assert!(pod.affinity.unwrap().node_affinity.is_some());
        assert_eq!(
            pod.containers[0].args.as_deref(),
            Some(&["--log-level".to_owned(), "debug".to_owned()][..])
        );

        gw.spec.selector = vec!["no-colon".into()];
        let e = render_statefulset(&gw, &valid, &install, owner()).unwrap_err();
        assert_eq!(e.reason, "InvalidSelector");
        let e =
            render_statefulset(&seed_gateway(), &valid, &Install::default(), owner()).unwrap_err();
        assert_eq!(e.reason, "ImageUnknown");
    }

    #[test]
    fn bad_gateways_say_what_to_fix() {
        type Case = (&'static str, fn(&mut VpcNatGateway), &'static str);
        let cases: [Case; 11] = [
            ("VpcNotFound", |g| g.spec.vpc = "nope".into(), "\"nope\""),
            (
                "NotSupported",
                |g| g.spec.qos_policy = Some("slow".into()),
                "spec.qosPolicy not supported yet",
            ),
            (
                "NotSupported",
                |g| g.spec.no_default_eip = Some(true),
                "spec.noDefaultEIP not supported yet",
            ),
            (
                "SubnetNotFound",
                |g| g.spec.subnet = "ghost".into(),
                "\"ghost\"",
            ),
            (
                "SubnetNotInVpc",
                |g| g.spec.subnet = "elsewhere".into(),
                "belongs to VPC \"vpc-other\"",
            ),
            (
                "InvalidLanIp",
                |g| g.spec.lan_ip = "10.100.0.x".into(),
                "not an IP address",
            ),
            (
                "InvalidLanIp",
                |g| g.spec.lan_ip = "10.200.0.254".into(),
                "outside subnet",
            ),
            (
                "InvalidLanIp",
                |g| g.spec.lan_ip = "10.100.0.1".into(),
                "is the gateway",
            ),
            (
                "InvalidLanIp",
                |g| g.spec.lan_ip = "10.100.255.255".into(),
                "not a host address",
            ),
            (
                "ExternalSubnetNotFound",
                |g| g.spec.external_subnets = vec!["ext2".into()],
                "\"ext2\"",
            ),
            (
                "InvalidExternalSubnet",
                |g| g.spec.external_subnets = vec!["subnet-more".into()],
                "not <nad>.<namespace>",
            ),
        ];
        for (reason, break_it, says) in cases {
            let mut gw = seed_gateway();
            break_it(&mut gw);
            let p = validate(&gw, vpcs, &facts()).unwrap_err();
            assert_eq!(p.reason, reason, "{}", p.message);
            assert!(p.message.contains(says), "{says} in {}", p.message);
            assert!(p.message.starts_with("vpc-nat-gw \"vpc-nat-gw\": "));
        }
        let mut not_ready = facts();
        not_ready[0].cidrs = None;
        let p = validate(&seed_gateway(), vpcs, &not_ready).unwrap_err();
        assert_eq!(p.reason, "SubnetNotReady");
        let p = validate(&seed_gateway(), vpcs, &facts()[..3]).unwrap_err();
        assert_eq!(p.reason, "ExternalSubnetNotFound");
        assert!(p.message.contains("spec.natGateway.externalNetwork"));
    }
}
