//! The pod work queue: a key is queued at most once, handled by at most one
//! worker at a time (a key that changes while being handled is queued again
//! when the worker is done), and can be requeued after a delay. What the
//! kube-runtime `Controller` does, minus its one blind spot for us: deleted
//! objects are handled too (the pod controller frees their addresses).

use std::collections::{HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

#[derive(Debug)]
struct State<K> {
    pending: VecDeque<K>,
    queued: HashSet<K>,
    active: HashSet<K>,
    /// Active keys that were queued again meanwhile.
    dirty: HashSet<K>,
}

/// A deduplicating queue of keys.
#[derive(Debug)]
pub struct WorkQueue<K> {
    state: Mutex<State<K>>,
    notify: Notify,
}

impl<K: Clone + Eq + Hash + Send + 'static> WorkQueue<K> {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                pending: VecDeque::new(),
                queued: HashSet::new(),
                active: HashSet::new(),
                dirty: HashSet::new(),
            }),
            notify: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<K>> {
        self.state.lock().expect("work queue lock poisoned")
    }

    /// Queues `key` unless it is already waiting.
    pub fn add(&self, key: K) {
        let mut s = self.lock();
        if s.active.contains(&key) {
            s.dirty.insert(key);
            return;
        }
        if s.queued.insert(key.clone()) {
            s.pending.push_back(key);
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Queues `key` after `delay`.
    pub fn add_after(self: &Arc<Self>, key: K, delay: Duration) {
        let queue = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            queue.add(key);
        });
    }

    /// The next key to handle; call `done` with it afterwards.
    pub async fn next(&self) -> K {
        loop {
            let notified = self.notify.notified();
            {
                let mut s = self.lock();
                if let Some(key) = s.pending.pop_front() {
                    s.queued.remove(&key);
                    s.active.insert(key.clone());
                    let more = !s.pending.is_empty();
                    drop(s);
                    if more {
                        self.notify.notify_one();
                    }
                    return key;
                }
            }
            notified.await;
        }
    }

    /// Marks `key` handled; queues it again if it changed meanwhile.
    pub fn done(&self, key: &K) {
        let again = {
            let mut s = self.lock();
            s.active.remove(key);
            s.dirty.remove(key)
        };
        if again {
            self.add(key.clone());
        }
    }

    /// Keys waiting or being handled.
    pub fn len(&self) -> usize {
        let s = self.lock();
        s.pending.len() + s.active.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_is_queued_once_and_requeued_when_it_changed_while_active() {
        let q = WorkQueue::new();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        let first = q.next().await;
        assert_eq!(first, "a");
        q.add("a"); // changed while active
        let second = q.next().await;
        assert_eq!(second, "b");
        q.done(&"b");
        q.done(&"a");
        assert_eq!(q.next().await, "a");
        q.done(&"a");
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn delayed_keys_arrive() {
        let q = WorkQueue::new();
        q.add_after(7u32, Duration::from_millis(10));
        let got = tokio::time::timeout(Duration::from_secs(5), q.next()).await;
        assert_eq!(got.ok(), Some(7));
    }
}
