//! Traffic policy in NB terms: the ACLs, Port_Groups and Address_Sets the policy controller
//! wants, as plain values (`PolicySpec`), and how we recognise the rows we own. The operator's
//! plan (`operator::policy::plan`) builds a `PolicySpec`; `NbTxn::sync_policy` (in
//! `txn/policy.rs`) makes NB hold exactly it in one transaction. No Kubernetes type lives here.

use std::collections::{BTreeMap, BTreeSet};

use super::Map;
use crate::ovn::external_ids;
use crate::ovsdb::model::nb::Acl;

/// One ACL. Two ACLs of one parent with the same direction, priority, match and action are the
/// same ACL (as `ovn-nbctl acl-add` sees it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AclSpec {
    /// `to-lport` (ingress of the port) or `from-lport` (egress).
    pub direction: String,
    pub priority: i64,
    pub match_: String,
    /// `allow-related`, `allow`, `allow-stateless`, `drop`, `reject` or `pass`.
    pub action: String,
    pub name: Option<String>,
    pub external_ids: Map,
}

impl AclSpec {
    pub fn identity(&self) -> (&str, i64, &str, &str) {
        (&self.direction, self.priority, &self.match_, &self.action)
    }

    /// Whether row `acl` is this ACL with the same name and external_ids.
    pub fn same_row(&self, acl: &Acl) -> bool {
        self.name == acl.name.clone().filter(|n| !n.is_empty())
            && self.external_ids == acl.external_ids
    }
}

/// A port group with its member ports (logical switch port names) and its ACLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortGroupSpec {
    pub name: String,
    pub ports: BTreeSet<String>,
    pub acls: Vec<AclSpec>,
    pub external_ids: Map,
}

/// An address set (addresses as OVN writes them: bare IPs or CIDRs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressSetSpec {
    pub name: String,
    pub addresses: BTreeSet<String>,
    pub external_ids: Map,
}

/// Everything the policy controller owns in NB. Rows of ours that this does not name are
/// removed; rows of others are never touched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicySpec {
    pub port_groups: Vec<PortGroupSpec>,
    pub address_sets: Vec<AddressSetSpec>,
    /// ACLs on logical switches (Subnet `private`/`allowSubnets`/`acls`), by switch name.
    pub switch_acls: BTreeMap<String, Vec<AclSpec>>,
}

/// `external_ids` key on the Port_Groups and Address_Sets of the policy controller: the
/// security group (or `kubeovn_deny_all`) they belong to, as Kube-OVN writes it.
pub const SECURITY_GROUP: &str = "sg";
/// `external_ids` key on the Port_Groups and Address_Sets of a MultiNetworkPolicy: `<ns>/<name>`.
pub const MULTI_NETWORK_POLICY: &str = "mnp";
/// `external_ids` key on our ACLs: the port group or logical switch holding them (Kube-OVN's
/// `parent`).
pub const PARENT: &str = "parent";
/// `external_ids` key on a subnet's ACLs: the subnet (Kube-OVN's `subnet`).
pub const SUBNET: &str = "subnet";

/// Whether a Port_Group or Address_Set is the policy controller's.
pub fn is_policy_row(ids: &Map) -> bool {
    external_ids::is_ours(ids)
        && (ids.contains_key(SECURITY_GROUP) || ids.contains_key(MULTI_NETWORK_POLICY))
}

/// Whether an ACL on a logical switch is the policy controller's.
pub fn is_policy_switch_acl(ids: &Map) -> bool {
    external_ids::is_ours(ids) && ids.contains_key(PARENT)
}

/// The `addresses` (or `port_security`) column of a logical switch port as its IPs: every
/// entry is `<mac> <ip>…` (also `dynamic`, `router`, `unknown`, which carry none).
pub fn port_ips(entries: &[String]) -> Vec<std::net::IpAddr> {
    entries
        .iter()
        .flat_map(|e| e.split_whitespace().skip(1))
        .filter_map(|w| w.split('/').next()?.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ips_read_every_family_and_skip_the_mac() {
        let ips = port_ips(&["0a:58:0a:00:00:05 10.0.0.5 fd00::5".into(), "router".into()]);
        assert_eq!(
            ips,
            vec![
                "10.0.0.5".parse::<std::net::IpAddr>().unwrap(),
                "fd00::5".parse().unwrap()
            ]
        );
    }

    #[test]
    fn policy_rows_are_ours_and_name_a_group() {
        let ids = external_ids::ours([(SECURITY_GROUP, "web")]);
        assert!(is_policy_row(&ids));
        assert!(!is_policy_row(&external_ids::ours([])));
        assert!(!is_policy_row(&Map::from([(
            SECURITY_GROUP.into(),
            "web".into()
        )])));
    }
}
