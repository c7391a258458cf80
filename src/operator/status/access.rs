//! Who may read `/api/*`: the request's bearer token goes to the API server as a TokenReview
//! (authentication.k8s.io/v1) for its user and groups, then a SubjectAccessReview
//! (authorization.k8s.io/v1) asks whether that user may `get` the request path as a
//! non-resource URL — what kube-rbac-proxy does. Answers are cached per token and path for
//! `CACHE_TTL`, so a dashboard polling every second costs the API server two calls per 10 s.
//!
//! The operator's ServiceAccount needs `create` on `tokenreviews` and `subjectaccessreviews`.
//! Not here: the handlers behind the check (`api.rs`) and the open endpoints (`mod.rs`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

/// How long an answer (either way) is reused.
pub const CACHE_TTL: Duration = Duration::from_secs(10);
/// Past this many cached answers, expired ones are dropped on the next insert.
const CACHE_PRUNE_AT: usize = 1024;

/// The outcome of checking one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allowed {
        user: String,
    },
    /// No token, or the API server does not know it: 401.
    Unauthenticated(String),
    /// The user may not read this path: 403.
    Forbidden(String),
}

/// Why a request could not be checked (the API server did not answer): 503, not cached.
#[derive(Debug, thiserror::Error)]
#[error("checking access to {path} with the API server: {source}")]
pub struct CheckError {
    path: String,
    #[source]
    source: kube::Error,
}

/// Token and path to verdict, for `CACHE_TTL`.
#[derive(Debug, Default)]
pub struct VerdictCache {
    entries: Mutex<HashMap<(String, String), (Instant, Verdict)>>,
}

impl VerdictCache {
    pub fn get(&self, token: &str, path: &str, now: Instant) -> Option<Verdict> {
        let entries = self.entries.lock().expect("verdict cache lock poisoned");
        let (at, verdict) = entries.get(&(token.to_owned(), path.to_owned()))?;
        (now.duration_since(*at) < CACHE_TTL).then(|| verdict.clone())
    }

    pub fn put(&self, token: &str, path: &str, verdict: Verdict, now: Instant) {
        let mut entries = self.entries.lock().expect("verdict cache lock poisoned");
        if entries.len() >= CACHE_PRUNE_AT {
            entries.retain(|_, (at, _)| now.duration_since(*at) < CACHE_TTL);
        }
        entries.insert((token.to_owned(), path.to_owned()), (now, verdict));
    }
}

/// Checks bearer tokens against the API server, with a cache.
pub struct AccessCheck {
    client: kube::Client,
    cache: VerdictCache,
}

impl AccessCheck {
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            cache: VerdictCache::default(),
        }
    }

    /// May the bearer of `authorization` (the header's value, if any) `get` `path`?
    pub async fn check(
        &self,
        authorization: Option<&str>,
        path: &str,
    ) -> Result<Verdict, CheckError> {
        let Some(token) = bearer_token(authorization) else {
            return Ok(Verdict::Unauthenticated(
                "a bearer token is required (Authorization: Bearer <token>)".into(),
            ));
        };
        if let Some(verdict) = self.cache.get(token, path, Instant::now()) {
            return Ok(verdict);
        }
        let verdict = self.ask(token, path).await.map_err(|source| CheckError {
            path: path.to_owned(),
            source,
        })?;
        self.cache.put(token, path, verdict.clone(), Instant::now());
        Ok(verdict)
    }

    async fn ask(&self, token: &str, path: &str) -> Result<Verdict, kube::Error> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                ..Default::default()
            },
            ..Default::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await?
            .status
            .unwrap_or_default();
        let user = reviewed.user.unwrap_or_default();
        let username = user.username.clone().unwrap_or_default();
        if reviewed.authenticated != Some(true) || username.is_empty() {
            let why = reviewed
                .error
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "the API server does not know this token".into());
            return Ok(Verdict::Unauthenticated(format!("token rejected: {why}")));
        }
        let access = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(username.clone()),
                groups: user.groups,
                uid: user.uid,
                extra: user.extra,
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some(path.to_owned()),
                    verb: Some("get".into()),
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let decided = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &access)
            .await?
            .status
            .unwrap_or_default();
        Ok(if decided.allowed {
            Verdict::Allowed { user: username }
        } else {
            let reason = decided
                .reason
                .filter(|r| !r.is_empty())
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            Verdict::Forbidden(format!(
                "user {username:?} may not get {path}{reason}: grant it a ClusterRole with \
                 nonResourceURLs [\"/api/*\"] and verbs [get]"
            ))
        })
    }
}

/// The token of an `Authorization: Bearer <token>` value.
fn bearer_token(authorization: Option<&str>) -> Option<&str> {
    let value = authorization?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_from_the_header_value() {
        assert_eq!(bearer_token(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer_token(Some("Basic abc")), None);
        assert_eq!(bearer_token(Some("Bearer ")), None);
        assert_eq!(bearer_token(None), None);
    }

    #[test]
    fn verdicts_are_reused_per_token_and_path_until_they_expire() {
        let cache = VerdictCache::default();
        let t0 = Instant::now();
        let denied = Verdict::Forbidden("no".into());
        cache.put("t1", "/api/v1/status", denied.clone(), t0);
        assert_eq!(cache.get("t1", "/api/v1/status", t0), Some(denied.clone()));
        assert_eq!(
            cache.get(
                "t1",
                "/api/v1/status",
                t0 + CACHE_TTL - Duration::from_millis(1)
            ),
            Some(denied)
        );
        assert_eq!(cache.get("t1", "/api/v1/status", t0 + CACHE_TTL), None);
        assert_eq!(cache.get("t1", "/api/v1/subnets", t0), None);
        assert_eq!(cache.get("t2", "/api/v1/status", t0), None);
    }

    #[test]
    fn a_full_cache_drops_expired_verdicts() {
        let cache = VerdictCache::default();
        let t0 = Instant::now();
        for i in 0..CACHE_PRUNE_AT {
            cache.put(&format!("t{i}"), "/p", Verdict::Forbidden("no".into()), t0);
        }
        let later = t0 + CACHE_TTL;
        cache.put("fresh", "/p", Verdict::Forbidden("no".into()), later);
        let kept = cache.entries.lock().unwrap().len();
        assert_eq!(kept, 1);
    }
}
