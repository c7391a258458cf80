//! What every controller of the operator shares: the API client, the
//! reflector stores, the NB connection and port batcher, IPAM, Events,
//! metrics, and the small amount of cross-controller state (pods waiting for
//! a NAD or subnet, subnets found invalid, subnets whose usage changed).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::Store;
use tokio::sync::Notify;

use super::controller::Failures;
use super::events::Notifier;
use super::ports::PortBatcher;
use super::queue::WorkQueue;
use super::status::Metrics;
use crate::api::annotations::Provider;
use crate::api::attachment_id;
use crate::api::ip::IP;
use crate::api::ipamclaim::IPAMClaim;
use crate::api::ippool::IPPool;
use crate::api::nad::NetworkAttachmentDefinition;
use crate::api::nat::VpcNatGateway;
use crate::api::subnet::Subnet;
use crate::api::vpc::Vpc;
use crate::ipam::Ipam;
use crate::ovn::Northbound;

/// A pod by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodKey {
    pub namespace: String,
    pub name: String,
}

impl PodKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    pub fn of(pod: &Pod) -> Self {
        Self::new(
            pod.metadata.namespace.clone().unwrap_or_default(),
            pod.metadata.name.clone().unwrap_or_default(),
        )
    }

    // The names below are `attachment_id`'s rules, for attachment keys read back as strings.

    /// `<ns>/<pod>`: the LSP `external_ids:pod` value.
    pub fn ns_name(&self) -> String {
        attachment_id::pod_ref(&self.namespace, &self.name)
    }

    /// The IPAM key of this pod's attachment `key`.
    pub fn ipam_key(&self, attachment: &str) -> String {
        attachment_id::ipam_key(&self.namespace, &self.name, attachment)
    }

    /// LSP and IP CR name of attachment `key`.
    pub fn port_name(&self, attachment: &str) -> String {
        attachment_id::port_name(&self.namespace, &self.name, attachment)
    }

    /// The attachment key of `port_name` if it is one of this pod's.
    pub fn attachment_of_port<'a>(&self, port_name: &'a str) -> Option<&'a str> {
        attachment_id::key_of_port(port_name, &self.namespace, &self.name)
    }

    /// The pod an IPAM key belongs to, and the attachment key.
    pub fn of_ipam_key(key: &str) -> Option<(PodKey, &str)> {
        let (namespace, name, attachment) = attachment_id::split_ipam_key(key)?;
        Some((PodKey::new(namespace, name), attachment))
    }
}

impl std::fmt::Display for PodKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Shared state of the operator's controllers.
pub struct Context {
    pub client: kube::Client,
    pub nb: Northbound,
    pub ports: PortBatcher,
    pub ipam: Arc<Ipam>,
    pub pods: Store<Pod>,
    pub subnets: Store<Subnet>,
    pub vpcs: Store<Vpc>,
    pub nads: Store<NetworkAttachmentDefinition>,
    pub ips: Store<IP>,
    pub nat_gateways: Store<VpcNatGateway>,
    pub ippools: Store<IPPool>,
    /// Never waited for: the IPAMClaim CRD is optional.
    pub ipamclaims: Store<IPAMClaim>,
    pub events: Notifier,
    pub metrics: Arc<Metrics>,
    /// Consecutive reconcile failures per object, for the controllers' backoff.
    pub failures: Failures,
    pub pod_queue: Arc<WorkQueue<PodKey>>,
    /// Pods whose attachments failed for a reason a NAD or Subnet change may fix.
    pub waiting: Mutex<HashSet<PodKey>>,
    /// The last state of deleted pods, until their cleanup ran.
    pub tombstones: Mutex<HashMap<PodKey, Arc<Pod>>>,
    /// Subnets whose spec is invalid: name → the condition message.
    pub invalid_subnets: Mutex<HashMap<String, String>>,
    /// Subnets whose usage counters must be written again.
    pub dirty_usage: Mutex<HashSet<String>>,
    pub usage_changed: Notify,
    /// Pods of the first list not yet reconciled (`None` until it arrived).
    pub initial: Mutex<Option<HashSet<PodKey>>>,
    pub started: Instant,
    /// Bumped on every NAD or Subnet change that may unblock waiting pods.
    pub changes: AtomicU64,
    /// Held while a VPC's routes are planned and written (`routes::sync`): two writers
    /// planning against the same cache would insert one route twice.
    pub routes_lock: tokio::sync::Mutex<()>,
    /// Wakes the traffic-policy controller (pods and Subnets changed: MultiNetworkPolicies
    /// select pods by label, subnets carry ACLs).
    pub policy_wake: Arc<Notify>,
}

impl Context {
    /// Queues every pod that waits for a NAD or a subnet.
    pub fn requeue_waiting(&self) {
        self.changes.fetch_add(1, Ordering::SeqCst);
        let waiting: Vec<PodKey> = self
            .waiting
            .lock()
            .expect("waiting lock poisoned")
            .drain()
            .collect();
        for key in waiting {
            self.pod_queue.add(key);
        }
    }

    /// Parks `key` until a NAD or Subnet changes. `seen` is `changes` as read
    /// before the pod was planned: a change since then requeues it at once,
    /// so a NAD that appeared mid-reconcile is never missed.
    pub fn wait_for_change(&self, key: &PodKey, seen: u64) {
        self.waiting
            .lock()
            .expect("waiting lock poisoned")
            .insert(key.clone());
        if self.changes.load(Ordering::SeqCst) != seen {
            self.requeue_waiting();
        }
    }

    /// Notes that `subnet`'s usage changed.
    pub fn usage_changed(&self, subnet: &str) {
        self.dirty_usage
            .lock()
            .expect("usage lock poisoned")
            .insert(subnet.to_owned());
        self.usage_changed.notify_one();
    }

    /// Records the pods of the first list; ready once each was reconciled.
    pub fn set_initial(&self, keys: HashSet<PodKey>) {
        *self.initial.lock().expect("initial lock poisoned") = Some(keys);
        self.check_ready();
    }

    /// Notes that `key` was reconciled once.
    pub fn initial_done(&self, key: &PodKey) {
        if let Some(set) = self.initial.lock().expect("initial lock poisoned").as_mut() {
            set.remove(key);
        }
        self.check_ready();
    }

    fn check_ready(&self) {
        if self.metrics.ready.load(Ordering::Relaxed) {
            return;
        }
        let empty = self
            .initial
            .lock()
            .expect("initial lock poisoned")
            .as_ref()
            .is_some_and(HashSet::is_empty);
        if empty && !self.metrics.ready.swap(true, Ordering::Relaxed) {
            let ms = self.started.elapsed().as_millis() as u64;
            self.metrics.ready_ms.store(ms, Ordering::Relaxed);
            tracing::info!(
                ready_ms = ms,
                allocations = self.ipam.read(|a| a.len()),
                "operator ready: every pod present at start reconciled"
            );
        }
    }

    /// Why `subnet` cannot take attachments, if it cannot.
    pub fn subnet_problem(&self, subnet: &str) -> Option<String> {
        if let Some(reason) = self
            .invalid_subnets
            .lock()
            .expect("invalid subnets lock poisoned")
            .get(subnet)
        {
            return Some(reason.clone());
        }
        // An IPAM-only subnet (another plugin's network) has no logical switch.
        let ipam_only = self
            .subnets
            .get(&kube::runtime::reflector::ObjectRef::new(subnet))
            .is_some_and(|s| Provider::parse_ipam_only(s.provider()).is_ok());
        let in_nb = ipam_only || self.nb.switch_exists(subnet);
        (self.ipam.subnet(subnet).is_none() || !in_nb)
            .then(|| format!("subnet {subnet:?} is not set up yet"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let pod = PodKey::new("default", "web");
        assert_eq!(
            pod.port_name("n1.default.ovn"),
            "web.default.n1.default.ovn"
        );
        assert_eq!(
            pod.attachment_of_port("web.default.n1.default.ovn"),
            Some("n1.default.ovn")
        );
        assert_eq!(pod.attachment_of_port("webx.default.n1.default.ovn"), None);
        assert_eq!(pod.ipam_key("n1.default.ovn"), "default/web/n1.default.ovn");
        assert_eq!(
            PodKey::of_ipam_key("default/web/n1.default.ovn"),
            Some((pod, "n1.default.ovn"))
        );
    }
}
