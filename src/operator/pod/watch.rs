//! The pod controller's runtime glue: one pod watch that feeds the reflector store and says
//! which pods changed, the feed that turns that into queue entries (and a GC after each
//! complete list), and the workers that run `reconcile` from the queue. No attachment logic
//! lives here.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::reflector::store::Writer;
use kube::runtime::{watcher, WatchStreamExt};
use tracing::{debug, info, warn, Instrument};

use super::reconcile;
use crate::api::annotations::{parse_provider_annotation, ProviderKey, NETWORKS};
use crate::operator::context::{Context, PodKey};

/// Whether a pod needs us at all: it names networks or carries our annotations.
fn relevant(pod: &Pod) -> bool {
    pod.metadata.annotations.as_ref().is_some_and(|a| {
        a.contains_key(NETWORKS)
            || a.keys().any(|k| {
                matches!(
                    parse_provider_annotation(k),
                    Some((_, ProviderKey::Allocated))
                )
            })
    })
}

/// Runs `concurrency` workers on the pod queue. Start them once the pod
/// store is ready: a pod missing from the store counts as deleted.
pub async fn run_workers(ctx: Arc<Context>, concurrency: usize) {
    debug!(workers = concurrency, "pod workers starting");
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let ctx = ctx.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let key = ctx.pod_queue.next().await;
                let span = tracing::info_span!("pod", pod = %key.name, namespace = %key.namespace);
                let result = reconcile(&ctx, &key).instrument(span).await;
                match result {
                    Ok(None) => {}
                    Ok(Some(delay)) => ctx.pod_queue.add_after(key.clone(), delay),
                    Err(e) => {
                        warn!(error = %e, "pod reconcile failed; retrying");
                        ctx.pod_queue.add_after(key.clone(), Duration::from_secs(1));
                    }
                }
                ctx.pod_queue.done(&key);
                ctx.initial_done(&key);
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
}

/// What the pod watch tells the controller.
#[derive(Debug)]
pub enum PodFeed {
    Changed(PodKey),
    Deleted(PodKey, Arc<Pod>),
    /// A (re)list completed with these relevant pods; `first` for the first one.
    Listed {
        keys: Vec<PodKey>,
        first: bool,
    },
}

/// Feeds the pod store from one pod watch and tells `feed` what changed.
/// Pods listed while a (re)list is under way are reported once it is
/// complete, so no worker mistakes a listed pod for a deleted one. Needs
/// only the client: it starts before IPAM and NB are open, overlapping the
/// longest part of a restart (listing every pod).
pub async fn watch_pods(
    client: kube::Client,
    mut writer: Writer<Pod>,
    feed: tokio::sync::mpsc::UnboundedSender<PodFeed>,
) {
    let api: Api<Pod> = Api::all(client);
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut listing: HashSet<PodKey> = HashSet::new();
    let mut first = true;
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                warn!(error = %e, "pod watch failed; retrying");
                continue;
            }
        };
        writer.apply_watcher_event(&event);
        let note = match event {
            watcher::Event::Apply(pod) => {
                relevant(&pod).then(|| PodFeed::Changed(PodKey::of(&pod)))
            }
            watcher::Event::Delete(pod) => Some(PodFeed::Deleted(PodKey::of(&pod), Arc::new(pod))),
            watcher::Event::Init => {
                listing.clear();
                None
            }
            watcher::Event::InitApply(pod) => {
                if relevant(&pod) {
                    listing.insert(PodKey::of(&pod));
                }
                None
            }
            watcher::Event::InitDone => {
                let keys = listing.drain().collect();
                let note = PodFeed::Listed { keys, first };
                first = false;
                Some(note)
            }
        };
        if let Some(note) = note {
            if feed.send(note).is_err() {
                return;
            }
        }
    }
}

/// Applies what the pod watch reports to the queue; each complete list triggers a GC.
pub async fn feed(
    ctx: Arc<Context>,
    mut notes: tokio::sync::mpsc::UnboundedReceiver<PodFeed>,
    gc: Arc<tokio::sync::Notify>,
) {
    while let Some(note) = notes.recv().await {
        ctx.policy_wake.notify_one();
        match note {
            PodFeed::Changed(key) => ctx.pod_queue.add(key),
            PodFeed::Deleted(key, pod) => {
                ctx.tombstones
                    .lock()
                    .expect("tombstones lock poisoned")
                    .insert(key.clone(), pod);
                ctx.pod_queue.add(key);
            }
            PodFeed::Listed { keys, first } => {
                if first {
                    info!(pods = keys.len(), "initial pod list complete");
                    ctx.set_initial(keys.iter().cloned().collect());
                }
                for key in keys {
                    ctx.pod_queue.add(key);
                }
                gc.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_matter_when_they_name_networks_or_carry_our_annotations() {
        let pod = |annotations: &[(&str, &str)]| {
            let mut p = Pod::default();
            p.metadata.annotations = Some(
                annotations
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            );
            p
        };
        assert!(!relevant(&pod(&[("app", "x")])));
        assert!(relevant(&pod(&[(NETWORKS, "default/n1")])));
        let leftover = pod(&[("n1.default.ovn.kubernetes.io/allocated", "true")]);
        assert!(relevant(&leftover));
    }
}
