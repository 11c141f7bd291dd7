//! REST over real HTTP: a daemon serving it, and curl as the client (run
//! directly, not through a shell, so bodies need no quoting).

use std::process::{Command, Stdio};

use super::Daemon;

/// A daemon serving REST on a loopback port the kernel picks.
pub fn rest_daemon() -> (Daemon, String) {
    rest_daemon_with_env(&[])
}

pub fn rest_daemon_with_env(envs: &[(&str, &str)]) -> (Daemon, String) {
    let mut envs = envs.to_vec();
    if !envs.iter().any(|(k, _)| *k == "HYPERFLEET_LISTEN") {
        envs.push(("HYPERFLEET_LISTEN", "127.0.0.1:0"));
    }
    let d = Daemon::start_with_env(&envs);
    let api = format!("http://{}", rest_addr(&d));
    (d, api)
}

/// The first address the daemon wrote to `rest.addr`.
pub fn rest_addr(d: &Daemon) -> String {
    let text = std::fs::read_to_string(d.state.join("rest.addr")).expect("rest.addr");
    text.lines().next().expect("an address").to_owned()
}

/// One HTTP exchange as a client sees it.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    /// Header lines, lower-cased names.
    pub headers: Vec<(String, String)>,
    pub text: String,
    /// The body parsed as JSON, or Null when it is not JSON.
    pub json: serde_json::Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body of an error reply: asserts its shape, returns the code.
    pub fn error_code(&self) -> String {
        let code = self.json["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {} {}", self.status, self.text));
        assert!(
            self.json["message"].as_str().is_some_and(|m| !m.is_empty()),
            "no message in {}",
            self.text
        );
        assert_eq!(
            self.json.as_object().map(|o| o.len()),
            Some(2),
            "an error body has exactly error and message: {}",
            self.text
        );
        assert_eq!(self.header("content-type"), Some("application/json"));
        code.to_owned()
    }
}

/// A client of one base URL (`http://127.0.0.1:PORT`, or with a Unix
/// socket, `http://localhost` plus `unix`), with an optional key.
#[derive(Debug, Clone)]
pub struct Client {
    pub base: String,
    pub key: Option<String>,
    pub unix: Option<std::path::PathBuf>,
    /// Extra curl arguments (`--interface 127.0.0.2`).
    pub extra: Vec<String>,
}

impl Client {
    pub fn new(base: &str) -> Client {
        Client {
            base: base.to_owned(),
            key: None,
            unix: None,
            extra: Vec::new(),
        }
    }

    pub fn with_key(&self, key: &str) -> Client {
        Client {
            key: Some(key.to_owned()),
            ..self.clone()
        }
    }

    pub fn get(&self, path: &str) -> Resp {
        self.send("GET", path, None)
    }

    pub fn post(&self, path: &str, body: &str) -> Resp {
        self.send("POST", path, Some(body.as_bytes()))
    }

    pub fn post_empty(&self, path: &str) -> Resp {
        self.send("POST", path, None)
    }

    pub fn put(&self, path: &str, body: &str) -> Resp {
        self.send("PUT", path, Some(body.as_bytes()))
    }

    pub fn delete(&self, path: &str) -> Resp {
        self.send("DELETE", path, None)
    }

    pub fn send(&self, method: &str, path: &str, body: Option<&[u8]>) -> Resp {
        let mut args: Vec<String> = vec!["-X".into(), method.into()];
        if let Some(k) = &self.key {
            args.push("-H".into());
            args.push(format!("Authorization: Bearer {k}"));
        }
        if body.is_some() {
            args.extend([
                "-H".into(),
                "Content-Type: application/json".into(),
                "--data-binary".into(),
                "@-".into(),
            ]);
        }
        args.push(format!("{}{path}", self.base));
        curl(&self.with_transport(args), body.unwrap_or_default())
    }

    fn with_transport(&self, mut args: Vec<String>) -> Vec<String> {
        let mut out = self.extra.clone();
        if let Some(sock) = &self.unix {
            out.push("--unix-socket".into());
            out.push(sock.display().to_string());
        }
        out.append(&mut args);
        out
    }
}

/// Runs curl with `args` (and `stdin` as the body when it reads `@-`).
pub fn curl(args: &[String], stdin: &[u8]) -> Resp {
    let dir = tempfile::tempdir().expect("tempdir");
    let body = dir.path().join("body");
    let headers = dir.path().join("headers");
    let mut child = Command::new("curl")
        .args(["-s", "-S", "--max-time", "120", "-o"])
        .arg(&body)
        .arg("-D")
        .arg(&headers)
        .args(["-w", "%{http_code}"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run curl");
    {
        use std::io::Write;
        let mut input = child.stdin.take().expect("stdin");
        let _ = input.write_all(stdin);
    }
    let out = child.wait_with_output().expect("curl");
    let code = String::from_utf8_lossy(&out.stdout);
    let status: u16 = code.trim().parse().unwrap_or(0);
    assert!(
        status != 0,
        "curl {args:?} got no reply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&body).unwrap_or_default();
    let headers = std::fs::read_to_string(&headers)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    Resp {
        status,
        headers,
        text,
        json,
    }
}

/// `hyperfleet apikey ...` against a state directory: (exit ok, stdout, stderr).
pub fn apikey(state: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(super::BIN)
        .arg("apikey")
        .args(args)
        .env("HYPERFLEET_STATE_DIR", state)
        .output()
        .expect("run hyperfleet apikey");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Makes a key; returns it (the first and only line of stdout).
pub fn make_key(state: &std::path::Path, name: &str, scopes: &[&str]) -> String {
    let mut args = vec!["create", name];
    for s in scopes {
        args.extend(["--scope", s]);
    }
    let (ok, stdout, stderr) = apikey(state, &args);
    assert!(ok, "apikey create failed: {stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "stdout must be the key alone: {stdout:?}");
    assert!(lines[0].starts_with("hf_"), "{stdout:?}");
    lines[0].to_owned()
}

/// A streamed reply read as it comes: a GET sent over its own TCP
/// connection; its status and headers as soon as they arrive (for
/// `/events`, the reader is subscribed by then), then its body line by
/// line, chunked transfer decoded. Dropping it hangs up.
pub struct Streamed {
    pub status: u16,
    /// Lower-cased names.
    pub headers: Vec<(String, String)>,
    reader: std::io::BufReader<std::net::TcpStream>,
    /// The body as framed: chunked, or this many bytes.
    framing: Framing,
    /// Body bytes decoded but not yet returned as lines.
    pending: Vec<u8>,
}

enum Framing {
    Chunked,
    Length(usize),
    Ended,
}

impl Streamed {
    /// `GET path` at `addr` (`127.0.0.1:PORT`) with extra header lines.
    pub fn get(addr: &str, path: &str, headers: &[&str]) -> Streamed {
        let s = std::net::TcpStream::connect(addr).expect("connect");
        Self::get_over(s, addr, path, headers)
    }

    /// The same over a connection already made.
    pub fn get_over(
        mut s: std::net::TcpStream,
        addr: &str,
        path: &str,
        headers: &[&str],
    ) -> Streamed {
        use std::io::{BufRead, Write};
        // A stream that stops coming fails the test rather than hanging it.
        s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
            .unwrap();
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
        for h in headers {
            req.push_str(h);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).expect("send the request");
        let mut reader = std::io::BufReader::new(s);
        let mut line = String::new();
        reader.read_line(&mut line).expect("status line");
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no status in {line:?}"));
        let mut headers = Vec::new();
        loop {
            line.clear();
            reader.read_line(&mut line).expect("a header");
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((n, v)) = l.split_once(':') {
                headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v);
        let framing = if header("transfer-encoding").is_some_and(|v| v == "chunked") {
            Framing::Chunked
        } else {
            Framing::Length(
                header("content-length")
                    .and_then(|v| v.parse().ok())
                    .expect("a reply that is neither chunked nor of a known length"),
            )
        };
        Streamed {
            status,
            headers,
            reader,
            framing,
            pending: Vec::new(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The next line of the body, without its '\n'; `None` once the body
    /// has ended (a last line without '\n' is returned first).
    pub fn line(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.pending.iter().position(|b| *b == b'\n') {
                let rest = self.pending.split_off(i + 1);
                let mut line = std::mem::replace(&mut self.pending, rest);
                line.pop();
                return Some(String::from_utf8(line).expect("UTF-8"));
            }
            if !self.fill() {
                if self.pending.is_empty() {
                    return None;
                }
                let line = std::mem::take(&mut self.pending);
                return Some(String::from_utf8(line).expect("UTF-8"));
            }
        }
    }

    /// The rest of the body, to its end.
    pub fn rest(&mut self) -> String {
        while self.fill() {}
        String::from_utf8(std::mem::take(&mut self.pending)).expect("UTF-8")
    }

    /// Reads the next piece of the body into `pending`; false at its end.
    fn fill(&mut self) -> bool {
        use std::io::{BufRead, Read};
        let take = |reader: &mut std::io::BufReader<_>, n: usize, into: &mut Vec<u8>| {
            let start = into.len();
            into.resize(start + n, 0);
            reader
                .read_exact(&mut into[start..])
                .unwrap_or_else(|e| panic!("the body stopped coming: {e}"));
        };
        match self.framing {
            Framing::Ended => false,
            Framing::Length(n) => {
                take(&mut self.reader, n, &mut self.pending);
                self.framing = Framing::Ended;
                true
            }
            Framing::Chunked => {
                let mut size = String::new();
                self.reader
                    .read_line(&mut size)
                    .unwrap_or_else(|e| panic!("the stream stopped coming: {e}"));
                let hex = size.trim().split(';').next().unwrap_or_default();
                let n = usize::from_str_radix(hex, 16)
                    .unwrap_or_else(|_| panic!("bad chunk size {size:?}"));
                if n == 0 {
                    // Trailers (none are sent), then the blank line.
                    let mut l = String::new();
                    while self.reader.read_line(&mut l).is_ok_and(|r| r > 2) {
                        l.clear();
                    }
                    self.framing = Framing::Ended;
                    return false;
                }
                take(&mut self.reader, n, &mut self.pending);
                let mut crlf = [0u8; 2];
                self.reader.read_exact(&mut crlf).expect("chunk end");
                true
            }
        }
    }
}
