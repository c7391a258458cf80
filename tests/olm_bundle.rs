//! The committed OLM bundle (`olm-bundle/`) is what `kube-ovn olm-bundle` writes, carries the
//! CRDs of `kube-ovn crd` and the operator of `kube-ovn render`, and passes the offline
//! re-implementation of `operator-sdk bundle validate` (default + good practices) and
//! `opm validate` (`kube_ovn::olm::validate`), OLM's own CSV schema and the Kubernetes
//! OpenAPI types. Broken bundles fail with a message that says what is wrong.

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube_ovn::olm::validate::{self, Context, Report};
use kube_ovn::olm::{csv, Bundle, Options, CATALOG_FILE, CSV_FILE};

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

// --- validation -------------------------------------------------------------------------

/// OLM's CSV CRD, kept in `shared/reference/olm` beside the checkout (or beside a worktree's
/// parent directory).
fn full_context() -> Context {
    const REFERENCE: &str = "shared/reference/olm/clusterserviceversions.crd.yaml";
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .skip(1)
        .map(|dir| dir.join(REFERENCE))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{REFERENCE} not found beside the repository (OLM's CSV CRD)"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Context {
        csv_schema: Some(validate::csv_schema_from_crd(&text).expect("the CSV CRD has a schema")),
        ..Context::this_build()
    }
}

fn check(bundle: &Bundle) -> Report {
    validate::validate(bundle, &full_context())
}

#[test]
fn the_committed_bundle_passes_every_check() {
    let report = check(&committed());
    assert!(report.findings.is_empty(), "findings:\n{report}");
}

/// The committed bundle with `edit` applied to one file's text.
fn edited(file: &str, edit: impl FnOnce(&str) -> String) -> Bundle {
    let mut bundle = committed();
    let text = bundle
        .files
        .get(file)
        .unwrap_or_else(|| panic!("no {file}"))
        .clone();
    let new = edit(&text);
    assert_ne!(new, text, "the edit changed nothing");
    bundle.files.insert(file.to_owned(), new);
    bundle
}

fn assert_error(report: &Report, text: &str) {
    assert!(
        report.has_error(text),
        "no error containing {text:?} in:\n{report}"
    );
}

#[test]
fn a_csv_without_a_display_name_fails() {
    let bundle = edited(CSV_FILE, |t| {
        t.lines()
            .filter(|l| !l.starts_with("  displayName:"))
            .map(|l| format!("{l}\n"))
            .collect()
    });
    let report = check(&bundle);
    assert_error(
        &report,
        "kube-ovn.clusterserviceversion.yaml: spec.displayName: required field missing",
    );
    assert_error(
        &report,
        "against OLM's CSV schema: .spec.displayName: required field missing",
    );
}

#[test]
fn a_crd_missing_from_the_bundle_fails() {
    let mut bundle = committed();
    bundle
        .files
        .remove("manifests/kubeovn.io_vpcs.yaml")
        .expect("the Vpc CRD");
    let report = check(&bundle);
    assert_error(
        &report,
        "owned CRD \"kubeovn.io/v1, Kind=Vpc\" not found in bundle",
    );
}

#[test]
fn a_crd_the_csv_does_not_own_fails() {
    let mut bundle = committed();
    let extra = bundle.files["manifests/kubeovn.io_vpcs.yaml"]
        .replace("vpcs.kubeovn.io", "vpcs.example.io")
        .replace("group: kubeovn.io", "group: example.io");
    bundle
        .files
        .insert("manifests/example.io_vpcs.yaml".into(), extra);
    let report = check(&bundle);
    assert_error(
        &report,
        "CRD \"example.io/v1, Kind=Vpc\" is present in bundle but not defined in CSV",
    );
    assert_error(
        &report,
        "CRD vpcs.example.io is not one `kube-ovn crd` prints",
    );
}

#[test]
fn a_changed_crd_fails_as_not_matching_crds() {
    let bundle = edited("manifests/kubeovn.io_subnets.yaml", |t| {
        t.replacen("shortNames:\n    - subnet", "shortNames:\n    - sn", 1)
    });
    assert_error(
        &check(&bundle),
        "CRD subnets.kubeovn.io differs from `kube-ovn crd`",
    );
}

#[test]
fn a_replaces_cycle_in_the_channel_fails() {
    // Two entries replacing each other: no head at all.
    let bundle = edited(CATALOG_FILE, |t| {
        t.replace(
            "- name: kube-ovn.v0.0.0\n",
            "- name: kube-ovn.v0.0.0\n  replaces: kube-ovn.v0.1.0\n",
        )
    });
    assert_error(
        &check(&bundle),
        "invalid channel \"stable\": no channel head found in graph",
    );
    // A head above a cycle.
    let bundle = edited(CATALOG_FILE, |t| {
        t.replace(
            "entries:\n- name: kube-ovn.v0.0.0\n",
            "entries:\n- name: kube-ovn.v0.0.0\n  replaces: kube-ovn.v0.0.1\n- name: kube-ovn.v0.0.1\n  replaces: kube-ovn.v0.0.0\n",
        )
        .replace(
            "---\nschema: olm.bundle\nname: kube-ovn.v0.0.0\n",
            "---\nschema: olm.bundle\nname: kube-ovn.v0.0.1\npackage: kube-ovn\nimage: kube-ovn-bundle:v0.0.1\nproperties:\n- type: olm.package\n  value:\n    packageName: kube-ovn\n    version: 0.0.1\n---\nschema: olm.bundle\nname: kube-ovn.v0.0.0\n",
        )
    });
    assert_error(
        &check(&bundle),
        "detected cycle in replaces chain of upgrade graph: kube-ovn.v0.0.0 -> kube-ovn.v0.0.1 -> kube-ovn.v0.0.0",
    );
}

#[test]
fn a_second_channel_head_and_a_stranded_bundle_fail() {
    let bundle = edited(CATALOG_FILE, |t| {
        t.replace(
            "- name: kube-ovn.v0.1.0\n  replaces: kube-ovn.v0.0.0\n",
            "- name: kube-ovn.v0.1.0\n",
        )
    });
    let report = check(&bundle);
    assert_error(
        &report,
        "multiple channel heads found in graph: kube-ovn.v0.0.0, kube-ovn.v0.1.0",
    );
    assert_error(&report, "replaces/skips/skipRange differ from the CSV's");
}

#[test]
fn a_skip_range_that_does_not_parse_fails() {
    let bundle = edited(CSV_FILE, |t| {
        t.replace(
            "olm.skipRange: '>=0.0.0 <0.1.0'",
            "olm.skipRange: '>=0.0 <0.1.0'",
        )
    });
    assert_error(&check(&bundle), "invalid olm.skipRange \">=0.0 <0.1.0\"");
    let bundle = edited(CATALOG_FILE, |t| {
        t.replace("skipRange: '>=0.0.0 <0.1.0'", "skipRange: 'soon'")
    });
    assert_error(&check(&bundle), "invalid skipRange \"soon\"");
}

#[test]
fn an_image_missing_from_related_images_fails() {
    let bundle = edited(CSV_FILE, |t| {
        t.replacen("image: kube-ovn:v0.1.0", "image: other:v1", 1)
    });
    assert_error(&check(&bundle), "deployment kube-ovn-operator container operator image: other:v1 is not in spec.relatedImages");
}

#[test]
fn an_example_with_an_unknown_field_fails() {
    let bundle = edited(CSV_FILE, |t| {
        t.replacen(
            "\"provider\": \"kube-ovn-vpc-network.default.ovn\"",
            "\"providr\": \"kube-ovn-vpc-network.default.ovn\"",
            1,
        )
    });
    assert_error(
        &check(&bundle),
        "alm-examples[2] (Subnet subnet-secondary): .spec.providr: unknown field",
    );
}

#[test]
fn crd_write_permission_and_more_install_modes_fail() {
    let bundle = edited(CSV_FILE, |t| {
        t.replacen(
            "          - customresourcedefinitions\n          verbs:\n          - get\n",
            "          - customresourcedefinitions\n          verbs:\n          - create\n",
            1,
        )
        .replacen(
            "- type: OwnNamespace\n    supported: false",
            "- type: OwnNamespace\n    supported: true",
            1,
        )
    });
    let report = check(&bundle);
    assert_error(&report, "the operator must not write CRDs");
    assert!(
        report.warnings().any(|w| w
            .message
            .starts_with("CSV contains permissions to create CRD")),
        "{report}"
    );
    assert_error(
        &report,
        "kube-ovn supports the AllNamespaces install mode only",
    );
}

#[test]
fn an_unknown_deployment_field_fails_the_kubernetes_types() {
    let bundle = edited(CSV_FILE, |t| {
        t.replacen(
            "          replicas: 2\n",
            "          replicas: 2\n          replica: 3\n",
            1,
        )
    });
    let report = check(&bundle);
    assert_error(
        &report,
        ".spec.install.spec.deployments[0].spec.replica: unknown field",
    );
    let bundle = edited("manifests/kube-ovn-operator_v1_service.yaml", |t| {
        t.replace(
            "targetPort: status",
            "targetPort: status\n    tragetPort: 1",
        )
    });
    assert_error(
        &check(&bundle),
        ".spec.ports[0].tragetPort: unknown field (typed read as Service)",
    );
}

#[test]
fn olms_csv_schema_catches_a_mistyped_field() {
    let bundle = edited(CSV_FILE, |t| {
        t.replacen("  maturity: alpha", "  maturity: [alpha]", 1)
    });
    let report = check(&bundle);
    assert_error(
        &report,
        "against OLM's CSV schema: .spec.maturity: [\"alpha\"] is array, not string",
    );
}

#[test]
fn a_dockerfile_that_disagrees_with_the_annotations_fails() {
    let bundle = edited(kube_ovn::olm::DOCKERFILE, |t| {
        t.replace("channels.v1=stable", "channels.v1=beta")
    });
    assert_error(&check(&bundle), "bundle.Dockerfile: its LABELs");
    let bundle = edited(kube_ovn::olm::ANNOTATIONS_FILE, |t| {
        t.replace("mediatype.v1: registry+v1", "mediatype.v1: plain")
    });
    assert_error(&check(&bundle), "Expecting annotation \"operators.operatorframework.io.bundle.mediatype.v1\" to have value \"registry+v1\" instead of \"plain\"");
}

#[test]
fn the_check_flag_reports_a_stale_or_broken_directory() {
    let dir = tempfile::tempdir().unwrap();
    generated().write(dir.path()).unwrap();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_kube-ovn"))
            .args(["olm-bundle", "--check", "--out"])
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let out = run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    std::fs::remove_file(dir.path().join("manifests/kubeovn.io_vpcs.yaml")).unwrap();
    let out = run();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("owned CRD \"kubeovn.io/v1, Kind=Vpc\" not found in bundle"),
        "{stdout}"
    );
    assert!(
        stdout.contains("stale: - manifests/kubeovn.io_vpcs.yaml"),
        "{stdout}"
    );
}
