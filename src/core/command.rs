//! Parsing of what users write to `ctl` and `exec`. Both front ends share it,
//! so a command means the same thing whichever way it arrives.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::core::Status;
use crate::error::{Error, Result};
use crate::runtime::{Capability, ExecRequest};

pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(30);
pub const MAX_EXEC_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(300);

/// One `ctl` command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Start,
    Stop,
    Restart,
    Pause,
    Resume,
    Shutdown(Duration),
    Kill,
    Wait { status: Status, timeout: Duration },
}

/// What `cat ctl` prints: the verbs and their arguments.
pub const VERB_HELP: &[(&str, Capability)] = &[
    ("start", Capability::Start),
    ("stop", Capability::Stop),
    ("restart", Capability::Restart),
    ("pause", Capability::Pause),
    ("resume", Capability::Resume),
    ("shutdown [grace_secs]", Capability::Shutdown),
    ("kill", Capability::Kill),
];

impl Verb {
    pub fn parse(raw: &[u8]) -> Result<Verb> {
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
        let secs = |w: &str, what: &str| -> Result<Duration> {
            let n: f64 = w.parse().map_err(|_| {
                Error::InvalidCommand(format!("{what} must be a number of seconds, got {w:?}"))
            })?;
            if !(0.0..=MAX_EXEC_TIMEOUT.as_secs_f64()).contains(&n) {
                return Err(Error::InvalidCommand(format!("{what} is out of range")));
            }
            Ok(Duration::from_secs_f64(n))
        };
        match words.as_slice() {
            [] => bad("empty ctl command".into()),
            ["start"] => Ok(Verb::Start),
            ["stop"] => Ok(Verb::Stop),
            ["restart"] => Ok(Verb::Restart),
            ["pause"] => Ok(Verb::Pause),
            ["resume"] => Ok(Verb::Resume),
            ["kill"] => Ok(Verb::Kill),
            ["shutdown"] => Ok(Verb::Shutdown(DEFAULT_SHUTDOWN_GRACE)),
            ["shutdown", s] => Ok(Verb::Shutdown(secs(s, "shutdown grace")?)),
            ["wait", st] | ["wait", st, _] => {
                let status = st
                    .parse::<Status>()
                    .map_err(Error::InvalidCommand)?;
                let timeout = match words.get(2) {
                    Some(t) => secs(t, "wait timeout")?,
                    None => DEFAULT_WAIT_TIMEOUT,
                };
                Ok(Verb::Wait { status, timeout })
            }
            [verb, ..] => bad(format!(
                "unknown or malformed ctl command {line:?} (verb {verb:?}); `cat ctl` lists the commands"
            )),
        }
    }

    pub fn capability(self) -> Option<Capability> {
        match self {
            Verb::Start => Some(Capability::Start),
            Verb::Stop => Some(Capability::Stop),
            Verb::Restart => Some(Capability::Restart),
            Verb::Pause => Some(Capability::Pause),
            Verb::Resume => Some(Capability::Resume),
            Verb::Shutdown(_) => Some(Capability::Shutdown),
            Verb::Kill => Some(Capability::Kill),
            Verb::Wait { .. } => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Verb::Start => "start",
            Verb::Stop => "stop",
            Verb::Restart => "restart",
            Verb::Pause => "pause",
            Verb::Resume => "resume",
            Verb::Shutdown(_) => "shutdown",
            Verb::Kill => "kill",
            Verb::Wait { .. } => "wait",
        }
    }
}

/// How the caller wants an exec result back on the same file handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResultFormat {
    /// The command's stdout, raw.
    #[default]
    Stdout,
    /// A JSON object with stdout, stderr and exit_code.
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecCommand {
    pub request: ExecRequest,
    pub format: ResultFormat,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecJson {
    cmd: Vec<String>,
    #[serde(default)]
    timeout: Option<f64>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    result: ResultFormat,
}

impl ExecCommand {
    /// Accepts either a JSON object or one line split with shell quoting
    /// rules (no shell is run: `a | b` passes `|` as an argument).
    pub fn parse(raw: &[u8]) -> Result<ExecCommand> {
        let text = std::str::from_utf8(raw)
            .map_err(|_| Error::InvalidCommand("exec command is not valid UTF-8".into()))?;
        let trimmed = text.trim();
        let cmd = if trimmed.starts_with('{') {
            let j: ExecJson = serde_json::from_str(trimmed)
                .map_err(|e| Error::InvalidCommand(format!("exec JSON: {e}")))?;
            ExecCommand {
                request: ExecRequest {
                    cmd: j.cmd,
                    env: j.env,
                    timeout: exec_timeout(j.timeout)?,
                },
                format: j.result,
            }
        } else {
            let line = text.strip_suffix('\n').unwrap_or(text);
            if line.contains('\n') {
                return Err(Error::InvalidCommand(
                    "write one command line per write to exec (or a JSON object)".into(),
                ));
            }
            ExecCommand {
                request: ExecRequest {
                    cmd: split_words(line)?,
                    env: BTreeMap::new(),
                    timeout: DEFAULT_EXEC_TIMEOUT,
                },
                format: ResultFormat::Stdout,
            }
        };
        validate_exec(&cmd.request)?;
        Ok(cmd)
    }
}

fn exec_timeout(secs: Option<f64>) -> Result<Duration> {
    match secs {
        None => Ok(DEFAULT_EXEC_TIMEOUT),
        Some(s) if s > 0.0 && s <= MAX_EXEC_TIMEOUT.as_secs_f64() => Ok(Duration::from_secs_f64(s)),
        Some(_) => Err(Error::InvalidCommand(format!(
            "timeout is in seconds and must be > 0 and <= {}",
            MAX_EXEC_TIMEOUT.as_secs()
        ))),
    }
}

pub fn validate_exec(req: &ExecRequest) -> Result<()> {
    if req.cmd.is_empty() || req.cmd[0].is_empty() {
        return Err(Error::InvalidCommand("exec needs a command".into()));
    }
    if req.cmd.iter().any(|a| a.contains('\0')) {
        return Err(Error::InvalidCommand(
            "exec arguments must not contain NUL".into(),
        ));
    }
    if req
        .env
        .iter()
        .any(|(k, v)| k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0'))
    {
        return Err(Error::InvalidCommand(
            "exec env keys must be non-empty, without '=' or NUL".into(),
        ));
    }
    Ok(())
}

/// Splits a line into words the way a POSIX shell would quote them:
/// single quotes are literal, double quotes allow `\"`, `\\`, `\$` and `` \` ``,
/// a backslash outside quotes escapes the next character.
pub fn split_words(line: &str) -> Result<Vec<String>> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(ch) => cur.push(ch),
                        None => {
                            return Err(Error::InvalidCommand("unterminated single quote".into()))
                        }
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(ch @ ('"' | '\\' | '$' | '`')) => cur.push(ch),
                            Some(ch) => {
                                cur.push('\\');
                                cur.push(ch);
                            }
                            None => {
                                return Err(Error::InvalidCommand(
                                    "unterminated double quote".into(),
                                ))
                            }
                        },
                        Some(ch) => cur.push(ch),
                        None => {
                            return Err(Error::InvalidCommand("unterminated double quote".into()))
                        }
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(ch) => cur.push(ch),
                    None => return Err(Error::InvalidCommand("trailing backslash".into())),
                }
            }
            ch => {
                in_word = true;
                cur.push(ch);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_parse_with_arguments() {
        assert_eq!(Verb::parse(b"start\n").unwrap(), Verb::Start);
        assert_eq!(
            Verb::parse(b"shutdown 3").unwrap(),
            Verb::Shutdown(Duration::from_secs(3))
        );
        assert_eq!(
            Verb::parse(b"wait running 5\n").unwrap(),
            Verb::Wait {
                status: Status::Running,
                timeout: Duration::from_secs(5)
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
        ] {
            assert!(Verb::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn words_split_like_a_shell() {
        assert_eq!(
            split_words(r#"sh -c 'echo "hi there"' a\ b "x\"y" """#).unwrap(),
            vec!["sh", "-c", "echo \"hi there\"", "a b", "x\"y", ""]
        );
        assert!(split_words("echo 'oops").is_err());
        assert!(split_words("echo \"oops").is_err());
    }

    #[test]
    fn exec_accepts_json_with_seconds() {
        let c = ExecCommand::parse(
            br#"{"cmd":["ls","-la"],"timeout":2,"env":{"A":"b"},"result":"json"}"#,
        )
        .unwrap();
        assert_eq!(c.request.cmd, vec!["ls", "-la"]);
        assert_eq!(c.request.timeout, Duration::from_secs(2));
        assert_eq!(c.format, ResultFormat::Json);
        for bad in [
            &br#"{"cmd":[]}"#[..],
            br#"{"cmd":["x"],"timeout":0}"#,
            br#"{"cmd":["x"],"timeout":-1}"#,
            br#"{"cmd":"x"}"#,
            br#"{"cmd":["x"],"bogus":1}"#,
            b"",
            b"   \n",
        ] {
            assert!(
                ExecCommand::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
