//! Starting a command: its own session and process group (so a timeout
//! kills all it started), its user, directory and environment, and pipes
//! or a pty for its stdio.
//!
//! This is fork and exec by hand rather than `std::process::Command`,
//! because std waits for a child whose exec failed, and every wait must go
//! through the reaper (see `reaper.rs`). Everything the child needs is
//! prepared before the fork; after it, the child makes only
//! async-signal-safe system calls, and reports a failure as
//! (step, errno) on a close-on-exec pipe that the parent reads.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::reaper::{self, ExitWatch};
use super::{sys, users};
use crate::agent::protocol::{ErrorKind, ExecRequest, RemoteError, WindowSize};

/// The PATH a command gets unless its request sets one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A started command and the agent's ends of its stdio.
pub struct Spawned {
    pub pid: i32,
    /// Write end of its stdin (a dup of the pty master with a pty); `None`
    /// when it gets no input.
    pub stdin: Option<File>,
    /// Its stdout, or the pty master.
    pub stdout: File,
    /// `None` with a pty, where stderr is the terminal too.
    pub stderr: Option<File>,
    pub pty: bool,
    pub exit: ExitWatch,
}

/// How the command's stdio is wired.
pub enum Stdio {
    /// Pipes; with `stdin: false` its stdin is at end of file from the start.
    Pipes {
        stdin: bool,
    },
    Pty(WindowSize),
}

/// The step of the child's set-up that failed, sent to the parent.
#[derive(Clone, Copy)]
#[repr(u8)]
enum Step {
    Session = 1,
    Terminal = 2,
    Stdio = 3,
    Groups = 4,
    Gid = 5,
    Uid = 6,
    Chdir = 7,
    Exec = 8,
}

/// Starts `req` with the given stdio. Failures to start (no such command,
/// bad user or directory) come back as the error the host sees.
pub fn spawn(req: &ExecRequest, stdio: Stdio) -> Result<Spawned, RemoteError> {
    let invalid = |m: String| RemoteError::new(ErrorKind::InvalidArgument, m);
    let program = req
        .argv
        .first()
        .ok_or_else(|| invalid("the command is empty".into()))?;
    let creds = match &req.user {
        Some(spec) => Some(users::lookup(spec).map_err(invalid)?),
        None => None,
    };
    let env = environment(req, creds.as_ref(), matches!(stdio, Stdio::Pty(_)));
    let path = find_program(
        program,
        env.get("PATH").map_or(DEFAULT_PATH, String::as_str),
    )?;
    let working_dir = req.working_dir.clone().unwrap_or_else(|| "/".into());

    let cstr = |s: &str, what: &str| {
        CString::new(s).map_err(|_| invalid(format!("{what} contains a NUL byte")))
    };
    let c_path = cstr(&path, "the program path")?;
    let c_argv = req
        .argv
        .iter()
        .map(|a| cstr(a, "an argument"))
        .collect::<Result<Vec<_>, _>>()?;
    let c_env = env
        .iter()
        .map(|(k, v)| {
            if k.is_empty() || k.contains('=') {
                return Err(invalid(format!("bad environment variable name {k:?}")));
            }
            cstr(&format!("{k}={v}"), "the environment")
        })
        .collect::<Result<Vec<_>, _>>()?;
    let c_dir = cstr(&working_dir, "the working directory")?;
    let mut argv_ptrs: Vec<*const libc::c_char> = c_argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut env_ptrs: Vec<*const libc::c_char> = c_env.iter().map(|e| e.as_ptr()).collect();
    env_ptrs.push(std::ptr::null());
    let groups: Vec<libc::gid_t> = creds.as_ref().map_or_else(Vec::new, |c| c.groups.clone());

    let io = |what: &str, e: io::Error| RemoteError::from_io(what, &e);
    // (child's stdin, stdout, stderr) and the agent's ends.
    let (child_fds, ours) = match stdio {
        Stdio::Pipes { stdin } => {
            let (in_r, in_w) = sys::pipe().map_err(|e| io("pipe", e))?;
            let (out_r, out_w) = sys::pipe().map_err(|e| io("pipe", e))?;
            let (err_r, err_w) = sys::pipe().map_err(|e| io("pipe", e))?;
            let in_w = if stdin { Some(in_w) } else { None };
            ([in_r, out_w, err_w], (in_w, out_r, Some(err_r), false))
        }
        Stdio::Pty(size) => {
            let (master, slave) = sys::open_pty().map_err(|e| io("cannot open a pty", e))?;
            sys::set_window_size(&master, size.rows, size.cols)
                .map_err(|e| io("cannot size the pty", e))?;
            let input = master.try_clone().map_err(|e| io("dup", e))?;
            let (s1, s2) = (
                slave.try_clone().map_err(|e| io("dup", e))?,
                slave.try_clone().map_err(|e| io("dup", e))?,
            );
            ([slave, s1, s2], (Some(input), master, None, true))
        }
    };
    let pty = ours.3;
    let (mut report_r, report_w) = sys::pipe().map_err(|e| io("pipe", e))?;

    let child = ChildPlan {
        path: c_path.as_ptr(),
        argv: argv_ptrs.as_ptr(),
        envp: env_ptrs.as_ptr(),
        dir: c_dir.as_ptr(),
        stdio: [
            child_fds[0].as_raw_fd(),
            child_fds[1].as_raw_fd(),
            child_fds[2].as_raw_fd(),
        ],
        pty,
        creds: creds.as_ref().map(|c| (c.uid, c.gid)),
        groups: &groups,
        report: report_w.as_raw_fd(),
    };
    let (pid, exit) = reaper::spawn_watched(|| {
        // SAFETY: fork duplicates the calling thread only. The child runs
        // `child.run`, which makes only async-signal-safe system calls on
        // memory prepared above (no allocation, no locks), then execs or
        // exits.
        match unsafe { libc::fork() } {
            -1 => Err(io::Error::last_os_error()),
            0 => child.run(),
            pid => Ok(pid),
        }
    })
    .map_err(|e| io("fork", e))?;
    // Close our copies of the child's ends, so its exit means EOF for us.
    drop(child_fds);
    drop(report_w);

    let mut report = [0u8; 5];
    let got =
        read_report(&mut report_r, &mut report).map_err(|e| io("reading the exec report", e))?;
    if got == 0 {
        let (stdin, stdout, stderr, pty) = ours;
        return Ok(Spawned {
            pid,
            stdin,
            stdout,
            stderr,
            pty,
            exit,
        });
    }
    // The child exits at once; the reaper reaps it, and dropping `exit`
    // tells the reaper nobody waits for it.
    let errno = i32::from_le_bytes([report[1], report[2], report[3], report[4]]);
    let err = io::Error::from_raw_os_error(errno);
    Err(match report[0] {
        s if s == Step::Chdir as u8 => {
            RemoteError::from_io(format_args!("working directory {working_dir:?}"), &err)
        }
        s if s == Step::Exec as u8 => RemoteError::from_io(format_args!("cannot run {path}"), &err),
        s if s == Step::Groups as u8 || s == Step::Gid as u8 || s == Step::Uid as u8 => {
            RemoteError::from_io(format_args!("cannot become user {:?}", req.user), &err)
        }
        _ => RemoteError::from_io("cannot set up the command's session and stdio", &err),
    })
}

/// Reads the child's report until EOF (exec succeeded: 0 bytes) or a whole
/// report.
fn read_report(pipe: &mut File, report: &mut [u8; 5]) -> io::Result<usize> {
    let mut got = 0;
    while got < report.len() {
        match pipe.read(&mut report[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// The command's environment: a minimal default, then the request's.
fn environment(
    req: &ExecRequest,
    creds: Option<&users::Credentials>,
    pty: bool,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert("PATH".to_string(), DEFAULT_PATH.to_string());
    let home = match creds {
        Some(c) => c.home.clone(),
        None => users::home_of(sys::getuid()),
    };
    env.insert("HOME".to_string(), home.unwrap_or_else(|| "/".into()));
    if pty {
        env.insert("TERM".to_string(), "xterm".to_string());
    }
    env.extend(req.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

/// `program` itself if it has a slash, else the first executable file of
/// that name on `path`.
fn find_program(program: &str, path: &str) -> Result<String, RemoteError> {
    if program.contains('/') {
        return Ok(program.to_string());
    }
    let executable = |p: &Path| {
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(program))
        .find(|p| executable(p))
        .map(|p| p.to_string_lossy().into_owned())
        .ok_or_else(|| RemoteError {
            kind: ErrorKind::NotFound,
            message: format!("command not found: {program}"),
            errno: Some(libc::ENOENT),
        })
}

/// What the child does between fork and exec, all as raw pointers and
/// integers prepared by the parent.
struct ChildPlan<'a> {
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    dir: *const libc::c_char,
    stdio: [libc::c_int; 3],
    pty: bool,
    creds: Option<(u32, u32)>,
    groups: &'a [libc::gid_t],
    report: libc::c_int,
}

impl ChildPlan<'_> {
    /// Runs in the forked child; never returns.
    fn run(&self) -> ! {
        // SAFETY (whole function): only async-signal-safe calls, on fds
        // and pointers the parent prepared and keeps alive (the child has
        // its own copy of that memory).
        unsafe {
            // std leaves SIGPIPE ignored in the agent; commands expect the default.
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());

            if libc::setsid() == -1 {
                self.fail(Step::Session);
            }
            if self.pty && libc::ioctl(self.stdio[0], libc::TIOCSCTTY, 0) == -1 {
                self.fail(Step::Terminal);
            }
            // The sources are >= 3 (the agent keeps 0-2 open), so no dup2
            // below overwrites a source still to be copied.
            for (target, &source) in self.stdio.iter().enumerate() {
                if libc::dup2(source, target as libc::c_int) == -1 {
                    self.fail(Step::Stdio);
                }
            }
            if let Some((uid, gid)) = self.creds {
                if libc::setgroups(self.groups.len(), self.groups.as_ptr()) == -1 {
                    self.fail(Step::Groups);
                }
                if libc::setgid(gid) == -1 {
                    self.fail(Step::Gid);
                }
                if libc::setuid(uid) == -1 {
                    self.fail(Step::Uid);
                }
            }
            // After the user change, so the directory is checked as the user.
            if libc::chdir(self.dir) == -1 {
                self.fail(Step::Chdir);
            }
            libc::execve(self.path, self.argv, self.envp);
            self.fail(Step::Exec)
        }
    }

    fn fail(&self, step: Step) -> ! {
        // SAFETY: errno location, write and _exit are async-signal-safe;
        // the buffer is on this stack.
        unsafe {
            let errno = *libc::__errno_location();
            let e = errno.to_le_bytes();
            let report = [step as u8, e[0], e[1], e[2], e[3]];
            libc::write(self.report, report.as_ptr().cast(), report.len());
            libc::_exit(127)
        }
    }
}
