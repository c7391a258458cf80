//! OVN_Northbound in domain words, for the operator: routers (with the static
//! routes and policies we own on them), switches, the router-port pair between
//! them, logical switch ports (one per pod attachment), port groups; `policy.rs` the
//! ACLs, port groups and address sets of traffic policy. Here: the connection, reads from the cache, and
//! one-operation transactions; `txn.rs` plans them (`NbTxn` gathers any number
//! into one transaction).

pub mod policy;
mod txn;

pub(crate) use txn::changed_columns;
pub use txn::NbTxn;
pub use txn::{policy_spec_of, route_spec_of};

use std::net::IpAddr;

use tracing::debug;

use super::external_ids::{self, POD as POD_KEY};
use super::{is_conflict, Error, Map, Result, ATTEMPTS};
use crate::api::mac::MacAddr;
use crate::ovsdb::model::nb::{
    Acl, AddressSet, DhcpOptions, LogicalRouter, LogicalRouterPolicy, LogicalRouterPort,
    LogicalRouterStaticRoute, LogicalSwitch, LogicalSwitchPort, PortGroup,
};
use crate::ovsdb::{Atom, Client, ClientOptions, Condition, IndexSpec, Table, TableSpec, Value};

pub const DATABASE: &str = "OVN_Northbound";

/// A logical switch port for one pod attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LspSpec {
    /// `<pod>.<ns>.<provider>`.
    pub name: String,
    /// The logical switch (subnet) it belongs to.
    pub switch: String,
    pub mac: MacAddr,
    /// One address per family.
    pub ips: Vec<IpAddr>,
    /// Restrict traffic to `mac` and `ips`.
    pub port_security: bool,
    pub external_ids: Map,
}

impl LspSpec {
    /// The `addresses` column: `["<mac> <ip> …"]`.
    pub fn addresses(&self) -> Vec<String> {
        let mut a = self.mac.to_string();
        for ip in &self.ips {
            a.push(' ');
            a.push_str(&ip.to_string());
        }
        vec![a]
    }

    /// The `port_security` column: the addresses when port security is on, else nothing.
    pub fn port_security_entries(&self) -> Vec<String> {
        if self.port_security {
            self.addresses()
        } else {
            Vec::new()
        }
    }
}

/// One DHCP_Options row a switch should have (one per family when the subnet enables DHCP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpSpec {
    /// The subnet CIDR of that family.
    pub cidr: ipnet::IpNet,
    pub options: Map,
}

impl DhcpSpec {
    /// The `external_ids:protocol` value of its row (Kube-OVN's).
    pub fn protocol(&self) -> &'static str {
        match self.cidr {
            ipnet::IpNet::V4(_) => "IPv4",
            ipnet::IpNet::V6(_) => "IPv6",
        }
    }
}

/// A static route on a router that we own (vendor mark in `external_ids`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct StaticRouteSpec {
    /// `""` is the main table.
    pub route_table: String,
    /// `dst-ip` or `src-ip`.
    pub policy: String,
    pub ip_prefix: String,
    pub nexthop: String,
    pub external_ids: Map,
}

impl StaticRouteSpec {
    /// What makes two routes the same route (external_ids aside).
    pub fn identity(&self) -> (&str, &str, &str, &str) {
        (
            &self.route_table,
            &self.policy,
            &self.ip_prefix,
            &self.nexthop,
        )
    }
}

/// A routing policy on a router that we own (vendor mark in `external_ids`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RouterPolicySpec {
    pub priority: i64,
    pub match_: String,
    /// `allow`, `drop` or `reroute`.
    pub action: String,
    /// `reroute` only.
    pub nexthops: Vec<String>,
    pub external_ids: Map,
}

impl RouterPolicySpec {
    /// What makes two policies the same policy (external_ids aside).
    pub fn identity(&self) -> (i64, &str, &str, &[String]) {
        (self.priority, &self.match_, &self.action, &self.nexthops)
    }
}

/// Router port `<router>-<switch>` and switch port `<switch>-<router>`.
pub fn router_port_names(router: &str, switch: &str) -> (String, String) {
    (format!("{router}-{switch}"), format!("{switch}-{router}"))
}

/// The operator's connection to OVN_Northbound.
#[derive(Clone)]
pub struct Northbound {
    client: Client,
}

impl Northbound {
    /// The tables (and indexes) the operations need.
    pub fn tables() -> Vec<TableSpec> {
        vec![
            TableSpec::of::<LogicalSwitch>()
                .index(IndexSpec::column("name"))
                .index(IndexSpec::column("ports")),
            TableSpec::of::<LogicalSwitchPort>().index(IndexSpec::map_key("external_ids", POD_KEY)),
            TableSpec::of::<LogicalRouter>()
                .index(IndexSpec::column("name"))
                .index(IndexSpec::column("ports")),
            TableSpec::of::<LogicalRouterPort>(),
            TableSpec::of::<LogicalRouterStaticRoute>(),
            TableSpec::of::<LogicalRouterPolicy>(),
            TableSpec::of::<PortGroup>().index(IndexSpec::column("ports")),
            TableSpec::of::<Acl>(),
            TableSpec::of::<AddressSet>(),
            TableSpec::of::<DhcpOptions>(),
        ]
    }

    pub async fn connect(endpoint: &str) -> Result<Northbound> {
        Self::connect_with(endpoint, ClientOptions::new(Self::tables())).await
    }

    pub async fn connect_with(endpoint: &str, options: ClientOptions) -> Result<Northbound> {
        Ok(Northbound {
            client: Client::connect(endpoint, DATABASE, options).await?,
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A transaction to fill with domain operations and `commit` once.
    pub fn txn(&self) -> NbTxn<'_> {
        NbTxn::new(self)
    }

    /// Plans with `plan` and commits; replans (up to 3 times) when a
    /// concurrent writer got there first. Returns whether anything was written.
    pub async fn apply(&self, plan: impl Fn(&mut NbTxn<'_>) -> Result<()>) -> Result<bool> {
        let mut attempt = 1;
        loop {
            let mut txn = self.txn();
            plan(&mut txn)?;
            match txn.commit().await {
                Err(e) if attempt < ATTEMPTS && is_conflict(&e) => {
                    debug!(error = %e, attempt, "concurrent NB change, replanning");
                    attempt += 1;
                    self.client.sync().await?;
                }
                other => return other,
            }
        }
    }

    pub async fn ensure_router(&self, name: &str, external_ids: &Map) -> Result<bool> {
        self.apply(|t| t.ensure_router(name, external_ids)).await
    }

    pub async fn ensure_switch(&self, name: &str, external_ids: &Map) -> Result<bool> {
        self.apply(|t| t.ensure_switch(name, external_ids)).await
    }

    pub async fn ensure_router_port_pair<S: AsRef<str>>(
        &self,
        router: &str,
        switch: &str,
        gateway_cidrs: &[S],
        mac: &str,
    ) -> Result<bool> {
        self.apply(|t| t.ensure_router_port_pair(router, switch, gateway_cidrs, mac))
            .await
    }

    pub async fn delete_switch(&self, name: &str) -> Result<bool> {
        self.apply(|t| t.delete_switch(name)).await
    }

    pub async fn delete_router(&self, name: &str) -> Result<bool> {
        self.apply(|t| t.delete_router(name)).await
    }

    pub async fn ensure_logical_switch_port(&self, spec: &LspSpec) -> Result<bool> {
        self.apply(|t| t.ensure_logical_switch_port(spec)).await
    }

    pub async fn delete_logical_switch_port(&self, name: &str) -> Result<bool> {
        self.apply(|t| t.delete_logical_switch_port(name)).await
    }

    pub async fn ensure_port_group(&self, name: &str, external_ids: &Map) -> Result<bool> {
        self.apply(|t| t.ensure_port_group(name, external_ids))
            .await
    }

    pub async fn delete_port_group(&self, name: &str) -> Result<bool> {
        self.apply(|t| t.delete_port_group(name)).await
    }

    pub async fn add_ports_to_group(&self, group: &str, ports: &[&str]) -> Result<bool> {
        self.apply(|t| t.add_ports_to_group(group, ports)).await
    }

    pub async fn remove_ports_from_group(&self, group: &str, ports: &[&str]) -> Result<bool> {
        self.apply(|t| t.remove_ports_from_group(group, ports))
            .await
    }

    /// The logical switch ports of a pod (`<ns>/<pod>`), from the cache.
    pub fn ports_by_pod(&self, pod: &str) -> Result<Vec<LogicalSwitchPort>> {
        Ok(self
            .client
            .find(&IndexSpec::map_key("external_ids", POD_KEY), pod)?)
    }

    /// Our logical switch ports (vendor mark) as `(name, pod)` pairs, the pod being the
    /// `<ns>/<pod>` external_id; ports without one are left out.
    pub fn our_ports(&self) -> Result<Vec<(String, String)>> {
        let ports: Vec<LogicalSwitchPort> = self.client.list()?;
        Ok(ports
            .into_iter()
            .filter(|p| external_ids::is_ours(&p.external_ids))
            .filter_map(|p| {
                let pod = p.external_ids.get(external_ids::POD)?.clone();
                Some((p.name, pod))
            })
            .collect())
    }

    /// Whether the logical switch `name` exists: an index lookup in the cache, no row is
    /// copied (which matters with thousands of ports on the switch).
    /// Our DHCP_Options rows of switch `switch`.
    pub fn dhcp_options(&self, switch: &str) -> Result<Vec<DhcpOptions>> {
        Ok(self
            .client
            .list::<DhcpOptions>()?
            .into_iter()
            .filter(|d| {
                external_ids::is_ours(&d.external_ids)
                    && d.external_ids
                        .get(external_ids::LOGICAL_SWITCH)
                        .map(String::as_str)
                        == Some(switch)
            })
            .collect())
    }

    pub fn switch_exists(&self, name: &str) -> bool {
        self.client
            .cache()
            .table(LogicalSwitch::NAME)
            .and_then(|t| t.lookup(&IndexSpec::column("name"), &Atom::from(name)).ok())
            .is_some_and(|uuids| !uuids.is_empty())
    }

    pub fn switch(&self, name: &str) -> Result<Option<LogicalSwitch>> {
        one(&self.client, "logical switch", name)
    }

    pub fn router(&self, name: &str) -> Result<Option<LogicalRouter>> {
        one(&self.client, "logical router", name)
    }

    pub fn port(&self, name: &str) -> Result<Option<LogicalSwitchPort>> {
        one(&self.client, "logical switch port", name)
    }

    /// The static routes of router `name` (none when it does not exist), from the cache.
    pub fn static_routes(&self, name: &str) -> Result<Vec<LogicalRouterStaticRoute>> {
        let Some(router) = self.router(name)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for uuid in router.static_routes {
            out.extend(self.client.get::<LogicalRouterStaticRoute>(uuid)?);
        }
        Ok(out)
    }

    /// The policies of router `name` (none when it does not exist), from the cache.
    pub fn router_policies(&self, name: &str) -> Result<Vec<LogicalRouterPolicy>> {
        let Some(router) = self.router(name)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for uuid in router.policies {
            out.extend(self.client.get::<LogicalRouterPolicy>(uuid)?);
        }
        Ok(out)
    }
}

/// The row of `T` named `name`; more than one is an error (names of switches
/// and routers are not unique in the schema, but ours must be).
fn one<T: Table>(client: &Client, kind: &'static str, name: &str) -> Result<Option<T>> {
    let mut rows: Vec<T> = client.find(&IndexSpec::column("name"), name)?;
    match rows.len() {
        0 | 1 => Ok(rows.pop()),
        n => Err(Error::Invalid {
            kind,
            name: name.to_string(),
            reason: format!("{n} rows carry this name"),
        }),
    }
}

fn name_is(name: &str) -> Vec<Condition> {
    vec![Condition::eq("name", Value::atom(name))]
}

fn strings(v: &[String]) -> Value {
    Value::set(v.iter().map(|s| Atom::from(s.as_str())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_put_the_mac_first() {
        let spec = LspSpec {
            name: "p.ns.prov".into(),
            switch: "s".into(),
            mac: "00:00:00:aa:bb:cc".parse().expect("valid MAC"),
            ips: vec![
                "10.0.0.2".parse().expect("valid IP"),
                "fd00::2".parse().expect("valid IP"),
            ],
            port_security: true,
            external_ids: Map::new(),
        };
        assert_eq!(spec.addresses(), vec!["00:00:00:aa:bb:cc 10.0.0.2 fd00::2"]);
    }

    use super::txn::changed_columns;
    use crate::ovsdb::row;

    #[test]
    fn only_changed_columns_are_written() {
        let have = row([
            ("name", Value::atom("a")),
            ("external_ids", Value::map([("k", "v")])),
        ]);
        let want = row([
            ("name", Value::atom("a")),
            ("external_ids", Value::map([("k", "w")])),
            ("port_security", Value::empty_set()),
        ]);
        let diff = changed_columns(&have, want);
        assert_eq!(diff.keys().collect::<Vec<_>>(), vec!["external_ids"]);
    }

    #[test]
    fn router_port_pair_names_follow_kube_ovn() {
        assert_eq!(
            router_port_names("vpc1", "net1"),
            ("vpc1-net1".to_string(), "net1-vpc1".to_string())
        );
    }
}
