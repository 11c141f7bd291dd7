//! Filesystem latency benchmark. Prints a table; asserts nothing.
//!
//!     cargo run --release --example bench
//!
//! Mounts a fresh filesystem in a temp dir (in-process, through the real
//! kernel FUSE path) and measures what a shell user would do. The Docker
//! rows need a running engine and the test image (contrib/make-test-image.sh).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use hyperfleet::core::Core;
use hyperfleet::daemon;

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

fn main() -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("hf-bench-").tempdir()?;
    let mount = dir.path().join("mnt");
    std::fs::create_dir_all(&mount)?;
    let rt = tokio::runtime::Runtime::new()?;
    let state = dir.path().join("state");
    let core = Core::open(&state, daemon::drivers(&state)?)?;
    rt.block_on(core.reconcile(true));
    let session = daemon::mount(core.clone(), rt.handle().clone(), &mount)?;
    let m = |rel: &str| mount.join(rel);
    let mut rows = Vec::new();

    std::fs::create_dir(m("machines/web"))?;
    rows.push(measure("stat machines/web/status", 20_000, |_| {
        std::fs::metadata(m("machines/web/status")).expect("stat");
    }));
    rows.push(measure("cat machines/web/status", 20_000, |_| {
        std::fs::read(m("machines/web/status")).expect("read");
    }));
    rows.push(measure("mkdir machines/N (first 1,000)", 1_000, |i| {
        std::fs::create_dir(m(&format!("machines/m{i:05}"))).expect("mkdir");
    }));
    for i in 1_000..9_999 {
        std::fs::create_dir(m(&format!("machines/m{i:05}")))?;
    }
    let count = std::fs::read_dir(m("machines"))?.count();
    assert_eq!(count, 10_000, "expected 10,000 machines");
    rows.push(measure("ls machines/ (10,000 machines)", 20, |_| {
        let n = std::fs::read_dir(m("machines")).expect("ls").count();
        assert_eq!(n, 10_000);
    }));
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
