//! Tokens and reviews through the real clients: `kubectl create token` issues a ServiceAccount
//! token, a TokenReview (kube client) says whose it is, SubjectAccessReviews answer from the
//! RBAC objects kubectl applied, and `kubectl auth can-i --as` asks as the account's user
//! (kubectl sends no bearer token over plain HTTP, so `--token` would not reach the server).

#[allow(dead_code)]
mod common;

use std::net::{Ipv4Addr, SocketAddr};

use common::Kubectl;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, DeleteParams, PostParams};
use kube_sim::ApiServer;

const STATUS_READER: &str = "
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: status-reader
rules:
- nonResourceURLs: [\"/api/*\"]
  verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: viewer-reads-status
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: status-reader
subjects:
- kind: ServiceAccount
  name: viewer
  namespace: default
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: pod-reader
  namespace: default
rules:
- apiGroups: [\"\"]
  resources: [pods]
  verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: viewer-reads-pods
  namespace: default
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: pod-reader
subjects:
- kind: ServiceAccount
  name: viewer
";

async fn token_review(client: &kube::Client, token: &str) -> TokenReview {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_string()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("TokenReview is answered")
}

async fn may(client: &kube::Client, user: &str, spec: SubjectAccessReviewSpec) -> (bool, String) {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.to_string()),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                "system:serviceaccounts:default".into(),
                "system:authenticated".into(),
            ]),
            ..spec
        },
        ..Default::default()
    };
    let answer = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("SubjectAccessReview is answered");
    let status = answer.status.expect("a review has a status");
    (status.allowed, status.reason.unwrap_or_default())
}

fn get_path(path: &str) -> SubjectAccessReviewSpec {
    SubjectAccessReviewSpec {
        non_resource_attributes: Some(NonResourceAttributes {
            path: Some(path.into()),
            verb: Some("get".into()),
        }),
        ..Default::default()
    }
}

fn list_pods(namespace: &str) -> SubjectAccessReviewSpec {
    SubjectAccessReviewSpec {
        resource_attributes: Some(ResourceAttributes {
            namespace: Some(namespace.into()),
            verb: Some("list".into()),
            resource: Some("pods".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_account_token_is_reviewed_and_authorized_by_rbac() {
    let server = ApiServer::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .expect("server starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let k = Kubectl::setup(&server, dir.path()).await;
    let client = server.client().expect("client");

    // No ServiceAccount, no token.
    let refused = k.run(&["create", "token", "viewer"]).await;
    assert!(
        !refused.ok && refused.stderr.contains("not found"),
        "{}",
        refused.stderr
    );
    k.must(&["create", "serviceaccount", "viewer"]).await;
    let token = k
        .must(&["create", "token", "viewer"])
        .await
        .trim()
        .to_string();
    assert!(!token.is_empty());

    let review = token_review(&client, &token).await;
    let status = review.status.expect("status");
    assert_eq!(status.authenticated, Some(true));
    let user = status.user.expect("user");
    assert_eq!(
        user.username.as_deref(),
        Some("system:serviceaccount:default:viewer")
    );
    let account = Api::<ServiceAccount>::namespaced(client.clone(), "default")
        .get("viewer")
        .await
        .expect("the account exists");
    assert_eq!(user.uid, account.metadata.uid);
    assert_eq!(
        user.groups.unwrap_or_default(),
        vec![
            "system:serviceaccounts",
            "system:serviceaccounts:default",
            "system:authenticated"
        ]
    );
    let forged = token_review(&client, "kube-sim.not-issued").await;
    assert_eq!(forged.status.and_then(|s| s.authenticated), Some(false));

    // Nothing bound yet: denied, for kubectl auth can-i as well.
    let viewer = "system:serviceaccount:default:viewer";
    assert!(!may(&client, viewer, get_path("/api/v1/status")).await.0);
    let can_i = k
        .run(&["auth", "can-i", "get", "/api/v1/status", "--as", viewer])
        .await;
    assert_eq!(
        can_i.stdout.trim(),
        "no - no RBAC policy matched",
        "{}",
        can_i.stderr
    );

    let applied = k
        .run_with_input(&["apply", "-f", "-"], Some(STATUS_READER))
        .await;
    assert!(applied.ok, "{}", applied.stderr);
    let (allowed, reason) = may(&client, viewer, get_path("/api/v1/status")).await;
    assert!(allowed, "{reason}");
    assert!(reason.contains("viewer-reads-status"), "{reason}");
    assert!(!may(&client, viewer, get_path("/metrics")).await.0);
    assert!(may(&client, viewer, list_pods("default")).await.0);
    assert!(!may(&client, viewer, list_pods("kube-system")).await.0);
    let can_i = k
        .must(&["auth", "can-i", "get", "/api/v1/status", "--as", viewer])
        .await;
    assert_eq!(can_i.trim(), "yes");
    // Without a token kubectl is kube-sim's admin.
    assert_eq!(
        k.must(&["auth", "can-i", "delete", "nodes"]).await.trim(),
        "yes"
    );

    // A deleted account's tokens stop working.
    Api::<ServiceAccount>::namespaced(client.clone(), "default")
        .delete("viewer", &DeleteParams::default())
        .await
        .expect("delete the account");
    let stale = token_review(&client, &token).await;
    assert_eq!(stale.status.and_then(|s| s.authenticated), Some(false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_lists_the_reviews_and_the_token_subresource() {
    let server = ApiServer::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .expect("server starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let k = Kubectl::setup(&server, dir.path()).await;
    let resources = k
        .must(&["api-resources", "--verbs=create", "-o", "name"])
        .await;
    for name in [
        "tokenreviews.authentication.k8s.io",
        "subjectaccessreviews.authorization.k8s.io",
        "selfsubjectaccessreviews.authorization.k8s.io",
        "localsubjectaccessreviews.authorization.k8s.io",
    ] {
        assert!(
            resources.lines().any(|l| l == name),
            "{name} in:\n{resources}"
        );
    }
    let core = k.must(&["get", "--raw", "/api/v1"]).await;
    assert!(core.contains("\"serviceaccounts/token\""), "{core}");
    // Reviews are not stored: reading them back is refused.
    let listed = k.run(&["get", "tokenreviews"]).await;
    assert!(!listed.ok, "{}", listed.stdout);
}
