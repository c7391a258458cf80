//! The object store: every object as a `serde_json::Value` keyed by (group, resource) and
//! (namespace, name), one global resourceVersion, a bounded change history per resource for
//! watches that resume from a resourceVersion, and the write semantics of kube-apiserver that
//! our code relies on: metadata on create, optimistic concurrency, the status subresource,
//! CRD schema checks, finalizers, graceful pod deletion, namespace termination and
//! ownerReference garbage collection. HTTP lives in `http.rs`; this file knows nothing of it.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::patch::{self, PatchKind};
use super::resources::{self, ResourceTable, ResourceType};
use super::schema;
use super::selector::{FieldSelector, LabelSelector};
use super::status::{ApiError, FieldError};

/// (group, plural): where a resource's objects live, whatever version they are served at.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CollectionKey {
    pub group: String,
    pub plural: String,
}

impl CollectionKey {
    pub fn of(rt: &ResourceType) -> Self {
        Self {
            group: rt.group.clone(),
            plural: rt.plural.clone(),
        }
    }
}

/// (namespace, name); the namespace is empty for cluster-scoped objects.
type ObjectKey = (String, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One committed change, as watches see it.
#[derive(Debug, Clone)]
pub struct Change {
    pub collection: CollectionKey,
    pub kind: ChangeKind,
    pub object: Value,
    /// The object before a modification, so that selector-filtered watches can turn a
    /// change that leaves the selection into DELETED.
    pub previous: Option<Value>,
    pub resource_version: u64,
}

#[derive(Debug, Default)]
struct Collection {
    objects: BTreeMap<ObjectKey, Value>,
    history: VecDeque<Arc<Change>>,
    /// Watches from a resourceVersion older than this have lost events: 410 Gone.
    compacted: u64,
}

#[derive(Debug)]
struct State {
    table: ResourceTable,
    resource_version: u64,
    collections: HashMap<CollectionKey, Collection>,
}

/// Which part of an object a write addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Main,
    Status,
}

/// Options of create, update and patch.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// `fieldValidation=Strict`: unknown fields are an error instead of being pruned.
    pub strict: bool,
    pub field_manager: Option<String>,
    pub force: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Propagation {
    #[default]
    Background,
    Foreground,
    Orphan,
}

/// Options of delete (query parameters or a DeleteOptions body).
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    pub propagation: Propagation,
    pub precondition_uid: Option<String>,
    pub precondition_resource_version: Option<String>,
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchFrom {
    /// No resourceVersion (or "0"): synthetic ADDED events for what exists now, then changes.
    Now,
    /// Changes after this resourceVersion, from the history.
    After(u64),
}

/// A started watch: the events to send first, then the live feed.
pub struct WatchStart {
    pub backlog: Vec<Arc<Change>>,
    pub live: broadcast::Receiver<Arc<Change>>,
    pub resource_version: u64,
}

/// The whole cluster state.
pub struct Store {
    state: Mutex<State>,
    changes: broadcast::Sender<Arc<Change>>,
    history_limit: usize,
}

/// Which object a commit writes, and how the change is reported.
type Target<'a> = (&'a CollectionKey, &'a ObjectKey, ChangeKind);

impl Store {
    /// A store with namespaces `default` and `kube-system`, keeping `history_limit` changes
    /// per resource for watches that resume.
    pub fn new(history_limit: usize) -> Self {
        let (changes, _) = broadcast::channel(16384);
        let store = Self {
            state: Mutex::new(State {
                table: ResourceTable::builtin(),
                resource_version: 0,
                collections: HashMap::new(),
            }),
            changes,
            history_limit: history_limit.max(1),
        };
        let namespaces = store
            .resolve("", "v1", "namespaces")
            .expect("namespaces are built in");
        for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let ns =
                json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": name } });
            store
                .create(&namespaces, "v1", None, ns, &WriteOptions::default())
                .expect("a fresh store accepts the initial namespaces");
        }
        store
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The resource served at `group/version/plural`.
    pub fn resolve(&self, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        self.lock().table.find(group, version, plural).cloned()
    }

    /// A snapshot of the resource table (for discovery).
    pub fn table(&self) -> ResourceTable {
        self.lock().table.clone()
    }

    pub fn get(
        &self,
        rt: &ResourceType,
        version: &str,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        let st = self.lock();
        let key = object_key(rt, ns, name);
        st.collections
            .get(&CollectionKey::of(rt))
            .and_then(|c| c.objects.get(&key))
            .map(|o| present(rt, version, o))
            .ok_or_else(|| not_found(rt, name))
    }

    /// A `<Kind>List` of the matching objects, in `ns` or everywhere.
    pub fn list(
        &self,
        rt: &ResourceType,
        version: &str,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> Value {
        let st = self.lock();
        let items: Vec<Value> = st
            .collections
            .get(&CollectionKey::of(rt))
            .map(|c| {
                c.objects
                    .iter()
                    .filter(|((o_ns, _), _)| ns.is_none_or(|n| n == o_ns))
                    .filter(|(_, o)| labels.matches(o) && fields.matches(o))
                    .map(|(_, o)| present(rt, version, o))
                    .collect()
            })
            .unwrap_or_default();
        json!({
            "apiVersion": rt.api_version(version),
            "kind": format!("{}List", rt.kind),
            "metadata": { "resourceVersion": st.resource_version.to_string() },
            "items": items,
        })
    }

    pub fn create(
        &self,
        rt: &ResourceType,
        version: &str,
        ns: Option<&str>,
        mut body: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        check_type_meta(rt, version, &body)?;
        let ns = namespace_of(rt, ns, &body)?;
        let meta = body
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
            .ok_or_else(|| invalid(rt, "", "metadata", "Required value: metadata is required"))?;
        if meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .is_empty()
        {
            match meta.get("generateName").and_then(Value::as_str) {
                Some(prefix) if !prefix.is_empty() => {
                    let name = format!("{prefix}{}", random_suffix());
                    meta.insert("name".into(), json!(name));
                }
                _ => {
                    return Err(invalid(
                        rt,
                        "",
                        "metadata.name",
                        "Required value: name or generateName is required",
                    ))
                }
            }
        }
        let name = meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if !ns.is_empty() {
            meta.insert("namespace".into(), json!(ns));
        }
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("creationTimestamp".into(), json!(now()));
        meta.insert("generation".into(), json!(1));
        for field in [
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "resourceVersion",
            "selfLink",
        ] {
            meta.remove(field);
        }
        body["apiVersion"] = json!(rt.api_version(rt.versions[0].as_str()));
        body["kind"] = json!(rt.kind);
        reset_status_on_create(rt, &mut body);
        let mut body = check_schema(rt, version, body, opts)?;
        let mut st = self.lock();
        if !ns.is_empty() {
            namespace_accepts_content(&st, &ns)?;
        }
        let collection = CollectionKey::of(rt);
        let key = (ns.clone(), name.clone());
        if st
            .collections
            .get(&collection)
            .is_some_and(|c| c.objects.contains_key(&key))
        {
            return Err(ApiError::already_exists(&rt.plural, &rt.group, &name));
        }
        let crd = if is_crd(rt) {
            Some(register_crd(&mut st, &mut body)?)
        } else {
            None
        };
        let stored = self.commit(&mut st, (&collection, &key, ChangeKind::Added), Some(body));
        if let Some(served) = crd {
            tracing::info!(resource = %served.qualified_name(), "serving custom resource");
        }
        Ok(present(rt, version, &stored))
    }

    /// PUT: replace the object (or only its status), refusing a stale resourceVersion.
    #[allow(clippy::too_many_arguments)]
    pub fn replace(
        &self,
        rt: &ResourceType,
        version: &str,
        ns: Option<&str>,
        name: &str,
        body: Value,
        part: Part,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        check_type_meta(rt, version, &body)?;
        if let Some(body_name) = body.pointer("/metadata/name").and_then(Value::as_str) {
            if body_name != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({body_name}) does not match the name on the URL ({name})"
                )));
            }
        }
        let mut st = self.lock();
        let key = object_key(rt, ns, name);
        let current = current(&st, rt, &key)?;
        if let Some(rv) = body
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
        {
            if !rv.is_empty()
                && Some(rv)
                    != current
                        .pointer("/metadata/resourceVersion")
                        .and_then(Value::as_str)
            {
                return Err(stale(rt, name));
            }
        }
        self.write_update(&mut st, rt, version, &key, current, body, part, opts)
    }

    /// PATCH: apply a patch of `kind` to the object (or only to its status). A server-side
    /// apply of an absent object creates it.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &self,
        rt: &ResourceType,
        version: &str,
        ns: Option<&str>,
        name: &str,
        kind: PatchKind,
        patch_body: &Value,
        part: Part,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        if kind == PatchKind::Apply && opts.field_manager.as_deref().unwrap_or_default().is_empty()
        {
            return Err(ApiError::bad_request(
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
            ));
        }
        let key = object_key(rt, ns, name);
        let mut st = self.lock();
        let existing = current(&st, rt, &key);
        let current = match (existing, kind, part) {
            (Ok(current), _, _) => current,
            (Err(_), PatchKind::Apply, Part::Main) => {
                drop(st);
                let mut body = patch_body.clone();
                if body
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .is_none_or(|n| n != name)
                {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object does not match the name on the URL ({name})"
                    )));
                }
                body["metadata"]["resourceVersion"].take();
                return self.create(rt, version, ns, strip_nulls(body), opts);
            }
            (Err(e), _, _) => return Err(e),
        };
        let shown = present(rt, version, &current);
        let patched = patch::apply(kind, &shown, patch_body).map_err(|e| match kind {
            PatchKind::Json => invalid(rt, name, "", &e),
            _ => ApiError::bad_request(e),
        })?;
        let requested_rv = patched
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str);
        if requested_rv.is_some_and(|rv| !rv.is_empty())
            && requested_rv
                != current
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
        {
            return Err(stale(rt, name));
        }
        if patched.pointer("/metadata/name").and_then(Value::as_str) != Some(name) {
            return Err(ApiError::bad_request(format!(
                "a patch may not change the name of {}",
                rt.qualified_name()
            )));
        }
        self.write_update(&mut st, rt, version, &key, current, patched, part, opts)
    }

    /// The shared second half of update and patch.
    #[allow(clippy::too_many_arguments)]
    fn write_update(
        &self,
        st: &mut State,
        rt: &ResourceType,
        version: &str,
        key: &ObjectKey,
        current: Value,
        mut body: Value,
        part: Part,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let name = key.1.clone();
        let mut next = match part {
            Part::Status => {
                let mut next = current.clone();
                next["status"] = body.get("status").cloned().unwrap_or(Value::Null);
                if next["status"].is_null() {
                    next.as_object_mut().map(|o| o.remove("status"));
                }
                next
            }
            Part::Main => {
                if rt.status_subresource {
                    match current.get("status") {
                        Some(status) => body["status"] = status.clone(),
                        None => {
                            body.as_object_mut().map(|o| o.remove("status"));
                        }
                    }
                }
                keep_server_metadata(&current, &mut body);
                body
            }
        };
        next["apiVersion"] = json!(rt.api_version(rt.versions[0].as_str()));
        next["kind"] = json!(rt.kind);
        let mut next = check_schema(rt, version, next, opts)?;
        if is_crd(rt) && part == Part::Main {
            register_crd(st, &mut next)?;
        }
        let ignore_status = rt.status_subresource;
        let generation = current
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let generation = if content(&current, ignore_status) != content(&next, ignore_status) {
            generation + 1
        } else {
            generation
        };
        next["metadata"]["generation"] = json!(generation);
        next["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
        if next == current {
            return Ok(present(rt, version, &current));
        }
        let collection = CollectionKey::of(rt);
        let stored = self.commit(st, (&collection, key, ChangeKind::Modified), Some(next));
        if finalized(&stored) {
            tracing::debug!(resource = %rt.qualified_name(), name, "finalizers done, removing");
            self.remove(st, &collection, key);
        }
        Ok(present(rt, version, &stored))
    }

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

    /// Watch a resource (in `ns`, or everywhere) from `from`.
    pub fn watch(&self, rt: &ResourceType, from: WatchFrom) -> Result<WatchStart, ApiError> {
        let st = self.lock();
        let collection = CollectionKey::of(rt);
        let live = self.changes.subscribe();
        let coll = st.collections.get(&collection);
        let backlog = match from {
            WatchFrom::Now => coll
                .map(|c| {
                    c.objects
                        .values()
                        .map(|o| {
                            Arc::new(Change {
                                collection: collection.clone(),
                                kind: ChangeKind::Added,
                                object: o.clone(),
                                previous: None,
                                resource_version: resource_version_of(o),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default(),
            WatchFrom::After(rv) => {
                let compacted = coll.map_or(0, |c| c.compacted);
                if rv < compacted {
                    return Err(ApiError::gone(format!(
                        "too old resource version: {rv} ({compacted})"
                    )));
                }
                coll.map(|c| {
                    c.history
                        .iter()
                        .filter(|ch| ch.resource_version > rv)
                        .cloned()
                        .collect()
                })
                .unwrap_or_default()
            }
        };
        Ok(WatchStart {
            backlog,
            live,
            resource_version: st.resource_version,
        })
    }

    /// The current resourceVersion (for bookmarks).
    pub fn resource_version(&self) -> u64 {
        self.lock().resource_version
    }

    /// Everything, for the debugging dump: `{ "<group>/<plural>": [objects…] }`.
    pub fn dump(&self) -> Value {
        let st = self.lock();
        let mut out = serde_json::Map::new();
        let mut keys: Vec<&CollectionKey> = st.collections.keys().collect();
        keys.sort();
        for key in keys {
            let objects: Vec<Value> = st.collections[key].objects.values().cloned().collect();
            if !objects.is_empty() {
                let label = if key.group.is_empty() {
                    key.plural.clone()
                } else {
                    format!("{}/{}", key.group, key.plural)
                };
                out.insert(label, Value::Array(objects));
            }
        }
        json!({ "resourceVersion": st.resource_version, "objects": out })
    }

    /// Store (or remove) one object under a new resourceVersion and publish the change.
    fn commit(&self, st: &mut State, target: Target<'_>, object: Option<Value>) -> Value {
        let (collection, key, kind) = target;
        st.resource_version += 1;
        let rv = st.resource_version;
        let coll = st.collections.entry(collection.clone()).or_default();
        let previous = coll.objects.get(key).cloned();
        let mut object = match object {
            Some(object) => object,
            None => {
                coll.objects.remove(key);
                previous
                    .clone()
                    .expect("a removal commits an existing object")
            }
        };
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        if kind != ChangeKind::Deleted {
            coll.objects.insert(key.clone(), object.clone());
        }
        let change = Arc::new(Change {
            collection: collection.clone(),
            kind,
            object: object.clone(),
            previous,
            resource_version: rv,
        });
        coll.history.push_back(change.clone());
        while coll.history.len() > self.history_limit {
            if let Some(dropped) = coll.history.pop_front() {
                coll.compacted = dropped.resource_version;
            }
        }
        // Nobody watching is fine.
        let _ = self.changes.send(change);
        object
    }

    /// Remove an object from the store, reporting DELETED.
    fn erase(&self, st: &mut State, collection: &CollectionKey, key: &ObjectKey) {
        self.commit(st, (collection, key, ChangeKind::Deleted), None);
    }

    /// Delete one object with the API's semantics; returns its last state if it still exists.
    fn delete_object(
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
    fn remove(&self, st: &mut State, collection: &CollectionKey, key: &ObjectKey) {
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

/// The object as served at `version` (custom resources convert between versions by relabelling).
fn present(rt: &ResourceType, version: &str, object: &Value) -> Value {
    let mut shown = object.clone();
    shown["apiVersion"] = json!(rt.api_version(version));
    shown
}

fn object_key(rt: &ResourceType, ns: Option<&str>, name: &str) -> ObjectKey {
    let ns = if rt.namespaced {
        ns.unwrap_or_default()
    } else {
        ""
    };
    (ns.to_string(), name.to_string())
}

fn current(st: &State, rt: &ResourceType, key: &ObjectKey) -> Result<Value, ApiError> {
    st.collections
        .get(&CollectionKey::of(rt))
        .and_then(|c| c.objects.get(key))
        .cloned()
        .ok_or_else(|| not_found(rt, &key.1))
}

fn not_found(rt: &ResourceType, name: &str) -> ApiError {
    ApiError::not_found(&rt.plural, &rt.group, name)
}

fn stale(rt: &ResourceType, name: &str) -> ApiError {
    ApiError::conflict(
        &rt.plural,
        &rt.group,
        name,
        "the object has been modified; please apply your changes to the latest version and try again",
    )
}

fn invalid(rt: &ResourceType, name: &str, field: &str, detail: &str) -> ApiError {
    ApiError::invalid(
        &rt.kind,
        &rt.group,
        name,
        &[FieldError {
            field: field.to_string(),
            reason: "FieldValueInvalid",
            detail: detail.to_string(),
        }],
    )
}

/// A body's apiVersion and kind, when given, must be those of the URL.
fn check_type_meta(rt: &ResourceType, version: &str, body: &Value) -> Result<(), ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request must be a JSON object",
        ));
    }
    if let Some(kind) = body.get("kind").and_then(Value::as_str) {
        if kind != rt.kind {
            return Err(ApiError::bad_request(format!(
                "the kind of the object ({kind}) does not match the resource {} ({})",
                rt.qualified_name(),
                rt.kind
            )));
        }
    }
    if let Some(api_version) = body.get("apiVersion").and_then(Value::as_str) {
        if api_version != rt.api_version(version)
            && !rt.versions.iter().any(|v| rt.api_version(v) == api_version)
        {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({api_version}) does not match the expected API version ({})",
                rt.api_version(version)
            )));
        }
    }
    Ok(())
}

/// The namespace a new object lands in: the URL's, which the body may repeat but not contradict.
fn namespace_of(rt: &ResourceType, url_ns: Option<&str>, body: &Value) -> Result<String, ApiError> {
    let body_ns = body
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty());
    if !rt.namespaced {
        return Ok(String::new());
    }
    match (url_ns, body_ns) {
        (Some(u), Some(b)) if u != b => Err(ApiError::bad_request(format!(
            "the namespace of the provided object does not match the namespace sent on the request ({b} vs {u})"
        ))),
        (Some(u), _) => Ok(u.to_string()),
        (None, _) => Err(ApiError::bad_request(format!("{} must be created in a namespace", rt.qualified_name()))),
    }
}

fn namespace_accepts_content(st: &State, ns: &str) -> Result<(), ApiError> {
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

/// What the real registries do to status on create: pods start Pending, namespaces Active,
/// nodes keep what the kubelet reports, everything else with a status subresource starts empty.
fn reset_status_on_create(rt: &ResourceType, body: &mut Value) {
    let Some(fields) = body.as_object_mut() else {
        return;
    };
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Pod") => {
            fields.insert("status".into(), json!({ "phase": "Pending" }));
        }
        ("", "Namespace") => {
            fields.insert("status".into(), json!({ "phase": "Active" }));
        }
        ("", "Node") => {}
        _ if rt.status_subresource => {
            fields.remove("status");
        }
        _ => {}
    }
}

/// Prune and check a custom object against its version's schema.
fn check_schema(
    rt: &ResourceType,
    version: &str,
    mut object: Value,
    opts: &WriteOptions,
) -> Result<Value, ApiError> {
    let Some(schema) = rt
        .schemas
        .get(version)
        .or_else(|| rt.schemas.get(&rt.versions[0]))
    else {
        return Ok(object);
    };
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let pruned = schema::prune(schema, &mut object);
    if opts.strict && !pruned.is_empty() {
        let list: Vec<String> = pruned
            .iter()
            .map(|p| format!("unknown field \"{p}\""))
            .collect();
        return Err(ApiError::bad_request(format!(
            "strict decoding error: {}",
            list.join(", ")
        )));
    }
    let errors = schema::validate(schema, &object);
    if !errors.is_empty() {
        return Err(ApiError::invalid(&rt.kind, &rt.group, &name, &errors));
    }
    Ok(object)
}

/// Fields the server owns: clients cannot change them by update or patch.
fn keep_server_metadata(current: &Value, next: &mut Value) {
    if !next.get("metadata").is_some_and(Value::is_object) {
        next["metadata"] = json!({});
    }
    for field in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "namespace",
        "name",
    ] {
        match current["metadata"].get(field) {
            Some(v) => next["metadata"][field] = v.clone(),
            None => {
                next["metadata"].as_object_mut().map(|m| m.remove(field));
            }
        }
    }
}

/// What counts for metadata.generation: everything but metadata (and status, when it is a
/// subresource).
fn content(object: &Value, ignore_status: bool) -> Value {
    let mut c = object.clone();
    if let Some(fields) = c.as_object_mut() {
        fields.remove("metadata");
        fields.remove("apiVersion");
        if ignore_status {
            fields.remove("status");
        }
    }
    c
}

fn has_finalizers(object: &Value) -> bool {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
}

/// Marked for deletion, with no finalizers left and no grace period to wait out.
fn finalized(object: &Value) -> bool {
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

fn owner_uids(object: &Value) -> Vec<String> {
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

fn all_uids(st: &State) -> BTreeSet<String> {
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

fn is_crd(rt: &ResourceType) -> bool {
    rt.group == "apiextensions.k8s.io" && rt.plural == "customresourcedefinitions"
}

/// Start serving what a CRD defines and write the status a real server reports once the
/// names are accepted and the resource is established.
fn register_crd(st: &mut State, crd: &mut Value) -> Result<ResourceType, ApiError> {
    let name = crd
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let served = resources::from_crd(crd).map_err(|e| {
        ApiError::invalid(
            "CustomResourceDefinition",
            "apiextensions.k8s.io",
            &name,
            &[FieldError {
                field: String::new(),
                reason: "FieldValueInvalid",
                detail: e,
            }],
        )
    })?;
    if let Some(existing) = st.table.find_kind(&served.group, &served.kind) {
        if !existing.custom || existing.plural != served.plural {
            return Err(ApiError::invalid(
                "CustomResourceDefinition",
                "apiextensions.k8s.io",
                &name,
                &[FieldError {
                    field: "spec.names.kind".into(),
                    reason: "FieldValueInvalid",
                    detail: format!(
                        "\"{}\": kind is already served by {}",
                        served.kind,
                        existing.qualified_name()
                    ),
                }],
            ));
        }
    }
    let time = now();
    crd["status"] = json!({
        "acceptedNames": crd["spec"]["names"].clone(),
        "storedVersions": [served.versions[0].clone()],
        "conditions": [
            { "type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
              "message": "no conflicts found", "lastTransitionTime": time },
            { "type": "Established", "status": "True", "reason": "InitialNamesAccepted",
              "message": "the initial names have been accepted", "lastTransitionTime": time },
        ],
    });
    st.table.register(served.clone());
    Ok(served)
}

fn resource_version_of(object: &Value) -> u64 {
    object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Server-side apply bodies may carry explicit nulls meaning "unset"; a new object has none.
fn strip_nulls(value: Value) -> Value {
    match value {
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        other => other,
    }
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::thread_rng();
    (0..5)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// RFC 3339 with second precision, as metav1.Time serialises.
pub fn now() -> String {
    timestamp_in(0)
}

fn timestamp_in(seconds: i64) -> String {
    let now = jiff::Timestamp::now().as_second() + seconds;
    jiff::Timestamp::from_second(now)
        .map(|t| t.to_string())
        .unwrap_or_default()
}
