//! Changes to the fleet as `events` files and `GET /events` tell them: one
//! line (or one JSON object) per change, in the order the changes happened.

use super::time::iso8601;
use super::{MachineName, RuntimeKind, Status};

/// What an event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Machine {
        seq: u64,
        id: String,
        name: MachineName,
    },
    Runtime(RuntimeKind),
    /// The reader's own stream (the marker of lines it lost).
    Stream,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Happening {
    Created,
    Status {
        from: Status,
        to: Status,
    },
    /// A failure was recorded: the line `error` now holds.
    Error(String),
    /// The spec changed; the runtimes before and after (the `by-runtime`
    /// view moves the machine when they differ).
    Config {
        from: RuntimeKind,
        to: RuntimeKind,
    },
    /// A command run through `exec` finished.
    Exec {
        exit_code: i64,
        timed_out: bool,
    },
    /// The machine is gone; what it was when it went.
    Deleted {
        status: Status,
        runtime: RuntimeKind,
    },
    /// A runtime became available or unavailable, or says otherwise now.
    Runtime {
        available: bool,
        text: String,
    },
    /// The reader fell behind and lost this many events.
    Dropped(u64),
    /// Something in the record changed that has no event of its own (a
    /// timestamp, an exit code, an error cleared). Caches hear of it;
    /// readers do not.
    Updated,
}

impl Happening {
    /// The kinds readers are told of, as `type` names them in JSON (and
    /// `event:` in Server-Sent Events); what `GET /events?type=` takes.
    pub const KINDS: [&'static str; 8] = [
        "created", "status", "error", "config", "exec", "deleted", "runtime", "dropped",
    ];

    /// Its kind: one of [`Happening::KINDS`], or `updated`, which readers
    /// never see.
    pub fn kind(&self) -> &'static str {
        match self {
            Happening::Created => "created",
            Happening::Status { .. } => "status",
            Happening::Error(_) => "error",
            Happening::Config { .. } => "config",
            Happening::Exec { .. } => "exec",
            Happening::Deleted { .. } => "deleted",
            Happening::Runtime { .. } => "runtime",
            Happening::Dropped(_) => "dropped",
            Happening::Updated => "updated",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// When it happened, in Unix milliseconds.
    pub at_ms: i64,
    pub subject: Subject,
    pub what: Happening,
}

impl Event {
    pub fn new(subject: Subject, what: Happening) -> Event {
        Event {
            at_ms: super::now_ms(),
            subject,
            what,
        }
    }

    /// The marker a reader gets in place of `n` events it lost.
    pub fn dropped(n: u64) -> Event {
        Event::new(Subject::Stream, Happening::Dropped(n))
    }

    /// Whether readers are told of it.
    pub fn is_shown(&self) -> bool {
        !matches!(self.what, Happening::Updated)
    }

    /// The machine it is about, if any.
    pub fn machine_seq(&self) -> Option<u64> {
        match &self.subject {
            Subject::Machine { seq, .. } => Some(*seq),
            _ => None,
        }
    }

    fn subject_text(&self) -> String {
        match &self.subject {
            Subject::Machine { name, .. } => name.to_string(),
            // Not a machine name: those never hold '/'.
            Subject::Runtime(k) => format!("runtimes/{k}"),
            // Nor start with '-'.
            Subject::Stream => "-".into(),
        }
    }

    /// One line, `TIME SUBJECT WHAT [DETAIL]`, ending in '\n'. Fields are
    /// separated by single spaces so `while read time name what rest` and
    /// `grep` work; only the last field (an error, a runtime's detail) may
    /// hold spaces. A newline inside it is shown as a space: one event is
    /// one line.
    pub fn line(&self) -> String {
        let what = match &self.what {
            Happening::Created => "created".to_owned(),
            Happening::Status { from, to } => format!("status {from} -> {to}"),
            Happening::Error(line) => format!("error {line}"),
            Happening::Config { from, to } if from != to => {
                format!("config runtime {from} -> {to}")
            }
            Happening::Config { .. } => "config".into(),
            Happening::Exec {
                timed_out: true, ..
            } => "exec timed-out".into(),
            Happening::Exec { exit_code, .. } => format!("exec exit {exit_code}"),
            Happening::Deleted { .. } => "deleted".into(),
            Happening::Runtime { text, .. } => text.clone(),
            Happening::Dropped(n) => format!("dropped {n} events: this reader fell behind"),
            Happening::Updated => "updated".into(),
        };
        let mut line = format!("{} {} {what}", iso8601(self.at_ms), self.subject_text());
        line = line.replace(['\n', '\r'], " ");
        line.push('\n');
        line
    }

    /// The same as one JSON object (REST's `GET /events`).
    pub fn json(&self) -> serde_json::Value {
        use serde_json::json;
        let mut v = match &self.what {
            Happening::Created => json!({"type": "created"}),
            Happening::Status { from, to } => {
                json!({"type": "status", "from": from.as_str(), "to": to.as_str()})
            }
            Happening::Error(line) => json!({"type": "error", "message": line}),
            Happening::Config { from, to } => {
                json!({"type": "config", "runtime_from": from.as_str(), "runtime": to.as_str()})
            }
            Happening::Exec {
                exit_code,
                timed_out,
            } => json!({"type": "exec", "exit_code": exit_code, "timed_out": timed_out}),
            Happening::Deleted { status, runtime } => {
                json!({"type": "deleted", "status": status.as_str(), "runtime": runtime.as_str()})
            }
            Happening::Runtime { available, text } => {
                json!({"type": "runtime", "available": available, "detail": text})
            }
            Happening::Dropped(n) => json!({"type": "dropped", "count": n}),
            Happening::Updated => json!({"type": "updated"}),
        };
        v["time"] = json!(iso8601(self.at_ms));
        match &self.subject {
            Subject::Machine { id, name, .. } => {
                v["machine"] = json!(name.as_str());
                v["id"] = json!(id);
            }
            Subject::Runtime(k) => v["runtime"] = json!(k.as_str()),
            Subject::Stream => {}
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web() -> Subject {
        Subject::Machine {
            seq: 1,
            id: "abc".into(),
            name: MachineName::parse(b"web").expect("name"),
        }
    }

    fn at(what: Happening) -> Event {
        Event {
            at_ms: 0,
            subject: web(),
            what,
        }
    }

    #[test]
    fn lines_have_fixed_fields_then_free_text() {
        let status = at(Happening::Status {
            from: Status::Pending,
            to: Status::Starting,
        });
        assert_eq!(
            status.line(),
            "1970-01-01T00:00:00.000Z web status pending -> starting\n"
        );
        let err = at(Happening::Error("start: no such\nimage".into()));
        assert_eq!(
            err.line(),
            "1970-01-01T00:00:00.000Z web error start: no such image\n"
        );
        let mut dropped = Event::dropped(7);
        dropped.at_ms = 0;
        assert_eq!(
            dropped.line(),
            "1970-01-01T00:00:00.000Z - dropped 7 events: this reader fell behind\n"
        );
        let rt = Event {
            at_ms: 0,
            subject: Subject::Runtime(RuntimeKind::Docker),
            what: Happening::Runtime {
                available: false,
                text: "unavailable: no socket".into(),
            },
        };
        assert_eq!(
            rt.line(),
            "1970-01-01T00:00:00.000Z runtimes/docker unavailable: no socket\n"
        );
    }

    #[test]
    fn json_names_the_machine_and_the_change() {
        let v = at(Happening::Exec {
            exit_code: 3,
            timed_out: false,
        })
        .json();
        assert_eq!(v["machine"], "web");
        assert_eq!(v["id"], "abc");
        assert_eq!(v["type"], "exec");
        assert_eq!(v["exit_code"], 3);
        assert_eq!(v["time"], "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn kinds_are_the_json_types() {
        let every = [
            Happening::Created,
            Happening::Status {
                from: Status::Pending,
                to: Status::Starting,
            },
            Happening::Error("x".into()),
            Happening::Config {
                from: RuntimeKind::Docker,
                to: RuntimeKind::Docker,
            },
            Happening::Exec {
                exit_code: 0,
                timed_out: false,
            },
            Happening::Deleted {
                status: Status::Stopped,
                runtime: RuntimeKind::Docker,
            },
            Happening::Runtime {
                available: true,
                text: "x".into(),
            },
            Happening::Dropped(1),
        ];
        let kinds: Vec<&str> = every.iter().map(Happening::kind).collect();
        assert_eq!(kinds, Happening::KINDS);
        for what in every {
            assert_eq!(at(what.clone()).json()["type"], what.kind());
        }
        assert_eq!(at(Happening::Updated).json()["type"], "updated");
    }

    #[test]
    fn only_updates_are_hidden() {
        assert!(!at(Happening::Updated).is_shown());
        assert!(at(Happening::Created).is_shown());
        assert!(Event::dropped(1).is_shown());
    }
}
