//! The kernel serves `status` and the other small files from its page
//! cache, and is told of every change: readers never see a value the
//! machine did not have, and once a change is acknowledged (or announced
//! in `events`), every reader sees it. `poll()` wakes on changes, and
//! `events` files stream them, one reader at a time.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use common::{require_docker, Daemon};

/// Every status a machine can have.
const STATUSES: [&str; 7] = [
    "pending", "starting", "running", "paused", "stopping", "stopped", "failed",
];

/// Runs for good, and stops at once on SIGTERM (exit 0).
const FOREVER: &str = r#"["sh","-c","trap 'exit 0' TERM; while :; do sleep 1 & wait; done"]"#;
/// Fails by itself (exit 3) a moment after it starts.
const FAILS: &str = r#"["sh","-c","sleep 1.5; exit 3"]"#;

fn config(image: &str, cmd: &str) -> String {
    format!(r#"{{"image":"{image}","cmd":{cmd}}}"#)
}

/// `cat` of a file as a child, its lines handed over as they come; returns
/// once it waits for the first (so its stream has begun).
fn follow(d: &Daemon, rel: &str) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut child = d.blocked(&format!("exec cat {rel}"));
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

/// The next line, or a failure naming what was awaited.
fn next_line(rx: &mpsc::Receiver<String>, what: &str) -> String {
    rx.recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("no event line for {what}: {e}"))
}

/// Waits until `events` has said the machine is now `status`.
fn until_status(rx: &mpsc::Receiver<String>, status: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let line = next_line(rx, status);
        let done = line.ends_with(&format!("-> {status}"));
        seen.push(line);
        if done {
            return seen;
        }
    }
}

/// An `events` line's fields: time, subject, what, rest.
fn fields(line: &str) -> Vec<&str> {
    line.splitn(4, ' ').collect()
}

#[test]
fn readers_hammering_status_see_only_values_the_machine_had() {
    require_docker();
    let d = Arc::new(Daemon::start());
    let image = common::image();
    d.ok("mkdir machines/m");
    let status_path = d.mount.join("machines/m/status");
    // The truth, in order: the machine's own events from before the first
    // change until it is deleted.
    let (mut truth_cat, truth) = follow(&d, "machines/m/events");
    // Odd while a command is in flight, even once it was acknowledged.
    let phase = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let (phase, stop, path) = (phase.clone(), stop.clone(), status_path.clone());
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let before = phase.load(Ordering::SeqCst);
                    let v = std::fs::read_to_string(&path).expect("read status");
                    let after = phase.load(Ordering::SeqCst);
                    seen.push((before, v, after));
                }
                seen
            })
        })
        .collect();
    // What each acknowledged phase must show to every reader.
    let mut expected = vec!["pending\n".to_owned()];
    let mut lines = Vec::new();
    // Runs a command, then waits for `events` to announce each status in
    // `awaits`; the last one announced must be what everyone reads.
    let mut step = |file: &str, value: &str, awaits: &[&str]| {
        phase.fetch_add(1, Ordering::SeqCst);
        // Written directly: the commands hold quotes a shell would eat.
        std::fs::write(d.mount.join("machines/m").join(file), value).expect(value);
        for status in awaits {
            lines.extend(until_status(&truth, status));
        }
        let now = d.read("machines/m/status");
        if let Some(last) = awaits.last() {
            assert_eq!(now, format!("{last}\n"), "announced, so visible");
        }
        expected.push(now);
        phase.fetch_add(1, Ordering::SeqCst);
    };
    let fail_cfg = config(&image, FAILS);
    let forever_cfg = config(&image, FOREVER);
    step("config", &fail_cfg, &[]);
    // It fails by itself: announced in `events` means visible at once.
    step("ctl", "start", &["running", "failed"]);
    step("config", &forever_cfg, &[]);
    step("ctl", "start", &["running"]);
    step("ctl", "stop", &["stopped"]);
    step("ctl", "start", &["running"]);
    step("ctl", "kill", &["stopped"]);
    stop.store(true, Ordering::SeqCst);
    let seen: Vec<_> = readers
        .into_iter()
        .map(|r| r.join().expect("reader"))
        .collect();
    d.ok("rmdir machines/m");
    // The machine's events end with its deletion.
    lines.extend(truth.iter());
    truth_cat.wait().expect("events ends");
    assert!(
        lines.last().is_some_and(|l| l.ends_with(" m deleted")),
        "{lines:?}"
    );
    // Statuses in the order the machine had them.
    let mut statuses = vec!["pending".to_owned()];
    for l in &lines {
        let f = fields(l);
        if f[2] == "status" {
            let to = f[3].rsplit(' ').next().expect("to");
            statuses.push(to.to_owned());
        }
    }
    assert_eq!(
        statuses,
        [
            "pending", "starting", "running", "failed", "starting", "running", "stopping",
            "stopped", "starting", "running", "stopping", "stopped"
        ],
        "{lines:?}"
    );
    let after_ack: Vec<&str> = expected.iter().map(|s| s.trim_end()).collect();
    assert_eq!(
        after_ack,
        ["pending", "pending", "failed", "failed", "running", "stopped", "running", "stopped"]
    );
    let (mut reads, mut torn) = (0, Vec::new());
    for thread in &seen {
        // Each reader's values follow the machine's order, never going back.
        let mut at = 0;
        for (before, v, after) in thread {
            reads += 1;
            // A read racing a change can, rarely, come out malformed: the
            // kernel takes the size and the bytes in two requests and, when
            // an invalidation overtakes its size request, reads on with the
            // size it had, cutting the new value or leaving a stale tail
            // (see README, "Watching changes"). Counted, and bounded below.
            let whole = v.strip_suffix('\n').filter(|v| STATUSES.contains(v));
            let Some(v) = whole else {
                torn.push(v.clone());
                continue;
            };
            match statuses[at..].iter().position(|s| s == v) {
                Some(i) => at += i,
                None => panic!("read {v:?} after {:?}: {:?}", statuses[at], statuses),
            }
            // A read wholly inside an acknowledged phase sees its value.
            if before == after && before % 2 == 0 {
                assert_eq!(v, after_ack[(*before / 2) as usize], "phase {before}");
            }
        }
    }
    assert!(reads > 100, "the readers hardly read: {reads}");
    assert!(
        torn.len() * 100 <= reads,
        "{} cut reads of {reads}: {torn:?}",
        torn.len()
    );
}

/// The size `stat` gives is the length `cat` reads, for every cached file,
/// after changes as before.
#[test]
fn stat_sizes_match_what_reads_return() {
    require_docker();
    let d = Daemon::start();
    d.machine("web", FOREVER);
    let files = [
        "README",
        "runtimes/docker/status",
        "machines/web/id",
        "machines/web/config",
        "machines/web/status",
        "machines/web/error",
        "machines/web/errors",
        "machines/web/exec.exit",
        "machines/web/exec.stderr",
    ];
    let check = |when: &str| {
        for f in files {
            let size = std::fs::metadata(d.mount.join(f)).expect(f).len() as usize;
            let len = std::fs::read(d.mount.join(f)).expect(f).len();
            assert_eq!(size, len, "{f} {when}");
        }
    };
    check("before");
    d.ok("echo start > machines/web/ctl");
    std::fs::write(
        d.mount.join("machines/web/exec"),
        r#"{"cmd":["sh","-c","echo out; echo err >&2; exit 4"]}"#,
    )
    .expect("exec");
    d.fails("echo bogus > machines/web/ctl");
    check("after");
    assert_eq!(d.read("machines/web/exec.exit"), "4\n");
    assert_eq!(d.read("machines/web/exec.stderr"), "err\n");
    assert!(d.read("machines/web/error").contains("bogus"));
    // `ls -l` (names and attributes in one listing) agrees too.
    let listing = d.ok("ls -l machines/web");
    let status_size = listing
        .lines()
        .find(|l| l.ends_with(" status"))
        .and_then(|l| l.split_whitespace().nth(4))
        .expect("status in ls -l");
    assert_eq!(status_size, "8", "{listing}");
    d.ok("echo kill > machines/web/ctl");
}

/// Waits for POLLPRI on `fd` for up to `ms`; says whether it came.
fn poll_pri(fd: i32, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLPRI,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut p, 1, ms) };
    assert!(n >= 0, "poll: {}", std::io::Error::last_os_error());
    n == 1 && p.revents & libc::POLLPRI != 0
}

fn reread(f: &mut std::fs::File) -> String {
    use std::io::Seek;
    f.rewind().expect("rewind");
    let mut s = String::new();
    f.read_to_string(&mut s).expect("read");
    s
}

#[test]
fn poll_wakes_when_status_or_error_change() {
    require_docker();
    let d = Daemon::start();
    d.machine("web", FOREVER);
    let mut status = std::fs::File::open(d.mount.join("machines/web/status")).expect("open");
    let mut error = std::fs::File::open(d.mount.join("machines/web/error")).expect("open");
    assert_eq!(reread(&mut status), "pending\n");
    // Nothing changed: poll waits (here, out its timeout).
    assert!(!poll_pri(status.as_raw_fd(), 200));
    let mount = d.mount.clone();
    let starter = std::thread::spawn(move || {
        std::fs::write(mount.join("machines/web/ctl"), "start").expect("start");
    });
    // Each wake-up shows a new status, until running.
    let mut shown = Vec::new();
    while shown.last().map(String::as_str) != Some("running\n") {
        assert!(
            poll_pri(status.as_raw_fd(), 30_000),
            "no wake-up after {shown:?}"
        );
        shown.push(reread(&mut status));
    }
    starter.join().expect("start");
    assert_eq!(shown.first().map(String::as_str), Some("starting\n"));
    // A failure recorded in `error` wakes its pollers; status stays put.
    assert_eq!(reread(&mut error), "");
    d.fails("echo bogus > machines/web/ctl");
    assert!(poll_pri(error.as_raw_fd(), 30_000));
    assert!(reread(&mut error).contains("bogus"));
    assert!(!poll_pri(status.as_raw_fd(), 200), "status did not change");
    d.ok("echo kill > machines/web/ctl");
    assert!(poll_pri(status.as_raw_fd(), 30_000));
    assert_eq!(reread(&mut status), "stopped\n");
}

#[test]
fn events_give_each_reader_its_own_stream_in_order() {
    let d = Daemon::start();
    let (mut early, early_rx) = follow(&d, "events");
    // The first line proves the reader is in place before the next change.
    d.ok("mkdir machines/a");
    let first = next_line(&early_rx, "a created");
    assert!(first.ends_with(" a created"), "{first}");
    let (mut late, late_rx) = follow(&d, "events");
    d.ok("mkdir machines/b");
    assert!(next_line(&late_rx, "b created").ends_with(" b created"));
    assert!(next_line(&early_rx, "b created").ends_with(" b created"));
    d.fails("echo bogus > machines/a/ctl");
    d.ok("rmdir machines/a machines/b");
    let rest: Vec<String> = (0..3).map(|_| next_line(&early_rx, "early")).collect();
    let late_rest: Vec<String> = (0..3).map(|_| next_line(&late_rx, "late")).collect();
    // The same changes, in the same order, for both.
    assert_eq!(rest, late_rest);
    let whats: Vec<String> = rest.iter().map(|l| fields(l)[1..3].join(" ")).collect();
    assert_eq!(whats, ["a error", "a deleted", "b deleted"]);
    assert!(fields(&rest[0])[3].contains("bogus"), "{}", rest[0]);
    // Every line starts with an ISO-8601 time.
    for l in &rest {
        let t = fields(l)[0];
        assert!(
            t.len() == 24 && t.ends_with('Z') && t.as_bytes()[10] == b'T',
            "{l}"
        );
    }
    early.kill().ok();
    late.kill().ok();
    early.wait().ok();
    late.wait().ok();
}

/// Shell idioms on `events`: `while read`, `grep --line-buffered`, and a
/// machine's own stream ending when the machine is deleted.
#[test]
fn events_work_with_while_read_and_grep() {
    let d = Daemon::start();
    d.ok("mkdir machines/a");
    let mount = d.mount.display().to_string();
    let mut watcher = Command::new("sh")
        .arg("-c")
        .arg(
            "cd \"$1\" && exec 3< machines/a/events && echo ready && while read t name what rest; do echo \"$name:$what\"; done <&3",
        )
        .arg("sh")
        .arg(&mount)
        .stdout(Stdio::piped())
        .spawn()
        .expect("sh");
    let mut out = BufReader::new(watcher.stdout.take().expect("stdout"));
    let mut ready = String::new();
    out.read_line(&mut ready).expect("ready");
    let mut grep = Command::new("sh")
        .arg("-c")
        .arg("exec 3< \"$1/events\" && echo ready && grep -m 1 --line-buffered ' error ' <&3")
        .arg("sh")
        .arg(&mount)
        .stdout(Stdio::piped())
        .spawn()
        .expect("grep");
    let mut grep_out = BufReader::new(grep.stdout.take().expect("stdout"));
    let mut ready = String::new();
    grep_out.read_line(&mut ready).expect("ready");
    // Events of another machine do not reach a's stream.
    d.ok("mkdir machines/b && rmdir machines/b");
    d.fails("echo bogus > machines/a/ctl");
    let mut first = String::new();
    out.read_line(&mut first).expect("line");
    assert_eq!(first, "a:error\n");
    d.ok("rmdir machines/a");
    let mut rest = String::new();
    out.read_to_string(&mut rest).expect("rest");
    // The loop ended by itself: the stream ended with the deletion.
    assert!(watcher.wait().expect("wait").success());
    assert!(rest.ends_with("a:deleted\n"), "{rest}");
    assert!(!rest.contains("b:"), "{rest}");
    let mut line = String::new();
    grep_out.read_to_string(&mut line).expect("grep");
    assert!(line.contains(" a error "), "{line}");
    assert!(grep.wait().expect("grep").success());
}

#[test]
fn a_slow_reader_loses_the_oldest_lines_and_is_told_how_many() {
    let d = Daemon::start();
    d.ok("mkdir machines/a");
    let mut slow = std::fs::File::open(d.mount.join("events")).expect("open");
    // Far more changes than a reader may fall behind by (4096), each a
    // refused command recorded in `error`; nobody reads meanwhile.
    let extra = 200;
    d.ok(&format!(
        "i=0; while [ $i -lt {} ]; do echo bogus$i > machines/a/ctl 2>/dev/null; i=$((i+1)); done; true",
        4096 + extra
    ));
    d.ok("rmdir machines/a");
    let mut buf = vec![0; 1 << 20];
    let mut text = String::new();
    while !text.ends_with(" a deleted\n") {
        let n = slow.read(&mut buf).expect("read");
        assert!(n > 0, "events ended");
        text.push_str(std::str::from_utf8(&buf[..n]).expect("utf-8"));
    }
    let lines: Vec<&str> = text.lines().collect();
    let marker = fields(lines[0]);
    assert_eq!(marker[1], "-", "{}", lines[0]);
    assert_eq!(marker[2], "dropped", "{}", lines[0]);
    let dropped: usize = marker[3]
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("count");
    // What is left is the newest, as many as a reader may fall behind by:
    // the last failures, consecutive, then the deletion.
    assert_eq!(lines.len() - 1, 4096, "{}", lines[1]);
    assert!(dropped > extra, "{}", lines[0]);
    let numbers: Vec<usize> = lines[1..lines.len() - 1]
        .iter()
        .filter_map(|l| {
            let at = l.find("\"bogus")? + 6;
            l[at..].split('"').next()?.parse().ok()
        })
        .collect();
    let last = 4096 + extra - 1;
    assert_eq!(numbers.last(), Some(&last));
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "a gap among the kept lines"
    );
    assert!(numbers.len() >= 4096 - 2, "{}", numbers.len());
}

/// A machine's stream ends with the machine even when the reader fell so
/// far behind that the `deleted` line itself was lost; `poll()` never calls
/// it readable for another machine's change.
#[test]
fn a_machines_stream_ends_with_it_even_past_lost_lines_and_polls_only_its_own() {
    use std::os::unix::fs::OpenOptionsExt;
    let d = Daemon::start();
    d.ok("mkdir machines/a machines/b");
    let mut a = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(d.mount.join("machines/a/events"))
        .expect("open");
    let poll_in = |f: &std::fs::File| {
        let mut p = libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        n == 1 && p.revents & libc::POLLIN != 0
    };
    // b's changes are not a's: not readable, and a read would block.
    d.fails("echo bogus > machines/b/ctl");
    assert!(!poll_in(&a), "readable for another machine's change");
    let mut buf = vec![0; 1 << 20];
    let err = a.read(&mut buf).expect_err("nothing of a's");
    assert_eq!(err.raw_os_error(), Some(libc::EAGAIN));
    d.fails("echo bogus > machines/a/ctl");
    assert!(poll_in(&a), "not readable for its own change");
    // a goes, then more changes than a reader may fall behind by.
    d.ok("rmdir machines/a");
    d.ok("i=0; while [ $i -lt 4200 ]; do echo x > machines/b/ctl 2>/dev/null; i=$((i+1)); done; true");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        loop {
            match a.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("read: {e}"),
            }
        }
        tx.send(text).ok();
    });
    let text = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("a's stream never ended");
    let last = text.lines().last().unwrap_or_default();
    assert!(last.contains(" - dropped "), "{text}");
    assert!(text.lines().all(|l| !l.contains(" b ")), "{text}");
}

/// A machine deleted through REST, where the kernel saw no `rmdir`, is
/// gone for readers that had it cached, and a new one of the same name is
/// not mistaken for it.
#[test]
fn a_machine_deleted_elsewhere_is_gone_for_cached_readers() {
    let (d, addr) = common::rest::rest_daemon();
    let rest = common::rest::Client::new(&addr);
    d.ok("mkdir machines/web");
    d.fails("echo bogus > machines/web/ctl");
    assert!(d.read("machines/web/error").contains("bogus"));
    d.ok("stat machines/web machines/web/status >/dev/null");
    assert_eq!(rest.delete("/machines/web").status, 204);
    let gone = d.fails("cat machines/web/status");
    common::expect_errno(&gone, "No such file or directory");
    d.fails("stat machines/web");
    d.ok("mkdir machines/web");
    assert_eq!(d.read("machines/web/error"), "");
    assert_eq!(d.read("machines/web/status"), "pending\n");
}
