//! What happens when an object goes away: deletion with preconditions, finalizers and
//! graceful pod termination (the kubelet finishes it), namespace termination (the contents
//! go first, the namespace last), ownerReference garbage collection (background, foreground
//! and orphan propagation) and a deleted CRD taking its objects with it. Writing objects is in
//! `write.rs`; storage and watches in `store.rs`.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::super::resources::{self, ResourceType};
use super::super::status::ApiError;
use super::{
    current, now, object_key, present, stale, timestamp_in, ChangeKind, CollectionKey,
    DeleteOptions, ObjectKey, Propagation, State, Store,
};

impl Store {
    /// DELETE: remove the object, or mark it for deletion while finalizers (or a kubelet's
    /// graceful pod termination) are pending.
    pub fn delete(
        &self,
        rt: &ResourceType,
        version: &str,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Value, ApiError> {
        let mut st = self.lock();
        let key = object_key(rt, ns, name);
        let current = current(&st, rt, &key)?;
        if let Some(uid) = &opts.precondition_uid {
            if current.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid.as_str()) {
                return Err(ApiError::conflict(
                    &rt.plural,
                    &rt.group,
                    name,
                    "the UID in the precondition does not match",
                ));
            }
        }
        if let Some(rv) = &opts.precondition_resource_version {
            if current
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                != Some(rv.as_str())
            {
                return Err(stale(rt, name));
            }
        }
        let last = self.delete_object(&mut st, &CollectionKey::of(rt), &key, opts);
        Ok(present(rt, version, &last.unwrap_or(current)))
    }

    /// Delete one object with the API's semantics; returns its last state if it still exists.
    pub(super) fn delete_object(
        &self,
        st: &mut State,
        collection: &CollectionKey,
        key: &ObjectKey,
        opts: &DeleteOptions,
    ) -> Option<Value> {
        let current = st.collections.get(collection)?.objects.get(key)?.clone();
        let uid = current
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        match opts.propagation {
            Propagation::Orphan => self.orphan_dependents(st, &uid),
            Propagation::Foreground => {
                for (dep_coll, dep_key) in dependents(st, &uid) {
                    self.delete_object(st, &dep_coll, &dep_key, opts);
                }
            }
            Propagation::Background => {}
        }
        let is_namespace = collection.group.is_empty() && collection.plural == "namespaces";
        let marked = current.pointer("/metadata/deletionTimestamp").is_some();
        let has_finalizers = has_finalizers(&current);
        let graceful_pod = graceful_pod_deletion(st, collection, &current, opts);
        if is_namespace {
            let mut terminating = current.clone();
            if !marked {
                terminating["metadata"]["deletionTimestamp"] = json!(now());
                terminating["status"]["phase"] = json!("Terminating");
                self.commit(
                    st,
                    (collection, key, ChangeKind::Modified),
                    Some(terminating),
                );
            }
            let ns = key.1.clone();
            for (c, k) in contents_of_namespace(st, &ns) {
                self.delete_object(st, &c, &k, &DeleteOptions::default());
            }
            return self.remove_namespace_if_empty(st, &ns);
        }
        if has_finalizers || graceful_pod.is_some() {
            let mut next = current.clone();
            let grace = graceful_pod.unwrap_or(0);
            let already_zero = current
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                == Some(0);
            if !marked || (grace == 0 && !already_zero) {
                if !marked {
                    next["metadata"]["deletionTimestamp"] = json!(timestamp_in(grace));
                    // As on a real server, marking for deletion bumps the generation.
                    let generation = current
                        .pointer("/metadata/generation")
                        .and_then(Value::as_i64)
                        .unwrap_or(1);
                    next["metadata"]["generation"] = json!(generation + 1);
                }
                next["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
                let stored = self.commit(st, (collection, key, ChangeKind::Modified), Some(next));
                return Some(stored);
            }
            return Some(current);
        }
        self.remove(st, collection, key);
        None
    }

    /// Remove an object for good, then what depends on it: the resources of a CRD, the
    /// dependents that no longer have an owner, a terminating namespace that became empty.
    pub(super) fn remove(&self, st: &mut State, collection: &CollectionKey, key: &ObjectKey) {
        let Some(object) = st
            .collections
            .get(collection)
            .and_then(|c| c.objects.get(key))
            .cloned()
        else {
            return;
        };
        self.commit(st, (collection, key, ChangeKind::Deleted), None);
        if collection.group == "apiextensions.k8s.io"
            && collection.plural == "customresourcedefinitions"
        {
            self.drop_custom_resource(st, &object);
        }
        let uid = object
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let live_uids = all_uids(st);
        for (dep_coll, dep_key) in dependents(st, &uid) {
            let Some(dep) = st
                .collections
                .get(&dep_coll)
                .and_then(|c| c.objects.get(&dep_key))
            else {
                continue;
            };
            let orphaned = owner_uids(dep)
                .iter()
                .all(|owner| !live_uids.contains(owner));
            if orphaned {
                tracing::debug!(owner = %uid, dependent = %dep_key.1, "garbage-collecting dependent");
                self.delete_object(st, &dep_coll, &dep_key, &DeleteOptions::default());
            }
        }
        if !key.0.is_empty() {
            self.remove_namespace_if_empty(st, &key.0);
        }
    }

    fn remove_namespace_if_empty(&self, st: &mut State, ns: &str) -> Option<Value> {
        let collection = CollectionKey {
            group: String::new(),
            plural: "namespaces".into(),
        };
        let key = (String::new(), ns.to_string());
        let namespace = st.collections.get(&collection)?.objects.get(&key)?.clone();
        let terminating = namespace.pointer("/metadata/deletionTimestamp").is_some();
        if terminating && contents_of_namespace(st, ns).is_empty() && !has_finalizers(&namespace) {
            self.erase(st, &collection, &key);
            return None;
        }
        Some(namespace)
    }

    fn orphan_dependents(&self, st: &mut State, uid: &str) {
        for (dep_coll, dep_key) in dependents(st, uid) {
            let Some(mut dep) = st
                .collections
                .get(&dep_coll)
                .and_then(|c| c.objects.get(&dep_key))
                .cloned()
            else {
                continue;
            };
            if let Some(refs) = dep
                .pointer_mut("/metadata/ownerReferences")
                .and_then(Value::as_array_mut)
            {
                refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid));
            }
            self.commit(st, (&dep_coll, &dep_key, ChangeKind::Modified), Some(dep));
        }
    }

    /// A CRD is gone: its objects go with it and its resource is no longer served.
    fn drop_custom_resource(&self, st: &mut State, crd: &Value) {
        let Ok(served) = resources::from_crd(crd) else {
            return;
        };
        let collection = CollectionKey::of(&served);
        let keys: Vec<ObjectKey> = st
            .collections
            .get(&collection)
            .map(|c| c.objects.keys().cloned().collect())
            .unwrap_or_default();
        for key in keys {
            self.erase(st, &collection, &key);
        }
        st.table.unregister(&served.group, &served.plural);
        tracing::info!(resource = %served.qualified_name(), "no longer serving custom resource");
    }
}

pub(super) fn namespace_accepts_content(st: &State, ns: &str) -> Result<(), ApiError> {
    let key = CollectionKey {
        group: String::new(),
        plural: "namespaces".into(),
    };
    match st
        .collections
        .get(&key)
        .and_then(|c| c.objects.get(&(String::new(), ns.to_string())))
    {
        None => Err(ApiError::not_found("namespaces", "", ns)),
        Some(n) if n.pointer("/metadata/deletionTimestamp").is_some() => {
            Err(ApiError::forbidden(format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            )))
        }
        Some(_) => Ok(()),
    }
}

fn has_finalizers(object: &Value) -> bool {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
}

/// Marked for deletion, with no finalizers left and no grace period to wait out.
pub(super) fn finalized(object: &Value) -> bool {
    object.pointer("/metadata/deletionTimestamp").is_some()
        && !has_finalizers(object)
        && object
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            == 0
}

/// A pod bound to an existing node is deleted gracefully: it stays, marked, until the
/// kubelet (the node simulator) deletes it with a zero grace period. Returns the grace period.
fn graceful_pod_deletion(
    st: &State,
    collection: &CollectionKey,
    pod: &Value,
    opts: &DeleteOptions,
) -> Option<i64> {
    if !(collection.group.is_empty() && collection.plural == "pods") {
        return None;
    }
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())?;
    let nodes = CollectionKey {
        group: String::new(),
        plural: "nodes".into(),
    };
    st.collections
        .get(&nodes)?
        .objects
        .get(&(String::new(), node.to_string()))?;
    let grace = opts
        .grace_period_seconds
        .or_else(|| {
            pod.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .unwrap_or(30);
    (grace > 0).then_some(grace)
}

pub(super) fn owner_uids(object: &Value) -> Vec<String> {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn dependents(st: &State, uid: &str) -> Vec<(CollectionKey, ObjectKey)> {
    if uid.is_empty() {
        return Vec::new();
    }
    let mut found = Vec::new();
    for (ck, coll) in &st.collections {
        for (key, object) in &coll.objects {
            if owner_uids(object).iter().any(|o| o == uid) {
                found.push((ck.clone(), key.clone()));
            }
        }
    }
    found.sort();
    found
}

pub(super) fn all_uids(st: &State) -> BTreeSet<String> {
    st.collections
        .values()
        .flat_map(|c| c.objects.values())
        .filter_map(|o| o.pointer("/metadata/uid").and_then(Value::as_str))
        .map(str::to_string)
        .collect()
}

fn contents_of_namespace(st: &State, ns: &str) -> Vec<(CollectionKey, ObjectKey)> {
    let mut found: Vec<(CollectionKey, ObjectKey)> = st
        .collections
        .iter()
        .flat_map(|(ck, c)| {
            c.objects
                .keys()
                .filter(|(o_ns, _)| o_ns == ns)
                .map(move |k| (ck.clone(), k.clone()))
        })
        .collect();
    found.sort();
    found
}
