//! Test-only: the seed document's manifests, verbatim (files in `testdata/`), and
//! helpers to read them. The seed must keep working exactly as written.

use serde::de::DeserializeOwned;
use serde::Deserialize;

pub const NAD: &str = include_str!("testdata/seed-nad.yaml");
pub const VPC_SUBNET: &str = include_str!("testdata/seed-vpc-subnet.yaml");
pub const POD_MULTI_NETWORK: &str = include_str!("testdata/seed-pod-multi-network.yaml");
pub const POD_FRONTEND: &str = include_str!("testdata/seed-pod-frontend.yaml");
pub const PODS_TENANTS: &str = include_str!("testdata/seed-pods-tenants.yaml");
pub const VPC_NAT_GATEWAY: &str = include_str!("testdata/seed-vpc-nat-gateway.yaml");
pub const META_MULTIPLE_PROVIDERS: &str =
    include_str!("testdata/seed-meta-multiple-providers.yaml");
pub const META_STATIC_IP: &str = include_str!("testdata/seed-meta-static-ip.yaml");
pub const META_QOS: &str = include_str!("testdata/seed-meta-qos.yaml");

/// Every YAML document of `yaml` as a `T`.
pub fn documents<T: DeserializeOwned>(yaml: &str) -> Vec<T> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| T::deserialize(doc).expect("seed YAML deserializes"))
        .collect()
}

/// The one document of `yaml` as a `T`.
pub fn document<T: DeserializeOwned>(yaml: &str) -> T {
    let mut docs = documents(yaml);
    assert_eq!(docs.len(), 1, "expected one document");
    docs.remove(0)
}

/// `metadata.annotations` of a manifest or a bare `metadata:` fragment.
pub fn annotations(yaml: &str) -> std::collections::BTreeMap<String, String> {
    #[derive(Deserialize)]
    struct Fragment {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    }
    document::<Fragment>(yaml)
        .metadata
        .annotations
        .unwrap_or_default()
}
