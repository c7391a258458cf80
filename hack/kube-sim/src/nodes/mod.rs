//! The node simulator: kubelet + Multus on N simulated nodes.

pub mod delegate;
pub mod exec;
pub mod fabric;
pub mod node;
pub mod result;
pub mod sandbox;
pub mod selection;
