use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use hyperfleet::rest::auth::{self, Scope};
use hyperfleet::rest::machine::iso8601;
use hyperfleet::rest::Listen;
use hyperfleet::store::{KeyStore, SqliteStore};
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
        /// Also serve the REST API here: IP:PORT (e.g. 127.0.0.1:3000) or unix:/path;
        /// repeat or separate with commas for several. Port 0 picks one; the addresses
        /// are written to <state-dir>/rest.addr. A non-loopback address needs an API key.
        #[arg(long, env = "HYPERFLEET_LISTEN", value_delimiter = ',')]
        listen: Vec<Listen>,
        /// Host path prefixes (comma-separated) that machines created or configured over
        /// REST may name (volumes, VM kernels, disks...); privileged containers are then
        /// refused. Without it, a key with machines:write is root-equivalent on a root daemon.
        #[arg(long, env = "HYPERFLEET_ALLOW_HOST_PATHS", value_delimiter = ',')]
        allow_host_paths: Vec<PathBuf>,
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
    /// Manage the REST API's keys (works whether or not the daemon runs).
    Apikey {
        /// The daemon's state directory [default: as for `daemon`]
        #[arg(long, env = "HYPERFLEET_STATE_DIR", global = true)]
        state_dir: Option<PathBuf>,
        #[command(subcommand)]
        command: ApikeyCommand,
    },
}

#[derive(Subcommand)]
enum ApikeyCommand {
    /// Make a key; prints it alone on the first line of stdout, this once.
    Create {
        name: String,
        /// machines:read or machines:write; repeat for both [default: both]
        #[arg(long = "scope")]
        scopes: Vec<String>,
    },
    /// List keys (never the keys themselves: their prefixes).
    List,
    /// Revoke the live key with this name; requests with it fail from then on.
    Revoke { name: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Daemon {
            mount,
            state_dir,
            foreground,
            listen,
            allow_host_paths,
        } => {
            let opts = daemon::Options {
                mount: mount.unwrap_or_else(daemon::default_mount),
                state_dir: state_dir.unwrap_or_else(daemon::default_state_dir),
                foreground,
                listen,
                allow_host_paths,
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
        Command::Apikey { state_dir, command } => {
            let state_dir = state_dir.unwrap_or_else(daemon::default_state_dir);
            match apikey(&state_dir, command) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("hyperfleet apikey: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn apikey(state_dir: &std::path::Path, command: ApikeyCommand) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(state_dir)?;
    let store = SqliteStore::open(&daemon::db_path(state_dir))?;
    match command {
        ApikeyCommand::Create { name, scopes } => {
            let scopes = scopes
                .iter()
                .map(|s| s.parse::<Scope>())
                .collect::<Result<Vec<_>, _>>()?;
            let Some(made) = auth::mint(&store, &name, &scopes)? else {
                eprintln!(
                    "hyperfleet apikey: a live key is already named {name:?}; revoke it first"
                );
                return Ok(ExitCode::FAILURE);
            };
            println!("{}", made.key);
            eprintln!(
                "made key {name:?} ({}..., scopes: {}); it is shown only this once",
                made.record.prefix,
                made.record.scopes.join(" ")
            );
        }
        ApikeyCommand::List => {
            println!(
                "{:<20} {:<14} {:<30} {:<24} {:<24} REVOKED",
                "NAME", "PREFIX", "SCOPES", "CREATED", "LAST USED"
            );
            for k in store.keys()? {
                let when = |ms: Option<i64>| ms.map(iso8601).unwrap_or_else(|| "-".into());
                println!(
                    "{:<20} {:<14} {:<30} {:<24} {:<24} {}",
                    k.name,
                    k.prefix,
                    k.scopes.join(","),
                    iso8601(k.created_ms),
                    when(k.last_used_ms),
                    when(k.revoked_ms)
                );
            }
        }
        ApikeyCommand::Revoke { name } => {
            match store.revoke_key(&name, hyperfleet::model::now_ms())? {
                Some(k) => println!("revoked {:?} ({}...)", k.name, k.prefix),
                None => {
                    eprintln!("hyperfleet apikey: no live key named {name:?}");
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
