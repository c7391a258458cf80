//! The CNI plugin entry: runs when `CNI_COMMAND` is set, whatever the arguments.
//!
//! ADD, DEL and CHECK are forwarded to the node daemon (`client.rs`); STATUS asks its health
//! endpoint; GC succeeds at once (the operator collects leaks; Multus never sends GC to a
//! secondary plugin); VERSION is answered here.
//!
//! As another plugin's IPAM (`"ipam": {"type": "kube-ovn"}`, e.g. under macvlan for the NAT
//! gateway's external network), ADD answers the pod's addresses and routes for the provider
//! from the controller's annotations (via the daemon) as an IPAM result, and DEL and CHECK
//! succeed at once: the node holds nothing for it, and the operator releases the address
//! with the pod.
//!
//! DEL choices: a missing or vanished netns is not an error (it is logged and the daemon still
//! removes the host side); a daemon that cannot be reached is code 11, because the runtime will
//! retry and a silent success would leak the port (the operator's GC is the backstop).
//! ADD/CHECK with a netns path that is gone is code 3 (container unknown: nothing to clean up).
//!
//! stdout carries at most one JSON document (the result or the error; DEL, CHECK, STATUS and GC
//! print nothing on success); logs go to stderr or `KUBE_OVN_CNI_LOG`.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use super::client;
use super::config::{self, Command, NetConf};
use super::error::{CniError, ErrorCode};
use super::protocol::{CniResponse, ADD_PATH, CHECK_PATH, DEL_PATH, HEALTH_PATH};
use super::{result, version};

/// Environment variable whose presence switches the binary into plugin mode.
pub const CNI_COMMAND: &str = "CNI_COMMAND";

/// Whether this process was exec'd as a CNI plugin.
pub fn invoked_as_plugin() -> bool {
    std::env::var_os(CNI_COMMAND).is_some()
}

/// Runs one CNI command and returns the process exit code.
pub fn run() -> ExitCode {
    let command = std::env::var(CNI_COMMAND).unwrap_or_default();
    let mut stdin = Vec::new();
    // VERSION may be given no stdin at all; an unreadable stdin is treated as empty.
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let env = |k: &str| std::env::var(k).ok();

    match execute(&command, &stdin, &env) {
        Ok(Some(json)) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(err) => {
            let err = match requested_version(&stdin) {
                Some(v) => err.in_version(&v),
                None => err,
            };
            tracing::error!(command = %command, code = err.code, msg = %err.msg, details = %err.details, "CNI command failed");
            println!("{}", err.to_json());
            ExitCode::FAILURE
        }
    }
}

/// Runs `command` with its stdin and environment; `Some(json)` is printed on stdout.
pub fn execute(
    command: &str,
    stdin: &[u8],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, CniError> {
    let command = Command::parse(command)?;
    if command == Command::Version {
        let info = version::version_info(requested_version(stdin).as_deref());
        return Ok(Some(
            serde_json::to_string(&info).expect("VersionInfo always serializes"),
        ));
    }
    let conf = config::parse_netconf(stdin, command)?;
    match command {
        Command::Gc => {
            tracing::info!("GC: nothing to do here; the operator collects leaked attachments");
            Ok(None)
        }
        Command::Status => block_on(status(&conf)),
        Command::Del | Command::Check if conf.ipam => {
            tracing::debug!(
                command = command.name(),
                "IPAM mode: nothing held on the node"
            );
            Ok(None)
        }
        _ => {
            let mut request = config::build_request(command, &conf, env)?;
            if !request.netns.is_empty() && !Path::new(&request.netns).exists() {
                if command == Command::Del {
                    tracing::warn!(netns = %request.netns, container = %request.container_id,
                        "DEL: netns is gone; cleaning the host side only");
                    request.netns.clear();
                } else {
                    return Err(CniError::new(
                        ErrorCode::UnknownContainer,
                        format!("{}: netns {} does not exist", command.name(), request.netns),
                    )
                    .in_version(&conf.cni_version));
                }
            }
            let body = serde_json::to_vec(&request).expect("CniRequest always serializes");
            block_on(forward(command, &conf, body))
        }
    }
}

async fn forward(
    command: Command,
    conf: &NetConf,
    body: Vec<u8>,
) -> Result<Option<String>, CniError> {
    let socket = conf.server_socket.as_path();
    let path = match command {
        Command::Add => ADD_PATH,
        Command::Del => DEL_PATH,
        _ => CHECK_PATH,
    };
    let answer = client::call(socket, path, Some(body)).await?;
    if command == Command::Add {
        let resp: CniResponse = answer.into_result(socket)?;
        let rendered = if conf.ipam {
            result::render_ipam(&resp, &conf.cni_version)
        } else {
            result::render(&resp, &conf.cni_version)
        };
        Ok(Some(rendered.to_string()))
    } else {
        answer.into_unit(socket).map(|()| None)
    }
}

async fn status(conf: &NetConf) -> Result<Option<String>, CniError> {
    let socket = conf.server_socket.as_path();
    let outcome = match client::call(socket, HEALTH_PATH, None).await {
        Ok(answer) => answer.into_unit(socket),
        Err(e) => Err(e),
    };
    outcome.map(|()| None).map_err(|e| {
        CniError::new(
            ErrorCode::PluginNotAvailable,
            format!(
                "kube-ovn daemon at {} is not ready: {}",
                socket.display(),
                e.msg
            ),
        )
        .with_details(e.details)
    })
}

fn block_on<T>(f: impl std::future::Future<Output = Result<T, CniError>>) -> Result<T, CniError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            CniError::new(ErrorCode::Io, "cannot start the async runtime")
                .with_details(e.to_string())
        })?;
    runtime.block_on(f)
}

/// The `cniVersion` of the config on stdin, if it is a JSON object that has one.
fn requested_version(stdin: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(stdin).ok()?;
    value.get("cniVersion")?.as_str().map(str::to_string)
}
