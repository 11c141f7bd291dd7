//! One connection from hello to the end of its request.

use std::os::fd::OwnedFd;

use super::conn::{Conn, ConnError, IO_TIMEOUT};
use super::exec::{self, ExecError, Mode};
use super::files::{self, Failure};
use super::spawn::{self, Stdio};
use super::{init, log};
use super::{sessions, sys};
use crate::agent::protocol::{
    ErrorKind, Frame, Hello, RemoteError, Request, Response, PROTOCOL_NAME, PROTOCOL_VERSION,
};

/// Serves one connection; never panics on anything the host sends.
pub fn serve(sock: OwnedFd) {
    let mut conn = match Conn::new(sock) {
        Ok(c) => c,
        Err(e) => return log(format_args!("cannot set up a connection: {e}")),
    };
    if let Err(e) = conn.send(&Frame::Hello(Hello::ours())) {
        return log(format_args!("connection dropped before our hello: {e}"));
    }
    let request = match handshake(&mut conn) {
        Ok(r) => r,
        Err(Refusal::Tell(err)) => {
            log(format_args!("refusing a connection: {err}"));
            return conn.fail(err);
        }
        Err(Refusal::Gone(e)) => {
            return log(format_args!("connection ended before its request: {e}"))
        }
    };
    match handle(&mut conn, request) {
        Ok(()) => {}
        Err(Refusal::Tell(err)) => conn.fail(err),
        Err(Refusal::Gone(e)) => log(format_args!("connection ended during its request: {e}")),
    }
}

enum Refusal {
    /// Report this to the host, then close.
    Tell(RemoteError),
    /// The connection failed; nothing can be reported.
    Gone(ConnError),
}

impl From<ConnError> for Refusal {
    fn from(e: ConnError) -> Refusal {
        match e {
            // A bad frame or a silent host can still be told why we close.
            ConnError::Decode(d) => {
                Refusal::Tell(RemoteError::new(ErrorKind::Protocol, report(&d)))
            }
            ConnError::Timeout(t) => Refusal::Tell(RemoteError::new(
                ErrorKind::Protocol,
                format!("nothing received for {t:?}"),
            )),
            e => Refusal::Gone(e),
        }
    }
}

/// An error and its causes on one line.
fn report(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        line.push_str(": ");
        line.push_str(&c.to_string());
        cause = c.source();
    }
    line
}

/// The host's hello, then its request.
fn handshake(conn: &mut Conn) -> Result<Request, Refusal> {
    let protocol = |m: String| Refusal::Tell(RemoteError::new(ErrorKind::Protocol, m));
    match conn.recv(IO_TIMEOUT)? {
        Frame::Hello(h) if h.protocol != PROTOCOL_NAME => {
            return Err(protocol(format!("the hello names protocol {:?}, not {PROTOCOL_NAME:?}", h.protocol)))
        }
        Frame::Hello(h) if !h.compatible() => {
            return Err(Refusal::Tell(RemoteError::new(
                ErrorKind::VersionMismatch,
                format!(
                    "the host speaks protocol {}, this agent speaks {PROTOCOL_VERSION}: major versions differ",
                    h.version
                ),
            )))
        }
        Frame::Hello(_) => {}
        other => return Err(protocol(format!("expected a hello, got a {:?} frame", other.frame_type()))),
    }
    match conn.recv(IO_TIMEOUT)? {
        Frame::Request(r) => Ok(r),
        other => Err(protocol(format!(
            "expected a request, got a {:?} frame",
            other.frame_type()
        ))),
    }
}

fn handle(conn: &mut Conn, request: Request) -> Result<(), Refusal> {
    match request {
        Request::Ping => {
            conn.send(&Frame::Response(Response::Pong {
                pid1: init::is_pid1(),
            }))?;
            Ok(())
        }
        Request::Exec(req) => {
            let timeout = Some(req.timeout);
            let child = spawn::spawn(&req, Stdio::Pipes { stdin: false }).map_err(Refusal::Tell)?;
            run(conn, child, timeout, Mode::OneShot)
        }
        Request::ExecStream(req) => {
            let stdio = match req.pty {
                Some(size) => Stdio::Pty(size),
                None => Stdio::Pipes { stdin: true },
            };
            let timeout = (!req.no_timeout).then_some(req.exec.timeout);
            let child = spawn::spawn(&req.exec, stdio).map_err(Refusal::Tell)?;
            run(conn, child, timeout, Mode::Stream)
        }
        Request::PutFile { path, mode } => transfer(files::put(conn, &path, mode)),
        Request::GetFile { path } => transfer(files::get(conn, &path)),
        Request::Signal { pid, signal } => {
            let pid = i32::try_from(pid).map_err(|_| {
                Refusal::Tell(RemoteError::new(
                    ErrorKind::InvalidArgument,
                    format!("pid {pid} is out of range"),
                ))
            })?;
            sessions::signal(pid, signal).map_err(Refusal::Tell)?;
            conn.send(&Frame::Response(Response::Signalled))?;
            Ok(())
        }
        Request::PowerOff => {
            if !init::is_pid1() {
                return Err(Refusal::Tell(RemoteError::new(
                    ErrorKind::Unsupported,
                    "this agent is not the guest's init (PID 1), so it does not power the guest off",
                )));
            }
            conn.send(&Frame::Response(Response::PoweringOff))?;
            let err = init::power_off();
            log(format_args!("power off failed: {err}"));
            Ok(())
        }
    }
}

fn run(
    conn: &mut Conn,
    child: spawn::Spawned,
    timeout: Option<std::time::Duration>,
    mode: Mode,
) -> Result<(), Refusal> {
    let started = conn.send(&Frame::Response(Response::Started {
        pid: child.pid as u32,
    }));
    if let Err(e) = started {
        // exec::run is what enforces the timeout and kills the group when
        // the host goes; without it the command would run forever.
        let _ = sys::kill_group(child.pid, libc::SIGKILL);
        return Err(e.into());
    }
    match exec::run(conn, child, timeout, mode) {
        Ok(()) => Ok(()),
        Err(ExecError::Conn(e)) => Err(e.into()),
        Err(ExecError::Protocol(m)) => Err(Refusal::Tell(exec::protocol_error(m))),
    }
}

fn transfer(result: Result<(), Failure>) -> Result<(), Refusal> {
    match result {
        Ok(()) => Ok(()),
        Err(Failure::Report(e)) => Err(Refusal::Tell(e)),
        Err(Failure::Conn(e)) => Err(e.into()),
    }
}
