//! Cuts the connections a removed rule translated, over ctnetlink in this thread's netns (no
//! `conntrack` tool): dump the IPv4 table, pick the entries a [`ConntrackFlush`] names, and
//! delete each by its original tuple, all deletions in one send. The kernel's tables only
//! delete by a full tuple, which is why the dump comes first (as `conntrack -D -d` does).
//! Messages are built and parsed with `netlink-packet-netfilter`.

use std::io;
use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoTuple, Tuple,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};

use super::nfnetlink::{push_message, NfSocket};
use super::plan::{ConntrackFlush, Translations};

/// What a flush did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flushed {
    /// Entries in the table.
    pub scanned: usize,
    /// Entries deleted (gone by themselves meanwhile included).
    pub deleted: usize,
}

/// The addresses and ports of one direction of an entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TupleKey {
    pub src: Option<Ipv4Addr>,
    pub dst: Option<Ipv4Addr>,
    pub protocol: Option<u8>,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
}

impl TupleKey {
    fn of(tuples: &[Tuple]) -> Self {
        let mut key = TupleKey::default();
        for t in tuples {
            match t {
                Tuple::Ip(ips) => {
                    for ip in ips {
                        match ip {
                            IPTuple::SourceAddress(IpAddr::V4(a)) => key.src = Some(*a),
                            IPTuple::DestinationAddress(IpAddr::V4(a)) => key.dst = Some(*a),
                            _ => {}
                        }
                    }
                }
                Tuple::Proto(protos) => {
                    for p in protos {
                        match p {
                            ProtoTuple::Protocol(n) => key.protocol = Some(u8::from(*n)),
                            ProtoTuple::SourcePort(port) => key.src_port = Some(*port),
                            ProtoTuple::DestinationPort(port) => key.dst_port = Some(*port),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        key
    }
}

/// Whether an entry with `original` and `reply` tuples is one `flush` names.
pub fn matches(flush: &ConntrackFlush, original: &TupleKey, reply: &TupleKey) -> bool {
    match flush {
        ConntrackFlush::Port {
            eip,
            protocol,
            port,
        } => {
            original.dst == Some(*eip)
                && original.protocol == Some(protocol.number())
                && original.dst_port == Some(*port)
        }
        // A translated source shows as the reply's destination.
        ConntrackFlush::Address { eip } => original.dst == Some(*eip) || reply.dst == Some(*eip),
        ConntrackFlush::Unexplained(t) => !explains(t, original, reply),
    }
}

/// Whether `t` translates the connection the way the entry shows it was translated (an
/// untranslated entry needs no explaining). The reply of a destination-translated connection
/// comes from its target: that is what a rule must name.
fn explains(t: &Translations, original: &TupleKey, reply: &TupleKey) -> bool {
    if original.dst != reply.src || original.dst_port != reply.src_port {
        let (Some(eip), Some(target)) = (original.dst, reply.src) else {
            return true;
        };
        let forward = t.forwards.iter().any(|&(e, protocol, port, to)| {
            e == eip
                && original.protocol == Some(protocol)
                && original.dst_port == Some(port)
                && *to.ip() == target
                && reply.src_port == Some(to.port())
        });
        let fip = t.fips.iter().any(|&(e, internal)| {
            e == eip && internal == target && original.dst_port == reply.src_port
        });
        return forward || fip;
    }
    if original.src != reply.dst {
        return reply.dst.is_some_and(|a| t.eips.contains(&a));
    }
    true
}

/// Deletes every IPv4 entry one of `flushes` names.
pub fn flush(flushes: &[ConntrackFlush]) -> io::Result<Flushed> {
    let mut out = Flushed::default();
    if flushes.is_empty() {
        return Ok(out);
    }
    let socket = NfSocket::open()?;
    let mut doomed: Vec<Vec<Tuple>> = Vec::new();
    let request = message(
        ConntrackMessage::Get(Vec::new()),
        NLM_F_REQUEST | NLM_F_DUMP,
        1,
    );
    socket.dump(&request, |bytes| {
        let Ok(msg) = NetlinkMessage::<NetfilterMessage>::deserialize(bytes) else {
            return;
        };
        let NetlinkPayload::InnerMessage(NetfilterMessage {
            inner: NetfilterMessageInner::Conntrack(ConntrackMessage::New(attributes)),
            ..
        }) = msg.payload
        else {
            return;
        };
        out.scanned += 1;
        let mut original = None;
        let mut reply = None;
        for a in attributes {
            match a {
                ConntrackAttribute::CtaTupleOrig(t) => original = Some(t),
                ConntrackAttribute::CtaTupleReply(t) => reply = Some(t),
                _ => {}
            }
        }
        let (Some(original), Some(reply)) = (original, reply) else {
            return;
        };
        let (o, r) = (TupleKey::of(&original), TupleKey::of(&reply));
        if flushes.iter().any(|f| matches(f, &o, &r)) {
            doomed.push(original);
        }
    })?;
    if doomed.is_empty() {
        return Ok(out);
    }
    let mut bytes = Vec::new();
    let first_seq = 2;
    for (i, original) in doomed.iter().enumerate() {
        bytes.extend(message(
            ConntrackMessage::Delete(vec![ConntrackAttribute::CtaTupleOrig(original.clone())]),
            NLM_F_REQUEST | NLM_F_ACK,
            first_seq + i as u32,
        ));
    }
    socket.size_for(bytes.len(), doomed.len())?;
    socket.send(&bytes)?;
    let acks = socket.acks(first_seq..first_seq + doomed.len() as u32)?;
    if let Some(nack) = acks.nacks.values().find(|n| n.errno != libc::ENOENT) {
        return Err(io::Error::other(format!(
            "deleting a conntrack entry: {nack}"
        )));
    }
    out.deleted = doomed.len() - acks.missing.len();
    Ok(out)
}

fn message(inner: ConntrackMessage, flags: u16, seq: u32) -> Vec<u8> {
    let mut buf = Vec::new();
    push_message(
        &mut buf,
        NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 0),
        inner,
        flags,
        seq,
    );
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::natgw::rules::Protocol;

    fn key(src: &str, dst: &str, proto: u8, sport: u16, dport: u16) -> TupleKey {
        TupleKey {
            src: Some(src.parse().unwrap()),
            dst: Some(dst.parse().unwrap()),
            protocol: Some(proto),
            src_port: Some(sport),
            dst_port: Some(dport),
        }
    }

    #[test]
    fn a_port_flush_takes_connections_to_that_port_only() {
        let flush = ConntrackFlush::Port {
            eip: "172.19.0.11".parse().unwrap(),
            protocol: Protocol::Tcp,
            port: 8080,
        };
        let to_port = key("172.19.0.1", "172.19.0.11", 6, 40000, 8080);
        let reply = key("10.100.0.2", "172.19.0.1", 6, 80, 40000);
        assert!(matches(&flush, &to_port, &reply));
        let other_port = key("172.19.0.1", "172.19.0.11", 6, 40000, 8081);
        assert!(!matches(&flush, &other_port, &reply));
        let udp = key("172.19.0.1", "172.19.0.11", 17, 40000, 8080);
        assert!(!matches(&flush, &udp, &reply));
    }

    #[test]
    fn an_address_flush_takes_both_directions_of_a_fip() {
        let flush = ConntrackFlush::Address {
            eip: "172.19.0.12".parse().unwrap(),
        };
        // In: ext → FIP.
        let inbound = key("172.19.0.1", "172.19.0.12", 1, 0, 0);
        let inbound_reply = key("10.100.0.3", "172.19.0.1", 1, 0, 0);
        assert!(matches(&flush, &inbound, &inbound_reply));
        // Out: the FIP's pod → ext, leaving as the FIP.
        let outbound = key("10.100.0.3", "172.19.0.1", 6, 5555, 80);
        let outbound_reply = key("172.19.0.1", "172.19.0.12", 6, 80, 5555);
        assert!(matches(&flush, &outbound, &outbound_reply));
        let unrelated = key("10.100.0.4", "172.19.0.1", 6, 5555, 80);
        let unrelated_reply = key("172.19.0.1", "172.19.0.11", 6, 80, 5555);
        assert!(!matches(&flush, &unrelated, &unrelated_reply));
    }

    #[test]
    fn a_sweep_takes_translations_no_rule_accounts_for() {
        let t = Translations {
            forwards: vec![(
                "172.19.0.11".parse().unwrap(),
                6,
                8080,
                "10.100.0.2:80".parse().unwrap(),
            )],
            fips: vec![(
                "172.19.0.12".parse().unwrap(),
                "10.100.0.3".parse().unwrap(),
            )],
            eips: vec![
                "172.19.0.11".parse().unwrap(),
                "172.19.0.12".parse().unwrap(),
            ],
        };
        let sweep = ConntrackFlush::Unexplained(t);
        let stale = |o: TupleKey, r: TupleKey| matches(&sweep, &o, &r);
        // The port forward as planned stays; retargeted or on a port no rule has, it goes.
        let to_web = key("172.19.0.1", "172.19.0.11", 6, 40000, 8080);
        assert!(!stale(
            to_web,
            key("10.100.0.2", "172.19.0.1", 6, 80, 40000)
        ));
        assert!(stale(to_web, key("10.100.0.9", "172.19.0.1", 6, 80, 40000)));
        assert!(stale(to_web, key("10.100.0.2", "172.19.0.1", 6, 81, 40000)));
        let to_gone = key("172.19.0.1", "172.19.0.11", 6, 40000, 8443);
        assert!(stale(
            to_gone,
            key("10.100.0.2", "172.19.0.1", 6, 443, 40000)
        ));
        // A hairpin through the forward (masqueraded to lanIp) is the forward's.
        let hairpin = key("10.100.0.5", "172.19.0.11", 6, 40000, 8080);
        assert!(!stale(
            hairpin,
            key("10.100.0.2", "10.100.0.254", 6, 80, 40000)
        ));
        // The FIP in, both ways; a FIP to another pod goes.
        let ping_in = key("172.19.0.1", "172.19.0.12", 1, 0, 0);
        assert!(!stale(ping_in, key("10.100.0.3", "172.19.0.1", 1, 0, 0)));
        assert!(stale(ping_in, key("10.100.0.4", "172.19.0.1", 1, 0, 0)));
        // Sources translated to an EIP stay; to an address no longer an EIP, they go.
        let out = key("10.100.0.3", "198.51.100.1", 6, 5555, 80);
        assert!(!stale(out, key("198.51.100.1", "172.19.0.12", 6, 80, 5555)));
        assert!(stale(out, key("198.51.100.1", "172.19.0.13", 6, 80, 5555)));
        // Untranslated: not ours to judge.
        let plain = key("10.0.0.1", "10.0.0.2", 6, 5555, 80);
        assert!(!stale(plain, key("10.0.0.2", "10.0.0.1", 6, 80, 5555)));
    }

    #[test]
    fn a_delete_message_carries_the_original_tuple() {
        let tuple = vec![
            Tuple::Ip(vec![
                IPTuple::SourceAddress("172.19.0.1".parse().unwrap()),
                IPTuple::DestinationAddress("172.19.0.11".parse().unwrap()),
            ]),
            Tuple::Proto(vec![
                ProtoTuple::Protocol(6u8.into()),
                ProtoTuple::SourcePort(40000),
                ProtoTuple::DestinationPort(8080),
            ]),
        ];
        let bytes = message(
            ConntrackMessage::Delete(vec![ConntrackAttribute::CtaTupleOrig(tuple.clone())]),
            NLM_F_REQUEST | NLM_F_ACK,
            7,
        );
        let back = NetlinkMessage::<NetfilterMessage>::deserialize(&bytes).unwrap();
        assert_eq!(back.header.sequence_number, 7);
        // IPCTNL_MSG_CT_DELETE in subsystem ctnetlink (1).
        assert_eq!(back.header.message_type, (1 << 8) | 2);
        let NetlinkPayload::InnerMessage(NetfilterMessage {
            inner: NetfilterMessageInner::Conntrack(ConntrackMessage::Delete(attrs)),
            ..
        }) = back.payload
        else {
            panic!("not a conntrack delete");
        };
        assert_eq!(attrs, [ConntrackAttribute::CtaTupleOrig(tuple)]);
    }
}
