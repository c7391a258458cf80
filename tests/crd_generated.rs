//! The committed CRDs (`crds/kube-ovn.yaml`) are what `kube-ovn crd` prints, their
//! schemas are structural, Kube-OVN's names hold, and the seed's manifests pass a
//! structural-schema check (types, required fields, nothing silently pruned).

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
use kube_ovn::api::{crds, crds_yaml};

const CRDS_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/kube-ovn.yaml");
const REGENERATE: &str = "regenerate with: cargo run -q -- crd > crds/kube-ovn.yaml";

#[test]
fn committed_crds_are_current() {
    let committed = std::fs::read_to_string(CRDS_FILE)
        .unwrap_or_else(|e| panic!("{CRDS_FILE}: {e}; {REGENERATE}"));
    let generated = crds_yaml().expect("CRDs serialize");
    assert!(
        committed == generated,
        "crds/kube-ovn.yaml is stale (the CRD types changed); {REGENERATE}"
    );
}

#[test]
fn the_crd_command_prints_the_same_yaml() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kube-ovn"))
        .arg("crd")
        .output()
        .expect("run kube-ovn crd");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), crds_yaml().unwrap());
}

fn crd(name: &str) -> CustomResourceDefinition {
    crds()
        .into_iter()
        .find(|c| c.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no CRD {name}"))
}

#[test]
fn names_scopes_and_short_names_are_kube_ovns() {
    let expected = [
        ("vpcs.kubeovn.io", "Vpc", "vpc"),
        ("subnets.kubeovn.io", "Subnet", "subnet"),
        ("ips.kubeovn.io", "IP", "ip"),
        ("ippools.kubeovn.io", "IPPool", "ippool"),
        ("security-groups.kubeovn.io", "SecurityGroup", "sg"),
        ("vpc-nat-gateways.kubeovn.io", "VpcNatGateway", "vpc-nat-gw"),
        ("iptables-eips.kubeovn.io", "IptablesEIP", "eip"),
        ("iptables-fip-rules.kubeovn.io", "IptablesFIPRule", "fip"),
        ("iptables-dnat-rules.kubeovn.io", "IptablesDnatRule", "dnat"),
        ("iptables-snat-rules.kubeovn.io", "IptablesSnatRule", "snat"),
        ("kubeovns.operator.kubeovn.io", "KubeOvn", "kovn"),
    ];
    assert_eq!(crds().len(), expected.len());
    for (name, kind, short) in expected {
        let crd = crd(name);
        assert_eq!(crd.spec.names.kind, kind, "{name}");
        assert_eq!(crd.spec.scope, "Cluster", "{name}");
        assert_eq!(
            crd.spec.names.short_names.as_deref(),
            Some(&[short.to_owned()][..]),
            "{name}"
        );
        let version = &crd.spec.versions[0];
        let expected_version = if kind == "KubeOvn" { "v1alpha1" } else { "v1" };
        assert_eq!(version.name, expected_version, "{name}");
        // IP has no status in Kube-OVN either; everything else has the subresource.
        assert_eq!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            kind != "IP",
            "{name}: status subresource"
        );
    }
}

#[test]
fn subnet_printer_columns_show_provider_vpc_cidr_and_usage() {
    let subnet = crd("subnets.kubeovn.io");
    let columns: Vec<_> = subnet.spec.versions[0]
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| (c.name.as_str(), c.json_path.as_str()))
        .collect();
    for wanted in [
        ("Provider", ".spec.provider"),
        ("Vpc", ".spec.vpc"),
        ("CIDR", ".status.cidrBlock"),
        ("V4Used", ".status.v4usingIPs"),
        ("V4Available", ".status.v4availableIPs"),
    ] {
        assert!(
            columns.contains(&wanted),
            "{wanted:?} missing from {columns:?}"
        );
    }
}

/// Kubernetes' structural-schema rules, the ones a generator can break: every
/// node has a type (or preserves unknown fields), no `$ref`, and `anyOf`/`oneOf`/
/// `allOf` carry no types or structure of their own.
fn assert_structural(path: &str, schema: &JSONSchemaProps) {
    assert!(schema.ref_path.is_none(), "{path}: $ref");
    let preserves = schema.x_kubernetes_preserve_unknown_fields == Some(true);
    let int_or_string = schema.x_kubernetes_int_or_string == Some(true);
    assert!(
        schema.type_.is_some() || preserves || int_or_string,
        "{path}: no type"
    );
    for combinator in [&schema.any_of, &schema.one_of, &schema.all_of]
        .into_iter()
        .flatten()
    {
        for branch in combinator {
            assert!(
                branch.type_.is_none(),
                "{path}: typed branch in anyOf/oneOf/allOf"
            );
        }
    }
    for (name, property) in schema.properties.iter().flatten() {
        assert_structural(&format!("{path}.{name}"), property);
    }
    if let Some(items) = &schema.items {
        let k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray::Schema(items) = items else {
            panic!("{path}: items is a list");
        };
        assert_structural(&format!("{path}[]"), items);
    }
    if let Some(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrBool::Schema(values)) =
        &schema.additional_properties
    {
        assert!(schema.properties.is_none(), "{path}: properties and additionalProperties");
        assert_structural(&format!("{path}{{}}"), values);
    }
}

fn root_schema(crd: &CustomResourceDefinition) -> &JSONSchemaProps {
    crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("CRD has a schema")
}

#[test]
fn every_schema_is_structural() {
    for crd in crds() {
        let name = crd.metadata.name.clone().unwrap();
        assert_structural(&name, root_schema(&crd));
    }
}

/// What an API server with a structural schema does to an object: type errors and
/// missing required fields fail; unknown fields would be pruned (reported here).
fn validate(
    path: &str,
    schema: &JSONSchemaProps,
    value: &serde_json::Value,
    errors: &mut Vec<String>,
) {
    use serde_json::Value;
    if value.is_null() {
        if schema.nullable != Some(true) {
            errors.push(format!("{path}: null"));
        }
        return;
    }
    if schema.x_kubernetes_preserve_unknown_fields == Some(true) && schema.properties.is_none() {
        return;
    }
    let type_ok = match schema.type_.as_deref() {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        _ => true,
    };
    if !type_ok {
        errors.push(format!("{path}: {value} is not {:?}", schema.type_));
        return;
    }
    if let Some(values) = &schema.enum_ {
        if !values.iter().any(|v| v.0 == *value) {
            errors.push(format!("{path}: {value} not in enum"));
        }
    }
    match value {
        Value::Object(map) => {
            for required in schema.required.iter().flatten() {
                if !map.contains_key(required) {
                    errors.push(format!("{path}.{required}: required"));
                }
            }
            let properties: BTreeMap<_, _> = schema.properties.clone().unwrap_or_default();
            for (key, child) in map {
                let child_path = format!("{path}.{key}");
                match properties.get(key) {
                    Some(child_schema) => validate(&child_path, child_schema, child, errors),
                    None if path.is_empty() && ["apiVersion", "kind", "metadata"].contains(&key.as_str()) => {}
                    None => match &schema.additional_properties {
                        Some(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrBool::Schema(s)) => {
                            validate(&child_path, s, child, errors)
                        }
                        _ if schema.x_kubernetes_preserve_unknown_fields == Some(true) => {}
                        _ => errors.push(format!("{child_path}: unknown field (would be pruned)")),
                    },
                }
            }
        }
        Value::Array(items) => {
            if let Some(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray::Schema(item_schema)) = &schema.items {
                for (i, item) in items.iter().enumerate() {
                    validate(&format!("{path}[{i}]"), item_schema, item, errors);
                }
            }
        }
        _ => {}
    }
}

fn check(crd_name: &str, manifest: &str) -> Vec<String> {
    let value: serde_json::Value = serde_yaml::from_str(manifest).expect("manifest is YAML");
    let crd = crd(crd_name);
    let mut errors = Vec::new();
    validate("", root_schema(&crd), &value, &mut errors);
    errors
}

const SEED_VPC_SUBNET: &str = include_str!("../src/api/testdata/seed-vpc-subnet.yaml");
const SEED_NAT_GW: &str = include_str!("../src/api/testdata/seed-vpc-nat-gateway.yaml");

/// The seed's Subnet document (the second of its Vpc + Subnet block).
fn seed_subnet() -> String {
    SEED_VPC_SUBNET
        .split("---\n")
        .nth(1)
        .expect("Vpc and Subnet")
        .to_owned()
}

#[test]
fn seed_manifests_pass_the_schemas_verbatim() {
    let vpc = SEED_VPC_SUBNET.split("---\n").next().unwrap();
    assert_eq!(check("vpcs.kubeovn.io", vpc), Vec::<String>::new());
    assert_eq!(
        check("subnets.kubeovn.io", &seed_subnet()),
        Vec::<String>::new()
    );
    assert_eq!(
        check("vpc-nat-gateways.kubeovn.io", SEED_NAT_GW),
        Vec::<String>::new()
    );
}

#[test]
fn kube_ovn_style_subnet_with_cidr_block_passes() {
    let manifest = "apiVersion: kubeovn.io/v1
kind: Subnet
metadata:
  name: s1
spec:
  cidrBlock: 10.1.0.0/24,fd00::/64
  gateway: 10.1.0.1,fd00::1
  excludeIps: [10.1.0.1..10.1.0.10]
  protocol: Dual
  provider: n.ns.ovn
  namespaces: [a]
  disableGatewayCheck: true
  mtu: 1400
  natOutgoing: false
  private: true
  allowSubnets: [10.2.0.0/24]
  enableDHCP: false
";
    assert_eq!(check("subnets.kubeovn.io", manifest), Vec::<String>::new());
}

#[test]
fn schemas_reject_wrong_types() {
    let bad = seed_subnet().replace("gateway: \"10.100.0.1\"", "gateway: [10.100.0.1]");
    let errors = check("subnets.kubeovn.io", &bad);
    assert!(
        errors.iter().any(|e| e.starts_with(".spec.gateway")),
        "{errors:?}"
    );
    let bad = seed_subnet().replace("provider:", "providr:");
    let errors = check("subnets.kubeovn.io", &bad);
    assert!(
        errors.iter().any(|e| e.contains("providr: unknown field")),
        "{errors:?}"
    );
    let bad = "apiVersion: kubeovn.io/v1\nkind: Subnet\nmetadata:\n  name: s\n";
    let errors = check("subnets.kubeovn.io", bad);
    assert!(errors.iter().any(|e| e == ".spec: required"), "{errors:?}");
}

#[test]
fn nat_gateway_affinity_is_kept_as_written() {
    let manifest = format!(
        "{SEED_NAT_GW}  affinity:\n    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution: {{}}\n"
    );
    assert_eq!(
        check("vpc-nat-gateways.kubeovn.io", &manifest),
        Vec::<String>::new()
    );
}

#[test]
fn kube_ovn_singleton_defaults_to_secondary_mode() {
    let crd = crd("kubeovns.operator.kubeovn.io");
    let spec = &root_schema(&crd).properties.as_ref().unwrap()["spec"];
    let non_primary = &spec.properties.as_ref().unwrap()["nonPrimaryCNI"];
    assert_eq!(non_primary.type_.as_deref(), Some("boolean"));
    assert_eq!(
        non_primary.default.as_ref().map(|d| &d.0),
        Some(&serde_json::json!(true))
    );
    let manifest = "apiVersion: operator.kubeovn.io/v1alpha1
kind: KubeOvn
metadata:
  name: kube-ovn
spec:
  nonPrimaryCNI: true
  ovnCentral: {mode: External, nbAddress: 'tcp:10.0.0.1:6641', sbAddress: 'tcp:10.0.0.1:6642'}
  nodeSelector: {kubernetes.io/os: linux}
  mtu: 1400
";
    assert_eq!(
        check("kubeovns.operator.kubeovn.io", manifest),
        Vec::<String>::new()
    );
}
