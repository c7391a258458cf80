//! kube-sim: the Kubernetes test bed. `apiserver` emulates kube-apiserver for the real `kube`
//! client and `kubectl`; the node simulator (kubelet + Multus on N nodes) builds on it.

pub mod apiserver;

pub use apiserver::{ApiServer, ServerOptions};
