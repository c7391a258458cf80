//! What a process pod sees besides its network: its directory on the node's state directory
//! (`pods/<namespace>_<name>_<uid>/`: volumes, container logs, a kubeconfig), its volumes
//! (`emptyDir`, `hostPath` resolved inside the node, ConfigMap and Secret as files) as bind
//! mounts per container, and each container's environment (`env` with the downward API and
//! ConfigMap/Secret keys, `envFrom`, `$(VAR)` expansion, API access through `KUBECONFIG`).
//! Starting the processes lives in `containers`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVar, KeyToPath, Pod, Secret, Volume};
use kube::api::Api;
use kube::{Client, ResourceExt};

use super::node::Node;

/// A failure preparing a pod's files or environment, worded for the pod's Event.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct PodFilesError {
    pub what: String,
    pub reason: String,
}

fn failed(what: impl Into<String>, reason: impl ToString) -> PodFilesError {
    PodFilesError {
        what: what.into(),
        reason: reason.to_string(),
    }
}

/// The pod's directory on the host (under its node's state directory).
pub fn pod_dir(node: &Node, pod: &Pod) -> PathBuf {
    node.state_dir.join("pods").join(format!(
        "{}_{}_{}",
        pod.namespace().unwrap_or_default(),
        pod.name_any(),
        pod.uid().unwrap_or_default()
    ))
}

/// The log of run `restart` (0 for the first) of `container`.
pub fn log_path(pod_dir: &Path, container: &str, restart: u32) -> PathBuf {
    pod_dir
        .join("logs")
        .join(container)
        .join(format!("{restart}.log"))
}

/// The pod's addresses as the downward API gives them.
#[derive(Debug, Clone, Default)]
pub struct PodAddresses {
    pub host_ip: String,
    pub pod_ips: Vec<String>,
}

/// Host paths of the pod's volumes by name, made ready (directories created, ConfigMap and
/// Secret keys written).
pub async fn prepare_volumes(
    client: &Client,
    node: &Node,
    pod: &Pod,
    dir: &Path,
) -> Result<BTreeMap<String, PathBuf>, PodFilesError> {
    let namespace = pod.namespace().unwrap_or_default();
    let mut paths = BTreeMap::new();
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let what = || format!("volume {:?}", volume.name);
        let own = dir.join("volumes").join(&volume.name);
        let path = match volume_source(volume) {
            VolumeSource::EmptyDir => {
                std::fs::create_dir_all(&own).map_err(|e| failed(what(), e))?;
                own
            }
            VolumeSource::HostPath { path, missing } => {
                let host = node.host_path(Path::new(&path));
                if !host.exists() {
                    let created = match missing {
                        Missing::CreateDirectory => std::fs::create_dir_all(&host),
                        Missing::CreateFile => host
                            .parent()
                            .map_or(Ok(()), std::fs::create_dir_all)
                            .and_then(|()| std::fs::write(&host, b"")),
                        Missing::Refuse => {
                            let reason =
                                format!("hostPath type check failed: {path} does not exist");
                            return Err(failed(what(), reason));
                        }
                    };
                    created.map_err(|e| failed(what(), e))?;
                }
                host
            }
            VolumeSource::ConfigMap {
                name,
                optional,
                items,
            } => {
                let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
                let files = match api.get_opt(&name).await.map_err(|e| failed(what(), e))? {
                    Some(cm) => {
                        let mut files: BTreeMap<String, Vec<u8>> = cm
                            .data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, v.into_bytes()))
                            .collect();
                        files.extend(
                            cm.binary_data
                                .unwrap_or_default()
                                .into_iter()
                                .map(|(k, v)| (k, v.0)),
                        );
                        files
                    }
                    None if optional => BTreeMap::new(),
                    None => return Err(failed(what(), format!("configmap {name:?} not found"))),
                };
                write_files(&own, &files, &items, optional).map_err(|e| failed(what(), e))?;
                own
            }
            VolumeSource::Secret {
                name,
                optional,
                items,
            } => {
                let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
                let files = match api.get_opt(&name).await.map_err(|e| failed(what(), e))? {
                    Some(secret) => secret
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0))
                        .chain(
                            secret
                                .string_data
                                .unwrap_or_default()
                                .into_iter()
                                .map(|(k, v)| (k, v.into_bytes())),
                        )
                        .collect(),
                    None if optional => BTreeMap::new(),
                    None => return Err(failed(what(), format!("secret {name:?} not found"))),
                };
                write_files(&own, &files, &items, optional).map_err(|e| failed(what(), e))?;
                own
            }
            VolumeSource::Unsupported => {
                return Err(failed(
                    what(),
                    "only emptyDir, hostPath, configMap and secret volumes are supported yet",
                ))
            }
        };
        paths.insert(volume.name.clone(), path);
    }
    Ok(paths)
}

enum VolumeSource {
    EmptyDir,
    HostPath {
        path: String,
        missing: Missing,
    },
    ConfigMap {
        name: String,
        optional: bool,
        items: Vec<KeyToPath>,
    },
    Secret {
        name: String,
        optional: bool,
        items: Vec<KeyToPath>,
    },
    Unsupported,
}

/// What a hostPath volume's `type` says about a path that does not exist.
enum Missing {
    /// `""` and `DirectoryOrCreate` (a runtime makes the directory for `""` too).
    CreateDirectory,
    CreateFile,
    /// `Directory`, `File`, `Socket`, `CharDevice`, `BlockDevice`.
    Refuse,
}

fn volume_source(volume: &Volume) -> VolumeSource {
    if volume.empty_dir.is_some() {
        return VolumeSource::EmptyDir;
    }
    if let Some(host) = &volume.host_path {
        let missing = match host.type_.as_deref().unwrap_or_default() {
            "" | "DirectoryOrCreate" => Missing::CreateDirectory,
            "FileOrCreate" => Missing::CreateFile,
            _ => Missing::Refuse,
        };
        return VolumeSource::HostPath {
            path: host.path.clone(),
            missing,
        };
    }
    if let Some(cm) = &volume.config_map {
        return VolumeSource::ConfigMap {
            name: cm.name.clone(),
            optional: cm.optional.unwrap_or(false),
            items: cm.items.clone().unwrap_or_default(),
        };
    }
    if let Some(secret) = &volume.secret {
        return VolumeSource::Secret {
            name: secret.secret_name.clone().unwrap_or_default(),
            optional: secret.optional.unwrap_or(false),
            items: secret.items.clone().unwrap_or_default(),
        };
    }
    VolumeSource::Unsupported
}

/// Writes every key as a file named after it, or with `items` only the listed keys at their
/// paths (a listed key that is missing is an error unless the volume is optional).
fn write_files(
    dir: &Path,
    files: &BTreeMap<String, Vec<u8>>,
    items: &[KeyToPath],
    optional: bool,
) -> Result<(), String> {
    let io = |e: std::io::Error| e.to_string();
    std::fs::create_dir_all(dir).map_err(io)?;
    let selected: Vec<(&str, &Vec<u8>)> = match items {
        [] => files.iter().map(|(k, v)| (k.as_str(), v)).collect(),
        items => {
            let mut selected = Vec::new();
            for item in items {
                match files.get(&item.key) {
                    Some(content) => selected.push((item.path.as_str(), content)),
                    None if optional => {}
                    None => return Err(format!("key {:?} is missing", item.key)),
                }
            }
            selected
        }
    };
    for (path, content) in selected {
        let file = dir.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::write(file, content).map_err(io)?;
    }
    Ok(())
}

/// The container's bind mounts (host path, path inside the node); a subPath of a volume
/// that does not exist yet is created as a directory, as kubelet does.
pub fn container_binds(
    container: &Container,
    volumes: &BTreeMap<String, PathBuf>,
) -> Result<Vec<(PathBuf, PathBuf)>, PodFilesError> {
    let mut binds = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let what = || {
            format!(
                "container {:?}: volume mount {:?}",
                container.name, mount.mount_path
            )
        };
        let volume = volumes
            .get(&mount.name)
            .ok_or_else(|| failed(what(), format!("no volume {:?} in the pod", mount.name)))?;
        let source = match mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => volume.join(sub),
            None => volume.clone(),
        };
        if !source.exists() {
            std::fs::create_dir_all(&source).map_err(|e| failed(what(), e))?;
        }
        binds.push((source, PathBuf::from(&mount.mount_path)));
    }
    Ok(binds)
}

/// Mount points kube-sim had to create (a bind needs one, and a container shares the node's
/// file system), with how many running pods use each: the last pod to stop removes it, so
/// nothing is left on the host.
#[derive(Debug, Default)]
pub struct MountPoints(Mutex<HashMap<PathBuf, usize>>);

impl MountPoints {
    /// Makes sure every bind target exists (as the node sees it: a target under a
    /// node-private directory is created there); returns the created ones this pod holds.
    pub fn claim(
        &self,
        node: &Node,
        binds: &[(PathBuf, PathBuf)],
    ) -> Result<Vec<PathBuf>, PodFilesError> {
        let mut created = self.0.lock().expect("lock");
        let mut held = Vec::new();
        for (source, target) in binds {
            let host = node.host_path(target);
            if let Some(users) = created.get_mut(&host) {
                *users += 1;
                held.push(host);
                continue;
            }
            if host.exists() {
                continue;
            }
            let made = if source.is_file() {
                host.parent()
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|()| std::fs::write(&host, b""))
            } else {
                std::fs::create_dir_all(&host)
            };
            made.map_err(|e| failed(format!("mount point {}", target.display()), e))?;
            created.insert(host.clone(), 1);
            held.push(host);
        }
        Ok(held)
    }

    /// Gives back what `claim` returned; unused mount points are removed.
    pub fn release(&self, held: &[PathBuf]) {
        let mut created = self.0.lock().expect("lock");
        for host in held {
            let Some(users) = created.get_mut(host) else {
                continue;
            };
            *users -= 1;
            if *users > 0 {
                continue;
            }
            created.remove(host);
            let removed = match host.is_dir() {
                true => std::fs::remove_dir(host),
                false => std::fs::remove_file(host),
            };
            if let Err(e) = removed {
                tracing::warn!(path = %host.display(), error = %e, "removing a mount point kube-sim made");
            }
        }
    }
}

/// A kubeconfig for processes of the pod: the API server's own address, which kube-sim makes
/// reachable inside the pod's (and every node's) network namespace.
pub fn write_kubeconfig(dir: &Path, api: SocketAddr, namespace: &str) -> std::io::Result<PathBuf> {
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kube-sim\n  cluster:\n    server: http://{api}\n\
         contexts:\n- name: kube-sim\n  context:\n    cluster: kube-sim\n    user: kube-sim\n    namespace: {namespace}\n\
         current-context: kube-sim\nusers:\n- name: kube-sim\n  user: {{}}\n"
    );
    std::fs::create_dir_all(dir)?;
    std::fs::write(&path, text)?;
    Ok(path)
}

/// The container's environment, in order: what every container gets (`PATH`, `HOSTNAME`, API
/// access), `envFrom`, then `env` (later entries win, `$(VAR)` refers to earlier ones).
pub async fn container_env(
    client: &Client,
    pod: &Pod,
    container: &Container,
    addresses: &PodAddresses,
    base: &[(String, String)],
) -> Result<Vec<(String, String)>, PodFilesError> {
    let namespace = pod.namespace().unwrap_or_default();
    let what = |name: &str| format!("container {:?}: env {name}", container.name);
    let mut env: Vec<(String, String)> = base.to_vec();
    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.clone().unwrap_or_default();
        let entries: BTreeMap<String, String> = if let Some(cm) = &source.config_map_ref {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
            match api
                .get_opt(&cm.name)
                .await
                .map_err(|e| failed(what("from"), e))?
            {
                Some(cm) => cm.data.unwrap_or_default(),
                None if cm.optional.unwrap_or(false) => BTreeMap::new(),
                None => {
                    return Err(failed(
                        what("from"),
                        format!("configmap {:?} not found", cm.name),
                    ))
                }
            }
        } else if let Some(secret) = &source.secret_ref {
            let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
            match api
                .get_opt(&secret.name)
                .await
                .map_err(|e| failed(what("from"), e))?
            {
                Some(s) => s
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                    .collect(),
                None if secret.optional.unwrap_or(false) => BTreeMap::new(),
                None => {
                    return Err(failed(
                        what("from"),
                        format!("secret {:?} not found", secret.name),
                    ))
                }
            }
        } else {
            BTreeMap::new()
        };
        for (key, value) in entries {
            set(&mut env, format!("{prefix}{key}"), value);
        }
    }
    for var in container.env.iter().flatten() {
        let value = match &var.value_from {
            None => expand(var.value.as_deref().unwrap_or_default(), &env),
            Some(_) => match env_value_from(client, pod, var, addresses).await? {
                Some(value) => value,
                None => continue,
            },
        };
        set(&mut env, var.name.clone(), value);
    }
    Ok(env)
}

fn set(env: &mut Vec<(String, String)>, name: String, value: String) {
    env.retain(|(n, _)| *n != name);
    env.push((name, value));
}

/// `valueFrom`: the downward API, a ConfigMap key or a Secret key (`None`: an optional key
/// that is missing, so the variable is not set).
async fn env_value_from(
    client: &Client,
    pod: &Pod,
    var: &EnvVar,
    addresses: &PodAddresses,
) -> Result<Option<String>, PodFilesError> {
    let what = format!("env {}", var.name);
    let Some(from) = &var.value_from else {
        return Ok(None);
    };
    let namespace = pod.namespace().unwrap_or_default();
    if let Some(field) = &from.field_ref {
        return downward_field(pod, &field.field_path, addresses)
            .map(Some)
            .ok_or_else(|| {
                failed(
                    what,
                    format!("fieldRef {:?} is not supported", field.field_path),
                )
            });
    }
    if let Some(key) = &from.config_map_key_ref {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
        let cm = api.get_opt(&key.name).await.map_err(|e| failed(&what, e))?;
        let value = cm
            .and_then(|cm| cm.data)
            .and_then(|d| d.get(&key.key).cloned());
        return match value {
            Some(v) => Ok(Some(v)),
            None if key.optional.unwrap_or(false) => Ok(None),
            None => Err(failed(
                what,
                format!("configmap {:?} has no key {:?}", key.name, key.key),
            )),
        };
    }
    if let Some(key) = &from.secret_key_ref {
        let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
        let secret = api.get_opt(&key.name).await.map_err(|e| failed(&what, e))?;
        let value = secret.and_then(|s| s.data).and_then(|d| {
            d.get(&key.key)
                .map(|v| String::from_utf8_lossy(&v.0).into_owned())
        });
        return match value {
            Some(v) => Ok(Some(v)),
            None if key.optional.unwrap_or(false) => Ok(None),
            None => Err(failed(
                what,
                format!("secret {:?} has no key {:?}", key.name, key.key),
            )),
        };
    }
    Err(failed(what, "resourceFieldRef is not supported yet"))
}

/// A downward API `fieldRef` value.
pub fn downward_field(pod: &Pod, path: &str, addresses: &PodAddresses) -> Option<String> {
    let spec = pod.spec.as_ref();
    let lookup = |map: &BTreeMap<String, String>, inner: &str| {
        let key = inner.trim_start_matches("['").trim_end_matches("']");
        map.get(key).cloned().unwrap_or_default()
    };
    Some(match path {
        "metadata.name" => pod.name_any(),
        "metadata.namespace" => pod.namespace().unwrap_or_default(),
        "metadata.uid" => pod.uid().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into()),
        "status.hostIP" => addresses.host_ip.clone(),
        "status.hostIPs" => addresses.host_ip.clone(),
        "status.podIP" => addresses.pod_ips.first().cloned().unwrap_or_default(),
        "status.podIPs" => addresses.pod_ips.join(","),
        other => {
            if let Some(inner) = other.strip_prefix("metadata.labels") {
                lookup(pod.labels(), inner)
            } else if let Some(inner) = other.strip_prefix("metadata.annotations") {
                lookup(pod.annotations(), inner)
            } else {
                return None;
            }
        }
    })
}

/// Kubernetes' `$(VAR)` expansion: references to defined variables are replaced, `$$` is a
/// literal `$`, anything else is left as written.
pub fn expand(text: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some((name, tail)) = after.strip_prefix('(').and_then(|a| a.split_once(')')) {
            match env.iter().rev().find(|(n, _)| n == name) {
                Some((_, value)) => out.push_str(value),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = tail;
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expansion_replaces_defined_variables_only() {
        let env = vec![("A".to_string(), "1".to_string())];
        assert_eq!(expand("x$(A)y", &env), "x1y");
        assert_eq!(expand("$(B) $$(A) $", &env), "$(B) $(A) $");
    }

    #[test]
    fn downward_api_fields() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "web"}},
            "spec": {"nodeName": "node-1", "containers": []}
        }))
        .expect("a pod");
        let addresses = PodAddresses {
            host_ip: "172.31.0.10".into(),
            pod_ips: vec!["10.244.0.5".into()],
        };
        let field = |path| downward_field(&pod, path, &addresses);
        assert_eq!(field("spec.nodeName").as_deref(), Some("node-1"));
        assert_eq!(field("status.podIP").as_deref(), Some("10.244.0.5"));
        assert_eq!(field("status.hostIP").as_deref(), Some("172.31.0.10"));
        assert_eq!(field("metadata.namespace").as_deref(), Some("ns"));
        assert_eq!(field("metadata.labels['app']").as_deref(), Some("web"));
        assert_eq!(field("spec.unknown"), None);
    }
}
