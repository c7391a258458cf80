//! Offline checks of a bundle directory: what `operator-sdk bundle validate` (the default
//! suite: operator-framework/api's CSV, CRD and bundle validators; and the good-practices
//! suite) and `opm validate` (operator-registry's declcfg → model validation) check, re-done
//! here without their binaries, plus kube-ovn's own rules. Errors fail; warnings are
//! operator-sdk's warnings. Messages keep upstream's wording where there is one.
//!
//! - Bundle format (operator-registry `ValidateBundleFormat`/`ValidateBundleContent`):
//!   `manifests/` and `metadata/` exist; `metadata/annotations.yaml` has the mediatype
//!   (`registry+v1`), manifests, metadata, package and channels annotations, and a non-empty
//!   default channel that is one of the channels; one object per manifest file, of a kind a
//!   registry+v1 bundle may hold; exactly one CSV; `bundle.Dockerfile` is `FROM scratch` with
//!   the same annotations as LABELs and copies `manifests/` and `metadata/`; size ≤ 1 MiB.
//! - CSV (operator-framework/api `csv.go`): name and `replaces` are DNS-1123 subdomains and
//!   label values; `apiVersion`/`kind`; required fields (`spec.displayName`, `spec.install`
//!   with strategy `deployment` and deployments, `spec.version` as semver); alm-examples parse
//!   and name only owned APIs (a warning for an owned API without one); install modes present,
//!   not duplicated, one supported; `minKubeVersion` semver (warning if missing);
//!   case-sensitive annotation names (`olm.skipRange`); the CSV against OLM's own CSV schema
//!   (its CRD's openAPIV3Schema, when given).
//! - Bundle (`bundle.go`): owned CRDs (name, version, kind) equal the bundle's CRDs, no
//!   duplicates; no ServiceAccount manifest named like a deployment's; relatedImages are image
//!   references.
//! - CRDs (`crd.go`, apiextensions' `ValidateCustomResourceDefinition` as far as a generator
//!   can break it): `apiextensions.k8s.io/v1`; name = `<plural>.<group>`; names, scope,
//!   versions (one storage version, unique names, a schema each), structural schemas; and,
//!   when told, each equals what `kube-ovn crd` prints.
//! - Good practices (`good_practices.go`, warnings): CPU and memory requests on every
//!   container; channel names; owned CRD descriptions; no CRD create permission; the
//!   `<name>.v<semver>` CSV name.
//! - Catalog (`opm validate`): blobs parse; one `olm.package` (DNS-1123 label name) whose
//!   default channel exists; channels of known packages without duplicate entries; every
//!   entry has an `olm.bundle` and every bundle an entry; a bundle has exactly one
//!   `olm.package` property, of its package, with a semver version, no duplicate versions,
//!   an image reference; per channel one head, no `replaces` cycle, no stranded bundle, skips
//!   non-empty, `skipRange` parses.
//! - kube-ovn's rules (errors): only `AllNamespaces`; the Deployment keeps its name and
//!   selector (`kube-ovn-operator`), its selector matches its pods, its ServiceAccount has
//!   permissions; least privilege: no CRD writes, no secrets or `*` resources cluster-wide,
//!   no `*` verbs; relatedImages cover every container image and `RELATED_IMAGE_*` value;
//!   every alm-example validates against its CRD's schema; the initialization resource is a
//!   `KubeOvn` among the examples; `olm.skipRange` covers the replaced version but not this
//!   one; spec and status descriptors name fields of the schema; every manifest and the CSV's
//!   Deployment, RBAC rules and object metadata read back unchanged through the Kubernetes
//!   OpenAPI types (`k8s-openapi`), so no field is unknown or mistyped; the catalog's head is
//!   this bundle, with the CSV's `replaces`, `skipRange`, version, GVKs and images.
//!
//! Not re-done: CEL rules, operator-sdk's optional suites (operatorhub, community,
//! multi-arch), pulling images.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::catalog::{self, Blob};
use super::csv::{self, ClusterServiceVersion};
use super::schema;
use super::{
    Bundle, ANNOTATIONS_FILE, CATALOG_FILE, CHANNELS_LABEL, DEFAULT_CHANNEL_LABEL, DOCKERFILE,
    MANIFESTS_LABEL, MEDIATYPE_LABEL, METADATA_LABEL, PACKAGE_LABEL, REGISTRY_V1,
};
use crate::operator::install::validate::check_image_reference;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem, in one file of the bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub file: String,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{level}: {}: {}", self.file, self.message)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
    }
    pub fn warnings(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Warning)
    }
    /// Whether an error's text (`file: message`) contains `text`.
    pub fn has_error(&self, text: &str) -> bool {
        self.errors()
            .any(|f| format!("{}: {}", f.file, f.message).contains(text))
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for finding in &self.findings {
            writeln!(f, "{finding}")?;
        }
        Ok(())
    }
}

/// What the bundle is checked against besides its own content.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// OLM's ClusterServiceVersion schema (the openAPIV3Schema of its CRD).
    pub csv_schema: Option<JSONSchemaProps>,
    /// The CRDs the bundle must carry unchanged (`kube-ovn crd`, `crds/kube-ovn.yaml`).
    pub expected_crds: Option<Vec<CustomResourceDefinition>>,
}

impl Context {
    /// The CRDs of this build; no CSV schema.
    pub fn this_build() -> Context {
        Context {
            csv_schema: None,
            expected_crds: Some(crate::api::crds()),
        }
    }
}

/// The openAPIV3Schema of OLM's ClusterServiceVersion CRD (its YAML).
pub fn csv_schema_from_crd(crd_yaml: &str) -> anyhow::Result<JSONSchemaProps> {
    let crd: CustomResourceDefinition = serde_yaml::from_str(crd_yaml)?;
    crd.spec
        .versions
        .iter()
        .find(|v| v.name == "v1alpha1")
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| s.open_api_v3_schema.clone())
        .ok_or_else(|| anyhow::anyhow!("no v1alpha1 openAPIV3Schema in the CSV CRD"))
}

/// The operator Deployment's name and selector, stable across versions (OLM cannot change
/// a Deployment's selector in an upgrade).
pub const OPERATOR_DEPLOYMENT: &str = "kube-ovn-operator";
pub const OPERATOR_SELECTOR: (&str, &str) = ("app", "kube-ovn-operator");
/// API groups whose every resource the operator may manage: its own.
const OWN_GROUPS: [&str; 2] = ["kubeovn.io", "operator.kubeovn.io"];
/// Kinds a registry+v1 bundle may carry (operator-registry `supported_resources.go`).
const SUPPORTED_KINDS: [&str; 22] = [
    "ClusterServiceVersion",
    "CustomResourceDefinition",
    "Secret",
    "ClusterRole",
    "ClusterRoleBinding",
    "ConfigMap",
    "ServiceAccount",
    "Service",
    "Role",
    "RoleBinding",
    "PrometheusRule",
    "ServiceMonitor",
    "PodDisruptionBudget",
    "PriorityClass",
    "VerticalPodAutoscaler",
    "ConsoleYAMLSample",
    "ConsoleQuickStart",
    "ConsoleCLIDownload",
    "ConsoleLink",
    "ConsolePlugin",
    "NetworkPolicy",
    "PodMonitor",
];
const MAX_BUNDLE_SIZE: usize = 1 << 20;

struct Checker {
    findings: Vec<Finding>,
}

impl Checker {
    fn error(&mut self, file: &str, message: impl Into<String>) {
        self.findings.push(Finding {
            severity: Severity::Error,
            file: file.to_owned(),
            message: message.into(),
        });
    }
    fn warn(&mut self, file: &str, message: impl Into<String>) {
        self.findings.push(Finding {
            severity: Severity::Warning,
            file: file.to_owned(),
            message: message.into(),
        });
    }
}

/// A manifest of `manifests/`.
struct Manifest {
    file: String,
    value: Value,
}

impl Manifest {
    fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or("")
    }
}

/// Checks `bundle`; see the module doc for what.
pub fn validate(bundle: &Bundle, ctx: &Context) -> Report {
    let mut c = Checker {
        findings: Vec::new(),
    };
    let manifests = read_manifests(&mut c, bundle);
    let annotations = check_annotations(&mut c, bundle);
    check_dockerfile(&mut c, bundle, annotations.as_ref());
    let size: usize = bundle
        .files
        .iter()
        .filter(|(p, _)| p.starts_with("manifests/") || p.starts_with("metadata/"))
        .map(|(_, t)| t.len())
        .sum();
    if size > MAX_BUNDLE_SIZE {
        c.warn(
            "manifests/",
            format!(
                "bundle size {size} B is over 1 MiB uncompressed; check the gzip size (max 1 MiB)"
            ),
        );
    }

    let crds: Vec<(String, CustomResourceDefinition)> = manifests
        .iter()
        .filter(|m| m.kind() == "CustomResourceDefinition")
        .filter_map(|m| check_crd(&mut c, m, ctx).map(|crd| (m.file.clone(), crd)))
        .collect();
    for m in &manifests {
        if !["ClusterServiceVersion", "CustomResourceDefinition"].contains(&m.kind()) {
            check_other_manifest(&mut c, m);
        }
    }
    let csvs: Vec<&Manifest> = manifests.iter().filter(|m| m.kind() == csv::KIND).collect();
    let csv = match csvs.as_slice() {
        [] => {
            c.error("manifests/", "no ClusterServiceVersion in the bundle");
            None
        }
        [one] => check_csv(&mut c, one, &crds, &manifests, ctx).map(|csv| (one.file.clone(), csv)),
        _ => {
            c.error(
                "manifests/",
                "more than one ClusterServiceVersion in the bundle",
            );
            None
        }
    };
    if let (Some((file, csv)), Some(annotations)) = (&csv, &annotations) {
        let package = annotations
            .get(PACKAGE_LABEL)
            .map(String::as_str)
            .unwrap_or("");
        let expected = format!("{package}.v{}", csv.spec.version);
        if csv.metadata.name.as_deref() != Some(expected.as_str()) {
            c.error(
                file,
                format!(
                    "metadata.name {:?} is not <package>.v<spec.version> ({expected:?})",
                    csv.metadata.name.as_deref().unwrap_or("")
                ),
            );
        }
        // good practices: channel naming
        let mut channels: Vec<&str> = annotations
            .get(CHANNELS_LABEL)
            .map(|c| c.split(',').map(str::trim).collect())
            .unwrap_or_default();
        channels.extend(annotations.get(DEFAULT_CHANNEL_LABEL).map(String::as_str));
        let odd: BTreeSet<&str> = channels
            .into_iter()
            .filter(|ch| {
                !ch.is_empty()
                    && !["candidate", "stable", "fast"]
                        .iter()
                        .any(|p| ch.starts_with(p))
            })
            .collect();
        if !odd.is_empty() {
            c.warn(
                ANNOTATIONS_FILE,
                format!("channel(s) {odd:?} are not following the recommended naming convention: https://olm.operatorframework.io/docs/best-practices/channel-naming"),
            );
        }
    }
    check_catalog(
        &mut c,
        bundle,
        csv.as_ref().map(|(_, csv)| csv),
        annotations.as_ref(),
    );
    Report {
        findings: c.findings,
    }
}

fn yaml_documents(c: &mut Checker, file: &str, text: &str) -> Vec<Value> {
    match csv::yaml_documents(text) {
        Ok(docs) => docs,
        Err(e) => {
            c.error(file, format!("not YAML: {e}"));
            Vec::new()
        }
    }
}

fn read_manifests(c: &mut Checker, bundle: &Bundle) -> Vec<Manifest> {
    let mut out = Vec::new();
    let mut any = false;
    for (file, text) in &bundle.files {
        let Some(name) = file.strip_prefix("manifests/") else {
            continue;
        };
        any = true;
        if name.contains('/') {
            c.error(
                file,
                "manifests/ must be flat (OLM reads no subdirectories)",
            );
            continue;
        }
        if !(name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json")) {
            c.error(file, "not a YAML or JSON manifest");
            continue;
        }
        let docs = yaml_documents(c, file, text);
        if docs.len() != 1 {
            c.error(
                file,
                format!(
                    "{} objects in one file; OLM reads only the first: one object per file",
                    docs.len()
                ),
            );
        }
        let Some(value) = docs.into_iter().next() else {
            continue;
        };
        let kind = value["kind"].as_str().unwrap_or("");
        if kind.is_empty() || value["apiVersion"].as_str().unwrap_or("").is_empty() {
            c.error(file, "'apiVersion' or 'kind' is missing");
            continue;
        }
        if !SUPPORTED_KINDS.contains(&kind) {
            c.error(
                file,
                format!("{kind} is not supported type for registryV1 bundle"),
            );
            continue;
        }
        out.push(Manifest {
            file: file.clone(),
            value,
        });
    }
    if !any {
        c.error("manifests/", "Unable to locate manifests directory");
    }
    out
}

fn check_annotations(c: &mut Checker, bundle: &Bundle) -> Option<BTreeMap<String, String>> {
    if !bundle.files.keys().any(|p| p.starts_with("metadata/")) {
        c.error("metadata/", "Unable to locate metadata directory");
        return None;
    }
    let Some(text) = bundle.files.get(ANNOTATIONS_FILE) else {
        c.error(ANNOTATIONS_FILE, "Could not find annotations file");
        return None;
    };
    #[derive(serde::Deserialize)]
    struct File {
        annotations: BTreeMap<String, String>,
    }
    let file: File = match serde_yaml::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            c.error(ANNOTATIONS_FILE, format!("not an annotations file: {e}"));
            return None;
        }
    };
    let a = &file.annotations;
    for label in [
        MEDIATYPE_LABEL,
        MANIFESTS_LABEL,
        METADATA_LABEL,
        PACKAGE_LABEL,
        CHANNELS_LABEL,
    ] {
        if !a.contains_key(label) {
            c.error(ANNOTATIONS_FILE, format!("Missing annotation {label:?}"));
        }
    }
    for (label, expected) in [
        (MEDIATYPE_LABEL, REGISTRY_V1),
        (MANIFESTS_LABEL, "manifests/"),
        (METADATA_LABEL, "metadata/"),
    ] {
        if let Some(value) = a.get(label) {
            if value != expected {
                c.error(
                    ANNOTATIONS_FILE,
                    format!("Expecting annotation {label:?} to have value {expected:?} instead of {value:?}"),
                );
            }
        }
    }
    let channels: Vec<&str> = a
        .get(CHANNELS_LABEL)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if a.contains_key(CHANNELS_LABEL) && channels.is_empty() {
        c.error(
            ANNOTATIONS_FILE,
            format!("Expecting annotation {CHANNELS_LABEL:?} to have non-empty value"),
        );
    }
    if let Some(default) = a.get(DEFAULT_CHANNEL_LABEL) {
        if default.is_empty() {
            c.error(
                ANNOTATIONS_FILE,
                format!("Expecting annotation {DEFAULT_CHANNEL_LABEL:?} to have non-empty value"),
            );
        } else if !channels.contains(&default.as_str()) {
            c.error(
                ANNOTATIONS_FILE,
                format!("default channel {default:?} is not one of the channels {channels:?}"),
            );
        }
    }
    if let Some(package) = a.get(PACKAGE_LABEL) {
        if !is_dns1123_label(package) {
            c.error(
                ANNOTATIONS_FILE,
                format!("package name {package:?} is not a DNS-1123 label"),
            );
        }
    }
    Some(file.annotations)
}

fn check_dockerfile(
    c: &mut Checker,
    bundle: &Bundle,
    annotations: Option<&BTreeMap<String, String>>,
) {
    let Some(text) = bundle.files.get(DOCKERFILE) else {
        c.error(DOCKERFILE, "missing (the bundle image is built from it)");
        return;
    };
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    if lines.first() != Some(&"FROM scratch") {
        c.error(
            DOCKERFILE,
            "must start with FROM scratch (a bundle image holds only manifests)",
        );
    }
    let labels: BTreeMap<String, String> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("LABEL "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        .collect();
    if let Some(annotations) = annotations {
        if &labels != annotations {
            c.error(
                DOCKERFILE,
                format!("its LABELs {labels:?} differ from {ANNOTATIONS_FILE} {annotations:?}"),
            );
        }
    }
    for copy in ["COPY manifests /manifests/", "COPY metadata /metadata/"] {
        if !lines.contains(&copy) {
            c.error(DOCKERFILE, format!("no `{copy}`"));
        }
    }
}

fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

fn is_label_value(s: &str) -> bool {
    let ok_char = |b: u8| b.is_ascii_alphanumeric() || b"-_.".contains(&b);
    s.is_empty()
        || (s.len() <= 63
            && s.bytes().all(ok_char)
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric())
}

/// Why a CSV name is not one (operator-framework's `parseCSVNameFormat`), if it is not.
fn csv_name_problem(name: &str) -> Option<String> {
    let mut problems = Vec::new();
    if !is_dns1123_subdomain(name) {
        problems.push("not a DNS-1123 subdomain");
    }
    if !is_label_value(name) {
        problems.push("not a valid label value (63 characters at most)");
    }
    (!problems.is_empty()).then(|| format!("{name:?} is invalid: {}", problems.join(",")))
}

/// Differences between a value as written and as a typed read of it gives it back:
/// unknown fields, nulls, mistyped values.
fn roundtrip_diff(path: &str, written: &Value, typed: &Value, out: &mut Vec<String>) {
    match (written, typed) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let child = format!("{path}.{key}");
                match b.get(key) {
                    Some(t) => roundtrip_diff(&child, value, t, out),
                    None if value.is_null() => out.push(format!("{child}: null")),
                    None => out.push(format!("{child}: unknown field")),
                }
            }
            for key in b.keys().filter(|k| !a.contains_key(*k)) {
                out.push(format!("{path}.{key}: added by the typed read"));
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                roundtrip_diff(&format!("{path}[{i}]"), x, y, out);
            }
        }
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => {}
        (a, b) if a == b => {}
        (a, b) => out.push(format!("{path}: {a} reads as {b}")),
    }
}

/// Reads `value` as `T` (a Kubernetes OpenAPI type, or ours), strictly: type errors name
/// their path, and whatever the typed read drops or changes is reported.
fn strict<T: DeserializeOwned + Serialize>(
    c: &mut Checker,
    file: &str,
    path: &str,
    value: &Value,
) -> Option<T> {
    let typed: T = match serde_path_to_error::deserialize(value.clone()) {
        Ok(t) => t,
        Err(e) => {
            let at = e.path().to_string();
            let at = if at == "." {
                String::new()
            } else {
                format!(".{at}")
            };
            c.error(file, format!("{path}{at}: {}", e.inner()));
            return None;
        }
    };
    let back = match serde_json::to_value(&typed) {
        Ok(v) => v,
        Err(e) => {
            c.error(file, format!("{path}: does not serialize back: {e}"));
            return None;
        }
    };
    let mut diffs = Vec::new();
    roundtrip_diff(path, value, &back, &mut diffs);
    for d in diffs {
        c.error(file, format!("{d} (typed read as {})", short_type::<T>()));
    }
    Some(typed)
}

fn short_type<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}

/// The group, version and kind keys of a CRD's versions.
fn crd_keys(crd: &CustomResourceDefinition) -> Vec<(String, String, String)> {
    crd.spec
        .versions
        .iter()
        .map(|v| {
            (
                crd.spec.group.clone(),
                v.name.clone(),
                crd.spec.names.kind.clone(),
            )
        })
        .collect()
}

fn gvk_text((group, version, kind): &(String, String, String)) -> String {
    format!("{group}/{version}, Kind={kind}")
}

fn check_crd(c: &mut Checker, m: &Manifest, ctx: &Context) -> Option<CustomResourceDefinition> {
    let file = &m.file;
    let api_version = m.value["apiVersion"].as_str().unwrap_or("");
    if api_version != "apiextensions.k8s.io/v1" {
        c.error(
            file,
            format!("Unsupported api version of CRD: {api_version} (apiextensions.k8s.io/v1beta1 was removed in Kubernetes 1.22)"),
        );
        return None;
    }
    let crd: CustomResourceDefinition = strict(c, file, "", &m.value)?;
    let names = &crd.spec.names;
    let name = crd.metadata.name.clone().unwrap_or_default();
    if name != format!("{}.{}", names.plural, crd.spec.group) {
        c.error(
            file,
            format!(
                "metadata.name {name:?} must be spec.names.plural+\".\"+spec.group ({}.{})",
                names.plural, crd.spec.group
            ),
        );
    }
    if !crd.spec.group.contains('.') || !is_dns1123_subdomain(&crd.spec.group) {
        c.error(
            file,
            format!(
                "spec.group {:?} should be a domain with at least one dot",
                crd.spec.group
            ),
        );
    }
    for (field, value) in [
        ("plural", Some(&names.plural)),
        ("singular", names.singular.as_ref()),
    ] {
        match value {
            Some(v) if is_dns1123_label(v) => {}
            _ => c.error(
                file,
                format!("spec.names.{field}: must be a lower-case DNS-1035 label"),
            ),
        }
    }
    if names.kind.is_empty() {
        c.error(file, "spec.names.kind: Required value");
    }
    // listKind defaults to <kind>List (the API server and operator-sdk default it first).
    if names.list_kind.as_deref() == Some("") {
        c.error(file, "spec.names.listKind: Required value");
    }
    if !["Cluster", "Namespaced"].contains(&crd.spec.scope.as_str()) {
        c.error(
            file,
            format!(
                "spec.scope: {:?} is not Cluster or Namespaced",
                crd.spec.scope
            ),
        );
    }
    if crd.spec.versions.is_empty() {
        c.error(
            file,
            "spec.versions: must have exactly one version marked as storage version",
        );
    }
    let storage = crd.spec.versions.iter().filter(|v| v.storage).count();
    if storage != 1 {
        c.error(file, format!("spec.versions: must have exactly one version marked as storage version, not {storage}"));
    }
    let mut seen = BTreeSet::new();
    for v in &crd.spec.versions {
        if !seen.insert(v.name.clone()) {
            c.error(
                file,
                format!("spec.versions: duplicate version {:?}", v.name),
            );
        }
        match v
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
        {
            Some(root) => {
                for e in schema::structural_errors(&format!("{}.schema", v.name), root) {
                    c.error(file, format!("not structural: {e}"));
                }
            }
            None => c.error(
                file,
                format!("spec.versions[{}].schema: Required value", v.name),
            ),
        }
    }
    if let Some(expected) = &ctx.expected_crds {
        match expected.iter().find(|e| e.metadata.name.as_deref() == Some(name.as_str())) {
            Some(e) if *e == crd => {}
            Some(_) => c.error(
                file,
                format!("CRD {name} differs from `kube-ovn crd` (crds/kube-ovn.yaml); regenerate the bundle with `kube-ovn olm-bundle`"),
            ),
            None => c.error(file, format!("CRD {name} is not one `kube-ovn crd` prints")),
        }
    }
    Some(crd)
}

fn check_other_manifest(c: &mut Checker, m: &Manifest) {
    use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
    use k8s_openapi::api::scheduling::v1::PriorityClass;
    let file = &m.file;
    let v = &m.value;
    let name_ok = match m.kind() {
        "Service" => strict::<Service>(c, file, "", v).map(|o| o.metadata),
        "ServiceAccount" => strict::<ServiceAccount>(c, file, "", v).map(|o| o.metadata),
        "ConfigMap" => strict::<ConfigMap>(c, file, "", v).map(|o| o.metadata),
        "Secret" => strict::<Secret>(c, file, "", v).map(|o| o.metadata),
        "Role" => strict::<Role>(c, file, "", v).map(|o| o.metadata),
        "RoleBinding" => strict::<RoleBinding>(c, file, "", v).map(|o| o.metadata),
        "ClusterRole" => strict::<ClusterRole>(c, file, "", v).map(|o| o.metadata),
        "ClusterRoleBinding" => strict::<ClusterRoleBinding>(c, file, "", v).map(|o| o.metadata),
        "NetworkPolicy" => strict::<NetworkPolicy>(c, file, "", v).map(|o| o.metadata),
        "PodDisruptionBudget" => strict::<PodDisruptionBudget>(c, file, "", v).map(|o| o.metadata),
        "PriorityClass" => strict::<PriorityClass>(c, file, "", v).map(|o| o.metadata),
        // Monitoring and console kinds have no Kubernetes OpenAPI type: metadata only.
        _ => strict::<ObjectMeta>(c, file, ".metadata", &v["metadata"]),
    };
    if let Some(meta) = name_ok {
        let name = meta.name.unwrap_or_default();
        if !is_dns1123_subdomain(&name) {
            c.error(file, format!("error validating object metadata: metadata.name {name:?} is not a DNS-1123 subdomain"));
        }
    }
}

fn labels_of(map: &Option<BTreeMap<String, String>>) -> BTreeMap<String, String> {
    map.clone().unwrap_or_default()
}

fn check_csv(
    c: &mut Checker,
    m: &Manifest,
    crds: &[(String, CustomResourceDefinition)],
    manifests: &[Manifest],
    ctx: &Context,
) -> Option<ClusterServiceVersion> {
    let file = m.file.as_str();
    if let Some(schema) = &ctx.csv_schema {
        for e in schema::validate_object(schema, &m.value) {
            c.error(file, format!("against OLM's CSV schema: {e}"));
        }
    }
    let csv: ClusterServiceVersion = strict(c, file, "", &m.value)?;
    if csv.api_version.is_empty() {
        c.error(file, "'apiVersion' is missing");
    } else if csv.api_version != csv::API_VERSION {
        c.error(
            file,
            format!(
                "apiVersion {:?} is not {}",
                csv.api_version,
                csv::API_VERSION
            ),
        );
    }
    let name = csv.metadata.name.clone().unwrap_or_default();
    if let Some(problem) = csv_name_problem(&name) {
        c.error(file, format!("metadata.name {problem}"));
    }
    if let Some(replaces) = &csv.spec.replaces {
        if let Some(problem) = csv_name_problem(replaces) {
            c.error(file, format!("spec.replaces {problem}"));
        }
    }
    // Required fields (operator-framework's checkEmptyFields, and OLM's CSV schema).
    if csv.spec.display_name.is_empty() {
        c.error(file, "spec.displayName: required field missing");
    }
    let version = if csv.spec.version.is_empty() {
        c.error(file, "spec.version: required field missing");
        None
    } else {
        match semver::Version::parse(&csv.spec.version) {
            Ok(v) => Some(v),
            Err(e) => {
                c.error(
                    file,
                    format!("spec.version {:?} is not semver: {e}", csv.spec.version),
                );
                None
            }
        }
    };
    // good practices: bundle name convention
    if name.split(".v").count() != 2
        || name
            .split_once(".v")
            .is_none_or(|(_, v)| semver::Version::parse(v).is_err())
    {
        c.warn(
            file,
            format!("csv.metadata.Name {name} is not following the recommended naming convention: <operator-name>.v<semver> e.g. memcached-operator.v0.0.1"),
        );
    }
    let annotations = labels_of(&csv.metadata.annotations);
    for key in annotations.keys() {
        if key.eq_ignore_ascii_case(csv::SKIP_RANGE) && key != csv::SKIP_RANGE {
            c.error(
                file,
                format!(
                    "provided annotation {key} uses wrong case and should be {} instead",
                    csv::SKIP_RANGE
                ),
            );
        }
        if key == "olm.properties" {
            c.warn(file, "found olm.properties annotation, please define these properties in metadata/properties.yaml instead");
        }
    }
    check_install_modes(c, file, &csv);
    if csv.spec.min_kube_version.trim().is_empty() {
        c.warn(file, "spec.minKubeVersion is not informed; it is recommended to set the minimum Kubernetes version the operator supports");
    } else if semver::Version::parse(&csv.spec.min_kube_version).is_err() {
        c.error(
            file,
            format!(
                "csv.Spec.MinKubeVersion has an invalid value: {}",
                csv.spec.min_kube_version
            ),
        );
    }
    check_upgrade_edge(c, file, &csv, version.as_ref());
    let owned = check_owned_crds(c, file, &csv, crds);
    check_examples(c, file, &csv, &owned, crds);
    check_install(c, file, &csv, manifests);
    check_related_images(c, file, &csv);
    Some(csv)
}

fn check_install_modes(c: &mut Checker, file: &str, csv: &ClusterServiceVersion) {
    let modes = &csv.spec.install_modes;
    if modes.is_empty() {
        c.error(file, "install modes not found");
        return;
    }
    let mut seen = BTreeSet::new();
    for mode in modes {
        if !seen.insert(mode.type_.as_str()) {
            c.error(file, "duplicate install modes present");
        }
        if !csv::INSTALL_MODES.contains(&mode.type_.as_str()) {
            c.error(file, format!("unknown install mode {:?}", mode.type_));
        }
    }
    if !modes.iter().any(|m| m.supported) {
        c.error(file, "none of InstallModeTypes are supported");
    }
    let supported: Vec<&str> = modes
        .iter()
        .filter(|m| m.supported)
        .map(|m| m.type_.as_str())
        .collect();
    if supported != ["AllNamespaces"] {
        c.error(
            file,
            format!("kube-ovn supports the AllNamespaces install mode only (cluster-scoped APIs; OLM v1), not {supported:?}"),
        );
    }
}

fn check_upgrade_edge(
    c: &mut Checker,
    file: &str,
    csv: &ClusterServiceVersion,
    version: Option<&semver::Version>,
) {
    let annotations = labels_of(&csv.metadata.annotations);
    let Some(range_text) = annotations.get(csv::SKIP_RANGE) else {
        return;
    };
    let range = match SkipRange::parse(range_text) {
        Ok(r) => r,
        Err(e) => {
            c.error(
                file,
                format!("invalid {} {range_text:?}: {e}", csv::SKIP_RANGE),
            );
            return;
        }
    };
    if let Some(version) = version {
        if range.matches(version) {
            c.error(
                file,
                format!(
                    "{} {range_text:?} includes this version {version}",
                    csv::SKIP_RANGE
                ),
            );
        }
    }
    if let Some(replaces) = &csv.spec.replaces {
        match replaces
            .split_once(".v")
            .map(|(_, v)| semver::Version::parse(v))
        {
            Some(Ok(previous)) => {
                if !range.matches(&previous) {
                    c.error(
                        file,
                        format!(
                            "{} {range_text:?} does not include the replaced version {previous}",
                            csv::SKIP_RANGE
                        ),
                    );
                }
                if version.is_some_and(|v| *v <= previous) {
                    c.error(
                        file,
                        format!("spec.replaces {replaces} is not older than this version"),
                    );
                }
            }
            _ => c.error(
                file,
                format!("spec.replaces {replaces:?} is not <package>.v<semver>"),
            ),
        }
    }
}

/// The owned CRDs' (group, version, kind), after checking them against the bundle's CRDs.
fn check_owned_crds(
    c: &mut Checker,
    file: &str,
    csv: &ClusterServiceVersion,
    crds: &[(String, CustomResourceDefinition)],
) -> Vec<(String, String, String)> {
    let owned_list = csv
        .spec
        .customresourcedefinitions
        .as_ref()
        .map(|d| d.owned.clone())
        .unwrap_or_default();
    let mut owned = Vec::new();
    for o in &owned_list {
        let Some((_, group)) = o.name.split_once('.') else {
            c.error(
                file,
                format!("couldn't parse plural.group from crd name: {}", o.name),
            );
            continue;
        };
        owned.push((group.to_owned(), o.version.clone(), o.kind.clone()));
        if o.description.is_empty() {
            c.warn(
                file,
                format!("owned CRD {:?} has an empty description", o.name),
            );
        }
    }
    let mut in_bundle: BTreeSet<(String, String, String)> = BTreeSet::new();
    for (crd_file, crd) in crds {
        for key in crd_keys(crd) {
            if !in_bundle.insert(key.clone()) {
                c.error(
                    crd_file,
                    format!("duplicate CRD {:?} in bundle", gvk_text(&key)),
                );
            }
        }
    }
    let mut owned_kinds = BTreeSet::new();
    for key in &owned {
        if in_bundle.contains(key) {
            owned_kinds.insert((key.0.clone(), key.2.clone()));
        } else {
            c.error(
                file,
                format!("owned CRD {:?} not found in bundle", gvk_text(key)),
            );
        }
    }
    for key in &in_bundle {
        if !owned.contains(key) && !owned_kinds.contains(&(key.0.clone(), key.2.clone())) {
            c.error(
                file,
                format!(
                    "CRD {:?} is present in bundle but not defined in CSV",
                    gvk_text(key)
                ),
            );
        }
    }
    // Descriptors name fields of the schema.
    for o in &owned_list {
        let Some(root) = crds
            .iter()
            .find(|(_, crd)| crd.metadata.name.as_deref() == Some(o.name.as_str()))
            .and_then(|(_, crd)| crd.spec.versions.iter().find(|v| v.name == o.version))
            .and_then(|v| v.schema.as_ref())
            .and_then(|s| s.open_api_v3_schema.as_ref())
        else {
            continue;
        };
        for (part, descriptors) in [
            ("spec", &o.spec_descriptors),
            ("status", &o.status_descriptors),
        ] {
            for d in descriptors {
                if !schema_has_path(root, part, &d.path) {
                    c.error(
                        file,
                        format!(
                            "{} {part}Descriptors path {:?} is not a field of the CRD's {part}",
                            o.name, d.path
                        ),
                    );
                }
            }
        }
    }
    owned
}

fn schema_has_path(root: &JSONSchemaProps, part: &str, path: &str) -> bool {
    let mut node = root;
    for step in std::iter::once(part).chain(path.split('.')) {
        let step = step.split('[').next().unwrap_or(step);
        match node.properties.as_ref().and_then(|p| p.get(step)) {
            Some(next) => node = next,
            None => return false,
        }
    }
    true
}

fn value_gvk(v: &Value) -> (String, String, String) {
    let api_version = v["apiVersion"].as_str().unwrap_or("");
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    (
        group.to_owned(),
        version.to_owned(),
        v["kind"].as_str().unwrap_or("").to_owned(),
    )
}

fn check_examples(
    c: &mut Checker,
    file: &str,
    csv: &ClusterServiceVersion,
    owned: &[(String, String, String)],
    crds: &[(String, CustomResourceDefinition)],
) {
    let annotations = labels_of(&csv.metadata.annotations);
    let Some(text) = annotations.get(csv::ALM_EXAMPLES) else {
        c.warn(file, "example annotations not found");
        return;
    };
    let examples: Vec<Value> = match serde_json::from_str(text) {
        Ok(e) => e,
        Err(e) => {
            c.error(
                file,
                format!("invalid example: alm-examples is not a JSON list of objects: {e}"),
            );
            return;
        }
    };
    let mut with_example = BTreeSet::new();
    for (i, example) in examples.iter().enumerate() {
        let gvk = value_gvk(example);
        let name = example["metadata"]["name"].as_str().unwrap_or("");
        let what = format!("alm-examples[{i}] ({} {name})", gvk.2);
        if !owned.contains(&gvk) {
            c.error(
                file,
                format!(
                    "{what}: example must have a provided API: {}",
                    gvk_text(&gvk)
                ),
            );
            continue;
        }
        with_example.insert(gvk.clone());
        if name.is_empty() {
            c.error(
                file,
                format!("{what}: metadata.name: required field missing"),
            );
        }
        strict::<ObjectMeta>(c, file, &format!("{what}.metadata"), &example["metadata"]);
        let schema = crds
            .iter()
            .filter(|(_, crd)| crd.spec.group == gvk.0 && crd.spec.names.kind == gvk.2)
            .flat_map(|(_, crd)| &crd.spec.versions)
            .find(|v| v.name == gvk.1)
            .and_then(|v| v.schema.as_ref())
            .and_then(|s| s.open_api_v3_schema.as_ref());
        if let Some(schema) = schema {
            for e in schema::validate_object(schema, example) {
                c.error(file, format!("{what}: {e}"));
            }
        }
    }
    for api in owned {
        if !with_example.contains(api) {
            c.warn(
                file,
                format!(
                    "provided API should have an example annotation: {}",
                    gvk_text(api)
                ),
            );
        }
    }
    match annotations.get(csv::INITIALIZATION_RESOURCE) {
        None => c.error(
            file,
            format!(
                "no {} annotation (the KubeOvn users create first)",
                csv::INITIALIZATION_RESOURCE
            ),
        ),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Err(e) => c.error(
                file,
                format!("{}: not JSON: {e}", csv::INITIALIZATION_RESOURCE),
            ),
            Ok(init) => {
                if init["kind"] != "KubeOvn" {
                    c.error(
                        file,
                        format!(
                            "{} is a {}, not a KubeOvn",
                            csv::INITIALIZATION_RESOURCE,
                            init["kind"]
                        ),
                    );
                }
                if !examples.contains(&init) {
                    c.error(
                        file,
                        format!(
                            "{} is not one of the alm-examples",
                            csv::INITIALIZATION_RESOURCE
                        ),
                    );
                }
            }
        },
    }
}

fn check_install(c: &mut Checker, file: &str, csv: &ClusterServiceVersion, manifests: &[Manifest]) {
    let Some(install) = &csv.spec.install else {
        c.error(file, "spec.install: required field missing");
        return;
    };
    if install.strategy.is_empty() {
        c.error(file, "spec.install.strategy: required field missing");
    } else if install.strategy != "deployment" {
        c.error(
            file,
            format!(
                "spec.install.strategy {:?} is not deployment",
                install.strategy
            ),
        );
    }
    let spec = &install.spec;
    if spec.deployments.is_empty() {
        c.error(file, "unable to find a deployment to install in the CSV");
    }
    let with_permissions: BTreeSet<&str> = spec
        .permissions
        .iter()
        .chain(&spec.cluster_permissions)
        .map(|p| p.service_account_name.as_str())
        .collect();
    let mut accounts = BTreeSet::new();
    for d in &spec.deployments {
        let at = format!("deployment {}", d.name);
        let selector = d.spec.selector.match_labels.clone().unwrap_or_default();
        let expected = BTreeMap::from([(
            OPERATOR_SELECTOR.0.to_owned(),
            OPERATOR_SELECTOR.1.to_owned(),
        )]);
        if d.name != OPERATOR_DEPLOYMENT
            || selector != expected
            || d.spec.selector.match_expressions.is_some()
        {
            c.error(
                file,
                format!("{at}: the operator Deployment must stay {OPERATOR_DEPLOYMENT} with selector {expected:?} (OLM cannot change a Deployment's name or selector in an upgrade)"),
            );
        }
        let pod_labels = d
            .spec
            .template
            .metadata
            .as_ref()
            .map(|m| labels_of(&m.labels))
            .unwrap_or_default();
        if selector.iter().any(|(k, v)| pod_labels.get(k) != Some(v)) {
            c.error(
                file,
                format!("{at}: selector does not match template labels"),
            );
        }
        let Some(pod) = &d.spec.template.spec else {
            c.error(file, format!("{at}: no pod spec"));
            continue;
        };
        let account = pod
            .service_account_name
            .clone()
            .unwrap_or_else(|| "default".into());
        if !with_permissions.contains(account.as_str()) {
            c.error(file, format!("{at}: ServiceAccount {account} has no permissions in the CSV (OLM creates only accounts that have)"));
        }
        accounts.insert(account);
        for container in pod
            .containers
            .iter()
            .chain(pod.init_containers.iter().flatten())
        {
            let requests = container
                .resources
                .as_ref()
                .and_then(|r| r.requests.clone())
                .unwrap_or_default();
            if !(requests.contains_key("cpu") && requests.contains_key("memory")) {
                c.warn(
                    file,
                    format!("unable to find the resource requests for the container: ({}). It is recommended to ensure the resource request for CPU and Memory.", container.name),
                );
            }
        }
    }
    for m in manifests.iter().filter(|m| m.kind() == "ServiceAccount") {
        let name = m.value["metadata"]["name"].as_str().unwrap_or("");
        if accounts.contains(name) {
            c.error(
                &m.file,
                format!("invalid service account found in bundle. This service account {name} in your bundle is not valid, because a service account with the same name was already specified in your CSV."),
            );
        }
    }
    let crd_writes = [
        "create",
        "*",
        "patch",
        "update",
        "delete",
        "deletecollection",
    ];
    for (scope, perms) in [
        ("permissions", &spec.permissions),
        ("clusterPermissions", &spec.cluster_permissions),
    ] {
        for p in perms.iter() {
            if p.rules.is_empty() {
                c.error(
                    file,
                    format!("{scope} of {}: no rules", p.service_account_name),
                );
            }
            for rule in &p.rules {
                let groups = rule.api_groups.clone().unwrap_or_default();
                let resources = rule.resources.clone().unwrap_or_default();
                let verbs = &rule.verbs;
                let shown = format!("{scope} rule {groups:?} {resources:?} {verbs:?}");
                if groups
                    .iter()
                    .any(|g| g == "apiextensions.k8s.io" || g == "*")
                    && resources
                        .iter()
                        .any(|r| r == "customresourcedefinitions" || r == "*")
                    && verbs.iter().any(|v| crd_writes.contains(&v.as_str()))
                {
                    c.warn(file, "CSV contains permissions to create CRD. An Operator shouldn't deploy or manage other operators (such patterns are known as meta or super operators or include CRDs in its Operands). It's the Operator Lifecycle Manager's job to manage the deployment and lifecycle of operators.");
                    c.error(
                        file,
                        format!("{shown}: the operator must not write CRDs (OLM installs them)"),
                    );
                }
                if verbs.iter().any(|v| v == "*") {
                    c.error(
                        file,
                        format!("{shown}: `*` verbs are not least privilege; name the verbs"),
                    );
                }
                if resources.iter().any(|r| r == "*")
                    && !groups.iter().all(|g| OWN_GROUPS.contains(&g.as_str()))
                {
                    c.error(
                        file,
                        format!("{shown}: `*` resources outside kube-ovn's own API groups"),
                    );
                }
                if scope == "clusterPermissions"
                    && groups.iter().any(|g| g.is_empty() || g == "*")
                    && resources.iter().any(|r| r == "secrets" || r == "*")
                {
                    c.error(file, format!("{shown}: secrets cluster-wide; grant them in `permissions` (the operator's namespace) if at all"));
                }
            }
        }
    }
}

fn check_related_images(c: &mut Checker, file: &str, csv: &ClusterServiceVersion) {
    let related: BTreeSet<&str> = csv
        .spec
        .related_images
        .iter()
        .map(|r| r.image.as_str())
        .collect();
    for (i, r) in csv.spec.related_images.iter().enumerate() {
        if r.image.is_empty() {
            c.error(file, format!("relatedImages[{i}] has an empty image field"));
        } else if let Err(why) = check_image_reference(&r.image) {
            c.error(
                file,
                format!(
                    "relatedImages[{i}] has an invalid image pullspec {:?}: {why}",
                    r.image
                ),
            );
        }
    }
    let Some(install) = &csv.spec.install else {
        return;
    };
    for d in &install.spec.deployments {
        let Some(pod) = &d.spec.template.spec else {
            continue;
        };
        for container in pod
            .containers
            .iter()
            .chain(pod.init_containers.iter().flatten())
        {
            let mut images: Vec<(String, String)> = Vec::new();
            if let Some(image) = &container.image {
                images.push(("image".into(), image.clone()));
            }
            for env in container.env.iter().flatten() {
                if env.name.starts_with("RELATED_IMAGE_") {
                    if let Some(value) = &env.value {
                        images.push((format!("env {}", env.name), value.clone()));
                    }
                }
            }
            for (what, image) in images {
                if !related.contains(image.as_str()) {
                    c.error(
                        file,
                        format!("deployment {} container {} {what}: {image} is not in spec.relatedImages", d.name, container.name),
                    );
                }
            }
        }
    }
}

/// A `skipRange` as OLM reads it (blang/semver `ParseRange`): comparators (`>=1.0.0`,
/// `<2.0.0`, `!=1.2.3`, `1.0.0`) separated by spaces are ANDed, `||` ORs such groups. Wildcard
/// versions (`1.x`) are refused here.
#[derive(Debug, Clone, PartialEq)]
pub struct SkipRange {
    any_of: Vec<Vec<(Op, semver::Version)>>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl SkipRange {
    pub fn parse(text: &str) -> Result<SkipRange, String> {
        let mut any_of = Vec::new();
        for part in text.split("||") {
            let mut all = Vec::new();
            for comparator in part.split_whitespace() {
                let (op, version) = [
                    (">=", Op::Ge),
                    ("<=", Op::Le),
                    ("!=", Op::Ne),
                    ("==", Op::Eq),
                    (">", Op::Gt),
                    ("<", Op::Lt),
                    ("=", Op::Eq),
                    ("!", Op::Ne),
                ]
                .iter()
                .find_map(|(prefix, op)| comparator.strip_prefix(prefix).map(|v| (*op, v)))
                .unwrap_or((Op::Eq, comparator));
                if version.split('.').any(|p| p == "x" || p == "X" || p == "*") {
                    return Err(format!(
                        "wildcard version in {comparator:?} is not supported"
                    ));
                }
                let version = semver::Version::parse(version)
                    .map_err(|e| format!("could not parse comparator {comparator:?}: {e}"))?;
                all.push((op, version));
            }
            if all.is_empty() {
                return Err(format!("empty range in {text:?}"));
            }
            any_of.push(all);
        }
        Ok(SkipRange { any_of })
    }

    pub fn matches(&self, v: &semver::Version) -> bool {
        self.any_of.iter().any(|all| {
            all.iter().all(|(op, w)| match op {
                Op::Eq => v == w,
                Op::Ne => v != w,
                Op::Gt => v > w,
                Op::Ge => v >= w,
                Op::Lt => v < w,
                Op::Le => v <= w,
            })
        })
    }
}

/// What `opm validate` checks of the catalog, and that it serves this bundle.
fn check_catalog(
    c: &mut Checker,
    bundle: &Bundle,
    csv: Option<&ClusterServiceVersion>,
    annotations: Option<&BTreeMap<String, String>>,
) {
    let file = CATALOG_FILE;
    let Some(text) = bundle.files.get(file) else {
        c.error(file, "missing: the file-based catalog of the package");
        return;
    };
    let mut packages = Vec::new();
    let mut channels = Vec::new();
    let mut bundles = Vec::new();
    for (i, doc) in yaml_documents(c, file, text).into_iter().enumerate() {
        let schema = doc["schema"].as_str().unwrap_or("").to_owned();
        if ![
            catalog::SCHEMA_PACKAGE,
            catalog::SCHEMA_CHANNEL,
            catalog::SCHEMA_BUNDLE,
        ]
        .contains(&schema.as_str())
        {
            if schema.is_empty() {
                c.error(file, format!("blob {i}: no schema"));
            }
            continue; // other schemas are kept and ignored, as opm does
        }
        match strict::<Blob>(c, file, &format!("blob {i} ({schema})"), &doc) {
            Some(Blob::Package(p)) => packages.push(p),
            Some(Blob::Channel(ch)) => channels.push(ch),
            Some(Blob::Bundle(b)) => bundles.push(b),
            None => {}
        }
    }
    let mut names = BTreeSet::new();
    for p in &packages {
        if p.name.is_empty() {
            c.error(file, "config contains package with no name");
        } else if !is_dns1123_label(&p.name) {
            c.error(file, format!("invalid package name {:?}", p.name));
        }
        if !names.insert(p.name.clone()) {
            c.error(file, format!("duplicate package {:?}", p.name));
        }
        if p.default_channel.is_empty() {
            c.error(
                file,
                format!("invalid package {:?}: default channel must be set", p.name),
            );
        } else if !channels
            .iter()
            .any(|ch| ch.package == p.name && ch.name == p.default_channel)
        {
            c.error(
                file,
                format!(
                    "invalid package {:?}: default channel {:?} not found in channels list",
                    p.name, p.default_channel
                ),
            );
        }
        if !channels.iter().any(|ch| ch.package == p.name) {
            c.error(
                file,
                format!(
                    "invalid package {:?}: package must contain at least one channel",
                    p.name
                ),
            );
        }
    }
    let mut channel_keys = BTreeSet::new();
    let mut entries_of_package: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for ch in &channels {
        if !names.contains(&ch.package) {
            c.error(
                file,
                format!("unknown package {:?} for channel {:?}", ch.package, ch.name),
            );
        }
        if ch.name.is_empty() {
            c.error(
                file,
                format!("package {:?} contains channel with no name", ch.package),
            );
        }
        if !channel_keys.insert((ch.package.clone(), ch.name.clone())) {
            c.error(
                file,
                format!(
                    "package {:?} has duplicate channel {:?}",
                    ch.package, ch.name
                ),
            );
        }
        let mut seen = BTreeSet::new();
        for e in &ch.entries {
            if !seen.insert(e.name.clone()) {
                c.error(
                    file,
                    format!(
                        "invalid package {:?}, channel {:?}: duplicate entry {:?}",
                        ch.package, ch.name, e.name
                    ),
                );
            }
            entries_of_package
                .entry(ch.package.clone())
                .or_default()
                .insert(e.name.clone());
        }
        for message in channel_graph_errors(ch) {
            c.error(file, format!("invalid channel {:?}: {message}", ch.name));
        }
    }
    let mut bundle_names = BTreeSet::new();
    let mut versions: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for b in &bundles {
        if !names.contains(&b.package) {
            c.error(
                file,
                format!("unknown package {:?} for bundle {:?}", b.package, b.name),
            );
        }
        if !bundle_names.insert((b.package.clone(), b.name.clone())) {
            c.error(
                file,
                format!("package {:?} has duplicate bundle {:?}", b.package, b.name),
            );
        }
        let package_props: Vec<&catalog::Property> = b
            .properties
            .iter()
            .filter(|p| p.type_ == catalog::PROPERTY_PACKAGE)
            .collect();
        if package_props.len() != 1 {
            c.error(file, format!("package {:?} bundle {:?} must have exactly 1 \"olm.package\" property, found {}", b.package, b.name, package_props.len()));
        }
        if let Some(prop) = package_props.first() {
            match serde_json::from_value::<catalog::PackageProperty>(prop.value.clone()) {
                Err(e) => c.error(
                    file,
                    format!("parse properties for bundle {:?}: {e}", b.name),
                ),
                Ok(p) => {
                    if p.package_name != b.package {
                        c.error(
                            file,
                            format!(
                                "package {:?} does not match \"olm.package\" property {:?}",
                                b.package, p.package_name
                            ),
                        );
                    }
                    match semver::Version::parse(&p.version) {
                        Err(e) => c.error(
                            file,
                            format!(
                                "error parsing bundle {:?} version {:?}: {e}",
                                b.name, p.version
                            ),
                        ),
                        Ok(v) => versions
                            .entry((b.package.clone(), v.to_string()))
                            .or_default()
                            .push(b.name.clone()),
                    }
                }
            }
        }
        if b.image.is_empty() {
            c.error(
                file,
                format!("invalid bundle {:?}: bundle image must be set", b.name),
            );
        } else if let Err(why) = check_image_reference(&b.image) {
            c.error(
                file,
                format!(
                    "package {:?} bundle {:?} image {:?}: {why}",
                    b.package, b.name, b.image
                ),
            );
        }
        for (i, r) in b.related_images.iter().enumerate() {
            if let Err(why) = check_image_reference(&r.image) {
                c.error(
                    file,
                    format!(
                        "package {:?} bundle {:?} relatedImages[{i}].image {:?}: {why}",
                        b.package, b.name, r.image
                    ),
                );
            }
        }
        if !entries_of_package
            .get(&b.package)
            .is_some_and(|e| e.contains(&b.name))
        {
            c.error(
                file,
                format!(
                    "package {:?}, bundle {:?} not found in any channel entries",
                    b.package, b.name
                ),
            );
        }
    }
    for (package, entries) in &entries_of_package {
        let missing: Vec<&String> = entries
            .iter()
            .filter(|e| !bundle_names.contains(&(package.clone(), (*e).clone())))
            .collect();
        if !missing.is_empty() {
            c.error(file, format!("no olm.bundle blobs found in package {package:?} for olm.channel entries {missing:?}"));
        }
    }
    for ((package, version), names) in &versions {
        if names.len() > 1 {
            c.error(file, format!("invalid package {package:?}: duplicate versions found in bundles: {{{version}: {names:?}}}"));
        }
    }

    // This bundle in the catalog.
    let (Some(csv), Some(annotations)) = (csv, annotations) else {
        return;
    };
    let package = annotations.get(PACKAGE_LABEL).cloned().unwrap_or_default();
    let csv_name = csv.metadata.name.clone().unwrap_or_default();
    if !names.contains(&package) {
        c.error(
            file,
            format!("no olm.package {package:?} (the bundle's package)"),
        );
        return;
    }
    if let Some(default) = annotations.get(DEFAULT_CHANNEL_LABEL) {
        if packages
            .iter()
            .any(|p| p.name == package && &p.default_channel != default)
        {
            c.error(
                file,
                format!("the package's default channel differs from the bundle's {default:?}"),
            );
        }
    }
    let skip_range = labels_of(&csv.metadata.annotations)
        .get(csv::SKIP_RANGE)
        .cloned()
        .unwrap_or_default();
    for name in annotations
        .get(CHANNELS_LABEL)
        .map(|v| v.split(',').map(str::trim).collect::<Vec<_>>())
        .unwrap_or_default()
    {
        let Some(ch) = channels
            .iter()
            .find(|ch| ch.package == package && ch.name == name)
        else {
            c.error(file, format!("no channel {name:?}, which the bundle names"));
            continue;
        };
        let Some(entry) = ch.entries.iter().find(|e| e.name == csv_name) else {
            c.error(file, format!("channel {name:?} has no entry {csv_name}"));
            continue;
        };
        if entry.replaces != csv.spec.replaces.clone().unwrap_or_default()
            || entry.skips != csv.spec.skips
            || entry.skip_range != skip_range
        {
            c.error(file, format!("channel {name:?} entry {csv_name}: replaces/skips/skipRange differ from the CSV's"));
        }
        if channel_head(ch).ok().as_deref() != Some(csv_name.as_str()) {
            c.error(
                file,
                format!("channel {name:?}: {csv_name} is not the head"),
            );
        }
    }
    let Some(b) = bundles
        .iter()
        .find(|b| b.package == package && b.name == csv_name)
    else {
        c.error(file, format!("no olm.bundle {csv_name}"));
        return;
    };
    let version_prop = b
        .properties
        .iter()
        .find(|p| p.type_ == catalog::PROPERTY_PACKAGE)
        .map(|p| p.value["version"].clone());
    if version_prop != Some(Value::String(csv.spec.version.clone())) {
        c.error(
            file,
            format!(
                "olm.bundle {csv_name}: olm.package version differs from the CSV's {}",
                csv.spec.version
            ),
        );
    }
    let gvks: BTreeSet<(String, String, String)> = b
        .properties
        .iter()
        .filter(|p| p.type_ == catalog::PROPERTY_GVK)
        .map(|p| value_gvk_property(&p.value))
        .collect();
    let owned: BTreeSet<(String, String, String)> = csv
        .spec
        .customresourcedefinitions
        .iter()
        .flat_map(|d| &d.owned)
        .map(|o| {
            (
                o.name.split_once('.').map_or("", |(_, g)| g).to_owned(),
                o.version.clone(),
                o.kind.clone(),
            )
        })
        .collect();
    if gvks != owned {
        c.error(
            file,
            format!("olm.bundle {csv_name}: olm.gvk properties differ from the CSV's owned CRDs"),
        );
    }
    let images: BTreeSet<&str> = b.related_images.iter().map(|r| r.image.as_str()).collect();
    for r in &csv.spec.related_images {
        if !images.contains(r.image.as_str()) {
            c.error(
                file,
                format!("olm.bundle {csv_name}: relatedImages lacks {}", r.image),
            );
        }
    }
}

fn value_gvk_property(v: &Value) -> (String, String, String) {
    let s = |k: &str| v[k].as_str().unwrap_or("").to_owned();
    (s("group"), s("version"), s("kind"))
}

/// The channel's head: the one entry nothing replaces or skips (opm `Channel.Head`).
fn channel_head(ch: &catalog::Channel) -> Result<String, String> {
    let mut incoming = BTreeSet::new();
    for e in &ch.entries {
        if !e.replaces.is_empty() {
            incoming.insert(e.replaces.as_str());
        }
        incoming.extend(e.skips.iter().map(String::as_str));
    }
    let heads: BTreeSet<&str> = ch
        .entries
        .iter()
        .map(|e| e.name.as_str())
        .filter(|n| !incoming.contains(n))
        .collect();
    match heads.len() {
        0 => Err("no channel head found in graph".into()),
        1 => Ok(heads.into_iter().next().expect("one").to_owned()),
        _ => Err(format!(
            "multiple channel heads found in graph: {}",
            heads.into_iter().collect::<Vec<_>>().join(", ")
        )),
    }
}

/// opm's `Channel.Validate`: entries, one head, the replaces chain without cycles, no
/// stranded bundles, skips and skipRange well-formed.
fn channel_graph_errors(ch: &catalog::Channel) -> Vec<String> {
    let mut errors = Vec::new();
    if ch.entries.is_empty() {
        errors.push("channel must contain at least one bundle".into());
        return errors;
    }
    for e in &ch.entries {
        for (i, skip) in e.skips.iter().enumerate() {
            if skip.is_empty() {
                errors.push(format!("invalid bundle {:?}: skip[{i}] is empty", e.name));
            }
        }
        if !e.skip_range.is_empty() {
            if let Err(why) = SkipRange::parse(&e.skip_range) {
                errors.push(format!(
                    "invalid bundle {:?}: invalid skipRange {:?}: {why}",
                    e.name, e.skip_range
                ));
            }
        }
    }
    let head = match channel_head(ch) {
        Ok(h) => h,
        Err(e) => {
            errors.push(e);
            return errors;
        }
    };
    let by_name: BTreeMap<&str, &catalog::ChannelEntry> =
        ch.entries.iter().map(|e| (e.name.as_str(), e)).collect();
    let skipped: BTreeSet<&str> = ch
        .entries
        .iter()
        .flat_map(|e| e.skips.iter().map(String::as_str))
        .collect();
    let mut chain = vec![head.clone()];
    let mut on_chain: BTreeSet<String> = BTreeSet::from([head.clone()]);
    let mut current = by_name.get(head.as_str()).copied();
    while let Some(entry) = current {
        if entry.replaces.is_empty() || skipped.contains(entry.replaces.as_str()) {
            break;
        }
        chain.push(entry.replaces.clone());
        if !on_chain.insert(entry.replaces.clone()) {
            let start = chain.iter().position(|n| *n == entry.replaces).unwrap_or(0);
            errors.push(format!(
                "detected cycle in replaces chain of upgrade graph: {}",
                chain[start..].join(" -> ")
            ));
            return errors;
        }
        current = by_name.get(entry.replaces.as_str()).copied();
    }
    let stranded: Vec<&str> = ch
        .entries
        .iter()
        .map(|e| e.name.as_str())
        .filter(|n| !on_chain.contains(*n) && !skipped.contains(n))
        .collect();
    if !stranded.is_empty() {
        errors.push(format!(
            "channel contains one or more stranded bundles: {}",
            stranded.join(", ")
        ));
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_ranges_read_as_blang_semver_does() {
        let r = SkipRange::parse(">=0.0.0 <0.1.0").unwrap();
        assert!(r.matches(&semver::Version::new(0, 0, 5)));
        assert!(!r.matches(&semver::Version::new(0, 1, 0)));
        let r = SkipRange::parse("<1.0.0 || >=2.0.0").unwrap();
        assert!(r.matches(&semver::Version::new(2, 1, 0)));
        assert!(!r.matches(&semver::Version::new(1, 5, 0)));
        assert!(SkipRange::parse(">=0.x").is_err());
        assert!(SkipRange::parse("nonsense").is_err());
        assert!(SkipRange::parse("").is_err());
    }

    #[test]
    fn csv_names_are_subdomains_and_label_values() {
        assert_eq!(csv_name_problem("kube-ovn.v0.1.0"), None);
        assert!(csv_name_problem("Kube_OVN.v0.1.0").is_some());
        assert!(csv_name_problem(&format!("{}.v0.1.0", "a".repeat(60))).is_some());
    }
}
