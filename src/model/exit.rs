//! How a workload's run ended.

use std::fmt;

use super::Status;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i64),
    /// Ended by a signal (a VMM killed from outside).
    Signal(i32),
    /// It ended while nobody able to learn its status was watching: a VMM
    /// that died while the daemon was down was reaped by someone else.
    Unknown,
}

impl Exit {
    /// The exit code, when there is one.
    pub fn code(self) -> Option<i64> {
        match self {
            Exit::Code(c) => Some(c),
            _ => None,
        }
    }

    /// The status a workload that ended by itself this way is left in:
    /// only a clean exit is `stopped`, anything else (including not knowing)
    /// is `failed`, so nobody mistakes an unexplained end for success.
    pub fn status(self) -> Status {
        match self {
            Exit::Code(0) => Status::Stopped,
            _ => Status::Failed,
        }
    }

    /// Storage form: (kind, number).
    pub fn to_parts(self) -> (&'static str, Option<i64>) {
        match self {
            Exit::Code(c) => ("code", Some(c)),
            Exit::Signal(s) => ("signal", Some(i64::from(s))),
            Exit::Unknown => ("unknown", None),
        }
    }

    pub fn from_parts(kind: Option<&str>, number: Option<i64>) -> Option<Exit> {
        match (kind, number) {
            (Some("signal"), Some(n)) => Some(Exit::Signal(n as i32)),
            (Some("unknown"), _) => Some(Exit::Unknown),
            // Rows written before exits had kinds hold plain codes.
            (Some("code") | None, Some(n)) => Some(Exit::Code(n)),
            _ => None,
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exited with code {c}"),
            Exit::Signal(s) => write!(f, "killed by signal {s} ({})", signal_name(*s)),
            Exit::Unknown => f.write_str("exited; its exit status is unknown"),
        }
    }
}

pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        _ => "signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_round_trip_and_old_rows_read_as_codes() {
        for e in [
            Exit::Code(0),
            Exit::Code(-1),
            Exit::Signal(9),
            Exit::Unknown,
        ] {
            let (k, n) = e.to_parts();
            assert_eq!(Exit::from_parts(Some(k), n), Some(e));
        }
        assert_eq!(Exit::from_parts(None, Some(3)), Some(Exit::Code(3)));
        assert_eq!(Exit::from_parts(None, None), None);
        assert_eq!(Exit::Unknown.status(), Status::Failed);
        assert_eq!(Exit::Code(0).status(), Status::Stopped);
        assert_eq!(Exit::Signal(9).to_string(), "killed by signal 9 (SIGKILL)");
    }
}
