//! The agent's settings: where to listen, from its flags or (for a port)
//! the kernel command line.
//!
//! Precedence: `--listen`/`--port`, then `hyperfleet.agent_port=N` on the
//! kernel command line, then vsock port 52. As PID 1 the agent also gets
//! whatever words the kernel did not recognise as arguments, so unknown
//! arguments are then ignored rather than fatal.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::agent::protocol::DEFAULT_AGENT_PORT;

pub const USAGE: &str =
    "usage: hyperfleet-agent [--listen vsock:PORT | --listen unix:PATH | --port PORT]

Runs commands and copies files for the host, over vsock (default: port 52,
or hyperfleet.agent_port=N on the kernel command line) or a Unix socket.
As PID 1 it also mounts /proc, /sys, /dev, /tmp and /run, loads the kernel
modules listed in /etc/hyperfleet/modules, and reaps orphans.";

/// Where the agent accepts connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Vsock(u32),
    Unix(PathBuf),
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Vsock(port) => write!(f, "vsock:{port}"),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<ListenAddr, String> {
        if let Some(port) = s.strip_prefix("vsock:") {
            return parse_port(port).map(ListenAddr::Vsock);
        }
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a socket path".into());
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        Err(format!("{s:?} is neither vsock:PORT nor unix:PATH"))
    }
}

fn parse_port(s: &str) -> Result<u32, String> {
    s.parse::<u32>()
        .map_err(|_| format!("bad vsock port {s:?}"))
}

/// What the command line asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Run(ListenAddr),
    Help,
    Version,
}

/// Parses the agent's arguments (without the program name) and the kernel
/// command line. `lenient` (as PID 1) skips arguments it does not know.
pub fn parse(
    args: impl IntoIterator<Item = String>,
    kernel_cmdline: &str,
    lenient: bool,
) -> Result<Parsed, String> {
    let mut listen = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "--listen" => listen = Some(value("--listen")?.parse()?),
            "--port" => listen = Some(ListenAddr::Vsock(parse_port(&value("--port")?)?)),
            "-h" | "--help" => return Ok(Parsed::Help),
            "-V" | "--version" => return Ok(Parsed::Version),
            _ if lenient => {}
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    if let Some(addr) = listen {
        return Ok(Parsed::Run(addr));
    }
    let from_kernel = kernel_cmdline
        .split_whitespace()
        .rev()
        .find_map(|w| w.strip_prefix("hyperfleet.agent_port="));
    let port = match from_kernel {
        Some(p) => parse_port(p).map_err(|e| format!("kernel command line: {e}"))?,
        None => DEFAULT_AGENT_PORT,
    };
    Ok(Parsed::Run(ListenAddr::Vsock(port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_beat_the_kernel_command_line_which_beats_the_default() {
        let k = "console=ttyS0 hyperfleet.agent_port=1234";
        assert_eq!(
            parse(args(&["--listen", "unix:/run/a.sock"]), k, false),
            Ok(Parsed::Run(ListenAddr::Unix("/run/a.sock".into())))
        );
        assert_eq!(
            parse(args(&["--port=99"]), k, false),
            Ok(Parsed::Run(ListenAddr::Vsock(99)))
        );
        assert_eq!(
            parse(args(&[]), k, false),
            Ok(Parsed::Run(ListenAddr::Vsock(1234)))
        );
        assert_eq!(
            parse(args(&[]), "quiet", false),
            Ok(Parsed::Run(ListenAddr::Vsock(52)))
        );
    }

    #[test]
    fn bad_values_are_refused_and_unknown_words_only_when_strict() {
        assert!(parse(args(&["--listen", "tcp:1"]), "", false).is_err());
        assert!(parse(args(&["--listen"]), "", false).is_err());
        assert!(parse(args(&["--port", "x"]), "", false).is_err());
        assert!(parse(args(&[]), "hyperfleet.agent_port=-1", false).is_err());
        assert!(parse(args(&["single"]), "", false).is_err());
        assert_eq!(
            parse(args(&["single", "--port", "7"]), "", true),
            Ok(Parsed::Run(ListenAddr::Vsock(7)))
        );
    }
}
