//! The node's Open_vSwitch database in domain words, for the node role: the root row and
//! its `external_ids` (what makes ovn-controller a chassis), bridges, plugging and
//! unplugging a pod's host-side interface with its `external_ids`, reading the interfaces we
//! plugged back as [`PluggedInterface`]s, and waiting for `ovn-installed`. Pod bandwidth
//! limits (QoS and Queue rows) are `qos.rs`. What the chassis's `external_ids` say is the
//! node role's (`node/chassis.rs`); this module only writes them.

mod qos;

use std::path::Path;

use tokio::time::Instant;
use tracing::debug;

use super::external_ids::{self, IFACE_ID, OVN_INSTALLED, SANDBOX as SANDBOX_ID};
use super::{is_conflict, Error, Map, Result, ATTEMPTS};
use crate::ovsdb::model::vswitch::{Bridge, Interface, OpenVswitch, Port, Qos, Queue};
use crate::ovsdb::{
    row, Atom, Client, ClientOptions, Condition, IndexSpec, Mutation, Mutator, Op, Table,
    TableSpec, Uuid, Value,
};

pub use qos::{bandwidth, Bandwidth, PortQos, QosKind, NETEM};

pub const DATABASE: &str = "Open_vSwitch";

/// An OVS interface as the node role reads it back: its name and the `external_ids` that
/// say which pod attachment it carries (see [`external_ids`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluggedInterface {
    pub name: String,
    pub external_ids: Map,
}

impl PluggedInterface {
    fn of(row: Interface) -> Self {
        PluggedInterface {
            name: row.name,
            external_ids: row.external_ids,
        }
    }

    fn id(&self, key: &str) -> Option<&str> {
        self.external_ids.get(key).map(String::as_str)
    }

    /// The logical switch port it is bound to (`iface-id`).
    pub fn iface_id(&self) -> Option<&str> {
        self.id(IFACE_ID)
    }

    /// The pod's namespace and name.
    pub fn pod(&self) -> Option<(&str, &str)> {
        Some((
            self.id(external_ids::POD_NAMESPACE)?,
            self.id(external_ids::POD_NAME)?,
        ))
    }

    /// The pod's netns, once a sandbox took the interface (a pre-plugged one has none yet).
    pub fn pod_netns(&self) -> Option<&Path> {
        self.id(external_ids::POD_NETNS).map(Path::new)
    }

    /// The interface's name inside the pod (`CNI_IFNAME`), once a sandbox took it.
    pub fn pod_ifname(&self) -> Option<&str> {
        self.id(external_ids::POD_IFNAME)
    }

    /// Built ahead of its sandbox and not claimed by an ADD yet.
    pub fn is_preplugged(&self) -> bool {
        self.external_ids.contains_key(external_ids::PREPLUG_PEER)
    }

    /// ovn-controller bound it and installed its flows.
    pub fn is_ovn_installed(&self) -> bool {
        self.id(OVN_INSTALLED) == Some("true")
    }
}

/// The node role's connection to the local Open_vSwitch database.
#[derive(Clone)]
pub struct Vswitch {
    client: Client,
}

fn named(n: &str) -> Value {
    Value::atom(Atom::NamedUuid(n.to_string()))
}

/// The mutation of row `uuid`'s `external_ids` (now `current`) that sets the keys of `set`
/// and removes the keys `remove`, leaving the others; none when nothing would change.
fn edit_ids_ops(table: &str, uuid: Uuid, current: &Map, set: &Map, remove: &[&str]) -> Vec<Op> {
    let changed: Map = set
        .iter()
        .filter(|(k, v)| current.get(*k) != Some(v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let gone = remove
        .iter()
        .copied()
        .filter(|k| current.contains_key(*k) && !set.contains_key(*k));
    let deleted: Vec<Atom> = changed
        .keys()
        .map(String::as_str)
        .chain(gone)
        .map(Atom::from)
        .collect();
    if deleted.is_empty() {
        return vec![];
    }
    vec![Op::mutate(
        table,
        vec![Condition::uuid(uuid)],
        vec![
            Mutation::delete("external_ids", Value::set(deleted)),
            Mutation::insert("external_ids", Value::string_map(&changed)),
        ],
    )]
}

impl Vswitch {
    pub fn tables() -> Vec<TableSpec> {
        vec![
            TableSpec::of::<OpenVswitch>(),
            TableSpec::of::<Bridge>().index(IndexSpec::column("ports")),
            TableSpec::of::<Port>().index(IndexSpec::column("interfaces")),
            TableSpec::of::<Interface>()
                .index(IndexSpec::map_key("external_ids", IFACE_ID))
                .index(IndexSpec::map_key("external_ids", SANDBOX_ID)),
            TableSpec::of::<Qos>(),
            TableSpec::of::<Queue>(),
        ]
    }

    pub async fn connect(endpoint: &str) -> Result<Vswitch> {
        Self::connect_with(endpoint, ClientOptions::new(Self::tables())).await
    }

    pub async fn connect_with(endpoint: &str, options: ClientOptions) -> Result<Vswitch> {
        Ok(Vswitch {
            client: Client::connect(endpoint, DATABASE, options).await?,
        })
    }

    /// Whether the session to the database is up.
    pub fn is_connected(&self) -> bool {
        self.client.is_connected()
    }

    /// Returns once the cache holds every change the server sent so far.
    pub async fn sync(&self) -> Result<()> {
        Ok(self.client.sync().await?)
    }

    /// Plans with `plan` against the cache and runs the operations as one
    /// transaction, replanning when a concurrent writer got there first.
    async fn apply(&self, plan: impl Fn(&Self) -> Result<Vec<Op>>) -> Result<bool> {
        let mut attempt = 1;
        loop {
            let ops = plan(self)?;
            if ops.is_empty() {
                return Ok(false);
            }
            match self.client.transact(ops).await.map_err(Error::from) {
                Err(e) if attempt < ATTEMPTS && is_conflict(&e) => {
                    debug!(error = %e, attempt, "concurrent OVS change, replanning");
                    attempt += 1;
                    self.client.sync().await?;
                }
                Err(e) => return Err(e),
                Ok(_) => return Ok(true),
            }
        }
    }

    fn root(&self) -> Result<OpenVswitch> {
        self.client
            .list::<OpenVswitch>()?
            .into_iter()
            .next()
            .ok_or_else(|| Error::NotFound {
                kind: "Open_vSwitch row",
                name: String::new(),
            })
    }

    /// Inserts the root row if the database has none, as `ovs-vsctl init` does (a fresh
    /// database has none). Returns whether it did.
    pub async fn ensure_root_row(&self) -> Result<bool> {
        if !self.client.list::<OpenVswitch>()?.is_empty() {
            return Ok(false);
        }
        let ops = vec![
            Op::wait_absent(OpenVswitch::NAME, vec![]),
            Op::insert(OpenVswitch::NAME, Default::default(), None),
        ];
        match self.client.transact(ops).await {
            Ok(_) => Ok(true),
            Err(e) => {
                // Another writer (ovs-vsctl, an earlier us) inserted it first: fine if it is
                // there now.
                self.client.sync().await?;
                if self.client.list::<OpenVswitch>()?.is_empty() {
                    return Err(e.into());
                }
                Ok(false)
            }
        }
    }

    fn bridge(&self, name: &str) -> Result<Option<Bridge>> {
        Ok(self.client.find(&IndexSpec::column("name"), name)?.pop())
    }

    /// Whether bridge `name` exists.
    pub fn bridge_exists(&self, name: &str) -> Result<bool> {
        Ok(self.bridge(name)?.is_some())
    }

    fn interface_row(&self, name: &str) -> Result<Option<Interface>> {
        Ok(self.client.find(&IndexSpec::column("name"), name)?.pop())
    }

    /// The interface `name`, if there is one.
    pub fn interface(&self, name: &str) -> Result<Option<PluggedInterface>> {
        Ok(self.interface_row(name)?.map(PluggedInterface::of))
    }

    /// The interface `name`; `Error::NotFound` if there is none.
    fn existing_interface(&self, name: &str) -> Result<Interface> {
        self.interface_row(name)?.ok_or_else(|| Error::NotFound {
            kind: "interface",
            name: name.to_string(),
        })
    }

    fn interface_rows_with_id(&self, key: &str, value: &str) -> Result<Vec<Interface>> {
        Ok(self
            .client
            .find(&IndexSpec::map_key("external_ids", key), value)?)
    }

    /// The interfaces whose `external_ids:<key>` is `value`, for the indexed keys
    /// ([`IFACE_ID`], [`SANDBOX_ID`]).
    pub fn interfaces_with_id(&self, key: &str, value: &str) -> Result<Vec<PluggedInterface>> {
        Ok(self
            .interface_rows_with_id(key, value)?
            .into_iter()
            .map(PluggedInterface::of)
            .collect())
    }

    /// Every interface the node role plugged (marked with our vendor, see
    /// [`external_ids::is_ours`]), pre-plugged ones included.
    pub fn our_interfaces(&self) -> Result<Vec<PluggedInterface>> {
        Ok(self
            .client
            .list::<Interface>()?
            .into_iter()
            .filter(|i| external_ids::is_ours(&i.external_ids))
            .map(PluggedInterface::of)
            .collect())
    }

    /// The bridge whose port holds interface `iface`, if it is on one.
    pub fn bridge_of(&self, iface: &str) -> Result<Option<String>> {
        let Some(i) = self.interface_row(iface)? else {
            return Ok(None);
        };
        let Some(port) = self.port_of(i.uuid)? else {
            return Ok(None);
        };
        Ok(self
            .client
            .find::<Bridge>(&IndexSpec::column("ports"), port.uuid)?
            .pop()
            .map(|b| b.name))
    }

    /// The port holding interface `iface`.
    fn port_of(&self, iface: Uuid) -> Result<Option<Port>> {
        Ok(self
            .client
            .find::<Port>(&IndexSpec::column("interfaces"), iface)?
            .pop())
    }

    /// A bridge with its internal port, `datapath_type` (`system` is "")
    /// and `fail_mode` (`secure`/`standalone`).
    pub async fn ensure_bridge(
        &self,
        name: &str,
        datapath_type: &str,
        fail_mode: Option<&str>,
    ) -> Result<bool> {
        let fail = Value::set(fail_mode.map(Atom::from));
        self.apply(|vs| {
            let want = row([
                ("datapath_type", Value::atom(datapath_type)),
                ("fail_mode", fail.clone()),
            ]);
            Ok(match vs.bridge(name)? {
                Some(br) => {
                    let diff = super::nb::changed_columns(&br.to_row(), want);
                    if diff.is_empty() {
                        vec![]
                    } else {
                        vec![Op::update(
                            Bridge::NAME,
                            vec![Condition::uuid(br.uuid)],
                            diff,
                        )]
                    }
                }
                None => {
                    let root = vs.root()?;
                    let mut br = want;
                    br.insert("name".into(), Value::atom(name));
                    br.insert("ports".into(), named("port"));
                    vec![
                        Op::insert(
                            Interface::NAME,
                            row([
                                ("name", Value::atom(name)),
                                ("type", Value::atom("internal")),
                            ]),
                            Some("iface"),
                        ),
                        Op::insert(
                            Port::NAME,
                            row([("name", Value::atom(name)), ("interfaces", named("iface"))]),
                            Some("port"),
                        ),
                        Op::insert(Bridge::NAME, br, Some("br")),
                        Op::mutate(
                            OpenVswitch::NAME,
                            vec![Condition::uuid(root.uuid)],
                            vec![Mutation::insert("bridges", named("br"))],
                        ),
                    ]
                }
            })
        })
        .await
    }

    /// Sets these keys of `Open_vSwitch.external_ids` (others stay).
    pub async fn set_ovs_external_ids(&self, ids: &Map) -> Result<bool> {
        self.edit_ovs_external_ids(ids, &[]).await
    }

    /// Removes these keys of `Open_vSwitch.external_ids` (others stay; absent is fine).
    pub async fn remove_ovs_external_ids(&self, keys: &[&str]) -> Result<bool> {
        self.edit_ovs_external_ids(&Map::new(), keys).await
    }

    async fn edit_ovs_external_ids(&self, set: &Map, remove: &[&str]) -> Result<bool> {
        self.apply(|vs| {
            let root = vs.root()?;
            Ok(edit_ids_ops(
                OpenVswitch::NAME,
                root.uuid,
                &root.external_ids,
                set,
                remove,
            ))
        })
        .await
    }

    /// Removes bridge `name` with its ports and interfaces (rows only the bridge references
    /// go with it). Absent is fine.
    pub async fn remove_bridge(&self, name: &str) -> Result<bool> {
        self.apply(|vs| {
            let Some(br) = vs.bridge(name)? else {
                return Ok(vec![]);
            };
            let root = vs.root()?;
            Ok(vec![Op::mutate(
                OpenVswitch::NAME,
                vec![Condition::uuid(root.uuid)],
                vec![Mutation::delete("bridges", Value::atom(br.uuid))],
            )])
        })
        .await
    }

    /// Removes every bridge (with its ports and interfaces) and waits until ovs-vswitchd has
    /// applied that (`cur_cfg` reaches the `next_cfg` the same transaction bumped), so the
    /// datapaths and bridge devices are gone before it stops. Returns the names removed.
    pub async fn remove_all_bridges(&self, deadline: Instant) -> Result<Vec<String>> {
        let names: Vec<String> = self
            .client
            .list::<Bridge>()?
            .into_iter()
            .map(|b| b.name)
            .collect();
        if names.is_empty() {
            return Ok(names);
        }
        let root = self.root()?;
        let ops = vec![
            Op::update(
                OpenVswitch::NAME,
                vec![Condition::uuid(root.uuid)],
                row([("bridges", Value::empty_set())]),
            ),
            Op::mutate(
                OpenVswitch::NAME,
                vec![Condition::uuid(root.uuid)],
                vec![Mutation::new("next_cfg", Mutator::Add, Value::atom(1i64))],
            ),
        ];
        self.client.transact(ops).await?;
        self.client.sync().await?;
        let target = self.root()?.next_cfg;
        self.client
            .wait_until(deadline, "ovs-vswitchd to remove the bridges", || {
                self.root().ok().filter(|r| r.cur_cfg >= target).map(|_| ())
            })
            .await?;
        Ok(names)
    }

    /// Plugs `iface` (a host-side veth end) into `bridge` as a Port and
    /// Interface with `external_ids`; ports of other interfaces that claim
    /// the same `iface-id` are removed. Idempotent.
    pub async fn plug_interface(
        &self,
        bridge: &str,
        iface: &str,
        external_ids: &Map,
    ) -> Result<bool> {
        self.apply(|vs| {
            let br = vs.bridge(bridge)?.ok_or_else(|| Error::NotFound {
                kind: "bridge",
                name: bridge.to_string(),
            })?;
            let mut ops = Vec::new();
            if let Some(id) = external_ids.get(IFACE_ID) {
                let stale = vs.interface_rows_with_id(IFACE_ID, id)?;
                for other in stale.iter().filter(|i| i.name != iface) {
                    if let Some(p) = vs.port_of(other.uuid)? {
                        ops.extend(vs.unplug_ops(&p)?);
                    }
                }
            }
            match vs.interface_row(iface)? {
                Some(i) => {
                    if &i.external_ids != external_ids {
                        ops.push(Op::update(
                            Interface::NAME,
                            vec![Condition::uuid(i.uuid)],
                            row([("external_ids", Value::string_map(external_ids))]),
                        ));
                    }
                    let port = vs.port_of(i.uuid)?;
                    if !port.as_ref().is_some_and(|p| br.ports.contains(&p.uuid)) {
                        // Known interface on another bridge (or orphaned): move its port here.
                        if let Some(p) = &port {
                            ops.extend(vs.unplug_ops(p)?);
                        }
                        ops.extend(plug_ops(br.uuid, iface, external_ids));
                    }
                }
                None => ops.extend(plug_ops(br.uuid, iface, external_ids)),
            }
            Ok(ops)
        })
        .await
    }

    /// Sets the keys of `set` and removes the keys `remove` of interface `iface`'s
    /// `external_ids`; the other keys stay (`ovn-installed` among them, which a whole-column
    /// update would drop). `Error::NotFound` if there is no such interface.
    pub async fn edit_interface_ids(
        &self,
        iface: &str,
        set: &Map,
        remove: &[&str],
    ) -> Result<bool> {
        self.apply(|vs| {
            let i = vs.existing_interface(iface)?;
            Ok(edit_ids_ops(
                Interface::NAME,
                i.uuid,
                &i.external_ids,
                set,
                remove,
            ))
        })
        .await
    }

    /// Removes the port of interface `iface` and QoS rows only it used.
    /// Absent is fine.
    pub async fn unplug_interface(&self, iface: &str) -> Result<bool> {
        self.apply(|vs| {
            let Some(i) = vs.interface_row(iface)? else {
                return Ok(vec![]);
            };
            match vs.port_of(i.uuid)? {
                Some(p) => vs.unplug_ops(&p),
                None => Ok(vec![]),
            }
        })
        .await
    }

    fn unplug_ops(&self, port: &Port) -> Result<Vec<Op>> {
        let mut ops: Vec<Op> = self
            .client
            .find::<Bridge>(&IndexSpec::column("ports"), port.uuid)?
            .into_iter()
            .map(|b| {
                Op::mutate(
                    Bridge::NAME,
                    vec![Condition::uuid(b.uuid)],
                    vec![Mutation::delete("ports", Value::atom(port.uuid))],
                )
            })
            .collect();
        if let Some(q) = port.qos {
            // The server counts references before collecting the port, so
            // drop the port's reference explicitly before deleting the QoS.
            ops.push(Op::update(
                Port::NAME,
                vec![Condition::uuid(port.uuid)],
                row([("qos", Value::empty_set())]),
            ));
            ops.extend(self.qos_cleanup_ops(q, port.uuid)?);
        }
        Ok(ops)
    }

    /// Waits until ovn-controller marks interface `iface` `ovn-installed`
    /// (returns at once if it already is), across reconnects, up to `deadline`.
    pub async fn wait_ovn_installed(&self, iface: &str, deadline: Instant) -> Result<()> {
        let what = format!("interface {iface} to be ovn-installed");
        self.client
            .wait_until(deadline, &what, || {
                let i = self.interface(iface).ok()??;
                i.is_ovn_installed().then_some(())
            })
            .await?;
        Ok(())
    }
}

fn plug_ops(bridge: Uuid, iface: &str, external_ids: &Map) -> Vec<Op> {
    vec![
        Op::insert(
            Interface::NAME,
            row([
                ("name", Value::atom(iface)),
                ("external_ids", Value::string_map(external_ids)),
            ]),
            Some("iface"),
        ),
        Op::insert(
            Port::NAME,
            row([("name", Value::atom(iface)), ("interfaces", named("iface"))]),
            Some("port"),
        ),
        Op::mutate(
            Bridge::NAME,
            vec![Condition::uuid(bridge)],
            vec![Mutation::insert("ports", named("port"))],
        ),
    ]
}
