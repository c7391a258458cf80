//! Validation of a `KubeOvn` object before anything is rendered: every refusal names the
//! field, what is wrong and what to write instead, and becomes the `Degraded` condition
//! (nothing is applied). Also the container image reference grammar (Docker's
//! `reference` package, the part users write: `[registry[:port]/]path[:tag][@digest]`).

use crate::api::kubeovn::{DatapathType, KubeOvn, OvnCentralMode, KUBE_OVN_SINGLETON};
use kube::ResourceExt;

/// Why a `KubeOvn` object is not acted on: a CamelCase reason and a message saying what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub reason: &'static str,
    pub message: String,
}

impl Invalid {
    fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Invalid {
            reason,
            message: message.into(),
        }
    }
}

/// Checks `obj` as the operator would act on it.
pub fn validate(obj: &KubeOvn) -> Result<(), Invalid> {
    let name = obj.name_any();
    if name != KUBE_OVN_SINGLETON {
        return Err(Invalid::new(
            "NotTheSingleton",
            format!(
                "only the KubeOvn named {KUBE_OVN_SINGLETON} is used; {name:?} is ignored: \
                 delete it and put its spec into {KUBE_OVN_SINGLETON}"
            ),
        ));
    }
    let spec = &obj.spec;
    if !spec.non_primary_cni {
        return Err(Invalid::new(
            "PrimaryModeNotSupported",
            "spec.nonPrimaryCNI: false (kube-ovn as the primary CNI) is not supported: \
             kube-ovn only adds secondary interfaces next to the cluster's CNI; set \
             nonPrimaryCNI: true or remove the field",
        ));
    }
    let central = &spec.ovn_central;
    match central.mode {
        OvnCentralMode::External => {
            for (field, value) in [
                ("nbAddress", &central.nb_address),
                ("sbAddress", &central.sb_address),
            ] {
                let Some(value) = value.as_deref().filter(|v| !v.trim().is_empty()) else {
                    return Err(Invalid::new(
                        "ExternalCentralAddressMissing",
                        format!(
                            "spec.ovnCentral.mode External needs spec.ovnCentral.{field} \
                             (e.g. tcp:10.0.0.1:{}): where the existing OVN central listens",
                            if field == "nbAddress" { 6641 } else { 6642 }
                        ),
                    ));
                };
                check_ovsdb_endpoints(field, value)?;
            }
        }
        OvnCentralMode::Embedded => {
            if !matches!(central.replicas, 1 | 3) {
                return Err(Invalid::new(
                    "InvalidCentralReplicas",
                    format!(
                        "spec.ovnCentral.replicas is {}: it must be 1, or 3 for NB and SB as \
                         raft clusters",
                        central.replicas
                    ),
                ));
            }
        }
    }
    if let Some(image) = &spec.image {
        if let Err(why) = check_image_reference(image) {
            return Err(Invalid::new(
                "InvalidImage",
                format!(
                    "spec.image {image:?} is not an image reference ({why}); write e.g. \
                     registry.example.com/kube-ovn:v1.0.0, or remove it to use the operator's image"
                ),
            ));
        }
    }
    if let Some(policy) = &spec.image_pull_policy {
        if !matches!(policy.as_str(), "Always" | "IfNotPresent" | "Never") {
            return Err(Invalid::new(
                "InvalidImagePullPolicy",
                format!("spec.imagePullPolicy {policy:?} must be Always, IfNotPresent or Never"),
            ));
        }
    }
    match (spec.datapath, spec.tunnel_interface.as_deref()) {
        (DatapathType::Netdev, None) => {
            return Err(Invalid::new(
                "TunnelInterfaceRequired",
                "spec.datapath Netdev needs spec.tunnelInterface: the NIC OVS takes over for \
                 Geneve tunnels on every node (each node's address on it goes in its annotation \
                 kube-ovn.io/tunnel-address)",
            ))
        }
        (DatapathType::System, Some(nic)) => {
            return Err(Invalid::new(
                "TunnelInterfaceUnused",
                format!(
                    "spec.tunnelInterface {nic:?} applies to datapath Netdev only; with System the \
                     tunnel endpoint is the node's address: remove it or set datapath: Netdev"
                ),
            ))
        }
        _ => {}
    }
    if let Some(nic) = &spec.tunnel_interface {
        if nic.is_empty() || nic.len() > 15 || nic.contains(['/', ' ']) {
            return Err(Invalid::new(
                "InvalidTunnelInterface",
                format!("spec.tunnelInterface {nic:?} is not an interface name (1 to 15 characters, no '/' or spaces)"),
            ));
        }
    }
    if !is_dns_label(&spec.namespace) {
        return Err(Invalid::new(
            "InvalidNamespace",
            format!(
                "spec.namespace {:?} is not a namespace name (lower-case letters, digits and '-', at most 63)",
                spec.namespace
            ),
        ));
    }
    if let Some(mtu) = spec.mtu {
        if !(576..=9000).contains(&mtu) {
            return Err(Invalid::new(
                "InvalidMtu",
                format!("spec.mtu {mtu} is outside 576..9000"),
            ));
        }
    }
    if !spec.cni_bin_dir.starts_with('/') {
        return Err(Invalid::new(
            "InvalidCniBinDir",
            format!(
                "spec.cniBinDir {:?} must be an absolute path",
                spec.cni_bin_dir
            ),
        ));
    }
    Ok(())
}

/// `tcp:host:port`, `ssl:host:port` or `unix:/path`, comma-separated.
fn check_ovsdb_endpoints(field: &str, value: &str) -> Result<(), Invalid> {
    for endpoint in value.split(',').map(str::trim) {
        let ok = match endpoint.split_once(':') {
            Some(("tcp" | "ssl", rest)) => rest
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok()),
            Some(("unix", path)) => path.starts_with('/'),
            _ => false,
        };
        if !ok {
            return Err(Invalid::new(
                "InvalidCentralAddress",
                format!(
                    "spec.ovnCentral.{field}: {endpoint:?} is not an OVSDB endpoint; write \
                     tcp:HOST:PORT, ssl:HOST:PORT or unix:/PATH (comma-separated for a cluster)"
                ),
            ));
        }
    }
    Ok(())
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Checks a container image reference; `Err` says what is wrong.
pub fn check_image_reference(reference: &str) -> Result<(), String> {
    if reference.is_empty() {
        return Err("empty".into());
    }
    if reference.len() > 255 {
        return Err("longer than 255 characters".into());
    }
    if reference.chars().any(char::is_whitespace) {
        return Err("contains whitespace".into());
    }
    let (name_tag, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (reference, None),
    };
    if let Some(digest) = digest {
        let (algorithm, hex) = digest
            .split_once(':')
            .ok_or("the digest must be ALGORITHM:HEX, e.g. sha256:…")?;
        let hex_ok = hex.len() >= 32 && hex.bytes().all(|b| b.is_ascii_hexdigit());
        let algorithm_ok = !algorithm.is_empty()
            && algorithm
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+._-".contains(&b));
        if !(hex_ok && algorithm_ok) {
            return Err(format!("bad digest {digest:?}"));
        }
    }
    // The tag is after the last ':' that follows the last '/' (a registry port comes before it).
    let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_tag[last_slash..].rfind(':') {
        Some(i) => (
            &name_tag[..last_slash + i],
            Some(&name_tag[last_slash + i + 1..]),
        ),
        None => (name_tag, None),
    };
    if let Some(tag) = tag {
        let valid = !tag.is_empty()
            && tag.len() <= 128
            && !tag.starts_with(['.', '-'])
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !valid {
            return Err(format!("bad tag {tag:?}"));
        }
    }
    let mut components: Vec<&str> = name.split('/').collect();
    // A first component with '.' or ':' or `localhost` is a registry host[:port].
    if components.len() > 1 && (components[0].contains(['.', ':']) || components[0] == "localhost")
    {
        let registry = components.remove(0);
        let (host, port) = match registry.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (registry, None),
        };
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b))
            || port.is_some_and(|p| p.parse::<u16>().is_err())
        {
            return Err(format!("bad registry {registry:?}"));
        }
    }
    for c in components {
        if !is_path_component(c) {
            return Err(format!(
                "bad name component {c:?} (lower-case letters and digits, separated by '.', '_', '__' or '-')"
            ));
        }
    }
    Ok(())
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn is_path_component(c: &str) -> bool {
    let bytes = c.as_bytes();
    if bytes.is_empty() || !is_alnum(bytes[0]) || !is_alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if is_alnum(b) {
            i += 1;
            continue;
        }
        // A separator run: '.', '_', '__' or any number of '-'.
        let start = i;
        while i < bytes.len() && !is_alnum(bytes[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-')) {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::kubeovn::KubeOvnSpec;

    fn kube_ovn(name: &str, spec: KubeOvnSpec) -> KubeOvn {
        KubeOvn::new(name, spec)
    }

    fn reason(name: &str, spec: KubeOvnSpec) -> &'static str {
        validate(&kube_ovn(name, spec)).unwrap_err().reason
    }

    #[test]
    fn the_default_spec_is_valid() {
        assert_eq!(
            validate(&kube_ovn("kube-ovn", KubeOvnSpec::default())),
            Ok(())
        );
    }

    #[test]
    fn every_bad_spec_names_what_to_fix() {
        let d = KubeOvnSpec::default;
        assert_eq!(reason("other", d()), "NotTheSingleton");
        let mut s = d();
        s.non_primary_cni = false;
        assert_eq!(reason("kube-ovn", s), "PrimaryModeNotSupported");
        let mut s = d();
        s.ovn_central.mode = OvnCentralMode::External;
        s.ovn_central.nb_address = Some("tcp:10.0.0.1:6641".into());
        let e = validate(&kube_ovn("kube-ovn", s.clone())).unwrap_err();
        assert_eq!(e.reason, "ExternalCentralAddressMissing");
        assert!(e.message.contains("sbAddress"), "{}", e.message);
        s.ovn_central.sb_address = Some("10.0.0.1:6642".into());
        assert_eq!(reason("kube-ovn", s.clone()), "InvalidCentralAddress");
        s.ovn_central.sb_address = Some("tcp:10.0.0.1:6642,tcp:10.0.0.2:6642".into());
        assert_eq!(validate(&kube_ovn("kube-ovn", s)), Ok(()));
        let mut s = d();
        s.ovn_central.replicas = 2;
        assert_eq!(reason("kube-ovn", s), "InvalidCentralReplicas");
        let mut s = d();
        s.image = Some("Not An Image".into());
        assert_eq!(reason("kube-ovn", s), "InvalidImage");
        let mut s = d();
        s.datapath = DatapathType::Netdev;
        assert_eq!(reason("kube-ovn", s.clone()), "TunnelInterfaceRequired");
        s.tunnel_interface = Some("eth1".into());
        assert_eq!(validate(&kube_ovn("kube-ovn", s)), Ok(()));
        let mut s = d();
        s.tunnel_interface = Some("eth1".into());
        assert_eq!(reason("kube-ovn", s), "TunnelInterfaceUnused");
        let mut s = d();
        s.namespace = "Kube_System".into();
        assert_eq!(reason("kube-ovn", s), "InvalidNamespace");
        let mut s = d();
        s.image_pull_policy = Some("Sometimes".into());
        assert_eq!(reason("kube-ovn", s), "InvalidImagePullPolicy");
        let mut s = d();
        s.mtu = Some(20);
        assert_eq!(reason("kube-ovn", s), "InvalidMtu");
    }

    #[test]
    fn image_references_follow_the_docker_grammar() {
        for good in [
            "kube-ovn",
            "kube-ovn:dev",
            "docker.io/kubeovn/kube-ovn:v1.14.0",
            "localhost:5000/kube-ovn",
            "registry.example.com:443/team/kube-ovn:v0.2.0-rc.1",
            "quay.io/a/b__c/d-e.f:latest",
            "kube-ovn@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "r.io/kube-ovn:v1@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(check_image_reference(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "Kube-OVN",
            "kube ovn",
            "kube-ovn:",
            "kube-ovn:-x",
            "kube-ovn@sha256:xyz",
            "a//b",
            "-a/b",
            "registry:port/x",
            "kube-ovn:v1:v2",
        ] {
            assert!(check_image_reference(bad).is_err(), "{bad:?} accepted");
        }
    }
}
