//! A minimal client for the OVS/OVN `unixctl` control socket (JSON-RPC 1.0 over a unix
//! socket, one request, one reply), used by the readiness check to ask ovn-controller
//! `connection-status`. The socket of a daemon is `<run_dir>/<name>.<pid>.ctl`, its pid in
//! `<run_dir>/<name>.pid`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum UnixctlError {
    #[error("control socket {path}: {reason}")]
    Socket { path: PathBuf, reason: String },
    #[error("{command} via {path}: {reason}")]
    Reply {
        command: String,
        path: PathBuf,
        reason: String,
    },
}

/// The control socket of daemon `name` whose pidfile is in `run_dir`.
pub fn control_socket(run_dir: &Path, name: &str) -> Result<PathBuf, UnixctlError> {
    let pidfile = run_dir.join(format!("{name}.pid"));
    let text = std::fs::read_to_string(&pidfile).map_err(|e| UnixctlError::Socket {
        path: pidfile.clone(),
        reason: format!("reading the pidfile: {e} (is {name} running?)"),
    })?;
    let pid: u32 = text.trim().parse().map_err(|_| UnixctlError::Socket {
        path: pidfile.clone(),
        reason: format!("pidfile holds {:?}, not a pid", text.trim()),
    })?;
    Ok(run_dir.join(format!("{name}.{pid}.ctl")))
}

/// Runs `command` (no arguments) on ovn-controller and returns its textual answer.
pub async fn ovn_controller_call(run_dir: &Path, command: &str) -> Result<String, UnixctlError> {
    let path = control_socket(run_dir, "ovn-controller")?;
    call(&path, command, &[]).await
}

/// Runs `command args…` on the daemon listening at `path`.
pub async fn call(path: &Path, command: &str, args: &[&str]) -> Result<String, UnixctlError> {
    let socket_err = |reason: String| UnixctlError::Socket {
        path: path.to_path_buf(),
        reason,
    };
    let exchange = async {
        let mut stream = UnixStream::connect(path)
            .await
            .map_err(|e| socket_err(format!("connect: {e}")))?;
        let request = json!({"method": command, "params": args, "id": 0});
        stream
            .write_all(request.to_string().as_bytes())
            .await
            .map_err(|e| socket_err(format!("write: {e}")))?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|e| socket_err(format!("read: {e}")))?;
            if n == 0 {
                return Err(socket_err("closed before a reply".into()));
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Ok(reply) = serde_json::from_slice::<Value>(&buf) {
                return Ok(reply);
            }
        }
    };
    let reply = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| socket_err(format!("no reply within {TIMEOUT:?}")))??;
    let reply_err = |reason: String| UnixctlError::Reply {
        command: command.to_string(),
        path: path.to_path_buf(),
        reason,
    };
    match (reply.get("error"), reply.get("result")) {
        (Some(e), _) if !e.is_null() => Err(reply_err(e.as_str().unwrap_or("").trim().to_string())),
        (_, Some(Value::String(s))) => Ok(s.clone()),
        _ => Err(reply_err(format!("unexpected reply {reply}"))),
    }
}
