//! Streaming exec: stdin, pty, signals, and a large stream end to end.

use std::time::Duration;

use hyperfleet::agent::client::ExecSession;
use hyperfleet::agent::{
    ExecEvent, ExecRequest, ExitInfo, ExitStatus, Signal, StreamRequest, WindowSize,
};
use tokio::net::UnixStream;

use crate::harness::{alive, eventually, Agent};

fn stream(script: &str, pty: Option<WindowSize>) -> StreamRequest {
    StreamRequest {
        exec: ExecRequest::new(["sh", "-c", script]),
        pty,
        no_timeout: false,
    }
}

/// Receives until stdout (so far) contains `needle`; returns all stdout.
async fn until_stdout(s: &mut ExecSession<UnixStream>, seen: &mut String, needle: &str) {
    while !seen.contains(needle) {
        match s.recv().await.expect("event") {
            Some(ExecEvent::Stdout(d)) => seen.push_str(&String::from_utf8_lossy(&d)),
            Some(ExecEvent::Stderr(_)) => {}
            other => panic!("ended before {needle:?} (stdout {seen:?}): {other:?}"),
        }
    }
}

/// Receives the rest: (stdout, stderr, exit).
async fn finish(s: &mut ExecSession<UnixStream>) -> (String, String, ExitInfo) {
    let (mut out, mut err) = (String::new(), String::new());
    loop {
        match s.recv().await.expect("event") {
            Some(ExecEvent::Stdout(d)) => out.push_str(&String::from_utf8_lossy(&d)),
            Some(ExecEvent::Stderr(d)) => err.push_str(&String::from_utf8_lossy(&d)),
            Some(ExecEvent::Exit(info)) => return (out, err, info),
            None => panic!("no exit event"),
        }
    }
}

#[tokio::test]
async fn stdin_travels_in_frames_and_close_ends_it() {
    let agent = Agent::start();
    let mut s = agent
        .connect()
        .await
        .exec_stream(stream("wc -l", None))
        .await
        .expect("start");
    s.send_stdin(b"a\nb\n").await.expect("stdin");
    s.close_stdin().await.expect("close");
    let (out, _, exit) = finish(&mut s).await;
    assert_eq!(out.trim(), "2");
    assert_eq!(exit.status, ExitStatus::Code(0));
    assert!(s.recv().await.expect("after exit").is_none());
}

#[tokio::test]
async fn a_pty_has_the_requested_size_and_sees_resizes() {
    let agent = Agent::start();
    let script = "test -t 0 && echo tty; stty size; read line; stty size";
    let size = WindowSize { rows: 24, cols: 80 };
    let mut s = agent
        .connect()
        .await
        .exec_stream(stream(script, Some(size)))
        .await
        .expect("start");
    let mut seen = String::new();
    until_stdout(&mut s, &mut seen, "24 80").await;
    assert!(seen.contains("tty"), "{seen:?}");
    s.resize(WindowSize {
        rows: 30,
        cols: 100,
    })
    .await
    .expect("resize");
    s.send_stdin(b"go\n").await.expect("stdin");
    until_stdout(&mut s, &mut seen, "30 100").await;
    let (_, _, exit) = finish(&mut s).await;
    assert_eq!(exit.status, ExitStatus::Code(0));
}

#[tokio::test]
async fn signals_reach_the_command_by_name_or_number() {
    let agent = Agent::start();
    let script = r#"trap 'echo got TERM; exit 7' TERM; echo ready; while :; do sleep 0.1; done"#;
    let mut s = agent
        .connect()
        .await
        .exec_stream(stream(script, None))
        .await
        .expect("start");
    let mut seen = String::new();
    until_stdout(&mut s, &mut seen, "ready").await;
    s.signal("TERM".parse().expect("signal"))
        .await
        .expect("signal");
    let (out, _, exit) = finish(&mut s).await;
    assert!(out.contains("got TERM"), "{out:?}");
    assert_eq!(exit.status, ExitStatus::Code(7));

    let mut s = agent
        .connect()
        .await
        .exec_stream(stream("echo ready; exec sleep 1000", None))
        .await
        .expect("start");
    let mut seen = String::new();
    until_stdout(&mut s, &mut seen, "ready").await;
    s.signal(Signal(2)).await.expect("signal");
    let (_, _, exit) = finish(&mut s).await;
    assert_eq!(exit.status, ExitStatus::Signal(libc::SIGINT));
}

#[tokio::test]
async fn dropping_a_session_kills_its_command() {
    let agent = Agent::start();
    let s = agent
        .connect()
        .await
        .exec_stream(stream("exec sleep 1000", None))
        .await
        .expect("start");
    let pid = s.pid();
    assert!(alive(pid));
    drop(s);
    eventually(Duration::from_secs(5), "the command killed", || !alive(pid));
}

/// A deterministic byte stream (xorshift), so both ends agree without
/// holding 100 MB.
struct Pattern(u64);

impl Pattern {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            *b = self.0 as u8;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_megabytes_pass_through_a_stream_intact() {
    const TOTAL: usize = 100_000_000;
    let agent = Agent::start();
    let mut req = stream("cat", None);
    req.exec.timeout = Duration::from_secs(300);
    let s = agent.connect().await.exec_stream(req).await.expect("start");
    let (mut input, mut output) = s.split();
    let writer = async move {
        let mut pattern = Pattern(0x9e3779b97f4a7c15);
        let mut chunk = vec![0u8; 1 << 20];
        let mut sent = 0;
        while sent < TOTAL {
            let n = chunk.len().min(TOTAL - sent);
            pattern.fill(&mut chunk[..n]);
            input.send_stdin(&chunk[..n]).await.expect("stdin");
            sent += n;
        }
        input.close_stdin().await.expect("close");
        input
    };
    let reader = async move {
        let mut pattern = Pattern(0x9e3779b97f4a7c15);
        let mut expected = Vec::new();
        let mut received = 0usize;
        loop {
            match output.recv().await.expect("event") {
                Some(ExecEvent::Stdout(d)) => {
                    expected.resize(d.len(), 0);
                    pattern.fill(&mut expected);
                    assert!(d == expected, "bytes differ after offset {received}");
                    received += d.len();
                }
                Some(ExecEvent::Exit(info)) => return (received, info),
                other => panic!("unexpected {other:?}"),
            }
        }
    };
    let (_input, (received, exit)) = tokio::join!(writer, reader);
    assert_eq!(received, TOTAL);
    assert_eq!(exit.status, ExitStatus::Code(0));
    assert!(!exit.stdout_truncated, "streams have no cap");
}

#[tokio::test]
async fn a_stream_without_a_time_limit_runs_past_its_nominal_timeout() {
    let agent = Agent::start();
    let mut req = stream("sleep 2; echo done", None);
    // What a 1.0 agent would apply; this one must not.
    req.exec.timeout = Duration::from_secs(1);
    req.no_timeout = true;
    let mut s = agent.connect().await.exec_stream(req).await.expect("start");
    s.close_stdin().await.expect("close");
    let (out, _, exit) = finish(&mut s).await;
    assert!(
        !exit.timed_out,
        "killed by the timeout it was told to ignore"
    );
    assert_eq!(out, "done\n");
    assert_eq!(exit.status, ExitStatus::Code(0));
}

/// A command that says "ready", never reads its stdin, and exits 5 on SIGINT.
const TRAPS_INT: &str = "trap 'echo got-INT; exit 5' INT; echo ready; while :; do sleep 0.1; done";

#[tokio::test]
async fn a_signal_on_a_connection_of_its_own_reaches_a_streams_command() {
    let agent = Agent::start();
    let mut s = agent
        .connect()
        .await
        .exec_stream(stream(TRAPS_INT, None))
        .await
        .expect("start");
    let mut seen = String::new();
    until_stdout(&mut s, &mut seen, "ready").await;
    // Only a running stream's command can be named.
    match agent.connect().await.signal(1, Signal(libc::SIGKILL)).await {
        Err(hyperfleet::agent::Error::Remote {
            kind: hyperfleet::agent::ErrorKind::NotFound,
            ..
        }) => {}
        other => panic!("expected not found, got {other:?}"),
    }
    agent
        .connect()
        .await
        .signal(s.pid(), Signal(libc::SIGINT))
        .await
        .expect("signal");
    let (out, _, exit) = finish(&mut s).await;
    assert_eq!(out, "got-INT\n");
    assert_eq!(exit.status, ExitStatus::Code(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_stream_signal_passes_a_stdin_backlog_on_the_wire() {
    use hyperfleet::runtime::guest_agent::GuestAgent;
    use hyperfleet::runtime::{ExecControl, StreamOutput};

    use crate::common::vsock_relay::{RelayMode, VsockRelay};

    let agent = Agent::start();
    let relay = VsockRelay::start(
        &agent.dir.path().join("vsock.sock"),
        RelayMode::Relay {
            target: agent.socket.clone(),
            port: 52,
        },
    );
    let vm = GuestAgent::new(&relay.path, 52);
    let req = serde_json::json!({ "cmd": ["sh", "-c", TRAPS_INT] }).to_string();
    let req = hyperfleet::model::StreamRequest::parse(req.as_bytes()).expect("request");
    let mut streams = vm.exec_stream(&req).await.expect("start");
    match streams.output.recv().await {
        Some(StreamOutput::Stdout(b)) => assert_eq!(b, b"ready\n"),
        other => panic!("expected ready, got {other:?}"),
    }
    // Stdin the command never reads, until the agent stops taking it and
    // the connection backs up: a send then waits (a pause, not a result).
    let chunk = vec![b'x'; 64 << 10];
    let mut backed_up = false;
    for _ in 0..1024 {
        let send = streams.stdin.send(chunk.clone());
        if tokio::time::timeout(Duration::from_secs(1), send)
            .await
            .is_err()
        {
            backed_up = true;
            break;
        }
    }
    assert!(backed_up, "64 MiB went to a command that reads nothing");
    streams
        .control
        .send(ExecControl::Signal(libc::SIGINT))
        .await
        .expect("control");
    let exit = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match streams.output.recv().await {
                Some(StreamOutput::Exit { code, .. }) => return code,
                Some(_) => {}
                None => panic!("no exit"),
            }
        }
    })
    .await
    .expect("the signal waited behind stdin");
    assert_eq!(exit, 5);
}
