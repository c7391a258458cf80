//! What a CNI invocation carries, parsed and checked: the network config on stdin and the
//! `CNI_*` environment (with `CNI_ARGS`), each failure mapped to the spec's error code.
//!
//! Pure: callers pass the stdin bytes and an environment lookup. The shim's only I/O is in
//! `plugin.rs`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::Deserialize;

use super::error::{CniError, ErrorCode};
use super::protocol::CniRequest;
use super::version;
use crate::api::mac::MacAddr;
use crate::api::mac::MacParseError;

/// The provider a NAD config without `provider` gets (Kube-OVN's default).
pub const DEFAULT_PROVIDER: &str = "ovn";

/// Our plugin's `type`, as a main plugin or as another plugin's `ipam`.
pub const PLUGIN_TYPE: &str = "kube-ovn";

/// A CNI command (`CNI_COMMAND`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    pub fn parse(s: &str) -> Result<Self, CniError> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            other => {
                return Err(CniError::new(
                    ErrorCode::InvalidEnvironment,
                    format!("unknown CNI_COMMAND {other:?}"),
                ))
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Gc => "GC",
            Command::Version => "VERSION",
        }
    }

    /// The oldest config version that allows this command (libcni skel's gates).
    fn min_version(self) -> (u32, u32, u32) {
        match self {
            Command::Check => (0, 4, 0),
            Command::Status | Command::Gc => (1, 1, 0),
            _ => (0, 0, 0),
        }
    }
}

/// The network config on stdin (a NAD's `spec.config`, as Multus passes it).
#[derive(Clone, Debug, PartialEq)]
pub struct NetConf {
    pub cni_version: String,
    pub name: Option<String>,
    pub plugin_type: String,
    pub server_socket: PathBuf,
    pub provider: String,
    /// Called as another plugin's IPAM (`"ipam": {"type": "kube-ovn", …}` under e.g. a
    /// macvlan config): ADD answers the pod's allocated addresses and routes for `provider`
    /// and builds no interface; `server_socket` and `provider` come from the `ipam` section.
    pub ipam: bool,
    pub capabilities: BTreeMap<String, bool>,
    pub runtime_config: RuntimeConfig,
    pub prev_result: Option<serde_json::Value>,
    /// The whole document, passed on to the daemon.
    pub raw: serde_json::Value,
}

/// `runtimeConfig` keys we read (libcni injects them only for declared capabilities).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct RuntimeConfig {
    #[serde(default)]
    pub ips: Vec<String>,
    #[serde(default)]
    pub mac: Option<String>,
}

#[derive(Deserialize)]
struct RawNetConf {
    #[serde(rename = "cniVersion", default)]
    cni_version: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(rename = "type", default)]
    plugin_type: Option<String>,
    #[serde(default)]
    server_socket: Option<String>,
    #[serde(default)]
    provider: Option<String>,
    #[serde(default)]
    capabilities: BTreeMap<String, bool>,
    #[serde(rename = "runtimeConfig", default)]
    runtime_config: Option<RuntimeConfig>,
    #[serde(rename = "prevResult", default)]
    prev_result: Option<serde_json::Value>,
    #[serde(default)]
    ipam: Option<RawIpam>,
}

/// The `ipam` section, when it names our plugin.
#[derive(Deserialize)]
struct RawIpam {
    #[serde(rename = "type", default)]
    ipam_type: Option<String>,
    #[serde(default)]
    server_socket: Option<String>,
    #[serde(default)]
    provider: Option<String>,
}

/// Parses and checks the stdin config for `command`.
pub fn parse_netconf(stdin: &[u8], command: Command) -> Result<NetConf, CniError> {
    let raw: serde_json::Value = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(ErrorCode::Decode, "network config on stdin is not JSON")
            .with_details(e.to_string())
    })?;
    let conf: RawNetConf = serde_json::from_value(raw.clone()).map_err(|e| {
        CniError::new(
            ErrorCode::Decode,
            "network config on stdin has a malformed field",
        )
        .with_details(e.to_string())
    })?;
    let cni_version = check_version(conf.cni_version.as_deref(), command)?;
    let invalid = |msg: &str| {
        Err(CniError::new(ErrorCode::InvalidNetworkConfig, msg).in_version(&cni_version))
    };
    let plugin_type = match conf.plugin_type {
        Some(t) if !t.is_empty() => t,
        _ => return invalid("network config lacks \"type\""),
    };
    // As another plugin's IPAM, our settings live in its `ipam` section.
    let ipam = plugin_type != PLUGIN_TYPE
        && conf.ipam.as_ref().and_then(|i| i.ipam_type.as_deref()) == Some(PLUGIN_TYPE);
    let (server_socket, provider) = match (ipam, conf.ipam) {
        (true, Some(i)) => (
            i.server_socket.or(conf.server_socket),
            i.provider.or(conf.provider),
        ),
        _ => (conf.server_socket, conf.provider),
    };
    let server_socket = match server_socket {
        Some(s) if !s.is_empty() => PathBuf::from(s),
        _ => return invalid("network config lacks \"server_socket\" (the node daemon's unix socket, e.g. /run/openvswitch/kube-ovn-daemon.sock)"),
    };
    let adding = matches!(command, Command::Add | Command::Check);
    let provider = match provider {
        // Kube-OVN's primary network: nothing allocates for it in secondary mode.
        Some(p) if p.trim() == DEFAULT_PROVIDER && adding => {
            return invalid(&primary_provider(conf.name.as_deref(), ipam))
        }
        Some(p) if !p.trim().is_empty() => p,
        // DEL must still succeed, so a pod on a broken NAD can go.
        _ if adding => return invalid(&missing_provider(conf.name.as_deref(), ipam)),
        _ => DEFAULT_PROVIDER.to_string(),
    };
    let runtime_config = conf.runtime_config.unwrap_or_default();
    for ip in &runtime_config.ips {
        if !is_ip_or_cidr(ip) {
            return invalid(&format!(
                "runtimeConfig ips: {ip:?} is neither an IP nor a CIDR"
            ));
        }
    }
    if let Some(mac) = &runtime_config.mac {
        if let Err(e) = mac.parse::<MacAddr>() {
            return invalid(&format!("runtimeConfig mac: {e}"));
        }
    }
    Ok(NetConf {
        cni_version,
        name: conf.name,
        plugin_type,
        server_socket,
        provider,
        ipam,
        capabilities: conf.capabilities,
        runtime_config,
        prev_result: conf.prev_result,
        raw,
    })
}

/// What ADD answers for a config without `provider`, at once: the controller allocates per
/// provider and never for Kube-OVN's default `ovn` (the primary network) here, so waiting for
/// an allocation would only time out.
fn missing_provider(name: Option<&str>, ipam: bool) -> String {
    let nad = name.filter(|n| !n.is_empty()).unwrap_or("<nad name>");
    let (section, form) = if ipam {
        ("its \"ipam\" section", format!("{nad}.<nad namespace>"))
    } else {
        ("the config", format!("{nad}.<nad namespace>.ovn"))
    };
    format!(
        "network config {nad:?} has no \"provider\", so kube-ovn never allocates an address for \
         it; add \"provider\": \"{form}\" to {section} in the NetworkAttachmentDefinition's \
         spec.config"
    )
}

/// What ADD answers for `"provider": "ovn"`, at once: that is Kube-OVN's primary network,
/// which secondary mode never allocates for.
fn primary_provider(name: Option<&str>, ipam: bool) -> String {
    let advice = missing_provider(name, ipam);
    let fix = advice
        .split_once("; ")
        .map_or(advice.as_str(), |(_, fix)| fix);
    let nad = name.filter(|n| !n.is_empty()).unwrap_or("<nad name>");
    format!(
        "network config {nad:?} names provider \"ovn\", Kube-OVN's primary network, which \
         kube-ovn does not run (secondary mode only), so no address would ever come; {fix}"
    )
}

/// The config's `cniVersion`, if supported and new enough for `command`; else code 1.
fn check_version(requested: Option<&str>, command: Command) -> Result<String, CniError> {
    let supported = version::SUPPORTED.join(", ");
    let Some(v) = requested.filter(|v| !v.is_empty()) else {
        return Err(CniError::new(
            ErrorCode::IncompatibleVersion,
            format!("network config lacks \"cniVersion\" (supported: {supported})"),
        ));
    };
    if !version::is_supported(v) {
        return Err(CniError::new(
            ErrorCode::IncompatibleVersion,
            format!("cniVersion {v:?} is not supported (supported: {supported})"),
        ));
    }
    let (maj, min, patch) = command.min_version();
    if parse_semver(v) < Some((maj, min, patch)) {
        return Err(CniError::new(
            ErrorCode::IncompatibleVersion,
            format!(
                "config version {v} does not allow {} (needs {maj}.{min}.{patch} or later)",
                command.name()
            ),
        )
        .in_version(v));
    }
    Ok(v.to_string())
}

fn parse_semver(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
    Some((it.next()??, it.next()??, it.next()??))
}

fn is_ip_or_cidr(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok() || s.parse::<IpNet>().is_ok()
}

/// `CNI_ARGS`, the keys we know (`K8S_POD_*`, `IP`, `MAC`); others are ignored under `IgnoreUnknown`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CniArgs {
    pub pod_namespace: Option<String>,
    pub pod_name: Option<String>,
    pub pod_infra_container_id: Option<String>,
    pub pod_uid: Option<String>,
    pub ips: Vec<String>,
    pub mac: Option<MacAddr>,
}

/// Parses `CNI_ARGS` (`K1=v1;K2=v2`) as libcni does: each pair must have one `=`; an unknown key
/// fails unless `IgnoreUnknown` is `1`/`true` (case-insensitive; `0`/`false` keep it strict).
pub fn parse_cni_args(s: &str) -> Result<CniArgs, CniError> {
    let bad = |msg: String| Err(CniError::new(ErrorCode::InvalidEnvironment, msg));
    let mut pairs = Vec::new();
    for pair in s.split(';').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((k, v)) if !v.contains('=') => pairs.push((k, v)),
            _ => return bad(format!("CNI_ARGS: invalid pair {pair:?} (want KEY=VALUE)")),
        }
    }
    let mut ignore_unknown = false;
    for (k, v) in &pairs {
        if *k == "IgnoreUnknown" {
            ignore_unknown = match v.to_ascii_lowercase().as_str() {
                "1" | "true" => true,
                "0" | "false" => false,
                _ => {
                    return bad(format!(
                        "CNI_ARGS: IgnoreUnknown={v:?} is not 1, true, 0 or false"
                    ))
                }
            };
        }
    }
    let mut args = CniArgs::default();
    for (k, v) in pairs {
        match k {
            "IgnoreUnknown" => {}
            "K8S_POD_NAMESPACE" => args.pod_namespace = Some(v.to_string()),
            "K8S_POD_NAME" => args.pod_name = Some(v.to_string()),
            "K8S_POD_INFRA_CONTAINER_ID" => args.pod_infra_container_id = Some(v.to_string()),
            "K8S_POD_UID" => args.pod_uid = Some(v.to_string()),
            "IP" => {
                for ip in v.split(',').filter(|ip| !ip.is_empty()) {
                    if !is_ip_or_cidr(ip) {
                        return bad(format!("CNI_ARGS: IP {ip:?} is neither an IP nor a CIDR"));
                    }
                    args.ips.push(ip.to_string());
                }
            }
            "MAC" => match v.parse() {
                Ok(mac) => args.mac = Some(mac),
                Err(e) => return bad(format!("CNI_ARGS: {e}")),
            },
            unknown if !ignore_unknown => {
                return bad(format!(
                    "CNI_ARGS: unknown key {unknown:?} (and no IgnoreUnknown=1)"
                ))
            }
            _ => {}
        }
    }
    Ok(args)
}

/// Checks a CNI_IFNAME against the spec's rules (< 16 bytes, not `.`/`..`, no `/`, `:` or space).
pub fn check_ifname(name: &str) -> Result<(), CniError> {
    let bad = if name.is_empty() {
        Some("is empty")
    } else if name.len() > 15 {
        Some("is longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("is . or ..")
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        Some("contains '/', ':' or whitespace")
    } else {
        None
    };
    match bad {
        Some(why) => Err(CniError::new(
            ErrorCode::InvalidEnvironment,
            format!("CNI_IFNAME {name:?} {why}"),
        )),
        None => Ok(()),
    }
}

/// Builds the daemon request for ADD, DEL or CHECK from the config and the environment.
///
/// ADD and CHECK need `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME` and `K8S_POD_NAMESPACE`/`K8S_POD_NAME`;
/// DEL needs only `CNI_CONTAINERID` and `CNI_IFNAME`, so that a runtime's DEL always has a chance to succeed.
pub fn build_request(
    command: Command,
    conf: &NetConf,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<CniRequest, CniError> {
    let get = |k: &str| env(k).filter(|v| !v.is_empty());
    let needs_pod = command != Command::Del;
    let mut missing = Vec::new();
    let container_id = get("CNI_CONTAINERID");
    let netns = get("CNI_NETNS");
    let ifname = get("CNI_IFNAME");
    if container_id.is_none() {
        missing.push("CNI_CONTAINERID");
    }
    if netns.is_none() && needs_pod {
        missing.push("CNI_NETNS");
    }
    if ifname.is_none() {
        missing.push("CNI_IFNAME");
    }
    let args = parse_cni_args(&get("CNI_ARGS").unwrap_or_default())
        .map_err(|e| e.in_version(&conf.cni_version))?;
    if needs_pod {
        if args.pod_namespace.as_deref().unwrap_or("").is_empty() {
            missing.push("K8S_POD_NAMESPACE (in CNI_ARGS)");
        }
        if args.pod_name.as_deref().unwrap_or("").is_empty() {
            missing.push("K8S_POD_NAME (in CNI_ARGS)");
        }
    }
    if !missing.is_empty() {
        return Err(CniError::new(
            ErrorCode::InvalidEnvironment,
            format!(
                "{} needs {} but it is missing",
                command.name(),
                missing.join(", ")
            ),
        )
        .in_version(&conf.cni_version));
    }
    let ifname = ifname.unwrap_or_default();
    check_ifname(&ifname).map_err(|e| e.in_version(&conf.cni_version))?;
    let (ips, mac) = if conf.runtime_config.ips.is_empty() && conf.runtime_config.mac.is_none() {
        (args.ips, args.mac)
    } else {
        let mac = match &conf.runtime_config.mac {
            Some(m) => Some(m.parse().map_err(|e: MacParseError| {
                CniError::new(ErrorCode::InvalidNetworkConfig, e.to_string())
                    .in_version(&conf.cni_version)
            })?),
            None => args.mac,
        };
        let ips = if conf.runtime_config.ips.is_empty() {
            args.ips
        } else {
            conf.runtime_config.ips.clone()
        };
        (ips, mac)
    };
    Ok(CniRequest {
        container_id: container_id.unwrap_or_default(),
        netns: netns.unwrap_or_default(),
        ifname,
        pod_namespace: args.pod_namespace.unwrap_or_default(),
        pod_name: args.pod_name.unwrap_or_default(),
        pod_uid: args.pod_uid.unwrap_or_default(),
        provider: conf.provider.clone(),
        cni_version: conf.cni_version.clone(),
        ips,
        mac,
        config: conf.raw.clone(),
        prev_result: conf.prev_result.clone(),
        ipam_only: conf.ipam,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MULTUS_ARGS: &str = "IgnoreUnknown=true;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1";

    fn conf(json: &str) -> Result<NetConf, CniError> {
        parse_netconf(json.as_bytes(), Command::Add)
    }

    fn seed_conf() -> NetConf {
        conf(r#"{"cniVersion":"0.3.1","type":"kube-ovn","server_socket":"/run/openvswitch/kube-ovn-daemon.sock","provider":"attachnet.default.ovn"}"#)
            .expect("seed config")
    }

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn seed_nad_config_parses_with_name_filled_or_not() {
        let c = seed_conf();
        assert_eq!(c.cni_version, "0.3.1");
        assert_eq!(c.name, None);
        assert_eq!(c.plugin_type, "kube-ovn");
        assert_eq!(
            c.server_socket,
            PathBuf::from("/run/openvswitch/kube-ovn-daemon.sock")
        );
        assert_eq!(c.provider, "attachnet.default.ovn");
        let c = conf(
            r#"{"cniVersion":"1.1.0","name":"attachnet","type":"kube-ovn","server_socket":"/s","provider":"attachnet.default.ovn"}"#,
        )
        .expect("conf");
        assert_eq!(c.name.as_deref(), Some("attachnet"));
    }

    #[test]
    fn add_without_provider_is_refused_at_once_and_del_still_works() {
        let no_provider =
            r#"{"cniVersion":"0.3.1","name":"attachnet","type":"kube-ovn","server_socket":"/s"}"#;
        for command in [Command::Add, Command::Check] {
            let stdin = no_provider.replace("0.3.1", "0.4.0");
            let e = parse_netconf(stdin.as_bytes(), command).expect_err("no provider");
            assert_eq!(e.code, ErrorCode::InvalidNetworkConfig as u32);
            assert_eq!(
                e.msg,
                "network config \"attachnet\" has no \"provider\", so kube-ovn never allocates an address for it; add \"provider\": \"attachnet.<nad namespace>.ovn\" to the config in the NetworkAttachmentDefinition's spec.config"
            );
        }
        let e = conf(
            r#"{"cniVersion":"0.3.1","name":"attachnet","type":"kube-ovn","server_socket":"/s","provider":"ovn"}"#,
        )
        .expect_err("the primary network's provider");
        assert_eq!(
            e.msg,
            "network config \"attachnet\" names provider \"ovn\", Kube-OVN's primary network, which kube-ovn does not run (secondary mode only), so no address would ever come; add \"provider\": \"attachnet.<nad namespace>.ovn\" to the config in the NetworkAttachmentDefinition's spec.config"
        );
        let e =
            conf(r#"{"cniVersion":"0.3.1","type":"kube-ovn","server_socket":"/s","provider":""}"#)
                .expect_err("empty provider");
        assert!(
            e.msg.contains(r#""<nad name>.<nad namespace>.ovn""#),
            "{}",
            e.msg
        );
        let e = conf(r#"{"cniVersion":"0.3.1","name":"ext","type":"macvlan","ipam":{"type":"kube-ovn","server_socket":"/s"}}"#)
            .expect_err("IPAM without provider");
        assert!(
            e.msg
                .contains(r#"add "provider": "ext.<nad namespace>" to its "ipam" section"#),
            "{}",
            e.msg
        );
        let c = parse_netconf(no_provider.as_bytes(), Command::Del).expect("DEL parses");
        assert_eq!(c.provider, DEFAULT_PROVIDER);
    }

    #[test]
    fn bad_json_is_a_decode_error() {
        let e = conf("{not json").expect_err("bad json");
        assert_eq!(e.code, ErrorCode::Decode as u32);
        let e = conf(r#"{"cniVersion":"1.0.0","type":"kube-ovn","server_socket":7}"#)
            .expect_err("bad field");
        assert_eq!(e.code, ErrorCode::Decode as u32);
    }

    #[test]
    fn unknown_or_missing_cni_version_is_incompatible() {
        let e = conf(r#"{"cniVersion":"0.2.0","type":"kube-ovn","server_socket":"/s"}"#)
            .expect_err("0.2.0");
        assert_eq!(e.code, ErrorCode::IncompatibleVersion as u32);
        assert!(
            e.msg.contains("0.2.0") && e.msg.contains("1.1.0"),
            "{}",
            e.msg
        );
        let e = conf(r#"{"type":"kube-ovn","server_socket":"/s"}"#).expect_err("none");
        assert_eq!(e.code, ErrorCode::IncompatibleVersion as u32);
        assert!(e.msg.contains("cniVersion"));
    }

    #[test]
    fn as_another_plugins_ipam_the_socket_and_provider_come_from_its_ipam_section() {
        let c = conf(r#"{"cniVersion":"0.3.1","name":"ovn-vpc-external-network","type":"macvlan","master":"eth1","mode":"bridge","ipam":{"type":"kube-ovn","server_socket":"/run/k.sock","provider":"ovn-vpc-external-network.kube-system"}}"#)
            .expect("conf");
        assert!(c.ipam);
        assert_eq!(c.plugin_type, "macvlan");
        assert_eq!(c.server_socket, PathBuf::from("/run/k.sock"));
        assert_eq!(c.provider, "ovn-vpc-external-network.kube-system");
        let env = env_of(&[
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/var/run/netns/p1"),
            ("CNI_IFNAME", "net2"),
            ("CNI_ARGS", MULTUS_ARGS),
        ]);
        let req = build_request(Command::Add, &c, &env).expect("request");
        assert!(req.ipam_only);
        assert_eq!(req.provider, "ovn-vpc-external-network.kube-system");

        // Our own plugin with some other IPAM section is a main plugin as always.
        let c = conf(r#"{"cniVersion":"0.3.1","type":"kube-ovn","server_socket":"/s","provider":"n.default.ovn","ipam":{"type":"host-local"}}"#)
            .expect("conf");
        assert!(!c.ipam);
        assert!(
            !build_request(Command::Add, &c, &env)
                .expect("request")
                .ipam_only
        );

        // An IPAM section without the daemon's socket says so.
        let e = conf(r#"{"cniVersion":"0.3.1","type":"macvlan","ipam":{"type":"kube-ovn"}}"#)
            .expect_err("no socket");
        assert_eq!(e.code, ErrorCode::InvalidNetworkConfig as u32);
        assert!(e.msg.contains("server_socket"), "{}", e.msg);
    }

    #[test]
    fn missing_server_socket_or_type_is_invalid_config() {
        let e = conf(r#"{"cniVersion":"1.0.0","type":"kube-ovn"}"#).expect_err("no socket");
        assert_eq!(e.code, ErrorCode::InvalidNetworkConfig as u32);
        assert!(e.msg.contains("server_socket"));
        assert_eq!(e.cni_version, "1.0.0");
        let e = conf(r#"{"cniVersion":"1.0.0","type":"kube-ovn","server_socket":""}"#)
            .expect_err("empty");
        assert_eq!(e.code, ErrorCode::InvalidNetworkConfig as u32);
        let e = conf(r#"{"cniVersion":"1.0.0","server_socket":"/s"}"#).expect_err("no type");
        assert_eq!(e.code, ErrorCode::InvalidNetworkConfig as u32);
        assert!(e.msg.contains("type"));
    }

    #[test]
    fn bad_runtime_config_is_invalid_config() {
        let e = conf(r#"{"cniVersion":"1.0.0","type":"kube-ovn","server_socket":"/s","provider":"n.default.ovn","runtimeConfig":{"ips":["10.0.0.300"]}}"#).expect_err("ip");
        assert_eq!(e.code, ErrorCode::InvalidNetworkConfig as u32);
        assert!(e.msg.contains("10.0.0.300"));
        let e = conf(r#"{"cniVersion":"1.0.0","type":"kube-ovn","server_socket":"/s","provider":"n.default.ovn","runtimeConfig":{"mac":"zz"}}"#).expect_err("mac");
        assert_eq!(e.code, ErrorCode::InvalidNetworkConfig as u32);
    }

    #[test]
    fn version_gates_follow_skel() {
        let check = |v: &str, cmd| {
            parse_netconf(
                format!(r#"{{"cniVersion":"{v}","type":"kube-ovn","server_socket":"/s","provider":"n.default.ovn"}}"#)
                    .as_bytes(),
                cmd,
            )
        };
        for v in ["0.3.0", "0.3.1"] {
            let e = check(v, Command::Check).expect_err("CHECK before 0.4.0");
            assert_eq!(e.code, ErrorCode::IncompatibleVersion as u32);
            assert!(e.msg.contains("CHECK"));
        }
        assert!(check("0.4.0", Command::Check).is_ok());
        for cmd in [Command::Status, Command::Gc] {
            for v in ["0.3.1", "0.4.0", "1.0.0"] {
                let e = check(v, cmd).expect_err("STATUS/GC before 1.1.0");
                assert_eq!(e.code, ErrorCode::IncompatibleVersion as u32, "{v} {cmd:?}");
                assert_eq!(e.cni_version, v);
            }
            assert!(check("1.1.0", cmd).is_ok());
        }
    }

    #[test]
    fn cni_args_as_multus_and_kubelet_send_them() {
        let a = parse_cni_args(MULTUS_ARGS).expect("multus args");
        assert_eq!(a.pod_namespace.as_deref(), Some("default"));
        assert_eq!(a.pod_name.as_deref(), Some("web-0"));
        assert_eq!(a.pod_infra_container_id.as_deref(), Some("abc"));
        assert_eq!(a.pod_uid.as_deref(), Some("u-1"));
        let a = parse_cni_args(
            "IgnoreUnknown=1;K8S_POD_NAME=p;FOO=bar;IP=10.1.0.5/24,fd00::5;MAC=0a:58:00:00:00:01",
        )
        .expect("kubelet form");
        assert_eq!(a.ips, vec!["10.1.0.5/24", "fd00::5"]);
        assert_eq!(
            a.mac.map(|m| m.to_string()).as_deref(),
            Some("0a:58:00:00:00:01")
        );
        assert_eq!(parse_cni_args("").expect("empty"), CniArgs::default());
    }

    #[test]
    fn cni_args_unknown_keys_fail_without_ignore_unknown() {
        for s in [
            "FOO=bar",
            "IgnoreUnknown=0;FOO=bar",
            "IgnoreUnknown=false;FOO=bar",
        ] {
            let e = parse_cni_args(s).expect_err(s);
            assert_eq!(e.code, ErrorCode::InvalidEnvironment as u32);
            assert!(e.msg.contains("FOO"), "{}", e.msg);
        }
        assert!(parse_cni_args("FOO=bar;IgnoreUnknown=TRUE").is_ok());
        for s in [
            "K8S_POD_NAME",
            "A=b=c",
            "IgnoreUnknown=yes",
            "IP=10.0.0.256",
            "MAC=0a:58",
        ] {
            let e = parse_cni_args(s).expect_err(s);
            assert_eq!(e.code, ErrorCode::InvalidEnvironment as u32, "{s}");
        }
    }

    #[test]
    fn ifname_rules() {
        assert!(check_ifname("net1").is_ok());
        assert!(check_ifname("abcdefghijklmno").is_ok());
        for bad in ["", ".", "..", "abcdefghijklmnop", "a/b", "a:b", "a b"] {
            assert_eq!(
                check_ifname(bad).expect_err(bad).code,
                ErrorCode::InvalidEnvironment as u32
            );
        }
    }

    #[test]
    fn add_request_from_env_and_config() {
        static ENV: &[(&str, &str)] = &[
            ("CNI_CONTAINERID", "cid1"),
            ("CNI_NETNS", "/var/run/netns/p1"),
            ("CNI_IFNAME", "net1"),
            ("CNI_ARGS", "IgnoreUnknown=true;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_UID=u-1;IP=10.1.0.9;MAC=0a:00:00:00:00:09"),
        ];
        let req = build_request(Command::Add, &seed_conf(), &env_of(ENV)).expect("request");
        assert_eq!(req.container_id, "cid1");
        assert_eq!(req.netns, "/var/run/netns/p1");
        assert_eq!(
            (
                req.pod_namespace.as_str(),
                req.pod_name.as_str(),
                req.pod_uid.as_str()
            ),
            ("default", "web-0", "u-1")
        );
        assert_eq!(req.provider, "attachnet.default.ovn");
        assert_eq!(req.cni_version, "0.3.1");
        assert_eq!(req.ips, vec!["10.1.0.9"]);
        assert_eq!(
            req.mac.map(|m| m.to_string()).as_deref(),
            Some("0a:00:00:00:00:09")
        );
        assert_eq!(
            req.config["server_socket"],
            "/run/openvswitch/kube-ovn-daemon.sock"
        );
    }

    #[test]
    fn runtime_config_wins_over_cni_args() {
        static ENV: &[(&str, &str)] = &[
            ("CNI_CONTAINERID", "cid1"),
            ("CNI_NETNS", "/n"),
            ("CNI_IFNAME", "net1"),
            (
                "CNI_ARGS",
                "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;IP=10.1.0.9;MAC=0a:00:00:00:00:09",
            ),
        ];
        let c = conf(r#"{"cniVersion":"1.0.0","type":"kube-ovn","server_socket":"/s","provider":"n.default.ovn","capabilities":{"ips":true,"mac":true},"runtimeConfig":{"ips":["10.1.0.7/24"],"mac":"0a:00:00:00:00:07"}}"#).expect("conf");
        assert_eq!(c.capabilities.get("ips"), Some(&true));
        let req = build_request(Command::Add, &c, &env_of(ENV)).expect("request");
        assert_eq!(req.ips, vec!["10.1.0.7/24"]);
        assert_eq!(
            req.mac.map(|m| m.to_string()).as_deref(),
            Some("0a:00:00:00:00:07")
        );
    }

    #[test]
    fn missing_env_is_invalid_environment_naming_each_variable() {
        static NO_POD: &[(&str, &str)] = &[
            ("CNI_CONTAINERID", "cid1"),
            ("CNI_NETNS", "/n"),
            ("CNI_IFNAME", "net1"),
            ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_UID=u"),
        ];
        for cmd in [Command::Add, Command::Check] {
            let e = build_request(cmd, &seed_conf(), &env_of(NO_POD)).expect_err("no pod");
            assert_eq!(e.code, ErrorCode::InvalidEnvironment as u32);
            assert!(
                e.msg.contains("K8S_POD_NAMESPACE") && e.msg.contains("K8S_POD_NAME"),
                "{}",
                e.msg
            );
            assert_eq!(e.cni_version, "0.3.1");
        }
        static NOTHING: &[(&str, &str)] = &[];
        let e = build_request(Command::Add, &seed_conf(), &env_of(NOTHING)).expect_err("no env");
        for var in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"] {
            assert!(e.msg.contains(var), "{}", e.msg);
        }
    }

    #[test]
    fn del_needs_only_container_and_ifname() {
        static ENV: &[(&str, &str)] = &[("CNI_CONTAINERID", "cid1"), ("CNI_IFNAME", "net1")];
        let req = build_request(Command::Del, &seed_conf(), &env_of(ENV)).expect("DEL request");
        assert_eq!(req.netns, "");
        assert_eq!(req.pod_name, "");
        static NO_CID: &[(&str, &str)] = &[("CNI_IFNAME", "net1")];
        let e = build_request(Command::Del, &seed_conf(), &env_of(NO_CID)).expect_err("no cid");
        assert_eq!(e.code, ErrorCode::InvalidEnvironment as u32);
        assert!(e.msg.contains("CNI_CONTAINERID"));
    }
}
