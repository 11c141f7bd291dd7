//! Filesystem and REST latency benchmark. Prints a table; asserts nothing.
//!
//!     cargo run --release --example bench
//!
//! Mounts a fresh filesystem in a temp dir (in-process, through the real
//! kernel FUSE path) and measures what a shell user would do; serves REST
//! on a loopback port from the same core and measures it over one kept-alive
//! HTTP/1.1 connection, as a client library would. The Docker rows need a
//! running engine and the test image (contrib/make-test-image.sh).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyperfleet::core::Core;
use hyperfleet::daemon;
use hyperfleet::rest;

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

fn measure(what: &str, n: usize, mut f: impl FnMut(usize)) -> Row {
    let mut samples = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        f(i);
        samples.push(t.elapsed());
    }
    let total = start.elapsed();
    samples.sort();
    Row {
        what: what.to_owned(),
        n,
        p50: percentile(&samples, 0.5),
        p99: percentile(&samples, 0.99),
        total,
    }
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
    std::fs::create_dir_all(dir.path().join("state"))?;
    let core = Core::open(&dir.path().join("state"), daemon::drivers()?)?;
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

    std::fs::create_dir(m("machines/web"))?;
    rows.push(measure("stat machines/web/status", 20_000, |_| {
        std::fs::metadata(m("machines/web/status")).expect("stat");
    }));
    rows.push(measure("cat machines/web/status", 20_000, |_| {
        std::fs::read(m("machines/web/status")).expect("read");
    }));
    rows.push(measure("REST: GET /machines/web (pending)", 20_000, |_| {
        http.ok("GET", "/machines/web", "", 200);
    }));
    rows.push(measure("mkdir machines/N (first 1,000)", 1_000, |i| {
        std::fs::create_dir(m(&format!("machines/m{i:05}"))).expect("mkdir");
    }));
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
    }
    let count = std::fs::read_dir(m("machines"))?.count();
    assert_eq!(count, 10_000, "expected 10,000 machines");
    rows.push(measure("ls machines/ (10,000 machines)", 20, |_| {
        let n = std::fs::read_dir(m("machines")).expect("ls").count();
        assert_eq!(n, 10_000);
    }));
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
    rows.push(measure(
        "stat status, 10,000 machines round robin",
        20_000,
        |i| {
            std::fs::metadata(m(&format!("machines/m{:05}/status", i % 9_999))).expect("stat");
        },
    ));
    rows.push(measure(
        "cat status, 10,000 machines round robin",
        20_000,
        |i| {
            std::fs::read(m(&format!("machines/m{:05}/status", i % 9_999))).expect("read");
        },
    ));

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
