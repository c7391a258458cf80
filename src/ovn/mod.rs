//! OVN/OVS operations in domain words (routers, switches, ports, QoS), each one
//! transaction, and supervision of the OVN/OVS daemons.

pub mod daemons;
