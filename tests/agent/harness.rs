//! Starting an agent process and talking to it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hyperfleet::agent::{AgentClient, ExecRequest};
use tokio::net::UnixStream;

pub const AGENT: &str = env!("CARGO_BIN_EXE_hyperfleet-agent");

/// An agent process listening on a Unix socket in a temp dir; killed on drop.
pub struct Agent {
    pub socket: PathBuf,
    pub dir: tempfile::TempDir,
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Agent {
    pub fn start() -> Agent {
        Agent::start_under(&[])
    }

    /// Starts the agent as the last word of `wrapper` (e.g. unshare ...).
    pub fn start_under(wrapper: &[&str]) -> Agent {
        let dir = tempfile::Builder::new()
            .prefix("hf-agent-")
            .tempdir()
            .expect("tempdir");
        let socket = dir.path().join("agent.sock");
        let mut agent = Agent::spawn(wrapper, &format!("unix:{}", socket.display()), dir);
        agent.socket = socket;
        agent.wait_for_line("listening on", Duration::from_secs(20));
        agent
    }

    /// The agent with any `--listen`, not waited for.
    pub fn spawn(wrapper: &[&str], listen: &str, dir: tempfile::TempDir) -> Agent {
        let mut argv: Vec<&str> = wrapper.to_vec();
        argv.extend([AGENT, "--listen", listen]);
        let mut child = Command::new(argv[0])
            .args(&argv[1..])
            // Commands must not inherit the agent's environment.
            .env("HF_AGENT_SECRET", "leaked")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn agent");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[agent] {line}");
                let _ = tx.send(line);
            }
        });
        Agent {
            socket: PathBuf::new(),
            dir,
            child,
            lines,
        }
    }

    /// Waits for a log line containing `needle`; panics after `limit`.
    pub fn wait_for_line(&mut self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("agent never logged {needle:?} within {limit:?}"),
            }
        }
    }

    pub async fn connect(&self) -> AgentClient<UnixStream> {
        connect(&self.socket).await
    }

    /// Runs a one-shot command and returns its stdout as text.
    pub async fn sh(&self, script: &str) -> String {
        let r = self
            .connect()
            .await
            .exec(ExecRequest::new(["sh", "-c", script]))
            .await
            .expect("exec");
        assert_eq!(
            r.code(),
            Some(0),
            "{script}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        String::from_utf8(r.stdout).expect("utf-8")
    }

    /// Waits for the process (or its wrapper) to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn connect(socket: &Path) -> AgentClient<UnixStream> {
    let stream = UnixStream::connect(socket).await.expect("connect to agent");
    AgentClient::handshake(stream).await.expect("handshake")
}

/// Whether `pid` is a live (non-zombie) process on this host.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

/// Polls `cond` until true; panics with `what` after `limit`.
pub fn eventually(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
