//! `hyperfleet exec [-i] [-t] ... NAME [--] CMD...`, like `docker exec`, as
//! a client of the filesystem's exec sessions: it opens `exec.new` to get a
//! session, writes the command to its `ctl`, then pumps its own stdin into
//! the session's `stdin` and the session's `stdout`/`stderr` out as the
//! bytes come, forwards signals and window sizes through `ctl`, and exits
//! with what the session's `exit` says.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::term::{window_size, RawMode};
use super::{Failure, Mount};
use crate::model::exec::signal_number;

/// Exit status when the command could not run at all (as `docker exec`).
pub const EXIT_CANNOT_RUN: i32 = 125;
/// Exit status when the command ran out of time (as `timeout(1)`).
pub const EXIT_TIMED_OUT: i32 = 124;
/// Exit status when this client's stdout or stderr was a pipe whose reader
/// went away (`hyperfleet exec web -- journalctl | head`): 128 + SIGPIPE,
/// what a shell reports for a pipeline member SIGPIPE killed, as the
/// docker CLI is. The command gets SIGPIPE too, as a local pipeline's
/// writer would on its next write; one that survives it is waited for
/// (its output dropped), as a shell waits for every member of a pipeline.
pub const EXIT_BROKEN_PIPE: i32 = 128 + libc::SIGPIPE;
/// Exit status when how the command ended is not known (the VM or its
/// agent went away mid-command, the engine lost track of it): a failure,
/// never a success a script would go on from; as `ssh` says a lost
/// connection.
pub const EXIT_UNKNOWN: i32 = 255;

#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// Pass this process's stdin to the command.
    pub interactive: bool,
    /// Run the command on a pty.
    pub tty: bool,
    pub env: BTreeMap<String, String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    /// Seconds; none means no limit.
    pub timeout: Option<f64>,
}

/// Signals forwarded to the command (and SIGWINCH, as a window size).
const FORWARDED: [i32; 5] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGWINCH,
];

pub fn exec(mount: &Mount, name: &str, cmd: &[String], opts: &ExecOptions) -> i32 {
    match run(mount, name, cmd, opts) {
        Ok(code) => code,
        Err(f) => {
            eprintln!("hyperfleet exec: {f}");
            EXIT_CANNOT_RUN
        }
    }
}

fn run(mount: &Mount, name: &str, cmd: &[String], opts: &ExecOptions) -> Result<i32, Failure> {
    mount.check_mounted()?;
    // Blocked before any thread starts, so every thread inherits the mask
    // and only the forwarding thread takes them (with sigwait).
    let mask = block_signals();
    let mut clone =
        File::open(mount.file(name, "exec.new")).map_err(|e| mount.failure(name, "exec in", &e))?;
    let mut id = String::new();
    clone
        .read_to_string(&mut id)
        .map_err(|e| mount.failure(name, "exec in", &e))?;
    let dir = mount.machine(name).join("sessions").join(id.trim());

    let stdin_fd = std::io::stdin().as_raw_fd();
    let stdout_fd = std::io::stdout().as_raw_fd();
    let size = opts.tty.then(|| {
        window_size(stdout_fd)
            .or_else(|| window_size(stdin_fd))
            .unwrap_or(crate::model::WindowSize { cols: 80, rows: 24 })
    });
    let mut req = serde_json::json!({ "cmd": cmd, "env": opts.env });
    if let Some(w) = &opts.working_dir {
        req["working_dir"] = w.clone().into();
    }
    if let Some(u) = &opts.user {
        req["user"] = u.clone().into();
    }
    if let Some(t) = opts.timeout {
        req["timeout"] = t.into();
    }
    if let Some(s) = size {
        req["tty"] = serde_json::json!({ "cols": s.cols, "rows": s.rows });
    }
    let ctl = OpenOptions::new()
        .write(true)
        .open(dir.join("ctl"))
        .map_err(|e| mount.failure(name, "exec in", &e))?;
    let ctl = Arc::new(Mutex::new(ctl));
    send(&ctl, &format!("{req}\n")).map_err(|e| mount.failure(name, "exec in", &e))?;

    // The remote pty handles the keys (Ctrl-C included) from here on.
    let raw = if opts.tty && opts.interactive {
        RawMode::enter(stdin_fd).ok().flatten()
    } else {
        None
    };
    let out = pump(dir.join("stdout"), std::io::stdout(), ctl.clone());
    let err = pump(dir.join("stderr"), std::io::stderr(), ctl.clone());
    if opts.interactive {
        feed_stdin(&dir, ctl.clone());
    } else {
        let _ = send(&ctl, "close-stdin\n");
    }
    forward_signals(mask, ctl.clone(), opts.tty);

    let mut exit = String::new();
    let read = File::open(dir.join("exit")).and_then(|mut f| f.read_to_string(&mut exit));
    // The streams end at the command's end; what they still hold comes first.
    let lost = [out.join(), err.join()]
        .into_iter()
        .filter_map(|r| r.ok().flatten())
        .next();
    if let Some(raw) = &raw {
        raw.restore();
    }
    drop(clone);
    read.map_err(|e| mount.failure(name, "exec in", &e))?;
    let code: i64 = exit.trim().parse().map_err(|_| {
        Failure(format!(
            "exec in {name}: the session said {exit:?} for its exit"
        ))
    })?;
    if let Some(e) = lost {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return Ok(EXIT_BROKEN_PIPE);
        }
        return Err(Failure(format!(
            "exec in {name}: cannot write its output: {e}"
        )));
    }
    if code == i64::from(EXIT_TIMED_OUT) && opts.timeout.is_some() {
        eprintln!(
            "hyperfleet exec: {name}: the command timed out after {}s and was killed",
            opts.timeout.unwrap_or_default()
        );
    }
    match u8::try_from(code) {
        Ok(code) => Ok(i32::from(code)),
        Err(_) => {
            // Negative is the session's "unknown"; past 255 no exit status
            // can say it.
            eprintln!("hyperfleet exec: {name}: how the command ended is unknown (the session said {code})");
            Ok(EXIT_UNKNOWN)
        }
    }
}

fn send(ctl: &Mutex<File>, line: &str) -> std::io::Result<()> {
    let mut f = ctl.lock().unwrap_or_else(|p| p.into_inner());
    f.write_all(line.as_bytes())
}

/// Copies a session stream to a local one until it ends. If the local one
/// fails (its reader is gone), the command is sent SIGPIPE and the rest is
/// drained and dropped, so the command never blocks on output nobody can
/// read; the failure is returned.
fn pump(
    from: PathBuf,
    mut to: impl Write + Send + 'static,
    ctl: Arc<Mutex<File>>,
) -> std::thread::JoinHandle<Option<std::io::Error>> {
    std::thread::spawn(move || {
        let Ok(mut src) = File::open(&from) else {
            return None;
        };
        let mut failed = None;
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match src.read(&mut buf) {
                Ok(0) | Err(_) => return failed,
                Ok(n) if failed.is_none() => {
                    if let Err(e) = to.write_all(&buf[..n]).and_then(|_| to.flush()) {
                        // Best effort: a command that already ended has no
                        // session input left, and then nothing needs telling.
                        let _ = send(&ctl, "signal PIPE\n");
                        failed = Some(e);
                    }
                }
                Ok(_) => {}
            }
        }
    })
}

/// Copies this process's stdin to the session's, then closes it there.
fn feed_stdin(dir: &Path, ctl: Arc<Mutex<File>>) {
    let target = dir.join("stdin");
    std::thread::spawn(move || {
        let Ok(mut sink) = OpenOptions::new().write(true).open(&target) else {
            return;
        };
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    // The command stopped reading (it ended): nothing more to do.
                    if sink.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let _ = send(&ctl, "close-stdin\n");
    });
}

fn block_signals() -> libc::sigset_t {
    // SAFETY: plain sigset manipulation on a local set, and a mask change
    // for this thread (inherited by those it starts).
    unsafe {
        let mut set = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut set);
        for s in FORWARDED {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Passes the signals this process gets on to the command: Ctrl-C and
/// SIGTERM reach it (not this client), a resized terminal resizes its pty.
fn forward_signals(set: libc::sigset_t, ctl: Arc<Mutex<File>>, tty: bool) {
    std::thread::spawn(move || loop {
        let mut sig = 0;
        // SAFETY: set is a valid, initialised signal set; sig is written.
        if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
            return;
        }
        let line = if sig == libc::SIGWINCH {
            if !tty {
                continue;
            }
            match window_size(std::io::stdout().as_raw_fd()) {
                Some(w) => format!("winsize {} {}\n", w.cols, w.rows),
                None => continue,
            }
        } else {
            let name = match sig {
                libc::SIGINT => "INT",
                libc::SIGTERM => "TERM",
                libc::SIGHUP => "HUP",
                _ => "QUIT",
            };
            debug_assert!(signal_number(name).is_ok());
            format!("signal {name}\n")
        };
        if send(&ctl, &line).is_err() {
            return;
        }
    });
}
