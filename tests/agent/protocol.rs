//! Bad peers: garbage, oversized, truncated and out-of-order frames and a
//! version mismatch, on both sides. The agent answers with an error, closes,
//! and keeps serving others.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use hyperfleet::agent::protocol::{
    encode_to_vec, Decoder, ErrorKind, Frame, Hello, Request, Version,
};
use hyperfleet::agent::{AgentClient, Error};

use crate::harness::Agent;

/// A raw connection: sends `bytes` after reading the agent's hello, then
/// returns every frame the agent sends until it closes.
fn raw_exchange(agent: &Agent, bytes: &[u8], close_write: bool) -> Vec<Frame> {
    let mut s = UnixStream::connect(&agent.socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(bytes).expect("send");
    if close_write {
        s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    }
    let mut wire = Vec::new();
    // Ends at EOF; a read timeout would mean the agent never closed.
    s.read_to_end(&mut wire)
        .expect("the agent closes the connection");
    let mut d = Decoder::new();
    d.feed(&wire);
    let mut frames = Vec::new();
    while let Some(f) = d.next_frame().expect("the agent sends valid frames") {
        frames.push(f);
    }
    frames
}

fn hello(major: u16) -> Vec<u8> {
    let mut h = Hello::ours();
    h.version = Version { major, minor: 0 };
    encode_to_vec(&Frame::Hello(h)).expect("encode")
}

/// Asserts the agent sent its hello, then one error of `kind`; returns its message.
fn hello_then_error(frames: &[Frame], kind: ErrorKind) -> String {
    assert!(
        matches!(frames.first(), Some(Frame::Hello(_))),
        "{frames:?}"
    );
    match &frames[1..] {
        [Frame::Error(e)] if e.kind == kind => e.message.clone(),
        other => panic!("expected one {kind:?} error, got {other:?}"),
    }
}

async fn still_serves(agent: &Agent) {
    assert_eq!(agent.sh("echo ok").await, "ok\n");
}

#[tokio::test]
async fn garbage_gets_a_protocol_error_and_the_agent_stays_up() {
    let agent = Agent::start();
    let frames = raw_exchange(&agent, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", false);
    let m = hello_then_error(&frames, ErrorKind::Protocol);
    assert!(
        m.contains("exceeds") || m.contains("unknown frame type"),
        "{m}"
    );
    still_serves(&agent).await;
}

#[tokio::test]
async fn an_oversized_frame_is_refused_from_its_header() {
    let agent = Agent::start();
    let mut wire = hello(1);
    wire.extend_from_slice(&0x7fff_ffffu32.to_be_bytes());
    wire.push(0x02);
    let frames = raw_exchange(&agent, &wire, false);
    let m = hello_then_error(&frames, ErrorKind::Protocol);
    assert!(m.contains("2147483647") && m.contains("limit"), "{m}");
    still_serves(&agent).await;
}

#[tokio::test]
async fn a_truncated_frame_is_reported() {
    let agent = Agent::start();
    let mut wire = hello(1);
    let request = encode_to_vec(&Frame::Request(Request::Ping)).expect("encode");
    wire.extend_from_slice(&request[..request.len() - 3]);
    let frames = raw_exchange(&agent, &wire, true);
    let m = hello_then_error(&frames, ErrorKind::Protocol);
    assert!(m.contains("ended inside a frame"), "{m}");
    still_serves(&agent).await;
}

#[tokio::test]
async fn malformed_json_and_out_of_order_frames_are_refused() {
    let agent = Agent::start();
    let mut wire = hello(1);
    wire.extend_from_slice(&[0, 0, 0, 4, 0x02, b'{', b'x', b'}']);
    let m = hello_then_error(&raw_exchange(&agent, &wire, false), ErrorKind::Protocol);
    assert!(m.contains("Request"), "{m}");

    let wire = encode_to_vec(&Frame::Request(Request::Ping)).expect("encode");
    let m = hello_then_error(&raw_exchange(&agent, &wire, false), ErrorKind::Protocol);
    assert!(m.contains("expected a hello"), "{m}");
    still_serves(&agent).await;
}

#[tokio::test]
async fn the_agent_refuses_another_major_version() {
    let agent = Agent::start();
    let mut wire = hello(99);
    wire.extend(encode_to_vec(&Frame::Request(Request::Ping)).expect("encode"));
    let m = hello_then_error(
        &raw_exchange(&agent, &wire, false),
        ErrorKind::VersionMismatch,
    );
    let ours = hyperfleet::agent::protocol::PROTOCOL_VERSION.to_string();
    assert!(m.contains("99.0") && m.contains(&ours), "{m}");
    still_serves(&agent).await;
}

#[tokio::test]
async fn the_client_refuses_an_agent_of_another_major_version() {
    let (ours, mut theirs) = tokio::net::UnixStream::pair().expect("pair");
    let fake_agent = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        theirs.write_all(&hello(2)).await.expect("send hello");
        // Hold the connection open: the client must decide on the hello alone.
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    match AgentClient::handshake(ours).await {
        Err(Error::VersionMismatch { ours, theirs }) => {
            assert_eq!((ours.major, theirs.major), (1, 2));
        }
        other => panic!("expected a version mismatch, got {other:?}"),
    }
    fake_agent.abort();
}

#[tokio::test]
async fn a_silent_peer_times_the_client_out() {
    let (ours, _theirs) = tokio::net::UnixStream::pair().expect("pair");
    let started = std::time::Instant::now();
    match AgentClient::handshake_with_timeout(ours, Duration::from_millis(300)).await {
        Err(Error::Timeout { .. }) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3));
}
