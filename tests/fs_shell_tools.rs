//! Shell tools on the tree, and failures the shell can see: `cp -r` and
//! `tar` of a machine directory copy what `cat` shows; `rm -rf` deletes a
//! stopped machine; `mkdir -p` creates nothing rather than half; a broken
//! `echo ... > config` fails its own write; a refused write's reason stays
//! in `error` (and `errors` keeps the history); exec sessions work from
//! plain shell.

mod common;

use common::{expect_errno, require_docker, Daemon};

#[test]
fn cp_and_tar_of_a_machine_directory_copy_what_cat_shows() {
    require_docker();
    let d = Daemon::start();
    d.running("web", r#"["sh","-c","echo hi; sleep 600"]"#);
    d.ok("echo 'echo result' > machines/web/exec");
    let dest = tempfile::tempdir().unwrap();
    let to = dest.path().display().to_string();
    d.ok(&format!("cp -r machines/web {to}/copy"));
    for f in [
        "id",
        "config",
        "status",
        "ctl",
        "exec",
        "exec.exit",
        "error",
    ] {
        assert_eq!(
            std::fs::read_to_string(dest.path().join("copy").join(f)).unwrap(),
            d.read(&format!("machines/web/{f}")),
            "{f}"
        );
    }
    let info = std::fs::read_to_string(dest.path().join("copy/info")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&info).expect("info copied whole");
    assert_eq!(v["name"], "web");
    // Sizes are real: what stat says is what a read gives, info included.
    for f in ["config", "status", "ctl", "info", "exec", "logs"] {
        let size: usize = d
            .ok(&format!("stat -c %s machines/web/{f}"))
            .trim()
            .parse()
            .unwrap();
        let len = d
            .ok(&format!("cat machines/web/{f} | wc -c"))
            .trim()
            .parse::<usize>()
            .unwrap();
        assert_eq!(size, len, "{f}");
    }
    // tar reads exactly the sizes stat gives; a mismatch would warn and fail.
    d.ok(&format!(
        "tar -cf {to}/web.tar -C machines web 2>{to}/tar.err"
    ));
    assert_eq!(
        std::fs::read_to_string(dest.path().join("tar.err")).unwrap(),
        ""
    );
    d.ok(&format!("mkdir {to}/x && tar -xf {to}/web.tar -C {to}/x"));
    let untarred: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dest.path().join("x/web/info")).unwrap())
            .expect("info in the tarball is whole");
    assert_eq!(untarred["name"], "web");
    assert_eq!(
        std::fs::read_to_string(dest.path().join("x/web/config")).unwrap(),
        d.read("machines/web/config")
    );
    d.ok("echo kill > machines/web/ctl");
}

#[test]
fn rm_rf_deletes_a_stopped_machine_and_refuses_a_running_one() {
    require_docker();
    let d = Daemon::start();
    d.ok("mkdir machines/idle");
    d.ok("rm -rf machines/idle");
    assert_eq!(d.ok("ls machines"), "");
    d.running("web", r#"["sleep","600"]"#);
    let stderr = d.fails("rm -rf machines/web");
    expect_errno(&stderr, "Device or resource busy");
    assert_eq!(d.read("machines/web/status"), "running\n");
    d.ok("echo kill > machines/web/ctl && rm -rf machines/web");
    assert_eq!(d.ok("ls machines"), "");
    assert!(d.containers().is_empty());
}

#[test]
fn mkdir_p_inside_a_machine_creates_nothing() {
    let d = Daemon::start();
    let stderr = d.fails("mkdir -p machines/x/y");
    expect_errno(&stderr, "Operation not permitted");
    assert_eq!(d.ok("ls machines"), "");
    // A machine that existed before is left alone.
    d.ok("mkdir machines/kept");
    d.fails("mkdir -p machines/kept/y");
    assert_eq!(d.ok("ls machines"), "kept\n");
    // Names are what Docker allows: a letter or a digit first.
    for bad in ["-rf", "_x", ".hidden"] {
        let stderr = d.fails(&format!("mkdir -- machines/{bad}"));
        expect_errno(&stderr, "Invalid argument");
    }
}

#[test]
fn a_mkdir_inside_a_fresh_machine_by_an_unseen_process_deletes_nothing() {
    // In a pid namespace of its own, the daemon cannot see the test's
    // processes: each request comes with pid 0, as requests from other
    // containers do for a daemon in one. Two unrelated processes then look
    // like one, yet the second's failed mkdir must not undo the first's.
    let d = Daemon::start_under(&["unshare", "--pid", "--fork", "--kill-child=SIGTERM"], &[]);
    d.ok("mkdir machines/x");
    let stderr = d.fails("mkdir machines/x/y");
    expect_errno(&stderr, "Operation not permitted");
    assert_eq!(d.ok("ls machines"), "x\n");
    assert_eq!(d.read("machines/x/status"), "pending\n");
}

#[test]
fn a_broken_config_fails_the_write_that_ends_it() {
    let d = Daemon::start();
    d.ok("mkdir machines/web");
    let before = d.read("machines/web/config");
    // The shell sees the failure: the newline ends the document.
    let stderr = d.fails(r#"/bin/echo '{"image":"x"' > machines/web/config"#);
    expect_errno(&stderr, "Invalid argument");
    assert_eq!(d.read("machines/web/config"), before);
    assert!(
        d.read("machines/web/error").contains("EOF"),
        "{}",
        d.read("machines/web/error")
    );
    // Without a newline, pieces one process writes are put together until
    // the close.
    d.ok(r#"{ printf '{"image":'; printf '"busybox"}'; } > machines/web/config"#);
    assert!(d.read("machines/web/config").contains("\"busybox\""));
}

#[test]
fn a_refused_vim_write_leaves_its_reason_and_errors_keep_the_history() {
    let d = Daemon::start();
    d.ok(r#"mkdir machines/e && echo '{"image":"busybox","vcpu_count":1}' > machines/e/config"#);
    // vim writes the bad text (refused), then the edit is undone and written
    // back (accepted): the reason stays.
    d.fails(
        r#"vim -es -u NONE -c '%s/"vcpu_count": 1/"vcpu_count": "x"/' -c 'w' -c 'u' -c 'wq' machines/e/config"#,
    );
    assert!(d.read("machines/e/config").contains("\"vcpu_count\": 1,"));
    let error = d.read("machines/e/error");
    assert!(
        error.contains("vcpu_count"),
        "the reason was wiped: {error:?}"
    );
    d.fails("/bin/echo bogus > machines/e/ctl");
    let errors = d.read("machines/e/errors");
    let lines: Vec<&str> = errors.lines().collect();
    assert_eq!(lines.len(), 2, "{errors}");
    assert!(
        lines[0].contains("vcpu_count") && lines[1].contains("bogus"),
        "{errors}"
    );
    // Each line starts with an ISO-8601 time.
    assert!(lines
        .iter()
        .all(|l| l.len() > 24 && &l[4..5] == "-" && l[10..11] == *"T"));
    assert!(d.read("machines/e/error").contains("bogus"));
}

#[test]
fn an_exec_session_from_plain_shell() {
    require_docker();
    let d = Daemon::start();
    d.running("web", r#"["sleep","600"]"#);
    let out = d.ok(r#"exec 3< machines/web/exec.new; read n <&3
           s=machines/web/sessions/$n
           [ -d $s ] && ls $s | tr '\n' ' '
           echo 'sh -c "tr a-z A-Z; echo done >&2; exit 4"' > $s/ctl
           printf 'hello\n' > $s/stdin
           echo close-stdin > $s/ctl
           cat $s/stdout $s/stderr $s/exit
           exec 3<&-
           ls machines/web/sessions | wc -l"#);
    assert_eq!(out, "ctl exit stderr stdin stdout HELLO\ndone\n4\n0\n");
    // A signal sent the moment the command is started reaches it.
    let out = d.ok(r#"exec 3< machines/web/exec.new; read n <&3
           echo 'sleep 30' > machines/web/sessions/$n/ctl
           echo 'signal TERM' > machines/web/sessions/$n/ctl
           cat machines/web/sessions/$n/exit"#);
    assert_eq!(out, "143\n");
    // Stdin before any command, and a bad control once one runs, are refused.
    let stderr = d.fails(
        r#"exec 3< machines/web/exec.new; read n <&3
           /bin/echo data > machines/web/sessions/$n/stdin"#,
    );
    expect_errno(&stderr, "Broken pipe");
    for control in ["winsize 0 0", "signal NOPE", "start"] {
        let stderr = d.fails(&format!(
            r#"exec 3< machines/web/exec.new; read n <&3
               echo 'sleep 30' > machines/web/sessions/$n/ctl
               /bin/echo '{control}' > machines/web/sessions/$n/ctl"#
        ));
        expect_errno(&stderr, "Invalid argument");
    }
}
