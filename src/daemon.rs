//! `hyperfleet daemon`: take the state directory's lock, reconcile, mount the
//! filesystem, serve until SIGINT/SIGTERM, unmount.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::core::{Core, Settings};
use crate::fs::MachineFs;
use crate::runtime::registry::{self, DriverSettings};
use crate::runtime::Driver;
use crate::store::{Faults, SqliteStore, Store};

pub struct Options {
    pub mount: PathBuf,
    pub state_dir: PathBuf,
    pub foreground: bool,
    /// Where to serve the REST API, if anywhere.
    pub listen: Vec<crate::rest::Listen>,
    /// Host path prefixes that machines created or configured over REST may name.
    pub allow_host_paths: Vec<PathBuf>,
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"))
}

/// `/run/hyperfleet` for root; the user's runtime dir otherwise.
pub fn default_mount() -> PathBuf {
    if is_root() {
        return PathBuf::from("/run/hyperfleet");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) => PathBuf::from(d).join("hyperfleet"),
        None => home().join(".local/share/hyperfleet/mnt"),
    }
}

/// `/var/lib/hyperfleet` for root; the user's XDG state dir otherwise.
pub fn default_state_dir() -> PathBuf {
    if is_root() {
        return PathBuf::from("/var/lib/hyperfleet");
    }
    match std::env::var_os("XDG_STATE_HOME") {
        Some(d) => PathBuf::from(d).join("hyperfleet"),
        None => home().join(".local/state/hyperfleet"),
    }
}

/// The drivers of a daemon on `state_dir`, configured from the environment
/// (see [`DriverSettings`]).
pub fn drivers(state_dir: &Path) -> anyhow::Result<Vec<Arc<dyn Driver>>> {
    let settings = DriverSettings {
        run_root: Some(crate::core::run_dir(state_dir)),
        ..DriverSettings::from_env()
    };
    Ok(registry::drivers(&settings)?)
}

/// The SQLite state of a state directory: machines and API keys.
pub fn db_path(state_dir: &Path) -> PathBuf {
    state_dir.join("hyperfleet.db")
}

/// Opens the core on `state_dir`. `HYPERFLEET_TEST_STORE_DELAY_MS` (tests
/// only) slows every store write down, to show that a slow disk stalls
/// nothing but the operation that writes.
pub fn open_core(state_dir: &Path) -> anyhow::Result<Arc<Core>> {
    let sqlite = SqliteStore::open(&db_path(state_dir))?;
    let store: Arc<dyn Store> = match std::env::var("HYPERFLEET_TEST_STORE_DELAY_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        Some(ms) => {
            let faulty = Faults::new(sqlite);
            faulty.set_delay(Duration::from_millis(ms));
            Arc::new(faulty)
        }
        None => Arc::new(sqlite),
    };
    Ok(Core::open_with(
        state_dir,
        store,
        drivers(state_dir)?,
        Settings::from_env(),
    )?)
}

pub fn run(opts: Options) -> anyhow::Result<()> {
    fs::create_dir_all(&opts.state_dir)
        .with_context(|| format!("creating state dir {}", opts.state_dir.display()))?;
    fs::create_dir_all(&opts.mount)
        .or_else(|e| {
            // A dead FUSE mount answers ENOTCONN (mkdir of it: EEXIST); it
            // is cleared below.
            if e.raw_os_error() == Some(libc::ENOTCONN)
                || statfs(&opts.mount).is_err_and(|s| s.raw_os_error() == Some(libc::ENOTCONN))
            {
                Ok(())
            } else {
                Err(e)
            }
        })
        .with_context(|| format!("creating mount point {}", opts.mount.display()))?;
    let state_dir = fs::canonicalize(&opts.state_dir)?;
    let log_path = state_dir.join("hyperfleet.log");

    // A detaching daemon reports "ready" or its failure through this pipe, so
    // the command that started it returns only once the mount answers, and
    // fails when the daemon could not start.
    let mut ready = None;
    if !opts.foreground {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let (mut rx, tx) = std::io::pipe()?;
        let outcome = daemonize::Daemonize::new()
            .working_directory("/")
            .stdout(log.try_clone()?)
            .stderr(log)
            .execute();
        match outcome {
            daemonize::Outcome::Parent(Ok(_)) => {
                drop(tx);
                let mut said = String::new();
                rx.read_to_string(&mut said)?;
                if let Some(summary) = said.strip_prefix(READY) {
                    print!("{summary}");
                    return Ok(());
                }
                if said.is_empty() {
                    bail!(
                        "the daemon exited during start-up; see {}",
                        log_path.display()
                    );
                }
                bail!("{said}");
            }
            daemonize::Outcome::Parent(Err(e)) => bail!("cannot detach: {e}"),
            daemonize::Outcome::Child(Err(e)) => bail!("cannot detach: {e}"),
            daemonize::Outcome::Child(Ok(_)) => ready = Some(tx),
        }
    }
    crate::init_tracing();
    let res = serve(&opts, &state_dir, &mut ready);
    if let (Err(e), Some(tx)) = (&res, ready.as_mut()) {
        let _ = write!(tx, "{e:#}");
    }
    res
}

const READY: &str = "ready";

fn serve(
    opts: &Options,
    state_dir: &Path,
    ready: &mut Option<std::io::PipeWriter>,
) -> anyhow::Result<()> {
    let state_dir = state_dir.to_path_buf();

    let _lock = lock_state_dir(&state_dir)?;
    clear_stale_mount(&opts.mount)?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("hyperfleet")
        .build()?;
    let core = open_core(&state_dir)?;
    rt.block_on(async {
        core.probe_health().await;
        core.reconcile(true).await
    });
    let _guard = rt.enter();
    core.spawn_health_monitor(Duration::from_secs(5));

    // REST first: once the mount and pid file appear, everything answers.
    let _ = fs::remove_file(state_dir.join("rest.addr"));
    let mut sockets = Vec::new();
    if !opts.listen.is_empty() {
        let rest_opts = crate::rest::Options {
            listen: opts.listen.clone(),
            allow_host_paths: opts.allow_host_paths.clone(),
            limits: crate::rest::Limits::from_env(),
        };
        let server = rt.block_on(crate::rest::Server::bind(
            core.clone(),
            &db_path(&state_dir),
            &rest_opts,
        ))?;
        let addresses = server.addresses();
        // With port 0 the kernel picks; scripts and tests read it here, one
        // line per address, in --listen order.
        fs::write(
            state_dir.join("rest.addr"),
            format!("{}\n", addresses.join("\n")),
        )?;
        sockets = server.socket_files();
        rt.spawn(server.serve());
        for a in addresses {
            tracing::info!("REST API on {a}");
        }
    }
    let session = mount(core.clone(), rt.handle().clone(), &opts.mount)
        .with_context(|| format!("mounting {}", opts.mount.display()))?;
    fs::write(
        state_dir.join("hyperfleet.pid"),
        format!("{}\n", std::process::id()),
    )?;
    tracing::info!(mount = %opts.mount.display(), state = %state_dir.display(), "serving");
    let rest = match fs::read_to_string(state_dir.join("rest.addr")) {
        Ok(a) => a.lines().collect::<Vec<_>>().join(", "),
        Err(_) => "off (--listen ADDR)".into(),
    };
    let summary = format!(
        "hyperfleet daemon (pid {pid}) is serving\n  mount: {}\n  state: {}\n  log:   {}\n  REST:  {rest}\n  stop:  hyperfleet stop-daemon{}\n",
        opts.mount.display(),
        state_dir.display(),
        if opts.foreground {
            "stderr".to_owned()
        } else {
            state_dir.join("hyperfleet.log").display().to_string()
        },
        if state_dir == default_state_dir() {
            String::new()
        } else {
            format!(" --state-dir {}", state_dir.display())
        },
        pid = std::process::id(),
    );
    match ready.take() {
        Some(mut tx) => {
            let _ = tx.write_all(format!("{READY}{summary}").as_bytes());
        }
        None => eprint!("{summary}"),
    }
    notify_systemd();

    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = tick.tick() => {
                    // Someone ran `umount`: the session is over, so are we.
                    if session.guard.is_finished() {
                        tracing::warn!("filesystem was unmounted from outside");
                        break;
                    }
                }
            }
        }
        anyhow::Ok(())
    })?;
    tracing::info!("shutting down");
    if let Err(e) = session.umount_and_join() {
        tracing::warn!("unmount: {e}; detaching lazily");
        unmount_lazily(&opts.mount);
    }
    let _ = fs::remove_file(state_dir.join("hyperfleet.pid"));
    for socket in sockets {
        let _ = fs::remove_file(socket);
    }
    rt.shutdown_timeout(Duration::from_secs(2));
    Ok(())
}

/// Tells systemd (a `Type=notify` unit) that the daemon serves, when it
/// runs under one: a datagram to `$NOTIFY_SOCKET`.
fn notify_systemd() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let msg = format!("READY=1\nMAINPID={}\n", std::process::id());
    let sent = std::os::unix::net::UnixDatagram::unbound().and_then(|sock| {
        let bytes = path.as_encoded_bytes();
        // An abstract socket is written with a leading '@'.
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(msg.as_bytes(), &addr)
        } else {
            sock.send_to(msg.as_bytes(), std::path::Path::new(&path))
        }
    });
    if let Err(e) = sent {
        tracing::warn!("cannot notify systemd: {e}");
    }
}

/// Mounts the machine filesystem for `core` at `mount_point`; it is served on
/// background threads until the returned session is dropped or unmounted.
pub fn mount(
    core: Arc<Core>,
    rt: tokio::runtime::Handle,
    mount_point: &Path,
) -> std::io::Result<fuser::BackgroundSession> {
    let fs = MachineFs::new(core, rt);
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName("hyperfleet".into()),
        fuser::MountOption::Subtype("hyperfleet".into()),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::NoSuid,
        fuser::MountOption::NoDev,
    ];
    if is_root() {
        // Root's machines are visible to every user; permissions still apply.
        config.acl = fuser::SessionACL::All;
    }
    // Lookups and reads are answered from memory on these threads; anything
    // that waits on a runtime is handed to tokio.
    config.n_threads = Some(4);
    let link = fs.cache_link();
    let session = fuser::Session::new(fs, mount_point, &config)?;
    // Before the first request is served: once the kernel may cache, it
    // must hear of every change.
    link.connect(session.notifier());
    session.spawn()
}

/// One daemon per state directory: the lock is held for the process's life
/// and released by the kernel however the process ends.
fn lock_state_dir(state_dir: &Path) -> anyhow::Result<File> {
    let path = state_dir.join("hyperfleet.lock");
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        bail!(
            "another hyperfleet daemon is using {} (lock {} is held)",
            state_dir.display(),
            path.display()
        );
    }
    f.set_len(0)?;
    writeln!(f, "{}", std::process::id())?;
    Ok(f)
}

/// A daemon that died without unmounting leaves a mount that answers ENOTCONN.
/// It is ours to clear; a live mount is someone else's and is refused.
fn clear_stale_mount(mount: &Path) -> anyhow::Result<()> {
    // For a second after the daemon died, `stat` of the mount point is still
    // answered from the kernel's attribute cache; `statfs` always asks.
    match fs::metadata(mount).and_then(|_| statfs(mount)) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            tracing::warn!("clearing stale mount at {}", mount.display());
            unmount_lazily(mount);
        }
        Err(e) => return Err(e).with_context(|| format!("checking {}", mount.display())),
        Ok(_) => {}
    }
    if is_mount_point(mount) {
        bail!(
            "{} is already mounted; is another daemon serving it?",
            mount.display()
        );
    }
    Ok(())
}

fn statfs(path: &Path) -> std::io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
    let mut buf = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: c is a valid NUL-terminated path, buf is large enough.
    if unsafe { libc::statfs(c.as_ptr(), buf.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn is_mount_point(path: &Path) -> bool {
    let Ok(canon) = fs::canonicalize(path) else {
        return false;
    };
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = canon.to_string_lossy().replace(' ', "\\040");
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

fn unmount_lazily(mount: &Path) {
    if is_root() {
        if let Ok(c) = std::ffi::CString::new(mount.as_os_str().as_encoded_bytes()) {
            // SAFETY: c is a valid NUL-terminated path.
            if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
                return;
            }
        }
    }
    let _ = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg("-z")
        .arg(mount)
        .status();
}
