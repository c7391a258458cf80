//! The manifest templates of `assets/` (the repository's top-level folder), embedded in the
//! binary and parsed into typed objects. They hold what never varies (probes, volumes,
//! security context, update strategy); `render.rs` fills in what the `KubeOvn` spec and the
//! cluster decide. A test parses every template, so a broken one fails the build's tests,
//! not an install.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{EnvVar, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde::de::DeserializeOwned;
use serde::Deserialize;

const OVN_CENTRAL: &str = include_str!("../../../assets/ovn-central.yaml");
const OVS_OVN: &str = include_str!("../../../assets/ovs-ovn.yaml");
const KUBE_OVN_CNI: &str = include_str!("../../../assets/kube-ovn-cni.yaml");
const NODE_RBAC: &str = include_str!("../../../assets/node-rbac.yaml");
const OPERATOR: &str = include_str!("../../../assets/operator.yaml");

/// A template that does not parse: a defect of this build (its test fails first).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template assets/{file}: {reason}")]
pub struct TemplateError {
    pub file: &'static str,
    pub reason: String,
}

fn one<T: DeserializeOwned>(file: &'static str, text: &str) -> Result<T, TemplateError> {
    serde_yaml::from_str(text).map_err(|e| TemplateError {
        file,
        reason: e.to_string(),
    })
}

/// Every document of a multi-document template.
fn documents(file: &'static str, text: &str) -> Result<Vec<serde_json::Value>, TemplateError> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = serde_json::Value::deserialize(doc).map_err(|e| TemplateError {
            file,
            reason: e.to_string(),
        })?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}

fn of_kind<T: DeserializeOwned>(
    file: &'static str,
    docs: &[serde_json::Value],
    kind: &str,
) -> Result<Vec<T>, TemplateError> {
    docs.iter()
        .filter(|d| d["kind"] == kind)
        .map(|d| {
            serde_json::from_value(d.clone()).map_err(|e| TemplateError {
                file,
                reason: format!("{kind}: {e}"),
            })
        })
        .collect()
}

pub fn ovn_central() -> Result<StatefulSet, TemplateError> {
    one("ovn-central.yaml", OVN_CENTRAL)
}

pub fn ovs_ovn() -> Result<DaemonSet, TemplateError> {
    one("ovs-ovn.yaml", OVS_OVN)
}

pub fn kube_ovn_cni() -> Result<DaemonSet, TemplateError> {
    one("kube-ovn-cni.yaml", KUBE_OVN_CNI)
}

/// ServiceAccounts and RBAC: cluster-wide, and Roles and RoleBindings in the install's namespace.
pub struct Rbac {
    pub service_accounts: Vec<ServiceAccount>,
    pub cluster_roles: Vec<ClusterRole>,
    pub cluster_role_bindings: Vec<ClusterRoleBinding>,
    pub roles: Vec<Role>,
    pub role_bindings: Vec<RoleBinding>,
}

fn rbac(file: &'static str, text: &str) -> Result<Rbac, TemplateError> {
    let docs = documents(file, text)?;
    Ok(Rbac {
        service_accounts: of_kind(file, &docs, "ServiceAccount")?,
        cluster_roles: of_kind(file, &docs, "ClusterRole")?,
        cluster_role_bindings: of_kind(file, &docs, "ClusterRoleBinding")?,
        roles: of_kind(file, &docs, "Role")?,
        role_bindings: of_kind(file, &docs, "RoleBinding")?,
    })
}

pub fn node_rbac() -> Result<Rbac, TemplateError> {
    rbac("node-rbac.yaml", NODE_RBAC)
}

/// What `kube-ovn render` prints for a cluster without OLM: the operator itself.
pub struct OperatorManifests {
    pub rbac: Rbac,
    pub deployment: Deployment,
    pub service: Service,
}

/// The env var that names the image of every role (OLM's related-image convention).
pub const RELATED_IMAGE_ENV: &str = "RELATED_IMAGE_KUBE_OVN";

impl OperatorManifests {
    /// Runs the operator from `image`, and names it as every role's image in
    /// `RELATED_IMAGE_KUBE_OVN`: what `kube-ovn render` and the OLM bundle both ship.
    pub fn set_image(&mut self, image: &str) -> Result<(), TemplateError> {
        let pod = self
            .deployment
            .spec
            .as_mut()
            .and_then(|s| s.template.spec.as_mut())
            .ok_or_else(|| TemplateError {
                file: "operator.yaml",
                reason: "Deployment without a pod spec".into(),
            })?;
        for c in &mut pod.containers {
            c.image = Some(image.to_owned());
            let env = c.env.get_or_insert_with(Vec::new);
            env.retain(|e| e.name != RELATED_IMAGE_ENV);
            env.push(EnvVar {
                name: RELATED_IMAGE_ENV.into(),
                value: Some(image.to_owned()),
                value_from: None,
            });
        }
        Ok(())
    }
}

pub fn operator() -> Result<OperatorManifests, TemplateError> {
    let file = "operator.yaml";
    let docs = documents(file, OPERATOR)?;
    let mut deployments: Vec<Deployment> = of_kind(file, &docs, "Deployment")?;
    let mut services: Vec<Service> = of_kind(file, &docs, "Service")?;
    let missing = |what: &str| TemplateError {
        file,
        reason: format!("no {what}"),
    };
    Ok(OperatorManifests {
        rbac: rbac(file, OPERATOR)?,
        deployment: deployments.pop().ok_or_else(|| missing("Deployment"))?,
        service: services.pop().ok_or_else(|| missing("Service"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses() {
        let central = ovn_central().unwrap();
        assert_eq!(central.metadata.name.as_deref(), Some("ovn-central"));
        assert_eq!(ovs_ovn().unwrap().metadata.name.as_deref(), Some("ovs-ovn"));
        assert_eq!(
            kube_ovn_cni().unwrap().metadata.name.as_deref(),
            Some("kube-ovn-cni")
        );
        let node = node_rbac().unwrap();
        assert_eq!(node.service_accounts.len(), 4);
        assert!(!node.cluster_roles.is_empty());
        assert_eq!(node.role_bindings.len(), 1);
        let op = operator().unwrap();
        assert_eq!(
            op.deployment.metadata.name.as_deref(),
            Some("kube-ovn-operator")
        );
        assert_eq!(op.rbac.service_accounts.len(), 1);
        assert_eq!(op.rbac.roles.len(), 1);
        assert_eq!(op.rbac.role_bindings.len(), 1);
    }
}
