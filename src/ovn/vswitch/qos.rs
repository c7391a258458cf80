//! Pod bandwidth limits and netem on the node's Open_vSwitch database, in Kube-OVN's mapping
//! (`../shared/reference/UPSTREAM.md` §3.7): pod egress → the Interface's ingress policing;
//! pod ingress → a QoS with one Queue on the Port; netem (latency, jitter, limit, loss on
//! what the pod receives) → a `linux-netem` QoS on the Port; and the removal of the QoS/Queue
//! rows nothing references any more. Plugging the port itself is `mod.rs`.

use super::{named, Map, Vswitch};
use crate::api::allocation::AttachmentQos;
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

/// The OVS type of a netem QoS.
pub const NETEM: &str = "linux-netem";

/// The rows one set of limits maps to, as pure values (see `set_interface_limits`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bandwidth {
    /// `Interface.ingress_policing_rate` / `_burst`, kbit/s and kbit.
    pub policing_rate_kbps: i64,
    pub policing_burst_kb: i64,
    /// The Port's QoS row, if any.
    pub port_qos: Option<PortQos>,
}

/// A QoS row on a Port: its `type`, its `other_config`, and the `other_config` of its queue 0
/// (`linux-htb` only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortQos {
    pub kind: &'static str,
    pub other_config: Map,
    pub queue: Option<Map>,
}

/// Kube-OVN's mapping of one attachment's limits onto OVS columns: rates in Mbit/s, bursts in
/// Mbit, netem latency/jitter in µs (OVS's unit; the annotations say ms).
pub fn bandwidth(kind: QosKind, qos: &AttachmentQos) -> Bandwidth {
    let rate = qos
        .egress_mbps
        .map(|m| (m as i64).saturating_mul(1000))
        .unwrap_or(0);
    let burst = match (rate, qos.egress_burst_mbit) {
        (0, _) => 0,
        (_, Some(mbit)) => (mbit as i64).saturating_mul(1000),
        (rate, None) => rate * 8 / 10,
    };
    let shaping = qos.ingress_mbps.map(|m| {
        let bps = m.saturating_mul(1_000_000);
        let burst_bits = qos.ingress_burst_mbit.map(|b| b.saturating_mul(1_000_000));
        match kind {
            QosKind::LinuxHtb => {
                // Queue `burst` is in bits (vswitchd.conf.db); only written when asked for,
                // so htb keeps its own default otherwise.
                let mut queue = Map::from([("max-rate".to_string(), bps.to_string())]);
                if let Some(bits) = burst_bits {
                    queue.insert("burst".into(), bits.to_string());
                }
                PortQos {
                    kind: kind.ovs_type(),
                    other_config: Map::new(),
                    queue: Some(queue),
                }
            }
            // cir is bytes/s; cbs one 64 KiB burst (at least one MTU-sized packet) unless asked.
            QosKind::EgressPolicer => PortQos {
                kind: kind.ovs_type(),
                other_config: Map::from([
                    ("cir".to_string(), (bps / 8).to_string()),
                    (
                        "cbs".to_string(),
                        burst_bits.map_or(65536, |b| b / 8).to_string(),
                    ),
                ]),
                queue: None,
            },
        }
    });
    let netem = qos.netem.map(|n| {
        let mut cfg = Map::new();
        let mut put = |k: &str, v: String| {
            cfg.insert(k.to_string(), v);
        };
        if n.latency_ms > 0 {
            put("latency", (u64::from(n.latency_ms) * 1000).to_string());
        }
        if n.jitter_ms > 0 {
            put("jitter", (u64::from(n.jitter_ms) * 1000).to_string());
        }
        if n.limit_packets > 0 {
            put("limit", n.limit_packets.to_string());
        }
        if n.loss_percent > 0.0 {
            put("loss", n.loss_percent.to_string());
        }
        PortQos {
            kind: NETEM,
            other_config: cfg,
            queue: None,
        }
    });
    Bandwidth {
        policing_rate_kbps: rate,
        policing_burst_kb: burst,
        // `attachment_qos` refuses both at once; if a caller still asks, the rate limit wins.
        port_qos: shaping.or(netem),
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
        let qos = AttachmentQos {
            ingress_mbps,
            egress_mbps,
            ..Default::default()
        };
        self.set_interface_limits(iface, kind, &qos).await
    }

    /// Sets every limit of a pod interface (rates, bursts, netem) in one transaction;
    /// returns whether anything changed.
    pub async fn set_interface_limits(
        &self,
        iface: &str,
        kind: QosKind,
        qos: &AttachmentQos,
    ) -> Result<bool> {
        let want = bandwidth(kind, qos);
        self.apply(|vs| vs.qos_ops(iface, &want)).await
    }

    /// Lifts both limits and removes the QoS rows only this interface used.
    pub async fn clear_interface_qos(&self, iface: &str) -> Result<bool> {
        self.set_interface_qos(iface, None, None).await
    }

    fn qos_ops(&self, iface: &str, want: &Bandwidth) -> Result<Vec<Op>> {
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
        match (&want.port_qos, current) {
            (None, None) => {}
            (None, Some(q)) => {
                ops.push(Op::update(
                    Port::NAME,
                    port_cond,
                    row([("qos", Value::empty_set())]),
                ));
                ops.extend(self.qos_cleanup_ops(q.uuid, port.uuid)?);
            }
            (Some(wanted), Some(q))
                if q.kind == wanted.kind && external_ids::is_ours(&q.external_ids) =>
            {
                if q.other_config != wanted.other_config {
                    ops.push(Op::update(
                        Qos::NAME,
                        vec![Condition::uuid(q.uuid)],
                        row([("other_config", Value::string_map(&wanted.other_config))]),
                    ));
                }
                if let Some(cfg) = &wanted.queue {
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
            }
            (Some(wanted), current) => {
                // None yet, or one of another kind or owner: replace it.
                let mut qos = row([
                    ("type", Value::atom(wanted.kind)),
                    ("external_ids", Value::string_map(&ids)),
                    ("other_config", Value::string_map(&wanted.other_config)),
                ]);
                if let Some(cfg) = &wanted.queue {
                    ops.push(insert_queue(cfg, &ids));
                    qos.insert(
                        "queues".into(),
                        Value::Map([(Atom::Integer(0), Atom::NamedUuid("queue".into()))].into()),
                    );
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

    use crate::api::allocation::Netem;

    fn rates(ingress_mbps: Option<u64>, egress_mbps: Option<u64>) -> AttachmentQos {
        AttachmentQos {
            ingress_mbps,
            egress_mbps,
            ..Default::default()
        }
    }

    #[test]
    fn pod_egress_becomes_interface_ingress_policing() {
        let b = bandwidth(QosKind::LinuxHtb, &rates(None, Some(10)));
        assert_eq!((b.policing_rate_kbps, b.policing_burst_kb), (10_000, 8_000));
        assert_eq!(b.port_qos, None);
        let with_burst = AttachmentQos {
            egress_burst_mbit: Some(2),
            ..rates(None, Some(10))
        };
        assert_eq!(
            bandwidth(QosKind::LinuxHtb, &with_burst).policing_burst_kb,
            2_000
        );
    }

    #[test]
    fn pod_ingress_becomes_a_queue_max_rate_or_a_policer() {
        let b = bandwidth(QosKind::LinuxHtb, &rates(Some(5), None));
        assert_eq!(b.policing_rate_kbps, 0);
        let q = b.port_qos.unwrap();
        assert_eq!(q.kind, "linux-htb");
        assert_eq!(q.queue.as_ref().unwrap()["max-rate"], "5000000");
        assert!(!q.queue.unwrap().contains_key("burst"));
        let burst = AttachmentQos {
            ingress_burst_mbit: Some(1),
            ..rates(Some(5), None)
        };
        let q = bandwidth(QosKind::LinuxHtb, &burst).port_qos.unwrap();
        assert_eq!(q.queue.unwrap()["burst"], "1000000");
        let p = bandwidth(QosKind::EgressPolicer, &rates(Some(8), None))
            .port_qos
            .unwrap();
        assert_eq!(p.other_config["cir"], "1000000");
    }

    #[test]
    fn netem_becomes_a_linux_netem_qos_in_microseconds() {
        let qos = AttachmentQos {
            netem: Some(Netem {
                latency_ms: 50,
                jitter_ms: 5,
                limit_packets: 100,
                loss_percent: 2.5,
            }),
            ..Default::default()
        };
        let q = bandwidth(QosKind::LinuxHtb, &qos).port_qos.unwrap();
        assert_eq!(q.kind, NETEM);
        assert_eq!(q.other_config["latency"], "50000");
        assert_eq!(q.other_config["jitter"], "5000");
        assert_eq!(q.other_config["limit"], "100");
        assert_eq!(q.other_config["loss"], "2.5");
        assert_eq!(q.queue, None);
    }
}
