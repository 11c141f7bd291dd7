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

    /// The line that tells a reader of `exec.stderr` that output was cut
    /// (the JSON result has flags; a plain reader would not know).
    pub fn truncation_note(&self) -> Option<String> {
        let cut = match (self.stdout_truncated, self.stderr_truncated) {
            (false, false) => return None,
            (true, false) => "stdout",
            (false, true) => "stderr",
            (true, true) => "stdout and stderr",
        };
        Some(format!(
            "hyperfleet: {cut} cut at {} MiB; a session (`hyperfleet exec`, exec.new) streams all of it\n",
            MAX_EXEC_OUTPUT >> 20
        ))
    }

    /// What `exec.stderr` holds: the command's stderr, then the note.
    pub fn stderr_file(&self) -> Vec<u8> {
        let mut out = self.stderr.clone();
        if let Some(note) = self.truncation_note() {
            out.extend_from_slice(note.as_bytes());
        }
        out
    }

    pub fn stderr_file_len(&self) -> u64 {
        (self.stderr.len() + self.truncation_note().map_or(0, |n| n.len())) as u64
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
        let note = out.truncation_note().expect("a note");
        assert!(
            note.starts_with("hyperfleet: stdout cut at 16 MiB"),
            "{note}"
        );
        assert!(out.stderr_file().ends_with(note.as_bytes()));
        assert_eq!(out.stderr_file_len(), out.stderr_file().len() as u64);
        out.push(true, b"err");
        assert_eq!(out.stderr, b"err");
        assert!(!out.stderr_truncated);
    }
}

/// A terminal's size, for a command run with a pty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct WindowSize {
    pub cols: u16,
    pub rows: u16,
}

/// A command run with its streams attached: an exec session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRequest {
    pub cmd: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    /// None: it runs until it ends (a shell); streams have no size cap.
    pub timeout: Option<Duration>,
    /// Run it on a pseudo-terminal of this size.
    pub tty: Option<WindowSize>,
}

impl StreamRequest {
    pub fn validate(&self) -> Result<()> {
        let mut as_exec = ExecRequest::new(self.cmd.clone());
        as_exec.env = self.env.clone();
        as_exec.working_dir = self.working_dir.clone();
        as_exec.user = self.user.clone();
        if let Some(t) = self.timeout {
            as_exec.timeout = t;
        }
        as_exec.validate()?;
        if let Some(w) = self.tty {
            if w.cols == 0 || w.rows == 0 {
                return Err(Error::InvalidCommand(
                    "a terminal needs at least one column and one row".into(),
                ));
            }
        }
        Ok(())
    }
}

/// What a session is made to do by its first `ctl` write: run a command,
/// or copy a file out of or into the machine (`{"get": "/etc/hostname"}`,
/// `{"put": "/tmp/x", "mode": 420}`), its bytes on `stdout` or `stdin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionCommand {
    Run(StreamRequest),
    CopyOut { path: String },
    CopyIn { path: String, mode: u32 },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CopyJson {
    #[serde(default)]
    get: Option<String>,
    #[serde(default)]
    put: Option<String>,
    #[serde(default)]
    mode: Option<u32>,
}

impl SessionCommand {
    pub fn parse(raw: &[u8]) -> Result<SessionCommand> {
        let text = String::from_utf8_lossy(raw);
        let trimmed = text.trim();
        let is_copy = trimmed.starts_with('{')
            && serde_json::from_str::<serde_json::Value>(trimmed)
                .is_ok_and(|v| v.get("get").is_some() || v.get("put").is_some());
        if !is_copy {
            return StreamRequest::parse(raw).map(SessionCommand::Run);
        }
        let j: CopyJson = serde_json::from_str(trimmed)
            .map_err(|e| Error::InvalidCommand(format!("session copy: {e}")))?;
        let path_ok = |p: &str| {
            if p.starts_with('/') && !p.contains('\0') {
                Ok(p.to_owned())
            } else {
                Err(Error::InvalidCommand(format!(
                    "a path in the machine must be absolute, got {p:?}"
                )))
            }
        };
        match (j.get, j.put) {
            (Some(p), None) if j.mode.is_none() => {
                Ok(SessionCommand::CopyOut { path: path_ok(&p)? })
            }
            (None, Some(p)) => Ok(SessionCommand::CopyIn {
                path: path_ok(&p)?,
                mode: j.mode.unwrap_or(0o644) & 0o7777,
            }),
            _ => Err(Error::InvalidCommand(
                "a copy is either {\"get\": PATH} or {\"put\": PATH, \"mode\": MODE}".into(),
            )),
        }
    }
}

/// What a session's `ctl` takes once its command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamControl {
    /// A signal for the command (with a pty: its foreground process group).
    Signal(i32),
    Resize(WindowSize),
    CloseStdin,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamJson {
    cmd: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
    /// Seconds; none by default.
    #[serde(default)]
    timeout: Option<f64>,
    #[serde(default)]
    tty: Option<WindowSize>,
}

impl StreamRequest {
    /// A session's first `ctl` write: a command line (split as a shell
    /// would) or a JSON object with `cmd` and optional `env`, `working_dir`,
    /// `user`, `timeout` (seconds) and `tty` (`{"cols":80,"rows":24}`).
    pub fn parse(raw: &[u8]) -> Result<StreamRequest> {
        let text = std::str::from_utf8(raw)
            .map_err(|_| Error::InvalidCommand("session command is not valid UTF-8".into()))?;
        let trimmed = text.trim();
        let req = if trimmed.starts_with('{') {
            let j: StreamJson = serde_json::from_str(trimmed)
                .map_err(|e| Error::InvalidCommand(format!("session JSON: {e}")))?;
            StreamRequest {
                cmd: j.cmd,
                env: j.env,
                working_dir: j.working_dir,
                user: j.user,
                timeout: match j.timeout {
                    None => None,
                    t => Some(exec_timeout(t)?),
                },
                tty: j.tty,
            }
        } else {
            let line = text.strip_suffix('\n').unwrap_or(text);
            if line.contains('\n') {
                return Err(Error::InvalidCommand(
                    "write one command line (or a JSON object) to start a session".into(),
                ));
            }
            StreamRequest {
                cmd: split_words(line)?,
                env: BTreeMap::new(),
                working_dir: None,
                user: None,
                timeout: None,
                tty: None,
            }
        };
        req.validate()?;
        Ok(req)
    }
}

impl StreamControl {
    /// `signal INT` (or `TERM`, `SIGKILL`, `9`...), `winsize COLS ROWS`,
    /// `close-stdin`.
    pub fn parse(raw: &[u8]) -> Result<StreamControl> {
        let text = std::str::from_utf8(raw)
            .map_err(|_| Error::InvalidCommand("session control is not valid UTF-8".into()))?;
        let words: Vec<&str> = text.split_whitespace().collect();
        let bad = || {
            Err(Error::InvalidCommand(format!(
                "unknown session control {:?}; the command is running, so ctl takes \
                 `signal NAME`, `winsize COLS ROWS` or `close-stdin`",
                text.trim()
            )))
        };
        match words.as_slice() {
            ["signal", sig] => Ok(StreamControl::Signal(signal_number(sig)?)),
            ["winsize", cols, rows] => {
                let n = |w: &str| {
                    w.parse::<u16>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| Error::InvalidCommand(format!("bad window size {w:?}")))
                };
                Ok(StreamControl::Resize(WindowSize {
                    cols: n(cols)?,
                    rows: n(rows)?,
                }))
            }
            ["close-stdin"] => Ok(StreamControl::CloseStdin),
            _ => bad(),
        }
    }
}

/// `INT`, `SIGINT` or `2`.
pub fn signal_number(s: &str) -> Result<i32> {
    if let Ok(n) = s.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
    }
    let name = s.strip_prefix("SIG").unwrap_or(s);
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "WINCH" => libc::SIGWINCH,
        "ALRM" => libc::SIGALRM,
        "PIPE" => libc::SIGPIPE,
        _ => {
            return Err(Error::InvalidCommand(format!(
                "unknown signal {s:?} (try INT, TERM, KILL or a number)"
            )))
        }
    };
    Ok(n)
}

#[cfg(test)]
mod stream_tests {
    use super::*;

    #[test]
    fn sessions_parse_commands_and_controls() {
        let r = StreamRequest::parse(b"sh -c 'read x; echo $x'\n").unwrap();
        assert_eq!(r.cmd, vec!["sh", "-c", "read x; echo $x"]);
        assert_eq!(r.timeout, None);
        let r = StreamRequest::parse(br#"{"cmd":["sh"],"tty":{"cols":80,"rows":24},"timeout":5}"#)
            .unwrap();
        assert_eq!(r.tty, Some(WindowSize { cols: 80, rows: 24 }));
        assert_eq!(r.timeout, Some(Duration::from_secs(5)));
        for bad in [
            &b""[..],
            b"{\"cmd\":[]}",
            b"{\"cmd\":[\"x\"],\"tty\":{\"cols\":0,\"rows\":1}}",
        ] {
            assert!(StreamRequest::parse(bad).is_err());
        }
        assert_eq!(
            StreamControl::parse(b"signal INT\n").unwrap(),
            StreamControl::Signal(libc::SIGINT)
        );
        assert_eq!(
            StreamControl::parse(b"signal 15").unwrap(),
            StreamControl::Signal(15)
        );
        assert_eq!(
            StreamControl::parse(b"winsize 100 30").unwrap(),
            StreamControl::Resize(WindowSize {
                cols: 100,
                rows: 30
            })
        );
        assert_eq!(
            StreamControl::parse(b"close-stdin").unwrap(),
            StreamControl::CloseStdin
        );
        for bad in [
            &b"signal FOO"[..],
            b"winsize 0 1",
            b"winsize 80",
            b"start",
            b"signal 99",
        ] {
            assert!(StreamControl::parse(bad).is_err(), "{bad:?}");
        }
    }
}
