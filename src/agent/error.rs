//! Errors of the host side of the agent protocol. The runtime maps them to
//! the crate's error; here every variant keeps its cause.

use std::path::PathBuf;
use std::time::Duration;

use super::protocol::{DecodeError, EncodeError, ErrorKind, FrameType, Version};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Nothing in the guest accepted a connection on the port before the
    /// deadline: the guest has not booted, the agent is not running, or it
    /// listens elsewhere. `last` is what the final attempt saw.
    #[error("the guest agent did not answer on vsock port {port} (through {}) within {waited:?}", socket.display())]
    NotAnswering {
        port: u32,
        socket: PathBuf,
        waited: Duration,
        #[source]
        last: ConnectCause,
    },
    /// The agent was reached but a step did not finish in time.
    #[error("timed out after {after:?} waiting for the agent ({during})")]
    Timeout {
        during: &'static str,
        after: Duration,
    },
    /// The peer sent something the protocol does not allow.
    #[error("agent protocol error")]
    Protocol(#[source] ProtocolError),
    /// The agent speaks another major version of the protocol.
    #[error("the agent speaks protocol {theirs}, this host speaks {ours}: major versions differ, update one side")]
    VersionMismatch { ours: Version, theirs: Version },
    /// The agent refused or failed the request and said why.
    #[error("agent: {kind}: {message}")]
    Remote {
        kind: ErrorKind,
        message: String,
        errno: Option<i32>,
    },
    /// The connection ended where the protocol says more must come.
    #[error("the agent closed the connection ({during})")]
    Closed { during: &'static str },
    /// The request cannot be sent as asked (empty command, bad path...).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("I/O error talking to the agent")]
    Io(#[source] std::io::Error),
}

/// What went wrong with one attempt to reach the agent through the VMM.
#[derive(Debug, thiserror::Error)]
pub enum ConnectCause {
    #[error("cannot connect to the VMM's vsock socket")]
    Socket(#[source] std::io::Error),
    /// What a VMM does when nothing in the guest listens on the port.
    #[error("the VMM closed the connection without answering CONNECT")]
    Closed,
    #[error("the VMM answered {0:?} instead of OK")]
    Refused(String),
    #[error("the VMM did not answer CONNECT within {0:?}")]
    Silent(Duration),
    #[error("I/O error during the CONNECT exchange")]
    Io(#[source] std::io::Error),
    /// The deadline was zero.
    #[error("no attempt fitted before the deadline")]
    NoAttempt,
}

/// How the peer broke the protocol.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("cannot decode the agent's frames")]
    Decode(#[source] DecodeError),
    #[error("cannot encode a frame for the agent")]
    Encode(#[source] EncodeError),
    #[error("expected {expected}, got a {got:?} frame")]
    Unexpected {
        expected: &'static str,
        got: FrameType,
    },
    #[error("the peer is not a hyperfleet agent (its hello names protocol {0:?})")]
    NotAnAgent(String),
}

impl From<DecodeError> for Error {
    fn from(e: DecodeError) -> Error {
        Error::Protocol(ProtocolError::Decode(e))
    }
}

impl From<EncodeError> for Error {
    fn from(e: EncodeError) -> Error {
        Error::Protocol(ProtocolError::Encode(e))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::Io(e)
    }
}

impl Error {
    /// The error and its causes on one line, `: `-separated.
    pub fn report(&self) -> String {
        let mut line = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            line.push_str(": ");
            line.push_str(&c.to_string());
            cause = c.source();
        }
        line
    }
}
