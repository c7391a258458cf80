//! Tokens and reviews, as far as an operator that guards its own endpoints needs them (the
//! kube-rbac-proxy pattern): `TokenRequest` (`POST .../serviceaccounts/<name>/token`, what
//! `kubectl create token` calls) issues an opaque token bound to a ServiceAccount; `TokenReview`
//! says whose token it is; `SubjectAccessReview` (and `LocalSubjectAccessReview`,
//! `SelfSubjectAccessReview` for `kubectl auth can-i`) answers from the stored RBAC objects
//! through `rbac::authorize`.
//!
//! kube-sim does not authenticate its own requests: a request without a bearer token is the
//! admin (`ADMIN_USER`, in `system:masters`), which is what the credential-less kubeconfig
//! is. Tokens live in memory (a restarted server forgets them) and stop working when their
//! ServiceAccount is deleted or replaced, or when they expire. Not modelled: audiences (a
//! review echoes the requested ones), tokens bound to pods or secrets, user impersonation.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::http::{header, HeaderMap};
use k8s_openapi::api::authorization::v1::SubjectAccessReviewSpec;
use serde_json::{json, Value};

use super::rbac::{self, Policy, Request, Requester};
use super::selector::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{self, Store};

/// Who a request without a bearer token is.
pub const ADMIN_USER: &str = "kube-sim-admin";
/// Lifetime of a token when the TokenRequest names none (kube-apiserver's default is 1 h).
const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// The shortest lifetime kube-apiserver accepts.
const MIN_EXPIRATION_SECONDS: i64 = 600;

/// Issued tokens by their text.
#[derive(Debug, Default)]
pub struct Tokens {
    issued: Mutex<HashMap<String, IssuedToken>>,
}

#[derive(Debug, Clone)]
struct IssuedToken {
    namespace: String,
    service_account: String,
    /// The ServiceAccount's uid when issued: a recreated account does not inherit tokens.
    uid: String,
    expires: jiff::Timestamp,
}

/// An authenticated identity, as a TokenReview reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

impl User {
    fn admin() -> Self {
        Self {
            name: ADMIN_USER.to_string(),
            uid: String::new(),
            groups: vec![
                rbac::MASTERS_GROUP.to_string(),
                "system:authenticated".to_string(),
            ],
        }
    }

    fn requester(&self) -> Requester {
        Requester {
            user: self.name.clone(),
            groups: self.groups.clone(),
        }
    }
}

/// The review kinds served here, by resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Review {
    Token,
    SubjectAccess,
    LocalSubjectAccess,
    SelfSubjectAccess,
}

impl Review {
    /// The review `group`/`plural` names, if it is one.
    pub fn of(group: &str, plural: &str) -> Option<Self> {
        match (group, plural) {
            ("authentication.k8s.io", "tokenreviews") => Some(Self::Token),
            ("authorization.k8s.io", "subjectaccessreviews") => Some(Self::SubjectAccess),
            ("authorization.k8s.io", "localsubjectaccessreviews") => Some(Self::LocalSubjectAccess),
            ("authorization.k8s.io", "selfsubjectaccessreviews") => Some(Self::SelfSubjectAccess),
            _ => None,
        }
    }
}

impl Tokens {
    /// The ServiceAccount user a token stands for, if it is valid now.
    pub fn authenticate(&self, store: &Store, token: &str) -> Option<User> {
        let issued = self
            .issued
            .lock()
            .expect("token table lock poisoned")
            .get(token)
            .cloned()?;
        if issued.expires <= jiff::Timestamp::now() {
            return None;
        }
        let account = service_account(store, &issued.namespace, &issued.service_account).ok()?;
        let uid = account.pointer("/metadata/uid").and_then(Value::as_str);
        (uid == Some(issued.uid.as_str())).then(|| User {
            name: format!(
                "system:serviceaccount:{}:{}",
                issued.namespace, issued.service_account
            ),
            uid: issued.uid.clone(),
            groups: vec![
                "system:serviceaccounts".to_string(),
                format!("system:serviceaccounts:{}", issued.namespace),
                "system:authenticated".to_string(),
            ],
        })
    }

    /// `POST /api/v1/namespaces/<ns>/serviceaccounts/<name>/token`: the TokenRequest, answered.
    pub fn request(
        &self,
        store: &Store,
        namespace: &str,
        name: &str,
        body: Value,
    ) -> Result<Value, ApiError> {
        let account = service_account(store, namespace, name)?;
        let seconds = body
            .pointer("/spec/expirationSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(DEFAULT_EXPIRATION_SECONDS);
        if seconds < MIN_EXPIRATION_SECONDS {
            return Err(ApiError::bad_request(format!(
                "TokenRequest for serviceaccount {namespace}/{name}: spec.expirationSeconds \
                 {seconds} is shorter than {MIN_EXPIRATION_SECONDS} seconds"
            )));
        }
        let expires = jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::from_secs(seconds))
            .map_err(|e| ApiError::bad_request(format!("spec.expirationSeconds: {e}")))?;
        let token = format!("kube-sim.{:032x}", rand::random::<u128>());
        let uid = account
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        self.issued
            .lock()
            .expect("token table lock poisoned")
            .insert(
                token.clone(),
                IssuedToken {
                    namespace: namespace.to_string(),
                    service_account: name.to_string(),
                    uid,
                    expires,
                },
            );
        tracing::debug!(namespace, service_account = name, "token issued");
        let mut answer = review_shell(body, "authentication.k8s.io/v1", "TokenRequest");
        answer["metadata"]["name"] = json!(name);
        answer["metadata"]["namespace"] = json!(namespace);
        answer["spec"]["expirationSeconds"] = json!(seconds);
        answer["status"] = json!({
            "token": token,
            "expirationTimestamp": expires.round(jiff::Unit::Second).unwrap_or(expires).to_string(),
        });
        Ok(answer)
    }
}

fn service_account(store: &Store, namespace: &str, name: &str) -> Result<Value, ApiError> {
    let table = store.table();
    let rt = table
        .find("", "v1", "serviceaccounts")
        .expect("serviceaccounts are a built-in resource");
    store.get(rt, "v1", Some(namespace), name)
}

/// A review `body` answered: its spec kept, its status filled. `namespace` is the path's (for
/// LocalSubjectAccessReview); `headers` carry the caller's identity (SelfSubjectAccessReview).
pub fn answer(
    store: &Store,
    tokens: &Tokens,
    review: Review,
    namespace: Option<&str>,
    headers: &HeaderMap,
    body: Value,
) -> Result<Value, ApiError> {
    let kind = match review {
        Review::Token => return Ok(token_review(store, tokens, body)),
        Review::SubjectAccess => "SubjectAccessReview",
        Review::LocalSubjectAccess => "LocalSubjectAccessReview",
        Review::SelfSubjectAccess => "SelfSubjectAccessReview",
    };
    let spec: SubjectAccessReviewSpec =
        serde_json::from_value(body.get("spec").cloned().unwrap_or_else(|| json!({})))
            .map_err(|e| ApiError::bad_request(format!("{kind}: spec: {e}")))?;
    let requester = if review == Review::SelfSubjectAccess {
        caller(store, tokens, headers)?.requester()
    } else {
        let requester = Requester {
            user: spec.user.clone().unwrap_or_default(),
            groups: spec.groups.clone().unwrap_or_default(),
        };
        if requester.user.is_empty() && requester.groups.is_empty() {
            return Err(ApiError::bad_request(format!(
                "{kind}: spec.user or spec.groups is required"
            )));
        }
        requester
    };
    let request = match (spec.resource_attributes, spec.non_resource_attributes) {
        (Some(mut attributes), None) => {
            if let Some(namespace) = namespace {
                attributes.namespace = Some(namespace.to_string());
            }
            Request::Resource(Box::new(attributes))
        }
        (None, Some(attributes)) => Request::NonResource(attributes),
        _ => {
            return Err(ApiError::bad_request(format!(
                "{kind}: exactly one of spec.resourceAttributes and spec.nonResourceAttributes is required"
            )))
        }
    };
    let decision = rbac::authorize(&policy(store), &requester, &request);
    tracing::debug!(user = %requester.user, ?request, allowed = decision.allowed, reason = %decision.reason, "access review");
    let mut answer = review_shell(body, "authorization.k8s.io/v1", kind);
    answer["status"] = json!({ "allowed": decision.allowed, "reason": decision.reason });
    Ok(answer)
}

fn token_review(store: &Store, tokens: &Tokens, body: Value) -> Value {
    let token = body
        .pointer("/spec/token")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let audiences = body.pointer("/spec/audiences").cloned();
    let mut answer = review_shell(body, "authentication.k8s.io/v1", "TokenReview");
    answer["status"] = match tokens.authenticate(store, &token) {
        Some(user) => json!({
            "authenticated": true,
            "user": { "username": user.name, "uid": user.uid, "groups": user.groups },
            "audiences": audiences.unwrap_or(json!([])),
        }),
        None => json!({ "authenticated": false, "error": "invalid bearer token" }),
    };
    answer
}

/// Who sent the request: its bearer token's user, or the admin without one; the admin may
/// act as another user (`Impersonate-User`/`Impersonate-Group`, what `kubectl --as` sends,
/// since kubectl sends no bearer token over plain HTTP).
fn caller(store: &Store, tokens: &Tokens, headers: &HeaderMap) -> Result<User, ApiError> {
    let header_values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_string)
            .collect()
    };
    let caller = bearer_user(store, tokens, headers)?;
    let Some(name) = header_values("impersonate-user").into_iter().next() else {
        return Ok(caller);
    };
    if !caller.groups.iter().any(|g| g == rbac::MASTERS_GROUP) {
        return Err(ApiError::forbidden(format!(
            "users \"{name}\" is forbidden: User \"{}\" cannot impersonate users in kube-sim",
            caller.name
        )));
    }
    let mut groups = header_values("impersonate-group");
    if let Some(namespace) = name
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .map(|(namespace, _)| namespace)
    {
        groups.push("system:serviceaccounts".to_string());
        groups.push(format!("system:serviceaccounts:{namespace}"));
    }
    groups.push("system:authenticated".to_string());
    Ok(User {
        name,
        uid: String::new(),
        groups,
    })
}

fn bearer_user(store: &Store, tokens: &Tokens, headers: &HeaderMap) -> Result<User, ApiError> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match bearer {
        None => Ok(User::admin()),
        Some(token) => tokens.authenticate(store, token).ok_or_else(|| ApiError {
            code: 401,
            reason: "Unauthorized",
            message: "Unauthorized".to_string(),
            details: None,
        }),
    }
}

/// Every RBAC object in the store (objects that do not parse grant nothing).
fn policy(store: &Store) -> Policy {
    let table = store.table();
    let items = |plural: &str| -> Vec<Value> {
        let Some(rt) = table.find("rbac.authorization.k8s.io", "v1", plural) else {
            return Vec::new();
        };
        let list = store.list(
            rt,
            "v1",
            None,
            &LabelSelector::default(),
            &FieldSelector::default(),
        );
        list["items"].as_array().cloned().unwrap_or_default()
    };
    fn parsed<T: serde::de::DeserializeOwned>(items: Vec<Value>) -> Vec<T> {
        items
            .into_iter()
            .filter_map(|item| serde_json::from_value(item).ok())
            .collect()
    }
    Policy {
        cluster_roles: parsed(items("clusterroles")),
        cluster_role_bindings: parsed(items("clusterrolebindings")),
        roles: parsed(items("roles")),
        role_bindings: parsed(items("rolebindings")),
    }
}

/// The request object as the answer's base: type and spec kept, metadata stamped.
fn review_shell(mut body: Value, api_version: &str, kind: &str) -> Value {
    if !body.is_object() {
        body = json!({});
    }
    body["apiVersion"] = json!(api_version);
    body["kind"] = json!(kind);
    if !body.get("metadata").is_some_and(Value::is_object) {
        body["metadata"] = json!({});
    }
    body["metadata"]["creationTimestamp"] = json!(store::now());
    if !body.get("spec").is_some_and(Value::is_object) {
        body["spec"] = json!({});
    }
    body
}
