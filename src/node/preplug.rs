//! Pre-plugging: a pod's interface is built and bound in OVN before its CNI ADD.
//!
//! The controller writes a pod's allocation annotations before the kubelet creates the sandbox
//! and Multus calls us; on the node that gap (pulling the pause image, creating the netns,
//! running the primary CNI for eth0) is tens to hundreds of milliseconds. Most of an ADD's own
//! time is OVN's: ovs-vswitchd adds the port, ovn-controller claims the binding, installs the
//! flows and marks the interface `ovn-installed`. So as soon as a pod of this node is annotated,
//! [`run`] builds a veth in the node's netns (`<hash>_p`, the switch port; `<hash>_c`, with the
//! pod's MAC and MTU; both up, without IPv6 or addresses, so they send nothing) and plugs the
//! host end into br-int with the attachment's `iface-id`, marked
//! `external_ids:preplug_peer=<peer>`. ADD then creates the pod interface straight in the pod
//! netns as a passthru macvlan on `<hash>_c` (it takes that MAC and MTU; frames go through the
//! veth to OVS as before), configures it, and records the sandbox (`external_ids:sandbox`,
//! `pod_netns`, `pod_ifname`, without `preplug_peer`); the port is usually installed already.
//! DEL deletes the veth, and the macvlan goes with its lower device.
//!
//! Why a macvlan and not the peer itself: moving a link into another netns waits for RCU in
//! the kernel (`rcu_barrier`; 15-23 ms per move on the test VM), longer than the OVN wait it
//! would save; a macvlan is created directly in the pod netns like the plain veth's peer.
//!
//! Invariant: at most one OVS interface per `iface-id`. Slots, one per `iface-id`, serialize
//! the two writers: the pre-plug pass creates a slot only when none exists and no OVS interface
//! carries that `iface-id` (both read under the slot map's lock), and an ADD takes the slot (or
//! creates an empty one) for its whole duration. Unwanted pre-plugs (the pod went, is
//! terminating, or its annotations changed) are removed by the next pass; unclaimed ones left
//! by an earlier run of the daemon are removed at start ([`Preplug::collect_leftovers`]), and
//! rebuilt if still wanted.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::{watch, Mutex as AsyncMutex, OwnedMutexGuard};
use tracing::{debug, info, warn};

use crate::api::attachment_id;
use crate::api::mac::MacAddr;
use crate::ovn::external_ids;
use crate::ovn::vswitch::Vswitch;

use super::attachment::{self, name_stem, Placement, Wiring, WiringDefaults};
use super::netlink::{Netlink, NetlinkError};
use super::pod_index::{PodIndex, PodView};

/// How many pre-plugs one pass builds at once.
const PARALLEL: usize = 8;
/// A pass also runs this often without a pod change (to retire pre-plugs a busy slot kept).
const RESYNC: Duration = Duration::from_secs(30);

/// A pre-plugged interface waiting for its ADD.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prepared {
    /// The host end, plugged into the bridge.
    pub host: String,
    /// The pod end, still in the node's netns.
    pub peer: String,
    pub pod_uid: String,
    pub mac: MacAddr,
    pub mtu: u32,
}

impl Prepared {
    /// Whether this pre-plug was built for the interface `w` describes.
    pub fn fits(&self, w: &Wiring) -> bool {
        self.pod_uid == w.pod_uid && self.mac == w.veth.mac && self.mtu == w.veth.mtu
    }
}

#[derive(Debug)]
enum Slot {
    /// Wanted; the builder has not started.
    Queued,
    Ready(Prepared),
    /// Building failed for this pod (uid); not retried while the pod stays as it is.
    Failed(String),
    /// An ADD owns the `iface-id` (it holds the slot's lock meanwhile).
    Add,
    /// Given up before it was built.
    Cancelled,
}

type Slots = Arc<Mutex<HashMap<String, Arc<AsyncMutex<Slot>>>>>;

/// The pre-plugged interfaces of this node.
pub struct Preplug {
    netlink: Netlink,
    vswitch: Vswitch,
    bridge: String,
    defaults: WiringDefaults,
    slots: Slots,
}

/// An ADD's hold on an `iface-id`: while it lives, no pre-plug is built for it. Carries the
/// pre-plugged interface if there was one that fits.
pub struct Ticket {
    slots: Slots,
    iface_id: String,
    slot: Arc<AsyncMutex<Slot>>,
    _guard: OwnedMutexGuard<Slot>,
    pub prepared: Option<Prepared>,
    /// A pre-plug that no longer fits the pod; the ADD removes it before plugging its own.
    pub stale: Option<Prepared>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut slots = lock(&self.slots);
        if slots
            .get(&self.iface_id)
            .is_some_and(|s| Arc::ptr_eq(s, &self.slot))
        {
            slots.remove(&self.iface_id);
        }
    }
}

fn lock(slots: &Slots) -> std::sync::MutexGuard<'_, HashMap<String, Arc<AsyncMutex<Slot>>>> {
    slots.lock().expect("pre-plug slots lock poisoned")
}

/// The node-side names of a pre-plugged interface: `<12 hex>_p` (host end) and `<12 hex>_c`
/// (pod end until ADD renames it), from a FNV-1a hash of the pod UID and the `iface-id`, so a
/// re-created pod of the same name gets other names.
pub fn preplug_names(pod_uid: &str, iface_id: &str) -> (String, String) {
    let stem = name_stem(pod_uid, iface_id);
    (format!("{stem}_p"), format!("{stem}_c"))
}

/// What a pass wants pre-plugged: by `iface-id`, the wiring (placed at the pre-plug names)
/// and the pod's name and namespace.
fn wanted(pods: &[PodView], defaults: WiringDefaults) -> HashMap<String, (Wiring, &PodView)> {
    let mut out = HashMap::new();
    for pod in pods {
        if pod.terminating || pod.finished || pod.uid.is_empty() {
            continue;
        }
        for key in attachment::allocated_keys(pod) {
            let iface_id = attachment_id::port_name(&pod.namespace, &pod.name, key);
            let (host_name, _) = preplug_names(&pod.uid, &iface_id);
            let place = Placement {
                host_name,
                pod_netns: PathBuf::new(),
                pod_ifname: String::new(),
            };
            if let Some(Ok(w)) = attachment::wiring_of_key(pod, key, defaults, place) {
                out.insert(w.iface_id.clone(), (w, pod));
            }
        }
    }
    out
}

impl Preplug {
    /// Must be called inside a tokio runtime (opens its own rtnetlink socket).
    pub fn new(
        vswitch: Vswitch,
        bridge: String,
        defaults: WiringDefaults,
    ) -> Result<Self, NetlinkError> {
        Ok(Preplug {
            netlink: Netlink::new()?,
            vswitch,
            bridge,
            defaults,
            slots: Arc::default(),
        })
    }

    /// What the node uses where the annotations do not say.
    pub fn defaults(&self) -> WiringDefaults {
        self.defaults
    }

    /// Takes the `iface-id` of `w` for an ADD, waiting for a pre-plug being built for it.
    pub async fn claim(&self, w: &Wiring) -> Ticket {
        let slot = lock(&self.slots)
            .entry(w.iface_id.clone())
            .or_insert_with(|| Arc::new(AsyncMutex::new(Slot::Add)))
            .clone();
        let mut guard = slot.clone().lock_owned().await;
        let (prepared, stale) = match std::mem::replace(&mut *guard, Slot::Add) {
            Slot::Ready(p) if p.fits(w) => (Some(p), None),
            Slot::Ready(p) => (None, Some(p)),
            _ => (None, None),
        };
        Ticket {
            slots: self.slots.clone(),
            iface_id: w.iface_id.clone(),
            slot,
            _guard: guard,
            prepared,
            stale,
        }
    }

    /// Removes a pre-plugged interface (port and veth) by its host end. Nothing there is fine.
    pub async fn discard(&self, host: &str) {
        let (unplugged, deleted) = tokio::join!(
            self.vswitch.unplug_interface(host),
            self.netlink.delete_link(host)
        );
        if let Err(e) = unplugged {
            warn!(iface = %host, error = %e, "removing a pre-plugged port");
        }
        if let Err(e) = deleted {
            warn!(iface = %host, error = %e, "removing a pre-plugged veth");
        }
    }

    /// Removes the pre-plugged interfaces nobody claimed that an earlier run of the daemon
    /// left (their slots died with it). Call before serving. Returns their names.
    pub async fn collect_leftovers(&self) -> Vec<String> {
        let interfaces = match self.vswitch.our_interfaces() {
            Ok(i) => i,
            Err(e) => {
                warn!(error = %e, "pre-plug: reading interfaces");
                return vec![];
            }
        };
        let mut removed = Vec::new();
        for iface in interfaces {
            if !iface.is_preplugged() {
                continue;
            }
            self.discard(&iface.name).await;
            removed.push(iface.name);
        }
        removed
    }

    /// One pass: queue what is wanted and not there, retire what is there and not wanted,
    /// then build the queue. Returns how many pre-plugs it built.
    pub async fn reconcile(&self, pods: &PodIndex) -> usize {
        let snapshot = pods.snapshot();
        let mut wants = wanted(&snapshot, self.defaults);
        let mut retire = Vec::new();
        let mut queue = Vec::new();
        {
            let mut slots = lock(&self.slots);
            slots.retain(|id, slot| {
                let Ok(mut state) = slot.try_lock() else {
                    return true; // being built or claimed: the next pass looks again
                };
                let want = wants.get(id).map(|(w, _)| w);
                match &*state {
                    Slot::Ready(p) if want.is_some_and(|w| p.fits(w)) => true,
                    Slot::Failed(uid) if want.is_some_and(|w| &w.pod_uid == uid) => true,
                    Slot::Queued if want.is_some() => true,
                    Slot::Ready(p) => {
                        retire.push(p.clone());
                        *state = Slot::Cancelled;
                        false
                    }
                    _ => {
                        *state = Slot::Cancelled;
                        false
                    }
                }
            });
            // The OVSDB cache is read under the slot lock: an ADD drops its ticket only once
            // its interface is in the cache, so an iface-id is always in a slot or in there.
            wants.retain(|id, _| {
                !slots.contains_key(id)
                    && match self.vswitch.interfaces_with_id(external_ids::IFACE_ID, id) {
                        Ok(plugged) => plugged.is_empty(),
                        Err(e) => {
                            warn!(error = %e, iface_id = %id, "pre-plug: reading interfaces");
                            false
                        }
                    }
            });
            for (id, (w, pod)) in wants {
                let slot = Arc::new(AsyncMutex::new(Slot::Queued));
                slots.insert(id, slot.clone());
                queue.push((slot, w, pod.name.clone(), pod.namespace.clone()));
            }
        }
        for p in &retire {
            debug!(iface = %p.host, "pre-plug no longer wanted");
            self.discard(&p.host).await;
        }
        futures::stream::iter(queue)
            .map(|(slot, w, name, namespace)| async move {
                let mut state = slot.lock().await;
                if !matches!(*state, Slot::Queued) {
                    return 0; // an ADD took the iface-id first
                }
                *state = match self.build(&w, &name, &namespace).await {
                    Ok(p) => Slot::Ready(p),
                    Err(e) => {
                        warn!(pod = %name, namespace = %namespace, iface_id = %w.iface_id, error = %e, "pre-plugging failed; ADD will build the interface");
                        Slot::Failed(w.pod_uid.clone())
                    }
                };
                usize::from(matches!(*state, Slot::Ready(_)))
            })
            .buffer_unordered(PARALLEL)
            .fold(0, |n, built| async move { n + built })
            .await
    }

    async fn build(&self, w: &Wiring, name: &str, namespace: &str) -> Result<Prepared, String> {
        let started = Instant::now();
        let (host, peer) = preplug_names(&w.pod_uid, &w.iface_id);
        // Under the slot's lock: no ADD can plug this iface-id now, but one may have just
        // finished (its interface then is in the cache).
        let taken = self
            .vswitch
            .interfaces_with_id(external_ids::IFACE_ID, &w.iface_id)
            .map_err(|e| e.to_string())?;
        if !taken.is_empty() {
            return Err(format!("{} is plugged already", w.iface_id));
        }
        self.netlink
            .create_detached_veth(&host, &peer, w.veth.mac, w.veth.mtu, w.veth.tx_checksum_off)
            .await
            .map_err(|e| e.to_string())?;
        let mut ids = attachment::interface_ids(name, namespace, w, "");
        ids.insert(external_ids::PREPLUG_PEER.to_string(), peer.clone());
        if let Err(e) = self.vswitch.plug_interface(&self.bridge, &host, &ids).await {
            let _ = self.netlink.delete_link(&host).await;
            return Err(format!("plugging {host}: {e}"));
        }
        info!(
            iface = %host,
            iface_id = %w.iface_id,
            ms = started.elapsed().as_secs_f64() * 1e3,
            "pre-plugged"
        );
        Ok(Prepared {
            host,
            peer,
            pod_uid: w.pod_uid.clone(),
            mac: w.veth.mac,
            mtu: w.veth.mtu,
        })
    }
}

/// Runs a pass on every pod index change (and every [`RESYNC`]) until `stop` turns true.
pub async fn run(pods: Arc<PodIndex>, preplug: Arc<Preplug>, mut stop: watch::Receiver<bool>) {
    let mut changes = pods.subscribe();
    loop {
        changes.mark_unchanged();
        if pods.is_synced() {
            preplug.reconcile(&pods).await;
        }
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(RESYNC) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preplug_names_fit_ifnamsiz_and_differ_per_pod_uid() {
        let (host, peer) = preplug_names("uid-1", "web.default.net.default.ovn");
        assert_eq!(host.len(), 14);
        assert!(host.ends_with("_p") && peer.ends_with("_c"));
        assert_eq!(host[..12], peer[..12]);
        let (again, _) = preplug_names("uid-1", "web.default.net.default.ovn");
        assert_eq!(host, again);
        let (other, _) = preplug_names("uid-2", "web.default.net.default.ovn");
        assert_ne!(host, other);
    }

    fn pod(uid: &str, terminating: bool, annotations: &[(&str, &str)]) -> PodView {
        PodView {
            namespace: "default".into(),
            name: "web".into(),
            uid: uid.into(),
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            terminating,
            finished: false,
            pod_ips: Vec::new(),
        }
    }

    const ALLOCATED: [(&str, &str); 6] = [
        ("net.default.ovn.kubernetes.io/allocated", "true"),
        ("net.default.ovn.kubernetes.io/ip_address", "10.1.0.5"),
        (
            "net.default.ovn.kubernetes.io/mac_address",
            "0a:58:0a:01:00:05",
        ),
        ("net.default.ovn.kubernetes.io/cidr", "10.1.0.0/24"),
        ("net.default.ovn.kubernetes.io/gateway", "10.1.0.1"),
        ("net.default.ovn.kubernetes.io/logical_switch", "s1"),
    ];

    const DEFAULTS: WiringDefaults = WiringDefaults {
        mtu: 1400,
        tx_checksum_off: true,
    };

    #[test]
    fn only_allocated_running_pods_of_our_providers_are_wanted() {
        let pods = vec![pod("u1", false, &ALLOCATED)];
        let wants = wanted(&pods, DEFAULTS);
        let (w, _) = &wants["web.default.net.default.ovn"];
        assert_eq!(w.pod_uid, "u1");
        assert_eq!(w.veth.mac.to_string(), "0a:58:0a:01:00:05");
        assert_eq!(w.veth.mtu, 1400);
        assert_eq!(
            w.veth.host_name,
            preplug_names("u1", "web.default.net.default.ovn").0
        );

        // Terminating, finished, not yet allocated, or another provider's annotations: nothing.
        assert!(wanted(&[pod("u1", true, &ALLOCATED)], DEFAULTS).is_empty());
        let done = PodView {
            finished: true,
            ..pod("u1", false, &ALLOCATED)
        };
        assert!(wanted(&[done], DEFAULTS).is_empty());
        assert!(wanted(&[pod("u1", false, &ALLOCATED[1..])], DEFAULTS).is_empty());
        let theirs: Vec<(String, String)> = ALLOCATED
            .iter()
            .map(|(k, v)| (k.replace("net.default.ovn.", "ovn."), v.to_string()))
            .collect();
        let theirs: Vec<(&str, &str)> = theirs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert!(wanted(&[pod("u1", false, &theirs)], DEFAULTS).is_empty());
    }

    #[test]
    fn a_pre_plug_fits_only_the_same_pod_mac_and_mtu() {
        let pods = vec![pod("u1", false, &ALLOCATED)];
        let wants = wanted(&pods, DEFAULTS);
        let (w, _) = &wants["web.default.net.default.ovn"];
        let p = Prepared {
            host: w.veth.host_name.clone(),
            peer: String::new(),
            pod_uid: "u1".into(),
            mac: w.veth.mac,
            mtu: 1400,
        };
        assert!(p.fits(w));
        assert!(!Prepared {
            pod_uid: "u2".into(),
            ..p.clone()
        }
        .fits(w));
        assert!(!Prepared {
            mtu: 1500,
            ..p.clone()
        }
        .fits(w));
        assert!(!Prepared {
            mac: "0a:58:0a:01:00:06".parse().expect("mac"),
            ..p
        }
        .fits(w));
    }
}
