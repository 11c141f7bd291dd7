//! HTTP plumbing shared by the routes: replies, the error body
//! `{"error": code, "message": text}`, request bodies with their size and
//! time limits, and query strings.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde::Serialize;

use super::machine::ErrorJson;
use crate::error::Error;

pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// A failed request: the status, a stable code and the whole cause chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub headers: Vec<(HeaderName, String)>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Problem {
        Problem {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: HeaderName, value: impl Into<String>) -> Problem {
        self.headers.push((name, value.into()));
        self
    }

    pub fn into_response(self) -> Response<Body> {
        let mut resp = json(
            self.status,
            &ErrorJson {
                error: self.code,
                message: &self.message,
            },
        );
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                resp.headers_mut().insert(name, v);
            }
        }
        resp
    }
}

/// A core error keeps its one status and code; the message is the whole
/// chain of causes, as the machine's `error` file has it.
impl From<Error> for Problem {
    fn from(e: Error) -> Problem {
        Problem::new(
            StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            e.code(),
            e.report().to_string(),
        )
    }
}

pub type Reply = Result<Response<Body>, Problem>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

pub fn with_type(status: StatusCode, content_type: &'static str, body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// A 200 whose body is `chunks`, each written (chunked) and flushed as it
/// comes. The server polls the stream only as fast as the client reads,
/// and drops it, with whatever it holds, when the client goes or the
/// stream ends: nothing of a streamed reply outlives its connection.
pub fn streamed<S>(content_type: &'static str, chunks: S) -> Response<Body>
where
    S: Stream<Item = Bytes> + Send + 'static,
{
    let frames = chunks.map(|b| Ok::<_, Infallible>(Frame::data(b)));
    let mut resp = with_type(
        StatusCode::OK,
        content_type,
        StreamBody::new(frames).boxed_unsync(),
    );
    // Nothing in between may keep it back or answer from a cache.
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

pub fn json<T: Serialize + ?Sized>(status: StatusCode, v: &T) -> Response<Body> {
    match serde_json::to_vec(v) {
        Ok(bytes) => json_bytes(status, bytes),
        Err(e) => Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            format!("rendering the reply: {e}"),
        )
        .into_response(),
    }
}

pub fn json_bytes(status: StatusCode, bytes: Vec<u8>) -> Response<Body> {
    with_type(status, "application/json", full(bytes))
}

pub fn empty(status: StatusCode) -> Response<Body> {
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = status;
    resp
}

/// Reads a whole request body: at most `limit` bytes (413 past it, at once
/// when the client announced a larger Content-Length), within `timeout`
/// (408 for a client that sends too slowly).
pub async fn read_body(body: Incoming, limit: usize, timeout: Duration) -> Result<Bytes, Problem> {
    match tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await {
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(Error::TooLarge { limit }.into())
        }
        Ok(Err(e)) => Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("reading the request body: {e}"),
        )),
        Err(_) => Err(Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request body did not arrive within {}s",
                timeout.as_secs_f64()
            ),
        )),
    }
}

/// The pairs of a query string, decoded, in order (duplicates kept, so the
/// caller can refuse them).
pub fn query_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .map(|(k, v)| (percent_decode(k), percent_decode(v)))
        .collect()
}

pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push((hi * 16 + lo) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Text safe to put in HTML.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_decode_and_never_panic() {
        let q = query_pairs("status=running&tail=10&x=%41%zz%&y=a+b&%E2%82%AC=1&&=v&f&z=%4");
        let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("status"), Some("running"));
        assert_eq!(get("x"), Some("A%zz%"));
        assert_eq!(get("y"), Some("a b"));
        assert_eq!(get("\u{20ac}"), Some("1"));
        assert_eq!(get("f"), Some(""));
        assert_eq!(get("z"), Some("%4"));
        assert_eq!(get(""), Some("v"));
    }

    #[test]
    fn errors_keep_their_status_code_and_whole_cause() {
        let p = Problem::from(
            Error::NotFound("web".into())
                .context("find")
                .context("start"),
        );
        assert_eq!(p.status, StatusCode::NOT_FOUND);
        assert_eq!(p.code, "not_found");
        assert_eq!(p.message, "start: find: no machine named \"web\"");
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            html_escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
