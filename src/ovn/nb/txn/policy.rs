//! `NbTxn::sync_policy`: makes the policy rows of NB (our Port_Groups and Address_Sets, their
//! ACLs, our ACLs on logical switches) exactly a `PolicySpec`, in the transaction being planned.
//! Only differences become operations, so an unchanged policy writes nothing. The wanted state
//! itself is planned elsewhere (`operator::policy::plan`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::NbTxn;
use crate::ovn::nb::policy::{
    is_policy_row, is_policy_switch_acl, AclSpec, AddressSetSpec, PolicySpec, PortGroupSpec,
};
use crate::ovn::nb::strings;
use crate::ovn::Result;
use crate::ovsdb::model::nb::{Acl, AddressSet, LogicalSwitch, LogicalSwitchPort, PortGroup};
use crate::ovsdb::{row, Atom, Condition, IndexSpec, Op, Table, Uuid, Value};

impl NbTxn<'_> {
    /// Brings NB's policy rows to `want`: port groups (members and ACLs), address sets, and our
    /// ACLs on the switches `want` names or that hold some now. Switches that do not exist
    /// (yet) are skipped; ports that do not exist are left out of their groups.
    pub fn sync_policy(&mut self, want: &PolicySpec) -> Result<()> {
        self.sync_port_groups(&want.port_groups)?;
        self.sync_address_sets(&want.address_sets)?;
        self.sync_switch_acls(&want.switch_acls)
    }

    fn port_uuid(&self, name: &str) -> Result<Option<Uuid>> {
        let uuids = self.lookup(
            LogicalSwitchPort::NAME,
            &IndexSpec::column("name"),
            &Atom::from(name),
        )?;
        Ok(uuids.first().copied())
    }

    fn acl_row(spec: &AclSpec) -> crate::ovsdb::Row {
        row([
            ("direction", Value::atom(spec.direction.as_str())),
            ("priority", Value::atom(spec.priority)),
            ("match", Value::atom(spec.match_.as_str())),
            ("action", Value::atom(spec.action.as_str())),
            (
                "name",
                Value::set(spec.name.iter().map(|n| Atom::from(n.as_str()))),
            ),
            ("external_ids", Value::string_map(&spec.external_ids)),
        ])
    }

    /// Makes the ACLs in `parent`'s `acls` column that `ours` accepts exactly `want`.
    fn sync_acls(
        &mut self,
        table: &'static str,
        parent: Atom,
        existing: &[Uuid],
        ours: impl Fn(&Acl) -> bool,
        want: &[AclSpec],
    ) -> Result<()> {
        let mut have = Vec::new();
        for uuid in existing {
            have.extend(self.nb.client.get::<Acl>(*uuid)?.filter(|a| ours(a)));
        }
        let mut wanted: BTreeMap<_, &AclSpec> = want.iter().map(|a| (a.identity(), a)).collect();
        for acl in &have {
            let identity = (
                acl.direction.as_str(),
                acl.priority,
                acl.match_.as_str(),
                acl.action.as_str(),
            );
            match wanted.remove(&identity) {
                Some(w) if w.same_row(acl) => {}
                Some(w) => {
                    let fix = row([
                        (
                            "name",
                            Value::set(w.name.iter().map(|n| Atom::from(n.as_str()))),
                        ),
                        ("external_ids", Value::string_map(&w.external_ids)),
                    ]);
                    self.update(Acl::NAME, acl.uuid, fix);
                }
                // Unwanted, or a duplicate of one kept: ACLs are not root rows, so leaving
                // the parent deletes them.
                None => self.remove_from_set(table, parent.clone(), "acls", Atom::Uuid(acl.uuid)),
            }
        }
        for w in wanted.into_values() {
            let name = format!("acl {} {} {}", w.direction, w.priority, w.match_);
            let r = self.insert(Acl::NAME, &name, Self::acl_row(w));
            self.add_to_set(table, parent.clone(), "acls", r);
        }
        Ok(())
    }

    fn sync_port_groups(&mut self, want: &[PortGroupSpec]) -> Result<()> {
        let mut have: HashMap<String, PortGroup> = self
            .nb
            .client
            .list::<PortGroup>()?
            .into_iter()
            .filter(|g| is_policy_row(&g.external_ids))
            .map(|g| (g.name.clone(), g))
            .collect();
        for g in want {
            if !self.first_touch(PortGroup::NAME, &g.name) {
                continue;
            }
            let mut ports = BTreeSet::new();
            for p in &g.ports {
                ports.extend(self.port_uuid(p)?);
            }
            match have.remove(&g.name) {
                Some(pg) => {
                    if pg.external_ids != g.external_ids {
                        self.update(
                            PortGroup::NAME,
                            pg.uuid,
                            row([("external_ids", Value::string_map(&g.external_ids))]),
                        );
                    }
                    let target = Atom::Uuid(pg.uuid);
                    let current: BTreeSet<Uuid> = pg.ports.iter().copied().collect();
                    for u in ports.difference(&current) {
                        self.add_to_set(PortGroup::NAME, target.clone(), "ports", Atom::Uuid(*u));
                    }
                    for u in current.difference(&ports) {
                        self.remove_from_set(
                            PortGroup::NAME,
                            target.clone(),
                            "ports",
                            Atom::Uuid(*u),
                        );
                    }
                    self.sync_acls(PortGroup::NAME, target, &pg.acls, |_| true, &g.acls)?;
                }
                None => {
                    let mut acls = Vec::new();
                    for a in &g.acls {
                        let name = format!("acl {} {} {}", a.direction, a.priority, a.match_);
                        acls.push(self.insert(Acl::NAME, &name, Self::acl_row(a)));
                    }
                    let pg = row([
                        ("name", Value::atom(g.name.as_str())),
                        ("ports", Value::set(ports.into_iter().map(Atom::Uuid))),
                        ("acls", Value::set(acls)),
                        ("external_ids", Value::string_map(&g.external_ids)),
                    ]);
                    // The schema's unique index on `name` refuses a concurrent duplicate.
                    self.insert(PortGroup::NAME, &g.name, pg);
                }
            }
        }
        for (name, pg) in have {
            if self.first_touch(PortGroup::NAME, &name) {
                self.ops
                    .push(Op::delete(PortGroup::NAME, vec![Condition::uuid(pg.uuid)]));
            }
        }
        Ok(())
    }

    fn sync_address_sets(&mut self, want: &[AddressSetSpec]) -> Result<()> {
        let mut have: HashMap<String, AddressSet> = self
            .nb
            .client
            .list::<AddressSet>()?
            .into_iter()
            .filter(|s| is_policy_row(&s.external_ids))
            .map(|s| (s.name.clone(), s))
            .collect();
        for s in want {
            if !self.first_touch(AddressSet::NAME, &s.name) {
                continue;
            }
            let addresses: Vec<String> = s.addresses.iter().cloned().collect();
            let want_row = row([
                ("name", Value::atom(s.name.as_str())),
                ("addresses", strings(&addresses)),
                ("external_ids", Value::string_map(&s.external_ids)),
            ]);
            match have.remove(&s.name) {
                Some(set) => {
                    let diff = super::changed_columns(&set.to_row(), want_row);
                    self.update(AddressSet::NAME, set.uuid, diff);
                }
                None => {
                    self.insert(AddressSet::NAME, &s.name, want_row);
                }
            }
        }
        for (name, set) in have {
            if self.first_touch(AddressSet::NAME, &name) {
                self.ops.push(Op::delete(
                    AddressSet::NAME,
                    vec![Condition::uuid(set.uuid)],
                ));
            }
        }
        Ok(())
    }

    fn sync_switch_acls(&mut self, want: &BTreeMap<String, Vec<AclSpec>>) -> Result<()> {
        let switches: Vec<LogicalSwitch> = self.nb.client.list()?;
        let none = Vec::new();
        for ls in switches {
            let holds_ours = ls.acls.iter().any(|u| {
                self.nb
                    .client
                    .get::<Acl>(*u)
                    .ok()
                    .flatten()
                    .is_some_and(|a| is_policy_switch_acl(&a.external_ids))
            });
            let wanted = want.get(&ls.name).unwrap_or(&none);
            if !holds_ours && wanted.is_empty() {
                continue;
            }
            if !self.first_touch(Acl::NAME, &format!("switch {}", ls.name)) {
                continue;
            }
            self.sync_acls(
                LogicalSwitch::NAME,
                Atom::Uuid(ls.uuid),
                &ls.acls,
                |a| is_policy_switch_acl(&a.external_ids),
                wanted,
            )?;
        }
        Ok(())
    }
}
