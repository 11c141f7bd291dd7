//! VMM process supervision without a VMM: stand-in processes (`sleep`, `sh`)
//! show spawning, pid files, re-adoption, exit notification and termination.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use hyperfleet::runtime::http::{HttpError, UnixHttp};
use hyperfleet::runtime::process::{ProcessError, ProcessHandle, Termination};
use hyperfleet::runtime::vmm_process::{Vmm, VmmCommand, VmmError, VmmExit};

use crate::common::fake_vmm::{no_socket_command, silent_socket};
use crate::common::vmm::{runtime_dir, KillOnDrop};

fn sleeper(dir: &Path) -> VmmCommand {
    VmmCommand::new("/bin/sleep", dir).arg("60")
}

fn spawn(cmd: &VmmCommand) -> (Vmm, KillOnDrop) {
    let vmm = Vmm::spawn(cmd).expect("spawn");
    let guard = KillOnDrop(vmm.handle());
    (vmm, guard)
}

/// Waits (bounded) until `pid` ignores SIGTERM, as shown in /proc.
fn wait_until_ignoring_sigterm(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let ignored = status
            .lines()
            .find_map(|l| l.strip_prefix("SigIgn:"))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .unwrap_or(0);
        if ignored & (1 << (libc::SIGTERM - 1)) != 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "process {pid} never ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[tokio::test]
async fn pid_file_names_the_process_until_it_is_gone() {
    let dir = runtime_dir();
    let cmd = sleeper(dir.path());
    let (mut vmm, _guard) = spawn(&cmd);

    let recorded = ProcessHandle::read(&cmd.pid_file)
        .unwrap()
        .expect("pid file");
    assert_eq!(recorded, vmm.handle());
    assert!(recorded.is_alive());
    assert!(vmm.is_child());

    let exit = vmm.terminate(Duration::from_secs(5)).await.unwrap();
    assert_eq!(exit, VmmExit::Signal(libc::SIGTERM));
    assert!(!recorded.is_alive(), "a terminated process is not alive");
    assert!(
        ProcessHandle::read(&cmd.pid_file).unwrap().is_none(),
        "terminate removes its pid file"
    );
    // Adopting from a pid file whose process is gone finds nothing.
    recorded.write(&cmd.pid_file).unwrap();
    assert!(Vmm::adopt(&cmd).unwrap().is_none());
}

#[tokio::test]
async fn pid_file_that_is_not_ours_is_refused() {
    let dir = runtime_dir();
    let pid_file = dir.path().join("vmm.pid");
    assert!(ProcessHandle::read(&pid_file).unwrap().is_none());
    std::fs::write(&pid_file, "12345\n").unwrap();
    let err = ProcessHandle::read(&pid_file).unwrap_err();
    assert!(matches!(err, ProcessError::CorruptPidFile { .. }), "{err}");
}

#[tokio::test]
async fn a_reused_pid_is_not_mistaken_for_the_process() {
    let dir = runtime_dir();
    let (vmm, _guard) = spawn(&sleeper(dir.path()));
    // Same pid, other start time: what a pid file from before a reboot or a
    // pid reuse looks like.
    let impostor = ProcessHandle {
        start_time: vmm.handle().start_time + 1,
        ..vmm.handle()
    };
    assert!(!impostor.is_alive());
    assert!(
        !impostor.signal(libc::SIGKILL).unwrap(),
        "no signal is sent"
    );
    assert_eq!(
        impostor.terminate(Duration::ZERO).await.unwrap(),
        Termination::AlreadyGone
    );
    assert!(vmm.handle().is_alive(), "the real process was not touched");
}

#[tokio::test]
async fn a_second_spawn_in_the_same_runtime_dir_is_refused() {
    let dir = runtime_dir();
    let cmd = sleeper(dir.path());
    let (first, _guard) = spawn(&cmd);
    let err = Vmm::spawn(&cmd).unwrap_err();
    match err {
        VmmError::AlreadyRunning { pid, .. } => assert_eq!(pid, first.pid()),
        other => panic!("expected AlreadyRunning, got {other}"),
    }
}

#[tokio::test]
async fn exit_of_a_process_that_is_not_our_child_is_noticed() {
    // The shell starts `sleep` in the background and exits: the sleep is
    // re-parented away from us, as a VMM is after a daemon restart.
    let out = std::process::Command::new("sh")
        .args(["-c", "sleep 60 >/dev/null 2>&1 & echo $!"])
        .output()
        .unwrap();
    let pid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let handle = ProcessHandle::of(pid).unwrap();
    let _guard = KillOnDrop(handle);
    assert!(handle.is_alive());

    let dir = runtime_dir();
    let cmd = sleeper(dir.path());
    handle.write(&cmd.pid_file).unwrap();
    let mut adopted = Vmm::adopt(&cmd).unwrap().expect("adopted");
    assert!(!adopted.is_child());
    assert_eq!(adopted.pid(), pid);

    let waiter = tokio::spawn(async move { adopted.wait().await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiter.is_finished(), "wait returned while the process ran");

    // SAFETY: kill(2) on a positive pid we just checked is our sleep.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let exit = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("pidfd wait fired")
        .unwrap()
        .unwrap();
    assert_eq!(
        exit,
        VmmExit::Unknown,
        "a non-child's exit code is not known"
    );
    assert!(!handle.is_alive());
}

#[tokio::test]
async fn terminate_kills_a_process_that_ignores_sigterm_after_the_grace() {
    let dir = runtime_dir();
    let cmd = VmmCommand::new("/bin/sh", dir.path())
        .arg("-c")
        .arg("trap '' TERM; exec sleep 60");
    let (mut vmm, _guard) = spawn(&cmd);
    wait_until_ignoring_sigterm(vmm.pid());

    let grace = Duration::from_millis(300);
    let started = Instant::now();
    let exit = vmm.terminate(grace).await.unwrap();
    let took = started.elapsed();
    assert_eq!(exit, VmmExit::Signal(libc::SIGKILL));
    assert!(
        took >= grace,
        "SIGKILL came before the grace ended: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(!vmm.handle().is_alive());
}

#[tokio::test]
async fn terminate_of_a_cooperative_process_needs_no_sigkill() {
    let dir = runtime_dir();
    let (mut vmm, _guard) = spawn(&sleeper(dir.path()));
    let started = Instant::now();
    let exit = vmm.terminate(Duration::from_secs(30)).await.unwrap();
    assert_eq!(exit, VmmExit::Signal(libc::SIGTERM));
    assert!(started.elapsed() < Duration::from_secs(5));
    // Terminating again is harmless.
    assert_eq!(
        vmm.handle().terminate(Duration::ZERO).await.unwrap(),
        Termination::AlreadyGone
    );
}

#[tokio::test]
async fn spawned_vmm_is_detached_and_inherits_no_descriptor() {
    let dir = runtime_dir();
    // A descriptor without close-on-exec, as a careless library leaves one.
    let leaky = std::fs::File::open("/dev/null").unwrap();
    // SAFETY: clearing FD_CLOEXEC on an fd we own.
    unsafe { libc::fcntl(leaky.as_raw_fd(), libc::F_SETFD, 0) };

    let (vmm, _guard) = spawn(&sleeper(dir.path()));
    let pid = vmm.pid();
    let open_fds = || {
        let mut fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        fds.sort();
        fds
    };
    // The program's own loader opens (and closes) its libraries just after
    // exec; an inherited descriptor would stay.
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut fds = open_fds();
    while fds != ["0", "1", "2"] && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        fds = open_fds();
    }
    assert_eq!(fds, ["0", "1", "2"], "only stdio is open in the VMM");
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/fd/0")).unwrap(),
        Path::new("/dev/null")
    );
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/fd/2")).unwrap(),
        vmm.stderr_path()
    );
    // Field 6 of stat is the session id: its own session.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let session: u32 = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(3)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(session, pid, "the VMM leads its own session");
    drop(leaky);
}

#[tokio::test]
async fn missing_and_non_executable_binaries_fail_clearly() {
    let dir = runtime_dir();
    let missing = dir.path().join("no-such-vmm");
    let err = Vmm::spawn(&VmmCommand::new(&missing, dir.path())).unwrap_err();
    assert!(matches!(err, VmmError::BinaryMissing { .. }), "{err}");
    assert!(err.to_string().contains("does not exist"), "{err}");

    let not_exec = dir.path().join("not-executable");
    std::fs::write(&not_exec, "#!/bin/sh\n").unwrap();
    let err = Vmm::spawn(&VmmCommand::new(&not_exec, dir.path())).unwrap_err();
    assert!(matches!(err, VmmError::BinaryNotExecutable { .. }), "{err}");
    assert!(err.to_string().contains("cannot be executed"), "{err}");
    // Nothing was left running or recorded.
    assert!(!dir.path().join("vmm.pid").exists());
}

#[tokio::test]
async fn early_exit_reports_the_status_and_last_output() {
    let dir = runtime_dir();
    let cmd = VmmCommand::new("/bin/sh", dir.path())
        .arg("-c")
        .arg("echo starting; echo 'bad config: no kernel' >&2; exit 3")
        .socket(dir.path().join("api.sock"));
    let (mut vmm, _guard) = spawn(&cmd);
    let http = UnixHttp::new(&cmd.sockets[0]);
    let started = Instant::now();
    let err = vmm
        .wait_ready(&cmd.sockets[0], Duration::from_secs(10), || {
            http.get_json::<serde_json::Value>("/")
        })
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "noticed late");
    match &err {
        VmmError::EarlyExit { exit, output, .. } => {
            assert_eq!(*exit, VmmExit::Code(3));
            assert_eq!(output.stderr, ["bad config: no kernel"]);
            assert_eq!(output.stdout, ["starting"]);
        }
        other => panic!("expected EarlyExit, got {other}"),
    }
    assert!(err.to_string().contains("bad config: no kernel"), "{err}");
}

#[tokio::test]
async fn a_socket_that_never_appears_hits_the_deadline() {
    let dir = runtime_dir();
    let cmd = no_socket_command(dir.path());
    let (mut vmm, _guard) = spawn(&cmd);
    let http = UnixHttp::new(&cmd.sockets[0]);
    let timeout = Duration::from_millis(500);
    let started = Instant::now();
    let err = vmm
        .wait_ready(&cmd.sockets[0], timeout, || {
            http.get_json::<serde_json::Value>("/")
        })
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(took >= timeout && took < Duration::from_secs(3), "{took:?}");
    assert!(
        matches!(
            err,
            VmmError::NotReady {
                last_error: None,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_socket_that_never_answers_hits_the_deadline_with_the_cause() {
    let dir = runtime_dir();
    let cmd = no_socket_command(dir.path());
    let (mut vmm, _guard) = spawn(&cmd);
    // Bound after the spawn, which clears stale sockets.
    let _listener = silent_socket(&cmd.sockets[0]);
    let http = UnixHttp::new(&cmd.sockets[0]).with_timeout(Duration::from_millis(200));
    let err = vmm
        .wait_ready(&cmd.sockets[0], Duration::from_secs(1), || {
            http.get_json::<serde_json::Value>("/")
        })
        .await
        .unwrap_err();
    match err {
        VmmError::NotReady {
            last_error: Some(cause),
            ..
        } if matches!(*cause, HttpError::Timeout { .. }) => {}
        other => panic!("expected NotReady after a request timeout, got {other:?}"),
    }
}
