//! Reading Docker's description of a container: its lifecycle state as the
//! core sees it, and the live facts `info` shows.

use std::collections::BTreeSet;

use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum};

use crate::model::{Exit, RuntimeKind};
use crate::runtime::{Observed, RuntimeInfo};

/// Docker's zero time, meaning "never".
fn real_time(t: Option<String>) -> Option<String> {
    t.filter(|t| !t.is_empty() && !t.starts_with("0001-01-01"))
}

pub(super) fn observed(c: &ContainerInspectResponse) -> Observed {
    let Some(state) = &c.state else {
        return Observed::Missing;
    };
    let exited = |reason: Option<String>| Observed::Exited {
        exit: Exit::Code(state.exit_code.unwrap_or(0)),
        reason,
    };
    let error = state.error.clone().filter(|e| !e.is_empty());
    match state.status {
        Some(ContainerStateStatusEnum::PAUSED) => Observed::Paused,
        Some(ContainerStateStatusEnum::RUNNING) | Some(ContainerStateStatusEnum::STOPPING) => {
            Observed::Running
        }
        // Docker's restart policy between two runs: it is Docker's to bring
        // back, however long its back-off.
        Some(ContainerStateStatusEnum::RESTARTING) => Observed::Restarting,
        // Not a settled fact: a start or a removal the engine is still
        // carrying out. Look again rather than guess.
        Some(ContainerStateStatusEnum::CREATED) => Observed::Transitional("created".into()),
        Some(ContainerStateStatusEnum::REMOVING) => Observed::Transitional("removing".into()),
        Some(ContainerStateStatusEnum::DEAD) => exited(error.or_else(|| Some("dead".into()))),
        _ if state.paused == Some(true) => Observed::Paused,
        _ if state.running == Some(true) => Observed::Running,
        _ if state.oom_killed == Some(true) => exited(Some("OOM killed".into())),
        _ => exited(error),
    }
}

pub(super) fn runtime_info(c: ContainerInspectResponse) -> RuntimeInfo {
    let state = c.state.unwrap_or_default();
    let word = state
        .status
        .map(|s| s.to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into());
    let stopped = !matches!(
        state.status,
        Some(ContainerStateStatusEnum::RUNNING)
            | Some(ContainerStateStatusEnum::PAUSED)
            | Some(ContainerStateStatusEnum::RESTARTING)
            | Some(ContainerStateStatusEnum::CREATED)
    );
    let mut error = state.error.filter(|e| !e.is_empty());
    if state.oom_killed == Some(true) && error.is_none() {
        error = Some("OOM killed".into());
    }
    let mut addresses = BTreeSet::new();
    let mut ports = BTreeSet::new();
    if let Some(net) = c.network_settings {
        for endpoint in net.networks.unwrap_or_default().into_values() {
            for addr in [endpoint.ip_address, endpoint.global_ipv6_address]
                .into_iter()
                .flatten()
            {
                if !addr.is_empty() {
                    addresses.insert(addr);
                }
            }
        }
        for (guest, bindings) in net.ports.unwrap_or_default() {
            for b in bindings.unwrap_or_default() {
                let Some(host_port) = b.host_port.filter(|p| !p.is_empty()) else {
                    continue;
                };
                let ip = b.host_ip.unwrap_or_default();
                // IPv4 and IPv6 wildcards are one published port to a reader.
                if ip.is_empty() || ip == "0.0.0.0" || ip == "::" {
                    ports.insert(format!("{host_port}->{guest}"));
                } else {
                    ports.insert(format!("{ip}:{host_port}->{guest}"));
                }
            }
        }
    }
    RuntimeInfo {
        runtime: RuntimeKind::Docker,
        state: word,
        pid: state
            .pid
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p > 0),
        handle: c.id,
        started_at: real_time(state.started_at),
        finished_at: real_time(state.finished_at),
        exit_code: if stopped { state.exit_code } else { None },
        error,
        addresses: addresses.into_iter().collect(),
        ports: ports.into_iter().collect(),
        details: serde_json::Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::ContainerState;

    fn with_state(state: ContainerState) -> ContainerInspectResponse {
        ContainerInspectResponse {
            state: Some(state),
            ..Default::default()
        }
    }

    #[test]
    fn a_container_docker_is_restarting_counts_as_running_not_unsettled() {
        // What inspect shows of a crash-looping container with a restart
        // policy during its back-off.
        let c = with_state(ContainerState {
            status: Some(ContainerStateStatusEnum::RESTARTING),
            running: Some(true),
            restarting: Some(true),
            exit_code: Some(1),
            ..Default::default()
        });
        assert_eq!(observed(&c), Observed::Restarting);
        let created = with_state(ContainerState {
            status: Some(ContainerStateStatusEnum::CREATED),
            ..Default::default()
        });
        assert_eq!(observed(&created), Observed::Transitional("created".into()));
    }
}
