//! The shim's side of the daemon socket: one HTTP/1 request over a unix stream, with bounded
//! waits, and the daemon's answer turned into a value or the CNI error it carries.
//!
//! A missing socket, a refused connection or a daemon that does not answer in time is code 11
//! ("try again later") naming the socket; a daemon's own CNI error passes through unchanged.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use super::error::{CniError, ErrorCode};

/// How long the shim waits for the socket to accept.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the shim waits for an answer. ADD waits on the daemon's own deadlines (annotations,
/// `ovn-installed`), which are shorter than this; past it, the daemon is considered hung.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(150);

/// The daemon's answer: its status and body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Answer {
    /// The body as `T` on 2xx; else the CNI error the daemon sent (or code 11 describing the answer).
    pub fn into_result<T: serde::de::DeserializeOwned>(self, socket: &Path) -> Result<T, CniError> {
        if self.status.is_success() {
            serde_json::from_slice(&self.body).map_err(|e| {
                CniError::new(
                    ErrorCode::Decode,
                    format!(
                        "daemon at {} answered with an unreadable body",
                        socket.display()
                    ),
                )
                .with_details(e.to_string())
            })
        } else {
            Err(self.into_error(socket))
        }
    }

    /// Success without a body, or the daemon's error.
    pub fn into_unit(self, socket: &Path) -> Result<(), CniError> {
        if self.status.is_success() {
            Ok(())
        } else {
            Err(self.into_error(socket))
        }
    }

    fn into_error(self, socket: &Path) -> CniError {
        match serde_json::from_slice::<CniError>(&self.body) {
            Ok(e) if e.code != 0 => e,
            _ => CniError::new(
                ErrorCode::TryAgainLater,
                format!("daemon at {} answered {}", socket.display(), self.status),
            )
            .with_details(String::from_utf8_lossy(&self.body).into_owned()),
        }
    }
}

/// Sends one request to the daemon at `socket`; `body` is JSON for POST, `None` for GET.
pub async fn call(socket: &Path, path: &str, body: Option<Vec<u8>>) -> Result<Answer, CniError> {
    call_with(socket, path, body, CONNECT_TIMEOUT, RESPONSE_TIMEOUT).await
}

/// [`call`] with explicit waits.
pub async fn call_with(
    socket: &Path,
    path: &str,
    body: Option<Vec<u8>>,
    connect_timeout: Duration,
    response_timeout: Duration,
) -> Result<Answer, CniError> {
    let unavailable = |what: String, details: String| {
        CniError::new(
            ErrorCode::TryAgainLater,
            format!(
                "kube-ovn daemon socket {}: {what}; try again later",
                socket.display()
            ),
        )
        .with_details(details)
    };
    let stream = match tokio::time::timeout(connect_timeout, UnixStream::connect(socket)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Err(unavailable(
                "cannot connect (is the node daemon running?)".into(),
                e.to_string(),
            ))
        }
        Err(_) => {
            return Err(unavailable(
                format!("no connection within {connect_timeout:?}"),
                String::new(),
            ))
        }
    };
    let exchange = async {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let conn = tokio::spawn(conn);
        let method = if body.is_some() {
            Method::POST
        } else {
            Method::GET
        };
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "kube-ovn-daemon")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .expect("a request from a fixed path and method is well-formed");
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        conn.abort();
        Ok::<_, hyper::Error>(Answer { status, body })
    };
    match tokio::time::timeout(response_timeout, exchange).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => Err(unavailable(format!("request {path} failed"), e.to_string())),
        Err(_) => Err(unavailable(
            format!("no answer to {path} within {response_timeout:?}"),
            String::new(),
        )),
    }
}
