//! The CNI plugin entry: runs when `CNI_COMMAND` is set, whatever the arguments.
//!
//! stdout carries exactly one JSON document (result or error); logs go to stderr.

use std::io::Read;
use std::process::ExitCode;

use super::error::{CniError, ErrorCode};
use super::version;

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
    let requested = requested_version(&stdin);

    let outcome = match command.as_str() {
        "VERSION" => Ok(
            serde_json::to_string(&version::version_info(requested.as_deref()))
                .expect("VersionInfo always serializes"),
        ),
        "ADD" | "DEL" | "CHECK" | "STATUS" | "GC" => Err(CniError::new(
            ErrorCode::InvalidEnvironment,
            format!("CNI command {command} is not supported yet"),
        )),
        other => Err(CniError::new(
            ErrorCode::InvalidEnvironment,
            format!("unknown CNI_COMMAND {other:?}"),
        )),
    };
    match outcome {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            let err = match requested.as_deref() {
                Some(v) => err.in_version(v),
                None => err,
            };
            tracing::error!(command = %command, code = err.code, msg = %err.msg, "CNI command failed");
            println!("{}", err.to_json());
            ExitCode::FAILURE
        }
    }
}

/// The `cniVersion` of the config on stdin, if it is a JSON object that has one.
fn requested_version(stdin: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(stdin).ok()?;
    value.get("cniVersion")?.as_str().map(str::to_string)
}
