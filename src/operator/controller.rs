//! The shell every CRD controller of the operator runs in (Subnet and Vpc today, the
//! controllers to come next): reconcile wrapped in our finalizer (apply and cleanup are two
//! plain functions), an `error_policy` that looks at the error — back off, doubling per
//! failure of the same object, for transient ones; wait for a change for those only a new spec
//! can fix — and counts every failure in `/metrics` by controller and error variant, and status
//! written by server-side apply under the operator's one field manager. The controllers'
//! own logic (validate, plan, apply) lives in their files.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{self, Event};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::warn;

use super::context::Context;
use super::pod::MANAGER;
use super::status::Metrics;

/// What to do after a failed reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Transient (API, NB, IPAM store): try again after a growing delay.
    Backoff,
    /// Only a change of the object (or what it names) can fix it.
    AwaitChange,
}

/// An error of one controller: its variant name (a metric label) and whether retrying helps.
pub trait ControllerError: std::error::Error + Send + Sync + 'static {
    fn kind(&self) -> &'static str;
    fn retry(&self) -> Retry;
}

/// What the shell needs of a controller's context: the API client, the per-object failure
/// counts and the metrics the failures are counted in.
pub trait ShellContext {
    fn client(&self) -> &kube::Client;
    fn failures(&self) -> &Failures;
    fn metrics(&self) -> &Metrics;
}

impl ShellContext for Context {
    fn client(&self) -> &kube::Client {
        &self.client
    }
    fn failures(&self) -> &Failures {
        &self.failures
    }
    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

/// The error a controller built on this shell returns to kube-runtime.
pub type Failure<E> = finalizer::Error<E>;

/// The metric label and retry of a reconcile failure, including the finalizer's own.
pub fn classify<E: ControllerError>(error: &Failure<E>) -> (&'static str, Retry) {
    match error {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => {
            (e.kind(), e.retry())
        }
        finalizer::Error::AddFinalizer(_) | finalizer::Error::RemoveFinalizer(_) => {
            ("Finalizer", Retry::Backoff)
        }
        finalizer::Error::UnnamedObject | finalizer::Error::InvalidFinalizer => {
            ("Finalizer", Retry::AwaitChange)
        }
    }
}

/// The delay before retry number `failures` (1-based): 1 s, doubling, at most 5 minutes.
pub fn backoff(failures: u32) -> Duration {
    const MAX: Duration = Duration::from_secs(300);
    let exp = failures.saturating_sub(1).min(16);
    Duration::from_secs(1u64 << exp).min(MAX)
}

/// Consecutive failures per object, so the backoff grows per object and resets on success.
#[derive(Debug, Default)]
pub struct Failures(Mutex<HashMap<(&'static str, String), u32>>);

impl Failures {
    fn record(&self, controller: &'static str, object: String) -> u32 {
        let mut map = self.0.lock().expect("failures lock poisoned");
        let n = map.entry((controller, object)).or_default();
        *n += 1;
        *n
    }

    fn clear(&self, controller: &'static str, object: &str) {
        let mut map = self.0.lock().expect("failures lock poisoned");
        map.remove(&(controller, object.to_owned()));
    }
}

/// One reconcile under finalizer `finalizer`: `apply` while the object lives, `cleanup` once
/// it is being deleted (then the finalizer goes).
pub async fn reconcile<K, E, A, AF, C, CF>(
    controller: &'static str,
    ctx: &impl ShellContext,
    finalizer: &str,
    obj: Arc<K>,
    apply: A,
    cleanup: C,
) -> Result<Action, Failure<E>>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
    K::DynamicType: Default,
    E: ControllerError,
    A: FnOnce(Arc<K>) -> AF,
    AF: std::future::Future<Output = Result<Action, E>>,
    C: FnOnce(Arc<K>) -> CF,
    CF: std::future::Future<Output = Result<Action, E>>,
{
    let api: Api<K> = Api::all(ctx.client().clone());
    let name = obj.name_any();
    let result = with_finalizer(&api, finalizer, obj, |event| async move {
        match event {
            Event::Apply(o) => apply(o).await,
            Event::Cleanup(o) => cleanup(o).await,
        }
    })
    .await;
    if result.is_ok() {
        ctx.failures().clear(controller, &name);
    }
    result
}

/// kube-runtime's `finalizer` around `reconcile`, with our finalizer added
/// first by [`ensure_finalizer`]; when that had to add it, the reconcile waits
/// for the change to come back through the watch.
async fn with_finalizer<K, Fut>(
    api: &kube::Api<K>,
    name: &str,
    obj: Arc<K>,
    reconcile: impl FnOnce(finalizer::Event<K>) -> Fut,
) -> Result<Action, finalizer::Error<Fut::Error>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
    K::DynamicType: Default,
    Fut: futures::TryFuture<Ok = Action>,
    Fut::Error: std::error::Error + 'static,
{
    if ensure_finalizer(api, &*obj, name)
        .await
        .map_err(finalizer::Error::AddFinalizer)?
    {
        return Ok(Action::await_change());
    }
    finalizer::finalizer(api, name, obj, reconcile).await
}

/// Adds `finalizer` to `obj` with one merge patch guarded by its
/// resourceVersion; `Ok(true)` when it had to be added (the change comes
/// back through the watch). kube-runtime's `finalizer` adds it with a JSON
/// patch whose `test` of a missing list not every API server accepts
/// (kube-sim refuses it), so the controllers add it themselves first.
async fn ensure_finalizer<K>(api: &kube::Api<K>, obj: &K, finalizer: &str) -> kube::Result<bool>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let meta = obj.meta();
    if meta.deletion_timestamp.is_some() || meta.finalizers.iter().flatten().any(|f| f == finalizer)
    {
        return Ok(false);
    }
    let mut finalizers = meta.finalizers.clone().unwrap_or_default();
    finalizers.push(finalizer.to_owned());
    let patch = serde_json::json!({
        "metadata": { "finalizers": finalizers, "resourceVersion": meta.resource_version }
    });
    api.patch(
        meta.name.as_deref().unwrap_or_default(),
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(patch),
    )
    .await?;
    Ok(true)
}

/// The `error_policy` of a controller named `controller`.
pub fn error_policy<K, E>(
    controller: &'static str,
    obj: &K,
    error: &Failure<E>,
    ctx: &impl ShellContext,
) -> Action
where
    K: Resource,
    E: ControllerError,
{
    let (kind, retry) = classify(error);
    ctx.metrics().count_reconcile_error(controller, kind);
    let name = obj.meta().name.clone().unwrap_or_default();
    match retry {
        Retry::Backoff => {
            let delay = backoff(ctx.failures().record(controller, name.clone()));
            warn!(controller, object = %name, error = %error, kind, retry_in = ?delay, "reconcile failed; retrying");
            Action::requeue(delay)
        }
        Retry::AwaitChange => {
            warn!(controller, object = %name, error = %error, kind, "reconcile failed; waiting for a change of the object");
            Action::await_change()
        }
    }
}

/// Writes `status` of cluster-scoped object `name` by server-side apply (the operator's field
/// manager owns the status it writes).
pub async fn apply_status<K, S>(client: &kube::Client, name: &str, status: &S) -> kube::Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    let api: Api<K> = Api::all(client.clone());
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": { "name": name },
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

/// The `Retry` for a failed write to the API: a refusal of the object itself (invalid,
/// forbidden, not found) needs a change; anything else may pass next time.
pub fn api_retry(error: &kube::Error) -> Retry {
    match error {
        kube::Error::Api(s) if matches!(s.code, 400 | 403 | 404 | 422) => Retry::AwaitChange,
        _ => Retry::Backoff,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum TestError {
        #[error("nb down")]
        Nb,
        #[error("bad spec")]
        Invalid,
    }

    impl ControllerError for TestError {
        fn kind(&self) -> &'static str {
            match self {
                TestError::Nb => "Nb",
                TestError::Invalid => "Invalid",
            }
        }
        fn retry(&self) -> Retry {
            match self {
                TestError::Nb => Retry::Backoff,
                TestError::Invalid => Retry::AwaitChange,
            }
        }
    }

    #[test]
    fn failures_are_classified_by_the_controllers_error() {
        let applied = Failure::ApplyFailed(TestError::Nb);
        assert_eq!(classify(&applied), ("Nb", Retry::Backoff));
        let cleaned = Failure::CleanupFailed(TestError::Invalid);
        assert_eq!(classify(&cleaned), ("Invalid", Retry::AwaitChange));
        let unnamed: Failure<TestError> = Failure::UnnamedObject;
        assert_eq!(classify(&unnamed), ("Finalizer", Retry::AwaitChange));
    }

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let secs: Vec<u64> = (1..=11).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(backoff(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn failures_count_per_object_and_reset() {
        let f = Failures::default();
        assert_eq!(f.record("subnet", "a".into()), 1);
        assert_eq!(f.record("subnet", "a".into()), 2);
        assert_eq!(f.record("subnet", "b".into()), 1);
        assert_eq!(f.record("vpc", "a".into()), 1);
        f.clear("subnet", "a");
        assert_eq!(f.record("subnet", "a".into()), 1);
    }

    #[test]
    fn api_refusals_wait_for_a_change() {
        let api = |code| {
            kube::Error::Api(
                kube::core::Status::failure("x", "Invalid")
                    .with_code(code)
                    .boxed(),
            )
        };
        assert_eq!(api_retry(&api(422)), Retry::AwaitChange);
        assert_eq!(api_retry(&api(409)), Retry::Backoff);
        assert_eq!(api_retry(&api(500)), Retry::Backoff);
    }
}
