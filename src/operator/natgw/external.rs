//! The NAT gateways' external network from the KubeOvn object: with
//! `spec.natGateway.externalNetwork` set, the Subnet `ovn-vpc-external-network` (IPAM only:
//! provider `ovn-vpc-external-network.<namespace>`, no logical switch) and the macvlan NAD
//! `<namespace>/ovn-vpc-external-network` whose IPAM is kube-ovn; both applied server-side,
//! labelled and owned by the KubeOvn object, and deleted again when the field is unset.
//!
//! A Subnet or NAD of that name the user made (without our label) is theirs: left alone, and
//! said so on the KubeOvn object. `render` is pure; `reconcile` writes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use super::plan::EXTERNAL_NETWORK;
use super::NatContext;
use crate::api::kubeovn::{KubeOvn, KUBE_OVN_SINGLETON};
use crate::api::nad::{NetworkAttachmentDefinition, NetworkAttachmentDefinitionSpec};
use crate::api::subnet::{Subnet, SubnetSpec};
use crate::operator::install::render::{COMPONENT, MANAGED_BY, MANAGER_NAME};
use crate::operator::pod::MANAGER;

/// The `app.kubernetes.io/component` of the external network's Subnet and NAD.
pub const EXTERNAL_COMPONENT: &str = "vpc-nat-gw-external-network";
/// The node role's CNI socket (its `--socket` default), which the IPAM plugin calls.
pub const DAEMON_SOCKET: &str = "/run/openvswitch/kube-ovn-daemon.sock";

fn selector() -> String {
    format!("{MANAGED_BY}={MANAGER_NAME},{COMPONENT}={EXTERNAL_COMPONENT}")
}

/// The IPAM-only provider of the external network in `namespace`.
pub fn provider(namespace: &str) -> String {
    format!("{EXTERNAL_NETWORK}.{namespace}")
}

/// The external network's Subnet and NAD.
#[derive(Debug, Clone, PartialEq)]
pub struct ExternalObjects {
    pub subnet: Subnet,
    pub nad: NetworkAttachmentDefinition,
}

/// What `kube_ovn` asks for (`Ok(None)`: no external network), or why it cannot be made.
/// Pure.
pub fn render(kube_ovn: &KubeOvn) -> Result<Option<ExternalObjects>, String> {
    let Some(ext) = kube_ovn
        .spec
        .nat_gateway
        .as_ref()
        .and_then(|n| n.external_network.as_ref())
    else {
        return Ok(None);
    };
    let interface = ext.interface.trim();
    if interface.is_empty() || interface.contains(['/', ' ', ':']) || interface.len() > 15 {
        return Err(format!(
            "spec.natGateway.externalNetwork.interface {:?} is not a network interface name \
             (the nodes' NIC on the external network, e.g. eth1)",
            ext.interface
        ));
    }
    for (field, value) in [("cidr", &ext.cidr), ("gateway", &ext.gateway)] {
        if value.trim().is_empty() {
            return Err(format!(
                "spec.natGateway.externalNetwork.{field} is required"
            ));
        }
    }
    let namespace = kube_ovn.spec.namespace.as_str();
    let provider = provider(namespace);
    let labels = BTreeMap::from([
        (MANAGED_BY.to_owned(), MANAGER_NAME.to_owned()),
        (COMPONENT.to_owned(), EXTERNAL_COMPONENT.to_owned()),
    ]);
    let owner: Vec<_> = kube_ovn.controller_owner_ref(&()).into_iter().collect();
    let meta = |ns: Option<&str>| ObjectMeta {
        name: Some(EXTERNAL_NETWORK.to_owned()),
        namespace: ns.map(str::to_owned),
        labels: Some(labels.clone()),
        owner_references: Some(owner.clone()),
        ..Default::default()
    };
    let subnet = Subnet {
        metadata: meta(None),
        spec: SubnetSpec {
            cidr_block: Some(ext.cidr.trim().to_owned()),
            gateway: Some(ext.gateway.trim().to_owned()),
            exclude_ips: ext.exclude_ips.clone(),
            provider: Some(provider.clone()),
            ..Default::default()
        },
        status: None,
    };
    let text = |s: &str| serde_json::to_string(s).expect("a string serializes");
    let config = format!(
        r#"{{"cniVersion":"0.3.1","type":"macvlan","master":{},"mode":"bridge","ipam":{{"type":"kube-ovn","server_socket":{},"provider":{}}}}}"#,
        text(interface),
        text(DAEMON_SOCKET),
        text(&provider)
    );
    let nad = NetworkAttachmentDefinition {
        metadata: meta(Some(namespace)),
        spec: NetworkAttachmentDefinitionSpec { config },
    };
    Ok(Some(ExternalObjects { subnet, nad }))
}

fn ours(meta: &ObjectMeta) -> bool {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(COMPONENT))
        .map(String::as_str)
        == Some(EXTERNAL_COMPONENT)
}

/// Applies what `render` says for the KubeOvn object (if any) and deletes what it no longer
/// says. Returns a message for the user when something is not done.
async fn reconcile(nat: &NatContext) -> Result<Option<String>, kube::Error> {
    let client = &nat.ctx.client;
    let kube_ovn = nat.kube_ovn.get(&ObjectRef::new(KUBE_OVN_SINGLETON));
    if kube_ovn
        .as_ref()
        .is_some_and(|k| k.meta().deletion_timestamp.is_some())
    {
        // Uninstalling: the garbage collector takes what it owns.
        return Ok(None);
    }
    let (wanted, mut problem) = match kube_ovn.as_deref().map(render) {
        None | Some(Ok(None)) => (None, None),
        Some(Ok(Some(w))) => (Some(w), None),
        Some(Err(message)) => (None, Some(message)),
    };
    let subnets: Api<Subnet> = Api::all(client.clone());
    let nads: Api<NetworkAttachmentDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(MANAGER).force();
    if let Some(w) = &wanted {
        let ns = w.nad.namespace().unwrap_or_default();
        let nads_in: Api<NetworkAttachmentDefinition> = Api::namespaced(client.clone(), &ns);
        match subnets.get_opt(EXTERNAL_NETWORK).await? {
            Some(s) if !ours(&s.metadata) => {
                problem = Some(format!(
                    "Subnet {EXTERNAL_NETWORK} exists and is not the operator's: left as it is"
                ));
            }
            _ => {
                subnets
                    .patch(EXTERNAL_NETWORK, &params, &Patch::Apply(&w.subnet))
                    .await?;
            }
        }
        match nads_in.get_opt(EXTERNAL_NETWORK).await? {
            Some(n) if !ours(&n.metadata) => {
                problem = Some(format!(
                    "NetworkAttachmentDefinition {ns}/{EXTERNAL_NETWORK} exists and is not the \
                     operator's: left as it is"
                ));
            }
            _ => {
                nads_in
                    .patch(EXTERNAL_NETWORK, &params, &Patch::Apply(&w.nad))
                    .await?;
            }
        }
    }
    let listed = ListParams::default().labels(&selector());
    for s in subnets.list(&listed).await? {
        if wanted.is_none() {
            info!(subnet = %s.name_any(), "external network unset: deleting its Subnet");
            delete(&subnets, &s.name_any()).await?;
        }
    }
    for n in nads.list(&listed).await? {
        let keep = wanted.as_ref().is_some_and(|w| {
            w.nad.namespace() == n.namespace() && w.nad.name_any() == n.name_any()
        });
        if !keep {
            let ns = n.namespace().unwrap_or_default();
            info!(nad = %format!("{ns}/{}", n.name_any()), "external network unset or moved: deleting its NAD");
            delete(
                &Api::<NetworkAttachmentDefinition>::namespaced(client.clone(), &ns),
                &n.name_any(),
            )
            .await?;
        }
    }
    Ok(problem)
}

async fn delete<K>(api: &Api<K>, name: &str) -> Result<(), kube::Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Follows the KubeOvn object until the process stops.
pub async fn run(nat: Arc<NatContext>) {
    loop {
        let wait = match reconcile(&nat).await {
            Ok(None) => Duration::from_secs(60),
            Ok(Some(problem)) => {
                warn!("external network: {problem}");
                if let Some(k) = nat.kube_ovn.get(&ObjectRef::new(KUBE_OVN_SINGLETON)) {
                    nat.ctx
                        .events
                        .warn(&k.object_ref(&()), "ExternalNetwork", "Apply", &problem)
                        .await;
                }
                Duration::from_secs(60)
            }
            Err(e) => {
                warn!(error = %e, "external network: applying failed; retrying");
                Duration::from_secs(5)
            }
        };
        tokio::select! {
            _ = nat.install_changed.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::kubeovn::{ExternalNetwork, KubeOvnSpec, NatGatewayConfig};

    fn kube_ovn(ext: Option<ExternalNetwork>) -> KubeOvn {
        let mut k = KubeOvn::new(
            KUBE_OVN_SINGLETON,
            KubeOvnSpec {
                nat_gateway: Some(NatGatewayConfig {
                    external_network: ext,
                }),
                ..Default::default()
            },
        );
        k.metadata.uid = Some("u1".into());
        k
    }

    fn ext() -> ExternalNetwork {
        ExternalNetwork {
            interface: "eth1".into(),
            cidr: "172.18.0.0/16".into(),
            gateway: "172.18.0.1".into(),
            exclude_ips: vec!["172.18.0.2..172.18.0.9".into()],
        }
    }

    #[test]
    fn the_external_network_is_an_ipam_only_subnet_and_a_macvlan_nad() {
        let w = render(&kube_ovn(Some(ext()))).unwrap().unwrap();
        let s = &w.subnet;
        assert_eq!(s.name_any(), "ovn-vpc-external-network");
        assert_eq!(s.spec.cidr_block.as_deref(), Some("172.18.0.0/16"));
        assert_eq!(s.spec.gateway.as_deref(), Some("172.18.0.1"));
        assert_eq!(s.spec.exclude_ips, ["172.18.0.2..172.18.0.9"]);
        assert_eq!(s.provider(), "ovn-vpc-external-network.kube-system");
        assert_eq!(s.spec.vpc, None);
        assert!(ours(&s.metadata));
        assert_eq!(s.metadata.owner_references.as_ref().unwrap()[0].uid, "u1");
        assert_eq!(
            w.nad.namespace().as_deref(),
            Some("kube-system"),
            "the NAD lives in the install's namespace"
        );
        assert_eq!(
            w.nad.spec.config,
            r#"{"cniVersion":"0.3.1","type":"macvlan","master":"eth1","mode":"bridge","ipam":{"type":"kube-ovn","server_socket":"/run/openvswitch/kube-ovn-daemon.sock","provider":"ovn-vpc-external-network.kube-system"}}"#
        );
        // The planner reads it as an IPAM-only NAD of the right provider.
        let ipam = crate::api::nad::parse_kube_ovn_ipam(&w.nad.key(), &w.nad.spec.config)
            .unwrap()
            .unwrap();
        assert_eq!(ipam.provider, s.provider());
    }

    #[test]
    fn unset_or_broken_settings_render_nothing() {
        assert_eq!(render(&kube_ovn(None)).unwrap(), None);
        let mut no_nat = kube_ovn(None);
        no_nat.spec.nat_gateway = None;
        assert_eq!(render(&no_nat).unwrap(), None);
        let mut bad = ext();
        bad.interface = "".into();
        assert!(render(&kube_ovn(Some(bad)))
            .unwrap_err()
            .contains("interface"));
        let mut bad = ext();
        bad.gateway = " ".into();
        assert!(render(&kube_ovn(Some(bad)))
            .unwrap_err()
            .contains("gateway"));
    }
}
