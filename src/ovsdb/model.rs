//! Typed models of the tables we use: a `Table` trait (name, columns we
//! read and write, conversion from and to rows), column value conversions,
//! and the models of OVN_Northbound (`nb`) and Open_vSwitch (`vswitch`).
//! A model lists only the columns we use; the server may have more.

use std::collections::BTreeMap;

use super::error::{Error, Result};
use super::value::{Atom, Row, Uuid, Value};

/// A typed row of one table.
pub trait Table: Sized + Clone + Send + Sync + 'static {
    const NAME: &'static str;
    /// The columns this model reads and writes (checked against the server's schema).
    const COLUMNS: &'static [&'static str];
    fn uuid(&self) -> Uuid;
    fn from_row(uuid: Uuid, row: &Row) -> Result<Self>;
    /// Every column of the model (not `_uuid`).
    fn to_row(&self) -> Row;
}

/// A Rust type one column converts from and to. A missing column is the
/// column's default (ovsdb-server leaves default values out of updates).
pub trait ColumnValue: Sized {
    fn from_value(v: Option<&Value>) -> std::result::Result<Self, String>;
    fn to_value(&self) -> Value;
}

/// A Rust type one atom converts from and to.
pub trait AtomValue: Sized + Ord + Clone {
    fn from_atom(a: &Atom) -> Option<Self>;
    fn to_atom(&self) -> Atom;
}

impl AtomValue for String {
    fn from_atom(a: &Atom) -> Option<Self> {
        a.as_str().map(str::to_string)
    }
    fn to_atom(&self) -> Atom {
        Atom::String(self.clone())
    }
}
impl AtomValue for i64 {
    fn from_atom(a: &Atom) -> Option<Self> {
        a.as_i64()
    }
    fn to_atom(&self) -> Atom {
        Atom::Integer(*self)
    }
}
impl AtomValue for bool {
    fn from_atom(a: &Atom) -> Option<Self> {
        a.as_bool()
    }
    fn to_atom(&self) -> Atom {
        Atom::Boolean(*self)
    }
}
impl AtomValue for Uuid {
    fn from_atom(a: &Atom) -> Option<Self> {
        a.as_uuid()
    }
    fn to_atom(&self) -> Atom {
        Atom::Uuid(*self)
    }
}

fn atom_of<T: AtomValue>(a: &Atom) -> std::result::Result<T, String> {
    T::from_atom(a).ok_or_else(|| format!("unexpected atom {a:?}"))
}

macro_rules! scalar_column {
    ($($t:ty),*) => {$(
        impl ColumnValue for $t {
            fn from_value(v: Option<&Value>) -> std::result::Result<Self, String> {
                match v.map(Value::as_set) {
                    None | Some([]) => Ok(<$t>::default()),
                    Some([a]) => atom_of(a),
                    Some(other) => Err(format!("expected one atom, got {}", other.len())),
                }
            }
            fn to_value(&self) -> Value {
                Value::atom(self.to_atom())
            }
        }
    )*};
}
scalar_column!(String, i64, bool, Uuid);

impl<T: AtomValue> ColumnValue for Option<T> {
    fn from_value(v: Option<&Value>) -> std::result::Result<Self, String> {
        match v.map(Value::as_set) {
            None | Some([]) => Ok(None),
            Some([a]) => atom_of(a).map(Some),
            Some(other) => Err(format!("expected at most one atom, got {}", other.len())),
        }
    }
    fn to_value(&self) -> Value {
        Value::set(self.iter().map(AtomValue::to_atom))
    }
}

impl<T: AtomValue> ColumnValue for Vec<T> {
    fn from_value(v: Option<&Value>) -> std::result::Result<Self, String> {
        v.map(Value::as_set)
            .unwrap_or(&[])
            .iter()
            .map(atom_of)
            .collect()
    }
    fn to_value(&self) -> Value {
        Value::set(self.iter().map(AtomValue::to_atom))
    }
}

impl<K: AtomValue, V: AtomValue> ColumnValue for BTreeMap<K, V> {
    fn from_value(v: Option<&Value>) -> std::result::Result<Self, String> {
        match v {
            None => Ok(BTreeMap::new()),
            Some(Value::Set(s)) if s.is_empty() => Ok(BTreeMap::new()),
            Some(Value::Map(m)) => m
                .iter()
                .map(|(k, v)| Ok((atom_of(k)?, atom_of(v)?)))
                .collect(),
            Some(other) => Err(format!("expected a map, got {other:?}")),
        }
    }
    fn to_value(&self) -> Value {
        Value::Map(
            self.iter()
                .map(|(k, v)| (k.to_atom(), v.to_atom()))
                .collect(),
        )
    }
}

/// Reads one column of a row into its Rust type, naming the column on failure.
pub fn column<T: ColumnValue>(row: &Row, table: &str, col: &str) -> Result<T> {
    T::from_value(row.get(col)).map_err(|reason| Error::Decode {
        table: table.to_string(),
        column: col.to_string(),
        reason,
    })
}

macro_rules! table {
    ($(#[$m:meta])* $name:ident = $tname:literal { $($field:ident : $ty:ty = $col:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Default, PartialEq)]
        pub struct $name {
            pub uuid: Uuid,
            $(pub $field: $ty,)*
        }

        impl Table for $name {
            const NAME: &'static str = $tname;
            const COLUMNS: &'static [&'static str] = &[$($col),*];
            fn uuid(&self) -> Uuid {
                self.uuid
            }
            fn from_row(uuid: Uuid, row: &Row) -> Result<Self> {
                Ok($name { uuid, $($field: column(row, $tname, $col)?,)* })
            }
            fn to_row(&self) -> Row {
                let mut r = Row::new();
                $(r.insert($col.to_string(), ColumnValue::to_value(&self.$field));)*
                r
            }
        }
    };
}

type Map = BTreeMap<String, String>;

/// OVN_Northbound tables.
pub mod nb {
    use super::*;

    table!(NbGlobal = "NB_Global" {
        name: String = "name",
        nb_cfg: i64 = "nb_cfg",
        options: Map = "options",
        external_ids: Map = "external_ids",
    });
    table!(LogicalSwitch = "Logical_Switch" {
        name: String = "name",
        ports: Vec<Uuid> = "ports",
        acls: Vec<Uuid> = "acls",
        qos_rules: Vec<Uuid> = "qos_rules",
        other_config: Map = "other_config",
        external_ids: Map = "external_ids",
    });
    table!(LogicalSwitchPort = "Logical_Switch_Port" {
        name: String = "name",
        kind: String = "type",
        options: Map = "options",
        addresses: Vec<String> = "addresses",
        port_security: Vec<String> = "port_security",
        dhcpv4_options: Option<Uuid> = "dhcpv4_options",
        dhcpv6_options: Option<Uuid> = "dhcpv6_options",
        up: Option<bool> = "up",
        enabled: Option<bool> = "enabled",
        external_ids: Map = "external_ids",
    });
    table!(LogicalRouter = "Logical_Router" {
        name: String = "name",
        ports: Vec<Uuid> = "ports",
        static_routes: Vec<Uuid> = "static_routes",
        policies: Vec<Uuid> = "policies",
        nat: Vec<Uuid> = "nat",
        enabled: Option<bool> = "enabled",
        options: Map = "options",
        external_ids: Map = "external_ids",
    });
    table!(LogicalRouterPort = "Logical_Router_Port" {
        name: String = "name",
        mac: String = "mac",
        networks: Vec<String> = "networks",
        peer: Option<String> = "peer",
        enabled: Option<bool> = "enabled",
        options: Map = "options",
        external_ids: Map = "external_ids",
    });
    table!(LogicalRouterStaticRoute = "Logical_Router_Static_Route" {
        route_table: String = "route_table",
        ip_prefix: String = "ip_prefix",
        nexthop: String = "nexthop",
        output_port: Option<String> = "output_port",
        policy: Option<String> = "policy",
        options: Map = "options",
        external_ids: Map = "external_ids",
    });
    table!(LogicalRouterPolicy = "Logical_Router_Policy" {
        priority: i64 = "priority",
        match_: String = "match",
        action: String = "action",
        nexthop: Option<String> = "nexthop",
        nexthops: Vec<String> = "nexthops",
        options: Map = "options",
        external_ids: Map = "external_ids",
    });
    table!(Acl = "ACL" {
        name: Option<String> = "name",
        priority: i64 = "priority",
        direction: String = "direction",
        match_: String = "match",
        action: String = "action",
        log: bool = "log",
        severity: Option<String> = "severity",
        meter: Option<String> = "meter",
        options: Map = "options",
        external_ids: Map = "external_ids",
    });
    table!(PortGroup = "Port_Group" {
        name: String = "name",
        ports: Vec<Uuid> = "ports",
        acls: Vec<Uuid> = "acls",
        external_ids: Map = "external_ids",
    });
    table!(AddressSet = "Address_Set" {
        name: String = "name",
        addresses: Vec<String> = "addresses",
        external_ids: Map = "external_ids",
    });
    table!(DhcpOptions = "DHCP_Options" {
        cidr: String = "cidr",
        options: Map = "options",
        external_ids: Map = "external_ids",
    });
    table!(Nat = "NAT" {
        kind: String = "type",
        external_ip: String = "external_ip",
        external_mac: Option<String> = "external_mac",
        logical_ip: String = "logical_ip",
        logical_port: Option<String> = "logical_port",
        options: Map = "options",
        external_ids: Map = "external_ids",
    });
    table!(Meter = "Meter" {
        name: String = "name",
        unit: String = "unit",
        bands: Vec<Uuid> = "bands",
        fair: Option<bool> = "fair",
        external_ids: Map = "external_ids",
    });
    table!(MeterBand = "Meter_Band" {
        action: String = "action",
        rate: i64 = "rate",
        burst_size: i64 = "burst_size",
        external_ids: Map = "external_ids",
    });
    table!(Qos = "QoS" {
        priority: i64 = "priority",
        direction: String = "direction",
        match_: String = "match",
        action: BTreeMap<String, i64> = "action",
        bandwidth: BTreeMap<String, i64> = "bandwidth",
        external_ids: Map = "external_ids",
    });
}

/// Open_vSwitch tables.
pub mod vswitch {
    use super::*;

    table!(OpenVswitch = "Open_vSwitch" {
        bridges: Vec<Uuid> = "bridges",
        next_cfg: i64 = "next_cfg",
        cur_cfg: i64 = "cur_cfg",
        ovs_version: Option<String> = "ovs_version",
        datapath_types: Vec<String> = "datapath_types",
        iface_types: Vec<String> = "iface_types",
        other_config: Map = "other_config",
        external_ids: Map = "external_ids",
    });
    table!(Bridge = "Bridge" {
        name: String = "name",
        ports: Vec<Uuid> = "ports",
        datapath_type: String = "datapath_type",
        fail_mode: Option<String> = "fail_mode",
        other_config: Map = "other_config",
        external_ids: Map = "external_ids",
    });
    table!(Port = "Port" {
        name: String = "name",
        interfaces: Vec<Uuid> = "interfaces",
        qos: Option<Uuid> = "qos",
        tag: Option<i64> = "tag",
        other_config: Map = "other_config",
        external_ids: Map = "external_ids",
    });
    table!(Interface = "Interface" {
        name: String = "name",
        kind: String = "type",
        options: Map = "options",
        mtu_request: Option<i64> = "mtu_request",
        ingress_policing_rate: i64 = "ingress_policing_rate",
        ingress_policing_burst: i64 = "ingress_policing_burst",
        ofport: Option<i64> = "ofport",
        error: Option<String> = "error",
        other_config: Map = "other_config",
        external_ids: Map = "external_ids",
    });
    table!(Qos = "QoS" {
        kind: String = "type",
        queues: BTreeMap<i64, Uuid> = "queues",
        other_config: Map = "other_config",
        external_ids: Map = "external_ids",
    });
    table!(Queue = "Queue" {
        dscp: Option<i64> = "dscp",
        other_config: Map = "other_config",
        external_ids: Map = "external_ids",
    });
}

#[cfg(test)]
mod tests {
    use super::nb::LogicalSwitchPort;
    use super::*;

    #[test]
    fn a_model_round_trips_through_a_row() {
        let lsp = LogicalSwitchPort {
            uuid: Uuid::new_v4(),
            name: "p.ns.prov".into(),
            addresses: vec!["00:00:00:00:00:01 10.0.0.2".into()],
            port_security: vec!["00:00:00:00:00:01 10.0.0.2".into()],
            up: Some(true),
            external_ids: [("pod".to_string(), "ns/p".to_string())].into(),
            ..Default::default()
        };
        let back = LogicalSwitchPort::from_row(lsp.uuid, &lsp.to_row()).unwrap();
        assert_eq!(back, lsp);
    }

    #[test]
    fn missing_columns_are_defaults_and_wrong_types_are_named() {
        let u = Uuid::new_v4();
        let lsp = LogicalSwitchPort::from_row(u, &Row::new()).unwrap();
        assert_eq!(lsp.name, "");
        assert_eq!(lsp.up, None);
        let mut row = Row::new();
        row.insert("name".into(), Value::atom(3i64));
        let e = LogicalSwitchPort::from_row(u, &row)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("Logical_Switch_Port") && e.contains("name"),
            "{e}"
        );
    }
}
