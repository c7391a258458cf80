//! The `KubeOvn` controller: the install switch. Read → validate (`validate.rs`) → render
//! (`render.rs`, pure, from the spec, the operator's version and image, and the nodes) → apply
//! (`apply.rs`: server-side apply, orphans removed by label) → status (`rollout.rs`). Deleting
//! the object uninstalls, one component at a time, under the finalizer.
//!
//! It also tells the rest of the operator where OVN central is: once central serves, the NB
//! endpoints are published on a watch channel the network controllers wait for.

pub mod apply;
pub mod assets;
pub mod plain;
pub mod render;
pub mod rollout;
pub mod validate;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::{Resource, ResourceExt};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::controller::{self, api_retry, ControllerError, Failure, Failures, Retry, ShellContext};
use super::status::Metrics;
use crate::api::kubeovn::{
    CentralStatus, KubeOvn, KubeOvnStatus, OvnCentralMode, KUBE_OVN_SINGLETON,
};
use render::{ObservedNode, Operator, MANAGED_SELECTOR, OVN_CENTRAL};
use rollout::Outcome;

const CONTROLLER: &str = "kubeovn";
const FINALIZER: &str = "operator.kubeovn.io/uninstall";

/// What the KubeOvn controller shares between reconciles.
pub struct InstallContext {
    pub client: kube::Client,
    pub metrics: Arc<Metrics>,
    pub failures: Failures,
    pub operator: Operator,
    /// Where NB and SB are, once central serves (`None` before, and after an uninstall).
    pub central: watch::Sender<Option<CentralStatus>>,
}

impl ShellContext for InstallContext {
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

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing the install: {0}")]
    Api(#[source] kube::Error),
    #[error("uninstall not finished: {0:?} still there")]
    StillInstalled(Vec<String>),
}

impl ControllerError for Error {
    fn kind(&self) -> &'static str {
        match self {
            Error::Api(_) => "Api",
            Error::StillInstalled(_) => "StillInstalled",
        }
    }
    fn retry(&self) -> Retry {
        match self {
            Error::Api(e) => api_retry(e),
            Error::StillInstalled(_) => Retry::Backoff,
        }
    }
}

/// The operator's identity: its version, and its image from `RELATED_IMAGE_KUBE_OVN` (as OLM
/// sets related images) or else its own pod's (`POD_NAME`/`POD_NAMESPACE`).
pub async fn discover_operator(client: &kube::Client) -> Operator {
    let version = crate::VERSION.to_owned();
    if let Some(image) = std::env::var("RELATED_IMAGE_KUBE_OVN")
        .ok()
        .filter(|i| !i.is_empty())
    {
        return Operator {
            version,
            image: Some(image),
        };
    }
    let (Ok(name), Ok(ns)) = (std::env::var("POD_NAME"), std::env::var("POD_NAMESPACE")) else {
        return Operator {
            version,
            image: None,
        };
    };
    let image = match Api::<Pod>::namespaced(client.clone(), &ns)
        .get_opt(&name)
        .await
    {
        Ok(pod) => pod
            .and_then(|p| p.spec)
            .and_then(|s| s.containers.into_iter().next())
            .and_then(|c| c.image),
        Err(e) => {
            warn!(pod = %name, namespace = %ns, error = %e, "reading the operator's own pod for its image");
            None
        }
    };
    Operator { version, image }
}

fn observed_node(node: &Node) -> ObservedNode {
    let status = node.status.clone().unwrap_or_default();
    let address = status
        .addresses
        .iter()
        .flatten()
        .find(|a| a.type_ == "InternalIP")
        .and_then(|a| a.address.parse::<IpAddr>().ok());
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    ObservedNode {
        name: node.name_any(),
        address,
        labels: node.labels().clone(),
        ready,
        unschedulable: node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false),
    }
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Writes the status computed for `outcome`.
async fn write_status(
    ctx: &InstallContext,
    obj: &KubeOvn,
    outcome: &Outcome,
    observed: &[rollout::Observed],
    central: Option<CentralStatus>,
) -> Result<KubeOvnStatus, Error> {
    let previous = obj.status.clone().unwrap_or_default();
    let status = rollout::status(
        &previous,
        obj.meta().generation,
        outcome,
        observed,
        central,
        now(),
    );
    if status != previous {
        controller::apply_status::<KubeOvn, _>(&ctx.client, &obj.name_any(), &status)
            .await
            .map_err(Error::Api)?;
    }
    Ok(status)
}

async fn reconcile(obj: Arc<KubeOvn>, ctx: Arc<InstallContext>) -> Result<Action, Failure<Error>> {
    if obj.name_any() != KUBE_OVN_SINGLETON {
        // Not ours to act on: say so on it, and never hold its deletion.
        if let Err(invalid) = validate::validate(&obj) {
            let outcome = Outcome::Refused {
                reason: invalid.reason.into(),
                message: invalid.message,
            };
            write_status(&ctx, &obj, &outcome, &[], None)
                .await
                .map_err(Failure::ApplyFailed)?;
        }
        return Ok(Action::await_change());
    }
    if obj.meta().deletion_timestamp.is_some() && obj.finalizers().iter().any(|f| f == FINALIZER) {
        // kube-runtime's finalizer helper drops the finalizer as soon as a cleanup returns,
        // and with it the owner of what still runs: step through the uninstall here and hand
        // over to it only once nothing is left.
        let remaining = apply::uninstall_step(&ctx.client)
            .await
            .map_err(|e| Failure::CleanupFailed(Error::Api(e)))?;
        if !remaining.is_empty() {
            info!(remaining = ?remaining, "uninstalling");
            write_status(&ctx, &obj, &Outcome::Uninstalling { remaining }, &[], None)
                .await
                .map_err(Failure::CleanupFailed)?;
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
    }
    controller::reconcile(
        CONTROLLER,
        &*ctx,
        FINALIZER,
        obj,
        |o| install(o, &ctx),
        |o| uninstall(o, &ctx),
    )
    .await
}

/// Refuses with a status and no change to what runs.
async fn refuse(
    ctx: &InstallContext,
    obj: &KubeOvn,
    reason: &str,
    message: String,
) -> Result<(), Error> {
    warn!(kubeovn = %obj.name_any(), reason, %message, "install refused; nothing applied");
    let outcome = Outcome::Refused {
        reason: reason.into(),
        message,
    };
    write_status(ctx, obj, &outcome, &[], None).await?;
    Ok(())
}

async fn install(obj: Arc<KubeOvn>, ctx: &InstallContext) -> Result<Action, Error> {
    if let Err(invalid) = validate::validate(&obj) {
        refuse(ctx, &obj, invalid.reason, invalid.message).await?;
        return Ok(Action::await_change());
    }
    let spec = &obj.spec;
    debug!(generation = ?obj.meta().generation, "install: reconciling");
    let previous = obj.status.clone().unwrap_or_default();
    let central_nodes = match spec.ovn_central.mode {
        OvnCentralMode::External => Vec::new(),
        OvnCentralMode::Embedded => {
            let nodes: Vec<ObservedNode> = Api::<Node>::all(ctx.client.clone())
                .list(&ListParams::default())
                .await
                .map_err(Error::Api)?
                .iter()
                .map(observed_node)
                .collect();
            let chosen = previous
                .central
                .as_ref()
                .map(|c| c.nodes.clone())
                .unwrap_or_default();
            match render::choose_central_nodes(spec.ovn_central.replicas, &nodes, &chosen) {
                Ok(n) => n,
                Err(e) => {
                    refuse(ctx, &obj, e.reason(), e.to_string()).await?;
                    // Nodes come and go: look again even without a spec change.
                    return Ok(Action::requeue(Duration::from_secs(10)));
                }
            }
        }
    };
    let owner = obj
        .controller_owner_ref(&())
        .expect("a KubeOvn read from the API has a name and uid");
    let rendered = match render::render(&render::Input {
        spec,
        owner,
        operator: &ctx.operator,
        central_nodes: &central_nodes,
    }) {
        Ok(r) => r,
        Err(e) => {
            refuse(ctx, &obj, e.reason(), e.to_string()).await?;
            return Ok(Action::await_change());
        }
    };
    debug!("install: rendered; applying");
    if let Err(e) = apply::apply_all(&ctx.client, &rendered).await {
        refuse(
            ctx,
            &obj,
            "ApplyFailed",
            format!("applying the install: {e}"),
        )
        .await?;
        return Err(Error::Api(e));
    }
    let removed = apply::prune_orphans(&ctx.client, &rendered)
        .await
        .map_err(Error::Api)?;
    if !removed.is_empty() {
        info!(removed = ?removed, "removed what the spec no longer renders");
    }
    let mut expected = Vec::new();
    expected.extend(rendered.central.iter().map(|o| o.name_any()));
    expected.extend(rendered.ovs_ovn.iter().map(|o| o.name_any()));
    expected.push(rendered.cni.name_any());
    let observed = apply::observe(&ctx.client, &spec.namespace)
        .await
        .map_err(Error::Api)?;
    let outcome = Outcome::Applied { expected };
    let status = write_status(
        ctx,
        &obj,
        &outcome,
        &observed,
        Some(rendered.endpoints.clone()),
    )
    .await?;

    // Central serves once its members are ready (with a raft cluster: all of them at first;
    // the endpoints stay published afterwards, the cluster keeps quorum on its own).
    let central_ready = match spec.ovn_central.mode {
        OvnCentralMode::External => true,
        OvnCentralMode::Embedded => status
            .components
            .iter()
            .any(|c| c.name == OVN_CENTRAL && c.desired > 0 && c.ready >= c.desired),
    };
    if central_ready {
        ctx.central.send_if_modified(|current| {
            if current.as_ref() == Some(&rendered.endpoints) {
                return false;
            }
            info!(nb = %rendered.endpoints.nb_address, sb = %rendered.endpoints.sb_address, "OVN central serves");
            *current = Some(rendered.endpoints.clone());
            true
        });
    }
    if rollout::is_available(&status) && status.version.is_some() {
        Ok(Action::requeue(Duration::from_secs(300)))
    } else {
        Ok(Action::requeue(Duration::from_secs(2)))
    }
}

/// The finalizer's cleanup, reached once `reconcile` found nothing of the install left: one
/// last look, then the finalizer goes (an error keeps it while anything reappeared).
async fn uninstall(_obj: Arc<KubeOvn>, ctx: &InstallContext) -> Result<Action, Error> {
    let remaining = apply::uninstall_step(&ctx.client)
        .await
        .map_err(Error::Api)?;
    if !remaining.is_empty() {
        return Err(Error::StillInstalled(remaining));
    }
    info!("uninstalled: every workload, account and role of the install is gone");
    Ok(Action::await_change())
}

fn error_policy(obj: Arc<KubeOvn>, error: &Failure<Error>, ctx: Arc<InstallContext>) -> Action {
    controller::error_policy(CONTROLLER, &*obj, error, &*ctx)
}

/// Runs the KubeOvn controller until the process stops.
pub async fn run(ctx: Arc<InstallContext>) {
    let client = ctx.client.clone();
    let managed = watcher::Config::default().labels(MANAGED_SELECTOR);
    // Everything maps to the singleton by name: `owns` would key a cluster-scoped owner by
    // its namespaced child's namespace, and two keys for one object reconcile it twice at once.
    fn singleton<K>(_: K) -> Option<ObjectRef<KubeOvn>> {
        Some(ObjectRef::new(KUBE_OVN_SINGLETON))
    }
    Controller::new(
        Api::<KubeOvn>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(
        Api::<DaemonSet>::all(client.clone()),
        managed.clone(),
        singleton::<DaemonSet>,
    )
    .watches(
        Api::<StatefulSet>::all(client.clone()),
        managed,
        singleton::<StatefulSet>,
    )
    .watches(
        Api::<Node>::all(client),
        watcher::Config::default(),
        singleton::<Node>,
    )
    .run(reconcile, error_policy, ctx)
    .for_each(|_| futures::future::ready(()))
    .await;
}
