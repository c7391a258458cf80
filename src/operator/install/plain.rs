//! `kube-ovn render`: the operator's own manifests for a cluster without OLM (`kube-ovn render
//! | kubectl apply -f -`): the CRDs, the operator's ServiceAccount, least-privilege RBAC,
//! Deployment and status Service, and a sample `KubeOvn`. Built from `assets/operator.yaml`,
//! the same template OLM's bundle is made from. These objects are not labelled
//! `managed-by: kube-ovn-operator`: the operator never prunes itself.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

use super::assets;
use super::validate::check_image_reference;
use crate::api::kubeovn::{KubeOvn, KubeOvnSpec, KUBE_OVN_SINGLETON};

/// What `kube-ovn render` prints.
#[derive(Debug, Clone, clap::Args)]
pub struct RenderArgs {
    /// Namespace of the operator.
    #[arg(long, default_value = "kube-system")]
    pub namespace: String,
    /// The image of the operator (and, by default, of every role it installs).
    #[arg(long, default_value = concat!("kube-ovn:v", env!("CARGO_PKG_VERSION")))]
    pub image: String,
    /// Leave the CustomResourceDefinitions out (installed separately).
    #[arg(long)]
    pub no_crds: bool,
    /// Leave the sample KubeOvn out (to write one's own).
    #[arg(long)]
    pub no_sample: bool,
}

fn push_yaml<T: Serialize>(out: &mut String, obj: &T) -> anyhow::Result<()> {
    out.push_str("---\n");
    out.push_str(&serde_yaml::to_string(obj)?);
    Ok(())
}

fn part_of(meta: &mut ObjectMeta, namespace: Option<&str>) {
    meta.labels
        .get_or_insert_with(BTreeMap::new)
        .insert("app.kubernetes.io/part-of".into(), "kube-ovn".into());
    if let Some(ns) = namespace {
        meta.namespace = Some(ns.to_owned());
    }
}

/// The YAML stream `kube-ovn render` prints.
pub fn render_plain(args: &RenderArgs) -> anyhow::Result<String> {
    check_image_reference(&args.image)
        .map_err(|why| anyhow::anyhow!("--image {:?}: {why}", args.image))?;
    let ns = args.namespace.as_str();
    let mut out = String::new();
    if args.namespace != "kube-system" {
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(ns.to_owned()),
                ..Default::default()
            },
            ..Default::default()
        };
        push_yaml(&mut out, &namespace)?;
    }
    if !args.no_crds {
        for crd in crate::api::crds() {
            push_yaml(&mut out, &crd)?;
        }
    }
    let mut manifests = assets::operator()?;
    manifests.set_image(&args.image)?;
    for mut sa in manifests.rbac.service_accounts {
        part_of(&mut sa.metadata, Some(ns));
        push_yaml(&mut out, &sa)?;
    }
    for mut role in manifests.rbac.cluster_roles {
        part_of(&mut role.metadata, None);
        push_yaml(&mut out, &role)?;
    }
    for mut binding in manifests.rbac.cluster_role_bindings {
        part_of(&mut binding.metadata, None);
        for s in binding.subjects.iter_mut().flatten() {
            s.namespace = Some(ns.to_owned());
        }
        push_yaml(&mut out, &binding)?;
    }
    for mut role in manifests.rbac.roles {
        part_of(&mut role.metadata, Some(ns));
        push_yaml(&mut out, &role)?;
    }
    for mut binding in manifests.rbac.role_bindings {
        part_of(&mut binding.metadata, Some(ns));
        for s in binding.subjects.iter_mut().flatten() {
            s.namespace = Some(ns.to_owned());
        }
        push_yaml(&mut out, &binding)?;
    }
    let deployment = &mut manifests.deployment;
    part_of(&mut deployment.metadata, Some(ns));
    push_yaml(&mut out, deployment)?;
    part_of(&mut manifests.service.metadata, Some(ns));
    push_yaml(&mut out, &manifests.service)?;
    if !args.no_sample {
        push_yaml(
            &mut out,
            &KubeOvn::new(KUBE_OVN_SINGLETON, KubeOvnSpec::default()),
        )?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> RenderArgs {
        RenderArgs {
            namespace: "kube-ovn".into(),
            image: "r.io/kube-ovn:v9".into(),
            no_crds: false,
            no_sample: false,
        }
    }

    #[test]
    fn render_prints_the_operator_with_its_image_namespace_and_a_sample() {
        let text = render_plain(&args()).unwrap();
        let docs: Vec<serde_json::Value> = serde_yaml::Deserializer::from_str(&text)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
        let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        for kind in [
            "Namespace",
            "CustomResourceDefinition",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Deployment",
            "Service",
            "KubeOvn",
        ] {
            assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
        }
        let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
        assert_eq!(deployment["metadata"]["namespace"], "kube-ovn");
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["image"], "r.io/kube-ovn:v9");
        assert!(container["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "RELATED_IMAGE_KUBE_OVN" && e["value"] == "r.io/kube-ovn:v9"));
        let binding = docs
            .iter()
            .find(|d| d["kind"] == "ClusterRoleBinding")
            .unwrap();
        assert_eq!(binding["subjects"][0]["namespace"], "kube-ovn");
        // The operator must never match its own prune selector.
        assert!(!text.contains("managed-by: kube-ovn-operator"));
    }

    #[test]
    fn a_bad_image_is_refused() {
        let mut a = args();
        a.image = "Not An Image".into();
        assert!(render_plain(&a)
            .unwrap_err()
            .to_string()
            .contains("--image"));
    }
}
