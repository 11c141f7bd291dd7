//! The connection to a Docker Engine and the one place bollard errors become
//! crate errors.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bollard::errors::Error as DockerError;
use bollard::{ClientVersion, Docker, API_DEFAULT_VERSION};
use tokio::sync::OnceCell;

use super::RUNTIME;
use crate::error::Error;
use crate::error::Result;
use crate::runtime::Health;

/// Deadline for reaching the engine at all; a hung engine must not hang us.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline for an ordinary request to get its response headers. Streams
/// (logs, exec output, wait) are not bound by it once they have begun.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);
/// The socket used when DOCKER_HOST is unset.
const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// A lazily established, version-negotiated connection to a Docker Engine.
///
/// Cheap to build and to clone (clones share one connection). Nothing is
/// contacted until the first request; if the engine is unreachable then, the
/// request fails with [`Error::RuntimeUnavailable`] and the next one tries
/// again.
#[derive(Clone)]
pub struct DockerConnection {
    inner: Arc<ConnectionInner>,
}

struct ConnectionInner {
    source: Source,
    client: OnceCell<Docker>,
}

enum Source {
    Host(String),
    Client(Docker),
}

impl DockerConnection {
    /// The local engine: `DOCKER_HOST` if set, else `/var/run/docker.sock`.
    pub fn local() -> Self {
        let host = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| DEFAULT_HOST.to_owned());
        Self::with_host(host)
    }

    /// An engine at an explicit address (`unix:///path`, `tcp://host:port`
    /// or `http://host:port`).
    pub fn with_host(host: impl Into<String>) -> Self {
        Self::from_source(Source::Host(host.into()))
    }

    /// Uses a client built by the caller. Its API version is only ever
    /// lowered (bollard's `negotiate_version`), so build it with a version the
    /// engine accepts; [`DockerConnection::with_host`] needs no such care.
    pub fn from_client(docker: Docker) -> Self {
        Self::from_source(Source::Client(docker))
    }

    fn from_source(source: Source) -> Self {
        DockerConnection {
            inner: Arc::new(ConnectionInner {
                source,
                client: OnceCell::new(),
            }),
        }
    }

    /// The address this connection talks to, for messages.
    pub fn host(&self) -> &str {
        match &self.inner.source {
            Source::Host(h) => h,
            Source::Client(_) => "(caller-supplied client)",
        }
    }

    /// The connected client, negotiating the API version on first use.
    pub async fn client(&self) -> Result<Docker> {
        self.inner
            .client
            .get_or_try_init(|| async {
                match &self.inner.source {
                    Source::Host(host) => connect_host(host).await,
                    Source::Client(docker) => {
                        match tokio::time::timeout(
                            CONNECT_TIMEOUT,
                            docker.clone().negotiate_version(),
                        )
                        .await
                        {
                            Ok(negotiated) => negotiated.map_err(|e| docker_error(e, None)),
                            Err(_) => Err(unreachable_in(CONNECT_TIMEOUT)),
                        }
                    }
                }
            })
            .await
            .cloned()
    }

    /// Pings the engine and reports its version, within a few seconds.
    pub async fn health(&self) -> Health {
        let probe = async {
            let docker = self.client().await?;
            docker.ping().await.map_err(|e| docker_error(e, None))?;
            docker.version().await.map_err(|e| docker_error(e, None))
        };
        match tokio::time::timeout(HEALTH_TIMEOUT, probe).await {
            Ok(Ok(v)) => Health::Available {
                detail: format!(
                    "Docker Engine {} (API {}, {}/{})",
                    v.version.as_deref().unwrap_or("unknown"),
                    v.api_version.as_deref().unwrap_or("unknown"),
                    v.os.as_deref().unwrap_or("?"),
                    v.arch.as_deref().unwrap_or("?"),
                ),
            },
            Ok(Err(e)) => Health::Unavailable {
                reason: unavailable_reason(e),
            },
            Err(_) => Health::Unavailable {
                reason: format!(
                    "the engine at {} did not answer within {}s",
                    self.host(),
                    HEALTH_TIMEOUT.as_secs()
                ),
            },
        }
    }
}

impl Default for DockerConnection {
    fn default() -> Self {
        Self::local()
    }
}

impl From<Docker> for DockerConnection {
    fn from(docker: Docker) -> Self {
        Self::from_client(docker)
    }
}

impl fmt::Debug for DockerConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerConnection")
            .field("host", &self.host())
            .field("connected", &self.inner.client.initialized())
            .finish()
    }
}

/// Connects to `host` at the newest API version both sides speak.
///
/// bollard's own `negotiate_version` asks `/v1.53/version`, which an older
/// engine refuses outright ("client version 1.53 is too new"); and any fixed
/// low version is refused by engines that raised their minimum. So the
/// version is asked unversioned, which every engine answers.
async fn connect_host(host: &str) -> Result<Docker> {
    let connect = |version: &ClientVersion, timeout: Duration| -> Result<Docker> {
        let secs = timeout.as_secs();
        let docker = if host.starts_with("unix://") {
            Docker::connect_with_unix(host, secs, version)
        } else if host.starts_with("tcp://") || host.starts_with("http://") {
            Docker::connect_with_http(host, secs, version)
        } else {
            return Err(unavailable(format!(
                "unsupported DOCKER_HOST {host:?}: only unix://, tcp:// and http:// are supported"
            )));
        };
        docker.map_err(|e| docker_error(e, None))
    };

    let probe = connect(API_DEFAULT_VERSION, CONNECT_TIMEOUT)?.with_request_modifier(|mut req| {
        let prefix = format!(
            "/v{}.{}/",
            API_DEFAULT_VERSION.major_version, API_DEFAULT_VERSION.minor_version
        );
        let unversioned = req.uri().to_string().replacen(&prefix, "/", 1);
        if let Ok(uri) = unversioned.parse() {
            *req.uri_mut() = uri;
        }
        req
    });
    let version = match tokio::time::timeout(CONNECT_TIMEOUT, probe.version()).await {
        Ok(v) => v.map_err(|e| docker_error(e, None))?,
        Err(_) => return Err(unreachable_in(CONNECT_TIMEOUT)),
    };
    let server = version
        .api_version
        .as_deref()
        .and_then(parse_api_version)
        .ok_or_else(|| {
            unavailable(format!(
                "the engine reported no usable API version ({:?})",
                version.api_version
            ))
        })?;
    // Never above what bollard's models were written for.
    let chosen = if server < *API_DEFAULT_VERSION {
        server
    } else {
        *API_DEFAULT_VERSION
    };
    connect(&chosen, REQUEST_TIMEOUT)
}

pub(super) fn parse_api_version(s: &str) -> Option<ClientVersion> {
    let (major, minor) = s.split_once('.')?;
    Some(ClientVersion {
        major_version: major.parse().ok()?,
        minor_version: minor.parse().ok()?,
    })
}

// Errors

pub(super) fn unavailable(reason: impl Into<String>) -> Error {
    Error::RuntimeUnavailable {
        runtime: RUNTIME.to_owned(),
        reason: reason.into(),
    }
}

fn unreachable_in(timeout: Duration) -> Error {
    unavailable(format!(
        "the engine did not answer within {}s",
        timeout.as_secs()
    ))
}

fn unavailable_reason(e: Error) -> String {
    match e {
        Error::RuntimeUnavailable { reason, .. } => reason,
        other => other.to_string(),
    }
}

/// An error with its causes, because a transport error's own text is often
/// just "client error (Connect)" while the cause says what went wrong.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let s = cause.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        source = cause.source();
    }
    text
}

/// The one place bollard errors become crate errors. `image` is the image
/// the request was about, if any: a 404 then means the image is missing.
pub(super) fn docker_error(err: DockerError, image: Option<&str>) -> Error {
    let err = match (err, image) {
        (
            DockerError::DockerResponseServerError {
                status_code: 404,
                message,
            },
            Some(image),
        ) => {
            return Error::ImageNotFound {
                image: image.to_owned(),
                reason: message,
            }
        }
        (err, _) => err,
    };
    match err {
        DockerError::DockerResponseServerError { message, .. } => {
            Error::Runtime(format!("docker: {message}"))
        }
        DockerError::DockerStreamError { error } => Error::Runtime(format!("docker: {error}")),
        DockerError::SocketNotFoundError(path) => unavailable(format!(
            "socket {path} does not exist (is dockerd running?)"
        )),
        DockerError::RequestTimeoutError => unavailable("the engine did not answer in time"),
        e @ (DockerError::HyperLegacyError { .. }
        | DockerError::HyperResponseError { .. }
        | DockerError::IOError { .. }
        | DockerError::UnsupportedURISchemeError { .. }
        | DockerError::URLParseError { .. }
        | DockerError::InvalidURIError { .. }) => {
            unavailable(format!("cannot reach the engine: {}", error_chain(&e)))
        }
        e => Error::Runtime(format!("docker: {}", error_chain(&e))),
    }
}

pub(super) fn status_of(err: &DockerError) -> Option<u16> {
    match err {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions_parse() {
        let v = parse_api_version("1.41").unwrap();
        assert_eq!((v.major_version, v.minor_version), (1, 41));
        assert!(parse_api_version("1").is_none());
        assert!(parse_api_version("x.y").is_none());
    }
}
