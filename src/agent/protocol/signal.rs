//! Signals by name or number. The host resolves names, so the wire carries
//! numbers only; the table is Linux's, which x86_64 and aarch64 share.

use std::fmt;
use std::str::FromStr;

/// A signal number, parsed from `TERM`, `SIGTERM`, `sigterm` or `15`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signal(pub i32);

const NAMES: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("STKFLT", libc::SIGSTKFLT),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("IO", libc::SIGIO),
    ("PWR", libc::SIGPWR),
    ("SYS", libc::SIGSYS),
];

/// Highest signal number Linux accepts (SIGRTMAX).
const MAX_SIGNAL: i32 = 64;

impl Signal {
    pub const INT: Signal = Signal(libc::SIGINT);
    pub const TERM: Signal = Signal(libc::SIGTERM);
    pub const KILL: Signal = Signal(libc::SIGKILL);

    /// The name without `SIG`, if the signal has one.
    pub fn name(self) -> Option<&'static str> {
        NAMES
            .iter()
            .find(|(_, n)| *n == self.0)
            .map(|(name, _)| *name)
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "SIG{name}"),
            None => write!(f, "signal {}", self.0),
        }
    }
}

/// A signal name or number that no Linux signal has.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown signal {0:?}: give a name such as TERM or a number from 1 to 64")]
pub struct UnknownSignal(pub String);

impl FromStr for Signal {
    type Err = UnknownSignal;

    fn from_str(s: &str) -> Result<Signal, UnknownSignal> {
        let unknown = || UnknownSignal(s.to_string());
        let trimmed = s.trim();
        if let Ok(n) = trimmed.parse::<i32>() {
            return Signal::try_from(n).map_err(|_| unknown());
        }
        let upper = trimmed.to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        NAMES
            .iter()
            .find(|(name, _)| *name == bare)
            .map(|(_, n)| Signal(*n))
            .ok_or_else(unknown)
    }
}

impl TryFrom<i32> for Signal {
    type Error = UnknownSignal;

    fn try_from(n: i32) -> Result<Signal, UnknownSignal> {
        if (1..=MAX_SIGNAL).contains(&n) {
            Ok(Signal(n))
        } else {
            Err(UnknownSignal(n.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_parse_alike() {
        for s in ["TERM", "SIGTERM", "sigterm", " term ", "15"] {
            assert_eq!(s.parse::<Signal>(), Ok(Signal::TERM), "{s}");
        }
        assert_eq!("9".parse::<Signal>(), Ok(Signal::KILL));
        assert_eq!("40".parse::<Signal>(), Ok(Signal(40)));
        for bad in ["", "0", "65", "-1", "SIGNOPE", "TERM2"] {
            assert!(bad.parse::<Signal>().is_err(), "{bad}");
        }
        assert_eq!(Signal::INT.to_string(), "SIGINT");
        assert_eq!(Signal(40).to_string(), "signal 40");
    }
}
