use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

use hyperfleet::client::{self, exec::ExecOptions, Mount};
use hyperfleet::daemon;

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
        /// Also serve the REST API on this address (e.g. 127.0.0.1:3000); port 0 picks one
        /// and writes it to <state-dir>/rest.addr.
        #[arg(long, env = "HYPERFLEET_LISTEN")]
        listen: Option<std::net::SocketAddr>,
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
    Exec {
        /// Pass a terminal's stdin to the command (a pipe or a file always is).
        #[arg(short, long)]
        interactive: bool,
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
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff).
    Man,
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
        } => {
            let opts = daemon::Options {
                mount: mount.path().to_path_buf(),
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
        Command::StopDaemon { state_dir, wait } => done(client::daemon::stop(
            &state_dir.unwrap_or_else(daemon::default_state_dir),
            Duration::from_secs(wait),
        )),
        Command::Exec {
            interactive,
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
            // `printf 'a\nb\n' | hyperfleet exec web wc -l` counts 2); a
            // terminal's keyboard only with -i, as `docker exec` has it.
            use std::io::IsTerminal;
            let opts = ExecOptions {
                interactive: interactive || !std::io::stdin().is_terminal(),
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
            match man.render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("hyperfleet man: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
