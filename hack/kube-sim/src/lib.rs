//! kube-sim: a Kubernetes test bed (API emulator and kubelet/Multus node simulator). Not product code.

pub mod nodes;
