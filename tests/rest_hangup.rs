//! A REST client that hangs up in the middle of a request that changes
//! something: hyper drops the request's future, yet what it began must
//! finish (or leave nothing), never half of it. Slow store writes
//! (`HYPERFLEET_TEST_STORE_DELAY_MS`) keep each request in flight long
//! enough to hang up during it; machines are Firecracker machines on the
//! fake engine, so no Docker is needed.
mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use common::rest::{rest_daemon_with_env, Client};
use common::Daemon;

/// Every store write takes this long.
const STORE_DELAY_MS: u64 = 2000;

struct Fleet {
    d: Daemon,
    c: Client,
    api: String,
    kernel: std::path::PathBuf,
    engine: tempfile::TempDir,
}

fn fleet() -> Fleet {
    let engine = tempfile::tempdir().unwrap();
    let kernel = engine.path().join("vmlinux");
    std::fs::write(&kernel, b"kernel").unwrap();
    let fake = format!("firecracker:{}", engine.path().display());
    let delay = STORE_DELAY_MS.to_string();
    let (d, api) = rest_daemon_with_env(&[
        ("HYPERFLEET_FAKE_RUNTIME", fake.as_str()),
        ("HYPERFLEET_TEST_STORE_DELAY_MS", delay.as_str()),
    ]);
    Fleet {
        d,
        c: Client::new(&api),
        api,
        kernel,
        engine,
    }
}

impl Fleet {
    fn body(&self, name: &str) -> String {
        json!({"name": name, "runtime_type": "firecracker", "kernel_image_path": self.kernel})
            .to_string()
    }

    /// curl sending `method path` (with `body`), not waited for.
    fn curl(&self, method: &str, path: &str, body: Option<&str>, max_time: &str) -> Child {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-s",
            "-o",
            "/dev/null",
            "--max-time",
            max_time,
            "-X",
            method,
        ]);
        if let Some(b) = body {
            cmd.args(["-H", "Content-Type: application/json", "--data-binary", b]);
        }
        cmd.arg(format!("{}{path}", self.api))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run curl")
    }

    /// GETs `path` until `ok` holds of the reply, for at most `secs`.
    fn until(&self, path: &str, secs: u64, what: &str, ok: impl Fn(&common::rest::Resp) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let r = self.c.get(path);
            if ok(&r) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "never {what}: last {} {}\ndaemon log:\n{}",
                r.status,
                r.text,
                common::tail(&self.d.log(), 40)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn a_create_whose_client_hangs_up_still_finishes() {
    let f = fleet();
    // The client gives up long before the row is written.
    let mut client = f.curl("POST", "/machines", Some(&f.body("web")), "0.5");
    let st = client.wait().expect("curl");
    assert_eq!(st.code(), Some(28), "curl should have timed out: {st}");

    // The create goes on without it: the machine appears, whole.
    f.until("/machines/web", 30, "created", |r| r.status == 200);
    let r = f.c.get("/machines/web");
    assert_eq!(r.json["status"], "pending", "{}", r.text);
    let listed = f.c.get("/machines");
    assert_eq!(
        listed.json.as_array().map(Vec::len),
        Some(1),
        "{}",
        listed.text
    );
    assert_eq!(f.d.ok("ls machines"), "web\n");

    // The name is held by that machine, not by a reservation nobody ends:
    // once it is deleted, the name can be used again.
    let again = f.c.post("/machines", &f.body("web"));
    assert_eq!(again.status, 409, "{}", again.text);
    assert_eq!(again.error_code(), "already_exists");
    let del = f.c.delete("/machines/web");
    assert_eq!(del.status, 204, "{}", del.text);
    let r = f.c.post("/machines", &f.body("web"));
    assert_eq!(r.status, 201, "{}", r.text);
}

#[test]
fn a_start_runs_to_completion_when_its_client_hangs_up() {
    let f = fleet();
    let r = f.c.post("/machines", &f.body("web"));
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.json["id"].as_str().expect("an id").to_owned();

    let mut client = f.curl("POST", "/machines/web/start", None, "120");
    // In flight: the daemon has begun it (`starting` is durable and shown),
    // and the commit of `running` is a slow store write away.
    f.until("/machines/web", 30, "starting", |r| {
        r.json["status"] == "starting"
    });
    client.kill().expect("kill curl");
    let st = client.wait().expect("curl");
    assert_eq!(st.code(), None, "curl ended by a signal, not by a reply");

    let r = f.c.get("/machines/web/wait?status=running&timeout=30");
    assert_eq!(r.status, 200, "{}", r.text);
    let r = f.c.get("/machines/web");
    assert_eq!(r.json["status"], "running", "{}", r.text);
    assert_eq!(r.json["error"], "", "{}", r.text);
    // One start reached the engine, and the workload runs.
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(f.engine.path().join(format!("{id}.json"))).expect("engine state"),
    )
    .expect("engine json");
    assert_eq!(state["state"], "running", "{state}");
    assert_eq!(state["starts"], 1, "{state}");
}
