//! Pod bandwidth limits on the node's Open_vSwitch database, in Kube-OVN's mapping
//! (`../shared/reference/UPSTREAM.md` §3.7): pod egress → the Interface's ingress policing;
//! pod ingress → a QoS with one Queue on the Port; and the removal of the QoS/Queue rows
//! nothing references any more. Plugging the port itself is `mod.rs`.

use super::{named, Map, Vswitch};
use crate::ovn::external_ids;
use crate::ovn::{Error, Result};
use crate::ovsdb::model::vswitch::{Interface, Port, Qos, Queue};
use crate::ovsdb::{row, Atom, Condition, Mutation, Op, Table, Uuid, Value};

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

impl Vswitch {
    /// Deletes our QoS row `qos` and its queues unless a port other than
    /// `leaving` still uses them.
    pub(super) fn qos_cleanup_ops(&self, qos: Uuid, leaving: Uuid) -> Result<Vec<Op>> {
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
