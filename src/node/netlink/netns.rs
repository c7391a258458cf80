//! Sockets inside a pod's netns. A netlink socket belongs to the netns it was created in: to
//! get one inside the pod netns, [`PodNetns::enter`] spawns a short-lived OS thread that
//! `setns`es into it and creates the rtnetlink socket (and a datagram socket for the ethtool
//! ioctl) there, then exits; the sockets are then driven from the caller's tokio runtime like
//! any other. No thread of the runtime ever changes netns. What is done with the sockets is
//! the other files' business.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use rtnetlink::Handle;
use tokio::task::JoinHandle;

use super::ethtool::datagram_socket_raw;
use super::links::link_index;
use super::NetlinkError;

/// Sockets created inside a pod's netns, and the netns itself (held open while they live).
pub(super) struct PodNetns {
    pub(super) handle: Handle,
    connection: JoinHandle<()>,
    pub(super) ioctl_socket: OwnedFd,
    file: File,
    pub(super) path: PathBuf,
}

impl Drop for PodNetns {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl PodNetns {
    /// Opens the netns at `path` and creates the sockets inside it.
    pub(super) async fn enter(path: &Path) -> Result<Self, NetlinkError> {
        let netns_error = |source| NetlinkError::Netns {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(netns_error)?;
        let runtime = tokio::runtime::Handle::current();
        let netns_fd = file.try_clone().map_err(netns_error)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("netns-enter".into())
            .spawn(move || {
                // This thread only creates sockets in the pod netns and ends; it never returns to a pool.
                let opened = (|| {
                    let _runtime = runtime.enter();
                    nix::sched::setns(&netns_fd, nix::sched::CloneFlags::CLONE_NEWNET)
                        .map_err(io::Error::from)?;
                    let (connection, handle, _) = rtnetlink::new_connection()?;
                    let socket = datagram_socket_raw()?;
                    Ok::<_, io::Error>((connection, handle, socket))
                })();
                let _ = tx.send(opened);
            })
            .map_err(|source| NetlinkError::Io {
                op: "spawn thread for",
                object: format!("netns {}", path.display()),
                source,
            })?;
        let (connection, handle, ioctl_socket) = rx
            .await
            .map_err(|_| NetlinkError::Io {
                op: "enter",
                object: format!("netns {}", path.display()),
                source: io::Error::other("the netns thread ended without an answer"),
            })?
            .map_err(netns_error)?;
        Ok(PodNetns {
            handle,
            connection: tokio::spawn(connection),
            ioctl_socket,
            file,
            path: path.to_path_buf(),
        })
    }

    /// The netns's file descriptor, to create a link straight inside it (`IFLA_NET_NS_FD`).
    pub(super) fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// `<name> in <netns>`, for errors.
    pub(super) fn object(&self, name: &str) -> String {
        format!("{name} in {}", self.path.display())
    }

    /// The index of the link `name` in this netns, which must exist.
    pub(super) async fn link_index(&self, name: &str) -> Result<u32, NetlinkError> {
        link_index(&self.handle, name)
            .await?
            .ok_or_else(|| NetlinkError::Missing {
                name: name.to_string(),
                netns: self.path.display().to_string(),
            })
    }
}
