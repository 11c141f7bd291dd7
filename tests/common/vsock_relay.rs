//! A stand-in for a VMM's hybrid-vsock endpoint: a Unix socket where a
//! connection says `CONNECT <port>\n`, is answered `OK <n>\n` and is then
//! relayed to the agent's Unix socket, as Firecracker and Cloud Hypervisor
//! relay it to the guest. Other modes misbehave the ways a VMM does when
//! nothing listens in the guest.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::{JoinHandle, JoinSet};

#[derive(Debug, Clone)]
pub enum RelayMode {
    /// Relay CONNECT `port` to the agent socket `target`; when that cannot
    /// be connected to (agent not up yet), close as a VMM does.
    Relay { target: PathBuf, port: u32 },
    /// Accept, read the CONNECT line, never answer.
    Silent,
    /// Accept and close at once.
    Close,
    /// Answer something that is not OK.
    Garbage,
}

pub struct VsockRelay {
    pub path: PathBuf,
    accept: JoinHandle<()>,
}

impl VsockRelay {
    /// Listens on `path` (removed first if it exists).
    pub fn start(path: &Path, mode: RelayMode) -> VsockRelay {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).expect("bind relay socket");
        let accept = tokio::spawn(async move {
            // Dropped with this task, which aborts every connection.
            let mut conns = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                conns.spawn(serve(stream, mode.clone()));
            }
        });
        VsockRelay {
            path: path.to_path_buf(),
            accept,
        }
    }
}

impl Drop for VsockRelay {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn serve(mut host: UnixStream, mode: RelayMode) {
    if matches!(mode, RelayMode::Close) {
        return;
    }
    let Some(line) = read_line(&mut host).await else {
        return;
    };
    match mode {
        RelayMode::Close => {}
        RelayMode::Silent => std::future::pending::<()>().await,
        RelayMode::Garbage => {
            let _ = host.write_all(b"\x00\xffnot a vmm\n").await;
        }
        RelayMode::Relay { target, port } => {
            if line != format!("CONNECT {port}") {
                return;
            }
            let Ok(guest) = UnixStream::connect(&target).await else {
                return;
            };
            if host.write_all(b"OK 1073741824\n").await.is_err() {
                return;
            }
            relay(host, guest).await;
        }
    }
}

/// Copies each direction on its own, as a VMM's vsock device does: a
/// guest that closes with host bytes unread makes the host-to-guest copy
/// fail, and that must not drop what the guest sent before it closed.
async fn relay(host: UnixStream, guest: UnixStream) {
    let (mut host_r, mut host_w) = host.into_split();
    let (mut guest_r, mut guest_w) = guest.into_split();
    let to_guest = async {
        let _ = tokio::io::copy(&mut host_r, &mut guest_w).await;
        let _ = guest_w.shutdown().await;
    };
    let to_host = async {
        let _ = tokio::io::copy(&mut guest_r, &mut host_w).await;
        let _ = host_w.shutdown().await;
    };
    // The guest's side ending ends the connection, as the VMM closes the
    // host's socket when the guest closes.
    tokio::select! {
        () = to_host => {}
        () = async { to_guest.await; std::future::pending::<()>().await } => {}
    }
}

async fn read_line(s: &mut UnixStream) -> Option<String> {
    let mut line = Vec::new();
    loop {
        let b = s.read_u8().await.ok()?;
        if b == b'\n' {
            return String::from_utf8(line).ok();
        }
        line.push(b);
        if line.len() > 64 {
            return None;
        }
    }
}
