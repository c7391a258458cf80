//! `Ipam`: the allocator behind a lock, persisted in sled 0.34. This is the
//! type the operator holds (share it in an `Arc`).
//!
//! Durable before success: every change's writes are handed over while the
//! allocator lock is held (so sled sees changes in the allocator's order), and
//! the caller is answered only after a flush that covers them. Group commit:
//! one committer thread applies everything handed over since its last flush
//! as one sled batch, flushes, and wakes every caller it covered, so N
//! concurrent callers share one log write and one fsync. A repeated request
//! (same key) also waits for the flush that covers what it returns.
//!
//! Layout in the default tree: `s/<subnet>` → JSON `SubnetSpec` (subnet
//! definitions persist, so allocations never outlive the knowledge of their
//! subnet; the operator re-applies specs at start, a no-op when unchanged),
//! `a/<key>` → JSON `{seq, alloc}`, `c/<subnet>` → JSON cursors. A change is
//! never split: its writes land in one atomic sled batch (with others').
//! Reload rebuilds the allocator from these with `Allocator::restore`, which
//! resolves any double claim in favour of the later write.
//!
//! A failed sled write or flush poisons the store: later calls fail until
//! the process reopens it (after an fsync error nothing on disk can be
//! trusted; reopening reloads what is really there).

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::allocation::{
    Allocated, Allocation, AllocationRequest, CursorRecord, ReconcileReport, Release, Released,
    SubnetChange, SubnetView, Usage,
};
use super::allocator::Allocator;
use super::error::IpamError;
use super::subnet::SubnetSpec;

const SUBNET_PREFIX: &[u8] = b"s/";
const ALLOC_PREFIX: &[u8] = b"a/";
const CURSOR_PREFIX: &[u8] = b"c/";

/// How writes are made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitMode {
    /// Concurrent callers share flushes (the default).
    Group,
    /// Every change flushes on its own: the baseline the benchmark compares
    /// group commit with.
    FlushEach,
}

/// What `Ipam::open` found.
#[derive(Clone, Debug, Default)]
pub struct OpenReport {
    pub subnets: usize,
    pub allocations: usize,
    /// Allocations whose subnet is not defined; kept until it is.
    pub parked: usize,
    /// Allocations that lost a double claim to a later write and were removed.
    pub dropped: Vec<Allocation>,
    /// Opening sled and reading every record.
    pub read: Duration,
    /// Rebuilding the allocator from the records.
    pub rebuild: Duration,
    pub elapsed: Duration,
}

/// Group-commit counters (for metrics): `writes / flushes` is the mean
/// number of changes sharing one flush.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitStats {
    pub writes: u64,
    pub flushes: u64,
}

#[derive(Serialize, Deserialize)]
struct StoredAllocation {
    seq: u64,
    alloc: Allocation,
    /// Cursor positions this allocation set (dynamic families): the cursor
    /// travels with the allocation instead of costing a write of its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    cursors: Vec<CursorRecord>,
}

struct Guarded {
    alloc: Allocator,
    poisoned: Option<String>,
}

pub struct Ipam {
    inner: Mutex<Guarded>,
    db: sled::Db,
    committer: Committer,
    report: OpenReport,
}

fn key_of(prefix: &[u8], name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + name.len());
    k.extend_from_slice(prefix);
    k.extend_from_slice(name.as_bytes());
    k
}

fn to_json<T: Serialize>(what: &str, v: &T) -> Result<Vec<u8>, IpamError> {
    serde_json::to_vec(v).map_err(|e| IpamError::store(&format!("encode {what}"), e))
}

/// One record written (`Some`) or removed (`None`).
type Write = (Vec<u8>, Option<Vec<u8>>);

/// The writes of one change, in order; they reach sled in one atomic batch
/// (with other changes' writes, in group commit).
#[derive(Default)]
struct Changes {
    writes: Vec<Write>,
}

impl Changes {
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.push((key, Some(value)));
    }

    fn del(&mut self, key: Vec<u8>) {
        self.writes.push((key, None));
    }

    fn any(&self) -> bool {
        !self.writes.is_empty()
    }

    fn put_alloc(&mut self, a: &Allocator, alloc: &Allocated) -> Result<(), IpamError> {
        let seq = alloc.seq();
        let value = to_json(
            "allocation",
            &StoredAllocation {
                seq,
                alloc: alloc.to_allocation(),
                cursors: a.cursors(&alloc.subnet, Some(seq)),
            },
        )?;
        self.put(key_of(ALLOC_PREFIX, &alloc.key), value);
        Ok(())
    }

    fn put_cursors(&mut self, a: &Allocator, subnet: &str) -> Result<(), IpamError> {
        let value = to_json("cursors", &a.cursors(subnet, None))?;
        self.put(key_of(CURSOR_PREFIX, subnet), value);
        Ok(())
    }

    fn put_subnet(&mut self, a: &Allocator, subnet: &str) -> Result<(), IpamError> {
        let spec = a.spec(subnet).expect("subnet just applied is defined");
        self.put(key_of(SUBNET_PREFIX, subnet), to_json("subnet", spec)?);
        self.put_cursors(a, subnet)
    }
}

/// `writes` in order as one sled batch (a later write of a key wins, as it
/// would applied one by one).
fn to_batch(writes: impl IntoIterator<Item = Write>) -> sled::Batch {
    let mut batch = sled::Batch::default();
    for (key, value) in writes {
        match value {
            Some(v) => batch.insert(key, v),
            None => batch.remove(key),
        }
    }
    batch
}

/// How long `open` waits for a previous holder of the store's file lock.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Opens the sled database. sled releases its file lock only when its
/// background I/O threads let go of the last reference, a little after the
/// previous `Ipam` in this process was dropped; so a held lock is retried for
/// a while before it counts as "another process has it open".
fn open_db(path: &Path) -> Result<sled::Db, IpamError> {
    let started = Instant::now();
    loop {
        match sled::Config::new().path(path).open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && started.elapsed() < LOCK_WAIT =>
            {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(IpamError::store(&format!("open {}", path.display()), e)),
        }
    }
}

impl Ipam {
    /// Opens (or creates) the store at `path` with group commit.
    pub fn open(path: impl AsRef<Path>) -> Result<Ipam, IpamError> {
        Self::open_with(path, CommitMode::Group)
    }

    pub fn open_with(path: impl AsRef<Path>, mode: CommitMode) -> Result<Ipam, IpamError> {
        let started = Instant::now();
        let path = path.as_ref();
        let db = open_db(path)?;

        let mut subnets = Vec::new();
        for item in db.scan_prefix(SUBNET_PREFIX) {
            let (_, v) = item.map_err(|e| IpamError::store("read subnets", e))?;
            subnets.push(
                serde_json::from_slice::<SubnetSpec>(&v)
                    .map_err(|e| IpamError::store("decode subnet", e))?,
            );
        }
        let mut allocations = Vec::new();
        let mut cursors = Vec::new();
        for item in db.scan_prefix(ALLOC_PREFIX) {
            let (_, v) = item.map_err(|e| IpamError::store("read allocations", e))?;
            let s: StoredAllocation =
                serde_json::from_slice(&v).map_err(|e| IpamError::store("decode allocation", e))?;
            cursors.extend(s.cursors);
            allocations.push((s.seq, s.alloc));
        }
        for item in db.scan_prefix(CURSOR_PREFIX) {
            let (_, v) = item.map_err(|e| IpamError::store("read cursors", e))?;
            cursors.extend(
                serde_json::from_slice::<Vec<CursorRecord>>(&v)
                    .map_err(|e| IpamError::store("decode cursors", e))?,
            );
        }
        let subnet_count = subnets.len();
        let read = started.elapsed();
        let (alloc, dropped) = Allocator::restore(subnets, allocations, cursors);
        let rebuild = started.elapsed() - read;
        if !dropped.is_empty() {
            let mut changes = Changes::default();
            for a in &dropped {
                changes.del(key_of(ALLOC_PREFIX, &a.key));
            }
            // A dropped record may have carried the newest cursor.
            let names: Vec<String> = alloc.subnet_names().map(str::to_string).collect();
            for name in names {
                changes.put_cursors(&alloc, &name)?;
            }
            db.apply_batch(to_batch(changes.writes))
                .and_then(|_| db.flush())
                .map_err(|e| IpamError::store("remove stale allocations", e))?;
        }
        let parked = alloc
            .allocations()
            .filter(|a| alloc.spec(&a.subnet).is_none())
            .count();
        let report = OpenReport {
            subnets: subnet_count,
            allocations: alloc.len(),
            parked,
            dropped,
            read,
            rebuild,
            elapsed: started.elapsed(),
        };
        tracing::info!(
            path = %path.display(),
            subnets = report.subnets,
            allocations = report.allocations,
            parked = report.parked,
            dropped = report.dropped.len(),
            elapsed_ms = report.elapsed.as_millis() as u64,
            "IPAM store opened"
        );
        Ok(Ipam {
            inner: Mutex::new(Guarded {
                alloc,
                poisoned: None,
            }),
            committer: Committer::start(db.clone(), mode)?,
            db,
            report,
        })
    }

    pub fn open_report(&self) -> &OpenReport {
        &self.report
    }

    fn lock(&self) -> MutexGuard<'_, Guarded> {
        self.inner
            .lock()
            .expect("IPAM lock poisoned: a panic while allocating")
    }

    /// Runs `f` on the allocator and hands the changes it returns to the
    /// committer, both under the lock (so sled sees changes in the order the
    /// allocator made them); then waits until they are durable.
    async fn change<R>(
        &self,
        f: impl FnOnce(&mut Allocator, &mut Changes) -> Result<R, IpamError>,
    ) -> Result<R, IpamError> {
        let ticket = {
            let mut g = self.lock();
            if let Some(reason) = &g.poisoned {
                return Err(IpamError::Store {
                    reason: format!("store failed earlier, reopen it: {reason}"),
                });
            }
            let mut changes = Changes::default();
            let out = f(&mut g.alloc, &mut changes)?;
            if changes.any() {
                match self.committer.write(&self.db, changes.writes) {
                    Ok(ticket) => (out, ticket),
                    Err(e) => {
                        g.poisoned = Some(e.to_string());
                        return Err(e);
                    }
                }
            } else {
                (out, self.committer.last_written())
            }
        };
        let (out, ticket) = ticket;
        if let Err(e) = self.committer.wait(&self.db, ticket).await {
            self.lock().poisoned.get_or_insert_with(|| e.to_string());
            return Err(e);
        }
        Ok(out)
    }

    /// Adds or updates a subnet (see `Allocator::apply_subnet`).
    pub async fn apply_subnet(&self, spec: SubnetSpec) -> Result<SubnetChange, IpamError> {
        self.subnet_change(spec, Allocator::apply_subnet).await
    }

    pub async fn add_subnet(&self, spec: SubnetSpec) -> Result<SubnetChange, IpamError> {
        self.subnet_change(spec, Allocator::add_subnet).await
    }

    pub async fn update_subnet(&self, spec: SubnetSpec) -> Result<SubnetChange, IpamError> {
        self.subnet_change(spec, Allocator::update_subnet).await
    }

    async fn subnet_change(
        &self,
        spec: SubnetSpec,
        op: fn(&mut Allocator, SubnetSpec) -> Result<SubnetChange, IpamError>,
    ) -> Result<SubnetChange, IpamError> {
        let name = spec.name.clone();
        self.change(|a, w| {
            let before = a.spec(&name).cloned();
            let change = op(a, spec)?;
            if a.spec(&name) != before.as_ref() {
                w.put_subnet(a, &name)?;
            }
            for d in &change.dropped {
                w.del(key_of(ALLOC_PREFIX, &d.key));
            }
            Ok(change)
        })
        .await
    }

    /// Deletes a subnet; with `force` also frees its allocations (returned).
    pub async fn delete_subnet(
        &self,
        name: &str,
        force: bool,
    ) -> Result<Vec<Allocation>, IpamError> {
        self.change(|a, w| {
            let freed = a.delete_subnet(name, force)?;
            w.del(key_of(SUBNET_PREFIX, name));
            w.del(key_of(CURSOR_PREFIX, name));
            for f in &freed {
                w.del(key_of(ALLOC_PREFIX, &f.key));
            }
            Ok(freed)
        })
        .await
    }

    /// Allocates (or returns the key's existing allocation), durably.
    pub async fn allocate(&self, req: &AllocationRequest) -> Result<Allocated, IpamError> {
        self.change(|a, w| {
            let (alloc, fresh) = a.allocate(req)?;
            if fresh {
                w.put_alloc(a, &alloc)?;
            }
            Ok(alloc)
        })
        .await
    }

    /// Releases `key`, durably.
    pub async fn release(&self, key: &str, why: Release) -> Result<Released, IpamError> {
        self.change(|a, w| {
            let moved_cursor = a.moved_last_cursor(key);
            let released = a.release(key, why);
            if let Released::Freed(freed) = &released {
                w.del(key_of(ALLOC_PREFIX, key));
                if moved_cursor {
                    w.put_cursors(a, &freed.subnet)?;
                }
            }
            Ok(released)
        })
        .await
    }

    /// Garbage collection against the cluster's live attachment keys.
    pub async fn reconcile(&self, live: &HashSet<String>) -> Result<ReconcileReport, IpamError> {
        self.change(|a, w| {
            let report = a.reconcile(live);
            let mut subnets = HashSet::new();
            for f in &report.freed {
                w.del(key_of(ALLOC_PREFIX, &f.key));
                subnets.insert(&*f.subnet);
            }
            for subnet in subnets {
                w.put_cursors(a, subnet)?;
            }
            Ok(report)
        })
        .await
    }

    pub fn get(&self, key: &str) -> Option<Allocation> {
        self.lock().alloc.get(key).cloned()
    }

    pub fn subnet(&self, name: &str) -> Option<SubnetView> {
        self.lock().alloc.subnet(name)
    }

    pub fn usage(&self, subnet: &str) -> Result<Usage, IpamError> {
        self.lock().alloc.usage(subnet)
    }
    pub fn commit_stats(&self) -> CommitStats {
        let st = self.committer.state();
        CommitStats {
            writes: st.written,
            flushes: st.flushes,
        }
    }

    /// Read access to the allocator (tests, status, metrics).
    pub fn read<R>(&self, f: impl FnOnce(&Allocator) -> R) -> R {
        f(&self.lock().alloc)
    }
}

/// Where flushes stand, as seen by waiters.
#[derive(Clone, Debug, Default)]
struct Durable {
    /// Every write with a ticket `<= flushed` is on disk.
    flushed: u64,
    error: Option<String>,
}

struct CommitState {
    written: u64,
    /// Writes not yet applied to sled (group commit), oldest first.
    pending: Vec<Write>,
    flushes: u64,
    stop: bool,
}

struct CommitShared {
    state: Mutex<CommitState>,
    wake: Condvar,
    durable: watch::Sender<Durable>,
}

struct Committer {
    mode: CommitMode,
    shared: Arc<CommitShared>,
    thread: Option<JoinHandle<()>>,
}

impl Committer {
    fn start(db: sled::Db, mode: CommitMode) -> Result<Committer, IpamError> {
        let shared = Arc::new(CommitShared {
            state: Mutex::new(CommitState {
                written: 0,
                pending: Vec::new(),
                flushes: 0,
                stop: false,
            }),
            wake: Condvar::new(),
            durable: watch::channel(Durable::default()).0,
        });
        let thread = match mode {
            CommitMode::FlushEach => None,
            CommitMode::Group => {
                let s = shared.clone();
                Some(
                    std::thread::Builder::new()
                        .name("ipam-commit".into())
                        .spawn(move || group_commit(&s, &db))
                        .map_err(|e| IpamError::store("start the committer thread", e))?,
                )
            }
        };
        Ok(Committer {
            mode,
            shared,
            thread,
        })
    }

    fn state(&self) -> MutexGuard<'_, CommitState> {
        self.shared
            .state
            .lock()
            .expect("commit state lock poisoned")
    }

    /// Takes one change's writes; returns its ticket. Group commit queues
    /// them for the committer, which applies everything pending as one sled
    /// batch right before its flush (one log write per flush, not one per
    /// change); the baseline applies them at once.
    fn write(&self, db: &sled::Db, writes: Vec<Write>) -> Result<u64, IpamError> {
        let mut st = self.state();
        match self.mode {
            CommitMode::FlushEach => db
                .apply_batch(to_batch(writes))
                .map_err(|e| IpamError::store("write", e))?,
            CommitMode::Group => st.pending.extend(writes),
        }
        st.written += 1;
        self.shared.wake.notify_one();
        Ok(st.written)
    }

    fn last_written(&self) -> u64 {
        self.state().written
    }

    async fn wait(&self, db: &sled::Db, ticket: u64) -> Result<(), IpamError> {
        if self.mode == CommitMode::FlushEach {
            self.state().flushes += 1;
            let db = db.clone();
            return tokio::task::spawn_blocking(move || db.flush())
                .await
                .map_err(|e| IpamError::store("flush task", e))?
                .map(|_| ())
                .map_err(|e| IpamError::store("flush", e));
        }
        let mut rx = self.shared.durable.subscribe();
        let d = rx
            .wait_for(|d| d.flushed >= ticket || d.error.is_some())
            .await
            .map_err(|e| IpamError::store("committer gone", e))?;
        if d.flushed >= ticket {
            return Ok(());
        }
        Err(IpamError::Store {
            reason: format!("flush: {}", d.error.clone().unwrap_or_default()),
        })
    }
}

/// Longest a pending change waits for company before its flush starts.
const MAX_LINGER: Duration = Duration::from_millis(1);

/// The committer thread: apply everything written so far as one batch,
/// flush, publish, repeat.
///
/// Adaptive linger: a flush that starts with the first pending write leaves
/// the callers woken by the previous flush to the next one, so batches stay
/// small while each flush costs the same. The committer therefore waits (at
/// most `MAX_LINGER`) until about as many writes are pending as the last
/// batch had (three quarters of it). A lone caller (last batch 1) never
/// waits; when concurrency drops, one linger re-learns the smaller size.
fn group_commit(s: &CommitShared, db: &sled::Db) {
    let mut flushed = 0u64;
    let mut last_batch = 1u64;
    loop {
        let (target, writes) = {
            let mut st = s.state.lock().expect("commit state lock poisoned");
            while st.written == flushed && !st.stop {
                st = s.wake.wait(st).expect("commit state lock poisoned");
            }
            if st.written == flushed {
                return; // stopping, nothing pending
            }
            let want = (last_batch * 3 / 4).max(1);
            let deadline = Instant::now() + MAX_LINGER;
            while st.written - flushed < want && !st.stop {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                st = s
                    .wake
                    .wait_timeout(st, deadline - now)
                    .expect("commit state lock poisoned")
                    .0;
            }
            st.flushes += 1;
            last_batch = st.written - flushed;
            (st.written, std::mem::take(&mut st.pending))
        };
        match db.apply_batch(to_batch(writes)).and_then(|_| db.flush()) {
            Ok(_) => {
                flushed = target;
                s.durable.send_modify(|d| d.flushed = target);
            }
            Err(e) => {
                tracing::error!(error = %e, "IPAM write or flush failed; the store is poisoned");
                s.durable.send_modify(|d| d.error = Some(e.to_string()));
                flushed = target;
            }
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.state().stop = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("IPAM committer thread panicked");
            }
        }
    }
}
