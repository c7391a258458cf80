//! The Vpc controller: Vpc → Logical_Router `<vpc>`; status lists the router
//! and the VPC's subnets, with a Ready condition. Deleting a Vpc deletes its
//! router (its subnets then report `VpcNotFound`).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::Event as Finalizer;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::ResourceExt;
use serde_json::json;
use tracing::{info, warn};

use super::context::{with_finalizer, Context};
use crate::api::condition::{set_condition, Condition, ConditionStatus, READY};
use crate::api::subnet::Subnet;
use crate::api::vpc::{Vpc, VpcStatus};
use crate::ovn::external_ids;

pub const FINALIZER: &str = "kubeovn.io/vpc-controller";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("vpc {vpc:?}: OVN NB: {source}")]
    Nb {
        vpc: String,
        source: crate::ovn::Error,
    },
    #[error("vpc {vpc:?}: writing status: {source}")]
    Status { vpc: String, source: kube::Error },
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

/// The VPC's status given the names of its subnets. Pure.
pub fn desired_status(vpc: &Vpc, subnets: Vec<String>) -> VpcStatus {
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
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ),
        ),
    );
    status.observed_generation = vpc.metadata.generation;
    status
}

async fn reconcile(vpc: Arc<Vpc>, ctx: Arc<Context>) -> Result<Action, Error> {
    let api: Api<Vpc> = Api::all(ctx.client.clone());
    with_finalizer(&api, FINALIZER, vpc, |event| async {
        match event {
            Finalizer::Apply(v) => apply(&v, &ctx).await,
            Finalizer::Cleanup(v) => cleanup(&v, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

async fn apply(vpc: &Vpc, ctx: &Context) -> Result<Action, Error> {
    let name = vpc.name_any();
    let ids = external_ids::ours([(external_ids::VPC, name.as_str())]);
    let created = ctx
        .nb
        .ensure_router(&name, &ids)
        .await
        .map_err(|source| Error::Nb {
            vpc: name.clone(),
            source,
        })?;
    if created {
        info!(vpc = %name, "logical router ensured");
    }
    let mut subnets: Vec<String> = ctx
        .subnets
        .state()
        .iter()
        .filter(|s| s.spec.vpc.as_deref() == Some(name.as_str()))
        .map(|s| s.name_any())
        .collect();
    subnets.sort();
    let status = desired_status(vpc, subnets);
    if vpc.status.as_ref() != Some(&status) {
        Api::<Vpc>::all(ctx.client.clone())
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await
            .map_err(|source| Error::Status {
                vpc: name.clone(),
                source,
            })?;
    }
    Ok(Action::requeue(Duration::from_secs(600)))
}

async fn cleanup(vpc: &Vpc, ctx: &Context) -> Result<Action, Error> {
    let name = vpc.name_any();
    ctx.nb
        .delete_router(&name)
        .await
        .map_err(|source| Error::Nb {
            vpc: name.clone(),
            source,
        })?;
    info!(vpc = %name, "logical router deleted");
    Ok(Action::await_change())
}

fn error_policy(vpc: Arc<Vpc>, error: &Error, _ctx: Arc<Context>) -> Action {
    warn!(vpc = %vpc.name_any(), error = %error, "vpc reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// Runs the Vpc controller until the process stops.
pub async fn run(ctx: Arc<Context>) {
    let api: Api<Vpc> = Api::all(ctx.client.clone());
    let subnets: Api<Subnet> = Api::all(ctx.client.clone());
    Controller::new(api, watcher::Config::default())
        .watches(subnets, watcher::Config::default(), |s: Subnet| {
            s.spec.vpc.map(|v| ObjectRef::<Vpc>::new(&v))
        })
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}
