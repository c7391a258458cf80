//! The Vpc controller: Vpc → Logical_Router `<vpc>` with its static routes and policies
//! (`spec.staticRoutes`, `spec.policyRoutes` and the NAT gateways' default routes, planned in
//! `routes.rs`), in one NB transaction; status lists the router and the VPC's subnets, with a
//! Ready condition and a Validated one naming route entries that cannot be read (they are
//! left out, the rest applies). `standby` and `router` are set once the router is in NB; an
//! NB failure shows as `Ready=False` (`NbError`). Fields of upstream's Vpc that do nothing
//! here (`enableExternal`, `enableBfd`, `vpcPeerings`) get an `Unsupported` condition and a
//! Warning Event. Deleting a Vpc deletes its router (its subnets then report `VpcNotFound`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::{Resource, ResourceExt};
use tracing::{debug, info, warn};

use super::context::Context;
use super::controller::{self, ControllerError, Failure, Retry};
use super::routes;
use crate::api::condition::{
    set_condition, Condition, ConditionStatus, READY, UNSUPPORTED, VALIDATED,
};
use crate::api::nat::VpcNatGateway;
use crate::api::subnet::Subnet;
use crate::api::vpc::{Vpc, VpcSpec, VpcStatus};

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

/// Whether the VPC's logical router is in NB, as the last apply found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouterState {
    /// Ensured with its routes in this reconcile.
    Ready,
    /// Not written: the reason (the Vpc not in the operator's cache yet, an NB error).
    NotReady {
        reason: &'static str,
        message: String,
    },
}

/// Fields of upstream's Vpc this operator does not act on, each with what to use instead. Pure.
pub fn unsupported_fields(spec: &VpcSpec) -> Vec<String> {
    let mut out = Vec::new();
    if spec.enable_external == Some(true) || !spec.extra_external_subnets.is_empty() {
        out.push(
            "spec.enableExternal/extraExternalSubnets: the external gateway of the primary \
             network is not run here; create a VpcNatGateway on this VPC for external reach"
                .to_owned(),
        );
    }
    if spec.enable_bfd == Some(true) {
        out.push("spec.enableBfd: BFD to external gateways is not supported".to_owned());
    }
    if !spec.vpc_peerings.is_empty() {
        out.push(
            "spec.vpcPeerings: VPC peering is not supported yet; put the subnets that must \
             reach each other in one Vpc"
                .to_owned(),
        );
    }
    out
}

/// The VPC's status as of `now`, given the names of its subnets, the spec's route entries
/// that could not be applied and whether its router is in NB (`standby` says so, as
/// upstream's does once the router exists). Pure.
pub fn desired_status(
    vpc: &Vpc,
    subnets: Vec<String>,
    route_problems: &[String],
    router: &RouterState,
    now: Time,
) -> VpcStatus {
    let mut status = vpc.status.clone().unwrap_or_default();
    let name = vpc.name_any();
    let generation = vpc.metadata.generation;
    status.subnets = subnets;
    status.enable_external = false;
    status.enable_bfd = false;
    let ready = match router {
        RouterState::Ready => {
            status.router = Some(name.clone());
            status.standby = true;
            Condition::new(
                READY,
                ConditionStatus::True,
                "Ready",
                format!("logical router {name}"),
                generation,
                now.clone(),
            )
        }
        RouterState::NotReady { reason, message } => {
            status.standby = false;
            Condition::new(
                READY,
                ConditionStatus::False,
                reason,
                message.clone(),
                generation,
                now.clone(),
            )
        }
    };
    set_condition(&mut status.conditions, ready);
    let validated = if route_problems.is_empty() {
        Condition::new(
            VALIDATED,
            ConditionStatus::True,
            "Valid",
            "",
            generation,
            now.clone(),
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
            generation,
            now.clone(),
        )
    };
    set_condition(&mut status.conditions, validated);
    let unsupported = unsupported_fields(&vpc.spec);
    if unsupported.is_empty() {
        status.conditions.retain(|c| c.type_ != UNSUPPORTED);
    } else {
        set_condition(
            &mut status.conditions,
            Condition::new(
                UNSUPPORTED,
                ConditionStatus::True,
                "UnsupportedFields",
                format!(
                    "vpc {name} works without these fields: {}",
                    unsupported.join("; ")
                ),
                generation,
                now,
            ),
        );
    }
    status.observed_generation = generation;
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
    let (plan, router, failure) = match synced {
        Ok(Some(plan)) => (plan, RouterState::Ready, None),
        Ok(None) => (
            Default::default(),
            RouterState::NotReady {
                reason: "Pending",
                message: format!("vpc {name:?}: not in the operator's cache yet"),
            },
            None,
        ),
        Err(source) => (
            Default::default(),
            RouterState::NotReady {
                reason: "NbError",
                message: format!("vpc {name:?}: writing logical router {name}: {source}"),
            },
            Some(source),
        ),
    };
    for problem in &plan.problems {
        warn!(vpc = %name, "route left out: {problem}");
    }
    debug!(vpc = %name, routes = plan.routes.len(), policies = plan.policies.len(), ?router, "logical router and routes");
    let mut subnets: Vec<String> = ctx
        .subnets
        .state()
        .iter()
        .filter(|s| s.spec.vpc.as_deref() == Some(name.as_str()))
        .map(|s| s.name_any())
        .collect();
    subnets.sort();
    let status = desired_status(
        &vpc,
        subnets,
        &plan.problems,
        &router,
        Time(Timestamp::now()),
    );
    let unsupported = unsupported_fields(&vpc.spec);
    if !unsupported.is_empty() {
        ctx.events
            .warn(
                &vpc.object_ref(&()),
                "UnsupportedFields",
                "Validate",
                &unsupported.join("; "),
            )
            .await;
    }
    if vpc.status.as_ref() != Some(&status) {
        let written = controller::apply_status::<Vpc, _>(&ctx.client, &name, &status).await;
        if let Err(source) = written {
            // The NB error is the one to report when both failed.
            if failure.is_none() {
                return Err(Error::Status {
                    vpc: name.clone(),
                    source,
                });
            }
        }
    }
    if let Some(source) = failure {
        return Err(Error::Nb { vpc: name, source });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::condition::find_condition;

    fn now() -> Time {
        Time(Timestamp::from_second(2_000_000).unwrap())
    }

    #[test]
    fn standby_and_router_follow_the_router_in_nb() {
        let vpc = Vpc::new("vpc-secondary", VpcSpec::default());
        let subnets = vec!["subnet-secondary".to_owned()];
        let status = desired_status(&vpc, subnets.clone(), &[], &RouterState::Ready, now());
        assert!(status.standby);
        assert_eq!(status.router.as_deref(), Some("vpc-secondary"));
        assert_eq!(status.subnets, subnets);
        assert!(find_condition(&status.conditions, READY).unwrap().is_true());
        assert!(find_condition(&status.conditions, UNSUPPORTED).is_none());

        let failed = RouterState::NotReady {
            reason: "NbError",
            message:
                "vpc \"vpc-secondary\": writing logical router vpc-secondary: connection refused"
                    .into(),
        };
        let fresh = desired_status(&vpc, vec![], &[], &failed, now());
        assert!(!fresh.standby);
        assert_eq!(fresh.router, None);
        let ready = find_condition(&fresh.conditions, READY).unwrap();
        assert_eq!((ready.is_true(), ready.reason.as_str()), (false, "NbError"));
        assert!(
            ready.message.contains("connection refused"),
            "{}",
            ready.message
        );
    }

    #[test]
    fn external_bfd_and_peering_fields_get_an_unsupported_condition() {
        let vpc = Vpc::new(
            "v",
            VpcSpec {
                enable_external: Some(true),
                enable_bfd: Some(true),
                vpc_peerings: vec![Default::default()],
                ..Default::default()
            },
        );
        let status = desired_status(&vpc, vec![], &[], &RouterState::Ready, now());
        let c = find_condition(&status.conditions, UNSUPPORTED).unwrap();
        assert_eq!(c.reason, "UnsupportedFields");
        assert!(
            c.message
                .starts_with("vpc v works without these fields: spec.enableExternal"),
            "{}",
            c.message
        );
        assert!(c.message.contains("VpcNatGateway") && c.message.contains("spec.vpcPeerings"));
        assert!(!status.enable_external && !status.enable_bfd);
        assert!(unsupported_fields(&VpcSpec {
            enable_external: Some(false),
            namespaces: vec!["default".into()],
            ..Default::default()
        })
        .is_empty());
    }
}
