//! The host client through a stand-in for a VMM's hybrid vsock: the
//! CONNECT exchange, retries while the guest boots, and a clear failure
//! when the agent never answers.

use std::time::{Duration, Instant};

use hyperfleet::agent::{ConnectCause, Error, ExecRequest, HybridVsock};

use crate::common::vsock_relay::{RelayMode, VsockRelay};
use crate::harness::{Agent, AGENT};

#[tokio::test]
async fn the_client_reaches_the_agent_through_connect_and_ok() {
    let agent = Agent::start();
    let relay = VsockRelay::start(
        &agent.dir.path().join("vsock.sock"),
        RelayMode::Relay {
            target: agent.socket.clone(),
            port: 52,
        },
    );
    let vsock = HybridVsock::new(&relay.path, 52);
    assert!(
        !vsock
            .connect()
            .await
            .expect("connect")
            .ping()
            .await
            .expect("ping")
            .pid1
    );
    let r = vsock
        .connect()
        .await
        .expect("connect")
        .exec(ExecRequest::new(["echo", "through vsock"]))
        .await
        .expect("exec");
    assert_eq!(r.stdout, b"through vsock\n");
}

#[tokio::test]
async fn an_agent_that_starts_late_is_waited_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent_socket = dir.path().join("agent.sock");
    let relay = VsockRelay::start(
        &dir.path().join("vsock.sock"),
        RelayMode::Relay {
            target: agent_socket.clone(),
            port: 1234,
        },
    );
    // The guest "boots" for a second before its agent listens.
    let listen = format!("unix:{}", agent_socket.display());
    let late = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_secs(1));
        let mut agent = Agent::spawn(&[], &listen, tempfile::tempdir().expect("tempdir"));
        agent.wait_for_line("listening on", Duration::from_secs(20));
        agent
    });
    let started = Instant::now();
    let client = HybridVsock::new(&relay.path, 1234)
        .with_deadline(Duration::from_secs(20))
        .connect()
        .await
        .expect("connects once the agent is up");
    assert!(started.elapsed() >= Duration::from_millis(900));
    client.ping().await.expect("ping");
    drop(late.await.expect("agent"));
}

async fn not_answering(socket: &std::path::Path, deadline: Duration) -> (ConnectCause, Duration) {
    let started = Instant::now();
    let err = HybridVsock::new(socket, 52)
        .with_deadline(deadline)
        .with_answer_timeout(Duration::from_millis(300))
        .connect()
        .await
        .expect_err("nothing answers");
    let took = started.elapsed();
    let report = err.report();
    match err {
        Error::NotAnswering { port, last, .. } => {
            assert_eq!(port, 52);
            assert!(
                report.contains("did not answer on vsock port 52"),
                "{report}"
            );
            (last, took)
        }
        other => panic!("expected NotAnswering, got {other:?}"),
    }
}

#[tokio::test]
async fn an_agent_that_never_answers_fails_within_the_deadline_saying_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let deadline = Duration::from_millis(1500);
    let within = |took: Duration| {
        took >= deadline - Duration::from_millis(100) && took < deadline + Duration::from_secs(2)
    };

    let relay = VsockRelay::start(&dir.path().join("closes.sock"), RelayMode::Close);
    let (last, took) = not_answering(&relay.path, deadline).await;
    assert!(matches!(last, ConnectCause::Closed), "{last:?}");
    assert!(within(took), "{took:?}");

    let relay = VsockRelay::start(&dir.path().join("silent.sock"), RelayMode::Silent);
    let (last, took) = not_answering(&relay.path, deadline).await;
    assert!(matches!(last, ConnectCause::Silent(_)), "{last:?}");
    assert!(within(took), "{took:?}");

    let relay = VsockRelay::start(&dir.path().join("garbage.sock"), RelayMode::Garbage);
    let (last, took) = not_answering(&relay.path, deadline).await;
    assert!(matches!(last, ConnectCause::Refused(_)), "{last:?}");
    assert!(within(took), "{took:?}");

    // No VMM at all (its socket not created yet).
    let (last, took) = not_answering(&dir.path().join("absent.sock"), deadline).await;
    assert!(matches!(last, ConnectCause::Socket(_)), "{last:?}");
    assert!(within(took), "{took:?}");
}

#[test]
fn the_agent_listens_on_vsock_when_asked() {
    // The host has AF_VSOCK but no guest to connect from: check the agent
    // binds and listens on the port (what a guest's host would reach).
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = crate::harness::Agent::spawn(&[], "vsock:52052", dir);
    let line = agent.wait_for_line("listening on", Duration::from_secs(20));
    assert!(line.contains("vsock:52052"), "{line}");
    let _ = AGENT;
}
