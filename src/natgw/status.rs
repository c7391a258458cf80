//! `status.ready` of the gateway's EIPs and rules: which values to write (pure: what should
//! be against what the reflectors show) and the write itself, a server-side apply of only
//! `status.ready` on the `/status` subresource under field manager `kube-ovn-nat-gw`, so it
//! never touches the fields the controller owns.

use std::collections::BTreeMap;

use kube::api::{Api, Patch, PatchParams};
use kube::Resource;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::api::nat::{IptablesDnatRule, IptablesEIP, IptablesFIPRule, IptablesSnatRule};

use super::rules::{RuleKind, RuleRef};

/// The field manager of everything this role writes.
pub const FIELD_MANAGER: &str = "kube-ovn-nat-gw";

/// The `ready` values to write: `wanted` where the observed value (`None`: object gone)
/// differs. An object without status reads as not ready.
pub fn ready_writes(
    wanted: &BTreeMap<RuleRef, bool>,
    observed: impl Fn(&RuleRef) -> Option<bool>,
) -> Vec<(RuleRef, bool)> {
    wanted
        .iter()
        .filter(|(object, ready)| observed(object).is_some_and(|seen| seen != **ready))
        .map(|(o, r)| (o.clone(), *r))
        .collect()
}

/// Writes `status.ready` of one object.
pub async fn write_ready(client: &kube::Client, object: &RuleRef, ready: bool) -> kube::Result<()> {
    let (kind, name) = object;
    match kind {
        RuleKind::Eip => apply_ready::<IptablesEIP>(client, name, ready).await,
        RuleKind::Fip => apply_ready::<IptablesFIPRule>(client, name, ready).await,
        RuleKind::Dnat => apply_ready::<IptablesDnatRule>(client, name, ready).await,
        RuleKind::Snat => apply_ready::<IptablesSnatRule>(client, name, ready).await,
    }
}

async fn apply_ready<K>(client: &kube::Client, name: &str, ready: bool) -> kube::Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let api: Api<K> = Api::all(client.clone());
    let body = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": { "name": name },
        "status": { "ready": ready },
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_only_what_differs_from_what_is_seen() {
        let wanted: BTreeMap<RuleRef, bool> = [
            ((RuleKind::Eip, "e1".to_string()), true),
            ((RuleKind::Dnat, "d1".to_string()), true),
            ((RuleKind::Dnat, "d2".to_string()), false),
            ((RuleKind::Snat, "gone".to_string()), true),
        ]
        .into();
        let writes = ready_writes(&wanted, |(kind, name)| match (kind, name.as_str()) {
            (RuleKind::Eip, "e1") => Some(true),
            (RuleKind::Dnat, "d1") => Some(false),
            (RuleKind::Dnat, "d2") => Some(true),
            _ => None,
        });
        assert_eq!(
            writes,
            [
                ((RuleKind::Dnat, "d1".to_string()), true),
                ((RuleKind::Dnat, "d2".to_string()), false),
            ]
        );
    }
}
