//! The `external_ids` we write, in one place: on NB rows (routers and their static routes and
//! policies, switches, logical switch ports) and on the node's OVS rows (pod interfaces, QoS
//! and Queue rows). Key names follow Kube-OVN's where it has one; the others are ours and say
//! so. Also the vendor mark by which we recognise our own rows, and the map builders every
//! writer uses.

use std::collections::BTreeMap;

type Map = BTreeMap<String, String>;

/// Key and value of the mark on every row we own (NB and OVS).
pub const VENDOR_KEY: &str = "vendor";
pub const VENDOR: &str = "kube-ovn";

// NB rows.
/// Logical_Switch_Port: the pod, `<ns>/<pod>` (indexed).
pub const POD: &str = "pod";
/// Logical_Switch_Port: the subnet (logical switch).
pub const LOGICAL_SWITCH: &str = "ls";
/// Logical_Switch_Port (ours): the attachment key.
pub const ATTACHMENT: &str = "attachment";
/// Logical_Router and Logical_Switch: the Vpc.
pub const VPC: &str = "vpc";
/// Logical_Switch: the subnet's provider.
pub const PROVIDER: &str = "provider";
/// Logical_Switch_Port: the security groups its pod names for it, `sg1/sg2` (Kube-OVN's).
pub const SECURITY_GROUPS: &str = "security_groups";
/// Logical_Switch_Port: `associated_sg_<sg>=true` per group (Kube-OVN's membership mark).
pub const ASSOCIATED_SG_PREFIX: &str = "associated_sg_";
/// Logical_Router_Static_Route (ours): the VpcNatGateway whose default route this is.
pub const VPC_NAT_GW: &str = "vpc-nat-gw";

// OVS Interface rows.
/// The OVN logical port an interface binds to (ovn-controller reads it; indexed).
pub const IFACE_ID: &str = "iface-id";
/// Set to `"true"` by ovn-controller once the port's flows are in.
pub const OVN_INSTALLED: &str = "ovn-installed";
pub const POD_NAME: &str = "pod_name";
pub const POD_NAMESPACE: &str = "pod_namespace";
pub const POD_NETNS: &str = "pod_netns";
pub const IP: &str = "ip";
/// Ours: the pod end's name, for live QoS on the pod side.
pub const POD_IFNAME: &str = "pod_ifname";
/// Ours: the container (sandbox) ID of the ADD that owns the interface (indexed); DEL and
/// CHECK find a pre-plugged interface, whose name does not derive from the container ID, by it.
pub const SANDBOX: &str = "sandbox";
/// Ours: set while an interface is pre-plugged and not yet claimed by an ADD; the name of its
/// peer, still in the node's netns.
pub const PREPLUG_PEER: &str = "preplug_peer";

/// True when `ids` carry our vendor mark.
pub fn is_ours(ids: &Map) -> bool {
    ids.get(VENDOR_KEY).map(String::as_str) == Some(VENDOR)
}

/// The vendor mark plus `extra` pairs: the `external_ids` of a row we create.
pub fn ours<'a>(extra: impl IntoIterator<Item = (&'a str, &'a str)>) -> Map {
    let mut ids = Map::from([(VENDOR_KEY.to_owned(), VENDOR.to_owned())]);
    ids.extend(extra.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())));
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_rows_carry_the_vendor_mark() {
        let ids = ours([(VPC, "vpc1"), (PROVIDER, "n1.default.ovn")]);
        assert!(is_ours(&ids));
        assert_eq!(ids.get(VPC).map(String::as_str), Some("vpc1"));
        assert_eq!(ids.len(), 3);
        assert!(!is_ours(&Map::from([(VENDOR_KEY.into(), "other".into())])));
        assert!(!is_ours(&Map::new()));
    }
}
