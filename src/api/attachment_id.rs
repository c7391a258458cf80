//! Who an attachment is: one pod's interface on one kube-ovn network, and every name derived
//! from that identity. The operator and the node role both use this file, so the rules live
//! once: the attachment key (`<provider>`, or `<provider>.<ifname>` for the second and later
//! attachments of one NAD), the logical switch port name `<pod>.<ns>.<key>` (also the OVS
//! `iface-id` and the IP CR's name), the IPAM key `<ns>/<pod>/<key>` and the `pod` value
//! `<ns>/<pod>` of NB rows. Pure: no I/O.

use std::fmt;

use super::annotations::Provider;
use super::selection::NetworkSelection;

/// One pod's attachment to one kube-ovn network.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttachmentId {
    pub namespace: String,
    pub pod: String,
    /// The attachment key: the provider, with an interface suffix when the NAD is repeated.
    pub key: Provider,
}

impl AttachmentId {
    pub fn new(namespace: impl Into<String>, pod: impl Into<String>, key: Provider) -> Self {
        Self {
            namespace: namespace.into(),
            pod: pod.into(),
            key,
        }
    }

    /// The attachment key of interface `ifname` of `provider`'s NAD, given the pod's parsed
    /// networks annotation: the provider itself for the first interface of that NAD (or when
    /// the NAD is not listed), `<provider>.<ifname>` for the second and later ones.
    pub fn key_for(selections: &[NetworkSelection], provider: &Provider, ifname: &str) -> Provider {
        let base = provider.base();
        let position = selections
            .iter()
            .filter(|s| s.name == base.nad() && s.namespace == base.namespace())
            .position(|s| s.interface == ifname);
        match position {
            Some(n) if n > 0 => base.with_interface(ifname),
            _ => base,
        }
    }

    /// `<pod>.<ns>.<key>`: Logical_Switch_Port name, OVS `iface-id` and IP CR name.
    pub fn port_name(&self) -> String {
        port_name(&self.namespace, &self.pod, self.key.as_str())
    }

    /// `<ns>/<pod>/<key>`: the IPAM allocation key.
    pub fn ipam_key(&self) -> String {
        ipam_key(&self.namespace, &self.pod, self.key.as_str())
    }

    /// `<ns>/<pod>`: the `pod` external_id of the logical switch port.
    pub fn pod_ref(&self) -> String {
        pod_ref(&self.namespace, &self.pod)
    }

    /// Parses an IPAM key; `None` when it is not `<ns>/<pod>/<provider>`.
    pub fn parse_ipam_key(value: &str) -> Option<Self> {
        let (namespace, pod, key) = split_ipam_key(value)?;
        Some(Self::new(namespace, pod, Provider::parse(key).ok()?))
    }
}

impl fmt::Display for AttachmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} {}", self.namespace, self.pod, self.key)
    }
}

/// `<pod>.<ns>.<key>` for a key that may not (or no longer) parse as a provider, e.g. a stale
/// one read back from NB or IPAM.
pub fn port_name(namespace: &str, pod: &str, key: &str) -> String {
    format!("{pod}.{namespace}.{key}")
}

/// `<ns>/<pod>/<key>`, the IPAM key, for any key string.
pub fn ipam_key(namespace: &str, pod: &str, key: &str) -> String {
    format!("{namespace}/{pod}/{key}")
}

/// The IPAM key of an address owned by IPAMClaim `<ns>/<claim>` for attachment `key`:
/// `<ns>/claim:<claim>/<key>` (no pod name has a `:`), so GC sees the claim as its holder.
pub fn claim_ipam_key(namespace: &str, claim: &str, key: &str) -> String {
    ipam_key(namespace, &claim_holder(claim), key)
}

/// The pseudo pod name that holds a claim's addresses in IPAM keys.
pub fn claim_holder(claim: &str) -> String {
    format!("claim:{claim}")
}

/// `<ns>/<pod>`.
pub fn pod_ref(namespace: &str, pod: &str) -> String {
    format!("{namespace}/{pod}")
}

/// The `(namespace, pod, key)` of an IPAM key, whatever the key.
pub fn split_ipam_key(value: &str) -> Option<(&str, &str, &str)> {
    let mut parts = value.splitn(3, '/');
    let namespace = parts.next()?;
    let pod = parts.next()?;
    let key = parts.next()?;
    (!namespace.is_empty() && !pod.is_empty() && !key.is_empty()).then_some((namespace, pod, key))
}

/// The attachment key of port (or `iface-id`) `name` if it is one of pod `<ns>/<pod>`'s.
pub fn key_of_port<'a>(name: &'a str, namespace: &str, pod: &str) -> Option<&'a str> {
    name.strip_prefix(pod)?
        .strip_prefix('.')?
        .strip_prefix(namespace)?
        .strip_prefix('.')
        .filter(|k| !k.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::selection::parse_networks;

    const P: &str = "attachnet.default.ovn";

    fn provider() -> Provider {
        Provider::parse(P).expect("valid provider")
    }

    #[test]
    fn names_derive_from_the_identity() {
        let id = AttachmentId::new("default", "web", provider());
        assert_eq!(id.port_name(), "web.default.attachnet.default.ovn");
        assert_eq!(id.ipam_key(), "default/web/attachnet.default.ovn");
        assert_eq!(id.pod_ref(), "default/web");
        assert_eq!(
            AttachmentId::parse_ipam_key(&id.ipam_key()),
            Some(id.clone())
        );
        assert_eq!(
            key_of_port(&id.port_name(), "default", "web"),
            Some("attachnet.default.ovn")
        );
    }

    #[test]
    fn repeated_nad_keys_carry_the_interface() {
        let selections = parse_networks("attachnet@net1,other@net2,attachnet@net3", "default")
            .expect("valid selection");
        assert_eq!(
            AttachmentId::key_for(&selections, &provider(), "net1").as_str(),
            P
        );
        assert_eq!(
            AttachmentId::key_for(&selections, &provider(), "net3").as_str(),
            "attachnet.default.ovn.net3"
        );
        // An interface not listed, or no annotation at all: the provider itself.
        assert_eq!(
            AttachmentId::key_for(&selections, &provider(), "net9").as_str(),
            P
        );
        assert_eq!(AttachmentId::key_for(&[], &provider(), "net3").as_str(), P);
        // A key with a suffix is reduced to its provider first.
        let suffixed = provider().with_interface("net3");
        assert_eq!(
            AttachmentId::key_for(&selections, &suffixed, "net1").as_str(),
            P
        );
    }

    #[test]
    fn keys_of_other_pods_or_malformed_keys_are_refused() {
        assert_eq!(key_of_port("web.default.", "default", "web"), None);
        assert_eq!(key_of_port("webx.default.k", "default", "web"), None);
        assert_eq!(key_of_port("web.other.k", "default", "web"), None);
        assert_eq!(split_ipam_key("default/web"), None);
        assert_eq!(split_ipam_key("default//k"), None);
        assert_eq!(
            split_ipam_key("default/web/a/b"),
            Some(("default", "web", "a/b"))
        );
        assert_eq!(
            AttachmentId::parse_ipam_key("default/web/not-a-provider"),
            None
        );
    }
}
