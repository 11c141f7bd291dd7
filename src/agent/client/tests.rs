//! The client against a scripted agent on the other end of an in-memory
//! stream: what a hostile or broken guest can make the host do.

use std::time::Duration;

use tokio::io::{AsyncWriteExt, DuplexStream};

use super::{AgentClient, ExecEvent};
use crate::agent::protocol::{
    encode_to_vec, ExecRequest, ExitInfo, ExitStatus, Frame, Hello, Response, StreamRequest,
    ONE_SHOT_OUTPUT_LIMIT,
};

/// Plays the agent: its hello, then `frames`, never reading what the host
/// sends (the duplex buffer holds the host's hello and request).
fn scripted_agent(frames: impl Iterator<Item = Frame> + Send + 'static) -> DuplexStream {
    scripted_agent_pausing(frames, None)
}

/// [`scripted_agent`], waiting `pause` (if any) before the last frame.
fn scripted_agent_pausing(
    frames: impl Iterator<Item = Frame> + Send + 'static,
    pause: Option<Duration>,
) -> DuplexStream {
    let (host, mut agent) = tokio::io::duplex(1 << 20);
    tokio::spawn(async move {
        let hello = std::iter::once(Frame::Hello(Hello::ours()));
        let mut frames = hello.chain(frames).peekable();
        while let Some(frame) = frames.next() {
            if let (Some(p), None) = (pause, frames.peek()) {
                tokio::time::sleep(p).await;
            }
            let bytes = encode_to_vec(&frame).expect("encode");
            if agent.write_all(&bytes).await.is_err() {
                return;
            }
        }
        // Held open until the host is done reading.
        let _ = tokio::io::copy(&mut agent, &mut tokio::io::sink()).await;
    });
    host
}

#[tokio::test]
async fn one_shot_output_is_capped_on_the_host_whatever_the_agent_sends() {
    const CHUNK: usize = 512 * 1024;
    let cap = ONE_SHOT_OUTPUT_LIMIT as usize;
    // One MiB past the cap on each stream, and an exit that claims no
    // truncation.
    let chunks = (cap + (1 << 20)) / CHUNK;
    let output = (0..chunks).flat_map(|_| {
        [
            Frame::Stdout(vec![b'o'; CHUNK]),
            Frame::Stderr(vec![b'e'; CHUNK]),
        ]
    });
    let exit = Frame::Response(Response::Exit(ExitInfo {
        status: ExitStatus::Code(0),
        timed_out: false,
        stdout_truncated: false,
        stderr_truncated: false,
    }));
    let frames = std::iter::once(Frame::Response(Response::Started { pid: 7 }))
        .chain(output)
        .chain(std::iter::once(exit));
    let client = AgentClient::handshake(scripted_agent(frames))
        .await
        .expect("handshake");
    let r = client
        .exec(ExecRequest::new(["flood"]))
        .await
        .expect("exec");
    assert_eq!(r.stdout.len(), cap);
    assert_eq!(r.stderr.len(), cap);
    assert!(r.stdout_truncated && r.stderr_truncated);
}

fn exit_frame() -> Frame {
    Frame::Response(Response::Exit(ExitInfo {
        status: ExitStatus::Code(0),
        timed_out: false,
        stdout_truncated: false,
        stderr_truncated: false,
    }))
}

// Paused time: the agent's two-day pause passes at once, and any deadline
// on the host side would fire first.
#[tokio::test(start_paused = true)]
async fn a_stream_without_a_time_limit_waits_for_its_exit_however_long() {
    let frames = [Frame::Response(Response::Started { pid: 7 }), exit_frame()];
    let agent = scripted_agent_pausing(frames.into_iter(), Some(Duration::from_secs(48 * 3600)));
    let mut exec = ExecRequest::new(["sh"]);
    exec.timeout = Duration::from_secs(1);
    let mut session = AgentClient::handshake(agent)
        .await
        .expect("handshake")
        .exec_stream(StreamRequest {
            exec,
            pty: None,
            no_timeout: true,
        })
        .await
        .expect("started");
    match session.recv().await {
        Ok(Some(ExecEvent::Exit(info))) => assert_eq!(info.status, ExitStatus::Code(0)),
        other => panic!("expected the exit, got {other:?}"),
    }
}
