//! Leader election for the operator's controllers: one `coordination.k8s.io/v1` Lease
//! (`kube-ovn-operator` in the operator's namespace) decides which replica allocates. During an
//! OLM upgrade old and new operator pods run side by side; only the Lease holder may touch IPAM,
//! NB or the pods, so `run` acquires it before opening either.
//!
//! The protocol is client-go's `leaderelection`: a candidate takes the Lease when it is free
//! (no holder, released) or when its record has not changed for `lease_duration` as seen on
//! this process's own clock (no trust in other nodes' clocks); the holder renews every
//! `retry_period` and gives up once it could not renew for `renew_deadline`
//! (< `lease_duration`, so it stops before anyone else may start). Every write is a replace
//! carrying the `resourceVersion` that was read: of two candidates racing for one Lease the
//! API server lets one through and answers the other 409.
//!
//! Why not a crate: kube-lease-manager builds with our kube 5 but counts time in whole seconds
//! (our tests use a half-second retry period), has no renew deadline, and resolves races with
//! server-side-apply field-manager conflicts and strategic merge patches where resourceVersion
//! is the API's plain guarantee; kube-leader-election needs kube 4.
//!
//! Not here: what the leader runs (`run` in `mod.rs`), IPAM adoption (`adopt.rs`).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use super::OperatorArgs;

/// The Lease's name: one per operator installation namespace.
pub const LEASE_NAME: &str = "kube-ovn-operator";

/// Where the Lease lives, who we are, and the timings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    /// How long followers wait after the last renewal they saw before taking over.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up leading.
    pub renew_deadline: Duration,
    /// How often candidates try to acquire and the leader renews.
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// From the operator's flags; identity is `POD_NAME`, else `<hostname>-<pid>`.
    pub fn from_args(args: &OperatorArgs) -> anyhow::Result<LeaseConfig> {
        anyhow::ensure!(
            args.renew_deadline < args.lease_duration,
            "--renew-deadline ({:?}) must be shorter than --lease-duration ({:?}): a leader \
             must stop before a follower may start",
            args.renew_deadline,
            args.lease_duration
        );
        anyhow::ensure!(
            args.retry_period < args.renew_deadline,
            "--retry-period ({:?}) must be shorter than --renew-deadline ({:?})",
            args.retry_period,
            args.renew_deadline
        );
        Ok(LeaseConfig {
            namespace: args.lease_namespace.clone(),
            name: LEASE_NAME.to_owned(),
            identity: own_identity(),
            lease_duration: args.lease_duration,
            renew_deadline: args.renew_deadline,
            retry_period: args.retry_period,
        })
    }

    fn lease_seconds(&self) -> i32 {
        // The field counts whole seconds: round up, never below one.
        i32::try_from(self.lease_duration.as_millis().div_ceil(1000))
            .unwrap_or(i32::MAX)
            .max(1)
    }
}

fn own_identity() -> String {
    if let Some(pod) = std::env::var("POD_NAME").ok().filter(|p| !p.is_empty()) {
        return pod;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_owned());
    format!("{host}-{}", std::process::id())
}

/// The Lease record fields that say who holds it; a change of any resets the follower's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    holder: Option<String>,
    renewed: Option<MicroTime>,
    resource_version: Option<String>,
}

impl Record {
    fn of(lease: &Lease) -> Record {
        let spec = lease.spec.as_ref();
        Record {
            holder: spec
                .and_then(|s| s.holder_identity.clone())
                .filter(|h| !h.is_empty()),
            renewed: spec.and_then(|s| s.renew_time.clone()),
            resource_version: lease.metadata.resource_version.clone(),
        }
    }
}

/// Whether the holder in `record` has not renewed for `duration`, on our own clock: the time
/// since `observed` first saw this very record.
fn expired(observed: &mut Option<(Record, Instant)>, record: &Record, duration: Duration) -> bool {
    let now = Instant::now();
    match observed {
        Some((seen, at)) if seen == record => now.duration_since(*at) >= duration,
        _ => {
            *observed = Some((record.clone(), now));
            false
        }
    }
}

/// What one attempt to take or renew the Lease found.
#[derive(Debug)]
enum Attempt {
    /// We hold it now (`from`: the previous holder when we just took it over).
    Held { from: Option<String> },
    /// Someone else holds it and their record is still fresh.
    HeldBy(String),
    /// Another candidate wrote first (409): look again next period.
    Raced,
}

/// One candidate's view of the Lease: the last record seen and when (on our clock).
struct Candidate {
    api: Api<Lease>,
    config: LeaseConfig,
    observed: Option<(Record, Instant)>,
}

impl Candidate {
    fn new(client: kube::Client, config: LeaseConfig) -> Candidate {
        Candidate {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
        }
    }

    /// Takes the Lease if it is free, expired or already ours; renews it when ours.
    async fn try_acquire_or_renew(&mut self) -> anyhow::Result<Attempt> {
        let cfg = &self.config;
        let now = MicroTime(Timestamp::now());
        let Some(mut lease) = self
            .api
            .get_opt(&cfg.name)
            .await
            .with_context(|| format!("reading Lease {}/{}", cfg.namespace, cfg.name))?
        else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(cfg.identity.clone()),
                    lease_duration_seconds: Some(cfg.lease_seconds()),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Held { from: None }),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Raced),
                Err(e) => {
                    Err(e).with_context(|| format!("creating Lease {}/{}", cfg.namespace, cfg.name))
                }
            };
        };
        let record = Record::of(&lease);
        let spec = lease.spec.get_or_insert_with(Default::default);
        // Ours also when a previous incarnation of this pod (same POD_NAME) held it: the
        // kubelet restarts a container only after it exited, so no second writer exists.
        let ours = record.holder.as_deref() == Some(cfg.identity.as_str());
        if let Some(holder) = record.holder.clone().filter(|_| !ours) {
            // The holder's own duration counts: it may run with other flags than ours.
            let duration = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(cfg.lease_duration, Duration::from_secs);
            if !expired(&mut self.observed, &record, duration) {
                return Ok(Attempt::HeldBy(holder));
            }
        }
        if !ours {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            spec.holder_identity = Some(cfg.identity.clone());
        }
        spec.renew_time = Some(now);
        spec.lease_duration_seconds = Some(cfg.lease_seconds());
        // `lease` still carries the resourceVersion read above: a write in between is a 409.
        match self
            .api
            .replace(&cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(Attempt::Held {
                from: if ours { None } else { record.holder },
            }),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Raced),
            Err(e) => {
                Err(e).with_context(|| format!("updating Lease {}/{}", cfg.namespace, cfg.name))
            }
        }
    }

    /// Gives the Lease up if we still hold it, so a follower takes over at once.
    async fn release(&self) -> anyhow::Result<bool> {
        let cfg = &self.config;
        let Some(mut lease) = self.api.get_opt(&cfg.name).await? else {
            return Ok(false);
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(cfg.identity.as_str()) {
            return Ok(false);
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        self.api
            .replace(&cfg.name, &PostParams::default(), &lease)
            .await?;
        Ok(true)
    }
}

/// This process leads until `lost()` resolves; a background task renews the Lease.
pub struct Leadership {
    /// `None` when leader election is off (`--leader-elect=false`).
    held: Option<Held>,
}

struct Held {
    lost: watch::Receiver<Option<String>>,
    renewer: tokio::task::JoinHandle<()>,
    /// For `release`: a fresh view of the same Lease.
    lease: Candidate,
}

/// Blocks until this process holds the Lease; logs who holds it meanwhile.
pub async fn acquire(client: kube::Client, config: LeaseConfig) -> anyhow::Result<Leadership> {
    let started = Instant::now();
    let mut candidate = Candidate::new(client.clone(), config);
    let mut last_holder: Option<String> = None;
    let (from, acquired) = loop {
        let attempt = Instant::now();
        match candidate.try_acquire_or_renew().await {
            Ok(Attempt::Held { from }) => break (from, attempt),
            Ok(Attempt::HeldBy(holder)) => {
                if last_holder.as_ref() != Some(&holder) {
                    let cfg = &candidate.config;
                    info!(identity = %cfg.identity, lease = %format!("{}/{}", cfg.namespace, cfg.name), holder = %holder, "waiting for leadership: another operator leads");
                    last_holder = Some(holder);
                }
            }
            Ok(Attempt::Raced) => debug!("another candidate wrote the Lease first"),
            Err(e) => warn!(error = %format!("{e:#}"), "leader election: trying again"),
        }
        tokio::time::sleep(candidate.config.retry_period).await;
    };
    let cfg = &candidate.config;
    info!(
        identity = %cfg.identity,
        lease = %format!("{}/{}", cfg.namespace, cfg.name),
        previous = from.as_deref().unwrap_or(""),
        waited_ms = started.elapsed().as_millis() as u64,
        "acquired leadership"
    );
    let (tell, lost) = watch::channel(None);
    let lease = Candidate::new(client, candidate.config.clone());
    let renewer = tokio::spawn(renew(candidate, acquired, tell));
    Ok(Leadership {
        held: Some(Held {
            lost,
            renewer,
            lease,
        }),
    })
}

/// `acquire` with the operator's flags, or a leadership that is never lost when
/// `--leader-elect=false` (one operator alone, for tests and development).
pub async fn elect(client: &kube::Client, args: &OperatorArgs) -> anyhow::Result<Leadership> {
    if !args.leader_elect {
        warn!("leader election is off (--leader-elect=false): run only one operator");
        return Ok(Leadership { held: None });
    }
    acquire(client.clone(), LeaseConfig::from_args(args)?).await
}

/// Renews every retry period until renewing failed for the renew deadline or someone else
/// holds the Lease; then says why on `tell`.
async fn renew(mut candidate: Candidate, acquired: Instant, tell: watch::Sender<Option<String>>) {
    let mut renewed = acquired;
    let cfg = candidate.config.clone();
    let lease = format!("{}/{}", cfg.namespace, cfg.name);
    let past_deadline = |renewed: Instant| {
        (renewed.elapsed() >= cfg.renew_deadline).then(|| {
            format!(
                "last renewed Lease {lease} {:?} ago, past the renew deadline {:?}",
                renewed.elapsed(),
                cfg.renew_deadline
            )
        })
    };
    loop {
        tokio::time::sleep(cfg.retry_period).await;
        // Checked before asking the API server too: a process that was stopped (or starved)
        // past its deadline may already have a successor and must not write even once more.
        let mut why = past_deadline(renewed);
        if why.is_none() {
            // The Lease counts from when the request left, not from the answer.
            let attempt = Instant::now();
            why = match candidate.try_acquire_or_renew().await {
                Ok(Attempt::Held { .. }) => {
                    renewed = attempt;
                    continue;
                }
                Ok(Attempt::HeldBy(holder)) => {
                    Some(format!("Lease {lease} is now held by {holder:?}"))
                }
                Ok(Attempt::Raced) => {
                    warn!(identity = %cfg.identity, %lease, "renewing leadership: the Lease changed under us; trying again");
                    past_deadline(renewed)
                }
                Err(e) => {
                    warn!(identity = %cfg.identity, %lease, error = %format!("{e:#}"), "renewing leadership failed; trying again");
                    past_deadline(renewed)
                }
            };
        }
        if let Some(why) = why {
            error!(identity = %cfg.identity, %lease, "lost leadership: {why}");
            let _ = tell.send(Some(why));
            return;
        }
    }
}

impl Leadership {
    /// Resolves when this process no longer leads, with the reason; never when election is off.
    pub async fn lost(&mut self) -> anyhow::Error {
        let Some(held) = &mut self.held else {
            return std::future::pending().await;
        };
        match held.lost.wait_for(Option::is_some).await {
            Ok(why) => anyhow::anyhow!(
                "{}; stopping so that only the new leader allocates",
                why.as_deref().unwrap_or("leadership lost")
            ),
            Err(_) => anyhow::anyhow!("the Lease renewer stopped; leadership is lost"),
        }
    }

    /// Stops renewing and frees the Lease (clean shutdown), so a follower takes over at once.
    pub async fn release(self) {
        let Some(held) = self.held else {
            return;
        };
        held.renewer.abort();
        let _ = held.renewer.await;
        let cfg = &held.lease.config;
        let lease = format!("{}/{}", cfg.namespace, cfg.name);
        match held.lease.release().await {
            Ok(true) => info!(identity = %cfg.identity, %lease, "released leadership"),
            Ok(false) => {
                info!(identity = %cfg.identity, %lease, "leadership already passed on; nothing to release")
            }
            Err(e) => {
                warn!(identity = %cfg.identity, %lease, error = %format!("{e:#}"), "releasing leadership failed; a follower takes over once the Lease expires")
            }
        }
    }
}
