//! The Vpc controller: Vpc → Logical_Router `<vpc>` with its static routes and policies
//! (`spec.staticRoutes`, `spec.policyRoutes` and the NAT gateways' default routes, planned in
//! `routes.rs`), in one NB transaction; status lists the router and the VPC's subnets, with a
//! Ready condition and a Validated one naming route entries that cannot be read (they are
//! left out, the rest applies). Deleting a Vpc deletes its router (its subnets then report
//! `VpcNotFound`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::ResourceExt;
use tracing::{debug, info, warn};

use super::context::Context;
use super::controller::{self, ControllerError, Failure, Retry};
use super::routes;
use crate::api::condition::{set_condition, Condition, ConditionStatus, READY, VALIDATED};
use crate::api::nat::VpcNatGateway;
use crate::api::subnet::Subnet;
use crate::api::vpc::{Vpc, VpcStatus};

pub const FINALIZER: &str = "kubeovn.io/vpc-controller";

/// Errors of the Vpc controller (the variant names are metric labels).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("vpc {vpc:?}: OVN NB: {source}")]
    Nb {
        vpc: String,
        source: crate::ovn::Error,
    },
    #[error("vpc {vpc:?}: writing status: {source}")]
    Status { vpc: String, source: kube::Error },
}

impl ControllerError for Error {
    fn kind(&self) -> &'static str {
        match self {
            Error::Nb { .. } => "Nb",
            Error::Status { .. } => "Status",
        }
    }

    fn retry(&self) -> Retry {
        match self {
            Error::Nb { .. } => Retry::Backoff,
            Error::Status { source, .. } => controller::api_retry(source),
        }
    }
}

const CONTROLLER: &str = "vpc";

/// The VPC's status as of `now`, given the names of its subnets and the spec's route entries
/// that could not be applied. Pure.
pub fn desired_status(
    vpc: &Vpc,
    subnets: Vec<String>,
    route_problems: &[String],
    now: Time,
) -> VpcStatus {
    let mut status = vpc.status.clone().unwrap_or_default();
    let name = vpc.name_any();
    status.router = Some(name.clone());
    status.subnets = subnets;
    status.standby = true;
    set_condition(
        &mut status.conditions,
        Condition::new(
            READY,
            ConditionStatus::True,
            "Ready",
            format!("logical router {name}"),
            vpc.metadata.generation,
            now.clone(),
        ),
    );
    let validated = if route_problems.is_empty() {
        Condition::new(
            VALIDATED,
            ConditionStatus::True,
            "Valid",
            "",
            vpc.metadata.generation,
            now,
        )
    } else {
        Condition::new(
            VALIDATED,
            ConditionStatus::False,
            "InvalidRoute",
            format!(
                "vpc {name:?}: left out (the other routes apply): {}",
                route_problems.join("; ")
            ),
            vpc.metadata.generation,
            now,
        )
    };
    set_condition(&mut status.conditions, validated);
    status.observed_generation = vpc.metadata.generation;
    status
}

async fn reconcile(vpc: Arc<Vpc>, ctx: Arc<Context>) -> Result<Action, Failure<Error>> {
    controller::reconcile(
        CONTROLLER,
        &*ctx,
        FINALIZER,
        vpc,
        |v| apply(v, &ctx),
        |v| cleanup(v, &ctx),
    )
    .await
}

async fn apply(vpc: Arc<Vpc>, ctx: &Context) -> Result<Action, Error> {
    let name = vpc.name_any();
    let started = Instant::now();
    let synced = routes::sync(ctx, &name).await;
    ctx.metrics.observe_nb(CONTROLLER, started.elapsed());
    let plan = synced
        .map_err(|source| Error::Nb {
            vpc: name.clone(),
            source,
        })?
        .unwrap_or_default();
    for problem in &plan.problems {
        warn!(vpc = %name, "route left out: {problem}");
    }
    debug!(vpc = %name, routes = plan.routes.len(), policies = plan.policies.len(), "logical router and routes ensured");
    let mut subnets: Vec<String> = ctx
        .subnets
        .state()
        .iter()
        .filter(|s| s.spec.vpc.as_deref() == Some(name.as_str()))
        .map(|s| s.name_any())
        .collect();
    subnets.sort();
    let status = desired_status(&vpc, subnets, &plan.problems, Time(Timestamp::now()));
    if vpc.status.as_ref() != Some(&status) {
        controller::apply_status::<Vpc, _>(&ctx.client, &name, &status)
            .await
            .map_err(|source| Error::Status {
                vpc: name.clone(),
                source,
            })?;
    }
    Ok(Action::requeue(Duration::from_secs(600)))
}

async fn cleanup(vpc: Arc<Vpc>, ctx: &Context) -> Result<Action, Error> {
    let name = vpc.name_any();
    let started = Instant::now();
    let deleted = ctx.nb.delete_router(&name).await;
    ctx.metrics.observe_nb(CONTROLLER, started.elapsed());
    deleted.map_err(|source| Error::Nb {
        vpc: name.clone(),
        source,
    })?;
    info!(vpc = %name, "logical router deleted");
    Ok(Action::await_change())
}

fn error_policy(vpc: Arc<Vpc>, error: &Failure<Error>, ctx: Arc<Context>) -> Action {
    controller::error_policy(CONTROLLER, &*vpc, error, &*ctx)
}

/// Runs the Vpc controller until the process stops.
pub async fn run(ctx: Arc<Context>) {
    let api: Api<Vpc> = Api::all(ctx.client.clone());
    let subnets: Api<Subnet> = Api::all(ctx.client.clone());
    let gateways: Api<VpcNatGateway> = Api::all(ctx.client.clone());
    Controller::new(api, watcher::Config::default())
        .watches(subnets, watcher::Config::default(), |s: Subnet| {
            s.spec.vpc.map(|v| ObjectRef::<Vpc>::new(&v))
        })
        .watches(gateways, watcher::Config::default(), |g: VpcNatGateway| {
            Some(ObjectRef::<Vpc>::new(&g.spec.vpc)).filter(|_| !g.spec.vpc.is_empty())
        })
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}
