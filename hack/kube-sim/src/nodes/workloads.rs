//! What runs in a pod once its sandbox is up: the extension point for running DaemonSet,
//! Deployment and StatefulSet pods as local processes (an image → command map), so that the
//! operator's install and upgrade can be tested in kube-sim later. Today a pod is its network
//! sandbox only; a pod whose image is mapped fails loudly with "not supported yet".

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

use super::node::Node;
use super::sandbox::Sandbox;

/// How the kubelet runs a pod's containers.
#[derive(Debug, Clone, Default)]
pub enum ContainerRuntime {
    /// Containers are not run: a pod is its network sandbox (what CNI tests need).
    #[default]
    SandboxOnly,
    /// Containers whose image is a key run as that local command inside the node (in the
    /// pod's network namespace, or the node's for hostNetwork pods). Not supported yet.
    LocalProcesses(BTreeMap<String, Vec<String>>),
}

#[derive(Debug, thiserror::Error)]
#[error("pod {pod}: container {container:?} (image {image:?}): {reason}")]
pub struct RuntimeError {
    pub pod: String,
    pub container: String,
    pub image: String,
    pub reason: String,
}

impl ContainerRuntime {
    /// Starts the pod's containers after its sandbox is up (`sandbox` is `None` for
    /// hostNetwork pods).
    pub async fn start(
        &self,
        _node: &Node,
        pod: &Pod,
        _sandbox: Option<&Sandbox>,
    ) -> Result<(), RuntimeError> {
        let ContainerRuntime::LocalProcesses(commands) = self else {
            return Ok(());
        };
        let containers = pod.spec.iter().flat_map(|s| s.containers.iter());
        for container in containers {
            let image = container.image.clone().unwrap_or_default();
            if commands.contains_key(&image) {
                return Err(RuntimeError {
                    pod: format!(
                        "{}/{}",
                        pod.metadata.namespace.as_deref().unwrap_or_default(),
                        pod.metadata.name.as_deref().unwrap_or_default()
                    ),
                    container: container.name.clone(),
                    image,
                    reason: "running containers as local processes is not supported yet".into(),
                });
            }
        }
        Ok(())
    }

    /// Stops what `start` started, before the sandbox is torn down.
    pub async fn stop(&self, _node: &Node, _pod_uid: &str) -> Result<(), RuntimeError> {
        Ok(())
    }
}
