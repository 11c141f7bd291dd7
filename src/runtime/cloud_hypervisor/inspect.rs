//! What a Cloud Hypervisor machine is doing: `observe`, the checks of a
//! re-adoption after a daemon restart, and `info` (from `vm.info`,
//! `vmm.ping` and the process).

use std::time::Duration;

use hyper::StatusCode;

use super::api::{VmInfo, VmState, MIB};
use super::Machine;
use crate::error::Result;
use crate::model::{Exit, RuntimeKind};
use crate::runtime::http::HttpError;
use crate::runtime::vm::{errors, VmmProcess};
use crate::runtime::{Observed, RuntimeInfo};

/// How long an API failure waits to see whether the VMM is dying.
const DYING: Duration = Duration::from_millis(200);

fn state_name(state: VmState) -> &'static str {
    match state {
        VmState::Created => "Created",
        VmState::Running => "Running",
        VmState::Shutdown => "Shutdown",
        VmState::Paused => "Paused",
        VmState::BreakPoint => "BreakPoint",
    }
}

/// `vm.info`, with "no VM created" (404) as `None`.
fn no_vm(res: Result<VmInfo, HttpError>) -> Result<Option<VmInfo>, HttpError> {
    match res {
        Ok(info) => Ok(Some(info)),
        Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => Ok(None),
        Err(e) => Err(e),
    }
}

impl Machine {
    fn ended_observed(&self, p: &VmmProcess) -> Option<Observed> {
        let ended = self.supervisor().ended(p)?;
        Some(Observed::Exited {
            exit: ended.exit(),
            reason: Some(ended.reason(&self.config().binary)),
        })
    }

    /// What runs. `adopting`: a daemon that just started asks, so the VMM
    /// must also prove it is the process of the pid file (`vmm.ping` reports
    /// its pid), and one whose VM never booted (a start cut short) is stopped.
    pub(super) async fn look(&self, adopting: bool) -> Result<Observed> {
        let sup = self.supervisor();
        let Some(p) = sup.process() else {
            return Ok(sup.observe_ended(&self.config().binary));
        };
        if let Some(ended) = self.ended_observed(&p) {
            return Ok(ended);
        }
        let answer = async {
            if adopting {
                let ping = self.api().vmm_ping().await?;
                if ping.pid.is_some_and(|pid| pid != i64::from(p.pid())) {
                    return Ok(Err(ping.pid));
                }
            }
            no_vm(self.api().vm_info().await).map(Ok)
        };
        let vm = match answer.await {
            Ok(Ok(vm)) => vm,
            Ok(Err(other)) => {
                return Ok(Observed::Transitional(format!(
                    "cloud-hypervisor pid {} has its socket answered by pid {other:?}",
                    p.pid()
                )))
            }
            Err(e) => {
                if p.wait_for(DYING).await.is_some() {
                    return Ok(self.ended_observed(&p).expect("it ended"));
                }
                if adopting && !sup.was_started(&p) {
                    // Its start was cut short: roll it back.
                    p.kill().await?;
                    sup.after_exit();
                    return Ok(Observed::Exited {
                        exit: Exit::Unknown,
                        reason: Some(format!(
                            "cloud-hypervisor pid {} never answered on its API socket, and was stopped",
                            p.pid()
                        )),
                    });
                }
                if adopting {
                    return Ok(Observed::Transitional(format!(
                        "cloud-hypervisor pid {} runs but its API does not answer: {}",
                        p.pid(),
                        errors::chain(&e)
                    )));
                }
                return Err(errors::http(e));
            }
        };
        let state = vm.map(|v| v.state);
        let booted = matches!(state, Some(VmState::Running | VmState::Paused));
        if adopting && booted && !sup.was_started(&p) {
            // Booted, but the daemon died before recording it: the start
            // is finished here.
            sup.mark_started(&p)?;
        }
        Ok(match state {
            Some(VmState::Running) => Observed::Running,
            Some(VmState::Paused) => Observed::Paused,
            _ if adopting => {
                p.kill().await?;
                sup.after_exit();
                Observed::Exited {
                    exit: Exit::Unknown,
                    reason: Some(format!(
                        "cloud-hypervisor pid {} had no running VM ({}), and was stopped",
                        p.pid(),
                        state.map_or("none created", state_name)
                    )),
                }
            }
            Some(s) => Observed::Transitional(state_name(s).to_lowercase()),
            None => Observed::Transitional("no VM created".into()),
        })
    }

    pub(super) async fn describe(&self) -> Result<RuntimeInfo> {
        let c = self.config();
        let files = self.files();
        let mut info = RuntimeInfo {
            runtime: RuntimeKind::CloudHypervisor,
            handle: Some(c.socket_path.display().to_string()),
            addresses: c.guest_addresses.clone(),
            ..Default::default()
        };
        let paths = serde_json::json!({
            "api_socket": c.socket_path,
            "vsock": c.vsock.as_ref().map(|v| &v.socket),
            "console": files.console(),
            "log": files.vmm_log(),
        });
        let asked = async {
            let ping = self.api().vmm_ping().await?;
            Ok((ping, no_vm(self.api().vm_info().await)?))
        };
        let live = match self.process() {
            Some(p) => match asked.await {
                Ok(facts) => Some((p, facts)),
                // It is dying: say so, rather than fail.
                Err(_) if p.wait_for(DYING).await.is_some() => None,
                Err(e) => return Err(errors::http(e)),
            },
            None => None,
        };
        match live {
            Some((p, (ping, vm))) => {
                info.pid = Some(p.pid());
                info.started_at = p.started_at();
                info.state = vm
                    .as_ref()
                    .map_or("no VM created", |v| state_name(v.state))
                    .into();
                let mut details = serde_json::json!({
                    "vmm": {
                        "binary": c.binary.display(),
                        "version": ping.version,
                        "pid": p.pid(),
                        "child_of_daemon": p.is_child(),
                    },
                    "files": paths,
                });
                if let Some(vm) = vm {
                    let cpus = vm.config.cpus.as_ref();
                    let memory = vm.config.memory.as_ref();
                    let disks: Vec<serde_json::Value> = vm
                        .config
                        .disks
                        .iter()
                        .flatten()
                        .map(|d| serde_json::json!({"id": d.id, "path": d.path, "readonly": d.readonly}))
                        .collect();
                    details["vcpus"] = cpus.map(|c| c.boot_vcpus).into();
                    details["max_vcpus"] = cpus.map(|c| c.max_vcpus).into();
                    details["memory_mib"] = vm
                        .memory_actual_size
                        .or(memory.map(|m| m.size))
                        .map(|b| b / MIB)
                        .into();
                    details["hotplug_mib"] =
                        memory.and_then(|m| m.hotplug_size).map(|b| b / MIB).into();
                    details["disks"] = disks.into();
                    details["vm"] = serde_json::to_value(&vm).unwrap_or_default();
                }
                info.details = details;
            }
            None => {
                info.state = "not running".into();
                let mut details = serde_json::json!({ "files": paths });
                if let Some(e) = self.supervisor().last_exit() {
                    info.state = "exited".into();
                    info.exit_code = e.exit().code();
                    info.error = Some(format!("{} ({})", e.exit(), e.reason(&c.binary)));
                    details["last_vmm"] = serde_json::json!({
                        "pid": e.pid,
                        "exit": e.exit().to_string(),
                        "last_log_line": e.last_line,
                    });
                }
                info.details = details;
            }
        }
        Ok(info)
    }
}
