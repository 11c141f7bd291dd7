//! Runs one container end to end through the library alone: no daemon, no
//! store, just `Container` and the local Docker Engine.
//!
//! Needs a running dockerd and the test image:
//!
//! ```sh
//! contrib/make-test-image.sh
//! cargo run --example docker
//! ```
//!
//! `HYPERFLEET_TEST_IMAGE` picks another image.

use std::sync::Arc;

use hyperfleet::model::{MachineSpec, Workload};
use hyperfleet::runtime::docker::Container;
use hyperfleet::runtime::{LogSink, Runtime};

/// Prints the progress lines the runtime reports (image pulls).
struct Progress;

impl LogSink for Progress {
    fn output(&self, _: &[u8]) {}
    fn note(&self, line: &str) {
        eprintln!("progress: {line}");
    }
    fn restart(&self) {}
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let image = std::env::var("HYPERFLEET_TEST_IMAGE")
        .unwrap_or_else(|_| "hyperfleet-test/busybox:latest".into());
    let mut spec = MachineSpec::container(image);
    spec.mem_size_mib = 64;
    if let Workload::Container(c) = &mut spec.workload {
        c.cmd = Some(vec![
            "sh".into(),
            "-c".into(),
            "echo booted; exec sleep 300".into(),
        ]);
    }
    let id = format!("example-{}", uuid::Uuid::new_v4());
    let container = Container::new(&id, spec)?.with_notes(Arc::new(Progress));

    println!("starting {}", container.name());
    container.start().await?;
    let result = run(&container).await;
    // Clean up even when a step in between failed.
    container.remove().await?;
    println!("removed {}", container.name());
    result
}

async fn run(container: &Container) -> anyhow::Result<()> {
    let info = container.info().await?;
    println!("state: {}, pid: {:?}", info.state, info.pid);

    let out = container.exec_cmd(&["uname", "-a"]).await?;
    print!("uname -a: {}", String::from_utf8_lossy(&out.stdout));
    println!("exit code: {}", out.exit_code);

    println!(
        "last log line: {}",
        container.logs_text(Some(1)).await?.trim_end()
    );

    // `sleep` is PID 1 here and ignores SIGTERM, so this takes the full
    // 10-second grace period before Docker kills it.
    println!("stopping (up to 10 s)");
    container.stop().await?;
    println!("observed: {:?}", container.observe().await?);
    Ok(())
}
