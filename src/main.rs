use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use hyperfleet::{client, daemon};

/// Docker containers and microVMs as a filesystem.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Mount the machine filesystem and serve it until SIGINT/SIGTERM.
    Daemon {
        /// Where to mount [default: /run/hyperfleet for root, $XDG_RUNTIME_DIR/hyperfleet otherwise]
        #[arg(long, env = "HYPERFLEET_MOUNT")]
        mount: Option<PathBuf>,
        /// Where the SQLite state and logs live [default: /var/lib/hyperfleet for root, $XDG_STATE_HOME/hyperfleet otherwise]
        #[arg(long, env = "HYPERFLEET_STATE_DIR")]
        state_dir: Option<PathBuf>,
        /// Stay attached to the terminal instead of detaching.
        #[arg(long)]
        foreground: bool,
        /// Also serve the REST API on this address (e.g. 127.0.0.1:3000); port 0 picks one
        /// and writes it to <state-dir>/rest.addr.
        #[arg(long, env = "HYPERFLEET_LISTEN")]
        listen: Option<std::net::SocketAddr>,
    },
    /// Run a command in a machine through the mounted filesystem; exits with its exit code.
    Exec {
        #[arg(long, env = "HYPERFLEET_MOUNT")]
        mount: Option<PathBuf>,
        /// Seconds before the command is killed [default: 30]
        #[arg(long)]
        timeout: Option<f64>,
        name: String,
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Daemon {
            mount,
            state_dir,
            foreground,
            listen,
        } => {
            let opts = daemon::Options {
                mount: mount.unwrap_or_else(daemon::default_mount),
                state_dir: state_dir.unwrap_or_else(daemon::default_state_dir),
                foreground,
                listen,
            };
            match daemon::run(opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("hyperfleet daemon: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Exec {
            mount,
            timeout,
            name,
            cmd,
        } => {
            let mount = mount.unwrap_or_else(daemon::default_mount);
            ExitCode::from(client::exec(&mount, &name, &cmd, timeout) as u8)
        }
    }
}
