//! The kubelet's own HTTP endpoint (one for all simulated nodes, on 127.0.0.1): container logs
//! (`/containerLogs/{namespace}/{pod}?container=&follow=&tailLines=&previous=`) and exec
//! (`/exec/{namespace}/{pod}?container=&command=…`, the WebSocket remote-command protocol,
//! `v5.channel.k8s.io` and `v4.channel.k8s.io`). Each Node's
//! `status.daemonEndpoints.kubeletEndpoint.Port` names it; the API server proxies `pods/log`
//! and `pods/exec` here, as kube-apiserver does to a kubelet.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use k8s_openapi::api::core::v1::{Node as NodeObject, Pod};
use kube::api::{Api, Patch, PatchParams};
use kube::ResourceExt;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::containers::Placement;
use super::kubelet::Context;
use super::pod_files;
use super::SimulatorError;

/// The WebSocket subprotocols of `kubectl exec` this endpoint speaks, preferred first.
pub const EXEC_PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
/// v5: the client closed one of its streams (`[255, channel]`).
const CLOSE: u8 = 255;

/// Starts the endpoint and publishes its port on every simulated Node.
pub(crate) async fn serve(
    ctx: Arc<Context>,
) -> Result<tokio::task::JoinHandle<()>, SimulatorError> {
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        SimulatorError::KubeletEndpoint(format!("{what}: {e}"))
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| failed("binding 127.0.0.1", &e))?;
    let port = listener
        .local_addr()
        .map_err(|e| failed("reading its address", &e))?
        .port();
    let nodes: Api<NodeObject> = Api::all(ctx.client.clone());
    let status = json!({"status": {"daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}});
    for node in &ctx.fabric.nodes {
        nodes
            .patch_status(&node.name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .map_err(|e| failed(&format!("publishing it on node {}", node.name), &e))?;
    }
    let app = axum::Router::new()
        .route(
            "/containerLogs/{namespace}/{pod}",
            axum::routing::get(container_logs),
        )
        .route("/exec/{namespace}/{pod}", axum::routing::any(exec))
        .with_state(ctx);
    tracing::info!(port, "kubelet endpoint listening");
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "kubelet endpoint stopped");
        }
    }))
}

fn refused(code: StatusCode, message: String) -> Response {
    (code, message).into_response()
}

/// The pod and the container a request names (the only one, or the default-container
/// annotation's, when none is given).
async fn pod_and_container(
    ctx: &Context,
    namespace: &str,
    name: &str,
    container: Option<&str>,
) -> Result<(Pod, String), Response> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let pod = match api.get_opt(name).await {
        Ok(Some(pod)) => pod,
        Ok(None) => {
            return Err(refused(
                StatusCode::NOT_FOUND,
                format!("pod {namespace}/{name} not found"),
            ))
        }
        Err(e) => return Err(refused(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    };
    let names: Vec<String> = pod
        .spec
        .iter()
        .flat_map(|s| {
            s.init_containers
                .iter()
                .flatten()
                .chain(s.containers.iter())
        })
        .map(|c| c.name.clone())
        .collect();
    let main: Vec<&str> = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .map(|c| c.name.as_str())
        .collect();
    let default = pod
        .annotations()
        .get("kubectl.kubernetes.io/default-container")
        .cloned()
        .or_else(|| (main.len() == 1).then(|| main[0].to_string()));
    let container = match container
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .or(default)
    {
        Some(c) if names.contains(&c) => c,
        Some(c) => {
            return Err(refused(
                StatusCode::BAD_REQUEST,
                format!("container {c} is not valid for pod {name}"),
            ))
        }
        None => {
            return Err(refused(
                StatusCode::BAD_REQUEST,
                format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    main.join(" ")
                ),
            ))
        }
    };
    Ok((pod, container))
}

#[derive(Debug, serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct LogOptions {
    container: Option<String>,
    #[serde(default)]
    follow: bool,
    tail_lines: Option<usize>,
    #[serde(default)]
    previous: bool,
}

async fn container_logs(
    State(ctx): State<Arc<Context>>,
    UrlPath((namespace, name)): UrlPath<(String, String)>,
    Query(options): Query<LogOptions>,
) -> Response {
    let (pod, container) =
        match pod_and_container(&ctx, &namespace, &name, options.container.as_deref()).await {
            Ok(found) => found,
            Err(response) => return response,
        };
    let uid = pod.uid().unwrap_or_default();
    // A pod that runs no processes has empty logs.
    let Some((restart, _)) = ctx.processes.current_run(&uid, &container) else {
        return (StatusCode::OK, "").into_response();
    };
    let run = match options.previous {
        false => restart,
        true => match restart.checked_sub(1) {
            Some(run) => run,
            None => {
                return refused(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "previous terminated container \"{container}\" in pod \"{name}\" not found"
                    ),
                )
            }
        },
    };
    let Some(node) = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .and_then(|n| ctx.fabric.node(n))
    else {
        return refused(
            StatusCode::NOT_FOUND,
            format!("pod {name} is not on a simulated node"),
        );
    };
    let path = pod_files::log_path(&pod_files::pod_dir(node, &pod), &container, run);
    let text = std::fs::read(&path).unwrap_or_default();
    let offset = text.len() as u64;
    let head = Bytes::from(tail(&text, options.tail_lines));
    if !options.follow || options.previous {
        return (StatusCode::OK, head).into_response();
    }
    let follow = Follow {
        ctx: ctx.clone(),
        uid,
        container,
        run,
        path,
        offset,
    };
    let rest = futures::stream::unfold(Some(follow), |state| async move {
        let mut follow = state?;
        let (chunk, more) = follow.next_chunk().await;
        Some((Ok::<Bytes, std::io::Error>(chunk), more.then_some(follow)))
    });
    let stream = futures::stream::once(async { Ok(head) }).chain(rest);
    (StatusCode::OK, Body::from_stream(stream)).into_response()
}

/// The last `lines` lines of `text` (all of it without a limit).
fn tail(text: &[u8], lines: Option<usize>) -> Vec<u8> {
    let Some(lines) = lines else {
        return text.to_vec();
    };
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let starts: Vec<usize> = std::iter::once(0)
        .chain(
            body.iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .map(|(i, _)| i + 1),
        )
        .collect();
    match lines {
        0 => Vec::new(),
        n if n >= starts.len() => text.to_vec(),
        n => text[starts[starts.len() - n]..].to_vec(),
    }
}

/// `follow=true`: what a container run adds to its log, until the run ends.
struct Follow {
    ctx: Arc<Context>,
    uid: String,
    container: String,
    run: u32,
    path: PathBuf,
    offset: u64,
}

impl Follow {
    /// The next bytes, and whether more may come.
    async fn next_chunk(&mut self) -> (Bytes, bool) {
        loop {
            let ended = self.ctx.processes.current_run(&self.uid, &self.container)
                != Some((self.run, true));
            let chunk = self.read_more().await;
            if !chunk.is_empty() || ended {
                return (chunk, !ended);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn read_more(&mut self) -> Bytes {
        let Ok(mut file) = tokio::fs::File::open(&self.path).await else {
            return Bytes::new();
        };
        let mut buffer = Vec::new();
        if tokio::io::AsyncSeekExt::seek(&mut file, std::io::SeekFrom::Start(self.offset))
            .await
            .is_err()
            || file.read_to_end(&mut buffer).await.is_err()
        {
            return Bytes::new();
        }
        self.offset += buffer.len() as u64;
        Bytes::from(buffer)
    }
}

async fn exec(
    State(ctx): State<Arc<Context>>,
    UrlPath((namespace, name)): UrlPath<(String, String)>,
    Query(query): Query<Vec<(String, String)>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let param = |key: &str| {
        query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let flag = |key: &str| param(key).is_some_and(|v| v == "true" || v == "1");
    let command: Vec<String> = query
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.clone())
        .collect();
    let (pod, container) =
        match pod_and_container(&ctx, &namespace, &name, param("container")).await {
            Ok(found) => found,
            Err(response) => return response,
        };
    let Some(placement) = placement(&ctx, &pod, &container) else {
        return refused(
            StatusCode::BAD_REQUEST,
            format!("pod {namespace}/{name} is not running on a simulated node"),
        );
    };
    let session = ExecSession {
        placement,
        command,
        stdin: flag("stdin"),
        tty: flag("tty"),
    };
    upgrade
        .protocols(EXEC_PROTOCOLS)
        .on_upgrade(move |socket| session.run(socket))
}

/// Where `kubectl exec` runs: the container's place for a process pod, else the pod's network
/// namespace (the node's for hostNetwork pods) inside its node.
fn placement(ctx: &Context, pod: &Pod, container: &str) -> Option<Placement> {
    let uid = pod.uid().unwrap_or_default();
    if let Some(placement) = ctx.processes.placement(&uid, container) {
        return Some(placement);
    }
    let running = ctx.running.lock().expect("lock").get(&uid).cloned()?;
    let node = ctx.fabric.node(&running.node)?.clone();
    let netns = running
        .sandbox
        .as_ref()
        .map_or_else(|| node.netns_path(), |s| s.netns_path());
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    Some(Placement {
        node,
        netns,
        pod_ip: std::net::Ipv4Addr::LOCALHOST.into(),
        binds: Vec::new(),
        env: vec![("PATH".into(), path), ("HOSTNAME".into(), pod.name_any())],
    })
}

struct ExecSession {
    placement: Placement,
    command: Vec<String>,
    stdin: bool,
    tty: bool,
}

/// The error-channel `Status` that ends a session.
fn exit_status(outcome: Result<i32, String>) -> serde_json::Value {
    match outcome {
        Ok(0) => json!({"metadata": {}, "status": "Success"}),
        Ok(code) => json!({"metadata": {}, "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}}),
        Err(message) => json!({"metadata": {}, "status": "Failure", "message": message}),
    }
}

impl ExecSession {
    async fn run(self, socket: WebSocket) {
        let (mut sink, mut source) = socket.split();
        let (out, mut outgoing) = mpsc::channel::<Vec<u8>>(64);
        let writer = tokio::spawn(async move {
            while let Some(frame) = outgoing.recv().await {
                if sink
                    .send(Message::Binary(Bytes::from(frame)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            // A normal closure is how client-go sees the end of the error stream (EOF).
            let normal = CloseFrame {
                code: close_code::NORMAL,
                reason: "".into(),
            };
            let _ = sink.send(Message::Close(Some(normal))).await;
        });
        let outcome = self.execute(&out, &mut source).await;
        let status = exit_status(outcome).to_string().into_bytes();
        let _ = out.send([&[ERROR][..], &status].concat()).await;
        drop(out);
        let _ = writer.await;
    }

    /// Runs the command, relaying its streams; its exit code, or why it could not run.
    async fn execute(
        &self,
        out: &mpsc::Sender<Vec<u8>>,
        source: &mut futures::stream::SplitStream<WebSocket>,
    ) -> Result<i32, String> {
        if self.tty {
            return Err("kube-sim: exec with a TTY is not supported yet".into());
        }
        let [program, args @ ..] = self.command.as_slice() else {
            return Err("you must specify at least one command for the container".into());
        };
        let mut child = self
            .placement
            .command(program)?
            .args(args)
            .stdin(if self.stdin {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("exec: {program:?}: {e}"))?;
        let relays = [
            child.stdout.take().map(|s| relay(s, STDOUT, out.clone())),
            child.stderr.take().map(|s| relay(s, STDERR, out.clone())),
        ];
        let mut stdin = child.stdin.take();
        let status = loop {
            tokio::select! {
                status = child.wait() => break status.map_err(|e| e.to_string())?,
                message = source.next() => match message {
                    Some(Ok(Message::Binary(data))) => match data.first() {
                        Some(&STDIN) => {
                            if let Some(pipe) = stdin.as_mut() {
                                let _ = pipe.write_all(&data[1..]).await;
                            }
                        }
                        Some(&CLOSE) if data.get(1) == Some(&STDIN) => stdin = None,
                        _ => {}
                    },
                    Some(Ok(_)) => {}
                    // The client is gone: so is the command (kill_on_drop).
                    None | Some(Err(_)) => return Err("the client closed the connection".into()),
                },
            }
        };
        for relay in relays.into_iter().flatten() {
            let _ = relay.await;
        }
        Ok(std::os::unix::process::ExitStatusExt::signal(&status)
            .map_or_else(|| status.code().unwrap_or(1), |s| 128 + s))
    }
}

/// Copies `stream` to the client on `channel`.
fn relay(
    mut stream: impl AsyncRead + Unpin + Send + 'static,
    channel: u8,
    out: mpsc::Sender<Vec<u8>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if out
                        .send([&[channel][..], &buffer[..n]].concat())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail(b"a\nb\nc\n", Some(2)), b"b\nc\n");
        assert_eq!(tail(b"a\nb\nc", Some(1)), b"c");
        assert_eq!(tail(b"a\nb\n", Some(5)), b"a\nb\n");
        assert_eq!(tail(b"a\nb\n", Some(0)), b"");
        assert_eq!(tail(b"a\nb\n", None), b"a\nb\n");
    }

    #[test]
    fn exit_codes_become_the_status_kubectl_reads() {
        assert_eq!(exit_status(Ok(0))["status"], "Success");
        let failed = exit_status(Ok(3));
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(failed["details"]["causes"][0]["message"], "3");
    }
}
