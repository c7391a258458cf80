//! kube-sim: the Kubernetes test bed. `apiserver` emulates kube-apiserver for the real `kube`
//! client and `kubectl`; `controllers` turns workloads (Deployments, DaemonSets,
//! StatefulSets) into pods; `nodes` simulates kubelet + Multus on N nodes on top of it. Not
//! product code.

pub mod apiserver;
pub mod controllers;
pub mod nodes;

pub use apiserver::{ApiServer, ServerOptions};
