//! The RBAC authorizer, as a pure function: given the stored ClusterRoles, ClusterRoleBindings,
//! Roles and RoleBindings, may this user (name and groups) do this request (resource
//! attributes or a non-resource path)? It follows kube-apiserver's rules: `*` wildcards in
//! verbs, API groups, resources and non-resource URLs; `resource/subresource` and `*/sub`
//! forms; `resourceNames`; a trailing `*` in a non-resource URL matches by prefix; User, Group
//! and ServiceAccount subjects (a ServiceAccount subject without a namespace takes its
//! binding's); RoleBindings grant only in their namespace; `system:masters` may do anything.
//!
//! Not here: the HTTP endpoints (`auth.rs`) and ClusterRole aggregation rules (a ClusterRole
//! with an `aggregationRule` grants only its own `rules`).

use k8s_openapi::api::authorization::v1::{NonResourceAttributes, ResourceAttributes};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};

/// The group whose members may do everything, as in kube-apiserver.
pub const MASTERS_GROUP: &str = "system:masters";

/// Who asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    pub user: String,
    pub groups: Vec<String>,
}

/// What is asked.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Resource(Box<ResourceAttributes>),
    NonResource(NonResourceAttributes),
}

/// Every RBAC object of the cluster.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub cluster_roles: Vec<ClusterRole>,
    pub cluster_role_bindings: Vec<ClusterRoleBinding>,
    pub roles: Vec<Role>,
    pub role_bindings: Vec<RoleBinding>,
}

/// The answer, with the reason a SubjectAccessReview reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: String,
}

/// Whether `who` may do `what` under `policy`.
pub fn authorize(policy: &Policy, who: &Requester, what: &Request) -> Decision {
    if who.groups.iter().any(|g| g == MASTERS_GROUP) {
        return Decision {
            allowed: true,
            reason: format!("user {:?} is in group {MASTERS_GROUP}", who.user),
        };
    }
    for binding in &policy.cluster_role_bindings {
        let name = binding.metadata.name.as_deref().unwrap_or_default();
        if let Some(subject) = matching_subject(binding.subjects.as_deref(), who, "") {
            if let Some(rules) = policy.rules_of(&binding.role_ref, None) {
                if rules.iter().any(|r| rule_allows(r, what)) {
                    return allowed_by("ClusterRoleBinding", name, &binding.role_ref, subject);
                }
            }
        }
    }
    // RoleBindings grant only inside their namespace, and never non-resource URLs.
    let Request::Resource(attributes) = what else {
        return denied();
    };
    let Some(namespace) = attributes.namespace.as_deref().filter(|n| !n.is_empty()) else {
        return denied();
    };
    for binding in &policy.role_bindings {
        if binding.metadata.namespace.as_deref() != Some(namespace) {
            continue;
        }
        let name = binding.metadata.name.as_deref().unwrap_or_default();
        if let Some(subject) = matching_subject(binding.subjects.as_deref(), who, namespace) {
            if let Some(rules) = policy.rules_of(&binding.role_ref, Some(namespace)) {
                if rules.iter().any(|r| rule_allows(r, what)) {
                    return allowed_by("RoleBinding", name, &binding.role_ref, subject);
                }
            }
        }
    }
    denied()
}

fn denied() -> Decision {
    Decision {
        allowed: false,
        reason: "no RBAC policy matched".to_string(),
    }
}

fn allowed_by(binding_kind: &str, binding: &str, role: &RoleRef, subject: &Subject) -> Decision {
    Decision {
        allowed: true,
        reason: format!(
            "RBAC: allowed by {binding_kind} {binding:?} of {} {:?} to {} {:?}",
            role.kind, role.name, subject.kind, subject.name
        ),
    }
}

impl Policy {
    /// The rules `role` names: a ClusterRole, or a Role of `namespace` (RoleBindings only).
    fn rules_of(&self, role: &RoleRef, namespace: Option<&str>) -> Option<&[PolicyRule]> {
        match (role.kind.as_str(), namespace) {
            ("ClusterRole", _) => self
                .cluster_roles
                .iter()
                .find(|r| r.metadata.name.as_deref() == Some(role.name.as_str()))
                .map(|r| r.rules.as_deref().unwrap_or_default()),
            ("Role", Some(namespace)) => self
                .roles
                .iter()
                .find(|r| {
                    r.metadata.name.as_deref() == Some(role.name.as_str())
                        && r.metadata.namespace.as_deref() == Some(namespace)
                })
                .map(|r| r.rules.as_deref().unwrap_or_default()),
            _ => None,
        }
    }
}

/// The first subject of a binding in `binding_namespace` that is `who`.
fn matching_subject<'a>(
    subjects: Option<&'a [Subject]>,
    who: &Requester,
    binding_namespace: &str,
) -> Option<&'a Subject> {
    subjects
        .unwrap_or_default()
        .iter()
        .find(|s| match s.kind.as_str() {
            "User" => s.name == who.user,
            "Group" => who.groups.contains(&s.name),
            "ServiceAccount" => {
                let namespace = s
                    .namespace
                    .as_deref()
                    .filter(|n| !n.is_empty())
                    .unwrap_or(binding_namespace);
                who.user == format!("system:serviceaccount:{namespace}:{}", s.name)
            }
            _ => false,
        })
}

fn rule_allows(rule: &PolicyRule, what: &Request) -> bool {
    match what {
        Request::Resource(a) => {
            let verb = a.verb.as_deref().unwrap_or_default();
            let group = a.group.as_deref().unwrap_or_default();
            let resource = a.resource.as_deref().unwrap_or_default();
            let subresource = a.subresource.as_deref().unwrap_or_default();
            let name = a.name.as_deref().unwrap_or_default();
            any_or_star(&rule.verbs, verb)
                && any_or_star(rule.api_groups.as_deref().unwrap_or_default(), group)
                && resource_matches(
                    rule.resources.as_deref().unwrap_or_default(),
                    resource,
                    subresource,
                )
                && rule
                    .resource_names
                    .as_deref()
                    .is_none_or(|names| names.is_empty() || names.iter().any(|n| n == name))
        }
        Request::NonResource(a) => {
            let verb = a.verb.as_deref().unwrap_or_default();
            let path = a.path.as_deref().unwrap_or_default();
            any_or_star(&rule.verbs, verb)
                && rule
                    .non_resource_urls
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .any(|url| url_matches(url, path))
        }
    }
}

fn any_or_star(list: &[String], value: &str) -> bool {
    list.iter().any(|item| item == "*" || item == value)
}

fn resource_matches(rule_resources: &[String], resource: &str, subresource: &str) -> bool {
    let combined = if subresource.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}/{subresource}")
    };
    rule_resources.iter().any(|r| {
        r == "*"
            || *r == combined
            || (!subresource.is_empty() && r.strip_prefix("*/") == Some(subresource))
    })
}

fn url_matches(rule_url: &str, path: &str) -> bool {
    match rule_url.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => rule_url == path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(objects: serde_json::Value) -> Policy {
        let mut policy = Policy::default();
        for object in objects.as_array().expect("a list of RBAC objects") {
            let value = object.clone();
            match object["kind"].as_str() {
                Some("ClusterRole") => policy
                    .cluster_roles
                    .push(serde_json::from_value(value).unwrap()),
                Some("ClusterRoleBinding") => policy
                    .cluster_role_bindings
                    .push(serde_json::from_value(value).unwrap()),
                Some("Role") => policy.roles.push(serde_json::from_value(value).unwrap()),
                Some("RoleBinding") => policy
                    .role_bindings
                    .push(serde_json::from_value(value).unwrap()),
                other => panic!("not an RBAC kind: {other:?}"),
            }
        }
        policy
    }

    fn sa(namespace: &str, name: &str) -> Requester {
        Requester {
            user: format!("system:serviceaccount:{namespace}:{name}"),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ],
        }
    }

    fn path(verb: &str, path: &str) -> Request {
        Request::NonResource(NonResourceAttributes {
            path: Some(path.into()),
            verb: Some(verb.into()),
        })
    }

    fn resource(verb: &str, group: &str, resource: &str, namespace: &str, name: &str) -> Request {
        let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
        Request::Resource(Box::new(ResourceAttributes {
            verb: Some(verb.into()),
            group: Some(group.into()),
            resource: Some(resource.into()),
            subresource: Some(subresource.into()).filter(|s: &String| !s.is_empty()),
            namespace: Some(namespace.into()).filter(|s: &String| !s.is_empty()),
            name: Some(name.into()).filter(|s: &String| !s.is_empty()),
            ..Default::default()
        }))
    }

    fn allowed(policy: &Policy, who: &Requester, what: &Request) -> bool {
        authorize(policy, who, what).allowed
    }

    #[test]
    fn non_resource_urls_match_exactly_or_by_trailing_star_prefix() {
        let p = policy(json!([
            {"kind": "ClusterRole", "metadata": {"name": "status-reader"},
             "rules": [{"nonResourceURLs": ["/api/*", "/metrics"], "verbs": ["get"]}]},
            {"kind": "ClusterRoleBinding", "metadata": {"name": "reader"},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "status-reader"},
             "subjects": [{"kind": "ServiceAccount", "name": "viewer", "namespace": "ops"}]},
        ]));
        let viewer = sa("ops", "viewer");
        assert!(allowed(&p, &viewer, &path("get", "/api/v1/status")));
        assert!(allowed(&p, &viewer, &path("get", "/metrics")));
        assert!(!allowed(&p, &viewer, &path("get", "/metrics/extra")));
        assert!(!allowed(&p, &viewer, &path("post", "/api/v1/status")));
        assert!(!allowed(&p, &viewer, &path("get", "/healthz")));
        // Same name, other namespace: another ServiceAccount.
        assert!(!allowed(
            &p,
            &sa("default", "viewer"),
            &path("get", "/api/v1/status")
        ));
        let why = authorize(&p, &viewer, &path("get", "/api/v1/status")).reason;
        assert!(why.contains("ClusterRoleBinding \"reader\""), "{why}");
    }

    #[test]
    fn nothing_bound_is_denied_and_masters_may_do_anything() {
        let p = Policy::default();
        let denied = authorize(&p, &sa("ops", "viewer"), &path("get", "/api/v1/status"));
        assert!(!denied.allowed);
        assert_eq!(denied.reason, "no RBAC policy matched");
        let admin = Requester {
            user: "kube-sim-admin".into(),
            groups: vec![MASTERS_GROUP.into()],
        };
        assert!(allowed(
            &p,
            &admin,
            &resource("delete", "", "nodes", "", "n1")
        ));
    }

    #[test]
    fn resource_rules_honour_wildcards_subresources_and_resource_names() {
        let p = policy(json!([
            {"kind": "ClusterRole", "metadata": {"name": "mixed"},
             "rules": [
                {"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]},
                {"apiGroups": ["apps"], "resources": ["*"], "verbs": ["*"]},
                {"apiGroups": ["*"], "resources": ["*/status"], "verbs": ["patch"]},
                {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["settings"], "verbs": ["update"]},
             ]},
            {"kind": "ClusterRoleBinding", "metadata": {"name": "mixed"},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "mixed"},
             "subjects": [{"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"}]},
        ]));
        let alice = Requester {
            user: "alice".into(),
            groups: vec!["system:authenticated".into()],
        };
        assert!(allowed(
            &p,
            &alice,
            &resource("get", "", "pods", "default", "web")
        ));
        assert!(allowed(
            &p,
            &alice,
            &resource("get", "", "pods/log", "default", "web")
        ));
        assert!(!allowed(
            &p,
            &alice,
            &resource("get", "", "pods/exec", "default", "web")
        ));
        assert!(!allowed(
            &p,
            &alice,
            &resource("delete", "", "pods", "default", "web")
        ));
        assert!(allowed(
            &p,
            &alice,
            &resource("delete", "apps", "deployments", "x", "d")
        ));
        assert!(allowed(
            &p,
            &alice,
            &resource("patch", "kubeovn.io", "subnets/status", "", "s")
        ));
        assert!(!allowed(
            &p,
            &alice,
            &resource("patch", "kubeovn.io", "subnets", "", "s")
        ));
        assert!(allowed(
            &p,
            &alice,
            &resource("update", "", "configmaps", "a", "settings")
        ));
        assert!(!allowed(
            &p,
            &alice,
            &resource("update", "", "configmaps", "a", "other")
        ));
        assert!(!allowed(&p, &alice, &path("get", "/api/v1/status")));
        assert!(!allowed(
            &p,
            &sa("default", "alice"),
            &resource("get", "", "pods", "default", "web")
        ));
    }

    #[test]
    fn role_bindings_grant_only_in_their_namespace_and_reach_roles_and_cluster_roles() {
        let p = policy(json!([
            {"kind": "Role", "metadata": {"name": "pod-reader", "namespace": "team-a"},
             "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]},
            {"kind": "ClusterRole", "metadata": {"name": "secret-reader"},
             "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]},
            {"kind": "RoleBinding", "metadata": {"name": "pods", "namespace": "team-a"},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
             // No namespace: the binding's.
             "subjects": [{"kind": "ServiceAccount", "name": "app"}]},
            {"kind": "RoleBinding", "metadata": {"name": "secrets", "namespace": "team-a"},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "secret-reader"},
             "subjects": [{"kind": "Group", "name": "system:serviceaccounts:team-a"}]},
        ]));
        let app = sa("team-a", "app");
        assert!(allowed(
            &p,
            &app,
            &resource("get", "", "pods", "team-a", "p")
        ));
        assert!(!allowed(
            &p,
            &app,
            &resource("get", "", "pods", "team-b", "p")
        ));
        assert!(!allowed(&p, &app, &resource("get", "", "pods", "", "")));
        assert!(allowed(
            &p,
            &app,
            &resource("get", "", "secrets", "team-a", "s")
        ));
        assert!(!allowed(
            &p,
            &app,
            &resource("get", "", "secrets", "team-b", "s")
        ));
        assert!(!allowed(&p, &app, &path("get", "/api/v1/status")));
        // A Role of another namespace is not reachable from this binding.
        let elsewhere = policy(json!([
            {"kind": "Role", "metadata": {"name": "pod-reader", "namespace": "team-b"},
             "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]},
            {"kind": "RoleBinding", "metadata": {"name": "pods", "namespace": "team-a"},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
             "subjects": [{"kind": "ServiceAccount", "name": "app"}]},
        ]));
        assert!(!allowed(
            &elsewhere,
            &app,
            &resource("get", "", "pods", "team-a", "p")
        ));
    }
}
