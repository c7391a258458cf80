//! One JSON-RPC session with an OVSDB server over `unix:` or `tcp:`: a reader
//! task (framing, response matching by id, answering the server's `echo`,
//! sending our own `echo` as keepalive) and a writer task. Callers get
//! responses through oneshot channels and notifications through an mpsc.
//! Reconnecting is not done here (see `client`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value as Json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::codec::{self, FrameScanner, Incoming};
use super::error::{Error, Result};

/// Where an OVSDB server listens: `unix:/path` or `tcp:host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp(String),
}

impl Endpoint {
    pub fn parse(s: &str) -> Result<Endpoint> {
        let bad = |reason: &str| Error::Endpoint {
            endpoint: s.to_string(),
            reason: reason.to_string(),
        };
        match s.split_once(':') {
            Some(("unix", path)) if !path.is_empty() => Ok(Endpoint::Unix(PathBuf::from(path))),
            Some(("tcp", addr)) if addr.contains(':') => Ok(Endpoint::Tcp(addr.to_string())),
            Some(("ssl", _)) => Err(Error::NotSupported(format!(
                "ssl endpoint {s:?} (use unix: or tcp:)"
            ))),
            _ => Err(bad("expected unix:PATH or tcp:HOST:PORT")),
        }
    }

    /// Parses a comma-separated list of endpoints, as ovsdb-idl and
    /// ovn-controller accept for the members of a clustered database
    /// (`tcp:10.0.0.1:6641,tcp:10.0.0.2:6641`). One endpoint is a list of one.
    pub fn parse_list(s: &str) -> Result<Vec<Endpoint>> {
        let list = s
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(Endpoint::parse)
            .collect::<Result<Vec<_>>>()?;
        if list.is_empty() {
            return Err(Error::Endpoint {
                endpoint: s.to_string(),
                reason: "no endpoint given".into(),
            });
        }
        Ok(list)
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

/// Timeouts of one session.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// How long a request may wait for its response.
    pub request: Duration,
    /// Silence after which we send an `echo`; a second silent interval closes the session.
    pub keepalive: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            request: Duration::from_secs(30),
            keepalive: Duration::from_secs(5),
        }
    }
}

/// A server-initiated notification (`update2`, `update3`, …), or (with
/// `ack`) a barrier reached: every notification before it has been delivered.
#[derive(Debug)]
pub struct Notification {
    pub method: String,
    pub params: Json,
    pub ack: Option<Reply>,
}

type Reply = oneshot::Sender<Result<Json>>;

enum Pending {
    Call(Reply),
    /// Answered in order with the notifications (see `Connection::barrier`).
    Barrier(Reply),
}

struct Shared {
    pending: Mutex<HashMap<u64, Pending>>,
    next_id: AtomicU64,
    closed: Mutex<Option<String>>,
    out: mpsc::UnboundedSender<Vec<u8>>,
}

impl Shared {
    fn close(&self, reason: String) {
        let mut closed = self.closed.lock().expect("closed lock poisoned");
        if closed.is_none() {
            *closed = Some(reason.clone());
        }
        for (_, p) in self.pending.lock().expect("pending lock poisoned").drain() {
            let (Pending::Call(reply) | Pending::Barrier(reply)) = p;
            let _ = reply.send(Err(Error::Closed(reason.clone())));
        }
    }

    fn closed_reason(&self) -> Option<String> {
        self.closed.lock().expect("closed lock poisoned").clone()
    }
}

/// An open session. Dropping it closes the socket.
pub struct Connection {
    endpoint: Endpoint,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    timeouts: Timeouts,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

impl Connection {
    /// Connects and starts the session's tasks. Notifications arrive on the
    /// returned receiver, which ends when the session ends.
    pub async fn open(
        endpoint: &Endpoint,
        timeouts: Timeouts,
    ) -> Result<(Connection, mpsc::UnboundedReceiver<Notification>)> {
        let io_err = |e: std::io::Error| Error::Io {
            endpoint: endpoint.to_string(),
            reason: e.to_string(),
        };
        let connect = async {
            let stream: Box<dyn Stream> = match endpoint {
                Endpoint::Unix(path) => Box::new(
                    tokio::net::UnixStream::connect(path)
                        .await
                        .map_err(io_err)?,
                ),
                Endpoint::Tcp(addr) => {
                    let s = tokio::net::TcpStream::connect(addr).await.map_err(io_err)?;
                    s.set_nodelay(true).map_err(io_err)?;
                    Box::new(s)
                }
            };
            Ok::<_, Error>(stream)
        };
        let stream = tokio::time::timeout(timeouts.request, connect)
            .await
            .map_err(|_| Error::Timeout(format!("connecting to {endpoint}")))??;
        let (reader, writer) = tokio::io::split(stream);
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (note_tx, note_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            closed: Mutex::new(None),
            out: out_tx,
        });
        let cancel = CancellationToken::new();
        let name = endpoint.to_string();
        tokio::spawn(write_loop(
            writer,
            out_rx,
            shared.clone(),
            cancel.clone(),
            name.clone(),
        ));
        tokio::spawn(read_loop(
            reader,
            note_tx,
            shared.clone(),
            cancel.clone(),
            timeouts,
            name,
        ));
        Ok((
            Connection {
                endpoint: endpoint.clone(),
                shared,
                cancel,
                timeouts,
            },
            note_rx,
        ))
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Why the session ended, if it has.
    pub fn closed_reason(&self) -> Option<String> {
        self.shared.closed_reason()
    }

    /// Sends a request and waits for its result (or the server's error).
    pub async fn call(&self, method: &str, params: Json) -> Result<Json> {
        self.request(method, params, Pending::Call).await
    }

    /// Returns once every notification the server sent before answering an
    /// `echo` sent now has been handed to (and acknowledged by) the consumer
    /// of the notification channel. ovsdb-server flushes monitor updates
    /// before reading the next request, so after a `transact` reply this
    /// means the transaction's updates are in.
    pub async fn barrier(&self) -> Result<()> {
        self.request("echo", json!(["barrier"]), Pending::Barrier)
            .await
            .map(drop)
    }

    async fn request(
        &self,
        method: &str,
        params: Json,
        pending: fn(Reply) -> Pending,
    ) -> Result<Json> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let bytes = serde_json::to_vec(&codec::request(id, method, params))
            .map_err(|e| Error::Protocol(format!("encoding {method}: {e}")))?;
        let (tx, rx) = oneshot::channel();
        self.shared
            .pending
            .lock()
            .expect("pending lock poisoned")
            .insert(id, pending(tx));
        if let Some(reason) = self.shared.closed_reason() {
            self.shared
                .pending
                .lock()
                .expect("pending lock poisoned")
                .remove(&id);
            return Err(Error::Closed(reason));
        }
        if self.shared.out.send(bytes).is_err() {
            self.shared
                .pending
                .lock()
                .expect("pending lock poisoned")
                .remove(&id);
            return Err(Error::Closed(format!("{}: writer stopped", self.endpoint)));
        }
        let reply = match tokio::time::timeout(self.timeouts.request, rx).await {
            Ok(Ok(reply)) => reply?,
            Ok(Err(_)) => {
                return Err(Error::Closed(
                    self.closed_reason()
                        .unwrap_or_else(|| "session ended".into()),
                ))
            }
            Err(_) => {
                self.shared
                    .pending
                    .lock()
                    .expect("pending lock poisoned")
                    .remove(&id);
                return Err(Error::Timeout(format!(
                    "{method} on {} after {:?}",
                    self.endpoint, self.timeouts.request
                )));
            }
        };
        Ok(reply)
    }
}

async fn write_loop(
    writer: impl AsyncWrite + Unpin,
    mut out: mpsc::UnboundedReceiver<Vec<u8>>,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    name: String,
) {
    let mut w = BufWriter::with_capacity(64 * 1024, writer);
    loop {
        let msg = tokio::select! {
            _ = cancel.cancelled() => break,
            msg = out.recv() => match msg { Some(m) => m, None => break },
        };
        let mut result = w.write_all(&msg).await;
        // Coalesce whatever else is queued into the same flush.
        while result.is_ok() {
            match out.try_recv() {
                Ok(m) => result = w.write_all(&m).await,
                Err(_) => break,
            }
        }
        if let Err(e) = match result {
            Ok(()) => w.flush().await,
            Err(e) => Err(e),
        } {
            shared.close(format!("{name}: write failed: {e}"));
            cancel.cancel();
            break;
        }
    }
}

async fn read_loop(
    mut reader: impl AsyncRead + Unpin,
    notes: mpsc::UnboundedSender<Notification>,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    timeouts: Timeouts,
    name: String,
) {
    let reason = match read_messages(&mut reader, &notes, &shared, &cancel, timeouts).await {
        Ok(()) => format!("{name}: closed by client"),
        Err(e) => {
            warn!(endpoint = %name, error = %e, "ovsdb session ended");
            format!("{name}: {e}")
        }
    };
    shared.close(reason);
    cancel.cancel();
}

async fn read_messages(
    reader: &mut (impl AsyncRead + Unpin),
    notes: &mpsc::UnboundedSender<Notification>,
    shared: &Shared,
    cancel: &CancellationToken,
    timeouts: Timeouts,
) -> Result<()> {
    let mut scanner = FrameScanner::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut echo_outstanding: Option<u64> = None;
    loop {
        let read = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            r = tokio::time::timeout(timeouts.keepalive, reader.read(&mut buf)) => r,
        };
        let n = match read {
            Err(_) => {
                if echo_outstanding.is_some() {
                    return Err(Error::Timeout(format!(
                        "no answer to echo within {:?}",
                        timeouts.keepalive
                    )));
                }
                let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
                echo_outstanding = Some(id);
                let msg = codec::request(id, "echo", json!([]));
                let _ = shared.out.send(msg.to_string().into_bytes());
                continue;
            }
            Ok(Err(e)) => return Err(Error::Protocol(format!("read failed: {e}"))),
            Ok(Ok(0)) if scanner.has_partial() => {
                return Err(Error::Protocol(
                    "connection closed mid-message (truncated JSON)".into(),
                ))
            }
            Ok(Ok(0)) => return Err(Error::Closed("connection closed by server".into())),
            Ok(Ok(n)) => n,
        };
        echo_outstanding = None;
        scanner.extend(&buf[..n]);
        while let Some(msg) = scanner.next_message()? {
            match Incoming::classify(msg)? {
                Incoming::Response { id, result, error } => {
                    let reply = shared
                        .pending
                        .lock()
                        .expect("pending lock poisoned")
                        .remove(&id);
                    match reply {
                        Some(Pending::Barrier(ack)) => {
                            let note = Notification {
                                method: "echo".into(),
                                params: result,
                                ack: Some(ack),
                            };
                            if let Err(mpsc::error::SendError(n)) = notes.send(note) {
                                if let Some(ack) = n.ack {
                                    let _ = ack.send(Ok(Json::Null));
                                }
                            }
                        }
                        Some(Pending::Call(reply)) => {
                            let r = if error.is_null() {
                                Ok(result)
                            } else {
                                Err(Error::Rpc {
                                    method: format!("request {id}"),
                                    error,
                                })
                            };
                            let _ = reply.send(r);
                        }
                        None => debug!(id, "response to no pending request (echo or timed out)"),
                    }
                }
                Incoming::Request { id, method, params } if method == "echo" => {
                    let msg = codec::response(id, params);
                    let _ = shared.out.send(msg.to_string().into_bytes());
                }
                Incoming::Request { method, params, .. } => {
                    let _ = notes.send(Notification {
                        method,
                        params,
                        ack: None,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoints() {
        assert_eq!(
            Endpoint::parse("unix:/run/ovn/ovnnb_db.sock").unwrap(),
            Endpoint::Unix("/run/ovn/ovnnb_db.sock".into())
        );
        assert_eq!(
            Endpoint::parse("tcp:127.0.0.1:6641").unwrap(),
            Endpoint::Tcp("127.0.0.1:6641".into())
        );
        assert!(matches!(
            Endpoint::parse("ssl:1.2.3.4:6641"),
            Err(Error::NotSupported(_))
        ));
        assert!(Endpoint::parse("/run/x.sock").is_err());
    }

    #[test]
    fn parses_endpoint_lists_of_cluster_members() {
        assert_eq!(
            Endpoint::parse_list("tcp:10.0.0.1:6641, tcp:10.0.0.2:6641,tcp:[fd00::3]:6641")
                .unwrap(),
            [
                Endpoint::Tcp("10.0.0.1:6641".into()),
                Endpoint::Tcp("10.0.0.2:6641".into()),
                Endpoint::Tcp("[fd00::3]:6641".into()),
            ]
        );
        assert_eq!(
            Endpoint::parse_list("unix:/run/nb.sock").unwrap(),
            [Endpoint::Unix("/run/nb.sock".into())]
        );
        assert!(Endpoint::parse_list("").is_err());
        assert!(Endpoint::parse_list(" , ").is_err());
        let err = Endpoint::parse_list("tcp:10.0.0.1:6641,10.0.0.2:6641").unwrap_err();
        assert!(err.to_string().contains("10.0.0.2:6641"), "{err}");
    }
}
