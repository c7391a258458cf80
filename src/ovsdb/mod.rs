//! RFC 7047 OVSDB client: codec, connection, transact, monitor cache, typed tables.
