//! The typed actions every front end submits to the core. The filesystem
//! parses a `ctl` line into one ([`Action::parse_ctl`]); REST builds one
//! from its route and query; nothing is rendered back to text to be parsed
//! again.

use std::path::{Component, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::model::Status;

/// Grace period of `shutdown` when none is given.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long `wait` blocks when no timeout is given.
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(300);
/// The longest any timeout given in a command may be.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// A lifecycle or device operation on one machine.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Start,
    Stop,
    Restart,
    Pause,
    Resume,
    Kill,
    /// Ask the workload to stop; force it after `grace`.
    Shutdown {
        grace: Duration,
    },
    /// Block until the machine reaches `target`; changes nothing.
    Wait {
        target: WaitTarget,
        timeout: Duration,
    },
    /// Hot-resize (Cloud Hypervisor).
    Resize {
        vcpus: Option<u32>,
        mem_mib: Option<u64>,
    },
    AddDisk {
        path: PathBuf,
        id: Option<String>,
        read_only: bool,
    },
    RemoveDevice {
        id: String,
    },
    Snapshot {
        dir: PathBuf,
    },
    Restore {
        dir: PathBuf,
    },
}

/// What `wait` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitTarget {
    Status(Status),
    /// The guest agent answering (VMs).
    Agent,
}

/// The name of an action, without its arguments: what a runtime declares it
/// supports and what `cat ctl` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    Start,
    Stop,
    Restart,
    Pause,
    Resume,
    Kill,
    Shutdown,
    Wait,
    Resize,
    AddDisk,
    RemoveDevice,
    Snapshot,
    Restore,
}

impl Verb {
    /// In the order `cat ctl` lists them.
    pub const ALL: [Verb; 13] = [
        Verb::Start,
        Verb::Stop,
        Verb::Restart,
        Verb::Pause,
        Verb::Resume,
        Verb::Shutdown,
        Verb::Kill,
        Verb::Resize,
        Verb::AddDisk,
        Verb::RemoveDevice,
        Verb::Snapshot,
        Verb::Restore,
        Verb::Wait,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Verb::Start => "start",
            Verb::Stop => "stop",
            Verb::Restart => "restart",
            Verb::Pause => "pause",
            Verb::Resume => "resume",
            Verb::Kill => "kill",
            Verb::Shutdown => "shutdown",
            Verb::Wait => "wait",
            Verb::Resize => "resize",
            Verb::AddDisk => "add-disk",
            Verb::RemoveDevice => "remove-device",
            Verb::Snapshot => "snapshot",
            Verb::Restore => "restore",
        }
    }

    /// The line `cat ctl` shows for the verb.
    pub fn usage(self) -> &'static str {
        match self {
            Verb::Shutdown => "shutdown [grace_secs]",
            Verb::Wait => "wait <status|agent> [timeout_secs]",
            Verb::Resize => "resize [vcpus=N] [mem=MiB]",
            Verb::AddDisk => "add-disk <path> [id=ID] [ro]",
            Verb::RemoveDevice => "remove-device <id>",
            Verb::Snapshot => "snapshot <dir>",
            Verb::Restore => "restore <dir>",
            other => other.name(),
        }
    }

    /// Verbs that change the machine's lifecycle status (and so are
    /// serialised with each other and may cancel a start).
    pub fn is_lifecycle(self) -> bool {
        !matches!(self, Verb::Wait)
    }
}

impl Action {
    pub fn verb(&self) -> Verb {
        match self {
            Action::Start => Verb::Start,
            Action::Stop => Verb::Stop,
            Action::Restart => Verb::Restart,
            Action::Pause => Verb::Pause,
            Action::Resume => Verb::Resume,
            Action::Kill => Verb::Kill,
            Action::Shutdown { .. } => Verb::Shutdown,
            Action::Wait { .. } => Verb::Wait,
            Action::Resize { .. } => Verb::Resize,
            Action::AddDisk { .. } => Verb::AddDisk,
            Action::RemoveDevice { .. } => Verb::RemoveDevice,
            Action::Snapshot { .. } => Verb::Snapshot,
            Action::Restore { .. } => Verb::Restore,
        }
    }

    pub fn name(&self) -> &'static str {
        self.verb().name()
    }

    /// Parses one `ctl` line: a verb and its arguments.
    pub fn parse_ctl(raw: &[u8]) -> Result<Action> {
        let text = std::str::from_utf8(raw)
            .map_err(|_| Error::InvalidCommand("ctl command is not valid UTF-8".into()))?;
        let line = text.strip_suffix('\n').unwrap_or(text);
        if line.contains('\n') {
            return Err(Error::InvalidCommand(
                "write one command per write to ctl".into(),
            ));
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let bad = |msg: String| Err(Error::InvalidCommand(msg));
        match words.as_slice() {
            [] => bad("empty ctl command".into()),
            ["start"] => Ok(Action::Start),
            ["stop"] => Ok(Action::Stop),
            ["restart"] => Ok(Action::Restart),
            ["pause"] => Ok(Action::Pause),
            ["resume"] => Ok(Action::Resume),
            ["kill"] => Ok(Action::Kill),
            ["shutdown"] => Ok(Action::Shutdown {
                grace: DEFAULT_SHUTDOWN_GRACE,
            }),
            ["shutdown", s] => Ok(Action::Shutdown {
                grace: seconds(s, "shutdown grace")?,
            }),
            ["wait", target] | ["wait", target, _] => Ok(Action::Wait {
                target: wait_target(target)?,
                timeout: match words.get(2) {
                    Some(t) => seconds(t, "wait timeout")?,
                    None => DEFAULT_WAIT_TIMEOUT,
                },
            }),
            ["resize", args @ ..] if !args.is_empty() => {
                let mut vcpus = None;
                let mut mem_mib = None;
                for a in args {
                    match a.split_once('=') {
                        Some(("vcpus", n)) => vcpus = Some(number(n, "vcpus")?),
                        Some(("mem", n)) => mem_mib = Some(mem_mib_arg(n)?),
                        _ => {
                            return bad(format!(
                                "resize takes vcpus=N and mem=MiB, got {a:?}"
                            ))
                        }
                    }
                }
                Ok(Action::Resize { vcpus, mem_mib })
            }
            ["add-disk", path, opts @ ..] => {
                let mut id = None;
                let mut read_only = false;
                for o in opts {
                    match o.split_once('=') {
                        Some(("id", v)) if !v.is_empty() => id = Some(v.to_string()),
                        None if *o == "ro" => read_only = true,
                        _ => return bad(format!("add-disk takes id=ID and ro, got {o:?}")),
                    }
                }
                Ok(Action::AddDisk {
                    path: host_path(path, "add-disk path")?,
                    id,
                    read_only,
                })
            }
            ["remove-device", id] => Ok(Action::RemoveDevice { id: id.to_string() }),
            ["snapshot", dir] => Ok(Action::Snapshot {
                dir: host_path(dir, "snapshot directory")?,
            }),
            ["restore", dir] => Ok(Action::Restore {
                dir: host_path(dir, "restore directory")?,
            }),
            [verb, ..] => bad(format!(
                "unknown or malformed ctl command {line:?} (verb {verb:?}); `cat ctl` lists the commands"
            )),
        }
    }
}

pub fn wait_target(s: &str) -> Result<WaitTarget> {
    if s == "agent" {
        return Ok(WaitTarget::Agent);
    }
    s.parse::<Status>()
        .map(WaitTarget::Status)
        .map_err(Error::InvalidCommand)
}

/// A number of seconds in a command (`shutdown 5`, `wait running 2.5`).
pub fn seconds(w: &str, what: &str) -> Result<Duration> {
    let n: f64 = w.parse().map_err(|_| {
        Error::InvalidCommand(format!("{what} must be a number of seconds, got {w:?}"))
    })?;
    if !(0.0..=MAX_TIMEOUT.as_secs_f64()).contains(&n) {
        return Err(Error::InvalidCommand(format!(
            "{what} must be 0..={} seconds",
            MAX_TIMEOUT.as_secs()
        )));
    }
    Ok(Duration::from_secs_f64(n))
}

/// `resize mem=MiB`: at most what a spec may ask for, so that it is a
/// byte count the VMM can be sent.
fn mem_mib_arg(w: &str) -> Result<u64> {
    let mib: u64 = number(w, "mem")?;
    if mib > crate::model::spec::MAX_MEM_MIB {
        return Err(Error::InvalidCommand(format!(
            "mem must be at most {} MiB, got {mib}",
            crate::model::spec::MAX_MEM_MIB
        )));
    }
    Ok(mib)
}

fn number<T: std::str::FromStr>(w: &str, what: &str) -> Result<T> {
    w.parse()
        .map_err(|_| Error::InvalidCommand(format!("{what} must be a number, got {w:?}")))
}

/// A host path given in a command: absolute, never climbing with `..`.
pub fn host_path(w: &str, what: &str) -> Result<PathBuf> {
    let p = PathBuf::from(w);
    if !p.is_absolute() || p.components().any(|c| c == Component::ParentDir) {
        return Err(Error::InvalidCommand(format!(
            "{what} must be an absolute path without '..', got {w:?}"
        )));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resize_past_the_largest_memory_is_refused_naming_mem() {
        let max = crate::model::spec::MAX_MEM_MIB;
        assert_eq!(
            Action::parse_ctl(format!("resize mem={max}").as_bytes()).unwrap(),
            Action::Resize {
                vcpus: None,
                mem_mib: Some(max)
            }
        );
        for mib in [max + 1, u64::MAX / (1 << 20) + 1, u64::MAX] {
            let err = Action::parse_ctl(format!("resize mem={mib}").as_bytes()).unwrap_err();
            assert!(matches!(err, Error::InvalidCommand(_)), "{err:?}");
            assert!(err.to_string().contains("mem must be at most"), "{err}");
        }
    }

    #[test]
    fn verbs_parse_with_arguments() {
        assert_eq!(Action::parse_ctl(b"start\n").unwrap(), Action::Start);
        assert_eq!(
            Action::parse_ctl(b"shutdown 3").unwrap(),
            Action::Shutdown {
                grace: Duration::from_secs(3)
            }
        );
        assert_eq!(
            Action::parse_ctl(b"wait running 5\n").unwrap(),
            Action::Wait {
                target: WaitTarget::Status(Status::Running),
                timeout: Duration::from_secs(5)
            }
        );
        assert_eq!(Action::parse_ctl(b"wait agent").unwrap().verb(), Verb::Wait);
        assert_eq!(
            Action::parse_ctl(b"resize vcpus=2 mem=1024").unwrap(),
            Action::Resize {
                vcpus: Some(2),
                mem_mib: Some(1024)
            }
        );
        assert_eq!(
            Action::parse_ctl(b"add-disk /d.img id=data ro").unwrap(),
            Action::AddDisk {
                path: "/d.img".into(),
                id: Some("data".into()),
                read_only: true
            }
        );
        for bad in [
            &b"strat"[..],
            b"",
            b"\n",
            b"start now",
            b"wait runing",
            b"shutdown -1",
            b"start\nstop\n",
            b"\xff",
            b"resize",
            b"resize cpus=2",
            b"resize vcpus=two",
            b"add-disk rel.img",
            b"add-disk /a/../b",
            b"snapshot",
            b"snapshot relative",
            b"restore /x/../y",
        ] {
            assert!(Action::parse_ctl(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_verb_has_a_distinct_name() {
        let names: std::collections::HashSet<_> = Verb::ALL.iter().map(|v| v.name()).collect();
        assert_eq!(names.len(), Verb::ALL.len());
    }
}
