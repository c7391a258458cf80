//! The NetworkAttachmentDefinition watch: keeps the NAD store the planner
//! reads, tells the user (an Event on the NAD) when a kube-ovn NAD's config
//! is malformed or names the wrong provider, and requeues the pods waiting
//! for a NAD when one appears or changes. NADs of other plugins are ignored.

use std::sync::Arc;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::store::Writer;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Resource, ResourceExt};
use tracing::warn;

use super::context::Context;
use crate::api::annotations::Provider;
use crate::api::nad::NetworkAttachmentDefinition;

/// What is wrong with a NAD that claims to be kube-ovn's, if anything. Pure.
pub fn nad_problem(nad: &NetworkAttachmentDefinition) -> Option<(&'static str, String)> {
    let key = nad.key();
    match nad.kube_ovn_config() {
        Err(e) if e.is_not_kube_ovn() => None,
        Err(e) => Some((
            e.reason(),
            format!("NetworkAttachmentDefinition {key}: {e}"),
        )),
        Ok(conf) => {
            let expected = Provider::for_nad(
                &nad.name_any(),
                nad.metadata.namespace.as_deref().unwrap_or_default(),
            )
            .map(|p| p.to_string());
            match expected {
                Ok(p) if p == conf.provider => None,
                Ok(p) => Some((
                    "ProviderMismatch",
                    format!(
                        "NetworkAttachmentDefinition {key}: provider {:?} must be {p:?} (<nad>.<namespace>.ovn)",
                        conf.provider
                    ),
                )),
                Err(e) => Some((
                    "ProviderMismatch",
                    format!("NetworkAttachmentDefinition {key}: {e}"),
                )),
            }
        }
    }
}

/// Watches NADs into `writer` until the process stops.
pub async fn watch(ctx: Arc<Context>, mut writer: Writer<NetworkAttachmentDefinition>) {
    let api: Api<NetworkAttachmentDefinition> = Api::all(ctx.client.clone());
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                warn!(error = %e, "NetworkAttachmentDefinition watch failed; retrying");
                continue;
            }
        };
        writer.apply_watcher_event(&event);
        match &event {
            watcher::Event::Apply(nad) | watcher::Event::InitApply(nad) => {
                if let Some((reason, message)) = nad_problem(nad) {
                    warn!(nad = %nad.key(), reason, "{message}");
                    ctx.events
                        .warn(&nad.object_ref(&()), reason, "Validate", &message)
                        .await;
                }
                if matches!(event, watcher::Event::Apply(_)) {
                    ctx.requeue_waiting();
                }
            }
            watcher::Event::Delete(_) | watcher::Event::InitDone => ctx.requeue_waiting(),
            watcher::Event::Init => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::nad::NetworkAttachmentDefinitionSpec;

    fn nad(name: &str, config: &str) -> NetworkAttachmentDefinition {
        let mut n = NetworkAttachmentDefinition::new(
            name,
            NetworkAttachmentDefinitionSpec {
                config: config.into(),
            },
        );
        n.metadata.namespace = Some("default".into());
        n
    }

    #[test]
    fn only_broken_kube_ovn_nads_are_reported() {
        assert_eq!(
            nad_problem(&nad(
                "n1",
                r#"{"cniVersion":"0.3.1","type":"kube-ovn","server_socket":"/run/openvswitch/kube-ovn-daemon.sock","provider":"n1.default.ovn"}"#
            )),
            None
        );
        assert_eq!(
            nad_problem(&nad("br", r#"{"cniVersion":"0.3.1","type":"bridge"}"#)),
            None
        );
        let (reason, message) = nad_problem(&nad(
            "n1",
            r#"{"cniVersion":"0.3.1","type":"kube-ovn","server_socket":"/run/openvswitch/kube-ovn-daemon.sock","provider":"other.default.ovn"}"#,
        ))
        .unwrap();
        assert_eq!(reason, "ProviderMismatch");
        assert!(message.contains("n1.default.ovn"), "{message}");
        let (reason, _) = nad_problem(&nad("n1", r#"{"type":"kube-ovn", "#)).unwrap();
        assert_eq!(reason, "InvalidNetworkAttachmentDefinition");
        let (reason, message) = nad_problem(&nad(
            "n1",
            r#"{"cniVersion":"0.3.1","type":"kube-ovn","server_socket":"/run/openvswitch/kube-ovn-daemon.sock"}"#,
        ))
        .unwrap();
        assert_eq!(reason, "MissingProvider");
        assert!(
            message.contains(r#"add "provider": "n1.default.ovn""#),
            "{message}"
        );
    }
}
