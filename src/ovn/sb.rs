//! The one thing we write to OVN_Southbound: a node leaving the cluster for good (the install
//! removed) takes its chassis with it, as `ovn-sbctl chassis-del` does. Otherwise the Chassis
//! row stays, and every other chassis keeps a tunnel to a node that is gone.
//!
//! ovn-controller owns these rows while it runs with the node's `system-id`; call this once
//! that key is gone from the node's Open_vSwitch table (ovn-controller then neither updates
//! nor re-creates them).

use std::time::Duration;

use tracing::info;

use crate::ovsdb::transact::{Condition, Op};
use crate::ovsdb::value::Value;
use crate::ovsdb::{Client, ClientOptions};

const DATABASE: &str = "OVN_Southbound";

/// Deletes the `Chassis` and `Chassis_Private` rows named `chassis` (their `Encap` rows go
/// with the chassis; port bindings' weak references to it are cleared by the server). Runs
/// until a delete finds nothing twice in a row, so that an ovn-controller that had not yet
/// seen its `system-id` go and wrote the chassis back is outrun. Returns the rows deleted.
pub async fn remove_chassis(endpoint: &str, chassis: &str, within: Duration) -> super::Result<i64> {
    let work = async {
        let client = Client::connect(endpoint, DATABASE, ClientOptions::new(Vec::new())).await?;
        let mut deleted = 0;
        let mut quiet = 0;
        while quiet < 2 {
            let ops = ["Chassis", "Chassis_Private"]
                .into_iter()
                .map(|table| Op::delete(table, vec![Condition::eq("name", Value::atom(chassis))]))
                .collect();
            let n: i64 = client
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
    let deleted =
        tokio::time::timeout(within, work)
            .await
            .map_err(|_| super::Error::Invalid {
                kind: "chassis",
                name: chassis.to_string(),
                reason: format!("{DATABASE} at {endpoint} did not answer within {within:?}"),
            })??;
    info!(
        chassis,
        deleted, "chassis removed from the southbound database"
    );
    Ok(deleted)
}
