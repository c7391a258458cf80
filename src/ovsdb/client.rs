//! `Client`: one database on one OVSDB server (or on one member of a
//! clustered database given as a list of endpoints), kept connected. With
//! several endpoints it picks a member whose `_Server` database says it is
//! connected to its cluster and, when the session is lost, tries the others
//! in turn. At connect it checks the schema, starts a monitor (`monitor_cond_since`, else
//! `monitor_cond`, else `monitor`) feeding the cache, and then a supervisor
//! task applies notifications and reconnects with backoff, resyncing the
//! cache. Transactions read their own writes: `transact` returns once the
//! cache holds the transaction's effects. Waiters (`wait_until`) are fed by
//! the cache and so survive reconnects.

use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::Duration;

use serde_json::{json, Value as Json};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, info, warn};

use super::cache::{Cache, Change, IndexSpec, TableCache};
use super::connection::{Connection, Endpoint, Notification, Timeouts};
use super::error::{Error, Result};
use super::model::Table;
use super::schema::Schema;
use super::transact::{self, Op, OpResult};
use super::value::{Atom, Uuid};

const MONITOR_ID: &str = "kube-ovn";
const ZERO_UUID: &str = "00000000-0000-0000-0000-000000000000";
/// `last-txn-id` meaning "no history": ask for everything.
const NO_TXN: &str = ZERO_UUID;

/// A monitored table: its name, the columns to monitor (and require in the
/// server's schema) and the client-side indexes to keep.
#[derive(Debug, Clone)]
pub struct TableSpec {
    pub name: String,
    pub columns: Vec<String>,
    pub indexes: Vec<IndexSpec>,
}

impl TableSpec {
    /// Monitors the columns of a typed model.
    pub fn of<T: Table>() -> TableSpec {
        TableSpec {
            name: T::NAME.to_string(),
            columns: T::COLUMNS.iter().map(|c| c.to_string()).collect(),
            indexes: Vec::new(),
        }
    }

    /// Adds a client-side index.
    pub fn index(mut self, spec: IndexSpec) -> TableSpec {
        self.indexes.push(spec);
        self
    }
}

/// How a `Client` connects and what it monitors.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub tables: Vec<TableSpec>,
    pub timeouts: Timeouts,
    /// First and largest pause between reconnection attempts.
    pub backoff: (Duration, Duration),
}

impl ClientOptions {
    pub fn new(tables: Vec<TableSpec>) -> ClientOptions {
        ClientOptions {
            tables,
            timeouts: Timeouts::default(),
            backoff: (Duration::from_millis(100), Duration::from_secs(5)),
        }
    }
}

/// One row of a server's `_Server.Database` table: how the server holds a database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerDatabase {
    pub name: String,
    /// `standalone`, `clustered` or `relay`.
    pub model: String,
    /// For a clustered database: this member is in contact with its cluster
    /// (has a leader, is not joining or leaving). Always true otherwise.
    pub connected: bool,
    /// This member is the raft leader (true for a standalone database).
    pub leader: bool,
    /// The cluster's id; `None` for a standalone database and for a member
    /// still joining a cluster it has never been part of.
    pub cid: Option<String>,
}

impl ServerDatabase {
    pub fn is_clustered(&self) -> bool {
        self.model == "clustered"
    }
}

/// Reads how the server on `conn` holds `database` from its `_Server`
/// database; `None` when it does not serve `database` at all.
pub async fn server_database(conn: &Connection, database: &str) -> Result<Option<ServerDatabase>> {
    let select = json!(["_Server", {
        "op": "select",
        "table": "Database",
        "where": [["name", "==", database]],
        "columns": ["name", "model", "connected", "leader", "cid"],
    }]);
    let reply = conn.call("transact", select).await?;
    let bad = |reason: &str| Error::Schema {
        database: "_Server".into(),
        reason: format!("Database row of {database}: {reason}"),
    };
    let Some(row) = reply
        .get(0)
        .and_then(|r| r.get("rows"))
        .and_then(|r| r.get(0))
    else {
        if let Some(e) = reply.get(0).and_then(|r| r.get("error")) {
            return Err(bad(&e.to_string()));
        }
        return Ok(None);
    };
    let text = |c: &str| row.get(c).and_then(Json::as_str).map(str::to_string);
    let flag = |c: &str| row.get(c).and_then(Json::as_bool);
    Ok(Some(ServerDatabase {
        name: text("name").ok_or_else(|| bad("no name"))?,
        model: text("model").ok_or_else(|| bad("no model"))?,
        connected: flag("connected").ok_or_else(|| bad("no connected flag"))?,
        leader: flag("leader").ok_or_else(|| bad("no leader flag"))?,
        // An optional uuid: `["uuid", "<id>"]`, or the empty set `["set", []]`;
        // a member still joining reports the all-zero uuid.
        cid: row
            .get("cid")
            .and_then(|c| match c.get(0).and_then(Json::as_str) {
                Some("uuid") => c.get(1).and_then(Json::as_str),
                _ => None,
            })
            .filter(|cid| *cid != ZERO_UUID)
            .map(str::to_string),
    }))
}

/// Which monitor request the server accepted (probed once, newest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MonitorMethod {
    CondSince,
    Cond,
    Plain,
}

struct Inner {
    /// The members to try, in order; one for a standalone server.
    endpoints: Vec<Endpoint>,
    /// Index in `endpoints` of the current (or last) session's member.
    current: Mutex<usize>,
    database: String,
    options: ClientOptions,
    conn: watch::Sender<Option<Arc<Connection>>>,
    cache: RwLock<Cache>,
    generation: watch::Sender<u64>,
    changes: broadcast::Sender<Arc<Vec<Change>>>,
    method: Mutex<MonitorMethod>,
    last_txn_id: Mutex<String>,
    schema: RwLock<Schema>,
    shutdown: CancellationToken,
    sessions: std::sync::atomic::AtomicU64,
}

/// A connected, monitored OVSDB database. Cheap to clone; the connection
/// closes when the last clone is dropped.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    _guard: Arc<DropGuard>,
}

impl Client {
    /// Connects to `endpoint` ("unix:/path" or "tcp:host:port", or a
    /// comma-separated list of the members of a clustered database), checks
    /// that `database` has every table and column in `options`, and fills the
    /// cache. Later disconnects are repaired in the background.
    pub async fn connect(endpoint: &str, database: &str, options: ClientOptions) -> Result<Client> {
        let endpoints = Endpoint::parse_list(endpoint)?;
        let shutdown = CancellationToken::new();
        let inner = Arc::new(Inner {
            endpoints,
            current: Mutex::new(0),
            database: database.to_string(),
            options,
            conn: watch::channel(None).0,
            cache: RwLock::new(Cache::default()),
            generation: watch::channel(0).0,
            changes: broadcast::channel(1024).0,
            method: Mutex::new(MonitorMethod::CondSince),
            last_txn_id: Mutex::new(NO_TXN.to_string()),
            schema: RwLock::new(Schema::default()),
            shutdown: shutdown.clone(),
            sessions: std::sync::atomic::AtomicU64::new(0),
        });
        let notes = inner.establish(0).await?;
        tokio::spawn(supervise(inner.clone(), notes));
        Ok(Client {
            inner,
            _guard: Arc::new(shutdown.drop_guard()),
        })
    }

    pub fn database(&self) -> &str {
        &self.inner.database
    }

    /// The monitor request the server accepted.
    pub fn monitor_method(&self) -> MonitorMethod {
        *self.inner.method.lock().expect("method lock poisoned")
    }

    pub fn schema(&self) -> Schema {
        self.inner
            .schema
            .read()
            .expect("schema lock poisoned")
            .clone()
    }

    /// How many sessions were established so far (1 + reconnects).
    pub fn sessions(&self) -> u64 {
        self.inner
            .sessions
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The endpoint of the current session, if one is up.
    pub fn endpoint(&self) -> Option<Endpoint> {
        self.inner
            .conn
            .borrow()
            .as_ref()
            .map(|c| c.endpoint().clone())
    }

    /// True while a session is up.
    pub fn is_connected(&self) -> bool {
        self.inner.conn.borrow().is_some()
    }

    /// Runs `ops` as one transaction. On success the cache already holds
    /// its effects. A failed operation is an `Error::Operation` naming it.
    pub async fn transact(&self, ops: Vec<Op>) -> Result<Vec<OpResult>> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let conn = self.connection().await?;
        let result = conn
            .call("transact", transact::params(&self.inner.database, &ops))
            .await?;
        let results = transact::parse_results(&ops, &result)?;
        if ops.iter().any(Op::writes) {
            conn.barrier().await?;
        }
        Ok(results)
    }

    /// Returns once the cache holds every change the server sent so far.
    pub async fn sync(&self) -> Result<()> {
        self.connection().await?.barrier().await
    }

    /// Sends any request on the current session (e.g. `list_dbs`).
    pub async fn call(&self, method: &str, params: Json) -> Result<Json> {
        self.connection().await?.call(method, params).await
    }

    async fn connection(&self) -> Result<Arc<Connection>> {
        let mut rx = self.inner.conn.subscribe();
        let wait = async { rx.wait_for(Option::is_some).await.map(|c| c.clone()) };
        match tokio::time::timeout(self.inner.options.timeouts.request, wait).await {
            Ok(Ok(c)) => Ok(c.expect("waited for Some")),
            Ok(Err(_)) => Err(Error::Closed("client shut down".into())),
            Err(_) => Err(Error::Timeout(format!(
                "no session with {} for {:?}",
                self.inner.members(),
                self.inner.options.timeouts.request
            ))),
        }
    }

    /// Read access to the whole cache.
    pub fn cache(&self) -> RwLockReadGuard<'_, Cache> {
        self.inner.cache.read().expect("cache lock poisoned")
    }

    /// Every cached row of `T`.
    pub fn list<T: Table>(&self) -> Result<Vec<T>> {
        let cache = self.cache();
        let table = monitored::<T>(&cache)?;
        table.rows().map(|(u, r)| T::from_row(*u, r)).collect()
    }

    /// The cached row of `T` with this `_uuid`.
    pub fn get<T: Table>(&self, uuid: Uuid) -> Result<Option<T>> {
        let cache = self.cache();
        let table = monitored::<T>(&cache)?;
        table.get(&uuid).map(|r| T::from_row(uuid, r)).transpose()
    }

    /// Cached rows of `T` whose `index` equals `key` (e.g. a name, or an
    /// `external_ids:pod` value).
    pub fn find<T: Table>(&self, index: &IndexSpec, key: impl Into<Atom>) -> Result<Vec<T>> {
        let cache = self.cache();
        let table = monitored::<T>(&cache)?;
        table
            .lookup(index, &key.into())?
            .into_iter()
            .filter_map(|u| table.get(&u).map(|r| T::from_row(u, r)))
            .collect()
    }

    /// Changed rows, as they are applied to the cache.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Vec<Change>>> {
        self.inner.changes.subscribe()
    }

    /// Waits until `check` returns `Some`, or `deadline`. `check` reads the
    /// cache through this client's accessors (no lock is held while it runs);
    /// it runs at once (the condition may already hold) and after every
    /// change to the cache, across reconnects.
    pub async fn wait_until<T>(
        &self,
        deadline: Instant,
        what: &str,
        mut check: impl FnMut() -> Option<T>,
    ) -> Result<T> {
        let mut gen = self.inner.generation.subscribe();
        loop {
            gen.borrow_and_update();
            if let Some(v) = check() {
                return Ok(v);
            }
            match tokio::time::timeout_at(deadline, gen.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    return Err(Error::Closed(format!(
                        "client shut down waiting for {what}"
                    )))
                }
                Err(_) => return Err(Error::Timeout(format!("waiting for {what}"))),
            }
        }
    }
}

fn monitored<T: Table>(cache: &Cache) -> Result<&TableCache> {
    cache.table(T::NAME).ok_or_else(|| {
        Error::NotSupported(format!("table {} is not monitored by this client", T::NAME))
    })
}

impl Inner {
    /// The endpoints as given, for messages.
    fn members(&self) -> String {
        let names: Vec<String> = self.endpoints.iter().map(Endpoint::to_string).collect();
        names.join(",")
    }

    /// Establishes a session with the first usable member, trying them in
    /// order from index `first` (wrapping around).
    async fn establish(&self, first: usize) -> Result<mpsc::UnboundedReceiver<Notification>> {
        let n = self.endpoints.len();
        let mut failures = Vec::new();
        for k in 0..n {
            let index = (first + k) % n;
            match self.establish_on(&self.endpoints[index]).await {
                Ok(notes) => {
                    *self.current.lock().expect("current lock poisoned") = index;
                    return Ok(notes);
                }
                // One endpoint: its error as it is, as before lists existed.
                Err(e) if n == 1 => return Err(e),
                Err(e) => {
                    debug!(endpoint = %self.endpoints[index], error = %e, "member not usable");
                    failures.push(format!("{}: {e}", self.endpoints[index]));
                }
            }
        }
        Err(Error::Io {
            endpoint: self.members(),
            reason: format!("no usable member ({})", failures.join("; ")),
        })
    }

    /// Opens a session with `endpoint`, checks the schema, monitors, and fills the cache.
    async fn establish_on(
        &self,
        endpoint: &Endpoint,
    ) -> Result<mpsc::UnboundedReceiver<Notification>> {
        let (conn, notes) = Connection::open(endpoint, self.options.timeouts).await?;
        // Like ovsdb-idl: a member cut off from its cluster cannot commit, so
        // go to another one. With a single endpoint there is no other one.
        if self.endpoints.len() > 1 {
            self.check_member(&conn).await?;
        }
        let schema = Schema::from_json(&conn.call("get_schema", json!([self.database])).await?)?;
        let mut requests = serde_json::Map::new();
        {
            let mut cache = self.cache.write().expect("cache lock poisoned");
            for t in &self.options.tables {
                let cols: Vec<&str> = t.columns.iter().map(String::as_str).collect();
                schema.require(&t.name, &cols)?;
                let ts = &schema.tables[&t.name];
                let mut indexes: Vec<IndexSpec> = ts
                    .indexes
                    .iter()
                    .filter(|i| i.len() == 1 && t.columns.contains(&i[0]))
                    .map(|i| IndexSpec::Column(i[0].clone()))
                    .collect();
                indexes.extend(t.indexes.iter().cloned());
                cache.add_table(&t.name, ts, &indexes);
                requests.insert(t.name.clone(), json!([{"columns": t.columns}]));
            }
        }
        *self.schema.write().expect("schema lock poisoned") = schema;
        let requests = Json::Object(requests);
        let changes = self.monitor(&conn, requests).await?;
        self.publish(changes);
        self.conn.send_replace(Some(Arc::new(conn)));
        self.sessions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        info!(%endpoint, database = %self.database, "ovsdb monitor up");
        Ok(notes)
    }

    /// Fails unless the member on `conn` serves the database and, when it is
    /// clustered, is connected to its cluster.
    async fn check_member(&self, conn: &Connection) -> Result<()> {
        let not_usable = |reason: String| Error::Io {
            endpoint: conn.endpoint().to_string(),
            reason,
        };
        match server_database(conn, &self.database).await {
            Ok(Some(db)) if db.is_clustered() && !db.connected => Err(not_usable(format!(
                "member of clustered {} not connected to its cluster",
                self.database
            ))),
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(not_usable(format!("does not serve {}", self.database))),
            // A server without `_Server` (before OVS 2.9) holds standalone databases only.
            Err(Error::Rpc { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Starts the monitor with the newest method the server accepts and
    /// brings the cache up to date with its reply.
    async fn monitor(&self, conn: &Connection, requests: Json) -> Result<Vec<Change>> {
        let db = &self.database;
        loop {
            let method = *self.method.lock().expect("method lock poisoned");
            let reply = match method {
                MonitorMethod::CondSince => {
                    let last = self.last_txn_id.lock().expect("txn lock poisoned").clone();
                    conn.call(
                        "monitor_cond_since",
                        json!([db, MONITOR_ID, requests, last]),
                    )
                    .await
                }
                MonitorMethod::Cond => {
                    conn.call("monitor_cond", json!([db, MONITOR_ID, requests]))
                        .await
                }
                MonitorMethod::Plain => {
                    conn.call("monitor", json!([db, MONITOR_ID, requests]))
                        .await
                }
            };
            let reply = match (reply, method) {
                (Ok(r), _) => r,
                (Err(Error::Rpc { error, .. }), MonitorMethod::CondSince | MonitorMethod::Cond) => {
                    let next = if method == MonitorMethod::CondSince {
                        MonitorMethod::Cond
                    } else {
                        MonitorMethod::Plain
                    };
                    debug!(?method, %error, "monitor method refused, trying {next:?}");
                    *self.method.lock().expect("method lock poisoned") = next;
                    continue;
                }
                (Err(e), _) => return Err(e),
            };
            return match method {
                MonitorMethod::CondSince => {
                    let found = reply.get(0).and_then(Json::as_bool).unwrap_or(false);
                    let last = reply
                        .get(1)
                        .and_then(Json::as_str)
                        .unwrap_or(NO_TXN)
                        .to_string();
                    let updates = reply.get(2).unwrap_or(&Json::Null);
                    let changes = if found {
                        self.cache
                            .write()
                            .expect("cache lock poisoned")
                            .apply_update2(updates)?
                    } else {
                        self.replace(|snap| snap.apply_update2(updates))?
                    };
                    *self.last_txn_id.lock().expect("txn lock poisoned") = last;
                    Ok(changes)
                }
                MonitorMethod::Cond => self.replace(|snap| snap.apply_update2(&reply)),
                MonitorMethod::Plain => self.replace(|snap| snap.apply_update(&reply)),
            };
        }
    }

    fn replace(&self, fill: impl FnOnce(&mut Cache) -> Result<Vec<Change>>) -> Result<Vec<Change>> {
        let mut snap = self.cache.read().expect("cache lock poisoned").empty_like();
        fill(&mut snap)?;
        Ok(self
            .cache
            .write()
            .expect("cache lock poisoned")
            .replace_all(snap))
    }

    fn apply(&self, note: Notification) -> Result<()> {
        let changes = match note.method.as_str() {
            "update3" => {
                let p = &note.params;
                let changes = self
                    .cache
                    .write()
                    .expect("cache lock poisoned")
                    .apply_update2(p.get(2).unwrap_or(&Json::Null))?;
                if let Some(id) = p.get(1).and_then(Json::as_str) {
                    *self.last_txn_id.lock().expect("txn lock poisoned") = id.to_string();
                }
                changes
            }
            "update2" => self
                .cache
                .write()
                .expect("cache lock poisoned")
                .apply_update2(note.params.get(1).unwrap_or(&Json::Null))?,
            "update" => self
                .cache
                .write()
                .expect("cache lock poisoned")
                .apply_update(note.params.get(1).unwrap_or(&Json::Null))?,
            "monitor_canceled" => {
                return Err(Error::Closed("server canceled the monitor".into()));
            }
            other => {
                debug!(method = other, "ignoring notification");
                return Ok(());
            }
        };
        self.publish(changes);
        Ok(())
    }

    fn publish(&self, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        self.generation.send_modify(|g| *g += 1);
        let _ = self.changes.send(Arc::new(changes));
    }
}

/// Applies notifications while the session lives; then reconnects with
/// backoff and resyncs, until the last `Client` clone is dropped.
async fn supervise(inner: Arc<Inner>, mut notes: mpsc::UnboundedReceiver<Notification>) {
    loop {
        let reason = loop {
            let note = tokio::select! {
                _ = inner.shutdown.cancelled() => return,
                n = notes.recv() => n,
            };
            let Some(note) = note else {
                break inner
                    .conn
                    .borrow()
                    .as_ref()
                    .and_then(|c| c.closed_reason())
                    .unwrap_or_else(|| "session ended".into());
            };
            if let Some(ack) = note.ack {
                let _ = ack.send(Ok(Json::Null));
                continue;
            }
            if let Err(e) = inner.apply(note) {
                break e.to_string();
            }
        };
        inner.conn.send_replace(None);
        let lost = *inner.current.lock().expect("current lock poisoned");
        warn!(endpoint = %inner.endpoints[lost], %reason, "ovsdb session lost, reconnecting");
        let (mut pause, max) = inner.options.backoff;
        notes = loop {
            tokio::select! {
                _ = inner.shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            // The lost member is tried last: another one is likelier up.
            match inner.establish(lost + 1).await {
                Ok(n) => break n,
                Err(e) => {
                    debug!(endpoints = %inner.members(), error = %e, "reconnect failed");
                    pause = (pause * 2).min(max);
                }
            }
        };
    }
}
