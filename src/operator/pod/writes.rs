//! What a pod's attachments need written, as a pure function of the plans, the addresses IPAM
//! holds for them and what is observed now (the pod's annotations, its ports in NB, its IP
//! CRs): the logical switch ports to ensure or delete, one annotation merge patch, the IP CRs
//! to apply, and the attachment keys the pod no longer asks for. Nothing is written here and
//! nothing is read from a client: `mod.rs` gathers the observations and applies the result, so
//! re-planning an attached pod yields no writes.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use kube::ResourceExt;

use crate::api::allocation::AllocatedAttachment;
use crate::api::annotations::{provider_annotation, ProviderKey, POD_SECURITY_GROUPS};
use crate::api::ip::{IpSpec, IP};
use crate::ipam::Allocation;
use crate::operator::attachment::AttachmentPlan;
use crate::operator::context::PodKey;
use crate::operator::ports::PortChange;
use crate::ovn::{external_ids, LspSpec};

/// The annotations the controller writes per attachment.
pub const ALLOCATION_KEYS: [ProviderKey; 8] = [
    ProviderKey::IpAddress,
    ProviderKey::MacAddress,
    ProviderKey::Cidr,
    ProviderKey::Gateway,
    ProviderKey::LogicalSwitch,
    ProviderKey::LogicalRouter,
    ProviderKey::Allocated,
    ProviderKey::Mtu,
];

/// A logical switch port as NB has it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedPort {
    pub addresses: Vec<String>,
    pub port_security: Vec<String>,
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
    /// IP CRs of the planned attachments, by name, where they exist (from the store).
    pub ips: BTreeMap<String, Arc<IP>>,
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
        let mut ids = external_ids::ours([
            (external_ids::POD, pod_ref.as_str()),
            (external_ids::LOGICAL_SWITCH, plan.subnet.as_str()),
            (external_ids::ATTACHMENT, plan.key.as_str()),
        ]);
        let groups = security_groups(&observed.annotations, plan.key.as_str());
        if !groups.is_empty() {
            ids.insert(external_ids::SECURITY_GROUPS.to_owned(), groups.join("/"));
            for g in &groups {
                ids.insert(
                    format!("{}{g}", external_ids::ASSOCIATED_SG_PREFIX),
                    "true".to_owned(),
                );
            }
        }
        let spec = LspSpec {
            name: plan.lsp_name.clone(),
            switch: plan.subnet.clone(),
            mac: alloc.mac,
            ips: alloc.ips.to_vec(),
            port_security: observed
                .annotations
                .get(&provider_annotation(
                    plan.key.as_str(),
                    ProviderKey::PortSecurity,
                ))
                .is_some_and(|v| v == "true"),
            external_ids: ids,
        };
        let up_to_date = observed.ports.get(&spec.name).is_some_and(|p| {
            p.addresses == spec.addresses()
                && p.port_security == spec.port_security_entries()
                && p.external_ids == spec.external_ids
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
            mtu: plan.mtu,
        };
        for (k, v) in allocated.to_annotations(plan.key.as_str()) {
            if observed.annotations.get(&k) != Some(&v) {
                writes.annotations.insert(k, Some(v));
            }
        }

        let spec = ip_spec(key, observed, plan, alloc);
        let labels = ip_labels(key, plan, observed.node_name);
        // IP CRs written before these labels existed get them too.
        let up_to_date = observed.ips.get(&plan.lsp_name).is_some_and(|ip| {
            ip.spec == spec && labels.iter().all(|(k, v)| ip.labels().get(k) == Some(v))
        });
        if !up_to_date {
            let mut ip = IP::new(&plan.lsp_name, spec);
            ip.metadata.labels = Some(labels);
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

/// Upstream's labels of an IP CR (`pkg/controller/ip.go`), so its selectors and tools work:
/// the subnet (also as a key of its own, when it fits a label name), the node, and
/// `ip_reserved: "false"` (a pod's address, not a reservation); plus the pod's name.
fn ip_labels(key: &PodKey, plan: &AttachmentPlan, node: Option<&str>) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (IP_LABEL_SUBNET.to_owned(), plan.subnet.clone()),
        (
            IP_LABEL_NODE.to_owned(),
            node.unwrap_or_default().to_owned(),
        ),
        (IP_LABEL_RESERVED.to_owned(), "false".to_owned()),
        ("kubeovn.io/pod".to_owned(), key.name.clone()),
    ]);
    // A label name is at most 63 characters; longer subnet names go without this one.
    if plan.subnet.len() <= 63 {
        labels.insert(plan.subnet.clone(), String::new());
    }
    labels
}

/// The IP CR label naming the subnet.
pub const IP_LABEL_SUBNET: &str = "ovn.kubernetes.io/subnet";
/// The IP CR label naming the pod's node (empty before scheduling).
pub const IP_LABEL_NODE: &str = "ovn.kubernetes.io/node-name";
/// The IP CR label telling a pod's address (`"false"`) from a reserved one.
pub const IP_LABEL_RESERVED: &str = "ovn.kubernetes.io/ip_reserved";

/// The security groups an attachment names: `<key>.kubernetes.io/security_groups`, else the
/// pod-wide `ovn.kubernetes.io/security_groups` (as the pod-wide QoS keys apply to every
/// attachment); comma-separated, duplicates dropped, order kept.
pub fn security_groups(annotations: &BTreeMap<String, String>, key: &str) -> Vec<String> {
    let value = annotations
        .get(&provider_annotation(key, ProviderKey::SecurityGroups))
        .or_else(|| annotations.get(POD_SECURITY_GROUPS));
    let mut out: Vec<String> = Vec::new();
    for g in value.into_iter().flat_map(|v| v.split(',')) {
        let g = g.trim();
        if !g.is_empty() && !out.iter().any(|o| o == g) {
            out.push(g.to_owned());
        }
    }
    out
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
            mtu: None,
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
                        port_security: spec.port_security_entries(),
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
            now.ips.insert(ip.name_any(), Arc::new(ip.clone()));
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
        assert_eq!(
            ip.labels(),
            &BTreeMap::from([
                ("ovn.kubernetes.io/subnet".to_owned(), "s1".to_owned()),
                ("ovn.kubernetes.io/node-name".to_owned(), "node1".to_owned()),
                (
                    "ovn.kubernetes.io/ip_reserved".to_owned(),
                    "false".to_owned()
                ),
                ("s1".to_owned(), String::new()),
                ("kubeovn.io/pod".to_owned(), "web".to_owned()),
            ])
        );
        assert!(writes.stale.is_empty());
    }

    #[test]
    fn an_ip_cr_without_upstreams_labels_gets_them() {
        let plans = [plan("n1")];
        let allocations = [allocation("n1", "10.0.0.5")];
        let mut attached = after(
            observed(),
            &plan_pod_writes(&key(), &plans, &allocations, &observed()),
        );
        let name = "web.default.n1.default.ovn";
        let mut old = (*attached.ips[name]).clone();
        old.metadata.labels = Some(BTreeMap::from([(
            "ovn.kubernetes.io/subnet".to_owned(),
            "s1".to_owned(),
        )]));
        attached.ips.insert(name.into(), Arc::new(old));
        let writes = plan_pod_writes(&key(), &plans, &allocations, &attached);
        let [ip] = writes.ips.as_slice() else {
            panic!("one IP CR to apply, got {:?}", writes.ips);
        };
        assert_eq!(ip.labels()["ovn.kubernetes.io/ip_reserved"], "false");
        assert!(writes.ports.is_empty() && writes.annotations.is_empty());
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
    fn security_groups_and_port_security_reach_the_port_live() {
        let plans = [plan("n1"), plan("n2")];
        let allocations = [allocation("n1", "10.0.0.5"), allocation("n2", "10.0.0.6")];
        let attached = after(
            observed(),
            &plan_pod_writes(&key(), &plans, &allocations, &observed()),
        );
        let mut annotated = after(attached, &PodWrites::default());
        let a = annotated.annotations.to_mut();
        a.insert(POD_SECURITY_GROUPS.into(), "all-sg".into());
        a.insert(
            "n1.default.ovn.kubernetes.io/security_groups".into(),
            "web, db,web".into(),
        );
        a.insert(
            "n1.default.ovn.kubernetes.io/port_security".into(),
            "true".into(),
        );
        let writes = plan_pod_writes(&key(), &plans, &allocations, &annotated);
        let specs: Vec<&LspSpec> = writes
            .ports
            .iter()
            .map(|c| match c {
                PortChange::Ensure(s) => s,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(specs.len(), 2, "both ports change, nothing else does");
        assert!(writes.annotations.is_empty() && writes.ips.is_empty());
        let ids = &specs[0].external_ids;
        assert_eq!(ids[external_ids::SECURITY_GROUPS], "web/db");
        assert_eq!(ids["associated_sg_web"], "true");
        assert_eq!(ids["associated_sg_db"], "true");
        assert!(specs[0].port_security);
        assert_eq!(specs[0].port_security_entries(), specs[0].addresses());
        // The second attachment names none of its own: the pod-wide key applies, no port security.
        assert_eq!(
            specs[1].external_ids[external_ids::SECURITY_GROUPS],
            "all-sg"
        );
        assert!(!specs[1].port_security);
        // Applied, nothing more to write.
        let now = after(annotated, &writes);
        assert_eq!(
            plan_pod_writes(&key(), &plans, &allocations, &now),
            PodWrites::default()
        );
    }

    #[test]
    fn a_removed_attachment_loses_its_port_annotations_and_address() {
        // n2's subnet sets an MTU: its annotation goes too.
        let both = [
            plan("n1"),
            AttachmentPlan {
                mtu: Some(1300),
                ..plan("n2")
            },
        ];
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
