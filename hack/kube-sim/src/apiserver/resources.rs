//! The resource table: which kinds the server serves (the built-in kinds our code uses, plus
//! the resources of every established CustomResourceDefinition), and the discovery documents
//! (`/api`, `/api/v1`, `/apis`, `/apis/<group>/<version>`) rendered from it.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::printers;
use super::status::FieldError;

/// Verbs of every collection we serve.
const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
/// Verbs of the status subresource.
const STATUS_VERBS: [&str; 3] = ["get", "patch", "update"];

/// One served resource (a collection such as `pods` or `subnets.kubeovn.io`).
#[derive(Debug, Clone)]
pub struct ResourceType {
    pub group: String,
    /// Served versions; the first is the preferred (and storage) version.
    pub versions: Vec<String>,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub status_subresource: bool,
    /// `openAPIV3Schema` per version, for custom resources only.
    pub schemas: BTreeMap<String, Value>,
    /// Field selectors this kind supports besides `metadata.name` and `metadata.namespace`.
    pub field_labels: Vec<String>,
    /// Served because a CustomResourceDefinition says so.
    pub custom: bool,
    /// `kubectl get` columns between NAME and AGE (a CRD's additionalPrinterColumns replace AGE).
    pub printer_columns: Vec<PrinterColumn>,
}

/// One column of the Table that `kubectl get` shows.
#[derive(Debug, Clone)]
pub struct PrinterColumn {
    pub name: String,
    /// OpenAPI type: string, integer, number, boolean, date.
    pub kind: String,
    /// The field, as a JSON pointer (`.spec.cidrBlock` becomes `/spec/cidrBlock`).
    pub pointer: String,
    /// A cell computed from the whole object (see `printers.rs`), instead of the pointer.
    pub derive: Option<fn(&Value) -> Value>,
    /// A CRD column's JSONPath with list filters (`.status.conditions[?(@.type=="Ready")].status`),
    /// instead of the pointer.
    pub steps: Option<Vec<PathStep>>,
    /// 0 shows always; more only with `-o wide` (as the API server marks them).
    pub priority: i64,
}

/// One step of the JSONPath subset CRD printer columns use.
#[derive(Debug, Clone, PartialEq)]
pub enum PathStep {
    Field(String),
    /// `[?(@.key=="value")]`: the first list element whose `key` equals `value`.
    Filter {
        key: String,
        value: String,
    },
}

/// Parses `.a.b[?(@.k=="v")].c`; `None` for anything beyond fields and equality filters.
pub fn parse_json_path(path: &str) -> Option<Vec<PathStep>> {
    let mut steps = Vec::new();
    let mut rest = path.strip_prefix('.')?;
    let field_ok = |f: &str| {
        !f.is_empty()
            && f.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
    };
    while !rest.is_empty() {
        let end = rest.find(['.', '[']).unwrap_or(rest.len());
        let field = &rest[..end];
        if !field_ok(field) {
            return None;
        }
        steps.push(PathStep::Field(field.to_string()));
        rest = &rest[end..];
        if let Some(filter) = rest.strip_prefix("[?(@.") {
            let close = filter.find(")]")?;
            let (key, value) = filter[..close].split_once("==")?;
            let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
            if !field_ok(key.trim()) {
                return None;
            }
            steps.push(PathStep::Filter {
                key: key.trim().to_string(),
                value: value.to_string(),
            });
            rest = &filter[close + 2..];
        }
        rest = rest.strip_prefix('.').unwrap_or(rest);
    }
    Some(steps)
}

/// Follows `steps` in `object`.
pub fn eval_json_path<'v>(object: &'v Value, steps: &[PathStep]) -> Option<&'v Value> {
    let mut at = object;
    for step in steps {
        at = match step {
            PathStep::Field(f) => at.get(f)?,
            PathStep::Filter { key, value } => at
                .as_array()?
                .iter()
                .find(|e| e.get(key).and_then(Value::as_str) == Some(value.as_str()))?,
        };
    }
    Some(at)
}

impl PrinterColumn {
    fn new(name: &str, pointer: &str) -> Self {
        Self {
            name: name.to_string(),
            kind: "string".to_string(),
            pointer: pointer.to_string(),
            derive: None,
            steps: None,
            priority: 0,
        }
    }

    fn derived(name: &str, derive: fn(&Value) -> Value) -> Self {
        Self {
            derive: Some(derive),
            ..Self::new(name, "")
        }
    }

    /// From a CRD's `additionalPrinterColumns` entry; `None` for JSONPath beyond fields and
    /// equality filters.
    fn from_crd(column: &Value) -> Option<Self> {
        let path = column.get("jsonPath")?.as_str()?;
        let steps = parse_json_path(path)?;
        Some(Self {
            name: column
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or(path)
                .to_string(),
            kind: column
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("string")
                .to_string(),
            pointer: String::new(),
            derive: None,
            steps: Some(steps),
            priority: column.get("priority").and_then(Value::as_i64).unwrap_or(0),
        })
    }

    /// The cell of this column for `object`.
    pub fn cell(&self, object: &Value) -> Value {
        if let Some(derive) = self.derive {
            return derive(object);
        }
        match &self.steps {
            Some(steps) => eval_json_path(object, steps)
                .cloned()
                .unwrap_or(Value::Null),
            None => object
                .pointer(&self.pointer)
                .cloned()
                .unwrap_or(Value::Null),
        }
    }
}

impl ResourceType {
    fn builtin(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> Self {
        Self {
            group: group.to_string(),
            versions: vec![version.to_string()],
            kind: kind.to_string(),
            plural: plural.to_string(),
            singular: kind.to_lowercase(),
            namespaced,
            short_names: Vec::new(),
            categories: Vec::new(),
            status_subresource: false,
            schemas: BTreeMap::new(),
            field_labels: Vec::new(),
            custom: false,
            printer_columns: Vec::new(),
        }
    }

    fn columns(mut self, columns: &[(&str, &str)]) -> Self {
        self.printer_columns = columns
            .iter()
            .map(|(name, pointer)| PrinterColumn::new(name, pointer))
            .collect();
        self
    }

    fn derived_columns(mut self, columns: Vec<PrinterColumn>) -> Self {
        self.printer_columns = columns;
        self
    }

    fn short(mut self, names: &[&str]) -> Self {
        self.short_names = names.iter().map(|n| n.to_string()).collect();
        self
    }

    fn with_status(mut self) -> Self {
        self.status_subresource = true;
        self
    }

    fn in_all(mut self) -> Self {
        self.categories = vec!["all".to_string()];
        self
    }

    fn fields(mut self, labels: &[&str]) -> Self {
        self.field_labels = labels.iter().map(|n| n.to_string()).collect();
        self
    }

    /// `apiVersion` of objects served at `version`.
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    /// The name clients see in messages: `pods`, `subnets.kubeovn.io`.
    pub fn qualified_name(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub fn serves(&self, version: &str) -> bool {
        self.versions.iter().any(|v| v == version)
    }

    /// Whether `label` may appear in a field selector for this kind.
    pub fn supports_field(&self, label: &str) -> bool {
        matches!(label, "metadata.name" | "metadata.namespace")
            || self.field_labels.iter().any(|l| l == label)
    }

    /// The entries of this resource in an `APIResourceList`.
    fn discovery_entries(&self) -> Vec<Value> {
        // Reviews are answered, never stored: create is all they take.
        let verbs: &[&str] = if super::auth::Review::of(&self.group, &self.plural).is_some() {
            &["create"]
        } else {
            &VERBS
        };
        let mut main = json!({
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": verbs,
        });
        if !self.short_names.is_empty() {
            main["shortNames"] = json!(self.short_names);
        }
        if !self.categories.is_empty() {
            main["categories"] = json!(self.categories);
        }
        let mut entries = vec![main];
        if self.status_subresource {
            entries.push(json!({
                "name": format!("{}/status", self.plural),
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": self.kind,
                "verbs": STATUS_VERBS,
            }));
        }
        if self.group.is_empty() && self.plural == "serviceaccounts" {
            entries.push(json!({
                "name": "serviceaccounts/token",
                "singularName": "",
                "namespaced": true,
                "group": "authentication.k8s.io",
                "version": "v1",
                "kind": "TokenRequest",
                "verbs": ["create"],
            }));
        }
        if super::scale::serves(self) {
            entries.push(json!({
                "name": format!("{}/scale", self.plural),
                "singularName": "",
                "namespaced": self.namespaced,
                "group": "autoscaling",
                "version": "v1",
                "kind": "Scale",
                "verbs": STATUS_VERBS,
            }));
        }
        entries
    }
}

/// Everything the server serves.
#[derive(Debug, Clone)]
pub struct ResourceTable {
    types: Vec<ResourceType>,
}

impl Default for ResourceTable {
    fn default() -> Self {
        Self::builtin()
    }
}

impl ResourceTable {
    /// The built-in kinds our code and tests use.
    pub fn builtin() -> Self {
        let pod_fields = [
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ];
        let event_fields = [
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ];
        let rbac = "rbac.authorization.k8s.io";
        let types = vec![
            ResourceType::builtin("", "v1", "Namespace", "namespaces", false)
                .short(&["ns"])
                .with_status()
                .fields(&["status.phase"])
                .columns(&[("Status", "/status/phase")]),
            ResourceType::builtin("", "v1", "Node", "nodes", false)
                .short(&["no"])
                .with_status()
                .fields(&["spec.unschedulable"])
                .derived_columns(vec![
                    PrinterColumn::derived("Status", printers::node_status),
                    PrinterColumn::derived("Roles", printers::node_roles),
                    PrinterColumn::new("Version", "/status/nodeInfo/kubeletVersion"),
                    PrinterColumn::derived("Internal-IP", printers::node_internal_ip),
                ]),
            ResourceType::builtin("", "v1", "Pod", "pods", true)
                .short(&["po"])
                .with_status()
                .in_all()
                .fields(&pod_fields)
                .columns(&[
                    ("Status", "/status/phase"),
                    ("Node", "/spec/nodeName"),
                    ("IP", "/status/podIP"),
                ]),
            ResourceType::builtin("", "v1", "Event", "events", true)
                .short(&["ev"])
                .fields(&event_fields),
            ResourceType::builtin("", "v1", "ConfigMap", "configmaps", true).short(&["cm"]),
            ResourceType::builtin("", "v1", "Secret", "secrets", true).fields(&["type"]),
            ResourceType::builtin("", "v1", "ServiceAccount", "serviceaccounts", true)
                .short(&["sa"]),
            ResourceType::builtin("", "v1", "Service", "services", true)
                .short(&["svc"])
                .with_status()
                .in_all(),
            ResourceType::builtin("events.k8s.io", "v1", "Event", "events", true)
                .short(&["ev"])
                .fields(&[
                    "reason",
                    "type",
                    "reportingController",
                    "regarding.kind",
                    "regarding.name",
                    "regarding.namespace",
                    "regarding.uid",
                    "regarding.apiVersion",
                    "regarding.fieldPath",
                ]),
            ResourceType::builtin("coordination.k8s.io", "v1", "Lease", "leases", true),
            ResourceType::builtin("apps", "v1", "DaemonSet", "daemonsets", true)
                .short(&["ds"])
                .with_status()
                .in_all()
                .columns(&[
                    ("Desired", "/status/desiredNumberScheduled"),
                    ("Current", "/status/currentNumberScheduled"),
                    ("Ready", "/status/numberReady"),
                    ("Up-to-date", "/status/updatedNumberScheduled"),
                    ("Available", "/status/numberAvailable"),
                ]),
            ResourceType::builtin("apps", "v1", "Deployment", "deployments", true)
                .short(&["deploy"])
                .with_status()
                .in_all()
                .derived_columns(vec![
                    PrinterColumn::derived("Ready", printers::ready_of_replicas),
                    PrinterColumn::new("Up-to-date", "/status/updatedReplicas"),
                    PrinterColumn::new("Available", "/status/availableReplicas"),
                ]),
            ResourceType::builtin("apps", "v1", "ReplicaSet", "replicasets", true)
                .short(&["rs"])
                .with_status()
                .in_all()
                .columns(&[
                    ("Desired", "/spec/replicas"),
                    ("Current", "/status/replicas"),
                    ("Ready", "/status/readyReplicas"),
                ]),
            ResourceType::builtin("apps", "v1", "StatefulSet", "statefulsets", true)
                .short(&["sts"])
                .with_status()
                .in_all()
                .derived_columns(vec![PrinterColumn::derived(
                    "Ready",
                    printers::ready_of_replicas,
                )]),
            ResourceType::builtin(
                "apps",
                "v1",
                "ControllerRevision",
                "controllerrevisions",
                true,
            )
            .columns(&[("Revision", "/revision")]),
            ResourceType::builtin(rbac, "v1", "ClusterRole", "clusterroles", false),
            ResourceType::builtin(
                "authentication.k8s.io",
                "v1",
                "TokenReview",
                "tokenreviews",
                false,
            ),
            ResourceType::builtin(
                "authorization.k8s.io",
                "v1",
                "SubjectAccessReview",
                "subjectaccessreviews",
                false,
            ),
            ResourceType::builtin(
                "authorization.k8s.io",
                "v1",
                "SelfSubjectAccessReview",
                "selfsubjectaccessreviews",
                false,
            ),
            ResourceType::builtin(
                "authorization.k8s.io",
                "v1",
                "LocalSubjectAccessReview",
                "localsubjectaccessreviews",
                true,
            ),
            ResourceType::builtin(
                rbac,
                "v1",
                "ClusterRoleBinding",
                "clusterrolebindings",
                false,
            ),
            ResourceType::builtin(rbac, "v1", "Role", "roles", true),
            ResourceType::builtin(rbac, "v1", "RoleBinding", "rolebindings", true),
            ResourceType::builtin(
                "apiextensions.k8s.io",
                "v1",
                "CustomResourceDefinition",
                "customresourcedefinitions",
                false,
            )
            .short(&["crd", "crds"])
            .with_status(),
        ];
        Self { types }
    }

    /// The resource served at `group/version` under `plural`.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == group && t.plural == plural && t.serves(version))
    }

    /// The resource of `kind` in `group`, whatever version.
    pub fn find_kind(&self, group: &str, kind: &str) -> Option<&ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == group && t.kind == kind)
    }

    pub fn types(&self) -> &[ResourceType] {
        &self.types
    }

    /// Serve a custom resource (replacing an earlier definition of the same group and plural).
    pub fn register(&mut self, custom: ResourceType) {
        self.unregister(&custom.group, &custom.plural);
        self.types.push(custom);
    }

    pub fn unregister(&mut self, group: &str, plural: &str) {
        self.types
            .retain(|t| !(t.custom && t.group == group && t.plural == plural));
    }

    /// Groups in first-seen order, each with its versions (preferred first).
    fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for t in self.types.iter().filter(|t| !t.group.is_empty()) {
            let entry = match groups.iter_mut().find(|(g, _)| *g == t.group) {
                Some(entry) => entry,
                None => {
                    groups.push((t.group.clone(), Vec::new()));
                    groups.last_mut().expect("just pushed")
                }
            };
            for v in &t.versions {
                if !entry.1.contains(v) {
                    entry.1.push(v.clone());
                }
            }
        }
        groups
    }

    /// `GET /api`.
    pub fn core_versions(&self, server_address: &str) -> Value {
        json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": server_address }],
        })
    }

    /// `GET /apis`.
    pub fn group_list(&self) -> Value {
        let groups: Vec<Value> = self
            .groups()
            .iter()
            .map(|(g, vs)| group_document(g, vs))
            .collect();
        json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
    }

    /// `GET /apis/<group>`.
    pub fn group(&self, group: &str) -> Option<Value> {
        self.groups()
            .iter()
            .find(|(g, _)| g == group)
            .map(|(g, vs)| {
                let mut doc = group_document(g, vs);
                doc["kind"] = json!("APIGroup");
                doc["apiVersion"] = json!("v1");
                doc
            })
    }

    /// `GET /api/v1` or `GET /apis/<group>/<version>`; `None` if nothing is served there.
    pub fn resource_list(&self, group: &str, version: &str) -> Option<Value> {
        let served: Vec<&ResourceType> = self
            .types
            .iter()
            .filter(|t| t.group == group && t.serves(version))
            .collect();
        if served.is_empty() {
            return None;
        }
        let resources: Vec<Value> = served.iter().flat_map(|t| t.discovery_entries()).collect();
        let group_version = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        Some(json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version,
            "resources": resources,
        }))
    }
}

fn group_document(group: &str, versions: &[String]) -> Value {
    let list: Vec<Value> = versions
        .iter()
        .map(|v| json!({ "groupVersion": format!("{group}/{v}"), "version": v }))
        .collect();
    let preferred = list.first().cloned().unwrap_or(Value::Null);
    json!({ "name": group, "versions": list, "preferredVersion": preferred })
}

/// The resource a CustomResourceDefinition asks us to serve, or why it cannot be served.
pub fn from_crd(crd: &Value) -> Result<ResourceType, FieldError> {
    let spec = crd.get("spec").ok_or(FieldError::required("spec", ""))?;
    let text = |v: Option<&Value>, what: &str| -> Result<String, FieldError> {
        v.and_then(Value::as_str)
            .map(str::to_string)
            .ok_or(FieldError::required(what, ""))
    };
    let group = text(spec.get("group"), "spec.group")?;
    let names = spec
        .get("names")
        .ok_or(FieldError::required("spec.names", ""))?;
    let plural = text(names.get("plural"), "spec.names.plural")?;
    let kind = text(names.get("kind"), "spec.names.kind")?;
    let singular = names
        .get("singular")
        .and_then(Value::as_str)
        .map_or_else(|| kind.to_lowercase(), str::to_string);
    let strings = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let expected_name = format!("{plural}.{group}");
    let name = crd
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if name != expected_name {
        return Err(FieldError::invalid(
            "metadata.name",
            format!("\"{name}\": must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    let namespaced = match spec.get("scope").and_then(Value::as_str) {
        Some("Namespaced") => true,
        Some("Cluster") => false,
        other => {
            let supported = ["\"Cluster\"".to_string(), "\"Namespaced\"".to_string()];
            return Err(FieldError::not_supported(
                "spec.scope",
                &format!("{other:?}"),
                &supported,
            ));
        }
    };
    let mut versions = Vec::new();
    let mut schemas = BTreeMap::new();
    let mut status_subresource = false;
    let mut storage_first = None;
    let mut printer_columns = Vec::new();
    for v in spec
        .get("versions")
        .and_then(Value::as_array)
        .ok_or(FieldError::required("spec.versions", ""))?
    {
        let version = text(v.get("name"), "spec.versions[].name")?;
        if !v.get("served").and_then(Value::as_bool).unwrap_or(false) {
            continue;
        }
        if v.pointer("/subresources/status").is_some() {
            status_subresource = true;
        }
        if let Some(schema) = v.pointer("/schema/openAPIV3Schema") {
            schemas.insert(version.clone(), schema.clone());
        }
        if v.get("storage").and_then(Value::as_bool).unwrap_or(false) {
            storage_first = Some(version.clone());
            let columns = v.get("additionalPrinterColumns").and_then(Value::as_array);
            printer_columns = columns
                .into_iter()
                .flatten()
                .filter_map(PrinterColumn::from_crd)
                .collect();
        }
        versions.push(version);
    }
    if versions.is_empty() {
        return Err(FieldError::invalid(
            "spec.versions",
            "must have at least one served version",
        ));
    }
    if let Some(storage) = storage_first {
        versions.retain(|v| *v != storage);
        versions.insert(0, storage);
    }
    Ok(ResourceType {
        group,
        versions,
        kind,
        plural,
        singular,
        namespaced,
        short_names: strings(names.get("shortNames")),
        categories: strings(names.get("categories")),
        status_subresource,
        schemas,
        field_labels: Vec::new(),
        custom: true,
        printer_columns,
    })
}

#[cfg(test)]
mod printer_column_tests {
    use super::*;

    #[test]
    fn printer_column_paths_follow_fields_and_filters() {
        let obj = serde_json::json!({"status": {"version": "1", "conditions": [
            {"type": "Progressing", "status": "False"},
            {"type": "Available", "status": "True"}]}});
        let steps = parse_json_path(".status.conditions[?(@.type==\"Available\")].status").unwrap();
        assert_eq!(
            eval_json_path(&obj, &steps),
            Some(&serde_json::json!("True"))
        );
        let steps = parse_json_path(".status.version").unwrap();
        assert_eq!(eval_json_path(&obj, &steps), Some(&serde_json::json!("1")));
        let steps = parse_json_path(".status.conditions[?(@.type==\"Degraded\")].status").unwrap();
        assert_eq!(eval_json_path(&obj, &steps), None);
        assert!(parse_json_path(".status.conditions[0]").is_none());
        assert!(parse_json_path("status").is_none());
    }
}
