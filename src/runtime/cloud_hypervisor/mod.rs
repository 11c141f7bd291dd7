//! Cloud Hypervisor microVMs. For now the layer below the runtime: the typed
//! client of Cloud Hypervisor's API socket. The runtime built on it comes next.

pub mod api;
