//! Kubernetes Events for users: a reason (one CamelCase word) and a message
//! naming the NAD, subnet and address. The same message for the same object
//! is published once, so a pod retried while it waits for a NAD does not
//! flood its Events.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tracing::warn;

/// Publishes Events for the operator's controllers.
pub struct Notifier {
    client: kube::Client,
    reporter: Reporter,
    /// (object uid or name, reason) → last message published.
    seen: Mutex<HashMap<(String, String), String>>,
}

fn identity(object: &ObjectReference) -> String {
    object.uid.clone().unwrap_or_else(|| {
        format!(
            "{}/{}/{}",
            object.kind.as_deref().unwrap_or_default(),
            object.namespace.as_deref().unwrap_or_default(),
            object.name.as_deref().unwrap_or_default()
        )
    })
}

impl Notifier {
    pub fn new(client: kube::Client) -> Self {
        Self::for_controller(client, "kube-ovn-operator")
    }

    /// A notifier whose Events name `controller` as their source (`kube-ovn-cni` for the node).
    pub fn for_controller(client: kube::Client, controller: &str) -> Self {
        let reporter = Reporter {
            controller: controller.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            client,
            reporter,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// A Warning Event on `object`, unless the same one was just published.
    pub async fn warn(&self, object: &ObjectReference, reason: &str, action: &str, message: &str) {
        self.publish(object, EventType::Warning, reason, action, message)
            .await
    }

    /// A Normal Event on `object` (deduplicated like `warn`).
    pub async fn normal(
        &self,
        object: &ObjectReference,
        reason: &str,
        action: &str,
        message: &str,
    ) {
        self.publish(object, EventType::Normal, reason, action, message)
            .await
    }

    async fn publish(
        &self,
        object: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        message: &str,
    ) {
        let key = (identity(object), reason.to_owned());
        {
            let mut seen = self.seen.lock().expect("events lock poisoned");
            if seen.get(&key).map(String::as_str) == Some(message) {
                return;
            }
            seen.insert(key, message.to_owned());
        }
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(truncate(message, 1000)),
            action: action.to_owned(),
            secondary: None,
        };
        // A fresh recorder each time: kube's Recorder keys its series on the reason alone, so
        // a new message for the same reason would only bump the old Event's count and the
        // user would never read it. Repeats of one message are already dropped above.
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        if let Err(e) = recorder.publish(&event, object).await {
            warn!(error = %e, reason, message, "publishing an Event failed");
        }
    }

    /// Forgets what was published for `object`, so a recurring problem is told again.
    pub fn forget(&self, object: &ObjectReference) {
        let id = identity(object);
        self.seen
            .lock()
            .expect("events lock poisoned")
            .retain(|(o, _), _| *o != id);
    }
}

fn truncate(message: &str, max: usize) -> String {
    if message.len() <= max {
        return message.to_owned();
    }
    let mut end = max;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}
