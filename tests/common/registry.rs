//! A stand-in for an image registry on loopback, for the pull failures a
//! real registry cannot be made to produce here (this host reaches none):
//! an image that does not exist, one that wants credentials, a registry
//! that accepts connections and never answers. The engine treats
//! 127.0.0.0/8 registries as insecure, so plain HTTP is spoken.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Answers the API check, then 404 MANIFEST_UNKNOWN.
    NotFound,
    /// Answers the API check, then 401 UNAUTHORIZED.
    Unauthorized,
    /// Accepts connections and never says a word.
    Hang,
}

pub struct Registry {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Registry {
    pub fn start(behaviour: Behaviour) -> Registry {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind registry");
        let port = listener.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                std::thread::spawn(move || serve(conn, behaviour));
            }
        });
        Registry { port, stop }
    }

    /// A registry address where nothing listens (connection refused).
    pub fn closed() -> Registry {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        Registry {
            port,
            stop: Arc::new(AtomicBool::new(true)),
        }
    }

    pub fn image(&self, name: &str) -> String {
        format!("127.0.0.1:{}/{name}:latest", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(conn: TcpStream, behaviour: Behaviour) {
    if behaviour == Behaviour::Hang {
        // Hold the connection open, silently, until the client gives up.
        let mut r = BufReader::new(conn);
        let mut sink = Vec::new();
        let _ = std::io::copy(&mut r, &mut sink);
        return;
    }
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
            return;
        };
        // Not HTTP (a TLS hello): close, and the engine falls back to HTTP.
        if !matches!(method, "GET" | "HEAD") {
            return;
        }
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header == "\r\n" || header == "\n" {
                break;
            }
        }
        let (status, extra, body) = if path == "/v2/" || path == "/v2" {
            ("200 OK", "", "{}".to_owned())
        } else if behaviour == Behaviour::Unauthorized {
            (
                "401 Unauthorized",
                "WWW-Authenticate: Basic realm=\"hyperfleet-test\"\r\n",
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#
                    .to_owned(),
            )
        } else {
            (
                "404 Not Found",
                "",
                r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#
                    .to_owned(),
            )
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n\
             Docker-Distribution-Api-Version: registry/2.0\r\n{extra}\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        let payload = if method == "HEAD" {
            String::new()
        } else {
            body
        };
        if writer
            .write_all(format!("{head}{payload}").as_bytes())
            .is_err()
        {
            return;
        }
    }
}
