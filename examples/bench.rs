//! Filesystem and REST latency benchmark. Prints a table; asserts nothing.
//!
//!     cargo run --release --example bench
//!
//! Mounts a fresh filesystem in a temp dir (in-process, through the real
//! kernel FUSE path) and measures what a shell user would do. The Docker
//! rows need a running engine and the test image (contrib/make-test-image.sh).
//! REST is served on a loopback port from the same core and measured over
//! one kept-alive HTTP/1.1 connection, as a client library would. The
//! microVM rows need the VMM binaries (`HYPERFLEET_FIRECRACKER_BIN`,
//! `HYPERFLEET_CLOUD_HYPERVISOR_BIN`, else `../shared/vmm/`) and a kernel
//! (`HYPERFLEET_KERNEL`, else the tiny PVH test kernel, built with gcc and
//! ld); each VMM's create+start through the filesystem is measured against
//! the same API calls made directly (spawn, configure, boot) in the same run.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyperfleet::core::{self, Core};
use hyperfleet::daemon;
use hyperfleet::model::MachineSpec;
use hyperfleet::rest;
use hyperfleet::runtime::cloud_hypervisor::api::{
    CloudHypervisorApi, ConsoleConfig, CpusConfig, MemoryConfig, PayloadConfig, VmConfig,
    VsockConfig, MIB,
};
use hyperfleet::runtime::firecracker::api::{
    BootSource, FirecrackerApi, MachineConfiguration, Vsock,
};
use hyperfleet::runtime::registry::{self, DriverSettings};
use hyperfleet::runtime::vmm_process::{Vmm, VmmCommand};

const IMAGE_ENV: &str = "HYPERFLEET_TEST_IMAGE";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

struct Row {
    what: String,
    n: usize,
    p50: Duration,
    p99: Duration,
    total: Duration,
}

fn row(what: &str, mut samples: Vec<Duration>, total: Duration) -> Row {
    samples.sort();
    Row {
        what: what.to_owned(),
        n: samples.len(),
        p50: percentile(&samples, 0.5),
        p99: percentile(&samples, 0.99),
        total,
    }
}

fn measure(what: &str, n: usize, mut f: impl FnMut(usize)) -> Row {
    let mut samples = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        f(i);
        samples.push(t.elapsed());
    }
    row(what, samples, start.elapsed())
}

/// `n` calls of `f` shared by `writers` threads running at once: each
/// call's latency, and the wall time of them all.
fn measure_concurrent(what: &str, writers: usize, n: usize, f: impl Fn(usize) + Sync) -> Row {
    let start = Instant::now();
    let samples = std::thread::scope(|s| {
        let threads: Vec<_> = (0..writers)
            .map(|w| {
                let f = &f;
                s.spawn(move || {
                    (w..n)
                        .step_by(writers)
                        .map(|i| {
                            let t = Instant::now();
                            f(i);
                            t.elapsed()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().expect("writer thread"))
            .collect()
    });
    row(what, samples, start.elapsed())
}

/// `n` creates through the core, shared by `writers` tasks running at
/// once, against a fresh state directory (a real SQLite file).
fn concurrent_creates(
    rt: &tokio::runtime::Runtime,
    state: &Path,
    writers: usize,
    n: usize,
) -> anyhow::Result<Row> {
    std::fs::create_dir_all(state)?;
    let core = Core::open(state, Vec::new())?;
    let start = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let core = core.clone();
            rt.spawn(async move {
                let mut samples = Vec::new();
                for i in (w..n).step_by(writers) {
                    let t = Instant::now();
                    core.create(format!("c{i:05}").as_bytes(), MachineSpec::default())
                        .await
                        .expect("create");
                    samples.push(t.elapsed());
                }
                samples
            })
        })
        .collect();
    let mut samples = Vec::with_capacity(n);
    for task in tasks {
        samples.extend(rt.block_on(task)?);
    }
    let total = start.elapsed();
    Ok(row(
        &format!("1,000 creates from {writers} writers (core)"),
        samples,
        total,
    ))
}

/// Two ways of doing the same thing, measured turn about, so that the
/// load of a shared machine weighs on both alike.
fn measure_pair(
    what: (&str, &str),
    n: usize,
    mut a: impl FnMut(usize),
    mut b: impl FnMut(usize),
) -> (Row, Row) {
    let (mut sa, mut sb) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        let t = Instant::now();
        a(i);
        sa.push(t.elapsed());
        let t = Instant::now();
        b(i);
        sb.push(t.elapsed());
    }
    let (ta, tb) = (sa.iter().sum(), sb.iter().sum());
    (row(what.0, sa, ta), row(what.1, sb, tb))
}

/// Both rows of a pair, in the table's order.
fn pair((a, b): (Row, Row)) -> [Row; 2] {
    [a, b]
}

/// `ls` of a directory (names only), or `ls -l` (each entry's attributes too).
fn ls(dir: &Path, long: bool) {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("ls") {
        let entry = entry.expect("entry");
        if long {
            std::fs::symlink_metadata(entry.path()).expect("lstat");
        }
        n += 1;
    }
    assert!(n >= 10_000, "{n} entries");
}

/// Reads every machine's `status` under `machines`, in directory order.
fn read_all(machines: &Path) {
    for entry in std::fs::read_dir(machines).expect("ls") {
        let path = entry.expect("entry").path().join("status");
        std::fs::read(&path).expect("read status");
    }
}

/// From a refused `ctl` write (a change: the reason lands in `error`) to
/// its line read from an `events` file opened beforehand.
fn change_to_event(m: &dyn Fn(&str) -> std::path::PathBuf) -> Row {
    use std::io::BufRead;
    let events = std::fs::File::open(m("machines/web/events")).expect("events");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(events).lines() {
            if line.is_err() || tx.send(()).is_err() {
                return;
            }
        }
    });
    measure(
        "change -> its events line (refused ctl write)",
        1_000,
        |i| {
            // A different reason each time: an unchanged `error` is no change.
            std::fs::write(m("machines/web/ctl"), format!("bogus{i}\n")).expect_err("refused");
            rx.recv().expect("an events line");
        },
    )
}

/// `hyperfleet exec` against `docker exec` into the same container, taken
/// turn about: a trivial command, and 100 MB of output (to /dev/null).
fn exec_rows(m: &dyn Fn(&str) -> std::path::PathBuf) -> anyhow::Result<Vec<Row>> {
    // Beside this example: target/<profile>/hyperfleet.
    let hf = std::env::current_exe()?
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("hyperfleet"))
        .filter(|p| p.exists());
    let Some(hf) = hf else {
        eprintln!("exec rows skipped: build the binary first (cargo build --release)");
        return Ok(Vec::new());
    };
    let id = std::fs::read_to_string(m("machines/d0/id"))?;
    let out = Command::new("docker")
        .args(["ps", "-q", "--filter", &format!("name={}", id.trim())])
        .output()?;
    let container = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    anyhow::ensure!(!container.is_empty(), "no container for machines/d0");
    let mount = m("");
    let run = |prog: &Path, args: &[&str]| {
        let st = Command::new(prog)
            .args(args)
            .env("HYPERFLEET_MOUNT", &mount)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run");
        assert!(st.success(), "{prog:?} {args:?}: {st}");
    };
    let docker = Path::new("docker");
    let mut rows = Vec::new();
    rows.extend(pair(measure_pair(
        (
            "hyperfleet exec d0 -- true",
            "docker exec (same container) true",
        ),
        20,
        |_| run(&hf, &["exec", "d0", "--", "true"]),
        |_| run(docker, &["exec", &container, "true"]),
    )));
    let big = ["head", "-c", "100000000", "/dev/zero"];
    rows.extend(pair(measure_pair(
        (
            "hyperfleet exec d0 -- head -c 100MB /dev/zero",
            "docker exec (same container), 100 MB",
        ),
        3,
        |_| run(&hf, &[&["exec", "d0", "--"][..], &big[..]].concat()),
        |_| run(docker, &[&["exec", &container][..], &big[..]].concat()),
    )));
    Ok(rows)
}

fn fmt(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.1} µs")
    } else if us < 1e6 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

fn docker_ok(image: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", image])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// One kept-alive HTTP/1.1 connection to the REST server (made again when
/// the server has closed it for idling between rows).
struct Http {
    rt: tokio::runtime::Handle,
    addr: String,
    tx: SendRequest<Full<Bytes>>,
}

impl Http {
    fn connect(rt: &tokio::runtime::Runtime, addr: &str) -> anyhow::Result<Http> {
        Ok(Http {
            rt: rt.handle().clone(),
            addr: addr.to_owned(),
            tx: rt.block_on(handshake(addr.to_owned()))?,
        })
    }

    /// Sends a request, reads the whole reply; returns its status and size.
    fn call(&mut self, method: &str, path: &str, body: &str) -> (u16, usize) {
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "bench")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_owned())))
            .expect("request");
        if self.tx.is_closed() {
            self.tx = self
                .rt
                .block_on(handshake(self.addr.clone()))
                .expect("reconnect");
        }
        let tx = &mut self.tx;
        self.rt.block_on(async {
            tx.ready().await.expect("connection");
            let resp = tx.send_request(req).await.expect("send");
            let status = resp.status().as_u16();
            let bytes = resp.into_body().collect().await.expect("body").to_bytes();
            (status, bytes.len())
        })
    }

    fn ok(&mut self, method: &str, path: &str, body: &str, want: u16) -> usize {
        let (status, len) = self.call(method, path, body);
        assert_eq!(status, want, "{method} {path}");
        len
    }
}

async fn handshake(addr: String) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(&addr).await?;
    stream.set_nodelay(true)?;
    let (tx, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(tx)
}

fn main() -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("hf-bench-").tempdir()?;
    let mount = dir.path().join("mnt");
    std::fs::create_dir_all(&mount)?;
    let rt = tokio::runtime::Runtime::new()?;
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state)?;
    let env = DriverSettings::from_env();
    let settings = DriverSettings {
        run_root: Some(core::run_dir(&state)),
        firecracker_bin: common::vmm_binary("HYPERFLEET_FIRECRACKER_BIN", "firecracker").ok(),
        cloud_hypervisor_bin: common::vmm_binary(
            "HYPERFLEET_CLOUD_HYPERVISOR_BIN",
            "cloud-hypervisor",
        )
        .ok(),
        ..env
    };
    let core = Core::open(&state, registry::drivers(&settings)?)?;
    rt.block_on(core.reconcile(true));
    let session = daemon::mount(core.clone(), rt.handle().clone(), &mount)?;
    let server = rt.block_on(rest::Server::bind(
        core.clone(),
        &daemon::db_path(&dir.path().join("state")),
        &rest::Options {
            listen: vec!["127.0.0.1:0".parse().map_err(anyhow::Error::msg)?],
            ..Default::default()
        },
    ))?;
    let addr = server.addresses().remove(0);
    rt.spawn(server.serve());
    let mut http = Http::connect(&rt, &addr)?;
    let m = |rel: &str| mount.join(rel);
    let mut rows = Vec::new();

    // The same shapes on a plain ext4 directory beside it, measured turn
    // about with each filesystem row: the floor a kernel-served file has.
    let ext4 = dir.path().join("ext4");
    let e = |rel: &str| ext4.join(rel);
    let twin = |rel: &str| -> std::io::Result<()> {
        std::fs::create_dir_all(e(rel))?;
        std::fs::write(e(&format!("{rel}/status")), "pending\n")
    };
    std::fs::create_dir(m("machines/web"))?;
    twin("machines/web")?;
    rows.extend(pair(measure_pair(
        ("stat machines/web/status", "stat ext4 file"),
        20_000,
        |_| {
            std::fs::metadata(m("machines/web/status")).expect("stat");
        },
        |_| {
            std::fs::metadata(e("machines/web/status")).expect("stat");
        },
    )));
    rows.extend(pair(measure_pair(
        ("cat machines/web/status", "cat ext4 file"),
        20_000,
        |_| {
            std::fs::read(m("machines/web/status")).expect("read");
        },
        |_| {
            std::fs::read(e("machines/web/status")).expect("read");
        },
    )));
    rows.push(measure("REST: GET /machines/web (pending)", 20_000, |_| {
        http.ok("GET", "/machines/web", "", 200);
    }));
    rows.extend(pair(measure_pair(
        (
            "mkdir machines/N (first 1,000)",
            "mkdir ext4 dir (no fsync)",
        ),
        1_000,
        |i| {
            std::fs::create_dir(m(&format!("machines/m{i:05}"))).expect("mkdir");
        },
        |i| twin(&format!("machines/m{i:05}")).expect("mkdir"),
    )));
    std::fs::remove_dir(m("machines/web"))?;
    let bytes = http.ok("GET", "/machines", "", 200);
    rows.push(measure(
        &format!("REST: GET /machines (1,000 machines, {} KiB)", bytes / 1024),
        200,
        |_| {
            http.ok("GET", "/machines", "", 200);
        },
    ));
    std::fs::create_dir(m("machines/web"))?;
    for i in 1_000..9_999 {
        std::fs::create_dir(m(&format!("machines/m{i:05}")))?;
        twin(&format!("machines/m{i:05}"))?;
    }
    let count = std::fs::read_dir(m("machines"))?.count();
    assert_eq!(count, 10_000, "expected 10,000 machines");
    rows.extend(pair(measure_pair(
        (
            "ls machines/ (10,000 machines)",
            "ls ext4 dir (10,000 dirs)",
        ),
        20,
        |_| ls(&m("machines"), false),
        |_| ls(&e("machines"), false),
    )));
    rows.extend(pair(measure_pair(
        (
            "ls -l machines/ (10,000 machines)",
            "ls -l ext4 dir (10,000 dirs)",
        ),
        20,
        |_| ls(&m("machines"), true),
        |_| ls(&e("machines"), true),
    )));
    // `grep -l running machines/*/status`: every status, once each.
    rows.extend(pair(measure_pair(
        ("read all 10,000 statuses", "read 10,000 ext4 files"),
        10,
        |_| read_all(&m("machines")),
        |_| read_all(&e("machines")),
    )));
    let bytes = http.ok("GET", "/machines", "", 200);
    rows.push(measure(
        &format!(
            "REST: GET /machines (10,000 machines, {} KiB)",
            bytes / 1024
        ),
        50,
        |_| {
            http.ok("GET", "/machines", "", 200);
        },
    ));
    rows.push(measure(
        "REST: GET /machines?status=running (none of 10,000)",
        200,
        |_| {
            http.ok("GET", "/machines?status=running", "", 200);
        },
    ));
    let status = |i: usize| format!("machines/m{:05}/status", i % 9_999);
    rows.extend(pair(measure_pair(
        (
            "stat status, 10,000 machines round robin",
            "stat ext4 file, 10,000 round robin",
        ),
        20_000,
        |i| {
            std::fs::metadata(m(&status(i))).expect("stat");
        },
        |i| {
            std::fs::metadata(e(&status(i))).expect("stat");
        },
    )));
    rows.extend(pair(measure_pair(
        (
            "cat status, 10,000 machines round robin",
            "cat ext4 file, 10,000 round robin",
        ),
        20_000,
        |i| {
            std::fs::read(m(&status(i))).expect("read");
        },
        |i| {
            std::fs::read(e(&status(i))).expect("read");
        },
    )));
    rows.push(change_to_event(&m));
    // Concurrent writers share commits in the store; through the
    // filesystem, the kernel also holds machines/'s lock for each mkdir.
    rows.push(measure_concurrent(
        "mkdir from 8 writers (1,000, fs)",
        8,
        1_000,
        |i| std::fs::create_dir(m(&format!("machines/w{i:05}"))).expect("mkdir"),
    ));
    for i in 0..1_000 {
        std::fs::remove_dir(m(&format!("machines/w{i:05}")))?;
    }
    rows.push(concurrent_creates(
        &rt,
        &dir.path().join("state-creates"),
        8,
        1_000,
    )?);

    let image =
        std::env::var(IMAGE_ENV).unwrap_or_else(|_| "hyperfleet-test/busybox:latest".into());
    if docker_ok(&image) {
        let runs = 10;
        let config = format!(r#"{{"image":"{image}","cmd":["sleep","600"]}}"#);
        rows.push(measure("fs: mkdir + config + start (docker)", runs, |i| {
            let name = format!("machines/d{i}");
            std::fs::create_dir(m(&name)).expect("mkdir");
            std::fs::write(m(&format!("{name}/config")), &config).expect("config");
            std::fs::write(m(&format!("{name}/ctl")), "start").expect("start");
        }));
        let rest_config = format!(r#"{{"name":"NAME","image":"{image}","cmd":["sleep","600"]}}"#);
        rows.push(measure(
            "REST: POST /machines + POST start (docker)",
            runs,
            |i| {
                let name = format!("r{i}");
                http.ok(
                    "POST",
                    "/machines",
                    &rest_config.replace("NAME", &name),
                    201,
                );
                http.ok("POST", &format!("/machines/{name}/start"), "", 200);
            },
        ));
        rows.push(measure(
            "REST: GET /machines/r0 (running: asks Docker)",
            200,
            |_| {
                http.ok("GET", "/machines/r0", "", 200);
            },
        ));
        let mut cli_ids = Vec::new();
        rows.push(measure("docker run -d (same image)", runs, |_| {
            let out = Command::new("docker")
                .args(["run", "-d", &image, "sleep", "600"])
                .output()
                .expect("docker run");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            cli_ids.push(String::from_utf8_lossy(&out.stdout).trim().to_owned());
        }));
        rows.extend(exec_rows(&m)?);
        for i in 0..runs {
            let name = format!("machines/d{i}");
            std::fs::write(m(&format!("{name}/ctl")), "kill")?;
            std::fs::remove_dir(m(&name))?;
            http.ok("POST", &format!("/machines/r{i}/kill"), "", 200);
            http.ok("DELETE", &format!("/machines/r{i}"), "", 204);
        }
        let _ = Command::new("docker")
            .args(["rm", "-f"])
            .args(&cli_ids)
            .output();
    } else {
        eprintln!(
            "docker rows skipped: no engine or no image {image} (run contrib/make-test-image.sh)"
        );
    }

    match common::kernel() {
        Ok(kernel) => {
            let vms: [(&str, Option<&std::path::PathBuf>); 2] = [
                ("firecracker", settings.firecracker_bin.as_ref()),
                ("cloud-hypervisor", settings.cloud_hypervisor_bin.as_ref()),
            ];
            for (kind, bin) in vms {
                match bin {
                    Some(bin) => rows.extend(vm_rows(&rt, &m, kind, bin, &kernel)?),
                    None => eprintln!("{kind} rows skipped: no binary"),
                }
            }
        }
        Err(e) => eprintln!("microVM rows skipped: {e}"),
    }

    println!("| operation | n | p50 | p99 | total |");
    println!("|---|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} |",
            r.what,
            r.n,
            fmt(r.p50),
            fmt(r.p99),
            fmt(r.total)
        );
    }
    drop(session);
    let _ = Path::new(&mount);
    Ok(())
}

/// VM runs per row. Each VM is 64 MiB; they are stopped as the stop rows go.
const VM_RUNS: usize = 20;

/// create+start through the filesystem, the same API calls made directly,
/// and the two ways to stop, for one VMM.
fn vm_rows(
    rt: &tokio::runtime::Runtime,
    m: &dyn Fn(&str) -> std::path::PathBuf,
    kind: &str,
    bin: &Path,
    kernel: &Path,
) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let config = format!(
        r#"{{"runtime_type":"{kind}","kernel_image_path":"{}","mem_size_mib":64}}"#,
        kernel.display()
    );
    let prefix = if kind == "firecracker" { "fc" } else { "ch" };
    let dirs: Vec<tempfile::TempDir> = (0..VM_RUNS)
        .map(|_| tempfile::Builder::new().prefix("hf-b-").tempdir())
        .collect::<Result<_, _>>()?;
    let mut direct = Vec::new();
    let (fs, by_hand) = measure_pair(
        (
            &format!("fs: mkdir + config + start ({kind})"),
            &format!("direct: spawn + configure + boot ({kind})"),
        ),
        VM_RUNS,
        |i| {
            let name = format!("machines/{prefix}{i}");
            std::fs::create_dir(m(&name)).expect("mkdir");
            std::fs::write(m(&format!("{name}/config")), &config).expect("config");
            std::fs::write(m(&format!("{name}/ctl")), "start").expect("start");
        },
        |i| {
            let vmm = rt
                .block_on(boot_directly(kind, bin, dirs[i].path(), kernel))
                .expect("direct boot");
            direct.push(vmm);
        },
    );
    rows.extend([fs, by_hand]);
    let mut direct = direct.into_iter();
    let (fs, by_hand) = measure_pair(
        (
            &format!("fs: shutdown 0 ({kind})"),
            &format!("direct: stop ({kind})"),
        ),
        VM_RUNS,
        |i| {
            let name = format!("machines/{prefix}{i}");
            std::fs::write(m(&format!("{name}/ctl")), "shutdown 0").expect("shutdown");
        },
        |i| {
            let mut vmm = direct.next().expect("one per run");
            rt.block_on(stop_directly(kind, &mut vmm, dirs[i].path()))
                .expect("direct stop");
        },
    );
    rows.extend([fs, by_hand]);
    for i in 0..VM_RUNS {
        std::fs::remove_dir(m(&format!("machines/{prefix}{i}")))?;
    }
    Ok(rows)
}

/// What the runtime does to start a VM, without the filesystem, the core
/// or the store: spawn the VMM detached, wait for its socket, configure,
/// boot.
async fn boot_directly(kind: &str, bin: &Path, dir: &Path, kernel: &Path) -> anyhow::Result<Vmm> {
    let socket = dir.join("api.sock");
    let vsock = dir.join("vsock.sock");
    let ready = std::time::Duration::from_secs(10);
    if kind == "firecracker" {
        let mut cmd = VmmCommand::new(bin, dir)
            .args([
                "--api-sock".as_ref(),
                socket.as_os_str(),
                "--id".as_ref(),
                "bench".as_ref(),
            ])
            .arg("--log-path")
            .arg(dir.join("vmm.log"))
            .args(["--level", "Info", "--show-level"])
            .socket(&socket)
            .socket(&vsock);
        cmd.stdout = dir.join("console.log");
        std::fs::write(dir.join("vmm.log"), b"")?;
        let mut vmm = Vmm::spawn(&cmd)?;
        let api = FirecrackerApi::new(&socket);
        vmm.wait_ready(&socket, ready, || api.describe_instance())
            .await?;
        api.put_machine_config(&MachineConfiguration {
            vcpu_count: 1,
            mem_size_mib: 64,
            ..Default::default()
        })
        .await?;
        api.put_boot_source(&BootSource {
            kernel_image_path: kernel.to_owned(),
            boot_args: Some("console=ttyS0 reboot=k panic=1 pci=off".into()),
            initrd_path: None,
        })
        .await?;
        api.put_vsock(&Vsock {
            guest_cid: 3,
            uds_path: vsock,
        })
        .await?;
        api.instance_start().await?;
        Ok(vmm)
    } else {
        let mut arg = std::ffi::OsString::from("path=");
        arg.push(&socket);
        let cmd = VmmCommand::new(bin, dir)
            .arg("--api-socket")
            .arg(arg)
            .arg("--log-file")
            .arg(dir.join("vmm.log"))
            .socket(&socket)
            .socket(&vsock);
        let mut vmm = Vmm::spawn(&cmd)?;
        let api = CloudHypervisorApi::new(&socket);
        vmm.wait_ready(&socket, ready, || api.vmm_ping()).await?;
        api.vm_create(&VmConfig {
            cpus: Some(CpusConfig {
                boot_vcpus: 1,
                max_vcpus: 1,
                ..Default::default()
            }),
            memory: Some(MemoryConfig {
                size: 64 * MIB,
                ..Default::default()
            }),
            payload: PayloadConfig {
                kernel: Some(kernel.to_owned()),
                cmdline: Some("console=ttyS0 reboot=k panic=1".into()),
                ..Default::default()
            },
            vsock: Some(VsockConfig {
                cid: 3,
                socket: vsock,
                iommu: None,
                id: None,
            }),
            serial: Some(ConsoleConfig::file(dir.join("console.log"))),
            console: Some(ConsoleConfig::off()),
            ..Default::default()
        })
        .await?;
        api.vm_boot().await?;
        Ok(vmm)
    }
}

/// What `shutdown 0` comes down to: Firecracker dies of SIGTERM; Cloud
/// Hypervisor is asked to shut its VM and itself down.
async fn stop_directly(kind: &str, vmm: &mut Vmm, dir: &Path) -> anyhow::Result<()> {
    if kind == "firecracker" {
        vmm.terminate(std::time::Duration::from_secs(5)).await?;
    } else {
        let api = CloudHypervisorApi::new(dir.join("api.sock"));
        api.vm_shutdown().await?;
        api.vmm_shutdown().await?;
        vmm.wait().await?;
    }
    Ok(())
}
