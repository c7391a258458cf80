//! What a pod's attachments need written, as a pure function of the plans, the addresses IPAM
//! holds for them and what is observed now (the pod's annotations, its ports in NB, its IP
//! CRs): the logical switch ports to ensure or delete, one annotation merge patch, the IP CRs
//! to apply, and the attachment keys the pod no longer asks for. Nothing is written here and
//! nothing is read from a client: `mod.rs` gathers the observations and applies the result, so
//! re-planning an attached pod yields no writes.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::api::allocation::AllocatedAttachment;
use crate::api::annotations::{provider_annotation, ProviderKey};
use crate::api::ip::{IpSpec, IP};
use crate::ipam::Allocation;
use crate::operator::attachment::AttachmentPlan;
use crate::operator::context::PodKey;
use crate::operator::ports::PortChange;
use crate::ovn::{external_ids, LspSpec};

/// The annotations the controller writes per attachment.
pub const ALLOCATION_KEYS: [ProviderKey; 7] = [
    ProviderKey::IpAddress,
    ProviderKey::MacAddress,
    ProviderKey::Cidr,
    ProviderKey::Gateway,
    ProviderKey::LogicalSwitch,
    ProviderKey::LogicalRouter,
    ProviderKey::Allocated,
];

/// A logical switch port as NB has it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedPort {
    pub addresses: Vec<String>,
    pub external_ids: BTreeMap<String, String>,
}

/// What is observed of one pod, gathered from reflector stores and the NB cache.
#[derive(Debug, Default)]
pub struct ObservedPod<'a> {
    /// Borrowed from the pod store (no copy per reconcile).
    pub annotations: Cow<'a, BTreeMap<String, String>>,
    pub node_name: Option<&'a str>,
    /// Owned by a StatefulSet: its addresses outlive the pod.
    pub sticky: bool,
    /// Attachment keys the pod has ports or allocation annotations for.
    pub existing_keys: BTreeSet<String>,
    /// Ports of the planned attachments, by name, where NB has them.
    pub ports: BTreeMap<String, ObservedPort>,
    /// IP CRs of the planned attachments, by name, where they exist.
    pub ips: BTreeMap<String, IpSpec>,
    /// Gateways of each planned subnet.
    pub gateways: BTreeMap<String, Vec<IpAddr>>,
}

/// Everything to write for one pod; empty parts mean nothing to do.
#[derive(Debug, Default, PartialEq)]
pub struct PodWrites {
    pub ports: Vec<PortChange>,
    /// One merge patch of `metadata.annotations` (`None` removes a key).
    pub annotations: BTreeMap<String, Option<String>>,
    /// IP CRs to apply (server-side apply).
    pub ips: Vec<IP>,
    /// Attachment keys the pod no longer asks for: their IP CRs go and IPAM frees them.
    pub stale: Vec<String>,
}

/// The attachment keys of `existing` that no plan names any more.
pub fn stale_keys(plans: &[AttachmentPlan], existing: &BTreeSet<String>) -> Vec<String> {
    let planned: BTreeSet<&str> = plans.iter().map(|p| p.key.as_str()).collect();
    existing
        .iter()
        .filter(|k| !planned.contains(k.as_str()))
        .cloned()
        .collect()
}

/// The writes that bring pod `key` to `plans` with `allocations` (one per plan, same order).
pub fn plan_pod_writes(
    key: &PodKey,
    plans: &[AttachmentPlan],
    allocations: &[Allocation],
    observed: &ObservedPod<'_>,
) -> PodWrites {
    debug_assert_eq!(plans.len(), allocations.len());
    let stale = stale_keys(plans, &observed.existing_keys);
    let pod_ref = key.ns_name();
    let mut writes = PodWrites::default();
    for (plan, alloc) in plans.iter().zip(allocations) {
        let spec = LspSpec {
            name: plan.lsp_name.clone(),
            switch: plan.subnet.clone(),
            mac: alloc.mac,
            ips: alloc.ips.to_vec(),
            port_security: false,
            external_ids: external_ids::ours([
                (external_ids::POD, pod_ref.as_str()),
                (external_ids::LOGICAL_SWITCH, plan.subnet.as_str()),
                (external_ids::ATTACHMENT, plan.key.as_str()),
            ]),
        };
        let up_to_date = observed.ports.get(&spec.name).is_some_and(|p| {
            p.addresses == spec.addresses() && p.external_ids == spec.external_ids
        });
        // An IPAM-only attachment (another plugin's interface) has no port.
        if !up_to_date && !plan.provider.is_ipam_only() {
            writes.ports.push(PortChange::Ensure(spec));
        }

        let allocated = AllocatedAttachment {
            ips: alloc.ips.to_vec(),
            mac: alloc.mac,
            cidrs: plan.cidrs.clone(),
            gateways: observed
                .gateways
                .get(&plan.subnet)
                .cloned()
                .unwrap_or_default(),
            logical_switch: plan.subnet.clone(),
            logical_router: plan.vpc.clone(),
        };
        for (k, v) in allocated.to_annotations(plan.key.as_str()) {
            if observed.annotations.get(&k) != Some(&v) {
                writes.annotations.insert(k, Some(v));
            }
        }

        let spec = ip_spec(key, observed, plan, alloc);
        if observed.ips.get(&plan.lsp_name) != Some(&spec) {
            let mut ip = IP::new(&plan.lsp_name, spec);
            ip.metadata.labels = Some(BTreeMap::from([
                ("ovn.kubernetes.io/subnet".to_owned(), plan.subnet.clone()),
                ("kubeovn.io/pod".to_owned(), key.name.clone()),
            ]));
            writes.ips.push(ip);
        }
    }
    for k in &stale {
        writes.ports.push(PortChange::Delete(key.port_name(k)));
        for pk in ALLOCATION_KEYS {
            let name = provider_annotation(k, pk);
            if observed.annotations.contains_key(&name) {
                writes.annotations.insert(name, None);
            }
        }
    }
    writes.stale = stale;
    writes
}

fn ip_spec(
    key: &PodKey,
    observed: &ObservedPod<'_>,
    plan: &AttachmentPlan,
    alloc: &Allocation,
) -> IpSpec {
    let family = |v4: bool| {
        alloc
            .ips
            .iter()
            .find(|ip| ip.is_ipv4() == v4)
            .map(ToString::to_string)
            .unwrap_or_default()
    };
    IpSpec {
        pod_name: key.name.clone(),
        namespace: key.namespace.clone(),
        subnet: plan.subnet.clone(),
        node_name: observed.node_name.unwrap_or_default().to_owned(),
        ip_address: alloc.ip_annotation(),
        v4_ip_address: family(true),
        v6_ip_address: family(false),
        mac_address: alloc.mac.to_string(),
        pod_type: if observed.sticky {
            "StatefulSet".into()
        } else {
            String::new()
        },
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::annotations::Provider;
    use kube::ResourceExt;

    fn key() -> PodKey {
        PodKey::new("default", "web")
    }

    fn plan(nad: &str) -> AttachmentPlan {
        let provider = Provider::for_nad(nad, "default").expect("valid provider");
        AttachmentPlan {
            network: format!("default/{nad}"),
            key: provider.clone(),
            lsp_name: format!("web.default.{provider}"),
            provider,
            subnet: "s1".into(),
            vpc: Some("vpc1".into()),
            cidrs: vec!["10.0.0.0/24".parse().expect("valid CIDR")],
            interface: "net1".into(),
            ips: vec![],
            ips_source: None,
            mac: None,
            mac_source: None,
            pool: None,
            claim: None,
            default_route: false,
            default_route_gateways: vec![],
        }
    }

    fn allocation(nad: &str, ip: &str) -> Allocation {
        Allocation {
            key: format!("default/web/{nad}.default.ovn"),
            subnet: "s1".into(),
            ips: [ip.parse().expect("valid IP")].into_iter().collect(),
            mac: "0a:58:0a:00:00:05".parse().expect("valid MAC"),
            pool: None,
            sticky: false,
        }
    }

    fn observed() -> ObservedPod<'static> {
        ObservedPod {
            node_name: Some("node1"),
            gateways: BTreeMap::from([("s1".into(), vec!["10.0.0.1".parse().expect("IP")])]),
            ..Default::default()
        }
    }

    /// What the cluster shows once `writes` are applied on top of `before`.
    fn after(before: ObservedPod<'static>, writes: &PodWrites) -> ObservedPod<'static> {
        let mut now = before;
        for change in &writes.ports {
            match change {
                PortChange::Ensure(spec) => {
                    let port = ObservedPort {
                        addresses: spec.addresses(),
                        external_ids: spec.external_ids.clone(),
                    };
                    now.ports.insert(spec.name.clone(), port);
                }
                PortChange::Delete(name) => {
                    now.ports.remove(name);
                }
            }
        }
        for (k, v) in &writes.annotations {
            match v {
                Some(v) => now.annotations.to_mut().insert(k.clone(), v.clone()),
                None => now.annotations.to_mut().remove(k),
            };
        }
        for ip in &writes.ips {
            now.ips.insert(ip.name_any(), ip.spec.clone());
        }
        now
    }

    #[test]
    fn a_new_attachment_gets_its_port_annotations_and_ip_cr() {
        let writes = plan_pod_writes(
            &key(),
            &[plan("n1")],
            &[allocation("n1", "10.0.0.5")],
            &observed(),
        );
        let [PortChange::Ensure(port)] = writes.ports.as_slice() else {
            panic!("one port to ensure, got {:?}", writes.ports);
        };
        assert_eq!(port.name, "web.default.n1.default.ovn");
        assert_eq!(port.switch, "s1");
        assert_eq!(
            port.addresses(),
            vec!["0a:58:0a:00:00:05 10.0.0.5".to_owned()]
        );
        assert_eq!(
            port.external_ids.get("pod").map(String::as_str),
            Some("default/web")
        );
        assert_eq!(port.external_ids.get("ls").map(String::as_str), Some("s1"));
        assert_eq!(
            port.external_ids.get("vendor").map(String::as_str),
            Some("kube-ovn")
        );
        let annotation = |k: &str| writes.annotations.get(k).cloned().flatten();
        assert_eq!(
            annotation("n1.default.ovn.kubernetes.io/ip_address").as_deref(),
            Some("10.0.0.5")
        );
        assert_eq!(
            annotation("n1.default.ovn.kubernetes.io/gateway").as_deref(),
            Some("10.0.0.1")
        );
        assert_eq!(
            annotation("n1.default.ovn.kubernetes.io/allocated").as_deref(),
            Some("true")
        );
        let [ip] = writes.ips.as_slice() else {
            panic!("one IP CR, got {:?}", writes.ips);
        };
        assert_eq!(ip.name_any(), "web.default.n1.default.ovn");
        assert_eq!(ip.spec.ip_address, "10.0.0.5");
        assert_eq!(ip.spec.node_name, "node1");
        assert_eq!(ip.spec.pod_type, "");
        assert!(writes.stale.is_empty());
    }

    #[test]
    fn an_attached_pod_needs_no_writes() {
        let plans = [plan("n1"), plan("n2")];
        let allocations = [allocation("n1", "10.0.0.5"), allocation("n2", "10.0.0.6")];
        let first = plan_pod_writes(&key(), &plans, &allocations, &observed());
        let attached = after(observed(), &first);
        assert_eq!(
            plan_pod_writes(&key(), &plans, &allocations, &attached),
            PodWrites::default()
        );
    }

    #[test]
    fn a_removed_attachment_loses_its_port_annotations_and_address() {
        let both = [plan("n1"), plan("n2")];
        let allocations = [allocation("n1", "10.0.0.5"), allocation("n2", "10.0.0.6")];
        let mut attached = after(
            observed(),
            &plan_pod_writes(&key(), &both, &allocations, &observed()),
        );
        attached.existing_keys = BTreeSet::from(["n1.default.ovn".into(), "n2.default.ovn".into()]);

        let writes = plan_pod_writes(&key(), &both[..1], &allocations[..1], &attached);
        assert_eq!(writes.stale, vec!["n2.default.ovn".to_owned()]);
        assert_eq!(
            writes.ports,
            vec![PortChange::Delete("web.default.n2.default.ovn".into())]
        );
        assert_eq!(writes.annotations.len(), ALLOCATION_KEYS.len());
        assert!(writes
            .annotations
            .iter()
            .all(|(k, v)| k.starts_with("n2.default.ovn.kubernetes.io/") && v.is_none()));
        assert!(writes.ips.is_empty());
    }

    #[test]
    fn an_ipam_only_attachment_gets_annotations_and_ip_cr_but_no_port() {
        let provider = Provider::for_ipam_nad("ext", "kube-system").expect("valid provider");
        let p = AttachmentPlan {
            network: "kube-system/ext".into(),
            key: provider.clone(),
            lsp_name: format!("web.default.{provider}"),
            provider,
            vpc: None,
            ..plan("n1")
        };
        let writes = plan_pod_writes(&key(), &[p], &[allocation("n1", "10.0.0.5")], &observed());
        assert!(writes.ports.is_empty(), "{:?}", writes.ports);
        assert_eq!(
            writes
                .annotations
                .get("ext.kube-system.kubernetes.io/ip_address")
                .cloned()
                .flatten()
                .as_deref(),
            Some("10.0.0.5")
        );
        assert_eq!(writes.ips.len(), 1);
        assert_eq!(writes.ips[0].name_any(), "web.default.ext.kube-system");
    }

    #[test]
    fn statefulset_pods_and_changed_addresses_rewrite_the_ip_cr() {
        let plans = [plan("n1")];
        let attached = after(
            observed(),
            &plan_pod_writes(&key(), &plans, &[allocation("n1", "10.0.0.5")], &observed()),
        );
        let moved = plan_pod_writes(&key(), &plans, &[allocation("n1", "10.0.0.9")], &attached);
        assert_eq!(moved.ips.len(), 1);
        assert_eq!(moved.ips[0].spec.ip_address, "10.0.0.9");
        assert_eq!(moved.ports.len(), 1, "the port's addresses change too");

        let sticky = ObservedPod {
            sticky: true,
            ..observed()
        };
        let writes = plan_pod_writes(&key(), &plans, &[allocation("n1", "10.0.0.5")], &sticky);
        assert_eq!(writes.ips[0].spec.pod_type, "StatefulSet");
    }
}
