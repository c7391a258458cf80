//! tx checksum offload through the ethtool ioctl (`SIOCETHTOOL`), like `ethtool -K <if> tx
//! off`: the userspace OVS datapath drops packets with partial checksums, so on a netdev
//! node every veth end it sees, and any kernel NIC it owns, has it off. Also the datagram
//! socket the ioctl needs. Which links get it off, and when, is `mod.rs` and `links.rs`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::{io_err, NetlinkError};

/// A datagram socket of the calling thread's netns, for the ioctl.
pub(super) fn datagram_socket_raw() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned by the OwnedFd on success.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// [`datagram_socket_raw`] with the error the callers report.
pub(super) fn datagram_socket() -> Result<OwnedFd, NetlinkError> {
    datagram_socket_raw().map_err(io_err("open", "ioctl socket"))
}

const ETHTOOL_STXCSUM: u32 = 0x17;

#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// `struct ifreq` with the `ifr_data` member of its union (40 bytes on 64-bit Linux).
#[repr(C)]
struct IfreqData {
    name: [libc::c_char; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _union_rest: [u8; 16],
}

/// Sets tx checksum offload of `ifname` (in the socket's netns) through the ethtool ioctl, like
/// `ethtool -K <if> tx off`; the kernel also drops the offloads that depend on it (TSO…).
pub(super) fn set_tx_checksum(
    socket: &OwnedFd,
    ifname: &str,
    on: bool,
) -> Result<(), NetlinkError> {
    let mut value = EthtoolValue {
        cmd: ETHTOOL_STXCSUM,
        data: u32::from(on),
    };
    let mut req = IfreqData {
        name: [0; libc::IFNAMSIZ],
        data: std::ptr::null_mut(),
        _union_rest: [0; 16],
    };
    for (dst, src) in req
        .name
        .iter_mut()
        .zip(ifname.bytes().take(libc::IFNAMSIZ - 1))
    {
        *dst = src as libc::c_char;
    }
    req.data = (&mut value as *mut EthtoolValue).cast();
    // SAFETY: SIOCETHTOOL reads the ifreq and the ethtool_value it points to, both alive here.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCETHTOOL as _, &mut req) };
    if rc < 0 {
        return Err(NetlinkError::Io {
            op: "turn tx checksum offload off on",
            object: ifname.to_string(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Turns tx checksum offload off on `ifname` in this process's netns: a kernel NIC attached to
/// a netdev (userspace) OVS bridge must not hand it packets with partial checksums.
pub fn disable_tx_checksum(ifname: &str) -> Result<(), NetlinkError> {
    set_tx_checksum(&datagram_socket()?, ifname, false)
}
