//! The ClusterServiceVersion (`operators.coreos.com/v1alpha1`) as typed structs, the fields
//! of operator-framework/api's `ClusterServiceVersionSpec` that OLM's CRD schema knows, and
//! the CSV kube-ovn ships: built from `assets/operator.yaml` (the same Deployment and RBAC
//! `kube-ovn render` prints), the CRDs of `crate::api::crds()`, and the samples.
//!
//! Fields without `default` are the ones operator-framework's CSV validator calls required
//! (`metadata`, `spec.install`, `spec.displayName`, …); the others parse when missing so that
//! `validate.rs` can say what is missing instead of failing on the first field.

use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::api::apps::v1::DeploymentSpec;
use k8s_openapi::api::rbac::v1::PolicyRule;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Options, PACKAGE};
use crate::api::kubeovn::{KubeOvn, KubeOvnSpec, KUBE_OVN_SINGLETON};
use crate::operator::install::assets::{self, RELATED_IMAGE_ENV};

pub const API_VERSION: &str = "operators.coreos.com/v1alpha1";
pub const KIND: &str = "ClusterServiceVersion";
/// The annotation that names the object OLM's console asks the user to create first.
pub const INITIALIZATION_RESOURCE: &str = "operatorframework.io/initialization-resource";
pub const SKIP_RANGE: &str = "olm.skipRange";
pub const ALM_EXAMPLES: &str = "alm-examples";
/// CRDs whose objects only the operator writes (hidden in OLM's console).
pub const INTERNAL_OBJECTS: &str = "operators.operatorframework.io/internal-objects";
/// The oldest Kubernetes the operator supports: the API version of the `k8s-openapi` feature
/// the crate is built with (`v1_33` in Cargo.toml; a test keeps them equal).
pub const MIN_KUBE_VERSION: &str = "1.33.0";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterServiceVersion {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: CsvSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CsvSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub display_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub icon: Vec<Icon>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keywords: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub maintainers: Vec<Maintainer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<AppLink>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<AppLink>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub maturity: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub min_kube_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub install_modes: Vec<InstallMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install: Option<InstallStrategy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customresourcedefinitions: Option<CustomResourceDefinitions>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub related_images: Vec<RelatedImage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skips: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Fields kube-ovn does not use, kept as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apiservicedefinitions: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhookdefinitions: Option<Value>,
    #[serde(
        rename = "nativeAPIs",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub native_apis: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Icon {
    pub base64data: String,
    pub mediatype: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Maintainer {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub email: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppLink {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallMode {
    #[serde(rename = "type")]
    pub type_: String,
    pub supported: bool,
}

/// OLM's install modes, in the order its tools print them.
pub const INSTALL_MODES: [&str; 4] = [
    "OwnNamespace",
    "SingleNamespace",
    "MultiNamespace",
    "AllNamespaces",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallStrategy {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub strategy: String,
    #[serde(default, skip_serializing_if = "StrategySpec::is_empty")]
    pub spec: StrategySpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StrategySpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deployments: Vec<StrategyDeployment>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub permissions: Vec<Permissions>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_permissions: Vec<Permissions>,
}

impl StrategySpec {
    fn is_empty(&self) -> bool {
        *self == StrategySpec::default()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StrategyDeployment {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub label: BTreeMap<String, String>,
    pub spec: DeploymentSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Permissions {
    pub service_account_name: String,
    pub rules: Vec<PolicyRule>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomResourceDefinitions {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owned: Vec<CrdDescription>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required: Vec<CrdDescription>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CrdDescription {
    pub name: String,
    pub version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub display_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<ApiResourceReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spec_descriptors: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub status_descriptors: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_descriptors: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiResourceReference {
    pub name: String,
    pub kind: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Descriptor {
    pub path: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub display_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(
        rename = "x-descriptors",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub x_descriptors: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelatedImage {
    pub name: String,
    pub image: String,
}

/// The CSV's name for a version: `kube-ovn.v0.1.0`.
pub fn csv_name(version: &semver::Version) -> String {
    format!("{PACKAGE}.v{version}")
}

const ICON_SVG: &str = include_str!("../../assets/olm/icon.svg");
const DESCRIPTION: &str = include_str!("../../assets/olm/description.md");
const EXAMPLES: &str = include_str!("../../assets/olm/examples.yaml");
const SEED_VPC_SUBNET: &str = include_str!("../../hack/demo/seed/02-vpc-subnet.yaml");
const SEED_NAT_GW: &str = include_str!("../../hack/demo/seed/06-vpc-nat-gw.yaml");

/// The documents of a YAML stream (empty ones dropped).
pub(super) fn yaml_documents(text: &str) -> Result<Vec<Value>, serde_yaml::Error> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = Value::deserialize(doc)?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}

/// The `KubeOvn` users create first (the console's initialization resource): the defaults,
/// written out.
pub fn kube_ovn_sample() -> anyhow::Result<Value> {
    Ok(serde_json::to_value(KubeOvn::new(
        KUBE_OVN_SINGLETON,
        KubeOvnSpec::default(),
    ))?)
}

/// alm-examples: the `KubeOvn`, the user guide's Vpc, Subnet and VpcNatGateway verbatim, then
/// one object of every other kind (`assets/olm/examples.yaml`) on that network.
pub fn examples() -> anyhow::Result<Vec<Value>> {
    let mut out = vec![kube_ovn_sample()?];
    out.extend(yaml_documents(SEED_VPC_SUBNET)?);
    out.extend(yaml_documents(SEED_NAT_GW)?);
    out.extend(yaml_documents(EXAMPLES)?);
    Ok(out)
}

/// What the console shows of each kind, and the workloads a KubeOvn or gateway makes.
struct KindText {
    kind: &'static str,
    display_name: &'static str,
    description: &'static str,
    resources: &'static [(&'static str, &'static str, &'static str)],
}

const KIND_TEXT: &[KindText] = &[
    KindText {
        kind: "KubeOvn",
        display_name: "Kube-OVN installation",
        description: "The install switch (one object, named kube-ovn): OVN central, the per-node chassis and the node role, next to the cluster's primary CNI.",
        resources: &[
            ("ovn-central", "StatefulSet", "v1"),
            ("ovs-ovn", "DaemonSet", "v1"),
            ("kube-ovn-cni", "DaemonSet", "v1"),
            ("", "ServiceAccount", "v1"),
            ("", "ClusterRole", "v1"),
            ("", "ClusterRoleBinding", "v1"),
        ],
    },
    KindText {
        kind: "Vpc",
        display_name: "VPC",
        description: "An isolated virtual network (an OVN logical router) with its own address space, routes and the namespaces that may use it.",
        resources: &[],
    },
    KindText {
        kind: "Subnet",
        display_name: "Subnet",
        description: "An address range in a VPC (an OVN logical switch) that pods join through a NetworkAttachmentDefinition whose provider it names.",
        resources: &[],
    },
    KindText {
        kind: "IP",
        display_name: "IP",
        description: "The address a pod's secondary interface holds (written by the operator).",
        resources: &[],
    },
    KindText {
        kind: "IPPool",
        display_name: "IP pool",
        description: "A part of a subnet reserved for some namespaces.",
        resources: &[],
    },
    KindText {
        kind: "SecurityGroup",
        display_name: "Security group",
        description: "Ingress and egress rules for the secondary interfaces of pods that name it.",
        resources: &[],
    },
    KindText {
        kind: "VpcNatGateway",
        display_name: "VPC NAT gateway",
        description: "A gateway pod that gives a VPC external reach through EIPs, SNAT, DNAT and floating IPs.",
        resources: &[("", "StatefulSet", "v1"), ("", "Pod", "v1")],
    },
    KindText {
        kind: "IptablesEIP",
        display_name: "Elastic IP",
        description: "An external address held by a VPC NAT gateway.",
        resources: &[],
    },
    KindText {
        kind: "IptablesFIPRule",
        display_name: "Floating IP rule",
        description: "Maps an elastic IP one-to-one to an address in the VPC.",
        resources: &[],
    },
    KindText {
        kind: "IptablesDnatRule",
        display_name: "DNAT rule",
        description: "Forwards a port of an elastic IP to an address and port in the VPC.",
        resources: &[],
    },
    KindText {
        kind: "IptablesSnatRule",
        display_name: "SNAT rule",
        description: "Lets a VPC CIDR reach outside through an elastic IP.",
        resources: &[],
    },
];

fn root_schema(crd: &CustomResourceDefinition) -> Option<&JSONSchemaProps> {
    crd.spec
        .versions
        .iter()
        .find(|v| v.storage)
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| s.open_api_v3_schema.as_ref())
}

/// `nonPrimaryCNI` → `Non Primary CNI`, `lanIp` → `Lan Ip`.
fn display_name(field: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = field.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        // A word starts at an upper-case letter after a lower-case one, or at the last
        // capital of an acronym that a lower-case word follows (`CNIConfig`), but a plural
        // `s` stays with its acronym (`IPs`).
        let next = chars.get(i + 1);
        let plural = next == Some(&'s') && chars.get(i + 2).is_none_or(|c| c.is_ascii_uppercase());
        let boundary = i > 0
            && c.is_ascii_uppercase()
            && (chars[i - 1].is_ascii_lowercase()
                || (chars[i - 1].is_ascii_uppercase()
                    && next.is_some_and(|n| n.is_ascii_lowercase())
                    && !plural));
        if boundary {
            out.push(' ');
        }
        if i == 0 {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The console widget for a spec field, from its schema.
fn spec_x_descriptors(name: &str, schema: &JSONSchemaProps) -> Vec<String> {
    const UI: &str = "urn:alm:descriptor:com.tectonic.ui";
    match name {
        "namespace" => return vec!["urn:alm:descriptor:io.kubernetes:Namespace".into()],
        "imagePullPolicy" => return vec![format!("{UI}:imagePullPolicy")],
        "replicas" => return vec![format!("{UI}:podCount")],
        "nodeSelector" | "selector" => return vec![format!("{UI}:selector:core:v1:Node")],
        "tolerations" => return vec![format!("{UI}:advanced")],
        _ => {}
    }
    if let Some(values) = &schema.enum_ {
        return values
            .iter()
            .filter_map(|v| v.0.as_str())
            .map(|v| format!("{UI}:select:{v}"))
            .collect();
    }
    match schema.type_.as_deref() {
        Some("boolean") => vec![format!("{UI}:booleanSwitch")],
        Some("integer") | Some("number") => vec![format!("{UI}:number")],
        Some("string") => vec![format!("{UI}:text")],
        _ => vec![format!("{UI}:advanced")],
    }
}

fn property<'a>(schema: &'a JSONSchemaProps, name: &str) -> Option<&'a JSONSchemaProps> {
    schema.properties.as_ref()?.get(name)
}

/// One descriptor per field users set under `spec` (and per field of a nested object such
/// as `ovnCentral`), described by the CRD's own schema.
fn spec_descriptors(root: &JSONSchemaProps) -> Vec<Descriptor> {
    let mut out = Vec::new();
    let Some(spec) = property(root, "spec") else {
        return out;
    };
    for (name, field) in spec.properties.iter().flatten() {
        let nested = field.type_.as_deref() == Some("object")
            && field.properties.as_ref().is_some_and(|p| !p.is_empty());
        if nested {
            for (inner, inner_field) in field.properties.iter().flatten() {
                out.push(Descriptor {
                    path: format!("{name}.{inner}"),
                    display_name: format!("{} {}", display_name(name), display_name(inner)),
                    description: inner_field.description.clone().unwrap_or_default(),
                    x_descriptors: spec_x_descriptors(inner, inner_field),
                    value: None,
                });
            }
        } else {
            out.push(Descriptor {
                path: name.clone(),
                display_name: display_name(name),
                description: field.description.clone().unwrap_or_default(),
                x_descriptors: spec_x_descriptors(name, field),
                value: None,
            });
        }
    }
    out
}

/// One descriptor per top-level status field; conditions as conditions.
fn status_descriptors(root: &JSONSchemaProps) -> Vec<Descriptor> {
    let Some(status) = property(root, "status") else {
        return Vec::new();
    };
    status
        .properties
        .iter()
        .flatten()
        .map(|(name, field)| Descriptor {
            path: name.clone(),
            display_name: display_name(name),
            description: field.description.clone().unwrap_or_default(),
            x_descriptors: if name == "conditions" {
                vec!["urn:alm:descriptor:io.kubernetes.conditions".into()]
            } else {
                vec!["urn:alm:descriptor:text".into()]
            },
            value: None,
        })
        .collect()
}

/// The owned-CRD entry of one CRD.
fn describe(crd: &CustomResourceDefinition) -> anyhow::Result<CrdDescription> {
    let kind = &crd.spec.names.kind;
    let text = KIND_TEXT
        .iter()
        .find(|t| t.kind == kind)
        .ok_or_else(|| anyhow::anyhow!("src/olm/csv.rs: no display text for CRD kind {kind}"))?;
    let version = crd
        .spec
        .versions
        .iter()
        .find(|v| v.storage)
        .ok_or_else(|| anyhow::anyhow!("CRD {kind}: no storage version"))?;
    let root = root_schema(crd).ok_or_else(|| anyhow::anyhow!("CRD {kind}: no schema"))?;
    Ok(CrdDescription {
        name: crd.metadata.name.clone().unwrap_or_default(),
        version: version.name.clone(),
        kind: kind.clone(),
        display_name: text.display_name.into(),
        description: text.description.into(),
        resources: text
            .resources
            .iter()
            .map(|(name, kind, version)| ApiResourceReference {
                name: (*name).into(),
                kind: (*kind).into(),
                version: (*version).into(),
            })
            .collect(),
        spec_descriptors: spec_descriptors(root),
        status_descriptors: status_descriptors(root),
        action_descriptors: None,
    })
}

/// The CSV of this build (`version`), running `opts.image`, replacing `previous`.
pub fn generate(
    opts: &Options,
    version: &semver::Version,
    previous: &semver::Version,
) -> anyhow::Result<ClusterServiceVersion> {
    let mut manifests = assets::operator()?;
    manifests.set_image(&opts.image)?;
    let deployment = manifests.deployment;
    let service_account = manifests
        .rbac
        .service_accounts
        .first()
        .and_then(|sa| sa.metadata.name.clone())
        .ok_or_else(|| anyhow::anyhow!("assets/operator.yaml: no ServiceAccount"))?;
    let permissions = |rules: Vec<Vec<PolicyRule>>| -> Vec<Permissions> {
        let rules: Vec<PolicyRule> = rules.into_iter().flatten().collect();
        if rules.is_empty() {
            Vec::new()
        } else {
            vec![Permissions {
                service_account_name: service_account.clone(),
                rules,
            }]
        }
    };
    let cluster_permissions = permissions(
        manifests
            .rbac
            .cluster_roles
            .into_iter()
            .map(|r| r.rules.unwrap_or_default())
            .collect(),
    );
    let namespace_permissions = permissions(
        manifests
            .rbac
            .roles
            .into_iter()
            .map(|r| r.rules.unwrap_or_default())
            .collect(),
    );

    let sample = kube_ovn_sample()?;
    let examples = examples()?;
    let mut annotations = BTreeMap::new();
    annotations.insert(
        ALM_EXAMPLES.into(),
        serde_json::to_string_pretty(&examples)?,
    );
    annotations.insert(
        INITIALIZATION_RESOURCE.into(),
        serde_json::to_string_pretty(&sample)?,
    );
    annotations.insert("capabilities".into(), "Seamless Upgrades".into());
    annotations.insert("categories".into(), "Networking".into());
    annotations.insert("containerImage".into(), opts.image.clone());
    annotations.insert(
        "description".into(),
        "Secondary OVN networks (VPCs, subnets, static IPs, QoS, security groups, NAT gateways) for pods, next to any primary CNI.".into(),
    );
    annotations.insert(SKIP_RANGE.into(), format!(">={previous} <{version}"));
    annotations.insert(
        INTERNAL_OBJECTS.into(),
        serde_json::to_string(&["ips.kubeovn.io"])?,
    );
    let mut labels = BTreeMap::new();
    labels.insert(
        "operatorframework.io/arch.amd64".to_owned(),
        "supported".to_owned(),
    );
    labels.insert(
        "operatorframework.io/os.linux".to_owned(),
        "supported".to_owned(),
    );

    let owned = crate::api::crds()
        .iter()
        .map(describe)
        .collect::<anyhow::Result<Vec<_>>>()?;

    Ok(ClusterServiceVersion {
        api_version: API_VERSION.into(),
        kind: KIND.into(),
        metadata: ObjectMeta {
            name: Some(csv_name(version)),
            annotations: Some(annotations),
            labels: Some(labels),
            ..Default::default()
        },
        spec: CsvSpec {
            display_name: "Kube-OVN (secondary networks)".into(),
            description: DESCRIPTION.into(),
            icon: vec![Icon {
                base64data: base64::engine::general_purpose::STANDARD.encode(ICON_SVG),
                mediatype: "image/svg+xml".into(),
            }],
            keywords: [
                "network",
                "cni",
                "multus",
                "ovn",
                "vpc",
                "subnet",
                "ipam",
                "secondary network",
            ]
            .map(String::from)
            .to_vec(),
            maintainers: vec![Maintainer {
                name: "kube-ovn maintainers".into(),
                email: String::new(),
            }],
            provider: Some(AppLink {
                name: "kube-ovn".into(),
                url: String::new(),
            }),
            links: vec![AppLink {
                name: "Kube-OVN documentation".into(),
                url: "https://kubeovn.github.io/docs/".into(),
            }],
            maturity: "alpha".into(),
            version: version.to_string(),
            min_kube_version: MIN_KUBE_VERSION.into(),
            install_modes: INSTALL_MODES
                .iter()
                .map(|mode| InstallMode {
                    type_: (*mode).into(),
                    supported: *mode == "AllNamespaces",
                })
                .collect(),
            install: Some(InstallStrategy {
                strategy: "deployment".into(),
                spec: StrategySpec {
                    deployments: vec![StrategyDeployment {
                        name: deployment.metadata.name.clone().unwrap_or_default(),
                        label: deployment.metadata.labels.clone().unwrap_or_default(),
                        spec: deployment.spec.clone().ok_or_else(|| {
                            anyhow::anyhow!("assets/operator.yaml: Deployment without a spec")
                        })?,
                    }],
                    permissions: namespace_permissions,
                    cluster_permissions,
                },
            }),
            customresourcedefinitions: Some(CustomResourceDefinitions {
                owned,
                required: Vec::new(),
            }),
            related_images: vec![RelatedImage {
                name: RELATED_IMAGE_ENV
                    .trim_start_matches("RELATED_IMAGE_")
                    .to_ascii_lowercase()
                    .replace('_', "-"),
                image: opts.image.clone(),
            }],
            replaces: Some(csv_name(previous)),
            skips: Vec::new(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            apiservicedefinitions: None,
            webhookdefinitions: None,
            native_apis: None,
            selector: None,
            cleanup: None,
            release: None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_split_camel_case() {
        assert_eq!(display_name("nonPrimaryCNI"), "Non Primary CNI");
        assert_eq!(display_name("lanIp"), "Lan Ip");
        assert_eq!(display_name("v4availableIPs"), "V4available IPs");
        assert_eq!(display_name("CNIConfig"), "CNI Config");
        assert_eq!(display_name("mtu"), "Mtu");
    }
}
