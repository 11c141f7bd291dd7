//! A command to run inside a machine, and its result. The one-shot `exec`
//! file, REST and the CLI all build an [`ExecRequest`]; the filesystem and
//! REST parse theirs here so a command means the same whichever way it arrives.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::action::MAX_TIMEOUT;
use crate::error::{Error, Result};

pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(30);
/// Each of a one-shot exec's stdout and stderr keeps at most this much; the
/// rest is read and dropped (and the result says so).
pub const MAX_EXEC_OUTPUT: usize = 16 << 20;

/// A command to run inside a machine. The timeout is a `Duration`, never a
/// bare number, so callers cannot confuse seconds with milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    pub cmd: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub timeout: Duration,
}

impl ExecRequest {
    pub fn new(cmd: impl IntoIterator<Item = impl Into<String>>) -> ExecRequest {
        ExecRequest {
            cmd: cmd.into_iter().map(Into::into).collect(),
            env: BTreeMap::new(),
            working_dir: None,
            user: None,
            timeout: DEFAULT_EXEC_TIMEOUT,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.cmd.is_empty() || self.cmd[0].is_empty() {
            return Err(Error::InvalidCommand("exec needs a command".into()));
        }
        if self.cmd.iter().any(|a| a.contains('\0')) {
            return Err(Error::InvalidCommand(
                "exec arguments must not contain NUL".into(),
            ));
        }
        if self
            .env
            .iter()
            .any(|(k, v)| k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0'))
        {
            return Err(Error::InvalidCommand(
                "exec env keys must be non-empty, without '=' or NUL".into(),
            ));
        }
        for (what, v) in [("working_dir", &self.working_dir), ("user", &self.user)] {
            if v.as_deref()
                .is_some_and(|s| s.is_empty() || s.contains('\0'))
            {
                return Err(Error::InvalidCommand(format!(
                    "exec {what} must be non-empty, without NUL"
                )));
            }
        }
        if self.timeout.is_zero() || self.timeout > MAX_TIMEOUT {
            return Err(Error::InvalidCommand(format!(
                "exec timeout must be > 0 and <= {} seconds",
                MAX_TIMEOUT.as_secs()
            )));
        }
        Ok(())
    }
}

/// What a finished command left.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i64,
    /// More than [`MAX_EXEC_OUTPUT`] was written to the stream; the rest was dropped.
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// The command outlived its timeout and was killed; the output is what
    /// it wrote until then and `exit_code` is meaningless.
    pub timed_out: bool,
}

impl ExecOutput {
    /// Appends to stdout or stderr, keeping at most [`MAX_EXEC_OUTPUT`].
    pub fn push(&mut self, stderr: bool, data: &[u8]) {
        let (buf, truncated) = if stderr {
            (&mut self.stderr, &mut self.stderr_truncated)
        } else {
            (&mut self.stdout, &mut self.stdout_truncated)
        };
        let room = MAX_EXEC_OUTPUT.saturating_sub(buf.len());
        if data.len() > room {
            *truncated = true;
        }
        buf.extend_from_slice(&data[..data.len().min(room)]);
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
    /// Seconds.
    #[serde(default)]
    timeout: Option<f64>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
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
                    working_dir: j.working_dir,
                    user: j.user,
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
                request: ExecRequest::new(split_words(line)?),
                format: ResultFormat::Stdout,
            }
        };
        cmd.request.validate()?;
        Ok(cmd)
    }
}

/// An exec timeout given in seconds.
pub fn exec_timeout(secs: Option<f64>) -> Result<Duration> {
    match secs {
        None => Ok(DEFAULT_EXEC_TIMEOUT),
        Some(s) if s > 0.0 && s <= MAX_TIMEOUT.as_secs_f64() => Ok(Duration::from_secs_f64(s)),
        Some(_) => Err(Error::InvalidCommand(format!(
            "timeout is in seconds and must be > 0 and <= {}",
            MAX_TIMEOUT.as_secs()
        ))),
    }
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
            br#"{"cmd":["ls","-la"],"timeout":2,"env":{"A":"b"},"working_dir":"/tmp","user":"nobody","result":"json"}"#,
        )
        .unwrap();
        assert_eq!(c.request.cmd, vec!["ls", "-la"]);
        assert_eq!(c.request.timeout, Duration::from_secs(2));
        assert_eq!(c.request.working_dir.as_deref(), Some("/tmp"));
        assert_eq!(c.format, ResultFormat::Json);
        for bad in [
            &br#"{"cmd":[]}"#[..],
            br#"{"cmd":["x"],"timeout":0}"#,
            br#"{"cmd":["x"],"timeout":-1}"#,
            br#"{"cmd":"x"}"#,
            br#"{"cmd":["x"],"bogus":1}"#,
            br#"{"cmd":["x"],"user":""}"#,
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

    #[test]
    fn output_is_capped_and_says_so() {
        let mut out = ExecOutput::default();
        out.push(false, &vec![0; MAX_EXEC_OUTPUT - 2]);
        assert!(!out.stdout_truncated);
        out.push(false, b"abcd");
        assert_eq!(out.stdout.len(), MAX_EXEC_OUTPUT);
        assert_eq!(&out.stdout[MAX_EXEC_OUTPUT - 2..], b"ab");
        assert!(out.stdout_truncated);
        out.push(true, b"err");
        assert_eq!(out.stderr, b"err");
        assert!(!out.stderr_truncated);
    }
}
