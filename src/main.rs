use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

use hyperfleet::client::{self, exec::ExecOptions, Mount};
use hyperfleet::daemon;
use hyperfleet::model::time::iso8601;
use hyperfleet::rest::auth::{self, Scope};
use hyperfleet::rest::Listen;
use hyperfleet::store::{KeyStore, SqliteStore};

/// Docker containers and microVMs as a filesystem.
#[derive(Parser)]
#[command(version, about, propagate_version = true)]
struct Cli {
    /// The mounted filesystem [default: /run/hyperfleet for root, $XDG_RUNTIME_DIR/hyperfleet otherwise]
    #[arg(long, env = "HYPERFLEET_MOUNT", global = true)]
    mount: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Mount the machine filesystem and serve it until SIGINT/SIGTERM.
    Daemon {
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
    /// Stop the daemon serving a state directory, and wait until it is gone.
    StopDaemon {
        #[arg(long, env = "HYPERFLEET_STATE_DIR")]
        state_dir: Option<PathBuf>,
        /// Seconds to wait for it.
        #[arg(long, default_value_t = 30)]
        wait: u64,
    },
    /// Run a command in a running machine, like `docker exec`; exits with its code.
    #[command(
        after_help = "Exit status: the command's own, or 128 + the signal that ended it; \
        124 if --timeout killed it; 125 if it could not run; 126 if it could not be executed; \
        141 if this client's output went to a pipe whose reader left (the command gets SIGPIPE); \
        255 if how it ended is unknown (e.g. the VM or its agent went away), said on stderr."
    )]
    Exec {
        /// Pass a terminal's stdin to the command (a pipe or a file always is, unless -n).
        #[arg(short, long)]
        interactive: bool,
        /// Pass no stdin at all, not even a pipe or a file (as `ssh -n`), e.g. inside
        /// `while read` loops, whose input the command would otherwise take.
        #[arg(short = 'n', long = "no-stdin", conflicts_with = "interactive")]
        no_stdin: bool,
        /// Give the command a terminal (with -i: an interactive one).
        #[arg(short, long)]
        tty: bool,
        /// Set an environment variable (K=V), again for more.
        #[arg(short, long = "env", value_name = "K=V")]
        env: Vec<String>,
        /// Working directory inside the machine.
        #[arg(short, long)]
        workdir: Option<String>,
        /// User (name or uid[:gid]) inside the machine.
        #[arg(short, long)]
        user: Option<String>,
        /// Seconds before the command is killed [default: no limit]; exits 124 then.
        #[arg(long)]
        timeout: Option<f64>,
        name: String,
        /// The command and its arguments (`--` before it is optional unless it starts with `-`).
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        cmd: Vec<String>,
    },
    /// Copy a file into or out of a machine: `cp web:/etc/hosts ./hosts`,
    /// `cp ./app web:/usr/local/bin/app` (`-` for stdin or stdout).
    Cp { src: String, dst: String },
    /// List machines (running ones; all with -a).
    Ps {
        #[arg(short, long)]
        all: bool,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Create a machine from a config file (-f, `-` for stdin) or an image.
    Create {
        name: String,
        #[arg(short = 'f', long = "file", conflicts_with_all = ["image", "runtime"])]
        config: Option<String>,
        #[arg(long)]
        image: Option<String>,
        /// docker, firecracker or cloud-hypervisor
        #[arg(long)]
        runtime: Option<String>,
        /// The container's command.
        #[arg(last = true)]
        cmd: Vec<String>,
    },
    /// Start machines.
    Start {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Stop machines (gracefully; SIGKILL after 10 s).
    Stop {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Kill machines.
    Kill {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Restart machines.
    Restart {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove machines (-f: kill a running one first).
    Rm {
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Print a machine's logs (-f: follow while it runs).
    Logs {
        #[arg(short, long)]
        follow: bool,
        #[arg(long)]
        tail: Option<usize>,
        name: String,
    },
    /// Print each change as it happens (of one machine, or of all), until
    /// interrupted; a machine's stream ends when it is deleted.
    Events { name: Option<String> },
    /// Print machines' info as JSON.
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Wait until a machine has a status (default: until it no longer runs; prints its exit code).
    Wait {
        name: String,
        status: Option<String>,
        #[arg(long)]
        timeout: Option<f64>,
    },
    /// Manage the REST API's keys (works whether or not the daemon runs).
    Apikey {
        /// The daemon's state directory [default: as for `daemon`]
        #[arg(long, env = "HYPERFLEET_STATE_DIR", global = true)]
        state_dir: Option<PathBuf>,
        #[command(subcommand)]
        command: ApikeyCommand,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff).
    Man,
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

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mount = Mount::new(cli.mount.clone().unwrap_or_else(daemon::default_mount));
    let done = |res: Result<(), client::Failure>| match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if !f.0.is_empty() {
                eprintln!("hyperfleet: {f}");
            }
            ExitCode::FAILURE
        }
    };
    match cli.command {
        Command::Daemon {
            state_dir,
            foreground,
            listen,
            allow_host_paths,
        } => {
            let opts = daemon::Options {
                mount: mount.path().to_path_buf(),
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
        Command::StopDaemon { state_dir, wait } => done(client::daemon::stop(
            &state_dir.unwrap_or_else(daemon::default_state_dir),
            Duration::from_secs(wait),
        )),
        Command::Exec {
            interactive,
            no_stdin,
            tty,
            env,
            workdir,
            user,
            timeout,
            name,
            cmd,
        } => {
            let mut vars = std::collections::BTreeMap::new();
            for kv in env {
                match kv.split_once('=') {
                    Some((k, v)) if !k.is_empty() => {
                        vars.insert(k.to_owned(), v.to_owned());
                    }
                    _ => {
                        eprintln!("hyperfleet exec: -e takes K=V, got {kv:?}");
                        return ExitCode::from(client::exec::EXIT_CANNOT_RUN as u8);
                    }
                }
            }
            // A pipe or a file on stdin is passed on, as `ssh` does (so
            // `printf 'a\nb\n' | hyperfleet exec web wc -l` counts 2, which
            // scripts and tests rely on); a terminal's keyboard only with -i,
            // as `docker exec` has it; nothing with -n, as `ssh -n`.
            use std::io::IsTerminal;
            let opts = ExecOptions {
                interactive: !no_stdin && (interactive || !std::io::stdin().is_terminal()),
                tty,
                env: vars,
                working_dir: workdir,
                user,
                timeout,
            };
            ExitCode::from(client::exec::exec(&mount, &name, &cmd, &opts) as u8)
        }
        Command::Cp { src, dst } => done(client::copy::cp(&mount, &src, &dst)),
        Command::Ps { all, format } => {
            done(client::machines::ps(&mount, all, format == Format::Json))
        }
        Command::Create {
            name,
            config,
            image,
            runtime,
            cmd,
        } => done(client::machines::create(
            &mount,
            &name,
            config.as_deref(),
            image.as_deref(),
            runtime.as_deref(),
            &cmd,
        )),
        Command::Start { names } => done(client::machines::lifecycle(&mount, "start", &names)),
        Command::Stop { names } => done(client::machines::lifecycle(&mount, "stop", &names)),
        Command::Kill { names } => done(client::machines::lifecycle(&mount, "kill", &names)),
        Command::Restart { names } => done(client::machines::lifecycle(&mount, "restart", &names)),
        Command::Rm { force, names } => done(client::machines::rm(&mount, force, &names)),
        Command::Logs { follow, tail, name } => {
            done(client::machines::logs(&mount, &name, follow, tail))
        }
        Command::Events { name } => done(client::events::events(&mount, name.as_deref())),
        Command::Inspect { names } => done(client::machines::inspect(&mount, &names)),
        Command::Wait {
            name,
            status,
            timeout,
        } => match client::machines::wait(&mount, &name, status.as_deref(), timeout) {
            Ok(code) => ExitCode::from(code as u8),
            Err(f) => {
                eprintln!("hyperfleet: {f}");
                ExitCode::FAILURE
            }
        },
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
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            // Into a buffer first: the generator panics on a closed pipe.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "hyperfleet", &mut script);
            use std::io::Write;
            let _ = std::io::stdout().write_all(&script);
            ExitCode::SUCCESS
        }
        Command::Man => {
            let man = clap_mangen::Man::new(Cli::command());
            // Into a buffer first, as for completions: `man | head` closes
            // the pipe early, which is no failure.
            let mut page = Vec::new();
            match man.render(&mut page) {
                Ok(()) => {
                    use std::io::Write;
                    let _ = std::io::stdout().write_all(&page);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("hyperfleet man: {e}");
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
