//! The `nat-gw` role: the process of a VpcNatGateway's pod (`kube-ovn nat-gw`). It watches
//! its gateway, the EIPs and the FIP/DNAT/SNAT rules, and programs them in its own netns: one
//! nftables table replaced atomically, the EIPs on the external interface with gratuitous
//! ARP, forwarding on, and the connections of removed rules cut; then it writes each
//! object's `status.ready`. Everything is rebuilt from the CRs on start. The controller side
//! (the gateway's StatefulSet, EIP allocation, validation) is in `src/operator/`.
//!
//! By step: `rules.rs` (which CRs, as typed rules), `plan.rs` (the wanted table, addresses
//! and conntrack flushes; pure), `dataplane.rs` (applying a plan) over `nftables.rs`,
//! `links.rs`, `conntrack.rs` and `nfnetlink.rs`; `routing.rs` (forwarded LAN traffic out of
//! the external leg by policy routing, eth0 keeping the pod's default route);
//! `interfaces.rs` (which interface is which leg); `status.rs` (`status.ready`). This file is
//! the loop that joins them.

pub mod conntrack;
pub mod dataplane;
pub mod interfaces;
pub mod links;
pub mod nfnetlink;
pub mod nftables;
pub mod plan;
pub mod routing;
pub mod rules;
pub mod status;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::Resource;
use serde::de::DeserializeOwned;
use tokio::sync::{watch, Notify};
use tracing::{error, info, warn};

use crate::api::annotations::NETWORK_STATUS;
use crate::api::nat::{
    IptablesDnatRule, IptablesEIP, IptablesFIPRule, IptablesSnatRule, VpcNatGateway,
};
use crate::api::network_status::parse_network_status;

pub use dataplane::{apply, Applied};
pub use plan::{plan, Interfaces, NatPlan};
pub use rules::{select, GatewayRules, NatObjects, RuleRef, Selection};

/// How long a burst of changes is collected before one reconcile.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// A full re-apply even without changes, repairing anything that altered the netns.
const RESYNC: Duration = Duration::from_secs(300);
/// The wait before retrying a failed apply or status write.
const RETRY: Duration = Duration::from_secs(5);

/// Flags of `kube-ovn nat-gw`.
#[derive(Debug, Clone, clap::Args)]
pub struct NatGwArgs {
    /// Name of the VpcNatGateway this pod serves.
    #[arg(long, env = "GATEWAY_NAME")]
    pub gateway: Option<String>,
    /// This pod's name, to read its network-status (downward API).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// This pod's namespace.
    #[arg(long, env = "POD_NAMESPACE")]
    pub pod_namespace: Option<String>,
    /// The LAN interface, instead of finding it from network-status or lanIp.
    #[arg(long, env = "LAN_INTERFACE")]
    pub lan_interface: Option<String>,
    /// The external interface, instead of finding it from network-status.
    #[arg(long, env = "EXTERNAL_INTERFACE")]
    pub external_interface: Option<String>,
    /// The external network's gateway: traffic forwarded from the LAN leaves through it
    /// (policy routing; the pod's own default route stays on eth0). Without it, forwarded
    /// traffic follows the pod's main table.
    #[arg(long, env = "GATEWAY_V4")]
    pub gateway_v4: Option<Ipv4Addr>,
}

/// The reflector stores the loop reads.
struct Stores {
    gateways: Store<VpcNatGateway>,
    eips: Store<IptablesEIP>,
    fips: Store<IptablesFIPRule>,
    dnats: Store<IptablesDnatRule>,
    snats: Store<IptablesSnatRule>,
}

/// Runs the NAT gateway role until SIGTERM or SIGINT. The rules stay in place when it stops:
/// a restarted container finds them and replaces them with what the CRs say.
pub async fn run(args: NatGwArgs) -> anyhow::Result<()> {
    let gateway = args
        .gateway
        .clone()
        .context("the gateway's name is required (--gateway or GATEWAY_NAME)")?;
    let (stop_tx, mut stop) = watch::channel(false);
    tokio::spawn(async move {
        crate::node::shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let client = kube::Client::try_default()
        .await
        .context("building the Kubernetes client (KUBECONFIG or in-cluster config)")?;
    info!(gateway = %gateway, "nat-gw starting");

    let changed = Arc::new(Notify::new());
    let stores = Stores {
        gateways: mirror(Api::all(client.clone()), "vpc-nat-gateways", &changed),
        eips: mirror(Api::all(client.clone()), "iptables-eips", &changed),
        fips: mirror(Api::all(client.clone()), "iptables-fip-rules", &changed),
        dnats: mirror(Api::all(client.clone()), "iptables-dnat-rules", &changed),
        snats: mirror(Api::all(client.clone()), "iptables-snat-rules", &changed),
    };
    // An incomplete store would look like removed rules: wait for every first list.
    for ready in [
        stores.gateways.wait_until_ready().await.is_ok(),
        stores.eips.wait_until_ready().await.is_ok(),
        stores.fips.wait_until_ready().await.is_ok(),
        stores.dnats.wait_until_ready().await.is_ok(),
        stores.snats.wait_until_ready().await.is_ok(),
    ] {
        anyhow::ensure!(ready, "a watch stopped before its first list");
    }
    info!(gateway = %gateway, "watches synced");

    let interfaces = loop {
        match find_interfaces(&client, &args, &gateway, &stores).await {
            Ok(i) => break i,
            Err(e) => {
                warn!(gateway = %gateway, "cannot tell the gateway's interfaces yet: {e:#}");
                tokio::select! {
                    _ = tokio::time::sleep(RETRY) => {}
                    _ = stop.wait_for(|s| *s) => return Ok(()),
                }
            }
        }
    };
    info!(gateway = %gateway, lan = %interfaces.lan, external = %interfaces.external, "interfaces");

    let mut gw = Gateway {
        name: gateway,
        client,
        interfaces,
        egress_gateway: args.gateway_v4,
        applied: None,
        started: true,
        skipped: BTreeMap::new(),
    };
    let mut next_resync = tokio::time::Instant::now() + RESYNC;
    loop {
        let retry = gw
            .reconcile(&stores, tokio::time::Instant::now() >= next_resync)
            .await;
        if tokio::time::Instant::now() >= next_resync {
            next_resync = tokio::time::Instant::now() + RESYNC;
        }
        let wake_at = if retry {
            tokio::time::Instant::now() + RETRY
        } else {
            next_resync
        };
        tokio::select! {
            _ = changed.notified() => tokio::time::sleep(DEBOUNCE).await,
            _ = tokio::time::sleep_until(wake_at) => {}
            _ = stop.wait_for(|s| *s) => {
                info!(gateway = %gw.name, "stopping; the rules stay in place");
                return Ok(());
            }
        }
    }
}

/// A gateway being programmed: what was applied last.
struct Gateway {
    name: String,
    client: kube::Client,
    interfaces: Interfaces,
    /// Where forwarded traffic leaves (GATEWAY_V4), if policy routing is wanted.
    egress_gateway: Option<Ipv4Addr>,
    applied: Option<NatPlan>,
    /// No apply succeeded since the start (the next announces every EIP).
    started: bool,
    /// The objects left out by the last reconcile, with why.
    skipped: BTreeMap<RuleRef, String>,
}

impl Gateway {
    /// Plans, applies if anything changed (or `force`), writes `status.ready`. Returns
    /// whether something failed and should be retried.
    async fn reconcile(&mut self, stores: &Stores, force: bool) -> bool {
        if stores.gateways.get(&gateway_ref(&self.name)).is_none() {
            warn!(gateway = %self.name, "VpcNatGateway not found; waiting for it");
            return false;
        }
        let (eips, fips, dnats, snats) = (
            snapshot(&stores.eips),
            snapshot(&stores.fips),
            snapshot(&stores.dnats),
            snapshot(&stores.snats),
        );
        let selection = select(
            &self.name,
            NatObjects {
                eips: &eips,
                fips: &fips,
                dnats: &dnats,
                snats: &snats,
            },
        );
        for ((kind, name), reason) in &selection.skipped {
            // Said once per reason, not on every reconcile.
            if self.skipped.get(&(*kind, name.clone())) != Some(reason) {
                info!(gateway = %self.name, "{kind}/{name} not programmed: {reason}");
            }
        }
        self.skipped = selection.skipped.clone();
        let wanted = plan(&selection.rules, &self.interfaces, self.applied.as_ref());
        let unchanged = self.applied.as_ref().is_some_and(|a| a.same_state(&wanted));
        let mut failed = false;
        let programmed = if unchanged && !force {
            true
        } else {
            // The policy routes depend only on the legs and GATEWAY_V4, fixed for the pod's
            // life: written until the first apply succeeds, then repaired on each resync.
            let route = self.started || force;
            let applied = match apply(&wanted, &self.interfaces, self.started).await {
                Ok(applied) if route => self.route().await.map(|()| applied),
                Ok(applied) => Ok(applied),
                Err(e) => Err(e.to_string()),
            };
            match applied {
                Ok(applied) => {
                    self.report(&selection, &applied);
                    self.applied = Some(wanted);
                    self.started = false;
                    true
                }
                Err(e) => {
                    error!(gateway = %self.name, "programming the gateway failed: {e}");
                    failed = true;
                    false
                }
            }
        };
        let wanted_ready = selection
            .objects()
            .into_iter()
            .map(|(object, ok)| (object, ok && programmed))
            .collect();
        let writes = status::ready_writes(&wanted_ready, |(kind, name)| {
            observed_ready(*kind, name, &eips, &fips, &dnats, &snats)
        });
        for (object, ready) in writes {
            if let Err(e) = status::write_ready(&self.client, &object, ready).await {
                warn!(gateway = %self.name, "writing status.ready={ready} of {}/{}: {e}", object.0, object.1);
                failed = true;
            }
        }
        failed
    }

    /// The policy routes of forwarded traffic (when GATEWAY_V4 is set).
    async fn route(&self) -> Result<(), String> {
        let Some(gateway) = self.egress_gateway else {
            return Ok(());
        };
        let routed = routing::ensure(&self.interfaces, gateway)
            .await
            .map_err(|e| format!("policy routing via {gateway}: {e}"))?;
        if routed != routing::Routed::default() {
            info!(
                gateway = %self.name,
                via = %gateway,
                table = routing::TABLE,
                rules_added = routed.rules_added,
                rules_removed = routed.rules_removed,
                route_written = routed.route_written,
                "forwarded traffic leaves on {} via {gateway}",
                self.interfaces.external
            );
        }
        Ok(())
    }

    fn report(&self, selection: &Selection, applied: &Applied) {
        let r = &selection.rules;
        info!(
            gateway = %self.name,
            rules = applied.programmed.rules,
            eips = r.eips.len(),
            fips = r.fips.len(),
            dnats = r.dnats.len(),
            snats = r.snats.len(),
            skipped = selection.skipped.len(),
            program_ms = applied.programmed.elapsed.as_millis() as u64,
            eips_added = ?applied.eips_added,
            eips_removed = ?applied.eips_removed,
            conntrack_deleted = applied.flushed.deleted,
            "programmed {} rules",
            applied.programmed.rules
        );
        if applied.enabled_forwarding {
            info!(gateway = %self.name, "turned on IPv4 forwarding");
        }
        if !applied.has_default_route && self.egress_gateway.is_none() {
            warn!(
                gateway = %self.name,
                "no IPv4 default route in the gateway's netns and no GATEWAY_V4: SNAT/FIP \
                 traffic cannot leave"
            );
        }
        for w in &applied.warnings {
            warn!(gateway = %self.name, "{w}");
        }
    }
}

fn gateway_ref(name: &str) -> reflector::ObjectRef<VpcNatGateway> {
    reflector::ObjectRef::new(name)
}

fn snapshot<K: Resource + Clone>(store: &Store<K>) -> Vec<K>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store.state().iter().map(|o| (**o).clone()).collect()
}

fn observed_ready(
    kind: rules::RuleKind,
    name: &str,
    eips: &[IptablesEIP],
    fips: &[IptablesFIPRule],
    dnats: &[IptablesDnatRule],
    snats: &[IptablesSnatRule],
) -> Option<bool> {
    use kube::ResourceExt;
    use rules::RuleKind;
    match kind {
        RuleKind::Eip => eips
            .iter()
            .find(|o| o.name_any() == name)
            .map(|o| o.status.as_ref().is_some_and(|s| s.ready)),
        RuleKind::Fip => fips
            .iter()
            .find(|o| o.name_any() == name)
            .map(|o| o.status.as_ref().is_some_and(|s| s.rule.ready)),
        RuleKind::Dnat => dnats
            .iter()
            .find(|o| o.name_any() == name)
            .map(|o| o.status.as_ref().is_some_and(|s| s.rule.ready)),
        RuleKind::Snat => snats
            .iter()
            .find(|o| o.name_any() == name)
            .map(|o| o.status.as_ref().is_some_and(|s| s.rule.ready)),
    }
}

/// The legs: flags first, then the pod's network-status, then the interfaces' addresses.
async fn find_interfaces(
    client: &kube::Client,
    args: &NatGwArgs,
    gateway: &str,
    stores: &Stores,
) -> anyhow::Result<Interfaces> {
    if let (Some(lan), Some(external)) = (&args.lan_interface, &args.external_interface) {
        return Ok(Interfaces {
            lan: lan.clone(),
            external: external.clone(),
        });
    }
    let gw = stores
        .gateways
        .get(&gateway_ref(gateway))
        .with_context(|| format!("VpcNatGateway {gateway} not found"))?;
    let lan_ip: Ipv4Addr = gw
        .spec
        .lan_ip
        .parse()
        .with_context(|| format!("VpcNatGateway {gateway}: lanIp {:?}", gw.spec.lan_ip))?;
    let from_status = match (&args.pod_name, &args.pod_namespace) {
        (Some(name), Some(ns)) => {
            let pod = Api::<Pod>::namespaced(client.clone(), ns)
                .get(name)
                .await
                .with_context(|| format!("reading pod {ns}/{name}"))?;
            pod.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(NETWORK_STATUS))
                .map(|v| {
                    parse_network_status(v)
                        .map_err(|e| format!("pod {ns}/{name}: {NETWORK_STATUS}: {e}"))
                        .and_then(|s| interfaces::from_network_status(&s, lan_ip))
                })
        }
        _ => None,
    };
    let found = match from_status {
        Some(Ok(i)) => i,
        other => {
            if let Some(Err(e)) = other {
                warn!(gateway, "{e}; looking at the interfaces' addresses instead");
            }
            let (connection, handle, _) = rtnetlink::new_connection()?;
            let connection = tokio::spawn(connection);
            let links = links::interfaces(&handle).await;
            connection.abort();
            interfaces::from_addresses(&links?, lan_ip).map_err(anyhow::Error::msg)?
        }
    };
    Ok(Interfaces {
        lan: args.lan_interface.clone().unwrap_or(found.lan),
        external: args.external_interface.clone().unwrap_or(found.external),
    })
}

/// A reflector store of every `K`, fed by a watch that rings `changed` on each event.
/// A store of every `K`, fed by the operator's watch loop ([`crate::operator::mirror`]);
/// `changed` is notified on every change after the first list.
fn mirror<K>(api: Api<K>, what: &'static str, changed: &Arc<Notify>) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (store, writer) = reflector::store();
    let changed = changed.clone();
    tokio::spawn(crate::operator::mirror(api, writer, what, move || {
        changed.notify_one()
    }));
    store
}
