//! What we write to OVN_Southbound: taking out the chassis of nodes that left the cluster, as
//! `ovn-sbctl chassis-del` does. Otherwise a Chassis row stays, and every other chassis keeps
//! a tunnel to a node that is gone. Two callers: a node whose install is removed takes its own
//! chassis out, and the operator takes out ours whose Node object is gone.
//!
//! Ours: the node role sets `external_ids:ovn-cms-options` to [`CMS_OPTION`] on its Open
//! vSwitch, which ovn-controller copies into the chassis' `other_config` — the key OVN leaves
//! to the CMS. Chassis without it (another system's, with an external central) are never
//! touched by the operator.
//!
//! ovn-controller owns a chassis' rows while it runs with that `system-id`: a node removes its
//! `system-id` first (ovn-controller then neither updates nor re-creates the rows).

use std::time::Duration;

use tracing::info;

use crate::ovsdb::transact::{Condition, Op};
use crate::ovsdb::value::Value;
use crate::ovsdb::{Client, ClientOptions};

const DATABASE: &str = "OVN_Southbound";

/// The `ovn-cms-options` value that marks a chassis as one of our nodes'.
pub const CMS_OPTION: &str = "kube-ovn";

/// A session with OVN_Southbound for a few operations (nothing is monitored).
pub struct Southbound {
    client: Client,
    endpoint: String,
}

impl Southbound {
    pub async fn connect(endpoint: &str) -> super::Result<Southbound> {
        let client = Client::connect(endpoint, DATABASE, ClientOptions::new(Vec::new())).await?;
        Ok(Southbound {
            client,
            endpoint: endpoint.to_string(),
        })
    }

    /// Names of the chassis our node roles made.
    pub async fn our_chassis(&self) -> super::Result<Vec<String>> {
        let rows = self
            .client
            .transact(vec![Op::select("Chassis", Vec::new())])
            .await?
            .into_iter()
            .flat_map(|r| r.rows)
            .filter(|row| {
                row.get("other_config")
                    .and_then(|c| c.map_get("ovn-cms-options"))
                    .and_then(|v| v.as_str())
                    .is_some_and(|options| options.split(',').any(|o| o.trim() == CMS_OPTION))
            })
            .filter_map(|row| {
                row.get("name")
                    .and_then(|n| n.as_atom()?.as_str().map(str::to_owned))
            })
            .collect();
        Ok(rows)
    }

    /// Deletes the `Chassis` and `Chassis_Private` rows named `chassis` (its `Encap` rows go
    /// with it; port bindings' weak references to it are cleared by the server). Runs until a
    /// delete finds nothing twice in a row, 200 ms apart, so that an ovn-controller that had
    /// not yet seen its `system-id` go and wrote the rows back is outrun; `within` bounds it.
    /// Returns the rows deleted.
    pub async fn remove_chassis(&self, chassis: &str, within: Duration) -> super::Result<i64> {
        let work = async {
            let mut deleted = 0;
            let mut quiet = 0;
            while quiet < 2 {
                let ops = ["Chassis", "Chassis_Private"]
                    .into_iter()
                    .map(|table| {
                        Op::delete(table, vec![Condition::eq("name", Value::atom(chassis))])
                    })
                    .collect();
                let n: i64 = self
                    .client
                    .transact(ops)
                    .await?
                    .iter()
                    .filter_map(|r| r.count)
                    .sum();
                deleted += n;
                quiet = if n == 0 { quiet + 1 } else { 0 };
                if quiet < 2 {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            Ok::<i64, super::Error>(deleted)
        };
        let deleted = tokio::time::timeout(within, work)
            .await
            .map_err(|_| no_answer(&self.endpoint, chassis, within))??;
        info!(
            chassis,
            deleted, "chassis removed from the southbound database"
        );
        Ok(deleted)
    }
}

/// Connects to `endpoint` and removes `chassis` (see [`Southbound::remove_chassis`]), all
/// within `within`.
pub async fn remove_chassis(endpoint: &str, chassis: &str, within: Duration) -> super::Result<i64> {
    let started = tokio::time::Instant::now();
    let sb = tokio::time::timeout(within, Southbound::connect(endpoint))
        .await
        .map_err(|_| no_answer(endpoint, chassis, within))??;
    sb.remove_chassis(chassis, within.saturating_sub(started.elapsed()))
        .await
}

fn no_answer(endpoint: &str, chassis: &str, within: Duration) -> super::Error {
    super::Error::Invalid {
        kind: "chassis",
        name: chassis.to_string(),
        reason: format!("{DATABASE} at {endpoint} did not answer within {within:?}"),
    }
}
