//! The committed OLM bundle (`olm-bundle/`) is what `kube-ovn olm-bundle` writes, and carries
//! the CRDs of `kube-ovn crd` and the operator of `kube-ovn render`.

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube_ovn::olm::{csv, Bundle, Options, CSV_FILE};

const REGENERATE: &str = "regenerate with: cargo run -q -- olm-bundle --out olm-bundle";

fn committed_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("olm-bundle")
}

fn committed() -> Bundle {
    Bundle::read(&committed_dir()).unwrap_or_else(|e| panic!("olm-bundle/: {e:#}; {REGENERATE}"))
}

fn generated() -> Bundle {
    Bundle::generate(&Options::default()).expect("the bundle generates")
}

#[test]
fn committed_bundle_is_current() {
    let stale = generated().diff(&committed());
    assert!(
        stale.is_empty(),
        "olm-bundle/ is stale ({stale:?}: - missing, + extra, ~ different); {REGENERATE}"
    );
}

#[test]
fn the_olm_bundle_command_writes_the_same_files() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("bundle");
    let out = Command::new(env!("CARGO_BIN_EXE_kube-ovn"))
        .args(["olm-bundle", "--out"])
        .arg(&out_dir)
        .output()
        .expect("run kube-ovn olm-bundle");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        generated().diff(&Bundle::read(&out_dir).unwrap()),
        Vec::<String>::new()
    );
    // Writing over an older bundle removes what is no longer part of it.
    std::fs::write(out_dir.join("manifests/leftover.yaml"), "x: 1\n").unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_kube-ovn"))
        .args(["olm-bundle", "--out"])
        .arg(&out_dir)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(!out_dir.join("manifests/leftover.yaml").exists());
}

fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> T {
    serde_yaml::from_str(text).expect("YAML")
}

#[test]
fn bundle_crds_are_the_crd_commands() {
    let bundle = committed();
    let in_bundle: Vec<CustomResourceDefinition> = bundle
        .files
        .iter()
        .filter(|(path, _)| path.starts_with("manifests/") && path.as_str() != CSV_FILE)
        .map(|(_, text)| yaml::<serde_json::Value>(text))
        .filter(|v| v["kind"] == "CustomResourceDefinition")
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();
    let mut expected = kube_ovn::api::crds();
    let mut got = in_bundle;
    let key = |c: &CustomResourceDefinition| c.metadata.name.clone();
    expected.sort_by_key(key);
    got.sort_by_key(key);
    assert_eq!(got, expected, "the bundle's CRDs are not `kube-ovn crd`'s");
}

fn csv_of(bundle: &Bundle) -> csv::ClusterServiceVersion {
    yaml(&bundle.files[CSV_FILE])
}

#[test]
fn csv_runs_the_operator_that_render_prints() {
    let csv = csv_of(&committed());
    let render = Command::new(env!("CARGO_BIN_EXE_kube-ovn"))
        .args(["render", "--no-crds", "--no-sample"])
        .output()
        .expect("run kube-ovn render");
    assert!(render.status.success());
    let docs: Vec<serde_json::Value> =
        serde_yaml::Deserializer::from_str(&String::from_utf8(render.stdout).unwrap())
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
    let of_kind = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind)
            .unwrap_or_else(|| panic!("render prints no {kind}"))
            .clone()
    };
    let install = csv.spec.install.expect("install");
    let deployment = &install.spec.deployments[0];
    assert_eq!(deployment.name, "kube-ovn-operator");
    assert_eq!(
        serde_json::to_value(&deployment.spec).unwrap(),
        of_kind("Deployment")["spec"],
        "the CSV's Deployment differs from render's"
    );
    assert_eq!(
        serde_json::to_value(&install.spec.cluster_permissions[0].rules).unwrap(),
        of_kind("ClusterRole")["rules"]
    );
    assert_eq!(
        serde_json::to_value(&install.spec.permissions[0].rules).unwrap(),
        of_kind("Role")["rules"]
    );
    // Least privilege: no secrets, no CRD writes, leases only in its own namespace.
    let cluster = serde_json::to_string(&install.spec.cluster_permissions).unwrap();
    assert!(
        !cluster.contains("secrets") && !cluster.contains("leases"),
        "{cluster}"
    );
    assert_eq!(csv.spec.related_images[0].image, "kube-ovn:v0.1.0");
}

#[test]
fn csv_names_versions_and_the_upgrade_edge_follow_cargo_toml() {
    let version = kube_ovn::olm::version();
    assert_eq!(version.to_string(), env!("CARGO_PKG_VERSION"));
    let previous = kube_ovn::olm::predecessor(&version).unwrap();
    assert_eq!(
        (previous.major, previous.minor, previous.patch),
        (version.major, version.minor - 1, 0)
    );
    let csv = csv_of(&committed());
    assert_eq!(
        csv.metadata.name.as_deref(),
        Some(format!("kube-ovn.v{version}").as_str())
    );
    assert_eq!(csv.spec.version, version.to_string());
    assert_eq!(
        csv.spec.replaces.as_deref(),
        Some(format!("kube-ovn.v{previous}").as_str())
    );
    let annotations = csv.metadata.annotations.unwrap();
    assert_eq!(
        annotations["olm.skipRange"],
        format!(">={previous} <{version}")
    );
    let init: serde_json::Value =
        serde_json::from_str(&annotations[csv::INITIALIZATION_RESOURCE]).unwrap();
    assert_eq!(init["kind"], "KubeOvn");
    assert_eq!(init["metadata"]["name"], "kube-ovn");
    let modes: Vec<(String, bool)> = csv
        .spec
        .install_modes
        .iter()
        .map(|m| (m.type_.clone(), m.supported))
        .collect();
    assert_eq!(
        modes,
        [
            ("OwnNamespace", false),
            ("SingleNamespace", false),
            ("MultiNamespace", false),
            ("AllNamespaces", true)
        ]
        .map(|(m, s)| (m.to_owned(), s))
    );
    assert!(kube_ovn::olm::predecessor(&semver::Version::new(1, 0, 0)).is_err());
}

#[test]
fn alm_examples_hold_the_kube_ovn_and_the_guides_network_verbatim() {
    let csv = csv_of(&committed());
    let examples: Vec<serde_json::Value> =
        serde_json::from_str(&csv.metadata.annotations.unwrap()[csv::ALM_EXAMPLES]).unwrap();
    let seed = |file: &str| -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("hack/demo/seed")
                .join(file),
        )
        .unwrap();
        serde_yaml::Deserializer::from_str(&text)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect()
    };
    for object in seed("02-vpc-subnet.yaml")
        .into_iter()
        .chain(seed("06-vpc-nat-gw.yaml"))
    {
        assert!(
            examples.contains(&object),
            "{object} missing from alm-examples"
        );
    }
    assert_eq!(examples[0]["kind"], "KubeOvn");
    let kinds: std::collections::BTreeSet<&str> = examples
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds.len(),
        kube_ovn::api::crds().len(),
        "one example per owned kind: {kinds:?}"
    );
}

#[test]
fn min_kube_version_is_the_k8s_openapi_feature() {
    let cargo =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    let v = semver::Version::parse(csv::MIN_KUBE_VERSION).unwrap();
    let feature = format!("\"v{}_{}\"", v.major, v.minor);
    let line = cargo
        .lines()
        .find(|l| l.starts_with("k8s-openapi"))
        .expect("k8s-openapi in Cargo.toml");
    assert!(
        line.contains(&feature),
        "minKubeVersion {v} but Cargo.toml's k8s-openapi line is {line:?}"
    );
}
