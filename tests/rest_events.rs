//! `GET /events` and `GET /machines/{id}/events` over real HTTP: readers
//! hear each change in order from the moment they ask, filtered by machine
//! and type, as lines of JSON or Server-Sent Events; one that does not read
//! is told what it lost; one that hangs up leaves nothing behind. Machines
//! are Firecracker machines on the fake engine: their lives take
//! milliseconds and need no Docker.
mod common;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::rest::{make_key, rest_daemon_with_env, Client, Streamed};
use common::Daemon;

/// A daemon serving REST whose Firecracker machines run on a fake engine.
struct Fleet {
    d: Daemon,
    c: Client,
    /// `127.0.0.1:PORT`
    addr: String,
    kernel: std::path::PathBuf,
    _engine: tempfile::TempDir,
}

fn fleet(extra: &[(&str, &str)]) -> Fleet {
    let engine = tempfile::tempdir().unwrap();
    let kernel = engine.path().join("vmlinux");
    std::fs::write(&kernel, b"kernel").unwrap();
    let fake = format!("firecracker:{}", engine.path().display());
    let mut envs = vec![("HYPERFLEET_FAKE_RUNTIME", fake.as_str())];
    envs.extend_from_slice(extra);
    let (d, api) = rest_daemon_with_env(&envs);
    Fleet {
        d,
        c: Client::new(&api),
        addr: api.trim_start_matches("http://").to_owned(),
        kernel,
        _engine: engine,
    }
}

impl Fleet {
    /// Creates machine `name` over REST; returns its id.
    fn create(&self, name: &str) -> String {
        let body = json!({"name": name, "runtime_type": "firecracker",
                          "kernel_image_path": self.kernel});
        let r = self.c.post("/machines", &body.to_string());
        assert_eq!(r.status, 201, "{}", r.text);
        r.json["id"].as_str().expect("an id").to_owned()
    }

    fn post(&self, path: &str) {
        let r = self.c.post_empty(path);
        assert_eq!(r.status, 200, "POST {path}: {}", r.text);
    }

    fn delete(&self, name: &str) {
        let r = self.c.delete(&format!("/machines/{name}"));
        assert_eq!(r.status, 204, "DELETE {name}: {}", r.text);
    }

    fn events(&self, path: &str) -> Streamed {
        let s = Streamed::get(&self.addr, path, &[]);
        assert_eq!(s.status, 200, "GET {path}");
        s
    }
}

/// The next event of a stream of lines; `None` once it has ended.
fn next(s: &mut Streamed) -> Option<Value> {
    let line = s.line()?;
    Some(serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {e}: {line:?}")))
}

/// Events until (and with) the first that `last` accepts.
fn until(s: &mut Streamed, last: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let e = next(s).unwrap_or_else(|| panic!("the stream ended after {out:#?}"));
        let done = last(&e);
        out.push(e);
        if done {
            return out;
        }
    }
}

fn is(e: &Value, kind: &str, machine: &str) -> bool {
    e["type"] == kind && e["machine"] == machine
}

/// An event in a few words: `status pending->starting`.
fn brief(e: &Value) -> String {
    let s = |k: &str| e[k].as_str().unwrap_or("?").to_owned();
    match e["type"].as_str() {
        Some("status") => format!("status {}->{}", s("from"), s("to")),
        Some("config") => format!("config {}->{}", s("runtime_from"), s("runtime")),
        Some("exec") => format!("exec {}", e["exit_code"]),
        Some("deleted") => format!("deleted {} {}", s("status"), s("runtime")),
        Some(other) => other.to_owned(),
        None => panic!("an event without a type: {e}"),
    }
}

fn briefs<'a>(events: impl IntoIterator<Item = &'a Value>) -> Vec<String> {
    events.into_iter().map(brief).collect()
}

#[test]
fn every_reader_hears_each_change_in_order() {
    let f = fleet(&[]);
    let mut a = f.events("/events");
    let mut b = f.events("/api/v1/events");
    assert_eq!(a.header("content-type"), Some("application/x-ndjson"));
    assert_eq!(a.header("transfer-encoding"), Some("chunked"));
    assert_eq!(a.header("cache-control"), Some("no-cache"));

    let id = f.create("web");
    let config = json!({"runtime_type": "firecracker", "kernel_image_path": f.kernel,
                        "vcpu_count": 2});
    let r = f.c.put("/machines/web/config", &config.to_string());
    assert_eq!(r.status, 200, "{}", r.text);
    f.post("/machines/web/start");
    let r = f.c.post("/machines/web/exec", r#"{"cmd":["exit","3"]}"#);
    assert_eq!(r.json["exit_code"], 3, "{}", r.text);
    f.post("/machines/web/stop");
    f.delete("web");

    let got = until(&mut a, |e| is(e, "deleted", "web"));
    // Only the runtimes' health may come between; nothing else happened.
    let web: Vec<&Value> = got.iter().filter(|e| e["type"] != "runtime").collect();
    assert_eq!(
        briefs(web.iter().copied()),
        [
            "created",
            "config firecracker->firecracker",
            "status pending->starting",
            "status starting->running",
            "exec 3",
            "status running->stopping",
            "status stopping->stopped",
            "deleted stopped firecracker",
        ],
        "{got:#?}"
    );
    for e in &web {
        assert_eq!(e["machine"], "web", "{e}");
        assert_eq!(e["id"], id.as_str(), "{e}");
        let time = e["time"].as_str().expect("a time");
        assert!(time.len() == 24 && time.ends_with('Z'), "{e}");
    }
    let times: Vec<&str> = web.iter().map(|e| e["time"].as_str().unwrap()).collect();
    assert!(times.is_sorted(), "{times:?}");
    // The other reader heard exactly the same, to the millisecond.
    assert_eq!(until(&mut b, |e| is(e, "deleted", "web")), got);
}

#[test]
fn filters_pick_one_machine_and_some_types() {
    let f = fleet(&[]);
    let id = f.create("web");
    f.create("other");
    let mut statuses = f.events("/events?machine=web&type=status");
    let mut by_id = f.events(&format!("/events?machine={id}"));
    let mut by_path = f.events("/machines/web/events?type=status,deleted");
    let mut lives = f.events("/events?type=created,deleted");

    f.post("/machines/other/start");
    f.post("/machines/web/start");
    f.post("/machines/web/kill");
    f.post("/machines/other/kill");
    f.delete("web");
    f.create("last");

    // One machine's streams end after its deletion, whatever they show.
    let rest = |s: &mut Streamed| -> Vec<String> {
        let mut all = Vec::new();
        while let Some(e) = next(s) {
            assert_eq!(e["machine"], "web", "{e}");
            all.push(brief(&e));
        }
        all
    };
    let lifecycle = [
        "status pending->starting",
        "status starting->running",
        "status running->stopping",
        "status stopping->stopped",
    ];
    assert_eq!(rest(&mut statuses), lifecycle);
    let mut with_end = lifecycle.map(String::from).to_vec();
    with_end.push("deleted stopped firecracker".into());
    assert_eq!(rest(&mut by_path), with_end);
    assert_eq!(rest(&mut by_id), with_end);
    // A fleet stream goes on.
    let lives = until(&mut lives, |e| is(e, "created", "last"));
    let seen: Vec<(String, String)> = lives
        .iter()
        .map(|e| (brief(e), e["machine"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        seen,
        [
            ("deleted stopped firecracker".into(), "web".into()),
            ("created".into(), "last".into())
        ]
    );
}

#[test]
fn server_sent_events_are_framed_for_event_sources() {
    let f = fleet(&[]);
    let sse = ["Accept: text/event-stream"];
    let mut all = Streamed::get(&f.addr, "/events", &sse);
    assert_eq!(all.status, 200);
    assert_eq!(all.header("content-type"), Some("text/event-stream"));
    assert_eq!(all.header("cache-control"), Some("no-cache"));
    f.create("web");
    let mut one = Streamed::get(&f.addr, "/machines/web/events", &sse);
    f.post("/machines/web/start");
    f.delete("web");

    // Each event: its type, its JSON on one data line, a blank line.
    let read = |s: &mut Streamed| -> Option<(String, Value)> {
        let mut l = s.line()?;
        while l.starts_with(':') {
            assert_eq!(l, ": keep-alive");
            assert_eq!(s.line().as_deref(), Some(""));
            l = s.line()?;
        }
        let kind = l
            .strip_prefix("event: ")
            .unwrap_or_else(|| panic!("{l:?}"))
            .to_owned();
        let data = s.line().expect("a data line");
        let json: Value = serde_json::from_str(data.strip_prefix("data: ").expect(&data)).unwrap();
        assert_eq!(json["type"], kind.as_str(), "{data}");
        assert_eq!(s.line().as_deref(), Some(""), "no blank line after {data}");
        Some((kind, json))
    };
    let mut kinds = Vec::new();
    while let Some((kind, json)) = read(&mut one) {
        assert_eq!(json["machine"], "web");
        kinds.push(kind);
    }
    assert_eq!(
        kinds,
        ["status", "status", "status", "status", "deleted"],
        "start, then the delete's stop, then the end of the stream"
    );
    let (kind, json) = read(&mut all).expect("an event");
    assert_eq!(
        (kind.as_str(), &json["machine"]),
        ("created", &json!("web"))
    );
}

#[test]
fn bad_filters_and_missing_machines_are_refused_with_json() {
    let f = fleet(&[]);
    f.create("web");
    for (path, status, code) in [
        ("/events?type=bogus", 400, "invalid_command"),
        ("/events?type=status,bogus", 400, "invalid_command"),
        ("/events?type=", 400, "invalid_command"),
        ("/events?since=0", 400, "invalid_command"),
        ("/machines/web/events?machine=web", 400, "invalid_command"),
        ("/events?machine=nope", 404, "not_found"),
        ("/events?machine=nope&type=status", 404, "not_found"),
        ("/machines/nope/events", 404, "not_found"),
        ("/api/v1/machines/nope/events", 404, "not_found"),
    ] {
        let r = f.c.get(path);
        assert_eq!(
            (r.status, r.error_code()),
            (status, code.to_owned()),
            "{path}"
        );
    }
    let r = f.c.get("/events?type=bogus");
    let message = r.json["message"].as_str().unwrap();
    assert!(
        message.contains("\"bogus\"") && message.contains("created, status, error"),
        "{message}"
    );
    let r = f.c.get("/events?machine=nope");
    assert!(
        r.json["message"].as_str().unwrap().contains("nope"),
        "{}",
        r.text
    );
    assert_eq!(f.c.post_empty("/events").status, 405);
}

#[test]
fn events_need_the_read_scope() {
    let f = fleet(&[]);
    f.create("web");
    let reader = make_key(&f.d.state, "reader", &["machines:read"]);
    let writer = make_key(&f.d.state, "writer", &["machines:write"]);
    let r = f.c.get("/events?type=bogus");
    assert_eq!((r.status, r.error_code()), (401, "unauthorized".to_owned()));
    let r = f.c.with_key(&writer).get("/machines/web/events");
    assert_eq!((r.status, r.error_code()), (403, "forbidden".to_owned()));
    let auth = format!("Authorization: Bearer {reader}");
    for path in ["/events", "/machines/web/events"] {
        assert_eq!(Streamed::get(&f.addr, path, &[]).status, 401, "{path}");
        assert_eq!(Streamed::get(&f.addr, path, &[&auth]).status, 200, "{path}");
    }
}

/// Commands the fake engine runs at once: each makes one `exec` event,
/// and nothing is written to the state database. A thin connection holds
/// about 1,100 of those events, and the backlog 4,096.
const EXECS: usize = 12_000;
/// Sent on this many connections at once, as many on each.
const CONNECTIONS: usize = 16;
const _: () = assert!(EXECS.is_multiple_of(CONNECTIONS));

/// A connection to `addr` (`127.0.0.1:PORT`) as from a reader on a thin
/// link: a small receive window and small segments. Loopback otherwise
/// lets the kernel hold megabytes a reader has not read (the sender's
/// buffer is sized from the segment size), and a test would need that many
/// more events before the daemon has to drop any.
fn thin_connection(addr: &str) -> std::net::TcpStream {
    use std::os::fd::FromRawFd;
    let addr: std::net::SocketAddrV4 = addr.parse().expect("an IPv4 address");
    // SAFETY: plain socket calls on a descriptor this function owns until
    // it is handed to the TcpStream.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let set = |level, name, value: libc::c_int| {
            let r = libc::setsockopt(
                fd,
                level,
                name,
                &value as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
            assert_eq!(r, 0, "setsockopt: {}", std::io::Error::last_os_error());
        };
        set(libc::SOL_SOCKET, libc::SO_RCVBUF, 4096);
        set(libc::IPPROTO_TCP, libc::TCP_MAXSEG, 536);
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: addr.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*addr.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let r = libc::connect(
            fd,
            &sin as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(r, 0, "connect: {}", std::io::Error::last_os_error());
        std::net::TcpStream::from_raw_fd(fd)
    }
}

/// Sends `n` copies of `request` down one connection without waiting for
/// the replies (HTTP/1.1 pipelining), reading them meanwhile; each must be
/// a 200.
fn pipelined(addr: &str, request: &[u8], n: usize) {
    use std::io::{BufRead, BufReader, Read, Write};
    let s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut out = s.try_clone().unwrap();
    let all = request.repeat(n);
    let writer = std::thread::spawn(move || out.write_all(&all).expect("send"));
    let mut replies = BufReader::new(s);
    let mut line = String::new();
    for i in 0..n {
        line.clear();
        replies.read_line(&mut line).expect("a reply");
        assert!(line.starts_with("HTTP/1.1 200"), "reply {i}: {line:?}");
        let mut length = 0;
        loop {
            line.clear();
            replies.read_line(&mut line).expect("a header");
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().expect("a length");
            }
        }
        let mut body = vec![0; length];
        replies.read_exact(&mut body).expect("the body");
    }
    writer.join().unwrap();
}

#[test]
fn a_reader_that_does_not_read_is_told_what_it_lost() {
    let f = fleet(&[]);
    f.create("web");
    f.post("/machines/web/start");
    // Both subscribed once their headers are in.
    let mut slow = Streamed::get_over(
        thin_connection(&f.addr),
        &f.addr,
        "/events?type=exec,created",
        &[],
    );
    assert_eq!(slow.status, 200);
    let fast = f.events("/events?type=exec,created");
    let fast = std::thread::spawn(move || {
        let mut fast = fast;
        until(&mut fast, |e| is(e, "created", "last"))
    });

    // Many more events than the backlog and every buffer on the way
    // (socket buffers of a few MiB on loopback) can hold, made as fast as
    // the daemon answers, while `slow` reads nothing: the daemon goes on
    // as if it were not there.
    let body = r#"{"cmd":["exit","0"]}"#;
    let exec = format!(
        "POST /machines/web/exec HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let began = Instant::now();
    // On several connections at once: the fake engine takes a timer tick
    // for each.
    std::thread::scope(|s| {
        for _ in 0..CONNECTIONS {
            s.spawn(|| pipelined(&f.addr, exec.as_bytes(), EXECS / CONNECTIONS));
        }
    });
    let took = began.elapsed();
    f.d.ok("mkdir machines/last");

    // Events seen and events lost add up to all of them, for each reader.
    let tally = |events: &[Value]| -> (usize, u64) {
        let execs = events.iter().filter(|e| e["type"] == "exec").count();
        let lost = events
            .iter()
            .filter(|e| e["type"] == "dropped")
            .map(|e| e["count"].as_u64().expect("a count"))
            .sum();
        (execs, lost)
    };
    let fast = fast.join().unwrap();
    let (execs, lost) = tally(&fast);
    assert!(execs as u64 + lost >= EXECS as u64, "{execs} + {lost}");

    // What the connection held, then the marker, then the newest events.
    let got = until(&mut slow, |e| is(e, "created", "last"));
    let (execs, lost) = tally(&got);
    let markers: Vec<usize> = (0..got.len())
        .filter(|i| got[*i]["type"] == "dropped")
        .collect();
    assert_eq!(
        markers.len(),
        1,
        "one marker for the one time it fell behind ({execs} execs, {lost} lost, made in {took:?})"
    );
    assert!(execs as u64 + lost >= EXECS as u64, "{execs} + {lost}");
    let marker = &got[markers[0]];
    assert_eq!(marker.as_object().unwrap().len(), 3, "{marker}");
    assert!(marker["time"].is_string() && lost > 0, "{marker}");
    let after = got.len() - markers[0] - 1;
    assert!(
        (BACKLOG - 10..=BACKLOG).contains(&after),
        "the reader lost the oldest and kept the newest {BACKLOG}, less what it did not ask for: {after}"
    );
}

/// How many events a reader may fall behind (the core's `BACKLOG`).
const BACKLOG: usize = 4096;

#[test]
fn readers_that_hang_up_leave_nothing_behind() {
    let f = fleet(&[("HYPERFLEET_LOG", "info,hyperfleet::rest=debug")]);
    f.create("web");
    let done = |d: &Daemon| d.log().matches("rest: events reader done").count();
    let sse = "Accept: text/event-stream";
    let paths = [
        ("/events", None),
        ("/events?machine=web&type=status", None),
        ("/machines/web/events", Some(sse)),
        ("/events", Some(sse)),
    ];
    const ROUNDS: usize = 25;
    for i in 0..ROUNDS {
        for (path, header) in paths {
            let mut s = Streamed::get(&f.addr, path, &header.into_iter().collect::<Vec<_>>());
            assert_eq!(s.status, 200);
            // Some hang up mid-stream, some before anything came.
            if i % 5 == 0 && path.starts_with("/machines") {
                f.post("/machines/web/start");
                f.post("/machines/web/kill");
                assert!(s.line().is_some_and(|l| l.starts_with("event: status")));
            }
        }
    }
    let readers = ROUNDS * paths.len();
    let deadline = Instant::now() + Duration::from_secs(20);
    while done(&f.d) < readers {
        assert!(
            Instant::now() < deadline,
            "{} of {readers} readers ended with their clients:\n{}",
            done(&f.d),
            common::tail(&f.d.log(), 30)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The stream still serves, and one more reader is one more ending.
    let mut s = f.events("/machines/web/events");
    f.delete("web");
    assert!(s.rest().contains(r#""type":"deleted""#));
    let deadline = Instant::now() + Duration::from_secs(20);
    while done(&f.d) < readers + 1 {
        assert!(Instant::now() < deadline, "the last reader did not end");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(done(&f.d), readers + 1);
}
