//! Where REST listens and how connections are served.
//!
//! `--listen` takes `IP:PORT` or `unix:/path`, and may be given more than
//! once. A non-loopback address is refused unless a live API key exists.
//! A Unix socket is created mode 0600 (bound in a private directory, then
//! moved into place, so it is never reachable with a wider mode).
//!
//! Each connection gets [`Limits::header_timeout`] to send a request's
//! headers (which also ends idle kept-alive connections) and each body
//! [`Limits::body_timeout`]; at most [`Limits::max_connections`] are served
//! at once. Handlers run on the connection's task; the core runs every
//! operation that changes a machine on a task of its own, so a client that
//! goes away mid-request leaves nothing half-done.

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use hyper::body::Incoming;
use hyper::header::AUTHORIZATION;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::auth::{Auth, Gate, Peer};
use super::paths::HostPaths;
use super::reply::{Body, Reply};
use super::routes::{self, Access, Args};
use super::{handlers, Api, Limits};
use crate::core::Core;

/// An address to serve on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl FromStr for Listen {
    type Err = String;
    fn from_str(s: &str) -> Result<Listen, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            let p = PathBuf::from(path);
            if !p.is_absolute() {
                return Err(format!("{s}: the socket path must be absolute"));
            }
            return Ok(Listen::Unix(p));
        }
        if let Some(port) = s.strip_prefix("localhost:") {
            let port: u16 = port.parse().map_err(|_| format!("{s}: bad port"))?;
            return Ok(Listen::Tcp(SocketAddr::from(([127, 0, 0, 1], port))));
        }
        s.parse()
            .map(Listen::Tcp)
            .map_err(|_| format!("{s}: expected IP:PORT (e.g. 127.0.0.1:3000) or unix:/path"))
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Tcp(a) => write!(f, "{a}"),
            Listen::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub listen: Vec<Listen>,
    /// Host path prefixes REST-created machines may name; empty: any.
    pub allow_host_paths: Vec<PathBuf>,
    pub limits: Limits,
}

enum Listener {
    Tcp(TcpListener, Gate),
    Unix(UnixListener, PathBuf),
}

/// REST, bound and ready to serve.
pub struct Server {
    api: Arc<Api>,
    listeners: Vec<Listener>,
}

impl Server {
    /// Opens the key store in the state database `db` and binds every
    /// address. Fails on a non-loopback address when no live key exists.
    pub async fn bind(core: Arc<Core>, db: &Path, opts: &Options) -> anyhow::Result<Server> {
        let auth = Auth::open(db).context("opening the API keys")?;
        let paths = HostPaths::new(&opts.allow_host_paths)?;
        let mut listeners = Vec::new();
        for l in &opts.listen {
            match l {
                Listen::Tcp(addr) => {
                    let gate = if addr.ip().to_canonical().is_loopback() {
                        Gate::OpenUntilFirstKey
                    } else {
                        Gate::Always
                    };
                    if gate == Gate::Always && auth.live_keys()? == 0 {
                        bail!(
                            "refusing to serve REST on {addr} without an API key: anyone who can \
                             reach it could run anything on this host. Create one first with \
                             `hyperfleet apikey create <name>` (same state directory), or listen \
                             on a loopback address or a Unix socket"
                        );
                    }
                    let listener = TcpListener::bind(addr)
                        .await
                        .with_context(|| format!("listening on {addr}"))?;
                    listeners.push(Listener::Tcp(listener, gate));
                }
                Listen::Unix(path) => {
                    let listener = bind_unix(path).with_context(|| format!("listening on {l}"))?;
                    listeners.push(Listener::Unix(listener, path.clone()));
                }
            }
        }
        let api = Arc::new(Api::new(core, auth, paths, opts.limits.clone()));
        Ok(Server { api, listeners })
    }

    /// Where it listens, as `--listen` takes it (ports chosen by the kernel filled in).
    pub fn addresses(&self) -> Vec<String> {
        self.listeners
            .iter()
            .map(|l| match l {
                Listener::Tcp(t, _) => t
                    .local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_else(|e| format!("?: {e}")),
                Listener::Unix(_, p) => Listen::Unix(p.clone()).to_string(),
            })
            .collect()
    }

    /// The socket files to remove when the daemon exits.
    pub fn socket_files(&self) -> Vec<PathBuf> {
        self.listeners
            .iter()
            .filter_map(|l| match l {
                Listener::Unix(_, p) => Some(p.clone()),
                Listener::Tcp(..) => None,
            })
            .collect()
    }

    /// Serves until the task is dropped.
    pub async fn serve(self) {
        let slots = Arc::new(Semaphore::new(self.api.limits.max_connections));
        let mut tasks = tokio::task::JoinSet::new();
        for l in self.listeners {
            tasks.spawn(accept(self.api.clone(), l, slots.clone()));
        }
        while tasks.join_next().await.is_some() {}
    }
}

/// Binds a socket that only its owner can use: in a private directory
/// first, then renamed to `path`.
fn bind_unix(path: &Path) -> anyhow::Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(md) if md.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                bail!("{} is in use by another server", path.display());
            }
            // Left behind by a server that is gone.
            std::fs::remove_file(path)?;
        }
        Ok(_) => bail!("{} exists and is not a socket", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .context("the socket path has no directory")?;
    let private = parent.join(format!(
        ".hyperfleet-sock-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .with_context(|| format!("creating a private directory in {}", parent.display()))?;
    let staged = private.join("s");
    let bound = UnixListener::bind(&staged)
        .map_err(anyhow::Error::from)
        .and_then(|l| {
            std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
            std::fs::rename(&staged, path)?;
            Ok(l)
        });
    let _ = std::fs::remove_file(&staged);
    let _ = std::fs::remove_dir(&private);
    let listener = bound?;
    Ok(listener)
}

async fn accept(api: Arc<Api>, listener: Listener, slots: Arc<Semaphore>) {
    loop {
        // Wait for a free slot before accepting: past the limit, clients
        // wait in the kernel's backlog instead of costing a task each.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let accepted = match &listener {
            Listener::Tcp(l, gate) => l.accept().await.map(|(s, addr)| {
                let _ = s.set_nodelay(true);
                let peer = Peer::ip(addr.ip());
                tokio::spawn(connection(api.clone(), s, peer, *gate, slot));
            }),
            Listener::Unix(l, _) => l.accept().await.map(|(s, _)| {
                let peer = s
                    .peer_cred()
                    .map(|c| Peer::Uid(c.uid()))
                    .unwrap_or(Peer::Unknown);
                tokio::spawn(connection(
                    api.clone(),
                    s,
                    peer,
                    Gate::OpenUntilFirstKey,
                    slot,
                ));
            }),
        };
        if let Err(e) = accepted {
            // Out of file descriptors, most likely: give others time to close.
            tracing::warn!("rest: accept: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn connection<S>(
    api: Arc<Api>,
    stream: S,
    peer: Peer,
    gate: Gate,
    _slot: OwnedSemaphorePermit,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let header_timeout = api.limits.header_timeout;
    let svc = hyper::service::service_fn(move |req| {
        let api = api.clone();
        async move { Ok::<_, Infallible>(handle(&api, peer, gate, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(stream), svc);
    if let Err(e) = conn.await {
        tracing::debug!(%peer, "rest: connection: {e}");
    }
}

async fn handle(api: &Arc<Api>, peer: Peer, gate: Gate, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let resp = match dispatch(api, peer, gate, req).await {
        Ok(r) => r,
        Err(p) => p.into_response(),
    };
    tracing::debug!(%peer, %method, %path, status = resp.status().as_u16(), "rest");
    resp
}

async fn dispatch(api: &Arc<Api>, peer: Peer, gate: Gate, req: Request<Incoming>) -> Reply {
    let (route, id) = routes::find(req.method(), req.uri().path())?;
    if let Access::Needs(scope) = route.access {
        api.auth
            .check(peer, gate, req.headers().get(AUTHORIZATION), scope)?;
    }
    let args = Args::parse(route, req.uri().query())?;
    handlers::run(api, route, id, args, req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_parse() {
        assert_eq!(
            "127.0.0.1:3000".parse::<Listen>(),
            Ok(Listen::Tcp("127.0.0.1:3000".parse().unwrap()))
        );
        assert_eq!(
            "localhost:3000".parse::<Listen>(),
            Ok(Listen::Tcp("127.0.0.1:3000".parse().unwrap()))
        );
        assert_eq!(
            "[::1]:0".parse::<Listen>(),
            Ok(Listen::Tcp("[::1]:0".parse().unwrap()))
        );
        assert_eq!(
            "unix:/run/hf.sock".parse::<Listen>(),
            Ok(Listen::Unix("/run/hf.sock".into()))
        );
        assert!("unix:rel.sock".parse::<Listen>().is_err());
        assert!("example.com:80".parse::<Listen>().is_err());
        assert_eq!(
            Listen::Unix("/a".into()).to_string().parse::<Listen>(),
            Ok(Listen::Unix("/a".into()))
        );
    }

    #[test]
    fn a_unix_socket_is_owner_only_and_a_stale_one_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let l = bind_unix(&path).unwrap();
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            assert!(bind_unix(&path).is_err(), "a live socket was taken over");
            drop(l);
            let _again = bind_unix(&path).unwrap();
            // Nothing but the socket is left in the directory.
            let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
            assert_eq!(names.len(), 1);
        });
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        assert!(bind_unix(&file).is_err(), "a file was replaced");
    }
}
