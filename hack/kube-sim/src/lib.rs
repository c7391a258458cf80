//! kube-sim: the Kubernetes test bed. `apiserver` emulates kube-apiserver for the real `kube`
//! client and `kubectl`; `nodes` simulates kubelet + Multus on N nodes on top of it. Not product code.

pub mod apiserver;
pub mod nodes;

pub use apiserver::{ApiServer, ServerOptions};
