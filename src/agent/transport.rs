//! Reaching the agent through a VMM's hybrid vsock: Firecracker and Cloud
//! Hypervisor expose the guest's vsock as a Unix socket on the host, where a
//! connection becomes a guest connection after `CONNECT <port>\n` is
//! answered with `OK <host port>\n`.
//!
//! While the guest boots nothing listens on the port, and the VMM then
//! closes the connection, answers something else, or stays silent; so the
//! exchange is retried with backoff until a deadline, and the final failure
//! says the agent did not answer and what the last attempt saw.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::time::Instant;

use super::client::AgentClient;
use super::error::{ConnectCause, Error, Result};

/// The longest line a VMM answers `CONNECT` with that we accept.
const MAX_ANSWER: usize = 64;

/// Time kept for the final attempt: enough for a local VMM to answer.
const LAST_TRY: Duration = Duration::from_millis(20);

/// Where to reach one guest's agent.
#[derive(Debug, Clone)]
pub struct HybridVsock {
    socket: PathBuf,
    port: u32,
    deadline: Duration,
    answer_timeout: Duration,
    io_timeout: Duration,
}

impl HybridVsock {
    /// How long to keep trying while the guest boots.
    pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);
    /// How long one attempt waits for the VMM's `OK`.
    pub const DEFAULT_ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

    /// The agent on vsock `port`, through the VMM's Unix socket `socket`.
    pub fn new(socket: impl Into<PathBuf>, port: u32) -> HybridVsock {
        HybridVsock {
            socket: socket.into(),
            port,
            deadline: Self::DEFAULT_DEADLINE,
            answer_timeout: Self::DEFAULT_ANSWER_TIMEOUT,
            io_timeout: AgentClient::<UnixStream>::DEFAULT_IO_TIMEOUT,
        }
    }

    /// Keep retrying for this long before [`Error::NotAnswering`].
    pub fn with_deadline(mut self, deadline: Duration) -> HybridVsock {
        self.deadline = deadline;
        self
    }

    /// Give up on one attempt whose `CONNECT` is unanswered for this long.
    pub fn with_answer_timeout(mut self, timeout: Duration) -> HybridVsock {
        self.answer_timeout = timeout;
        self
    }

    /// The step timeout of the clients [`connect`](Self::connect) returns.
    pub fn with_io_timeout(mut self, timeout: Duration) -> HybridVsock {
        self.io_timeout = timeout;
        self
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn port(&self) -> u32 {
        self.port
    }

    /// A connection to the agent, hello exchanged, ready for one request.
    pub async fn connect(&self) -> Result<AgentClient<UnixStream>> {
        let stream = self.connect_stream().await?;
        AgentClient::handshake_with_timeout(stream, self.io_timeout).await
    }

    /// A raw stream to the guest port, past the VMM's `OK` line.
    pub async fn connect_stream(&self) -> Result<UnixStream> {
        let started = Instant::now();
        let deadline = started + self.deadline;
        let mut backoff = Duration::from_millis(20);
        let mut last = ConnectCause::NoAttempt;
        loop {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let wait = self.answer_timeout.min(deadline - now);
            match connect_once(&self.socket, self.port, wait).await {
                Ok(stream) => return Ok(stream),
                Err(cause) => {
                    tracing::debug!(socket = %self.socket.display(), port = self.port, error = %cause, "agent not answering yet");
                    last = cause;
                }
            }
            // Sleep, but wake in time for one last attempt before the deadline.
            let left = deadline.saturating_duration_since(Instant::now());
            if left <= LAST_TRY {
                break;
            }
            tokio::time::sleep(backoff.min(left - LAST_TRY)).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
        Err(Error::NotAnswering {
            port: self.port,
            socket: self.socket.clone(),
            waited: started.elapsed(),
            last,
        })
    }
}

/// One `CONNECT` exchange.
async fn connect_once(
    socket: &Path,
    port: u32,
    wait: Duration,
) -> Result<UnixStream, ConnectCause> {
    let exchange = async {
        let mut stream = UnixStream::connect(socket)
            .await
            .map_err(ConnectCause::Socket)?;
        stream
            .write_all(format!("CONNECT {port}\n").as_bytes())
            .await
            .map_err(closed_or_io)?;
        let line = read_answer(&mut stream).await?;
        if line.starts_with("OK ") {
            Ok(stream)
        } else {
            Err(ConnectCause::Refused(line))
        }
    };
    match tokio::time::timeout(wait, exchange).await {
        Ok(result) => result,
        Err(_) => Err(ConnectCause::Silent(wait)),
    }
}

/// The VMM's answer line, read a byte at a time so that not one byte of the
/// agent's protocol that may follow it is consumed.
async fn read_answer(stream: &mut UnixStream) -> Result<String, ConnectCause> {
    let mut line = Vec::new();
    loop {
        let mut byte = [0u8; 1];
        let n = stream.read(&mut byte).await.map_err(closed_or_io)?;
        if n == 0 {
            return Err(if line.is_empty() {
                ConnectCause::Closed
            } else {
                ConnectCause::Refused(String::from_utf8_lossy(&line).into_owned())
            });
        }
        if byte[0] == b'\n' {
            return Ok(String::from_utf8_lossy(&line).into_owned());
        }
        line.push(byte[0]);
        if line.len() > MAX_ANSWER {
            return Err(ConnectCause::Refused(format!(
                "{}... (no newline in {MAX_ANSWER} bytes)",
                String::from_utf8_lossy(&line)
            )));
        }
    }
}

/// A VMM closing on us shows up as EOF, or as a reset or broken pipe when
/// it closed before reading our `CONNECT`: all three are "closed".
fn closed_or_io(e: std::io::Error) -> ConnectCause {
    use std::io::ErrorKind::{BrokenPipe, ConnectionReset};
    match e.kind() {
        ConnectionReset | BrokenPipe => ConnectCause::Closed,
        _ => ConnectCause::Io(e),
    }
}
