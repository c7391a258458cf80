//! A netfilter netlink socket (`NETLINK_NETFILTER`) in this thread's netns, shared by the
//! nftables batch (`nftables.rs`) and conntrack (`conntrack.rs`): encoding a message into a
//! buffer, sending the buffer, collecting the acknowledgements with the kernel's extended
//! error message, and reading a dump. What the messages say is the callers' business.
//!
//! The kernel handles a netfilter message during the `send` call itself, so every
//! acknowledgement is queued when `send` returns: [`NfSocket::acks`] reads without waiting
//! and reports any sequence number that got no answer (its receive buffer is sized first, so
//! that a thousand acknowledgements fit).

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::io;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::time::Duration;

use netlink_packet_core::{
    ErrorBuffer, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NlasIterator,
    NLMSG_DONE, NLMSG_ERROR, NLM_F_ACK_TLVS,
};
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterMessageInner};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

/// `NLMSGERR_ATTR_MSG`: the extended ack's text.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// `struct nlmsgerr` with only the original header (`NETLINK_CAP_ACK`).
const CAPPED_ERROR_LEN: usize = 4 + 16;
/// The kernel's cost of one queued acknowledgement, with room to spare.
const ACK_TRUESIZE: usize = 2048;

/// A refusal of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nack {
    pub seq: u32,
    pub errno: i32,
    /// The kernel's extended ack message, if it gave one.
    pub message: Option<String>,
}

impl std::fmt::Display for Nack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", io::Error::from_raw_os_error(self.errno))?;
        if let Some(m) = &self.message {
            write!(f, " ({m})")?;
        }
        Ok(())
    }
}

/// What the acknowledgements of a send said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acks {
    /// Refusals by sequence number.
    pub nacks: BTreeMap<u32, Nack>,
    /// Sequence numbers that expected an answer and got none.
    pub missing: Vec<u32>,
}

pub struct NfSocket {
    socket: Socket,
}

impl NfSocket {
    /// Opens and binds the socket; extended and capped acks on.
    pub fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        socket.set_ext_ack(true)?;
        socket.set_cap_ack(true)?;
        let s = NfSocket { socket };
        s.set_receive_timeout(Duration::from_secs(10))?;
        Ok(s)
    }

    /// Makes room for sending `bytes` in one message and queueing `acks` answers (privileged:
    /// `SO_*BUFFORCE` ignores the sysctl maximums).
    pub fn size_for(&self, bytes: usize, acks: usize) -> io::Result<()> {
        let send = (bytes + 64 * 1024).min(i32::MAX as usize / 2) as libc::c_int;
        let recv = (acks * ACK_TRUESIZE + 256 * 1024).min(i32::MAX as usize / 2) as libc::c_int;
        setsockopt(&self.socket, libc::SO_SNDBUFFORCE, send)?;
        setsockopt(&self.socket, libc::SO_RCVBUFFORCE, recv)
    }

    fn set_receive_timeout(&self, timeout: Duration) -> io::Result<()> {
        let tv = libc::timeval {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_usec: timeout.subsec_micros() as libc::suseconds_t,
        };
        // SAFETY: a valid fd and a timeval of the size given.
        let rc = unsafe {
            libc::setsockopt(
                self.socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const libc::timeval as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sends `bytes` (one or more netlink messages) to the kernel in one datagram.
    pub fn send(&self, bytes: &[u8]) -> io::Result<()> {
        let sent = self.socket.send_to(bytes, &SocketAddr::new(0, 0), 0)?;
        if sent != bytes.len() {
            return Err(io::Error::other(format!(
                "netlink send took {sent} of {} bytes",
                bytes.len()
            )));
        }
        Ok(())
    }

    /// Reads the answers already queued for the messages `expected` (after a `send`).
    pub fn acks(&self, expected: Range<u32>) -> io::Result<Acks> {
        let mut pending: std::collections::BTreeSet<u32> = expected.collect();
        let mut acks = Acks::default();
        let mut buf = Vec::with_capacity(256 * 1024);
        while !pending.is_empty() {
            buf.clear();
            match self.socket.recv(&mut buf, libc::MSG_DONTWAIT) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
            for_each_message(&buf, |msg| {
                if msg.message_type() != NLMSG_ERROR {
                    return Ok(());
                }
                let seq = msg.sequence_number();
                pending.remove(&seq);
                if let Some(nack) = nack_of(&msg, seq)? {
                    acks.nacks.insert(seq, nack);
                }
                Ok(())
            })?;
        }
        acks.missing = pending.into_iter().collect();
        Ok(acks)
    }

    /// Sends the dump request `request` and hands each answer (a whole netlink message) to
    /// `each`, until the kernel says done.
    pub fn dump(&self, request: &[u8], mut each: impl FnMut(&[u8])) -> io::Result<()> {
        self.send(request)?;
        let mut buf = Vec::with_capacity(256 * 1024);
        loop {
            buf.clear();
            self.socket.recv(&mut buf, 0)?;
            let mut done = false;
            for_each_message(&buf, |msg| {
                match msg.message_type() {
                    NLMSG_DONE => done = true,
                    NLMSG_ERROR => {
                        if let Some(nack) = nack_of(&msg, msg.sequence_number())? {
                            return Err(io::Error::other(format!("dump refused: {nack}")));
                        }
                    }
                    _ => each(msg.into_inner()),
                }
                Ok(())
            })?;
            if done {
                return Ok(());
            }
        }
    }
}

/// Appends one netfilter message (`header`, `inner`) with `flags` and `seq` to `buf`.
pub fn push_message(
    buf: &mut Vec<u8>,
    header: NetfilterHeader,
    inner: impl Into<NetfilterMessageInner>,
    flags: u16,
    seq: u32,
) {
    let mut nl = NetlinkHeader::default();
    nl.flags = flags;
    nl.sequence_number = seq;
    let mut msg = NetlinkMessage::new(
        nl,
        NetlinkPayload::InnerMessage(NetfilterMessage::new(header, inner)),
    );
    msg.finalize();
    let start = buf.len();
    buf.resize(start + msg.buffer_len(), 0);
    msg.serialize(&mut buf[start..]);
}

/// Calls `f` with each netlink message in `buf` (the message's own bytes only).
fn for_each_message<'a>(
    buf: &'a [u8],
    mut f: impl FnMut(NetlinkBuffer<&'a [u8]>) -> io::Result<()>,
) -> io::Result<()> {
    let mut offset = 0;
    while offset < buf.len() {
        let msg = NetlinkBuffer::new_checked(&buf[offset..])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        let len = msg.length() as usize;
        f(NetlinkBuffer::new(&buf[offset..offset + len]))?;
        offset += (len + 3) & !3;
    }
    Ok(())
}

/// The refusal an `NLMSG_ERROR` message carries, `None` for a plain ack.
fn nack_of(msg: &NetlinkBuffer<&[u8]>, seq: u32) -> io::Result<Option<Nack>> {
    let payload = msg.payload();
    let error = ErrorBuffer::new_checked(payload)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    let Some(code) = error.code() else {
        return Ok(None);
    };
    let mut message = None;
    if msg.flags() & NLM_F_ACK_TLVS != 0 && payload.len() > CAPPED_ERROR_LEN {
        for nla in NlasIterator::new(&payload[CAPPED_ERROR_LEN..]).flatten() {
            if nla.kind() == NLMSGERR_ATTR_MSG {
                message = CStr::from_bytes_until_nul(nla.value())
                    .ok()
                    .map(|s| s.to_string_lossy().into_owned());
            }
        }
    }
    Ok(Some(Nack {
        seq,
        errno: -code.get(),
        message,
    }))
}

fn setsockopt(socket: &Socket, option: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: a valid fd and an int of the size given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            &value as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
