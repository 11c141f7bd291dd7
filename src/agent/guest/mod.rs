//! The guest agent: what `hyperfleet-agent` runs inside a microVM.
//!
//! One thread accepts connections and starts a thread per connection; one
//! thread reaps every child process. A connection serves one request (see
//! the protocol module). Everything here is blocking std code over poll(2),
//! with no async runtime: the agent is the first (often only) process of a
//! small guest, and threads keep it small and its control flow plain.

mod config;
mod conn;
mod exec;
mod files;
mod init;
mod listener;
mod modules;
mod reaper;
mod serve;
mod sessions;
mod spawn;
mod sys;
mod users;

use std::process::ExitCode;
use std::time::Duration;

pub use config::ListenAddr;

/// One line on stderr (the console, as init).
pub(crate) fn log(message: std::fmt::Arguments<'_>) {
    eprintln!("hyperfleet-agent: {message}");
}

/// The agent's main: never returns as PID 1 (init exiting panics the
/// kernel), so failures there are logged and retried.
pub fn main() -> ExitCode {
    let pid1 = init::is_pid1();
    if init::fresh_boot() {
        init::setup();
    }
    sys::ensure_std_fds();
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let addr = match config::parse(std::env::args().skip(1), &cmdline, pid1) {
        Ok(config::Parsed::Run(addr)) => addr,
        Ok(config::Parsed::Help) => {
            println!("{}", config::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(config::Parsed::Version) => {
            println!("hyperfleet-agent {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) if pid1 => {
            log(format_args!("{e}; listening on the default port"));
            ListenAddr::Vsock(crate::agent::protocol::DEFAULT_AGENT_PORT)
        }
        Err(e) => {
            eprintln!("hyperfleet-agent: {e}\n\n{}", config::USAGE);
            return ExitCode::from(2);
        }
    };
    if let Err(e) = reaper::start() {
        log(format_args!("cannot start the reaper: {e}"));
        if !pid1 {
            return ExitCode::FAILURE;
        }
    }
    if !pid1 {
        if let Err(e) = sys::set_child_subreaper() {
            log(format_args!(
                "cannot become a subreaper: {e}; orphans go to init"
            ));
        }
    }
    let listener = loop {
        match listener::Listener::bind(&addr) {
            Ok(l) => break l,
            // In a guest the vsock device may still be probing: wait for it.
            Err(e) if pid1 => {
                log(format_args!("cannot listen on {addr}: {e}; retrying"));
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => {
                log(format_args!("cannot listen on {addr}: {e}"));
                return ExitCode::FAILURE;
            }
        }
    };
    log(format_args!("listening on {addr}"));
    loop {
        match listener.accept() {
            Ok(sock) => {
                let spawned = std::thread::Builder::new()
                    .name("connection".into())
                    .spawn(move || serve::serve(sock));
                if let Err(e) = spawned {
                    log(format_args!("cannot start a connection thread: {e}"));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                // EMFILE and the like: back off rather than spin.
                log(format_args!("accept failed: {e}"));
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}
