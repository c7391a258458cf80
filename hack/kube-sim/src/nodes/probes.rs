//! Container probes as kubelet runs them: one attempt of an `exec`, `httpGet` or `tcpSocket`
//! probe (HTTP and TCP from inside the pod's network namespace, to the pod's address), and the
//! timing and thresholds of a probe. What a probe result does to the container (Ready, a
//! restart) is decided in `containers`.

use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::containers::Placement;
use super::node::in_netns;

/// A probe's timing and thresholds, with Kubernetes' defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeTiming {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl ProbeTiming {
    pub fn of(probe: &Probe) -> ProbeTiming {
        let seconds =
            |v: Option<i32>, default: i32| Duration::from_secs(v.unwrap_or(default).max(0) as u64);
        let count = |v: Option<i32>, default: i32| v.unwrap_or(default).max(1) as u32;
        ProbeTiming {
            initial_delay: seconds(probe.initial_delay_seconds, 0),
            period: seconds(probe.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: seconds(probe.timeout_seconds, 1).max(Duration::from_secs(1)),
            success_threshold: count(probe.success_threshold, 1),
            failure_threshold: count(probe.failure_threshold, 3),
        }
    }
}

/// Consecutive results turned into a verdict, as kubelet's thresholds do.
#[derive(Debug, Default)]
pub struct ProbeStreak {
    successes: u32,
    failures: u32,
}

impl ProbeStreak {
    /// Records one result; `Some(verdict)` when a threshold is reached.
    pub fn record(&mut self, ok: bool, timing: &ProbeTiming) -> Option<bool> {
        if ok {
            self.failures = 0;
            self.successes += 1;
            (self.successes >= timing.success_threshold).then_some(true)
        } else {
            self.successes = 0;
            self.failures += 1;
            (self.failures >= timing.failure_threshold).then_some(false)
        }
    }
}

/// One attempt; `Err` says why it failed (for the Unhealthy Event).
pub async fn check(probe: &Probe, container: &Container, target: &Placement) -> Result<(), String> {
    let timeout = ProbeTiming::of(probe).timeout;
    let attempt = async {
        if let Some(exec) = &probe.exec {
            return check_exec(exec.command.as_deref().unwrap_or_default(), target).await;
        }
        if let Some(http) = &probe.http_get {
            let port = port_number(&http.port, container)?;
            let host = http
                .host
                .as_deref()
                .and_then(|h| h.parse().ok())
                .unwrap_or(target.pod_ip);
            let path = http.path.as_deref().unwrap_or("/");
            return check_http(target, SocketAddr::new(host, port), path, timeout).await;
        }
        if let Some(tcp) = &probe.tcp_socket {
            let port = port_number(&tcp.port, container)?;
            let host = tcp
                .host
                .as_deref()
                .and_then(|h| h.parse().ok())
                .unwrap_or(target.pod_ip);
            connect(target, SocketAddr::new(host, port), timeout).await?;
            return Ok(());
        }
        Err("grpc probes are not supported yet".to_string())
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("probe timed out after {timeout:?}")))
}

fn port_number(port: &IntOrString, container: &Container) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("invalid port {n}")),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("no container port named {name:?}")),
    }
}

async fn check_exec(command: &[String], target: &Placement) -> Result<(), String> {
    let [program, args @ ..] = command else {
        return Err("exec probe without a command".into());
    };
    let output = target
        .command(program)?
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("exec {program}: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "command {command:?} exited with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout).trim()
    ))
}

/// A TCP connection made from inside the pod's network namespace.
async fn connect(
    target: &Placement,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<tokio::net::TcpStream, String> {
    let netns = target.netns.clone();
    let stream = tokio::task::spawn_blocking(move || {
        in_netns(&netns, move || {
            let stream = TcpStream::connect_timeout(&addr, timeout)?;
            stream.set_nonblocking(true)?;
            Ok(stream)
        })
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("dial tcp {addr}: {e}"))?;
    tokio::net::TcpStream::from_std(stream).map_err(|e| e.to_string())
}

/// HTTP/1.1 GET; a status in 200..400 is success, as for kubelet.
async fn check_http(
    target: &Placement,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<(), String> {
    let mut stream = connect(target, addr, timeout).await?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/1.33\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut head = [0u8; 64];
    let read = stream.read(&mut head).await.map_err(|e| e.to_string())?;
    let line = String::from_utf8_lossy(&head[..read]);
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("GET http://{addr}{path}: not an HTTP response"))?;
    if (200..400).contains(&status) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn thresholds_need_consecutive_results() {
        let probe: Probe =
            serde_json::from_value(json!({"failureThreshold": 2, "successThreshold": 1}))
                .expect("a probe");
        let timing = ProbeTiming::of(&probe);
        assert_eq!(timing.period, Duration::from_secs(10));
        let mut streak = ProbeStreak::default();
        assert_eq!(streak.record(false, &timing), None);
        assert_eq!(streak.record(true, &timing), Some(true));
        assert_eq!(streak.record(false, &timing), None);
        assert_eq!(streak.record(false, &timing), Some(false));
    }
}
