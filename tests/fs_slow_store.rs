//! A slow disk stalls nothing but the operation that writes: while every
//! commit crawls, `ls` and `cat status` of other machines answer at once.
//! The store is slowed by the daemon's test-only hook.
//!
//! (A `mkdir` or `rmdir` in progress is different: the kernel itself holds
//! the `machines/` directory locked for the whole call, so a listing waits
//! for it whatever the daemon does.)

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Daemon;

/// Every store write takes this long: well over the second `info` may be
/// kept, so that the config write's operation shows in it. (Concurrent
/// writes wait out their delays side by side, then share a commit.)
const DELAY_MS: u64 = 3000;

#[test]
fn reads_answer_at_once_while_commits_crawl() {
    let d = Daemon::start_with_env(&[("HYPERFLEET_TEST_STORE_DELAY_MS", &DELAY_MS.to_string())]);
    d.ok("mkdir machines/a machines/b");
    // Writers stuck on the disk: a config, and more refused commands (each
    // records its error) than the filesystem has threads. Each returns only
    // after its commit.
    let mut writer = Command::new("sh")
        .arg("-c")
        .arg(
            "/bin/echo '{\"image\":\"x\"}' > machines/b/config & \
             for i in 1 2 3 4 5 6; do /bin/echo bogus > machines/b/ctl 2>/dev/null & done; \
             wait",
        )
        .current_dir(&d.mount)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn writer");
    // Measure only once a commit is in flight: the config write holds the
    // machine's operation while its commit crawls, and `info` says so.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !d.read("machines/b/info").contains("\"operation\"") {
        assert!(Instant::now() < deadline, "the config write never began");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Twenty rounds of reads; if any of them waited on a commit it would
    // wait behind all seven crawling writes, and the writer would be done by
    // the time the reads are. Ordering, not a stopwatch, is the proof.
    for _ in 0..20 {
        let status = std::fs::read_to_string(d.mount.join("machines/a/status")).expect("status");
        let names: Vec<_> = std::fs::read_dir(d.mount.join("machines"))
            .expect("ls")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(status, "pending\n");
        assert!(names.iter().any(|n| n == "a"), "{names:?}");
    }
    // All of that happened while the writer was still waiting on the disk.
    assert!(
        writer.try_wait().expect("try_wait").is_none(),
        "the reads finished only after the slow commits did"
    );
    writer.wait().expect("wait");
    assert_eq!(d.read("machines/b/status"), "pending\n");
    assert!(d.read("machines/b/config").contains("\"x\""));
    assert!(d.read("machines/b/error").contains("bogus"));
}
