//! The agent as PID 1 of a fresh PID namespace, as in a guest: it reaps
//! orphans, and powers off on request (which, in a PID namespace, the
//! kernel turns into the end of the namespace).

use std::time::{Duration, Instant};

use hyperfleet::agent::{Error, ErrorKind};

use crate::harness::Agent;

const UNSHARE: &[&str] = &["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"];

#[tokio::test]
async fn as_pid_1_the_agent_reaps_orphaned_zombies() {
    let agent = Agent::start_under(UNSHARE);
    let pong = agent.connect().await.ping().await.expect("ping");
    assert!(pong.pid1, "the agent should be PID 1 in its namespace");

    // The shell exits at once; its background child is orphaned to PID 1
    // (the agent) and exits 0.3 s later. Unreaped, it would stay a zombie.
    let orphan = agent.sh("sleep 0.3 & echo $!").await;
    let orphan = orphan.trim();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state = agent
            .sh(&format!(
                "sed -n 's/^State:\\t\\(.\\).*/\\1/p' /proc/{orphan}/status 2>/dev/null || true"
            ))
            .await;
        if state.trim().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pid {orphan} still exists (state {state:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn as_pid_1_power_off_ends_the_guest() {
    let mut agent = Agent::start_under(UNSHARE);
    agent.connect().await.power_off().await.expect("power off");
    let status = agent.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some(),
        "the namespace (and the agent) should be gone"
    );
}

#[tokio::test]
async fn power_off_is_refused_unless_pid_1() {
    let agent = Agent::start();
    assert!(!agent.connect().await.ping().await.expect("ping").pid1);
    match agent.connect().await.power_off().await {
        Err(Error::Remote {
            kind: ErrorKind::Unsupported,
            message,
            ..
        }) => {
            assert!(message.contains("PID 1"), "{message}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(agent.sh("echo up").await, "up\n");
}
