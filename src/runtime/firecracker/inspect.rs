//! What a Firecracker machine is doing: `observe`, the checks of a
//! re-adoption after a daemon restart, and `info` (from `GET /`,
//! `GET /vm/config` and the process).

use std::time::Duration;

use super::api::InstanceState;
use super::Machine;
use crate::error::Result;
use crate::model::{Exit, RuntimeKind};
use crate::runtime::vm::{errors, VmmProcess};
use crate::runtime::{Observed, RuntimeInfo};

/// How long an API failure waits to see whether the VMM is dying.
const DYING: Duration = Duration::from_millis(200);

fn state_name(state: InstanceState) -> &'static str {
    match state {
        InstanceState::NotStarted => "Not started",
        InstanceState::Running => "Running",
        InstanceState::Paused => "Paused",
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
    /// must also prove it is this machine's (its `--id`), and one whose VM
    /// never booted (a start cut short) is stopped.
    pub(super) async fn look(&self, adopting: bool) -> Result<Observed> {
        let sup = self.supervisor();
        let Some(p) = sup.process() else {
            return Ok(sup.observe_ended(&self.config().binary));
        };
        if let Some(ended) = self.ended_observed(&p) {
            return Ok(ended);
        }
        let info = match self.api().describe_instance().await {
            Ok(info) => info,
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
                            "firecracker pid {} never answered on its API socket, and was stopped",
                            p.pid()
                        )),
                    });
                }
                if adopting {
                    return Ok(Observed::Transitional(format!(
                        "firecracker pid {} runs but its API does not answer: {}",
                        p.pid(),
                        errors::chain(&e)
                    )));
                }
                return Err(errors::http(e));
            }
        };
        if adopting && info.id != self.config().vm_id {
            return Ok(Observed::Transitional(format!(
                "firecracker pid {} answers as {:?}, not as this machine",
                p.pid(),
                info.id
            )));
        }
        let booted = matches!(info.state, InstanceState::Running | InstanceState::Paused);
        if adopting && booted && !sup.was_started(&p) {
            // Booted, but the daemon died before recording it: the start
            // is finished here.
            sup.mark_started(&p)?;
        }
        Ok(match info.state {
            InstanceState::Running => Observed::Running,
            InstanceState::Paused => Observed::Paused,
            InstanceState::NotStarted if adopting => {
                p.kill().await?;
                sup.after_exit();
                Observed::Exited {
                    exit: Exit::Unknown,
                    reason: Some(format!(
                        "firecracker pid {} had not booted its VM, and was stopped",
                        p.pid()
                    )),
                }
            }
            InstanceState::NotStarted => Observed::Transitional("not started".into()),
        })
    }

    pub(super) async fn describe(&self) -> Result<RuntimeInfo> {
        let c = self.config();
        let files = self.files();
        let mut info = RuntimeInfo {
            runtime: RuntimeKind::Firecracker,
            handle: Some(c.socket_path.display().to_string()),
            addresses: c.guest_addresses.clone(),
            ..Default::default()
        };
        let paths = serde_json::json!({
            "api_socket": c.socket_path,
            "vsock": c.vsock.as_ref().map(|v| &v.uds_path),
            "console": files.console(),
            "log": files.vmm_log(),
            "metrics": files.metrics(),
        });
        let asked = async {
            let instance = self.api().describe_instance().await?;
            Ok((instance, self.api().vm_config().await?))
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
            Some((p, (instance, config))) => {
                info.pid = Some(p.pid());
                info.started_at = p.started_at();
                info.state = state_name(instance.state).into();
                info.details = serde_json::json!({
                    "vmm": {
                        "binary": c.binary.display(),
                        "version": instance.vmm_version,
                        "id": instance.id,
                        "pid": p.pid(),
                        "child_of_daemon": p.is_child(),
                    },
                    "vm_config": config,
                    "files": paths,
                });
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
