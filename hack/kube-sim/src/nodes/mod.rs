//! The node simulator: kubelet + Multus on N simulated nodes.

pub mod delegate;
pub mod result;
pub mod selection;
