//! One-shot exec: output, exit, environment, user, timeout, output cap,
//! concurrency.

use std::time::{Duration, Instant};

use hyperfleet::agent::{Error, ErrorKind, ExecRequest, ExitStatus};

use crate::harness::{alive, eventually, Agent};

fn sh(script: &str) -> ExecRequest {
    ExecRequest::new(["sh", "-c", script])
}

#[tokio::test]
async fn stdout_stderr_and_exit_code_come_back_separately() {
    let agent = Agent::start();
    let r = agent
        .connect()
        .await
        .exec(sh("echo out; echo err >&2; exit 3"))
        .await
        .expect("exec");
    assert_eq!(r.stdout, b"out\n");
    assert_eq!(r.stderr, b"err\n");
    assert_eq!(r.status, ExitStatus::Code(3));
    assert!(!r.timed_out && !r.stdout_truncated && !r.stderr_truncated);
}

#[tokio::test]
async fn a_command_killed_by_a_signal_reports_the_signal() {
    let agent = Agent::start();
    let r = agent
        .connect()
        .await
        .exec(sh("kill -TERM $$"))
        .await
        .expect("exec");
    assert_eq!(r.status, ExitStatus::Signal(libc::SIGTERM));
    assert_eq!(r.code(), None);
}

#[tokio::test]
async fn env_and_working_dir_are_the_requested_ones_and_nothing_leaks() {
    let agent = Agent::start();
    let mut req = sh(r#"echo "$GREETING|$HF_AGENT_SECRET|$PATH"; pwd"#);
    req.env.insert("GREETING".into(), "hello world".into());
    req.working_dir = Some(agent.dir.path().display().to_string());
    let r = agent.connect().await.exec(req).await.expect("exec");
    let out = String::from_utf8(r.stdout).expect("utf-8");
    let mut lines = out.lines();
    let first = lines.next().expect("env line");
    assert!(
        first.starts_with("hello world||/usr/local/sbin:"),
        "{first}"
    );
    let pwd = std::fs::canonicalize(agent.dir.path()).expect("canonical");
    assert_eq!(lines.next(), Some(pwd.to_str().expect("utf-8")));
}

#[tokio::test]
async fn commands_run_as_the_requested_user() {
    let agent = Agent::start();
    for user in ["nobody", "65534", "65534:65534"] {
        let mut req = sh("id -u; id -g; id -G");
        req.user = Some(user.into());
        let r = agent.connect().await.exec(req).await.expect("exec");
        assert_eq!(
            String::from_utf8_lossy(&r.stdout),
            "65534\n65534\n65534\n",
            "as {user}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
    }
    let mut req = sh("true");
    req.user = Some("no-such-user-here".into());
    match agent.connect().await.exec(req).await {
        Err(Error::Remote {
            kind: ErrorKind::InvalidArgument,
            message,
            ..
        }) => {
            assert!(message.contains("no-such-user-here"), "{message}")
        }
        other => panic!("expected an unknown-user error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_command_that_cannot_start_is_an_error_that_says_why() {
    let agent = Agent::start();
    match agent
        .connect()
        .await
        .exec(ExecRequest::new(["no-such-command-xyz"]))
        .await
    {
        Err(Error::Remote {
            kind: ErrorKind::NotFound,
            message,
            ..
        }) => {
            assert!(
                message.contains("command not found: no-such-command-xyz"),
                "{message}"
            )
        }
        other => panic!("expected not found, got {other:?}"),
    }
    let mut req = ExecRequest::new(["true"]);
    req.working_dir = Some("/no/such/dir".into());
    match agent.connect().await.exec(req).await {
        Err(Error::Remote {
            kind: ErrorKind::NotFound,
            message,
            ..
        }) => {
            assert!(message.contains("/no/such/dir"), "{message}")
        }
        other => panic!("expected a missing directory, got {other:?}"),
    }
    let not_executable = agent.dir.path().join("data.txt");
    std::fs::write(&not_executable, "x").expect("write");
    match agent
        .connect()
        .await
        .exec(ExecRequest::new([not_executable.to_str().expect("utf-8")]))
        .await
    {
        Err(Error::Remote {
            kind: ErrorKind::PermissionDenied,
            ..
        }) => {}
        other => panic!("expected permission denied, got {other:?}"),
    }
}

#[tokio::test]
async fn a_timeout_kills_the_whole_process_group_and_keeps_earlier_output() {
    let agent = Agent::start();
    let mut req = sh("sleep 1000 & echo $!; echo started >&2; sleep 1000");
    req.timeout = Duration::from_secs(1);
    let started = Instant::now();
    let r = agent.connect().await.exec(req).await.expect("exec");
    let took = started.elapsed();
    assert!(r.timed_out, "not flagged as timed out");
    assert_eq!(r.status, ExitStatus::Signal(libc::SIGKILL));
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(10),
        "{took:?}"
    );
    assert_eq!(r.stderr, b"started\n", "output before the kill is kept");
    let background: u32 = String::from_utf8_lossy(&r.stdout)
        .trim()
        .parse()
        .expect("a pid");
    for pid in [r.pid, background] {
        eventually(Duration::from_secs(5), &format!("pid {pid} gone"), || {
            !alive(pid)
        });
    }
}

#[tokio::test]
async fn one_shot_output_is_capped_at_16_mib_per_stream_without_blocking_the_command() {
    let agent = Agent::start();
    let mut req = sh("head -c 41943040 /dev/zero; echo done >&2");
    req.timeout = Duration::from_secs(60);
    let r = agent.connect().await.exec(req).await.expect("exec");
    assert_eq!(r.status, ExitStatus::Code(0), "the command ran to its end");
    assert!(!r.timed_out);
    assert_eq!(r.stdout.len(), 16 * 1024 * 1024);
    assert!(r.stdout.iter().all(|&b| b == 0));
    assert!(r.stdout_truncated);
    assert_eq!(r.stderr, b"done\n");
    assert!(!r.stderr_truncated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_execs_are_independent() {
    let agent = Agent::start();
    let started = Instant::now();
    let runs = (0..8).map(|i| {
        let agent = &agent;
        async move {
            let mut req = sh("sleep 1; echo $N");
            req.env.insert("N".into(), i.to_string());
            agent.connect().await.exec(req).await.expect("exec")
        }
    });
    let results = futures_util::future::join_all(runs).await;
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.stdout, format!("{i}\n").as_bytes());
    }
    // Eight one-second commands in well under eight seconds: in parallel.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

/// Pids of live processes whose command line holds `token`.
fn processes_with(token: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(token))
        })
        .filter(|pid| alive(*pid))
        .collect()
}

#[tokio::test]
async fn a_command_whose_start_cannot_be_reported_is_killed() {
    use std::io::{Read, Write};

    use hyperfleet::agent::protocol::{encode_to_vec, Frame, Hello, Request};

    let mut agent = Agent::start();
    let token = format!("unreported-start-{}", std::process::id());
    let mut req = sh(&format!("sleep 1000; : {token}"));
    req.timeout = Duration::from_secs(1000);
    let mut s = std::os::unix::net::UnixStream::connect(&agent.socket).expect("connect");
    // The agent's hello first, so its next write is the one that fails.
    let mut header = [0u8; 4];
    s.read_exact(&mut header).expect("hello length");
    let mut hello = vec![0u8; u32::from_be_bytes(header) as usize];
    s.read_exact(&mut hello).expect("hello");
    for frame in [
        Frame::Hello(Hello::ours()),
        Frame::Request(Request::Exec(req)),
    ] {
        s.write_all(&encode_to_vec(&frame).expect("encode"))
            .expect("send");
    }
    // Gone before the agent can say the command started.
    drop(s);
    agent.wait_for_line(
        "connection ended during its request",
        Duration::from_secs(10),
    );
    // SIGKILL lands a moment after kill(2) returns.
    eventually(Duration::from_secs(5), "the command killed", || {
        processes_with(&token).is_empty()
    });
}
