//! Many processes using the filesystem at once, like many users or scripts
//! would: nothing lost, nothing duplicated, and races have exactly one winner.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::{require_docker, Daemon};

const STATUSES: [&str; 7] = [
    "pending", "starting", "running", "paused", "stopping", "stopped", "failed",
];

/// Containers of this daemon that Docker reports as running.
fn running_containers(d: &Daemon) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-q", "--no-trunc", "--filter"])
        .arg(format!("label=hyperfleet.instance={}", d.instance()))
        .output()
        .expect("docker ps");
    assert!(out.status.success(), "docker ps failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The value of `label` on every container of this daemon.
fn container_labels(d: &Daemon, label: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-a", "--filter"])
        .arg(format!("label=hyperfleet.instance={}", d.instance()))
        .arg("--format")
        .arg(format!("{{{{.Label \"{label}\"}}}}"))
        .output()
        .expect("docker ps");
    assert!(out.status.success(), "docker ps failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn lines(s: &str) -> Vec<String> {
    s.lines().map(str::to_owned).collect()
}

/// A script fragment that starts `n` copies of `job` (which sees its number
/// in `$i`) held at a barrier, releases them together once every one has
/// reached it, and prints one line per job: `OK` or `FAIL <stderr>`.
fn race(n: usize, job: &str) -> String {
    format!(
        r#"T=$(mktemp -d)
for i in $(seq 1 {n}); do
  (
    touch "$T/ready.$i"
    until [ -e "$T/go" ]; do sleep 0.01; done
    if {job} 2>"$T/err.$i"; then echo OK; else echo "FAIL $(cat "$T/err.$i")"; fi
  ) &
done
until [ "$(ls "$T" | grep -c '^ready\.')" -eq {n} ]; do sleep 0.01; done
touch "$T/go"
wait
rm -rf "$T""#
    )
}

/// Runs `job` (a shell snippet using `$i`) for i = 1..=n, each in its own
/// process, all at once; asserts every one of them succeeded.
fn in_parallel(d: &Daemon, n: usize, job: &str) {
    let out = d.ok(&format!(
        r#"pids=
for i in $(seq 1 {n}); do
  ( {job} ) &
  pids="$pids $!"
done
failed=0
for p in $pids; do wait $p || failed=$((failed + 1)); done
echo "failed=$failed"
[ "$failed" -eq 0 ]"#
    ));
    assert_eq!(out, "failed=0\n");
}

#[test]
fn fifty_machines_created_started_and_removed_in_parallel() {
    require_docker();
    let d = Daemon::start();
    let n = 50;

    // 50 separate processes, each creating, configuring and starting its own
    // machine; every job's exit status is checked.
    in_parallel(
        &d,
        n,
        r#"mkdir machines/m$i &&
    printf '%s' '{"image":"'"$IMAGE"'","cmd":["sleep","600"]}' > machines/m$i/config &&
    /bin/echo start > machines/m$i/ctl"#,
    );

    let expected: BTreeSet<String> = (1..=n).map(|i| format!("m{i}")).collect();
    let listed: Vec<String> = lines(&d.ok("ls machines"));
    assert_eq!(listed.len(), n, "ls machines: {listed:?}");
    assert_eq!(listed.iter().cloned().collect::<BTreeSet<_>>(), expected);
    for name in &expected {
        assert_eq!(
            d.read(&format!("machines/{name}/status")),
            "running\n",
            "{name}: error: {}",
            d.read(&format!("machines/{name}/error"))
        );
    }
    assert_eq!(d.ok("ls by-status/running | wc -l").trim(), n.to_string());
    let running: BTreeSet<String> = lines(&d.ok("ls by-status/running")).into_iter().collect();
    assert_eq!(running, expected);

    // Exactly one container per machine: none lost, none started twice.
    assert_eq!(d.containers().len(), n, "containers of this daemon");
    assert_eq!(running_containers(&d).len(), n, "running containers");
    let ids: Vec<String> = expected
        .iter()
        .map(|name| d.read(&format!("machines/{name}/id")).trim().to_owned())
        .collect();
    let distinct: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(distinct.len(), n, "machine ids are not distinct: {ids:?}");
    let labelled: Vec<String> = container_labels(&d, "hyperfleet.machine-id");
    assert_eq!(labelled.len(), n);
    assert_eq!(
        labelled.iter().cloned().collect::<BTreeSet<_>>(),
        distinct,
        "each container belongs to exactly one machine"
    );
    let names: BTreeSet<String> = container_labels(&d, "hyperfleet.machine-name")
        .into_iter()
        .collect();
    assert_eq!(names, expected);

    // Everything killed and removed in parallel, again one process per machine.
    in_parallel(
        &d,
        n,
        "/bin/echo kill > machines/m$i/ctl && rmdir machines/m$i",
    );
    assert_eq!(d.ok("ls machines"), "");
    assert_eq!(d.ok("ls by-status/running"), "");
    assert_eq!(d.ok("ls by-status/stopped"), "");
    assert!(
        d.containers().is_empty(),
        "containers left behind: {:?}",
        d.containers()
    );
}

#[test]
fn racing_mkdirs_of_one_name_have_exactly_one_winner() {
    require_docker();
    let d = Daemon::start();
    let out = d.ok(&race(20, "mkdir machines/same"));
    let results = lines(&out);
    assert_eq!(results.len(), 20, "{out}");
    let wins = results.iter().filter(|l| *l == "OK").count();
    assert_eq!(wins, 1, "exactly one mkdir must succeed:\n{out}");
    for l in results.iter().filter(|l| *l != "OK") {
        assert!(l.contains("File exists"), "loser failed otherwise: {l}");
    }
    assert_eq!(d.ok("ls machines"), "same\n");
    assert_eq!(d.read("machines/same/status"), "pending\n");
    assert_eq!(d.ok("ls by-status/pending"), "same\n");
}

#[test]
fn racing_starts_of_one_machine_start_it_once() {
    require_docker();
    let d = Daemon::start();
    d.machine("r", r#"["sleep","600"]"#);
    let out = d.ok(&race(20, "/bin/echo start > machines/r/ctl"));
    let results = lines(&out);
    assert_eq!(results.len(), 20, "{out}");
    let wins = results.iter().filter(|l| *l == "OK").count();
    assert_eq!(wins, 1, "exactly one start must succeed:\n{out}");
    // A loser finds it running (EALREADY), or, on a loaded host, gives up
    // waiting for the winner's start (EBUSY); it never starts a second copy.
    for l in results.iter().filter(|l| *l != "OK") {
        assert!(
            l.contains("Operation already in progress") || l.contains("Device or resource busy"),
            "loser should fail with EALREADY or EBUSY: {l}"
        );
    }
    assert_eq!(d.read("machines/r/status"), "running\n");
    assert_eq!(d.containers().len(), 1, "one machine, one container");
    assert_eq!(running_containers(&d).len(), 1);
    // The machine works: it is the one running container.
    assert_eq!(
        d.ok("echo 'echo alive' > machines/r/exec && cat machines/r/exec"),
        "alive\n"
    );
    d.ok("echo kill > machines/r/ctl && rmdir machines/r");
    assert!(d.containers().is_empty());
}

#[test]
fn readers_never_fail_while_machines_come_and_go() {
    require_docker();
    let d = Daemon::start();
    // Two machines that exist throughout, so every glob matches something
    // and reads of them must never fail.
    d.machine("keep1", r#"["sleep","600"]"#);
    d.ok("echo start > machines/keep1/ctl");
    d.machine("keep2", r#"["sleep","600"]"#);

    let readers = 4;
    let rounds = 2;
    let per_round = 10;
    let out = d.ok(&format!(
        r#"T=$(mktemp -d)
reader() {{
  n=0
  while [ ! -e "$T/done" ]; do
    ls machines > /dev/null 2>> "$T/lserr.$1" || echo "ls machines: exit $?" >> "$T/lserr.$1"
    ls by-status/running by-status/starting > /dev/null 2>> "$T/lserr.$1" || echo "ls by-status: exit $?" >> "$T/lserr.$1"
    ls -l machines > /dev/null 2>> "$T/err.$1"
    echo -- >> "$T/status.$1"
    cat machines/*/status >> "$T/status.$1" 2>> "$T/err.$1"
    n=$((n + 1))
  done
  echo $n > "$T/iters.$1"
}}
for r in $(seq 1 {readers}); do reader $r & done
failed=0
for round in $(seq 1 {rounds}); do
  pids=
  for i in $(seq 1 {per_round}); do
    ( m=machines/w$round-$i &&
      mkdir $m &&
      printf '%s' '{{"image":"'"$IMAGE"'","cmd":["sleep","600"]}}' > $m/config &&
      /bin/echo start > $m/ctl &&
      /bin/echo kill > $m/ctl &&
      rmdir $m ) &
    pids="$pids $!"
  done
  for p in $pids; do wait $p || failed=$((failed + 1)); done
done
touch "$T/done"
wait
echo "writers_failed=$failed"
for r in $(seq 1 {readers}); do
  echo "iters=$(cat "$T/iters.$r")"
  sed 's/^/lserr: /' "$T/lserr.$r"
  sed 's/^/err: /' "$T/err.$r"
  sed 's/^/status: /' "$T/status.$r"
done
rm -rf "$T""#
    ));

    let report = lines(&out);
    let field = |prefix: &str| -> Vec<String> {
        report
            .iter()
            .filter_map(|l| l.strip_prefix(prefix).map(str::to_owned))
            .collect()
    };
    assert_eq!(field("writers_failed="), vec!["0".to_owned()], "{out}");

    let iters: Vec<usize> = field("iters=")
        .iter()
        .map(|n| n.parse().expect("iteration count"))
        .collect();
    assert_eq!(iters.len(), readers);
    assert!(
        iters.iter().all(|n| *n >= 3),
        "readers did not overlap the writers: {iters:?}"
    );

    // Listing a directory never fails, whatever happens to its entries.
    let ls_errors = field("lserr: ");
    assert!(ls_errors.is_empty(), "ls failed: {ls_errors:#?}");

    // Reads fail only because the machine was removed meanwhile.
    for e in field("err: ") {
        assert!(
            e.contains("No such file or directory"),
            "a reader failed with something other than ENOENT: {e}"
        );
        assert!(
            e.contains("machines/w"),
            "a machine that was never removed vanished: {e}"
        );
    }

    // Every status read is a whole, valid status; and the readers did see
    // the writers' machines (more than the two permanent ones at once).
    let mut widest = 0;
    let mut current = 0;
    for s in field("status: ") {
        if s == "--" {
            current = 0;
            continue;
        }
        assert!(STATUSES.contains(&s.as_str()), "bad status read: {s:?}");
        current += 1;
        widest = widest.max(current);
    }
    assert!(
        widest > 2,
        "readers never saw a writer's machine (widest read: {widest})"
    );

    assert_eq!(d.ok("ls machines"), "keep1\nkeep2\n");
    assert_eq!(d.read("machines/keep1/status"), "running\n");
    assert_eq!(d.read("machines/keep2/status"), "pending\n");
    assert_eq!(d.containers().len(), 1, "only keep1's container is left");
}
