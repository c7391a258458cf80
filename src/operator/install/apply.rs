//! Writing the rendered install to the API server and taking it away: server-side apply of
//! every object under the operator's one field manager, removal of what an earlier spec
//! rendered and this one does not (found by the managed-by label), reading the workloads back
//! for the status, and the uninstall order (node role, then chassis, then central, then the
//! accounts), one step per reconcile.

use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::info;

use super::render::{Rendered, COMPONENT, KUBE_OVN_CNI, MANAGED_SELECTOR, OVN_CENTRAL, OVS_OVN};
use super::rollout::Observed;
use crate::operator::pod::MANAGER;

type Result<T> = std::result::Result<T, kube::Error>;

/// A kind the install writes, with the API of one object of it (namespaced or not).
trait Kind: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug {
    fn api_for(client: &kube::Client, namespace: Option<&str>) -> Api<Self>;
}

macro_rules! namespaced_kind {
    ($($k:ty),*) => {$(
        impl Kind for $k {
            fn api_for(client: &kube::Client, namespace: Option<&str>) -> Api<Self> {
                Api::namespaced(client.clone(), namespace.unwrap_or("default"))
            }
        }
    )*};
}

macro_rules! cluster_kind {
    ($($k:ty),*) => {$(
        impl Kind for $k {
            fn api_for(client: &kube::Client, _: Option<&str>) -> Api<Self> {
                Api::all(client.clone())
            }
        }
    )*};
}

namespaced_kind!(DaemonSet, StatefulSet, ServiceAccount, RoleBinding);
cluster_kind!(ClusterRole, ClusterRoleBinding);

fn apply_params() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

async fn apply_namespaced<K>(client: &kube::Client, obj: &K) -> Result<()>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let ns = obj.namespace().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), &ns);
    api.patch(&obj.name_any(), &apply_params(), &Patch::Apply(obj))
        .await?;
    Ok(())
}

async fn apply_cluster<K>(client: &kube::Client, obj: &K) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let api: Api<K> = Api::all(client.clone());
    api.patch(&obj.name_any(), &apply_params(), &Patch::Apply(obj))
        .await?;
    Ok(())
}

/// Creates the namespace if it is absent (never owned, never deleted: it may hold others').
async fn ensure_namespace(client: &kube::Client, ns: &Namespace) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    if api.get_opt(&ns.name_any()).await?.is_none() {
        match api.create(&PostParams::default(), ns).await {
            Ok(_) => info!(namespace = %ns.name_any(), "namespace created"),
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Applies everything `rendered` holds, accounts and roles before the workloads.
pub async fn apply_all(client: &kube::Client, rendered: &Rendered) -> Result<()> {
    ensure_namespace(client, &rendered.namespace).await?;
    for sa in &rendered.service_accounts {
        apply_namespaced(client, sa).await?;
    }
    for role in &rendered.cluster_roles {
        apply_cluster(client, role).await?;
    }
    for binding in &rendered.cluster_role_bindings {
        apply_cluster(client, binding).await?;
    }
    for binding in &rendered.role_bindings {
        apply_namespaced(client, binding).await?;
    }
    if let Some(central) = &rendered.central {
        apply_namespaced(client, central).await?;
    }
    if let Some(ovs) = &rendered.ovs_ovn {
        apply_namespaced(client, ovs).await?;
    }
    apply_namespaced(client, &rendered.cni).await?;
    Ok(())
}

/// An object's kind, namespace and name.
type Key = (String, String, String);

fn key_of<K: Resource<DynamicType = ()>>(obj: &K) -> Key {
    (
        K::kind(&()).into_owned(),
        obj.meta().namespace.clone().unwrap_or_default(),
        obj.meta().name.clone().unwrap_or_default(),
    )
}

/// The key of every object `rendered` holds.
fn rendered_keys(rendered: &Rendered) -> Vec<Key> {
    let mut keys: Vec<Key> = rendered.service_accounts.iter().map(key_of).collect();
    keys.extend(rendered.cluster_roles.iter().map(key_of));
    keys.extend(rendered.cluster_role_bindings.iter().map(key_of));
    keys.extend(rendered.role_bindings.iter().map(key_of));
    keys.extend(rendered.central.iter().map(key_of));
    keys.extend(rendered.ovs_ovn.iter().map(key_of));
    keys.push(key_of(&rendered.cni));
    keys
}

/// Deletes the objects of ours (by label) that `keep` does not list.
async fn prune<K: Kind>(client: &kube::Client, keep: &[Key]) -> Result<Vec<String>> {
    let api: Api<K> = Api::all(client.clone());
    let mut removed = Vec::new();
    for obj in api
        .list(&ListParams::default().labels(MANAGED_SELECTOR))
        .await?
    {
        let key = key_of(&obj);
        if keep.contains(&key) {
            continue;
        }
        let scoped = K::api_for(client, obj.meta().namespace.as_deref());
        match scoped.delete(&key.2, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
        removed.push(format!("{} {}/{}", key.0, key.1, key.2));
    }
    Ok(removed)
}

/// Removes what an earlier spec rendered and this one does not; returns what it removed.
pub async fn prune_orphans(client: &kube::Client, rendered: &Rendered) -> Result<Vec<String>> {
    let keep = rendered_keys(rendered);
    let mut removed = prune::<DaemonSet>(client, &keep).await?;
    removed.extend(prune::<StatefulSet>(client, &keep).await?);
    removed.extend(prune::<ServiceAccount>(client, &keep).await?);
    removed.extend(prune::<ClusterRole>(client, &keep).await?);
    removed.extend(prune::<ClusterRoleBinding>(client, &keep).await?);
    removed.extend(prune::<RoleBinding>(client, &keep).await?);
    Ok(removed)
}

/// The workloads of the install as the status reads them (absent ones are left out).
pub async fn observe(client: &kube::Client, namespace: &str) -> Result<Vec<Observed>> {
    let ds: Api<DaemonSet> = Api::namespaced(client.clone(), namespace);
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let mut out = Vec::new();
    if let Some(s) = sts.get_opt(OVN_CENTRAL).await? {
        out.push(Observed::stateful_set(&s));
    }
    for name in [OVS_OVN, KUBE_OVN_CNI] {
        if let Some(d) = ds.get_opt(name).await? {
            out.push(Observed::daemon_set(&d));
        }
    }
    Ok(out)
}

/// One step of the uninstall: deletes the first component (node role, chassis, central) that
/// still exists or still has pods, and says what remains; `Ok(vec![])` once everything of
/// ours is gone, accounts and roles included.
pub async fn uninstall_step(client: &kube::Client) -> Result<Vec<String>> {
    let pods: Api<Pod> = Api::all(client.clone());
    for component in [KUBE_OVN_CNI, OVS_OVN, OVN_CENTRAL] {
        let selector = format!("{MANAGED_SELECTOR},{COMPONENT}={component}");
        let workload_gone = match component {
            OVN_CENTRAL => delete_labelled::<StatefulSet>(client, &selector).await?,
            _ => delete_labelled::<DaemonSet>(client, &selector).await?,
        };
        let left = pods.list(&ListParams::default().labels(&selector)).await?;
        if !workload_gone || !left.items.is_empty() {
            let mut remaining = vec![format!("{component} ({} pod(s))", left.items.len())];
            remaining.extend(
                [KUBE_OVN_CNI, OVS_OVN, OVN_CENTRAL]
                    .iter()
                    .skip_while(|c| **c != component)
                    .skip(1)
                    .map(|c| c.to_string()),
            );
            return Ok(remaining);
        }
    }
    for done in [
        delete_labelled::<ServiceAccount>(client, MANAGED_SELECTOR).await?,
        delete_labelled::<ClusterRoleBinding>(client, MANAGED_SELECTOR).await?,
        delete_labelled::<RoleBinding>(client, MANAGED_SELECTOR).await?,
        delete_labelled::<ClusterRole>(client, MANAGED_SELECTOR).await?,
    ] {
        if !done {
            return Ok(vec!["service accounts and roles".into()]);
        }
    }
    Ok(Vec::new())
}

/// Deletes every object of kind `K` matching `selector`; `true` when there was none left.
/// Foreground deletion: a workload stays (marked) until its pods are gone, so its controller
/// never replaces a pod the uninstall is stopping.
async fn delete_labelled<K: Kind>(client: &kube::Client, selector: &str) -> Result<bool> {
    let api: Api<K> = Api::all(client.clone());
    let found = api.list(&ListParams::default().labels(selector)).await?;
    if found.items.is_empty() {
        return Ok(true);
    }
    for obj in found {
        let scoped = K::api_for(client, obj.meta().namespace.as_deref());
        if obj.meta().deletion_timestamp.is_some() {
            continue;
        }
        info!(kind = %K::kind(&()), name = %obj.name_any(), namespace = ?obj.meta().namespace, "uninstall: deleting");
        match scoped
            .delete(&obj.name_any(), &DeleteParams::foreground())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}
