//! Exec'ing CNI plugins the way libcni does for Multus: binary `<type>` found in the CNI path
//! (as the node sees it), `CNI_*` environment, the plugin config on stdin, the result or the
//! CNI error object on stdout. Conflists run plugin by plugin, each getting the previous
//! result as `prevResult`; DEL runs them in reverse.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::io::AsyncWriteExt;

use super::delegate::{cni_args, Delegate, PodIdentity};
use super::node::Node;

/// One sandbox's plugin calls on one node.
#[derive(Debug, Clone)]
pub struct Invocation<'a> {
    pub node: &'a Node,
    pub pod: &'a PodIdentity,
    pub container_id: &'a str,
    /// The pod's network namespace path (`CNI_NETNS`).
    pub netns: &'a Path,
    /// Directories searched for `<type>`, as the node sees them; also `CNI_PATH`.
    pub cni_path: &'a [PathBuf],
    pub timeout: Duration,
}

/// A failed plugin call, worded like kubelet/Multus report it.
#[derive(Debug, thiserror::Error, Clone)]
#[error("plugin type={plugin:?} name={network:?} failed ({command}): {message}")]
pub struct CniError {
    pub plugin: String,
    pub network: String,
    pub command: &'static str,
    pub message: String,
}

impl Invocation<'_> {
    /// ADD: returns the final result (of the last plugin of a conflist), as printed.
    pub async fn add(&self, delegate: &Delegate) -> Result<Value, CniError> {
        let mut prev: Option<Value> = None;
        for plugin in delegate.plugins() {
            let stdin = delegate.plugin_stdin(plugin, prev.as_ref());
            let out = self
                .exec("ADD", delegate, plugin, &stdin, &delegate.add_args)
                .await?;
            let result: Value = serde_json::from_slice(&out).map_err(|e| {
                self.error(
                    "ADD",
                    delegate,
                    plugin,
                    format!(
                        "result is not JSON ({e}): {}",
                        String::from_utf8_lossy(&out)
                    ),
                )
            })?;
            prev = Some(result);
        }
        prev.ok_or_else(|| CniError {
            plugin: String::new(),
            network: delegate.network_name.clone(),
            command: "ADD",
            message: "the network config has no plugins".into(),
        })
    }

    /// DEL, plugins in reverse; `prev_result` (the cached ADD result) is passed when the
    /// config version allows it.
    pub async fn del(
        &self,
        delegate: &Delegate,
        prev_result: Option<&Value>,
    ) -> Result<(), CniError> {
        let prev = prev_result.filter(|_| delegate.del_gets_prev_result());
        for plugin in delegate.plugins().into_iter().rev() {
            let stdin = delegate.plugin_stdin(plugin, prev);
            self.exec("DEL", delegate, plugin, &stdin, &[]).await?;
        }
        Ok(())
    }

    fn error(
        &self,
        command: &'static str,
        delegate: &Delegate,
        plugin: &Map<String, Value>,
        message: String,
    ) -> CniError {
        CniError {
            plugin: plugin_type(plugin).to_string(),
            network: delegate.network_name.clone(),
            command,
            message,
        }
    }

    fn find_plugin(&self, plugin_type: &str) -> Option<PathBuf> {
        self.cni_path
            .iter()
            .map(|dir| dir.join(plugin_type))
            .find(|inside| self.node.host_path(inside).is_file())
    }

    async fn exec(
        &self,
        command: &'static str,
        delegate: &Delegate,
        plugin: &Map<String, Value>,
        stdin: &Value,
        extra_args: &[(String, String)],
    ) -> Result<Vec<u8>, CniError> {
        let fail = |message: String| self.error(command, delegate, plugin, message);
        let plugin_type = plugin_type(plugin);
        if plugin_type.is_empty() || plugin_type.contains('/') {
            return Err(fail(format!("invalid plugin type {plugin_type:?}")));
        }
        let path_list = self
            .cni_path
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>();
        let binary = self.find_plugin(plugin_type).ok_or_else(|| {
            fail(format!(
                "failed to find plugin {plugin_type:?} in path {path_list:?}"
            ))
        })?;
        let mut child = self
            .node
            .command(&binary)
            .map_err(|e| fail(e.to_string()))?
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", self.container_id)
            .env("CNI_NETNS", self.netns)
            .env("CNI_IFNAME", &delegate.ifname)
            .env(
                "CNI_ARGS",
                cni_args(self.pod, self.container_id, extra_args),
            )
            .env("CNI_PATH", path_list.join(":"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| fail(format!("exec {}: {e}", binary.display())))?;
        let input = serde_json::to_vec(stdin).expect("a JSON value always serializes");
        if let Some(mut pipe) = child.stdin.take() {
            // A plugin may exit without reading stdin; its exit status tells what happened.
            let _ = pipe.write_all(&input).await;
        }
        let output = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .map_err(|_| fail(format!("timed out after {:?}", self.timeout)))?
            .map_err(|e| fail(format!("waiting for {}: {e}", binary.display())))?;
        tracing::debug!(
            node = %self.node.name, plugin = plugin_type, command, ifname = %delegate.ifname,
            status = %output.status, "CNI plugin returned"
        );
        if output.status.success() {
            return Ok(output.stdout);
        }
        Err(fail(error_message(
            &output.stdout,
            &output.stderr,
            output.status,
        )))
    }
}

fn plugin_type(plugin: &Map<String, Value>) -> &str {
    plugin
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The CNI error object's `msg` (and `details`), else whatever the plugin printed.
fn error_message(stdout: &[u8], stderr: &[u8], status: std::process::ExitStatus) -> String {
    if let Ok(error) = serde_json::from_slice::<Value>(stdout) {
        if let Some(msg) = error.get("msg").and_then(Value::as_str) {
            let code = error
                .get("code")
                .and_then(Value::as_u64)
                .unwrap_or_default();
            return match error
                .get("details")
                .and_then(Value::as_str)
                .filter(|d| !d.is_empty())
            {
                Some(details) => format!("{msg}; {details} (code {code})"),
                None => format!("{msg} (code {code})"),
            };
        }
    }
    let text = [stdout, stderr]
        .iter()
        .map(|b| String::from_utf8_lossy(b).trim().to_string())
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    if text.is_empty() {
        format!("exited with {status} and printed nothing")
    } else {
        text
    }
}
