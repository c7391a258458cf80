//! Applies a [`NatPlan`] to the netns of the calling thread, in the order traffic needs:
//! forwarding on; new EIP addresses (so the gateway answers ARP for them before any rule
//! points at them); the nftables table replaced in one batch; EIP addresses no longer wanted
//! removed; gratuitous ARP for the new ones; conntrack entries of removed rules deleted.
//! Failing to announce or to flush does not undo the rules: they come back as warnings.
//! Every socket is opened here, per call, so a caller picks the netns by the thread it runs on.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::conntrack::{self, Flushed};
use super::links::{self, LinkError};
use super::nftables::{self, NftError, Programmed};
use super::plan::{Interfaces, NatPlan};

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Nft(#[from] NftError),
    #[error("rtnetlink socket: {0}")]
    Socket(#[source] std::io::Error),
}

/// What one apply did.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub programmed: Programmed,
    pub eips_added: Vec<Ipv4Addr>,
    pub eips_removed: Vec<Ipv4Addr>,
    pub flushed: Flushed,
    /// Whether this apply turned forwarding on.
    pub enabled_forwarding: bool,
    pub has_default_route: bool,
    /// Steps that failed without undoing the rules.
    pub warnings: Vec<String>,
    pub elapsed: Duration,
}

/// Applies `plan` on `interfaces`; with `announce_all`, a gratuitous ARP goes out for every
/// EIP (after a start), else for the added ones only.
pub async fn apply(
    plan: &NatPlan,
    interfaces: &Interfaces,
    announce_all: bool,
) -> Result<Applied, DataplaneError> {
    let started = Instant::now();
    let enabled_forwarding = links::enable_forwarding()?;
    let (connection, handle, _) = rtnetlink::new_connection().map_err(DataplaneError::Socket)?;
    let connection = tokio::spawn(connection);
    let result = async {
        let external = links::link(&handle, &interfaces.external).await?;
        // The LAN leg must exist too: rules naming a missing interface match nothing.
        links::link(&handle, &interfaces.lan).await?;
        let added = links::add_eips(&handle, &external, &plan.eips).await?;
        let programmed = nftables::program(&plan.table)?;
        let removed = links::remove_eips_except(&handle, &external, &plan.eips).await?;
        let mut warnings = Vec::new();
        let announce: Vec<Ipv4Addr> = if announce_all {
            plan.eips.iter().copied().collect()
        } else {
            added.clone()
        };
        if let Err(e) = links::announce(&external, &announce) {
            warnings.push(format!("gratuitous ARP: {e}"));
        }
        let flushed = match conntrack::flush(&plan.conntrack) {
            Ok(f) => f,
            Err(e) => {
                warnings.push(format!("deleting conntrack entries of removed rules: {e}"));
                Flushed::default()
            }
        };
        let has_default_route = match links::has_default_route(&handle).await {
            Ok(b) => b,
            Err(e) => {
                warnings.push(e.to_string());
                true
            }
        };
        Ok(Applied {
            programmed,
            eips_added: added,
            eips_removed: removed,
            flushed,
            enabled_forwarding,
            has_default_route,
            warnings,
            elapsed: started.elapsed(),
        })
    }
    .await;
    connection.abort();
    result
}
