//! The node's Open_vSwitch database in domain words, for the node role:
//! bridges, plugging and unplugging a pod's host-side interface with its
//! `external_ids`, waiting for `ovn-installed`, and pod bandwidth limits
//! (Kube-OVN's mapping, UPSTREAM.md §3.7: pod egress → the Interface's
//! ingress policing; pod ingress → a QoS with one Queue on the Port),
//! including removal of QoS/Queue rows nothing references any more.

use std::collections::BTreeMap;

use tokio::time::Instant;
use tracing::debug;

use super::external_ids::{self, IFACE_ID, OVN_INSTALLED, SANDBOX as SANDBOX_ID};
use super::{is_conflict, Error, Result};
use crate::ovsdb::model::vswitch::{Bridge, Interface, OpenVswitch, Port, Qos, Queue};
use crate::ovsdb::{
    row, Atom, Client, ClientOptions, Condition, IndexSpec, Mutation, Op, Table, TableSpec, Uuid,
    Value,
};

pub const DATABASE: &str = "Open_vSwitch";
const ATTEMPTS: usize = 3;

type Map = BTreeMap<String, String>;

/// How a pod's ingress limit is enforced on its port.
///
/// `linux-htb` shapes with a kernel HTB qdisc on the port's device. It is
/// what Kube-OVN uses, and it also works for `system` (veth) ports on a
/// `netdev` bridge: checked on the test bed, ovs-vswitchd (netdev datapath)
/// installs `htb 1:` with class `1:1 ceil <max-rate>` on the veth, and the
/// userspace datapath transmits through the device's qdisc. It is therefore
/// the default on both datapaths. `egress-policer` is the userspace
/// datapath's own policer, but OVS implements it only for DPDK ports (on a
/// veth of the netdev test bed vswitchd leaves it unapplied), so it is only
/// used when asked for, for DPDK nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QosKind {
    LinuxHtb,
    EgressPolicer,
}

impl QosKind {
    pub fn ovs_type(self) -> &'static str {
        match self {
            QosKind::LinuxHtb => "linux-htb",
            QosKind::EgressPolicer => "egress-policer",
        }
    }
}

/// The rows one limit maps to, as pure values (see `set_interface_qos`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bandwidth {
    /// `Interface.ingress_policing_rate` / `_burst`, kbit/s and kbit.
    pub policing_rate_kbps: i64,
    pub policing_burst_kb: i64,
    /// The QoS row's `other_config` (egress-policer) or the Queue's (htb); none without a limit.
    pub shaping: Option<Map>,
}

/// Kube-OVN's mapping of pod limits (Mbit/s) onto OVS columns.
pub fn bandwidth(kind: QosKind, ingress_mbps: Option<u64>, egress_mbps: Option<u64>) -> Bandwidth {
    let rate = egress_mbps
        .map(|m| (m as i64).saturating_mul(1000))
        .unwrap_or(0);
    let shaping = ingress_mbps.map(|m| {
        let bps = m.saturating_mul(1_000_000);
        match kind {
            QosKind::LinuxHtb => Map::from([("max-rate".to_string(), bps.to_string())]),
            // cir is bytes/s; cbs one 64 KiB burst (at least one MTU-sized packet).
            QosKind::EgressPolicer => Map::from([
                ("cir".to_string(), (bps / 8).to_string()),
                ("cbs".to_string(), 65536.to_string()),
            ]),
        }
    });
    Bandwidth {
        policing_rate_kbps: rate,
        policing_burst_kb: rate * 8 / 10,
        shaping,
    }
}

/// The node role's connection to the local Open_vSwitch database.
#[derive(Clone)]
pub struct Vswitch {
    client: Client,
}

fn named(n: &str) -> Value {
    Value::atom(Atom::NamedUuid(n.to_string()))
}

/// The mutation of row `uuid`'s `external_ids` (now `current`) that sets the keys of `set`
/// and removes the keys `remove`, leaving the others; none when nothing would change.
fn edit_ids_ops(table: &str, uuid: Uuid, current: &Map, set: &Map, remove: &[&str]) -> Vec<Op> {
    let changed: Map = set
        .iter()
        .filter(|(k, v)| current.get(*k) != Some(v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let gone = remove
        .iter()
        .copied()
        .filter(|k| current.contains_key(*k) && !set.contains_key(*k));
    let deleted: Vec<Atom> = changed
        .keys()
        .map(String::as_str)
        .chain(gone)
        .map(Atom::from)
        .collect();
    if deleted.is_empty() {
        return vec![];
    }
    vec![Op::mutate(
        table,
        vec![Condition::uuid(uuid)],
        vec![
            Mutation::delete("external_ids", Value::set(deleted)),
            Mutation::insert("external_ids", Value::string_map(&changed)),
        ],
    )]
}

impl Vswitch {
    pub fn tables() -> Vec<TableSpec> {
        vec![
            TableSpec::of::<OpenVswitch>(),
            TableSpec::of::<Bridge>().index(IndexSpec::column("ports")),
            TableSpec::of::<Port>().index(IndexSpec::column("interfaces")),
            TableSpec::of::<Interface>()
                .index(IndexSpec::map_key("external_ids", IFACE_ID))
                .index(IndexSpec::map_key("external_ids", SANDBOX_ID)),
            TableSpec::of::<Qos>(),
            TableSpec::of::<Queue>(),
        ]
    }

    pub async fn connect(endpoint: &str) -> Result<Vswitch> {
        Self::connect_with(endpoint, ClientOptions::new(Self::tables())).await
    }

    pub async fn connect_with(endpoint: &str, options: ClientOptions) -> Result<Vswitch> {
        Ok(Vswitch {
            client: Client::connect(endpoint, DATABASE, options).await?,
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Plans with `plan` against the cache and runs the operations as one
    /// transaction, replanning when a concurrent writer got there first.
    async fn apply(&self, plan: impl Fn(&Self) -> Result<Vec<Op>>) -> Result<bool> {
        let mut attempt = 1;
        loop {
            let ops = plan(self)?;
            if ops.is_empty() {
                return Ok(false);
            }
            match self.client.transact(ops).await.map_err(Error::from) {
                Err(e) if attempt < ATTEMPTS && is_conflict(&e) => {
                    debug!(error = %e, attempt, "concurrent OVS change, replanning");
                    attempt += 1;
                    self.client.sync().await?;
                }
                Err(e) => return Err(e),
                Ok(_) => return Ok(true),
            }
        }
    }

    fn root(&self) -> Result<OpenVswitch> {
        self.client
            .list::<OpenVswitch>()?
            .into_iter()
            .next()
            .ok_or_else(|| Error::NotFound {
                kind: "Open_vSwitch row",
                name: String::new(),
            })
    }

    pub fn bridge(&self, name: &str) -> Result<Option<Bridge>> {
        Ok(self.client.find(&IndexSpec::column("name"), name)?.pop())
    }

    pub fn interface(&self, name: &str) -> Result<Option<Interface>> {
        Ok(self.client.find(&IndexSpec::column("name"), name)?.pop())
    }

    /// The interface `name`; `Error::NotFound` if there is none.
    fn existing_interface(&self, name: &str) -> Result<Interface> {
        self.interface(name)?.ok_or_else(|| Error::NotFound {
            kind: "interface",
            name: name.to_string(),
        })
    }

    /// The interfaces whose `external_ids:<key>` is `value`, for the indexed keys
    /// ([`IFACE_ID`], [`SANDBOX_ID`]).
    pub fn interfaces_with_id(&self, key: &str, value: &str) -> Result<Vec<Interface>> {
        Ok(self
            .client
            .find(&IndexSpec::map_key("external_ids", key), value)?)
    }

    pub fn port(&self, name: &str) -> Result<Option<Port>> {
        Ok(self.client.find(&IndexSpec::column("name"), name)?.pop())
    }

    /// The port holding interface `iface`.
    fn port_of(&self, iface: Uuid) -> Result<Option<Port>> {
        Ok(self
            .client
            .find::<Port>(&IndexSpec::column("interfaces"), iface)?
            .pop())
    }

    /// A bridge with its internal port, `datapath_type` (`system` is "")
    /// and `fail_mode` (`secure`/`standalone`).
    pub async fn ensure_bridge(
        &self,
        name: &str,
        datapath_type: &str,
        fail_mode: Option<&str>,
    ) -> Result<bool> {
        let fail = Value::set(fail_mode.map(Atom::from));
        self.apply(|vs| {
            let want = row([
                ("datapath_type", Value::atom(datapath_type)),
                ("fail_mode", fail.clone()),
            ]);
            Ok(match vs.bridge(name)? {
                Some(br) => {
                    let diff = super::nb::changed_columns(&br.to_row(), want);
                    if diff.is_empty() {
                        vec![]
                    } else {
                        vec![Op::update(
                            Bridge::NAME,
                            vec![Condition::uuid(br.uuid)],
                            diff,
                        )]
                    }
                }
                None => {
                    let root = vs.root()?;
                    let mut br = want;
                    br.insert("name".into(), Value::atom(name));
                    br.insert("ports".into(), named("port"));
                    vec![
                        Op::insert(
                            Interface::NAME,
                            row([
                                ("name", Value::atom(name)),
                                ("type", Value::atom("internal")),
                            ]),
                            Some("iface"),
                        ),
                        Op::insert(
                            Port::NAME,
                            row([("name", Value::atom(name)), ("interfaces", named("iface"))]),
                            Some("port"),
                        ),
                        Op::insert(Bridge::NAME, br, Some("br")),
                        Op::mutate(
                            OpenVswitch::NAME,
                            vec![Condition::uuid(root.uuid)],
                            vec![Mutation::insert("bridges", named("br"))],
                        ),
                    ]
                }
            })
        })
        .await
    }

    /// Sets these keys of `Open_vSwitch.external_ids` (others stay).
    pub async fn set_ovs_external_ids(&self, ids: &Map) -> Result<bool> {
        self.apply(|vs| {
            let root = vs.root()?;
            Ok(edit_ids_ops(
                OpenVswitch::NAME,
                root.uuid,
                &root.external_ids,
                ids,
                &[],
            ))
        })
        .await
    }

    /// Plugs `iface` (a host-side veth end) into `bridge` as a Port and
    /// Interface with `external_ids`; ports of other interfaces that claim
    /// the same `iface-id` are removed. Idempotent.
    pub async fn plug_interface(
        &self,
        bridge: &str,
        iface: &str,
        external_ids: &Map,
    ) -> Result<bool> {
        self.apply(|vs| {
            let br = vs.bridge(bridge)?.ok_or_else(|| Error::NotFound {
                kind: "bridge",
                name: bridge.to_string(),
            })?;
            let mut ops = Vec::new();
            if let Some(id) = external_ids.get(IFACE_ID) {
                let stale = vs.interfaces_with_id(IFACE_ID, id)?;
                for other in stale.iter().filter(|i| i.name != iface) {
                    if let Some(p) = vs.port_of(other.uuid)? {
                        ops.extend(vs.unplug_ops(&p)?);
                    }
                }
            }
            match vs.interface(iface)? {
                Some(i) => {
                    if &i.external_ids != external_ids {
                        ops.push(Op::update(
                            Interface::NAME,
                            vec![Condition::uuid(i.uuid)],
                            row([("external_ids", Value::string_map(external_ids))]),
                        ));
                    }
                    let port = vs.port_of(i.uuid)?;
                    if !port.as_ref().is_some_and(|p| br.ports.contains(&p.uuid)) {
                        // Known interface on another bridge (or orphaned): move its port here.
                        if let Some(p) = &port {
                            ops.extend(vs.unplug_ops(p)?);
                        }
                        ops.extend(plug_ops(br.uuid, iface, external_ids));
                    }
                }
                None => ops.extend(plug_ops(br.uuid, iface, external_ids)),
            }
            Ok(ops)
        })
        .await
    }

    /// Sets the keys of `set` and removes the keys `remove` of interface `iface`'s
    /// `external_ids`; the other keys stay (`ovn-installed` among them, which a whole-column
    /// update would drop). `Error::NotFound` if there is no such interface.
    pub async fn edit_interface_ids(
        &self,
        iface: &str,
        set: &Map,
        remove: &[&str],
    ) -> Result<bool> {
        self.apply(|vs| {
            let i = vs.existing_interface(iface)?;
            Ok(edit_ids_ops(
                Interface::NAME,
                i.uuid,
                &i.external_ids,
                set,
                remove,
            ))
        })
        .await
    }

    /// Removes the port of interface `iface` and QoS rows only it used.
    /// Absent is fine.
    pub async fn unplug_interface(&self, iface: &str) -> Result<bool> {
        self.apply(|vs| {
            let Some(i) = vs.interface(iface)? else {
                return Ok(vec![]);
            };
            match vs.port_of(i.uuid)? {
                Some(p) => vs.unplug_ops(&p),
                None => Ok(vec![]),
            }
        })
        .await
    }

    fn unplug_ops(&self, port: &Port) -> Result<Vec<Op>> {
        let mut ops: Vec<Op> = self
            .client
            .find::<Bridge>(&IndexSpec::column("ports"), port.uuid)?
            .into_iter()
            .map(|b| {
                Op::mutate(
                    Bridge::NAME,
                    vec![Condition::uuid(b.uuid)],
                    vec![Mutation::delete("ports", Value::atom(port.uuid))],
                )
            })
            .collect();
        if let Some(q) = port.qos {
            // The server counts references before collecting the port, so
            // drop the port's reference explicitly before deleting the QoS.
            ops.push(Op::update(
                Port::NAME,
                vec![Condition::uuid(port.uuid)],
                row([("qos", Value::empty_set())]),
            ));
            ops.extend(self.qos_cleanup_ops(q, port.uuid)?);
        }
        Ok(ops)
    }

    /// Deletes our QoS row `qos` and its queues unless a port other than
    /// `leaving` still uses them.
    fn qos_cleanup_ops(&self, qos: Uuid, leaving: Uuid) -> Result<Vec<Op>> {
        let ports = self.client.list::<Port>()?;
        if ports
            .iter()
            .any(|p| p.uuid != leaving && p.qos == Some(qos))
        {
            return Ok(vec![]);
        }
        let Some(q) = self.client.get::<Qos>(qos)? else {
            return Ok(vec![]);
        };
        if !external_ids::is_ours(&q.external_ids) {
            return Ok(vec![]);
        }
        let others: Vec<Qos> = self.client.list::<Qos>()?;
        let mut ops = vec![Op::delete(Qos::NAME, vec![Condition::uuid(qos)])];
        for queue in q.queues.values() {
            if !others
                .iter()
                .any(|o| o.uuid != qos && o.queues.values().any(|u| u == queue))
            {
                ops.push(Op::delete(Queue::NAME, vec![Condition::uuid(*queue)]));
            }
        }
        Ok(ops)
    }

    /// Waits until ovn-controller marks interface `iface` `ovn-installed`
    /// (returns at once if it already is), across reconnects, up to `deadline`.
    pub async fn wait_ovn_installed(&self, iface: &str, deadline: Instant) -> Result<()> {
        let what = format!("interface {iface} to be ovn-installed");
        self.client
            .wait_until(deadline, &what, || {
                let i = self.interface(iface).ok()??;
                (i.external_ids.get(OVN_INSTALLED).map(String::as_str) == Some("true"))
                    .then_some(())
            })
            .await?;
        Ok(())
    }

    /// Limits a pod interface (Mbit/s; `None` lifts that limit) with a
    /// `linux-htb` QoS for ingress (see `QosKind`) and policing for egress.
    pub async fn set_interface_qos(
        &self,
        iface: &str,
        ingress_mbps: Option<u64>,
        egress_mbps: Option<u64>,
    ) -> Result<bool> {
        self.set_interface_qos_as(iface, QosKind::LinuxHtb, ingress_mbps, egress_mbps)
            .await
    }

    /// `set_interface_qos` with an explicit QoS kind.
    pub async fn set_interface_qos_as(
        &self,
        iface: &str,
        kind: QosKind,
        ingress_mbps: Option<u64>,
        egress_mbps: Option<u64>,
    ) -> Result<bool> {
        let want = bandwidth(kind, ingress_mbps, egress_mbps);
        self.apply(|vs| vs.qos_ops(iface, kind, &want)).await
    }

    /// Lifts both limits and removes the QoS rows only this interface used.
    pub async fn clear_interface_qos(&self, iface: &str) -> Result<bool> {
        self.set_interface_qos(iface, None, None).await
    }

    fn qos_ops(&self, iface: &str, kind: QosKind, want: &Bandwidth) -> Result<Vec<Op>> {
        let i = self.existing_interface(iface)?;
        let port = self.port_of(i.uuid)?.ok_or_else(|| Error::NotFound {
            kind: "port of interface",
            name: iface.to_string(),
        })?;
        let mut ops = Vec::new();
        if i.ingress_policing_rate != want.policing_rate_kbps
            || i.ingress_policing_burst != want.policing_burst_kb
        {
            ops.push(Op::update(
                Interface::NAME,
                vec![Condition::uuid(i.uuid)],
                row([
                    (
                        "ingress_policing_rate",
                        Value::atom(want.policing_rate_kbps),
                    ),
                    (
                        "ingress_policing_burst",
                        Value::atom(want.policing_burst_kb),
                    ),
                ]),
            ));
        }
        let current = match port.qos {
            Some(q) => self.client.get::<Qos>(q)?,
            None => None,
        };
        let port_cond = vec![Condition::uuid(port.uuid)];
        let mut ids = external_ids::ours([]);
        ids.insert("iface".into(), iface.to_string());
        match (&want.shaping, current) {
            (None, None) => {}
            (None, Some(q)) => {
                ops.push(Op::update(
                    Port::NAME,
                    port_cond,
                    row([("qos", Value::empty_set())]),
                ));
                ops.extend(self.qos_cleanup_ops(q.uuid, port.uuid)?);
            }
            (Some(cfg), Some(q))
                if q.kind == kind.ovs_type() && external_ids::is_ours(&q.external_ids) =>
            {
                match kind {
                    QosKind::EgressPolicer if &q.other_config != cfg => ops.push(Op::update(
                        Qos::NAME,
                        vec![Condition::uuid(q.uuid)],
                        row([("other_config", Value::string_map(cfg))]),
                    )),
                    QosKind::LinuxHtb => {
                        let queue = match q.queues.get(&0) {
                            Some(u) => self.client.get::<Queue>(*u)?,
                            None => None,
                        };
                        match queue {
                            Some(queue) if &queue.other_config == cfg => {}
                            Some(queue) => ops.push(Op::update(
                                Queue::NAME,
                                vec![Condition::uuid(queue.uuid)],
                                row([("other_config", Value::string_map(cfg))]),
                            )),
                            None => {
                                ops.push(insert_queue(cfg, &ids));
                                ops.push(Op::mutate(
                                    Qos::NAME,
                                    vec![Condition::uuid(q.uuid)],
                                    vec![Mutation::insert(
                                        "queues",
                                        Value::Map(
                                            [(Atom::Integer(0), Atom::NamedUuid("queue".into()))]
                                                .into(),
                                        ),
                                    )],
                                ));
                            }
                        }
                    }
                    QosKind::EgressPolicer => {}
                }
            }
            (Some(cfg), current) => {
                // None yet, or one of another kind or owner: replace it.
                let mut qos = row([
                    ("type", Value::atom(kind.ovs_type())),
                    ("external_ids", Value::string_map(&ids)),
                ]);
                match kind {
                    QosKind::LinuxHtb => {
                        ops.push(insert_queue(cfg, &ids));
                        qos.insert(
                            "queues".into(),
                            Value::Map(
                                [(Atom::Integer(0), Atom::NamedUuid("queue".into()))].into(),
                            ),
                        );
                    }
                    QosKind::EgressPolicer => {
                        qos.insert("other_config".into(), Value::string_map(cfg));
                    }
                }
                ops.push(Op::insert(Qos::NAME, qos, Some("qos")));
                ops.push(Op::update(
                    Port::NAME,
                    port_cond,
                    row([("qos", named("qos"))]),
                ));
                if let Some(old) = current {
                    ops.extend(self.qos_cleanup_ops(old.uuid, port.uuid)?);
                }
            }
        }
        Ok(ops)
    }

    /// Deletes our QoS rows no port uses and our Queue rows no QoS uses
    /// (leaks from crashes between steps). Returns whether any were found.
    pub async fn collect_qos_garbage(&self) -> Result<bool> {
        self.apply(|vs| {
            let ports = vs.client.list::<Port>()?;
            let qoses = vs.client.list::<Qos>()?;
            let mut ops = Vec::new();
            let mut live_queues = Vec::new();
            for q in &qoses {
                let used = ports.iter().any(|p| p.qos == Some(q.uuid));
                if used || !external_ids::is_ours(&q.external_ids) {
                    live_queues.extend(q.queues.values().copied());
                } else {
                    ops.push(Op::delete(Qos::NAME, vec![Condition::uuid(q.uuid)]));
                }
            }
            for queue in vs.client.list::<Queue>()? {
                if external_ids::is_ours(&queue.external_ids) && !live_queues.contains(&queue.uuid)
                {
                    ops.push(Op::delete(Queue::NAME, vec![Condition::uuid(queue.uuid)]));
                }
            }
            Ok(ops)
        })
        .await
    }
}

fn insert_queue(cfg: &Map, ids: &Map) -> Op {
    Op::insert(
        Queue::NAME,
        row([
            ("other_config", Value::string_map(cfg)),
            ("external_ids", Value::string_map(ids)),
        ]),
        Some("queue"),
    )
}

fn plug_ops(bridge: Uuid, iface: &str, external_ids: &Map) -> Vec<Op> {
    vec![
        Op::insert(
            Interface::NAME,
            row([
                ("name", Value::atom(iface)),
                ("external_ids", Value::string_map(external_ids)),
            ]),
            Some("iface"),
        ),
        Op::insert(
            Port::NAME,
            row([("name", Value::atom(iface)), ("interfaces", named("iface"))]),
            Some("port"),
        ),
        Op::mutate(
            Bridge::NAME,
            vec![Condition::uuid(bridge)],
            vec![Mutation::insert("ports", named("port"))],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_egress_becomes_interface_ingress_policing() {
        let b = bandwidth(QosKind::LinuxHtb, None, Some(10));
        assert_eq!((b.policing_rate_kbps, b.policing_burst_kb), (10_000, 8_000));
        assert_eq!(b.shaping, None);
    }

    #[test]
    fn pod_ingress_becomes_a_queue_max_rate_or_a_policer() {
        let b = bandwidth(QosKind::LinuxHtb, Some(5), None);
        assert_eq!(b.policing_rate_kbps, 0);
        assert_eq!(b.shaping.unwrap()["max-rate"], "5000000");
        let p = bandwidth(QosKind::EgressPolicer, Some(8), None)
            .shaping
            .unwrap();
        assert_eq!(p["cir"], "1000000");
    }
}
