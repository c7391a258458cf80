//! Programs the planned [`NatTable`] as the nftables table `ip kube-ovn-nat`, replaced in one
//! atomic netlink batch: add the table (so the delete cannot fail), delete it, and create it
//! again with its two base chains and every rule. Traffic sees the old table or the new one,
//! never a half. Rules are built with `nftnl` (libnftnl); the batch goes out on our
//! [`NfSocket`]. Each rule carries its CR as comment (`dnat/<name>`), which `nft list` shows.

use std::ffi::{CStr, CString};
use std::io;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use nftnl::expr::{
    Bitwise, Cmp, CmpOp, Conntrack, ConntrackStatus, Immediate, InterfaceName, Masquerade, Meta,
    Nat, NatType, Register,
};
use nftnl::{nft_expr, Batch, Chain, ChainType, Hook, MsgType, Policy, ProtoFamily, Rule, Table};

use super::nfnetlink::{Acks, NfSocket};
use super::plan::{NatRule, NatTable, HAIRPIN_MARK};
use super::rules::Protocol;

/// The table's name (family `ip`).
pub const TABLE_NAME: &str = "kube-ovn-nat";
const TABLE: &CStr = c"kube-ovn-nat";
const PREROUTING: &CStr = c"prerouting";
const POSTROUTING: &CStr = c"postrouting";
/// nft's `dstnat` and `srcnat` priorities.
const DSTNAT: i32 = -100;
const SRCNAT: i32 = 100;
/// libnftnl's limit on a rule comment, with room for the terminator.
const COMMENT_MAX: usize = 120;

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
    #[error("rule {rule}: {reason}")]
    Rule { rule: String, reason: String },
}

/// What one programming took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Programmed {
    pub rules: usize,
    pub messages: usize,
    pub bytes: usize,
    pub elapsed: Duration,
}

/// Replaces the table with `table`, atomically.
pub fn program(table: &NatTable) -> Result<Programmed, NftError> {
    let started = Instant::now();
    let mut batch = Batch::new();
    // What each sequence number is, to name a refused message.
    let mut what: Vec<String> = Vec::with_capacity(table.rule_count() + 8);
    let nft_table = Table::new(TABLE, ProtoFamily::Ipv4);
    batch.add(&nft_table, MsgType::Add);
    batch.add(&nft_table, MsgType::Del);
    batch.add(&nft_table, MsgType::Add);
    what.extend(["add table", "delete table", "create table"].map(String::from));

    let mut pre = Chain::new(PREROUTING, &nft_table);
    pre.set_hook(Hook::PreRouting, DSTNAT);
    pre.set_type(ChainType::Nat);
    pre.set_policy(Policy::Accept);
    let mut post = Chain::new(POSTROUTING, &nft_table);
    post.set_hook(Hook::PostRouting, SRCNAT);
    post.set_type(ChainType::Nat);
    post.set_policy(Policy::Accept);
    batch.add(&pre, MsgType::Add);
    batch.add(&post, MsgType::Add);
    what.extend(["chain prerouting", "chain postrouting"].map(String::from));

    for (chain, rules) in [(&pre, &table.prerouting), (&post, &table.postrouting)] {
        for rule in rules {
            batch.add(&render(chain, rule)?, MsgType::Add);
            what.push(describe(rule));
        }
    }
    let batch = batch.finalize();
    let bytes: Vec<u8> = batch.iter().flatten().copied().collect();
    let seqs = batch.sequence_numbers();
    let messages = seqs.len();

    let socket = NfSocket::open().map_err(NftError::Socket)?;
    socket
        .size_for(bytes.len(), messages)
        .map_err(NftError::Socket)?;
    socket.send(&bytes).map_err(|source| NftError::Send {
        bytes: bytes.len(),
        messages,
        source,
    })?;
    let acks = socket.acks(seqs.clone()).map_err(NftError::Socket)?;
    // With the kernel acking the batch begin and end (6.10+), two more answers than messages.
    let framing = (messages.saturating_sub(what.len()) / 2) as u32;
    check(&acks, seqs.start + framing, &what)?;
    Ok(Programmed {
        rules: table.rule_count(),
        messages,
        bytes: bytes.len(),
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
        return Err(NftError::Refused(format!(
            "{subject}: {nack}{}",
            if acks.nacks.len() > 1 {
                format!(" (and {} more)", acks.nacks.len() - 1)
            } else {
                String::new()
            }
        )));
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

fn comment(rule: &NatRule) -> String {
    let mut c = match rule {
        NatRule::MarkFromLan { .. } => "hairpin: from the LAN".to_string(),
        NatRule::Hairpin { .. } => "hairpin: back into the LAN".to_string(),
        NatRule::Dnat { name, .. } => format!("dnat/{name}"),
        NatRule::FipDnat { name, .. } | NatRule::FipSnat { name, .. } => format!("fip/{name}"),
        NatRule::Snat { name, .. } => format!("snat/{name}"),
    };
    if c.len() > COMMENT_MAX {
        let mut end = COMMENT_MAX;
        while !c.is_char_boundary(end) {
            end -= 1;
        }
        c.truncate(end);
    }
    c
}

fn ifname(name: &str, rule: &NatRule) -> Result<InterfaceName, NftError> {
    CString::new(name)
        .map(InterfaceName::Exact)
        .map_err(|_| NftError::Rule {
            rule: describe(rule),
            reason: format!("interface name {name:?} contains NUL"),
        })
}

/// The nftables expressions of one rule.
fn render<'a>(chain: &'a Chain<'a>, rule: &NatRule) -> Result<Rule<'a>, NftError> {
    let mut r = Rule::new(chain);
    match rule {
        NatRule::MarkFromLan { lan } => {
            r.add_expr(&nft_expr!(meta iifname));
            r.add_expr(&Cmp::new(CmpOp::Eq, ifname(lan, rule)?));
            r.add_expr(&nft_expr!(meta mark));
            r.add_expr(&Bitwise::new(!HAIRPIN_MARK, HAIRPIN_MARK));
            r.add_expr(&Meta::Mark { set: true });
        }
        NatRule::Dnat {
            eip,
            protocol,
            port,
            to,
            ..
        } => {
            match_daddr(&mut r, *eip);
            r.add_expr(&nft_expr!(meta l4proto));
            r.add_expr(&Cmp::new(CmpOp::Eq, protocol.number()));
            r.add_expr(&match protocol {
                Protocol::Tcp => nft_expr!(payload tcp dport),
                Protocol::Udp => nft_expr!(payload udp dport),
            });
            r.add_expr(&Cmp::new(CmpOp::Eq, &port.to_be_bytes()[..]));
            r.add_expr(&Immediate::new(to.ip().octets(), Register::Reg1));
            r.add_expr(&Immediate::new(to.port().to_be_bytes(), Register::Reg2));
            r.add_expr(&Nat {
                nat_type: NatType::DNat,
                family: ProtoFamily::Ipv4,
                ip_register: Register::Reg1,
                port_register: Some(Register::Reg2),
            });
        }
        NatRule::FipDnat { eip, to, .. } => {
            match_daddr(&mut r, *eip);
            nat_to(&mut r, NatType::DNat, *to);
        }
        NatRule::Hairpin { lan } => {
            r.add_expr(&nft_expr!(meta mark));
            r.add_expr(&Bitwise::new(HAIRPIN_MARK, 0u32));
            r.add_expr(&Cmp::new(CmpOp::Neq, 0u32));
            r.add_expr(&Conntrack::Status);
            r.add_expr(&Bitwise::new(ConntrackStatus::DST_NAT.bits(), 0u32));
            r.add_expr(&Cmp::new(CmpOp::Neq, 0u32));
            r.add_expr(&nft_expr!(meta oifname));
            r.add_expr(&Cmp::new(CmpOp::Eq, ifname(lan, rule)?));
            r.add_expr(&Masquerade);
        }
        NatRule::FipSnat {
            from, external, to, ..
        } => {
            r.add_expr(&nft_expr!(payload ipv4 saddr));
            r.add_expr(&Cmp::new(CmpOp::Eq, *from));
            r.add_expr(&nft_expr!(meta oifname));
            r.add_expr(&Cmp::new(CmpOp::Eq, ifname(external, rule)?));
            nat_to(&mut r, NatType::SNat, *to);
        }
        NatRule::Snat {
            from, external, to, ..
        } => {
            if from.prefix_len() > 0 {
                r.add_expr(&nft_expr!(payload ipv4 saddr));
                if from.prefix_len() < 32 {
                    r.add_expr(&Bitwise::new(from.netmask(), Ipv4Addr::UNSPECIFIED));
                }
                r.add_expr(&Cmp::new(CmpOp::Eq, from.network()));
            }
            r.add_expr(&nft_expr!(meta oifname));
            r.add_expr(&Cmp::new(CmpOp::Eq, ifname(external, rule)?));
            nat_to(&mut r, NatType::SNat, *to);
        }
    }
    // Names are DNS labels: a NUL cannot occur, and a comment is only a help to readers.
    if let Ok(c) = CString::new(comment(rule)) {
        r.set_comment(c).map_err(|reason| NftError::Rule {
            rule: describe(rule),
            reason: reason.to_string(),
        })?;
    }
    Ok(r)
}

fn match_daddr(r: &mut Rule<'_>, eip: Ipv4Addr) {
    r.add_expr(&nft_expr!(payload ipv4 daddr));
    r.add_expr(&Cmp::new(CmpOp::Eq, eip));
}

fn nat_to(r: &mut Rule<'_>, nat_type: NatType, address: Ipv4Addr) {
    r.add_expr(&Immediate::new(address.octets(), Register::Reg1));
    r.add_expr(&Nat {
        nat_type,
        family: ProtoFamily::Ipv4,
        ip_register: Register::Reg1,
        port_register: None,
    });
}
