//! The VMM layer below the runtimes: the Unix-socket HTTP client, the typed
//! Firecracker and Cloud Hypervisor API clients, and VMM process supervision.
//!
//! Tests against the real binaries skip (with a note) when a binary is
//! missing; see `common::vmm::firecracker_bin`. Failures the real VMMs cannot
//! be made to produce on demand are tested against `common::fake_vmm`, whose
//! answers are themselves checked against the real binaries here.

#[path = "../common/mod.rs"]
mod common;

mod client_errors;
mod cloud_hypervisor;
mod fake_conformance;
mod firecracker;
mod supervision;
