//! Which pods run processes: the container runtime setting (sandbox only, or local processes
//! from an image → command map) and the pure rules that turn a container spec into the argv
//! of its process. Running, restarting and stopping those processes lives in `containers`;
//! their files and environment in `pod_files`.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{Container, Pod};

/// Image → the command that stands for the image's entrypoint (program, then arguments).
pub type ImageMap = BTreeMap<String, Vec<String>>;

/// How the kubelet runs a pod's containers.
#[derive(Debug, Clone, Default)]
pub enum ContainerRuntime {
    /// Containers are not run: a pod is its network sandbox (what CNI tests need).
    #[default]
    SandboxOnly,
    /// Containers whose image is a key run as that local command inside the node (in the
    /// pod's network namespace, or the node's for hostNetwork pods). A pod none of whose
    /// images is mapped is its sandbox only, as with `SandboxOnly`.
    LocalProcesses(ImageMap),
}

impl ContainerRuntime {
    /// Local processes for the images of `entries` (`IMAGE=PROGRAM [ARG…]`, see
    /// [`parse_image_map_entry`]).
    pub fn from_entries<'a>(
        entries: impl IntoIterator<Item = &'a str>,
    ) -> Result<ContainerRuntime, String> {
        let map = entries
            .into_iter()
            .map(parse_image_map_entry)
            .collect::<Result<ImageMap, String>>()?;
        Ok(ContainerRuntime::LocalProcesses(map))
    }

    fn images(&self) -> Option<&ImageMap> {
        match self {
            ContainerRuntime::SandboxOnly => None,
            ContainerRuntime::LocalProcesses(map) => Some(map),
        }
    }

    /// Whether `pod` runs processes (at least one of its containers' images is mapped).
    pub fn runs(&self, pod: &Pod) -> bool {
        let Some(images) = self.images() else {
            return false;
        };
        all_containers(pod).any(|c| c.image.as_ref().is_some_and(|i| images.contains_key(i)))
    }

    /// The argv of `container`'s process, `None` if its image is not mapped (such a container
    /// of a process pod is reported running without a process, like a pause container).
    pub fn argv(&self, container: &Container) -> Option<Vec<String>> {
        let entrypoint = self.images()?.get(container.image.as_ref()?)?;
        Some(container_argv(entrypoint, container))
    }
}

/// Init containers, then containers.
pub(crate) fn all_containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    pod.spec.iter().flat_map(|s| {
        s.init_containers
            .iter()
            .flatten()
            .chain(s.containers.iter())
    })
}

/// `IMAGE=PROGRAM [ARG…]` (the image may hold `:` and `/`; the first `=` ends it). A relative
/// program path is made absolute, as processes may run from another directory.
pub fn parse_image_map_entry(entry: &str) -> Result<(String, Vec<String>), String> {
    let (image, command) = entry
        .split_once('=')
        .ok_or_else(|| format!("image map entry {entry:?}: expected IMAGE=PROGRAM"))?;
    let mut argv: Vec<String> = command.split_whitespace().map(str::to_string).collect();
    let Some(program) = argv.first_mut() else {
        return Err(format!("image map entry {entry:?}: no program"));
    };
    if program.contains('/') {
        let absolute = std::path::absolute(Path::new(program.as_str()))
            .map_err(|e| format!("image map entry {entry:?}: {e}"))?;
        *program = absolute.display().to_string();
    }
    let image = image.trim();
    if image.is_empty() {
        return Err(format!("image map entry {entry:?}: no image"));
    }
    Ok((image.to_string(), argv))
}

/// Kubernetes' rule with the mapped command as the image's ENTRYPOINT (and no CMD): `command`
/// replaces the entrypoint, `args` follow. A `command` whose program has the file name of the
/// mapped program means the image's own binary (`/usr/bin/kube-ovn` in a manifest is the
/// mapped `target/debug/kube-ovn`); any other program is taken from the node (`sh`, `ip`).
pub fn container_argv(entrypoint: &[String], container: &Container) -> Vec<String> {
    let mut argv = match container.command.as_deref() {
        Some([program, rest @ ..]) => {
            let own = entrypoint
                .first()
                .filter(|mapped| file_name(mapped) == file_name(program));
            let mut argv = vec![own.unwrap_or(program).clone()];
            argv.extend(rest.iter().cloned());
            argv
        }
        _ => entrypoint.to_vec(),
    };
    argv.extend(container.args.iter().flatten().cloned());
    argv
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container(spec: serde_json::Value) -> Container {
        serde_json::from_value(spec).expect("a container")
    }

    #[test]
    fn entries_split_at_the_first_equals_sign_and_make_paths_absolute() {
        let (image, argv) =
            parse_image_map_entry("docker.io/kubeovn/kube-ovn:v1.0=target/debug/kube-ovn")
                .expect("valid");
        assert_eq!(image, "docker.io/kubeovn/kube-ovn:v1.0");
        assert!(argv[0].starts_with('/') && argv[0].ends_with("/target/debug/kube-ovn"));
        let (_, argv) = parse_image_map_entry("busybox=sleep 3600").expect("valid");
        assert_eq!(argv, ["sleep", "3600"]);
        assert!(parse_image_map_entry("no-program=").is_err());
        assert!(parse_image_map_entry("just-an-image").is_err());
    }

    #[test]
    fn argv_follows_entrypoint_command_and_args() {
        let entrypoint = vec!["/build/kube-ovn".to_string()];
        let plain = container(json!({"name": "c", "args": ["operator", "-v"]}));
        assert_eq!(
            container_argv(&entrypoint, &plain),
            ["/build/kube-ovn", "operator", "-v"]
        );
        let own = container(
            json!({"name": "c", "command": ["/usr/bin/kube-ovn", "node"], "args": ["--x"]}),
        );
        assert_eq!(
            container_argv(&entrypoint, &own),
            ["/build/kube-ovn", "node", "--x"]
        );
        let shell = container(json!({"name": "c", "command": ["sh", "-c", "true"]}));
        assert_eq!(container_argv(&entrypoint, &shell), ["sh", "-c", "true"]);
    }

    #[test]
    fn a_pod_runs_processes_when_any_image_is_mapped() {
        let runtime = ContainerRuntime::from_entries(["app:v1=/bin/true"]).expect("valid");
        let pod = |image: &str| -> Pod {
            serde_json::from_value(json!({"spec": {
                "initContainers": [{"name": "init", "image": image}],
                "containers": [{"name": "c", "image": "other"}]}}))
            .expect("a pod")
        };
        assert!(runtime.runs(&pod("app:v1")));
        assert!(!runtime.runs(&pod("app:v2")));
        assert!(!ContainerRuntime::SandboxOnly.runs(&pod("app:v1")));
    }
}
