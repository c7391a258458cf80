//! IPPools: which pools of a subnet IPAM takes ([`fit_pools`], pure: the Subnet controller
//! applies its result with the subnet), and the IPPool controller, which says on each pool
//! whether it was taken (`Ready` with the reason it was not: a subnet that does not exist, an
//! address outside the subnet, an overlap with an older pool) and how many of its addresses are
//! in use. Pods name pools through `<provider>.kubernetes.io/ip_pool`; that side is
//! `attachment.rs` (planning) and `pod/` (allocation).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::{Resource, ResourceExt};
use tracing::warn;

use super::context::Context;
use super::controller;
use crate::api::condition::{set_condition, Condition, ConditionStatus, READY};
use crate::api::ippool::{IPPool, IpPoolStatus};
use crate::api::subnet::Subnet;
use crate::ipam::{self, Allocator, Family};

/// `base` (a subnet's IPAM spec) with every pool of `pools` that fits it, oldest first (by
/// creation time, then name), and for each pool whether it was taken or why not. Pools naming
/// another subnet are ignored. Pure.
pub fn fit_pools(
    base: &ipam::SubnetSpec,
    pools: &[Arc<IPPool>],
) -> (ipam::SubnetSpec, BTreeMap<String, Result<(), String>>) {
    let mut spec = base.clone();
    spec.pools.clear();
    let mut mine: Vec<&Arc<IPPool>> = pools
        .iter()
        .filter(|p| p.spec.subnet == base.name && p.metadata.deletion_timestamp.is_none())
        .collect();
    mine.sort_by_key(|p| {
        (
            p.metadata.creation_timestamp.clone().map(|t| t.0),
            p.name_any(),
        )
    });
    let mut outcomes = BTreeMap::new();
    for pool in mine {
        let name = pool.name_any();
        let entries: Vec<String> = pool
            .spec
            .ips
            .iter()
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect();
        if entries.is_empty() {
            outcomes.insert(
                name.clone(),
                Err(format!("IPPool {name:?}: spec.ips is empty")),
            );
            continue;
        }
        let candidate = spec.clone().with_pool(name.clone(), entries);
        match Allocator::new().add_subnet(candidate.clone()) {
            Ok(_) => {
                spec = candidate;
                outcomes.insert(name, Ok(()));
            }
            Err(e) => {
                outcomes.insert(name.clone(), Err(format!("IPPool {name:?}: {e}")));
            }
        }
    }
    (spec, outcomes)
}

/// The status of `pool` given the outcome and its usage per family. Pure.
pub fn desired_status(
    pool: &IPPool,
    outcome: Result<(), (&str, String)>,
    usage: &[ipam::FamilyUsage],
    now: Time,
) -> IpPoolStatus {
    let mut status = pool.status.clone().unwrap_or_default();
    let (state, reason, message) = match outcome {
        Ok(()) => (
            ConditionStatus::True,
            "Ready",
            format!("addresses of subnet {} reserved", pool.spec.subnet),
        ),
        Err((reason, message)) => (ConditionStatus::False, reason, message),
    };
    set_condition(
        &mut status.conditions,
        Condition::new(READY, state, reason, message, pool.metadata.generation, now),
    );
    let clamp = |n: u128| i64::try_from(n).unwrap_or(i64::MAX);
    (
        status.v4_using_ips,
        status.v4_available_ips,
        status.v6_using_ips,
        status.v6_available_ips,
    ) = (0, 0, 0, 0);
    for f in usage {
        match f.family {
            Family::V4 => {
                status.v4_using_ips = clamp(f.used);
                status.v4_available_ips = clamp(f.available);
            }
            Family::V6 => {
                status.v6_using_ips = clamp(f.used);
                status.v6_available_ips = clamp(f.available);
            }
        }
    }
    status
}

#[derive(Debug, thiserror::Error)]
#[error("IPPool {pool:?}: writing status: {source}")]
pub struct Error {
    pool: String,
    source: kube::Error,
}

async fn reconcile(pool: Arc<IPPool>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = pool.name_any();
    let subnet = pool.spec.subnet.clone();
    let mut usage = Vec::new();
    let mut next = Action::requeue(Duration::from_secs(10));
    let outcome = if ctx
        .subnets
        .get(&ObjectRef::<Subnet>::new(&subnet))
        .is_none()
    {
        next = Action::await_change();
        Err((
            "SubnetNotFound",
            format!("IPPool {name:?}: subnet {subnet:?} does not exist"),
        ))
    } else if let Some(view) = ctx.ipam.subnet(&subnet) {
        let (_, outcomes) = fit_pools(&view.spec, &ctx.ippools.state());
        match outcomes.get(&name) {
            Some(Err(message)) => {
                next = Action::await_change();
                Err(("InvalidIPPool", message.clone()))
            }
            _ => match ctx.ipam.read(|a| a.pool_usage(&subnet, &name)) {
                Ok(u) => {
                    usage = u;
                    Ok(())
                }
                // The Subnet controller has not applied it yet.
                Err(_) => {
                    next = Action::requeue(Duration::from_secs(2));
                    Err((
                        "Pending",
                        format!("IPPool {name:?}: subnet {subnet:?} has not taken it yet"),
                    ))
                }
            },
        }
    } else {
        next = Action::requeue(Duration::from_secs(2));
        Err((
            "SubnetNotReady",
            format!("IPPool {name:?}: subnet {subnet:?} is not set up yet"),
        ))
    };
    if let Err((reason, message)) = &outcome {
        if *reason != "Pending" {
            ctx.events
                .warn(&pool.object_ref(&()), reason, "Validate", message)
                .await;
        }
    } else {
        ctx.events.forget(&pool.object_ref(&()));
    }
    let status = desired_status(&pool, outcome, &usage, Time(Timestamp::now()));
    if pool.status.as_ref() != Some(&status) {
        controller::apply_status::<IPPool, _>(&ctx.client, &name, &status)
            .await
            .map_err(|source| Error {
                pool: name.clone(),
                source,
            })?;
    }
    Ok(next)
}

fn error_policy(pool: Arc<IPPool>, error: &Error, _ctx: Arc<Context>) -> Action {
    warn!(pool = %pool.name_any(), "{error}");
    Action::requeue(Duration::from_secs(5))
}

/// Runs the IPPool controller until the process stops.
pub async fn run(ctx: Arc<Context>) {
    let api: Api<IPPool> = Api::all(ctx.client.clone());
    let subnets: Api<Subnet> = Api::all(ctx.client.clone());
    let pools = ctx.ippools.clone();
    Controller::new(api, watcher::Config::default())
        .watches(
            subnets,
            watcher::Config::default(),
            move |subnet: Subnet| {
                let name = subnet.name_any();
                pools
                    .state()
                    .into_iter()
                    .filter(|p| p.spec.subnet == name)
                    .map(|p| ObjectRef::from_obj(&*p))
                    .collect::<Vec<_>>()
            },
        )
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ippool::IpPoolSpec;

    fn pool(name: &str, subnet: &str, ips: &[&str], age: i64) -> Arc<IPPool> {
        let mut p = IPPool::new(
            name,
            IpPoolSpec {
                subnet: subnet.into(),
                ips: ips.iter().map(|s| s.to_string()).collect(),
                namespaces: vec![],
            },
        );
        p.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            Timestamp::from_second(1_700_000_000 + age).unwrap(),
        ));
        Arc::new(p)
    }

    #[test]
    fn pools_that_fit_are_taken_and_the_others_say_why() {
        let base = ipam::SubnetSpec::new("s1", "10.0.0.0/24");
        let pools = [
            pool("a", "s1", &["10.0.0.10..10.0.0.12"], 0),
            pool("outside", "s1", &["10.0.1.5"], 1),
            pool("overlap", "s1", &["10.0.0.12", "10.0.0.13"], 2),
            pool("empty", "s1", &[], 3),
            pool("elsewhere", "s2", &["10.9.0.1"], 4),
        ];
        let (spec, outcomes) = fit_pools(&base, &pools);
        assert_eq!(spec.pools.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(outcomes["a"], Ok(()));
        let err = |n: &str| outcomes[n].clone().unwrap_err();
        assert!(
            err("outside").contains("outside the usable range"),
            "{}",
            err("outside")
        );
        assert!(err("overlap").contains("overlap"), "{}", err("overlap"));
        assert!(err("empty").contains("spec.ips is empty"));
        assert!(!outcomes.contains_key("elsewhere"));
    }
}
