//! The object store: every object as a `serde_json::Value` keyed by (group, resource) and
//! (namespace, name), one global resourceVersion, and a bounded change history per resource
//! for watches that resume from a resourceVersion. Reads, watches and the one place a change
//! is committed and published live here. The write semantics of kube-apiserver (metadata on
//! create, optimistic concurrency, the status subresource, CRD schema checks) are in
//! `store/write.rs`; what happens when an object goes away (finalizers, graceful pod deletion,
//! namespace termination, ownerReference garbage collection) in `store/lifecycle.rs`. HTTP
//! lives in `http.rs`; the store knows nothing of it.

mod lifecycle;
mod write;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::events;
use super::resources::{ResourceTable, ResourceType};
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
        if events::is_events_v1(&rt.group, &rt.plural) {
            return Self {
                group: String::new(),
                plural: "events".into(),
            };
        }
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
    /// A store with the namespaces a cluster starts with (`default`, `kube-system`,
    /// `kube-public`, `kube-node-lease`), keeping `history_limit` changes
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
}

/// The object as served at `version` (custom resources convert between versions by relabelling).
pub fn present(rt: &ResourceType, version: &str, object: &Value) -> Value {
    if events::is_events_v1(&rt.group, &rt.plural) {
        return events::from_core(object, &rt.api_version(version));
    }
    let mut shown = object.clone();
    shown["apiVersion"] = json!(rt.api_version(version));
    shown
}

/// The resource type objects of `rt` are stored as, and `body` in that form (events.k8s.io
/// Events are stored as core Events; everything else as itself).
fn storage_form(rt: &ResourceType, body: Value) -> (ResourceType, Value) {
    if events::is_events_v1(&rt.group, &rt.plural) {
        let core = ResourceTable::builtin().find("", "v1", "events").cloned();
        if let Some(core) = core {
            return (core, events::to_core(&body));
        }
    }
    (rt.clone(), body)
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

fn invalid(rt: &ResourceType, name: &str, cause: FieldError) -> ApiError {
    ApiError::invalid(&rt.kind, &rt.group, name, &[cause])
}

fn resource_version_of(object: &Value) -> u64 {
    object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
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
