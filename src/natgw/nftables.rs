//! Programs the planned [`NatTable`] as the nftables table `ip kube-ovn-nat`, replaced in one
//! atomic netlink batch: add the table (so the delete cannot fail), delete it, and create it
//! again with its two base chains and every rule. Traffic sees the old table or the new one,
//! never a half. The messages are `netlink-packet-netfilter`'s nf_tables types, so no C
//! library is linked (the binary is also the CNI plugin copied onto every host); the three
//! expressions that crate has no type for (`nat`, `masq`, `ct`) are written as its generic
//! expression with their attributes from `linux/netfilter/nf_tables.h`. Each rule carries its
//! CR as comment (`dnat/<name>`), which `nft list` shows.

use std::io;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use netlink_packet_core::{DefaultNla, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST};
use netlink_packet_netfilter::nftables::{
    Bitwise, ChainAttribute, ChainMessage, Cmp, DataAttribute, ExpressionAttribute, Expressions,
    Hook, Immediate, InetHookNumber, ListAttribute, Meta, MetaKey, NfTablesMessage, Operator,
    Payload, Register, RuleAttribute, RuleMessage, TableAttribute, TableMessage,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterProtoFamily};

use super::nfnetlink::{push_message, Acks, NfSocket};
use super::plan::{NatRule, NatTable, HAIRPIN_MARK};

/// The table's name (family `ip`).
pub const TABLE_NAME: &str = "kube-ovn-nat";
const PREROUTING: &str = "prerouting";
const POSTROUTING: &str = "postrouting";
/// nft's `dstnat` and `srcnat` priorities.
const DSTNAT: i32 = -100;
const SRCNAT: i32 = 100;
/// nft's limit on a rule comment (`NFTNL_UDATA_COMMENT_MAXLEN`), with room for the NUL.
const COMMENT_MAX: usize = 127;
/// `NFTNL_UDATA_RULE_COMMENT`: the user-data record nft shows as `comment`.
const UDATA_RULE_COMMENT: u8 = 0;

// Attributes of the expressions netlink-packet-netfilter has no type for
// (linux/netfilter/nf_tables.h: enum nft_nat_attributes, enum nft_ct_attributes).
const NFTA_NAT_TYPE: u16 = 1;
const NFTA_NAT_FAMILY: u16 = 2;
const NFTA_NAT_REG_ADDR_MIN: u16 = 3;
const NFTA_NAT_REG_PROTO_MIN: u16 = 5;
const NFTA_CT_DREG: u16 = 1;
const NFTA_CT_KEY: u16 = 2;
/// `IPS_DST_NAT`: the connection's destination was translated.
const IPS_DST_NAT: u32 = 1 << 5;

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("nftables socket: {0}")]
    Socket(#[source] io::Error),
    #[error("sending the nftables batch ({bytes} bytes, {messages} messages): {source}")]
    Send {
        bytes: usize,
        messages: usize,
        source: io::Error,
    },
    #[error("nftables refused the batch, nothing changed: {0}")]
    Refused(String),
    #[error("nftables gave no answer for {0} of the batch's messages")]
    Unanswered(usize),
}

/// What one programming took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Programmed {
    pub rules: usize,
    pub messages: usize,
    pub bytes: usize,
    pub elapsed: Duration,
}

/// The encoded batch: its bytes, and what each acknowledged message is (by sequence number
/// from `first_seq`).
pub struct Batch {
    pub bytes: Vec<u8>,
    pub first_seq: u32,
    pub what: Vec<String>,
}

/// Encodes the batch that replaces the table with `table`.
pub fn batch(table: &NatTable) -> Batch {
    let mut bytes = Vec::with_capacity(512 * (table.rule_count() + 8));
    let mut what: Vec<String> = Vec::with_capacity(table.rule_count() + 5);
    let first_seq = 2;
    let control = || {
        NetfilterHeader::new(
            NetfilterProtoFamily::Unspec,
            0,
            libc::NFNL_SUBSYS_NFTABLES as u16,
        )
    };
    let ip = || NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 0);
    // Only the messages in between are acknowledged: kernels before 6.10 ignore the ack
    // flag on the batch's begin and end.
    push_message(
        &mut bytes,
        control(),
        ControlMessage::BatchBegin,
        NLM_F_REQUEST,
        1,
    );
    let mut add = |bytes: &mut Vec<u8>, message: NfTablesMessage, flags: u16, label: String| {
        let seq = first_seq + what.len() as u32;
        push_message(bytes, ip(), message, NLM_F_REQUEST | NLM_F_ACK | flags, seq);
        what.push(label);
    };
    let table_message = || TableMessage {
        attributes: vec![TableAttribute::Name(TABLE_NAME.into())],
    };
    add(
        &mut bytes,
        NfTablesMessage::NewTable(table_message()),
        NLM_F_CREATE,
        "add table".into(),
    );
    add(
        &mut bytes,
        NfTablesMessage::DeleteTable(table_message()),
        0,
        "delete table".into(),
    );
    add(
        &mut bytes,
        NfTablesMessage::NewTable(table_message()),
        NLM_F_CREATE,
        "create table".into(),
    );
    for (name, hook, priority) in [
        (PREROUTING, InetHookNumber::PreRouting, DSTNAT),
        (POSTROUTING, InetHookNumber::PostRouting, SRCNAT),
    ] {
        let chain = ChainMessage {
            attributes: vec![
                ChainAttribute::Table(TABLE_NAME.into()),
                ChainAttribute::Name(name.into()),
                ChainAttribute::Hook(vec![
                    Hook::Number(hook.into()),
                    // The kernel reads the priority as a signed 32-bit number.
                    Hook::Priority(priority as u32),
                ]),
                ChainAttribute::Policy(libc::NF_ACCEPT as u32),
                ChainAttribute::Type("nat".into()),
            ],
        };
        add(
            &mut bytes,
            NfTablesMessage::NewChain(chain),
            NLM_F_CREATE,
            format!("chain {name}"),
        );
    }
    for (chain, rules) in [
        (PREROUTING, &table.prerouting),
        (POSTROUTING, &table.postrouting),
    ] {
        for rule in rules {
            let message = RuleMessage {
                attributes: vec![
                    RuleAttribute::Table(TABLE_NAME.into()),
                    RuleAttribute::Chain(chain.into()),
                    RuleAttribute::Expressions(expressions(rule)),
                    RuleAttribute::UserData(comment(rule)),
                ],
            };
            add(
                &mut bytes,
                NfTablesMessage::NewRule(message),
                NLM_F_CREATE | NLM_F_APPEND,
                describe(rule),
            );
        }
    }
    let end_seq = first_seq + what.len() as u32;
    push_message(
        &mut bytes,
        control(),
        ControlMessage::BatchEnd,
        NLM_F_REQUEST,
        end_seq,
    );
    Batch {
        bytes,
        first_seq,
        what,
    }
}

/// Replaces the table with `table`, atomically.
pub fn program(table: &NatTable) -> Result<Programmed, NftError> {
    let started = Instant::now();
    let batch = batch(table);
    let messages = batch.what.len();
    let socket = NfSocket::open().map_err(NftError::Socket)?;
    socket
        .size_for(batch.bytes.len(), messages)
        .map_err(NftError::Socket)?;
    socket.send(&batch.bytes).map_err(|source| NftError::Send {
        bytes: batch.bytes.len(),
        messages,
        source,
    })?;
    let seqs = batch.first_seq..batch.first_seq + messages as u32;
    let acks = socket.acks(seqs).map_err(NftError::Socket)?;
    check(&acks, batch.first_seq, &batch.what)?;
    Ok(Programmed {
        rules: table.rule_count(),
        messages,
        bytes: batch.bytes.len(),
        elapsed: started.elapsed(),
    })
}

/// Names the first refused message; `first_seq` is the sequence number of `what[0]`.
fn check(acks: &Acks, first_seq: u32, what: &[String]) -> Result<(), NftError> {
    if let Some((seq, nack)) = acks.nacks.iter().next() {
        let subject = seq
            .checked_sub(first_seq)
            .and_then(|i| what.get(i as usize))
            .map(String::as_str)
            .unwrap_or("batch framing");
        let more = match acks.nacks.len() {
            1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        };
        return Err(NftError::Refused(format!("{subject}: {nack}{more}")));
    }
    if !acks.missing.is_empty() {
        return Err(NftError::Unanswered(acks.missing.len()));
    }
    Ok(())
}

fn describe(rule: &NatRule) -> String {
    match rule {
        NatRule::MarkFromLan { lan } => format!("mark from {lan}"),
        NatRule::Hairpin { lan } => format!("hairpin on {lan}"),
        NatRule::Dnat { name, .. } => format!("dnat/{name}"),
        NatRule::FipDnat { name, .. } => format!("fip/{name} (dnat)"),
        NatRule::FipSnat { name, .. } => format!("fip/{name} (snat)"),
        NatRule::Snat { name, .. } => format!("snat/{name}"),
    }
}

/// The rule's comment as nft stores it: one user-data record, NUL-terminated.
fn comment(rule: &NatRule) -> Vec<u8> {
    let text = match rule {
        NatRule::MarkFromLan { .. } => "hairpin: from the LAN".to_string(),
        NatRule::Hairpin { .. } => "hairpin: back into the LAN".to_string(),
        NatRule::Dnat { name, .. } => format!("dnat/{name}"),
        NatRule::FipDnat { name, .. } | NatRule::FipSnat { name, .. } => format!("fip/{name}"),
        NatRule::Snat { name, .. } => format!("snat/{name}"),
    };
    let mut end = text.len().min(COMMENT_MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let text = text[..end].replace('\0', "");
    let mut record = vec![UDATA_RULE_COMMENT, (text.len() + 1) as u8];
    record.extend_from_slice(text.as_bytes());
    record.push(0);
    record
}

type Expression = ListAttribute<ExpressionAttribute>;

/// The nftables expressions of one rule.
fn expressions(rule: &NatRule) -> Vec<Expression> {
    match rule {
        NatRule::MarkFromLan { lan } => vec![
            meta(MetaKey::Iifname),
            cmp(Operator::Equal, ifname(lan)),
            meta(MetaKey::Mark),
            bitwise(
                (!HAIRPIN_MARK).to_ne_bytes().to_vec(),
                HAIRPIN_MARK.to_ne_bytes().to_vec(),
            ),
            Expressions::Meta(vec![
                Meta::Key(MetaKey::Mark),
                Meta::SourceRegister(Register::Reg1),
            ])
            .into(),
        ],
        NatRule::Dnat {
            eip,
            protocol,
            port,
            to,
            ..
        } => vec![
            ip_daddr(),
            cmp(Operator::Equal, eip.octets().to_vec()),
            meta(MetaKey::L4Proto),
            cmp(Operator::Equal, vec![protocol.number()]),
            // Destination port, at the same offset in TCP and UDP.
            payload(libc::NFT_PAYLOAD_TRANSPORT_HEADER as u32, 2, 2),
            cmp(Operator::Equal, port.to_be_bytes().to_vec()),
            immediate(Register::Reg1, to.ip().octets().to_vec()),
            immediate(Register::Reg2, to.port().to_be_bytes().to_vec()),
            nat(libc::NFT_NAT_DNAT as u32, Some(Register::Reg2)),
        ],
        NatRule::FipDnat { eip, to, .. } => vec![
            ip_daddr(),
            cmp(Operator::Equal, eip.octets().to_vec()),
            immediate(Register::Reg1, to.octets().to_vec()),
            nat(libc::NFT_NAT_DNAT as u32, None),
        ],
        NatRule::Hairpin { lan } => vec![
            meta(MetaKey::Mark),
            bitwise(HAIRPIN_MARK.to_ne_bytes().to_vec(), vec![0; 4]),
            cmp(Operator::NotEqual, vec![0; 4]),
            ct_status(),
            bitwise(IPS_DST_NAT.to_ne_bytes().to_vec(), vec![0; 4]),
            cmp(Operator::NotEqual, vec![0; 4]),
            meta(MetaKey::Oifname),
            cmp(Operator::Equal, ifname(lan)),
            ListAttribute::Element(vec![ExpressionAttribute::Name("masq".into())]),
        ],
        NatRule::FipSnat {
            from, external, to, ..
        } => vec![
            ip_saddr(),
            cmp(Operator::Equal, from.octets().to_vec()),
            meta(MetaKey::Oifname),
            cmp(Operator::Equal, ifname(external)),
            immediate(Register::Reg1, to.octets().to_vec()),
            nat(libc::NFT_NAT_SNAT as u32, None),
        ],
        NatRule::Snat {
            from, external, to, ..
        } => {
            let mut e = Vec::new();
            if from.prefix_len() > 0 {
                e.push(ip_saddr());
                if from.prefix_len() < 32 {
                    e.push(bitwise(
                        from.netmask().octets().to_vec(),
                        Ipv4Addr::UNSPECIFIED.octets().to_vec(),
                    ));
                }
                e.push(cmp(Operator::Equal, from.network().octets().to_vec()));
            }
            e.extend([
                meta(MetaKey::Oifname),
                cmp(Operator::Equal, ifname(external)),
                immediate(Register::Reg1, to.octets().to_vec()),
                nat(libc::NFT_NAT_SNAT as u32, None),
            ]);
            e
        }
    }
}

/// An interface name as `meta iifname`/`oifname` compares it: exact, NUL-terminated.
fn ifname(name: &str) -> Vec<u8> {
    let mut bytes = name.as_bytes().to_vec();
    bytes.push(0);
    bytes
}

fn payload(base: u32, offset: u32, len: u32) -> Expression {
    Expressions::Payload(vec![
        Payload::DestinationRegister(Register::Reg1),
        Payload::Base(base),
        Payload::Offset(offset),
        Payload::Len(len),
    ])
    .into()
}

fn ip_saddr() -> Expression {
    payload(libc::NFT_PAYLOAD_NETWORK_HEADER as u32, 12, 4)
}

fn ip_daddr() -> Expression {
    payload(libc::NFT_PAYLOAD_NETWORK_HEADER as u32, 16, 4)
}

fn cmp(op: Operator, data: Vec<u8>) -> Expression {
    Expressions::Cmp(vec![
        Cmp::SourceRegister(Register::Reg1),
        Cmp::Op(op),
        Cmp::Data(DataAttribute::Value(data)),
    ])
    .into()
}

fn meta(key: MetaKey) -> Expression {
    Expressions::Meta(vec![
        Meta::Key(key),
        Meta::DestinationRegister(Register::Reg1),
    ])
    .into()
}

/// `reg1 = (reg1 & mask) ^ xor`.
fn bitwise(mask: Vec<u8>, xor: Vec<u8>) -> Expression {
    Expressions::Bitwise(vec![
        Bitwise::SourceRegister(Register::Reg1),
        Bitwise::DestinationRegister(Register::Reg1),
        Bitwise::Length(mask.len() as u32),
        Bitwise::Mask(DataAttribute::Value(mask)),
        Bitwise::Xor(DataAttribute::Value(xor)),
    ])
    .into()
}

fn immediate(register: Register, data: Vec<u8>) -> Expression {
    Expressions::Immediate(vec![
        Immediate::DestinationRegister(register),
        Immediate::Data(DataAttribute::Value(data)),
    ])
    .into()
}

fn be32(kind: u16, value: u32) -> DefaultNla {
    DefaultNla::new(kind, value.to_be_bytes().to_vec())
}

/// `ct status` into reg1.
fn ct_status() -> Expression {
    Expressions::Other {
        expression_type: "ct".into(),
        attributes: vec![
            be32(NFTA_CT_DREG, u32::from(Register::Reg1)),
            be32(NFTA_CT_KEY, libc::NFT_CT_STATUS as u32),
        ],
    }
    .into()
}

/// `snat`/`dnat` to the address in reg1 (and the port in `port`).
fn nat(nat_type: u32, port: Option<Register>) -> Expression {
    let mut attributes = vec![
        be32(NFTA_NAT_TYPE, nat_type),
        be32(NFTA_NAT_FAMILY, libc::NFPROTO_IPV4 as u32),
        be32(NFTA_NAT_REG_ADDR_MIN, u32::from(Register::Reg1)),
    ];
    if let Some(port) = port {
        attributes.push(be32(NFTA_NAT_REG_PROTO_MIN, u32::from(port)));
    }
    Expressions::Other {
        expression_type: "nat".into(),
        attributes,
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::NetlinkBuffer;

    #[test]
    fn the_batch_frames_the_table_replacement_and_acks_only_its_content() {
        let table = NatTable {
            prerouting: vec![NatRule::MarkFromLan { lan: "lan0".into() }],
            postrouting: vec![NatRule::Hairpin { lan: "lan0".into() }],
        };
        let b = batch(&table);
        assert_eq!(
            b.what,
            [
                "add table",
                "delete table",
                "create table",
                "chain prerouting",
                "chain postrouting",
                "mark from lan0",
                "hairpin on lan0"
            ]
        );
        let mut offset = 0;
        let mut seen = Vec::new();
        while offset < b.bytes.len() {
            let m = NetlinkBuffer::new_checked(&b.bytes[offset..]).unwrap();
            seen.push((
                m.message_type(),
                m.sequence_number(),
                m.flags() & NLM_F_ACK != 0,
            ));
            offset += (m.length() as usize + 3) & !3;
        }
        // Batch begin/end (subsystem 0, types 16 and 17) unacked around 7 nf_tables messages.
        assert_eq!(seen.first(), Some(&(16, 1, false)));
        assert_eq!(seen.last(), Some(&(17, 9, false)));
        let nft = (libc::NFNL_SUBSYS_NFTABLES as u16) << 8;
        let types: Vec<u16> = seen[1..8].iter().map(|s| s.0 - nft).collect();
        assert_eq!(types, [0, 2, 0, 3, 3, 6, 6]);
        assert!(seen[1..8].iter().all(|s| s.2));
        assert_eq!(
            seen[1..8].iter().map(|s| s.1).collect::<Vec<_>>(),
            (2..9).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_comment_is_one_nul_terminated_record() {
        let c = comment(&NatRule::Snat {
            name: "vpc".into(),
            from: "10.0.0.0/8".parse().unwrap(),
            external: "net2".into(),
            to: "172.19.0.11".parse().unwrap(),
        });
        assert_eq!(c, [&[0u8, 9][..], b"snat/vpc\0"].concat());
    }
}
