//! `NbTxn`: one NB transaction being planned against the client's cache. Each domain
//! operation adds the operations it needs (none when the cache already shows the wanted
//! state), guarded so that concurrent writers cannot duplicate a named row; `commit` sends
//! them as one transaction. Reads and the connection live in `mod.rs`.

mod policy;

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{
    name_is, one, router_port_names, strings, DhcpSpec, LspSpec, Map, Northbound, RouterPolicySpec,
    StaticRouteSpec,
};
use crate::ovn::external_ids;
use crate::ovn::{Error, Result};
use crate::ovsdb::model::nb::{
    DhcpOptions, LogicalRouter, LogicalRouterPolicy, LogicalRouterPort, LogicalRouterStaticRoute,
    LogicalSwitch, LogicalSwitchPort, PortGroup,
};
use crate::ovsdb::{row, Atom, Condition, IndexSpec, Mutation, Op, Row, Table, Uuid, Value};

/// A reference to a row that exists or is inserted by this transaction.
type RowRef = Atom;

/// One NB transaction being planned. Domain operations add operations
/// (nothing when the cache already shows the wanted state); additions to
/// and removals from a set column of one row are merged into one `mutate`.
pub struct NbTxn<'a> {
    nb: &'a Northbound,
    ops: Vec<Op>,
    next_name: usize,
    /// (table, row, column) → atoms to insert / delete, emitted at commit.
    set_inserts: BTreeMap<(&'static str, RowRef, &'static str), Vec<Atom>>,
    set_deletes: BTreeMap<(&'static str, RowRef, &'static str), Vec<Atom>>,
    /// Named rows this transaction creates, by (table, name).
    created: HashMap<(&'static str, String), RowRef>,
    /// Names of rows this transaction already planned (touched or deleted).
    touched: HashSet<(&'static str, String)>,
}

impl<'a> NbTxn<'a> {
    pub(super) fn new(nb: &'a Northbound) -> Self {
        NbTxn {
            nb,
            ops: Vec::new(),
            next_name: 0,
            set_inserts: BTreeMap::new(),
            set_deletes: BTreeMap::new(),
            created: HashMap::new(),
            touched: HashSet::new(),
        }
    }

    /// Number of operations planned so far.
    pub fn len(&self) -> usize {
        self.ops.len() + self.set_inserts.len() + self.set_deletes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Commits everything planned as one transaction (nothing if nothing is
    /// to change). Returns whether anything was written.
    pub async fn commit(mut self) -> Result<bool> {
        for ((table, target, column), atoms) in std::mem::take(&mut self.set_deletes) {
            self.ops.push(Op::mutate(
                table,
                vec![Condition::eq("_uuid", Value::Set(vec![target]))],
                vec![Mutation::delete(column, Value::set(atoms))],
            ));
        }
        for ((table, target, column), atoms) in std::mem::take(&mut self.set_inserts) {
            self.ops.push(Op::mutate(
                table,
                vec![Condition::eq("_uuid", Value::Set(vec![target]))],
                vec![Mutation::insert(column, Value::set(atoms))],
            ));
        }
        if self.ops.is_empty() {
            return Ok(false);
        }
        self.nb.client.transact(self.ops).await?;
        Ok(true)
    }

    fn insert(&mut self, table: &'static str, name: &str, row: Row) -> RowRef {
        let uuid_name = format!("row{}", self.next_name);
        self.next_name += 1;
        self.ops.push(Op::insert(table, row, Some(&uuid_name)));
        let r = Atom::NamedUuid(uuid_name);
        self.created.insert((table, name.to_string()), r.clone());
        r
    }

    fn update(&mut self, table: &'static str, uuid: Uuid, row: Row) {
        if !row.is_empty() {
            self.ops
                .push(Op::update(table, vec![Condition::uuid(uuid)], row));
        }
    }

    fn add_to_set(&mut self, table: &'static str, target: RowRef, column: &'static str, a: Atom) {
        self.set_inserts
            .entry((table, target, column))
            .or_default()
            .push(a);
    }

    fn remove_from_set(
        &mut self,
        table: &'static str,
        target: RowRef,
        column: &'static str,
        a: Atom,
    ) {
        self.set_deletes
            .entry((table, target, column))
            .or_default()
            .push(a);
    }

    /// The row of `table` named `name`: created by this transaction, or in the cache.
    fn named_ref(&self, table: &'static str, kind: &'static str, name: &str) -> Result<RowRef> {
        if let Some(r) = self.created.get(&(table, name.to_string())) {
            return Ok(r.clone());
        }
        let uuids = self.lookup(table, &IndexSpec::column("name"), &Atom::from(name))?;
        match uuids.as_slice() {
            [u] => Ok(Atom::Uuid(*u)),
            [] => Err(Error::NotFound {
                kind,
                name: name.to_string(),
            }),
            more => Err(Error::Invalid {
                kind,
                name: name.to_string(),
                reason: format!("{} rows carry this name", more.len()),
            }),
        }
    }

    fn lookup(&self, table: &'static str, index: &IndexSpec, key: &Atom) -> Result<Vec<Uuid>> {
        let cache = self.nb.client.cache();
        let t = cache.table(table).ok_or_else(|| {
            crate::ovsdb::Error::NotSupported(format!("table {table} is not monitored"))
        })?;
        Ok(t.lookup(index, key)?)
    }

    /// Rows of `table` whose `ports` hold `member`.
    fn holders(&self, table: &'static str, member: Uuid) -> Result<Vec<Uuid>> {
        self.lookup(table, &IndexSpec::column("ports"), &Atom::Uuid(member))
    }

    /// Guards against planning the same named object twice in one transaction.
    fn first_touch(&mut self, table: &'static str, name: &str) -> bool {
        self.touched.insert((table, name.to_string()))
    }

    /// A root row with a `name` and `external_ids`: inserted if absent
    /// (guarded by `wait` when the schema has no unique index on the name),
    /// its `external_ids` corrected if they differ.
    fn ensure_named(
        &mut self,
        table: &'static str,
        name: &str,
        external_ids: &Map,
        guard: bool,
    ) -> Result<()> {
        if !self.first_touch(table, name) {
            return Ok(());
        }
        let want = row([
            ("name", Value::atom(name)),
            ("external_ids", Value::string_map(external_ids)),
        ]);
        match self.row_by_name(table, name)? {
            None => {
                if guard {
                    self.ops.push(Op::wait_absent(table, name_is(name)));
                }
                self.insert(table, name, want);
            }
            Some((uuid, have)) => {
                let diff = changed_columns(&have, want);
                self.update(table, uuid, diff);
            }
        }
        Ok(())
    }

    fn row_by_name(&self, table: &'static str, name: &str) -> Result<Option<(Uuid, Row)>> {
        let cache = self.nb.client.cache();
        let Some(t) = cache.table(table) else {
            return Err(crate::ovsdb::Error::NotSupported(format!(
                "table {table} is not monitored"
            ))
            .into());
        };
        let uuids = t.lookup(&IndexSpec::column("name"), &Atom::from(name))?;
        match uuids.as_slice() {
            [] => Ok(None),
            [u] => Ok(t.get(u).map(|r| (*u, r.clone()))),
            more => Err(Error::Invalid {
                kind: "row",
                name: format!("{table} {name}"),
                reason: format!("{} rows carry this name", more.len()),
            }),
        }
    }

    pub fn ensure_router(&mut self, name: &str, external_ids: &Map) -> Result<()> {
        self.ensure_named(LogicalRouter::NAME, name, external_ids, true)
    }

    pub fn ensure_switch(&mut self, name: &str, external_ids: &Map) -> Result<()> {
        self.ensure_named(LogicalSwitch::NAME, name, external_ids, true)
    }

    /// Router port `<router>-<switch>` with the gateway addresses (one per family of a
    /// dual-stack subnet, each with its prefix) and MAC, and its peer switch port
    /// `<switch>-<router>` of type `router`.
    pub fn ensure_router_port_pair<S: AsRef<str>>(
        &mut self,
        router: &str,
        switch: &str,
        gateway_cidrs: &[S],
        mac: &str,
    ) -> Result<()> {
        let (lrp_name, lsp_name) = router_port_names(router, switch);
        let invalid = |reason: String| Error::Invalid {
            kind: "logical router port",
            name: lrp_name.clone(),
            reason,
        };
        if gateway_cidrs.is_empty() {
            return Err(invalid("no gateway address".into()));
        }
        for gw in gateway_cidrs {
            let gw = gw.as_ref();
            if gw.parse::<ipnet::IpNet>().is_err() {
                return Err(invalid(format!(
                    "gateway {gw:?} is not an address with prefix length"
                )));
            }
        }
        let networks = Value::set(gateway_cidrs.iter().map(|g| Atom::from(g.as_ref())));
        let router_ref = self.named_ref(LogicalRouter::NAME, "logical router", router)?;
        let want_lrp = row([
            ("name", Value::atom(lrp_name.as_str())),
            ("mac", Value::atom(mac)),
            ("networks", networks),
        ]);
        let lrp: Option<LogicalRouterPort> = self.cached(&lrp_name)?;
        match lrp {
            None if self.first_touch(LogicalRouterPort::NAME, &lrp_name) => {
                let r = self.insert(LogicalRouterPort::NAME, &lrp_name, want_lrp);
                self.add_to_set(LogicalRouter::NAME, router_ref.clone(), "ports", r);
            }
            None => {}
            Some(lrp) => {
                let diff = changed_columns(&lrp.to_row(), want_lrp);
                self.update(LogicalRouterPort::NAME, lrp.uuid, diff);
                self.move_into(LogicalRouter::NAME, &router_ref, lrp.uuid)?;
            }
        }
        let options = Map::from([("router-port".to_string(), lrp_name.clone())]);
        let want_lsp = row([
            ("name", Value::atom(lsp_name.as_str())),
            ("type", Value::atom("router")),
            ("addresses", Value::atom("router")),
            ("options", Value::string_map(&options)),
        ]);
        self.ensure_lsp_row(&lsp_name, switch, want_lsp)
    }

    fn cached<T: Table>(&self, name: &str) -> Result<Option<T>> {
        one(&self.nb.client, "row", name)
    }

    /// Makes sure the row `uuid` sits in `target`'s `ports` and in no other
    /// row of `table`.
    fn move_into(&mut self, table: &'static str, target: &RowRef, uuid: Uuid) -> Result<()> {
        let mut inside = false;
        for h in self.holders(table, uuid)? {
            if Atom::Uuid(h) == *target {
                inside = true;
            } else {
                self.remove_from_set(table, Atom::Uuid(h), "ports", Atom::Uuid(uuid));
            }
        }
        if !inside {
            self.add_to_set(table, target.clone(), "ports", Atom::Uuid(uuid));
        }
        Ok(())
    }

    /// Inserts or corrects the switch port `name` in `switch` to hold `want`.
    fn ensure_lsp_row(&mut self, name: &str, switch: &str, want: Row) -> Result<()> {
        if !self.first_touch(LogicalSwitchPort::NAME, name) {
            return Ok(());
        }
        let switch_ref = self.named_ref(LogicalSwitch::NAME, "logical switch", switch)?;
        match self.nb.port(name)? {
            None => {
                // The schema's unique index on `name` refuses a concurrent duplicate.
                let r = self.insert(LogicalSwitchPort::NAME, name, want);
                self.add_to_set(LogicalSwitch::NAME, switch_ref, "ports", r);
            }
            Some(lsp) => {
                let diff = changed_columns(&lsp.to_row(), want);
                self.update(LogicalSwitchPort::NAME, lsp.uuid, diff);
                self.move_into(LogicalSwitch::NAME, &switch_ref, lsp.uuid)?;
            }
        }
        Ok(())
    }

    /// The pod's switch port with addresses, port security and external_ids, and the
    /// switch's DHCP_Options rows if it has any (`sync_dhcp_options` keeps them current).
    pub fn ensure_logical_switch_port(&mut self, spec: &LspSpec) -> Result<()> {
        let addresses = spec.addresses();
        let security = spec.port_security_entries();
        let mut want = row([
            ("name", Value::atom(spec.name.as_str())),
            ("addresses", strings(&addresses)),
            ("port_security", strings(&security)),
            ("external_ids", Value::string_map(&spec.external_ids)),
        ]);
        for dhcp in self.nb.dhcp_options(&spec.switch)? {
            let column = match dhcp.external_ids.get("protocol").map(String::as_str) {
                Some("IPv4") => "dhcpv4_options",
                Some("IPv6") => "dhcpv6_options",
                _ => continue,
            };
            want.insert(column.into(), Value::Set(vec![Atom::Uuid(dhcp.uuid)]));
        }
        self.ensure_lsp_row(&spec.name, &spec.switch, want)
    }

    /// Makes the DHCP_Options rows of `switch` (ours: `external_ids` vendor, `ls`, `protocol`)
    /// exactly `wanted`, one per family, and points every pod port of the switch at them
    /// (`dhcpv4_options`/`dhcpv6_options`; cleared for a family no longer wanted). The switch
    /// must exist in the cache or be created by this transaction.
    pub fn sync_dhcp_options(&mut self, switch: &str, wanted: &[DhcpSpec]) -> Result<()> {
        let mut existing = self.nb.dhcp_options(switch)?;
        let mut refs: BTreeMap<&'static str, Atom> = BTreeMap::new();
        for want in wanted {
            let protocol = want.protocol();
            let cidr = want.cidr.to_string();
            let found = existing
                .iter()
                .position(|d| d.external_ids.get("protocol").map(String::as_str) == Some(protocol));
            match found.map(|i| existing.remove(i)) {
                Some(d) => {
                    let have = d.to_row();
                    let diff = changed_columns(
                        &have,
                        row([
                            ("cidr", Value::atom(cidr.as_str())),
                            ("options", Value::string_map(&want.options)),
                        ]),
                    );
                    self.update(DhcpOptions::NAME, d.uuid, diff);
                    refs.insert(protocol, Atom::Uuid(d.uuid));
                }
                None => {
                    let ids = external_ids::ours([
                        (external_ids::LOGICAL_SWITCH, switch),
                        ("protocol", protocol),
                    ]);
                    let r = self.insert(
                        DhcpOptions::NAME,
                        &format!("{switch}/{protocol}"),
                        row([
                            ("cidr", Value::atom(cidr.as_str())),
                            ("options", Value::string_map(&want.options)),
                            ("external_ids", Value::string_map(&ids)),
                        ]),
                    );
                    refs.insert(protocol, r);
                }
            }
        }
        for stale in existing {
            self.ops.push(Op::delete(
                DhcpOptions::NAME,
                vec![Condition::uuid(stale.uuid)],
            ));
        }
        let Some(ls) = self.nb.switch(switch)? else {
            return Ok(());
        };
        let client = &self.nb.client;
        let mut updates = Vec::new();
        for p in &ls.ports {
            let Some(lsp) = client.get::<LogicalSwitchPort>(*p)? else {
                continue;
            };
            if !lsp.kind.is_empty() || !external_ids::is_ours(&lsp.external_ids) {
                continue;
            }
            let have = lsp.to_row();
            let want = row([
                ("dhcpv4_options", option_ref(refs.get("IPv4"))),
                ("dhcpv6_options", option_ref(refs.get("IPv6"))),
            ]);
            updates.push((lsp.uuid, changed_columns(&have, want)));
        }
        for (uuid, diff) in updates {
            self.update(LogicalSwitchPort::NAME, uuid, diff);
        }
        Ok(())
    }

    /// Removes the switch port `name` from its switch and port groups
    /// (absent is fine).
    pub fn delete_logical_switch_port(&mut self, name: &str) -> Result<()> {
        if !self.first_touch(LogicalSwitchPort::NAME, name) {
            return Ok(());
        }
        let Some(lsp) = self.nb.port(name)? else {
            return Ok(());
        };
        let u = Atom::Uuid(lsp.uuid);
        let switches = self.holders(LogicalSwitch::NAME, lsp.uuid)?;
        let groups = self.holders(PortGroup::NAME, lsp.uuid)?;
        for s in switches {
            self.remove_from_set(LogicalSwitch::NAME, Atom::Uuid(s), "ports", u.clone());
        }
        for g in groups {
            self.remove_from_set(PortGroup::NAME, Atom::Uuid(g), "ports", u.clone());
        }
        Ok(())
    }

    /// Deletes the switch (its ports go with it) and the router ports its
    /// router-type ports point at. Absent is fine.
    pub fn delete_switch(&mut self, name: &str) -> Result<()> {
        if !self.first_touch(LogicalSwitch::NAME, name) {
            return Ok(());
        }
        let Some(ls) = self.nb.switch(name)? else {
            return Ok(());
        };
        let client = &self.nb.client;
        let mut peers = Vec::new();
        for p in &ls.ports {
            if let Some(lsp) = client.get::<LogicalSwitchPort>(*p)? {
                if let Some(rp) = lsp.options.get("router-port") {
                    if let Some(lrp) = self.cached::<LogicalRouterPort>(rp)? {
                        peers.push(lrp.uuid);
                    }
                }
            }
        }
        for lr in client.list::<LogicalRouter>()? {
            for p in peers.iter().filter(|p| lr.ports.contains(p)) {
                self.remove_from_set(
                    LogicalRouter::NAME,
                    Atom::Uuid(lr.uuid),
                    "ports",
                    Atom::Uuid(*p),
                );
            }
        }
        self.ops.push(Op::delete(
            LogicalSwitch::NAME,
            vec![Condition::uuid(ls.uuid)],
        ));
        Ok(())
    }

    /// Deletes the router (its ports, routes and NAT rules go with it).
    /// Absent is fine.
    pub fn delete_router(&mut self, name: &str) -> Result<()> {
        if !self.first_touch(LogicalRouter::NAME, name) {
            return Ok(());
        }
        if let Some(lr) = self.nb.router(name)? {
            self.ops.push(Op::delete(
                LogicalRouter::NAME,
                vec![Condition::uuid(lr.uuid)],
            ));
        }
        Ok(())
    }

    /// Makes the static routes of `router` that carry our vendor mark exactly `wanted`
    /// (identical duplicates collapse into one); routes others wrote stay untouched. The
    /// router may be created by this same transaction.
    pub fn sync_static_routes(&mut self, router: &str, wanted: &[StaticRouteSpec]) -> Result<()> {
        if !self.first_touch(LogicalRouterStaticRoute::NAME, router) {
            return Ok(());
        }
        let router_ref = self.named_ref(LogicalRouter::NAME, "logical router", router)?;
        let existing = match &router_ref {
            Atom::Uuid(_) => self.nb.static_routes(router)?,
            _ => Vec::new(),
        };
        let mut want: BTreeMap<_, &StaticRouteSpec> =
            wanted.iter().map(|w| (w.identity(), w)).collect();
        let specs: Vec<StaticRouteSpec> = existing
            .iter()
            .filter(|r| external_ids::is_ours(&r.external_ids))
            .map(route_spec_of)
            .collect();
        for (have, spec) in existing
            .iter()
            .filter(|r| external_ids::is_ours(&r.external_ids))
            .zip(&specs)
        {
            match want.remove(&spec.identity()) {
                Some(w) if w.external_ids == have.external_ids => {}
                Some(w) => self.update(
                    LogicalRouterStaticRoute::NAME,
                    have.uuid,
                    row([("external_ids", Value::string_map(&w.external_ids))]),
                ),
                None => self.remove_from_set(
                    LogicalRouter::NAME,
                    router_ref.clone(),
                    "static_routes",
                    Atom::Uuid(have.uuid),
                ),
            }
        }
        for w in want.into_values() {
            let route = row([
                ("route_table", Value::atom(w.route_table.as_str())),
                ("policy", Value::atom(w.policy.as_str())),
                ("ip_prefix", Value::atom(w.ip_prefix.as_str())),
                ("nexthop", Value::atom(w.nexthop.as_str())),
                ("external_ids", Value::string_map(&w.external_ids)),
            ]);
            let name = format!("{router} {} {} {}", w.policy, w.ip_prefix, w.nexthop);
            let r = self.insert(LogicalRouterStaticRoute::NAME, &name, route);
            self.add_to_set(LogicalRouter::NAME, router_ref.clone(), "static_routes", r);
        }
        Ok(())
    }

    /// Makes the policies of `router` that carry our vendor mark exactly `wanted`; others'
    /// policies stay untouched.
    pub fn sync_router_policies(
        &mut self,
        router: &str,
        wanted: &[RouterPolicySpec],
    ) -> Result<()> {
        if !self.first_touch(LogicalRouterPolicy::NAME, router) {
            return Ok(());
        }
        let router_ref = self.named_ref(LogicalRouter::NAME, "logical router", router)?;
        let existing = match &router_ref {
            Atom::Uuid(_) => self.nb.router_policies(router)?,
            _ => Vec::new(),
        };
        let mut want: BTreeMap<_, &RouterPolicySpec> =
            wanted.iter().map(|w| (w.identity(), w)).collect();
        let specs: Vec<(Uuid, RouterPolicySpec, &Map)> = existing
            .iter()
            .filter(|p| external_ids::is_ours(&p.external_ids))
            .map(|p| (p.uuid, policy_spec_of(p), &p.external_ids))
            .collect();
        for (uuid, spec, ids) in &specs {
            match want.remove(&spec.identity()) {
                Some(w) if w.external_ids == **ids => {}
                Some(w) => self.update(
                    LogicalRouterPolicy::NAME,
                    *uuid,
                    row([("external_ids", Value::string_map(&w.external_ids))]),
                ),
                None => self.remove_from_set(
                    LogicalRouter::NAME,
                    router_ref.clone(),
                    "policies",
                    Atom::Uuid(*uuid),
                ),
            }
        }
        for w in want.into_values() {
            let policy = row([
                ("priority", Value::atom(w.priority)),
                ("match", Value::atom(w.match_.as_str())),
                ("action", Value::atom(w.action.as_str())),
                ("nexthops", strings(&w.nexthops)),
                ("external_ids", Value::string_map(&w.external_ids)),
            ]);
            let name = format!("{router} {} {}", w.priority, w.match_);
            let r = self.insert(LogicalRouterPolicy::NAME, &name, policy);
            self.add_to_set(LogicalRouter::NAME, router_ref.clone(), "policies", r);
        }
        Ok(())
    }

    /// A port group (its name is unique in the schema).
    pub fn ensure_port_group(&mut self, name: &str, external_ids: &Map) -> Result<()> {
        self.ensure_named(PortGroup::NAME, name, external_ids, false)
    }

    pub fn delete_port_group(&mut self, name: &str) -> Result<()> {
        if !self.first_touch(PortGroup::NAME, name) {
            return Ok(());
        }
        if let Some(pg) = self.cached::<PortGroup>(name)? {
            self.ops
                .push(Op::delete(PortGroup::NAME, vec![Condition::uuid(pg.uuid)]));
        }
        Ok(())
    }

    fn group_and_ports(
        &self,
        group: &str,
        ports: &[&str],
    ) -> Result<(RowRef, Vec<Uuid>, Vec<Uuid>)> {
        let (gref, members) = match self.created.get(&(PortGroup::NAME, group.to_string())) {
            Some(r) => (r.clone(), Vec::new()),
            None => {
                let pg = self
                    .cached::<PortGroup>(group)?
                    .ok_or_else(|| Error::NotFound {
                        kind: "port group",
                        name: group.to_string(),
                    })?;
                (Atom::Uuid(pg.uuid), pg.ports)
            }
        };
        let mut uuids = Vec::new();
        for p in ports {
            let lsp = self.nb.port(p)?.ok_or_else(|| Error::NotFound {
                kind: "logical switch port",
                name: p.to_string(),
            })?;
            uuids.push(lsp.uuid);
        }
        Ok((gref, members, uuids))
    }

    /// Adds switch ports (by name) to a port group; members stay members.
    pub fn add_ports_to_group(&mut self, group: &str, ports: &[&str]) -> Result<()> {
        let (gref, members, uuids) = self.group_and_ports(group, ports)?;
        for u in uuids.into_iter().filter(|u| !members.contains(u)) {
            self.add_to_set(PortGroup::NAME, gref.clone(), "ports", Atom::Uuid(u));
        }
        Ok(())
    }

    /// Removes switch ports (by name) from a port group; absent ports are fine.
    pub fn remove_ports_from_group(&mut self, group: &str, ports: &[&str]) -> Result<()> {
        let Some(pg) = self.cached::<PortGroup>(group)? else {
            return Ok(());
        };
        for p in ports {
            if let Some(lsp) = self.nb.port(p)? {
                if pg.ports.contains(&lsp.uuid) {
                    self.remove_from_set(
                        PortGroup::NAME,
                        Atom::Uuid(pg.uuid),
                        "ports",
                        Atom::Uuid(lsp.uuid),
                    );
                }
            }
        }
        Ok(())
    }
}

/// A static route row as the spec we compare with (an empty policy is OVN's `dst-ip`).
pub fn route_spec_of(r: &LogicalRouterStaticRoute) -> StaticRouteSpec {
    StaticRouteSpec {
        route_table: r.route_table.clone(),
        policy: r
            .policy
            .clone()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "dst-ip".to_owned()),
        ip_prefix: r.ip_prefix.clone(),
        nexthop: r.nexthop.clone(),
        external_ids: r.external_ids.clone(),
    }
}

/// A policy row as the spec we compare with (the old single `nexthop` counts as `nexthops`).
pub fn policy_spec_of(p: &LogicalRouterPolicy) -> RouterPolicySpec {
    let mut nexthops = p.nexthops.clone();
    if nexthops.is_empty() {
        nexthops.extend(p.nexthop.clone());
    }
    nexthops.sort();
    RouterPolicySpec {
        priority: p.priority,
        match_: p.match_.clone(),
        action: p.action.clone(),
        nexthops,
        external_ids: p.external_ids.clone(),
    }
}

/// The columns of `want` whose value differs from `have`.
/// An optional reference column's value.
fn option_ref(r: Option<&Atom>) -> Value {
    Value::Set(r.cloned().into_iter().collect())
}

pub(crate) fn changed_columns(have: &Row, want: Row) -> Row {
    want.into_iter()
        .filter(|(k, v)| !same_value(have.get(k), v))
        .collect()
}

/// Equal, counting a missing column as the empty value.
fn same_value(have: Option<&Value>, want: &Value) -> bool {
    match (have, want) {
        (Some(h), w) => h == w || (is_empty(h) && is_empty(w)),
        (None, w) => is_empty(w),
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Set(s) => s.is_empty(),
        Value::Map(m) => m.is_empty(),
    }
}
