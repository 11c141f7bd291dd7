//! The one HTTP client both VMM API clients use: JSON over a Unix socket
//! (hyper 1 through hyperlocal), with a deadline on every request and a bound
//! on every response body.
//!
//! Firecracker and Cloud Hypervisor each serve a small REST API on a Unix
//! socket. Everything about talking to them that is not specific to one of
//! them lives here: connecting, deadlines, telling "no socket" from "nobody
//! listening", and turning an error response into a message a person can
//! read (Firecracker's `{"fault_message": ...}`, Cloud Hypervisor's JSON
//! array of strings, or plain text).

use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{ACCEPT, CONTENT_TYPE};
use hyper::http::uri::PathAndQuery;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use hyperlocal::UnixConnector;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// How long a request may take from connect to the last byte of the body,
/// unless the client says otherwise. VMM API calls answer in milliseconds;
/// the slowest ones (a snapshot of a large guest) take seconds.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response body accepted. The biggest answers (`vm.info`,
/// `/vm/config`) are a few KiB; anything near this is not a VMM talking.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;
/// Longest error message kept from a response body.
const MAX_MESSAGE: usize = 2048;

pub type Result<T, E = HttpError> = std::result::Result<T, E>;

/// Why a request to a VMM API failed. Every variant names the socket or the
/// request, so the message alone says what was being attempted.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Nothing exists at the socket path: the VMM is not running, or has not
    /// created its socket yet.
    #[error("API socket {path} does not exist")]
    SocketMissing {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The socket file exists but nobody accepts on it: the VMM that made it
    /// has gone.
    #[error("nothing is listening on API socket {path}")]
    Refused {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} got no complete answer within {after:?}")]
    Timeout { what: String, after: Duration },
    /// The VMM answered with a status outside 2xx. `message` is the VMM's own
    /// explanation, taken from the body.
    #[error("{method} {path}: {status}: {message}")]
    Status {
        method: Method,
        path: String,
        status: StatusCode,
        message: String,
    },
    /// A success response whose body is not what the API defines.
    #[error("{what}: unexpected response body {body:?}")]
    Decode {
        what: String,
        body: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what}: request body cannot be encoded")]
    Encode {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what}: response body exceeds {limit} bytes")]
    BodyTooLarge { what: String, limit: usize },
    #[error("{path:?} is not a valid request path")]
    InvalidPath { path: String },
    /// Any other I/O failure on the socket.
    #[error("{what} on API socket {socket}")]
    Io {
        what: String,
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The connection broke in a way that is not an I/O error of ours (the
    /// peer closed it mid-answer, or sent something that is not HTTP).
    #[error("{what} on API socket {socket}: connection failed")]
    Transport {
        what: String,
        socket: PathBuf,
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
}

impl HttpError {
    /// The HTTP status, when the VMM answered with an error status.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            HttpError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The VMM's own error text, when it answered with an error status.
    pub fn vmm_message(&self) -> Option<&str> {
        match self {
            HttpError::Status { message, .. } => Some(message),
            _ => None,
        }
    }

    /// True when the VMM could not be reached at all (no socket, nobody
    /// listening): the process is gone or not yet up.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            HttpError::SocketMissing { .. } | HttpError::Refused { .. }
        )
    }
}

/// A successful (2xx) answer.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    pub status: StatusCode,
    pub body: Bytes,
    /// `METHOD /path` of the request, for error messages.
    what: String,
}

impl ApiResponse {
    /// The body as JSON of type `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|source| HttpError::Decode {
            what: self.what.clone(),
            body: truncate(&String::from_utf8_lossy(&self.body), MAX_MESSAGE),
            source,
        })
    }

    /// The body as JSON of type `T`, or `None` for an empty body (a 204).
    pub fn json_opt<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            Ok(None)
        } else {
            self.json().map(Some)
        }
    }
}

/// An HTTP client bound to one Unix socket. Cheap to clone.
///
/// Connections are not pooled: a VMM's socket may be replaced by a new
/// process at the same path, and a connection kept from the old one would
/// fail the next request. A connect on a Unix socket costs microseconds.
#[derive(Clone)]
pub struct UnixHttp {
    socket: PathBuf,
    client: Client<UnixConnector, Full<Bytes>>,
    timeout: Duration,
    max_body: usize,
}

impl std::fmt::Debug for UnixHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnixHttp")
            .field("socket", &self.socket)
            .field("timeout", &self.timeout)
            .field("max_body", &self.max_body)
            .finish()
    }
}

impl UnixHttp {
    /// A client for the API socket at `socket`. Nothing is contacted yet.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(UnixConnector);
        UnixHttp {
            socket: socket.into(),
            client,
            timeout: DEFAULT_TIMEOUT,
            max_body: DEFAULT_MAX_BODY,
        }
    }

    /// The deadline for each request (connect, headers and body).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The largest response body accepted.
    pub fn with_max_body(mut self, max_body: usize) -> Self {
        self.max_body = max_body;
        self
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends one request, with `body` as JSON if given. A 2xx answer is
    /// returned; any other status becomes [`HttpError::Status`] carrying the
    /// VMM's explanation.
    pub async fn request<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<ApiResponse> {
        let what = format!("{method} {path}");
        let body = match body {
            Some(b) => Some(serde_json::to_vec(b).map_err(|source| HttpError::Encode {
                what: what.clone(),
                source,
            })?),
            None => None,
        };
        let (status, bytes) = self.send(&method, path, body, &what).await?;
        if status.is_success() {
            Ok(ApiResponse {
                status,
                body: bytes,
                what,
            })
        } else {
            Err(HttpError::Status {
                method,
                path: path.to_owned(),
                status,
                message: error_message(status, &bytes),
            })
        }
    }

    /// GET `path` and decode the answer as JSON.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.request::<()>(Method::GET, path, None).await?.json()
    }

    /// PUT `body` as JSON to `path`.
    pub async fn put_json<B: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<ApiResponse> {
        self.request(Method::PUT, path, Some(body)).await
    }

    /// PUT with no body (an action such as Cloud Hypervisor's `vm.boot`).
    pub async fn put_empty(&self, path: &str) -> Result<ApiResponse> {
        self.request::<()>(Method::PUT, path, None).await
    }

    /// PATCH `body` as JSON to `path`.
    pub async fn patch_json<B: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<ApiResponse> {
        self.request(Method::PATCH, path, Some(body)).await
    }

    /// The exchange itself, under the deadline.
    async fn send(
        &self,
        method: &Method,
        path: &str,
        body: Option<Vec<u8>>,
        what: &str,
    ) -> Result<(StatusCode, Bytes)> {
        // hyperlocal's Uri::new panics on a malformed path; check it first so
        // a path built from user input fails cleanly instead.
        if !path.starts_with('/') || path.parse::<PathAndQuery>().is_err() {
            return Err(HttpError::InvalidPath {
                path: path.to_owned(),
            });
        }
        let uri: hyper::Uri = hyperlocal::Uri::new(&self.socket, path).into();
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(uri)
            .header(ACCEPT, "application/json");
        if body.is_some() {
            builder = builder.header(CONTENT_TYPE, "application/json");
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| HttpError::Transport {
                what: what.to_owned(),
                socket: self.socket.clone(),
                source: Box::new(e),
            })?;

        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| self.connection_error(what, e))?;
            let status = response.status();
            let bytes = Limited::new(response.into_body(), self.max_body)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        HttpError::BodyTooLarge {
                            what: what.to_owned(),
                            limit: self.max_body,
                        }
                    } else {
                        self.connection_error(what, e)
                    }
                })?
                .to_bytes();
            Ok((status, bytes))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| HttpError::Timeout {
                what: format!("{what} on {}", self.socket.display()),
                after: self.timeout,
            })?
    }

    /// Classifies a failed exchange: connect errors by their errno, the rest
    /// as I/O or transport failures. The original error stays the source.
    fn connection_error(
        &self,
        what: &str,
        err: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> HttpError {
        let err: Box<dyn StdError + Send + Sync> = err.into();
        let errno = find_io_error(err.as_ref()).map(|io| (io.kind(), io.raw_os_error()));
        match errno {
            Some((std::io::ErrorKind::NotFound, code)) => HttpError::SocketMissing {
                path: self.socket.clone(),
                source: rebuild_io(code, std::io::ErrorKind::NotFound),
            },
            Some((std::io::ErrorKind::ConnectionRefused, code)) => HttpError::Refused {
                path: self.socket.clone(),
                source: rebuild_io(code, std::io::ErrorKind::ConnectionRefused),
            },
            // Another errno (EACCES on the socket, ECONNRESET...).
            Some((kind, Some(code))) => HttpError::Io {
                what: what.to_owned(),
                socket: self.socket.clone(),
                source: rebuild_io(Some(code), kind),
            },
            _ => HttpError::Transport {
                what: what.to_owned(),
                socket: self.socket.clone(),
                source: err,
            },
        }
    }
}

/// The first `std::io::Error` in an error's source chain.
fn find_io_error<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a std::io::Error> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        current = e.source();
    }
    None
}

/// An owned copy of an I/O error found deep in hyper's chain (which we can
/// only borrow), keeping its errno.
fn rebuild_io(code: Option<i32>, kind: std::io::ErrorKind) -> std::io::Error {
    match code {
        Some(code) => std::io::Error::from_raw_os_error(code),
        None => std::io::Error::from(kind),
    }
}

/// The VMM's explanation of an error status, from the response body.
///
/// Firecracker sends `{"fault_message": "..."}`; Cloud Hypervisor a JSON
/// array of strings, outermost context first, often opening with "Error from
/// API" and sometimes ending in a Rust backtrace. Anything else is taken as
/// text. An empty body gives the status's reason phrase.
pub fn error_message(status: StatusCode, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return status
            .canonical_reason()
            .unwrap_or("no explanation given")
            .to_owned();
    }
    let message = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(map)) => ["fault_message", "message", "error"]
            .iter()
            .find_map(|k| map.get(*k).and_then(|v| v.as_str()).map(str::to_owned))
            .unwrap_or_else(|| text.to_owned()),
        Ok(serde_json::Value::Array(parts)) => {
            let parts: Vec<String> = parts
                .iter()
                .filter_map(|p| p.as_str())
                // Only the first line of each part: later lines are a
                // backtrace, which says nothing to the reader of an error.
                .filter_map(|p| p.lines().next())
                .map(str::trim)
                .filter(|p| !p.is_empty() && *p != "Error from API")
                .map(str::to_owned)
                .collect();
            if parts.is_empty() {
                text.to_owned()
            } else {
                parts.join(": ")
            }
        }
        Ok(serde_json::Value::String(s)) => s,
        _ => text.to_owned(),
    };
    truncate(&message, MAX_MESSAGE)
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Percent-encodes one path segment (an id supplied by a user), so that it
/// can never change the shape of the request path.
pub fn path_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        // Dots too: a segment of "." or ".." must not read as a directory step.
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firecracker_fault_message_is_extracted() {
        let body = br#"{"fault_message":"Machine config error: bad vcpus"}"#;
        assert_eq!(
            error_message(StatusCode::BAD_REQUEST, body),
            "Machine config error: bad vcpus"
        );
    }

    #[test]
    fn cloud_hypervisor_array_is_joined_without_backtrace() {
        let body = br#"["Error from API","The VM could not be snapshotted","Could not get vCPU state GetNestedState(Invalid argument (os error 22)\n\nStack backtrace:\n 0: <unknown>"]"#;
        assert_eq!(
            error_message(StatusCode::INTERNAL_SERVER_ERROR, body),
            "The VM could not be snapshotted: Could not get vCPU state GetNestedState(Invalid argument (os error 22)"
        );
    }

    #[test]
    fn plain_text_and_empty_bodies() {
        assert_eq!(
            error_message(StatusCode::NOT_FOUND, b" no such thing \n"),
            "no such thing"
        );
        assert_eq!(error_message(StatusCode::NOT_FOUND, b""), "Not Found");
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let body = "é".repeat(MAX_MESSAGE);
        let msg = error_message(StatusCode::BAD_REQUEST, body.as_bytes());
        assert!(msg.len() <= MAX_MESSAGE + '…'.len_utf8());
        assert!(msg.ends_with('…'));
    }

    #[tokio::test]
    async fn hostile_paths_fail_without_panicking() {
        let http = UnixHttp::new("/nonexistent/hyperfleet-test.sock");
        for path in [
            "/a#b", "/%zz", "/a?b c", "/\u{e9}", "//x", "/a\nb", "?x", "/a\\b",
        ] {
            let err = http
                .request::<()>(Method::GET, path, None)
                .await
                .unwrap_err();
            assert!(
                matches!(
                    err,
                    HttpError::InvalidPath { .. } | HttpError::SocketMissing { .. }
                ),
                "{path:?}: {err}"
            );
        }
    }

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(path_segment("rootfs_1"), "rootfs_1");
        assert_eq!(path_segment("a b/../c"), "a%20b%2F%2E%2E%2Fc");
    }
}
