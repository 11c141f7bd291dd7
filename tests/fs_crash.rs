//! A daemon killed with SIGKILL at any point inside a `start` or a `stop`
//! never leaves a machine whose status contradicts its workload: after the
//! restart's reconcile, a machine shown running has exactly one workload
//! running, and one shown not running has none. The fake engine keeps its
//! state on disk and finishes a start on its own after the daemon is gone,
//! as a real engine finishes a request the daemon sent just before dying.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Daemon;
use hyperfleet::runtime::fake::FakeDriver;

fn fake_daemon(engine: &Path) -> Daemon {
    Daemon::start_with_env(&[(
        "HYPERFLEET_FAKE_RUNTIME",
        &format!("firecracker:{}", engine.display()),
    )])
}

fn background(d: &Daemon, script: &str) -> Child {
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(&d.mount)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sh")
}

/// Waits until the machine is in a settled status (reconcile may need a
/// few passes while the engine finishes what it was doing).
fn settled(d: &Daemon, name: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = d.read(&format!("machines/{name}/status")).trim().to_owned();
        if !matches!(st.as_str(), "starting" | "stopping") {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "{name} stayed {st}; log:\n{}",
            common::tail(&d.log(), 40)
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The rule: what the status says is what the engine runs.
fn check(d: &Daemon, fake: &FakeDriver, name: &str, starts_issued: u64, point: &str) -> String {
    let status = settled(d, name);
    let id = d.read(&format!("machines/{name}/id")).trim().to_owned();
    let engine = fake.state(&id);
    let engine_state = engine.as_ref().map(|e| e.state.clone()).unwrap_or_default();
    let runs = matches!(engine_state.as_str(), "running" | "paused" | "created");
    let error = d.read(&format!("machines/{name}/error"));
    match status.as_str() {
        "running" | "paused" => assert!(
            engine_state == status,
            "{point}: {name} is {status} but the engine says {engine_state:?} ({error})"
        ),
        _ => assert!(
            !runs,
            "{point}: {name} is {status} while its workload is {engine_state} ({error})"
        ),
    }
    let starts = engine.map_or(0, |e| e.starts);
    assert!(
        starts <= starts_issued,
        "{point}: {starts} starts for {starts_issued} requested: something started it twice"
    );
    status
}

#[test]
fn killing_the_daemon_anywhere_in_start_or_stop_never_leaves_a_wrong_status() {
    let engine = tempfile::tempdir().unwrap();
    let fake = FakeDriver::new(hyperfleet::model::RuntimeKind::Firecracker, engine.path());
    let kernel = engine.path().join("vmlinux");
    std::fs::write(&kernel, b"kernel").unwrap();
    let mut d = fake_daemon(engine.path());
    // Points from "before the request reached the engine" to "after it was done".
    let points_ms = [0u64, 15, 40, 80, 120, 180, 260, 350, 500];
    for (i, &point) in points_ms.iter().enumerate() {
        let name = format!("vm{i}");
        d.ok(&format!(
            r#"mkdir machines/{name} && /bin/echo '{{"runtime_type":"firecracker","kernel_image_path":"{}"}}' > machines/{name}/config"#,
            kernel.display()
        ));
        // The engine takes 150 ms to accept a start and 200 ms more to finish it.
        fake.set_knobs(
            &serde_json::from_str(
                r#"{"ops":{"start":{"delay_ms":150}},"finish_start_after_ms":200}"#,
            )
            .unwrap(),
        )
        .unwrap();
        let writer = background(&d, &format!("/bin/echo start > machines/{name}/ctl"));
        std::thread::sleep(Duration::from_millis(point));
        d.kill9();
        drop(writer);
        fake.set_knobs(&Default::default()).unwrap();
        d.spawn();
        let status = check(&d, &fake, &name, 1, &format!("start +{point}ms"));

        if status != "running" {
            continue;
        }
        // The same for a stop: the engine takes 150 ms to stop.
        fake.set_knobs(&serde_json::from_str(r#"{"ops":{"stop":{"delay_ms":150}}}"#).unwrap())
            .unwrap();
        let writer = background(&d, &format!("/bin/echo stop > machines/{name}/ctl"));
        std::thread::sleep(Duration::from_millis(point));
        d.kill9();
        drop(writer);
        fake.set_knobs(&Default::default()).unwrap();
        d.spawn();
        let status = check(&d, &fake, &name, 1, &format!("stop +{point}ms"));
        // A stop that was asked for well before the kill is never undone by
        // the restart (earlier points may kill before the daemon heard it).
        if point >= 260 {
            assert_ne!(status, "running", "stop +{point}ms: the stop was lost");
        }
    }
    // Whatever happened, every machine can still be driven to a clean end.
    for i in 0..points_ms.len() {
        let name = format!("vm{i}");
        d.ok(&format!(
            "st=$(cat machines/{name}/status); if [ \"$st\" = running ]; then echo kill > machines/{name}/ctl; fi; rmdir machines/{name}"
        ));
    }
    let left: Vec<String> = std::fs::read_dir(engine.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json") && n != "knobs.json")
        .collect();
    assert!(left.is_empty(), "engine state left behind: {left:?}");
}
