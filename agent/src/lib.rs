//! iolens: an eBPF I/O observability agent and the reference workloads it
//! measures. The binary (`main.rs`) is a thin CLI over this library.

pub mod agent;
pub mod compare;
pub mod identity;
pub mod metrics;
pub mod privdrop;
pub mod probes;
pub mod top;
pub mod workloads;
