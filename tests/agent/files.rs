//! File put/get through the agent.

use std::os::unix::fs::PermissionsExt;

use hyperfleet::agent::{Error, ErrorKind};

use crate::harness::Agent;

fn kind<T: std::fmt::Debug>(r: Result<T, Error>) -> (ErrorKind, String) {
    match r {
        Err(Error::Remote { kind, message, .. }) => (kind, message),
        other => panic!("expected an agent error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_binary_file_round_trips_with_its_mode() {
    let agent = Agent::start();
    let data: Vec<u8> = (0..5 * 1024 * 1024 + 7)
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let remote = agent.dir.path().join("blob.bin");
    let remote = remote.to_str().expect("utf-8");
    let written = agent
        .connect()
        .await
        .put_file(&data[..], remote, 0o640)
        .await
        .expect("put");
    assert_eq!(written, data.len() as u64);

    // The agent runs on this host, so the file is right here to look at.
    assert!(std::fs::read(remote).expect("read back") == data);
    let mode = std::fs::metadata(remote)
        .expect("stat")
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(mode, 0o640);
    let leftovers: Vec<_> = std::fs::read_dir(agent.dir.path())
        .expect("list")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("hf-put"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    let mut back = Vec::new();
    let info = agent
        .connect()
        .await
        .get_file(remote, &mut back)
        .await
        .expect("get");
    assert!(back == data);
    assert_eq!(info.size, data.len() as u64);
    assert_eq!(info.mode, 0o640);
}

#[tokio::test]
async fn file_errors_say_what_is_wrong() {
    let agent = Agent::start();
    let dir = agent.dir.path().to_str().expect("utf-8").to_string();

    let (k, m) = kind(
        agent
            .connect()
            .await
            .put_file(&b"x"[..], &format!("{dir}/no/such/file"), 0o644)
            .await,
    );
    assert_eq!(k, ErrorKind::NotFound, "{m}");
    assert!(m.contains("no/such/file"), "{m}");

    let (k, m) = kind(agent.connect().await.put_file(&b"x"[..], &dir, 0o644).await);
    assert_eq!(k, ErrorKind::IsADirectory, "{m}");

    let (k, m) = kind(
        agent
            .connect()
            .await
            .get_file(&format!("{dir}/missing"), Vec::new())
            .await,
    );
    assert_eq!(k, ErrorKind::NotFound, "{m}");
    assert!(m.contains("missing"), "{m}");

    let (k, _) = kind(agent.connect().await.get_file(&dir, Vec::new()).await);
    assert_eq!(k, ErrorKind::IsADirectory);

    match agent
        .connect()
        .await
        .get_file("relative/path", Vec::new())
        .await
    {
        Err(Error::InvalidRequest(m)) => assert!(m.contains("not absolute"), "{m}"),
        other => panic!("expected a local refusal, got {other:?}"),
    }
    // Failed transfers leave nothing behind and the agent keeps serving.
    assert_eq!(agent.sh("echo still here").await, "still here\n");
}

#[tokio::test]
async fn a_put_that_runs_out_of_space_says_so_and_leaves_nothing() {
    // The agent in its own mount namespace, with a 1 MiB tmpfs to fill.
    let small = tempfile::tempdir().expect("tempdir");
    let small_dir = small.path().to_str().expect("utf-8").to_string();
    let script = format!("mount -t tmpfs -o size=1m hf-small '{small_dir}' && exec \"$0\" \"$@\"");
    let agent = Agent::start_under(&["unshare", "--mount", "sh", "-c", &script]);
    let data = vec![7u8; 4 * 1024 * 1024];
    let (k, m) = kind(
        agent
            .connect()
            .await
            .put_file(&data[..], &format!("{small_dir}/big"), 0o644)
            .await,
    );
    assert_eq!(k, ErrorKind::Io, "{m}");
    assert!(m.contains("No space left"), "{m}");
    let left = agent.sh(&format!("ls -A '{small_dir}'")).await;
    assert_eq!(left, "", "a failed put leaves nothing behind");
}
