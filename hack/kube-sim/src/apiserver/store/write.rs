//! How objects are written: create (names, metadata the server owns, initial status),
//! update and patch (optimistic concurrency, the status subresource, generation, server-side
//! apply's field ownership), the defaults kube-apiserver fills in (apps workloads' strategies
//! and replicas, a Secret's type), schema checks, and registering what a CRD defines. Deletion and
//! what follows from it are in `lifecycle.rs`; storage and watches in `store.rs`.

use rand::Rng;
use serde_json::{json, Value};

use super::super::apply;
use super::super::patch::{self, PatchKind};
use super::super::resources::{self, ResourceType};
use super::super::schema;
use super::super::status::{ApiError, FieldError};
use super::lifecycle::{all_uids, finalized, namespace_accepts_content, owner_uids};
use super::{
    current, invalid, now, object_key, present, stale, storage_form, ChangeKind, CollectionKey,
    DeleteOptions, ObjectKey, Part, State, Store, WriteOptions,
};

impl Store {
    pub fn create(
        &self,
        rt: &ResourceType,
        version: &str,
        ns: Option<&str>,
        body: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        check_type_meta(rt, version, &body)?;
        let served_as = rt;
        let (rt, mut body) = storage_form(rt, body);
        let rt = &rt;
        let ns = namespace_of(rt, ns, &body)?;
        let meta = body
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
            .ok_or_else(|| invalid(rt, "", FieldError::required("metadata", "")))?;
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
                        FieldError::required("metadata.name", "name or generateName is required"),
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
        apply_defaults(rt, &mut body);
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
        // The garbage collector removes a dependent whose owners are all gone, even one
        // created after them.
        let owners = owner_uids(&stored);
        if !owners.is_empty() && owners.iter().all(|o| !all_uids(&st).contains(o)) {
            tracing::debug!(resource = %rt.qualified_name(), name, "owners are gone, collecting");
            self.delete_object(&mut st, &collection, &key, &DeleteOptions::default());
        }
        Ok(present(served_as, version, &stored))
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
        let served_as = rt;
        let (rt, body) = storage_form(rt, body);
        let rt = &rt;
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
        let requested = body
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .filter(|rv| !rv.is_empty());
        match requested {
            Some(rv)
                if Some(rv)
                    != current
                        .pointer("/metadata/resourceVersion")
                        .and_then(Value::as_str) =>
            {
                return Err(stale(rt, name));
            }
            // Custom resources allow no unconditional update.
            None if rt.custom => {
                return Err(invalid(
                    rt,
                    name,
                    FieldError::invalid(
                        "metadata.resourceVersion",
                        "0x0: must be specified for an update",
                    ),
                ));
            }
            _ => {}
        }
        let stored = self.write_update(&mut st, rt, version, &key, current, body, part, opts)?;
        Ok(present(served_as, version, &stored))
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
                let body = apply_ownership(
                    rt,
                    version,
                    part,
                    &json!({}),
                    strip_nulls(body),
                    patch_body,
                    opts,
                );
                return self.create(rt, version, ns, body, opts);
            }
            (Err(e), _, _) => return Err(e),
        };
        let shown = present(rt, version, &current);
        let patched = patch::apply(kind, &shown, patch_body).map_err(|e| match kind {
            PatchKind::Json => invalid(rt, name, FieldError::invalid("", e)),
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
        let patched = if kind == PatchKind::Apply {
            apply_ownership(rt, version, part, &current, patched, patch_body, opts)
        } else {
            patched
        };
        let (storage_rt, patched) = storage_form(rt, patched);
        let stored = self.write_update(
            &mut st,
            &storage_rt,
            version,
            &key,
            current,
            patched,
            part,
            opts,
        )?;
        Ok(present(rt, version, &stored))
    }

    /// The shared second half of update and patch; returns the stored object.
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
                if let Some(managed) = body.pointer("/metadata/managedFields") {
                    next["metadata"]["managedFields"] = managed.clone();
                }
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
        apply_defaults(rt, &mut next);
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
        if without_apply_times(&next) == without_apply_times(&current) {
            // A no-op write (an apply of the same configuration included) changes nothing,
            // so it wakes no watcher.
            return Ok(current);
        }
        let collection = CollectionKey::of(rt);
        let stored = self.commit(st, (&collection, key, ChangeKind::Modified), Some(next));
        if finalized(&stored) {
            tracing::debug!(resource = %rt.qualified_name(), name, "finalizers done, removing");
            self.remove(st, &collection, key);
        }
        Ok(stored)
    }
}

fn without_apply_times(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(entries) = copy
        .pointer_mut("/metadata/managedFields")
        .and_then(Value::as_array_mut)
    {
        for entry in entries.iter_mut().filter_map(Value::as_object_mut) {
            entry.remove("time");
        }
    }
    copy
}

/// Server-side apply's bookkeeping: drop what the manager applied before and left out now,
/// and record what it owns (only within the part of the object this request may write).
fn apply_ownership(
    rt: &ResourceType,
    version: &str,
    part: Part,
    previous: &Value,
    merged: Value,
    config: &Value,
    opts: &WriteOptions,
) -> Value {
    let api_version = rt.api_version(version);
    let time = now();
    let record = apply::ApplyRecord {
        manager: opts.field_manager.as_deref().unwrap_or_default(),
        api_version: &api_version,
        subresource: (part == Part::Status).then_some("status"),
        time: &time,
    };
    let touches_status = |p: &apply::FieldPath| p.first().is_some_and(|k| k == "status");
    apply::apply_ownership(previous, merged, config, &record, |p| match part {
        Part::Status => touches_status(p),
        Part::Main => !(rt.status_subresource && touches_status(p)),
    })
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

/// The defaults kube-apiserver fills in on every write of the kinds whose readers rely on them
/// (`kubectl rollout status` refuses a StatefulSet without `updateStrategy.type`).
fn apply_defaults(rt: &ResourceType, body: &mut Value) {
    let defaults: &[(&str, Value)] = match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Secret") => &[("/type", json!("Opaque"))],
        ("apps", "Deployment") => &[
            ("/spec/replicas", json!(1)),
            ("/spec/revisionHistoryLimit", json!(10)),
            ("/spec/progressDeadlineSeconds", json!(600)),
            ("/spec/strategy/type", json!("RollingUpdate")),
        ],
        ("apps", "ReplicaSet") => &[("/spec/replicas", json!(1))],
        ("apps", "DaemonSet") => &[
            ("/spec/revisionHistoryLimit", json!(10)),
            ("/spec/updateStrategy/type", json!("RollingUpdate")),
        ],
        ("apps", "StatefulSet") => &[
            ("/spec/replicas", json!(1)),
            ("/spec/revisionHistoryLimit", json!(10)),
            ("/spec/podManagementPolicy", json!("OrderedReady")),
            ("/spec/updateStrategy/type", json!("RollingUpdate")),
        ],
        _ => &[],
    };
    for (pointer, value) in defaults {
        set_if_absent(body, pointer, value);
    }
    let rolling = body
        .pointer("/spec/strategy/type")
        .or_else(|| body.pointer("/spec/updateStrategy/type"))
        == Some(&json!("RollingUpdate"));
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("apps", "Deployment") if rolling => {
            set_if_absent(body, "/spec/strategy/rollingUpdate/maxSurge", &json!("25%"));
            set_if_absent(
                body,
                "/spec/strategy/rollingUpdate/maxUnavailable",
                &json!("25%"),
            );
        }
        ("apps", "DaemonSet") if rolling => {
            set_if_absent(
                body,
                "/spec/updateStrategy/rollingUpdate/maxUnavailable",
                &json!(1),
            );
            set_if_absent(
                body,
                "/spec/updateStrategy/rollingUpdate/maxSurge",
                &json!(0),
            );
        }
        ("apps", "StatefulSet") if rolling => {
            set_if_absent(
                body,
                "/spec/updateStrategy/rollingUpdate/partition",
                &json!(0),
            );
        }
        _ => {}
    }
}

/// Set the field at `pointer` (creating the objects on the way) unless it holds a value.
fn set_if_absent(body: &mut Value, pointer: &str, value: &Value) {
    if body.pointer(pointer).is_some_and(|v| !v.is_null()) {
        return;
    }
    let mut at = body;
    let mut keys = pointer.split('/').skip(1).peekable();
    while let Some(key) = keys.next() {
        let Some(fields) = at.as_object_mut() else {
            return;
        };
        if keys.peek().is_none() {
            fields.insert(key.to_string(), value.clone());
            return;
        }
        at = fields.entry(key).or_insert_with(|| json!({}));
        if at.is_null() {
            *at = json!({});
        }
    }
}

/// Check an object: built-in kinds against the few rules we model, custom objects against
/// their version's schema (after pruning unknown fields).
fn check_schema(
    rt: &ResourceType,
    version: &str,
    mut object: Value,
    opts: &WriteOptions,
) -> Result<Value, ApiError> {
    let mut builtin_errors = schema::validate_metadata(&rt.kind, &object);
    builtin_errors.extend(schema::validate_builtin(&rt.group, &rt.kind, &object));
    if !builtin_errors.is_empty() {
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        return Err(ApiError::invalid(
            &rt.kind,
            &rt.group,
            name,
            &builtin_errors,
        ));
    }
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
            &[e],
        )
    })?;
    if let Some(existing) = st.table.find_kind(&served.group, &served.kind) {
        if !existing.custom || existing.plural != served.plural {
            return Err(ApiError::invalid(
                "CustomResourceDefinition",
                "apiextensions.k8s.io",
                &name,
                &[FieldError::invalid(
                    "spec.names.kind",
                    format!(
                        "\"{}\": kind is already served by {}",
                        served.kind,
                        existing.qualified_name()
                    ),
                )],
            ));
        }
    }
    // Conditions keep their transition time while they hold (a re-apply stays a no-op).
    let time = crd
        .pointer("/status/conditions/0/lastTransitionTime")
        .and_then(Value::as_str)
        .map_or_else(now, str::to_string);
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
