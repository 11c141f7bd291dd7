//! The original Hyperfleet's REST contract, over real HTTP against the
//! daemon and the real Docker engine: the seed README's curl examples as
//! written, the original's fields and their JSON types, every route under
//! both prefixes, filters, refused requests, and the filesystem seeing what
//! REST did (and the reverse) at once.
mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::rest::{curl, rest_daemon, rest_daemon_with_env, Client, Resp, Streamed};
use common::{require_docker, Daemon};

/// Leaves promptly on SIGTERM, so stops cost no grace period.
fn idle_cmd() -> Value {
    json!(["sh", "-c", "trap 'exit 0' TERM; sleep 600 & wait"])
}

/// The same, as JSON text a shell script can embed in single quotes.
const IDLE: &str = r#"["sh","-c","trap \"exit 0\" TERM; sleep 600 & wait"]"#;

fn create(c: &Client, name: &str, extra: Value) -> Resp {
    let mut body = json!({"name": name, "image": common::image(), "cmd": idle_cmd()});
    for (k, v) in extra.as_object().into_iter().flatten() {
        body[k] = v.clone();
    }
    c.post("/machines", &body.to_string())
}

fn names(r: &Resp) -> BTreeSet<String> {
    r.json
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {} {}", r.status, r.text))
        .iter()
        .map(|m| m["name"].as_str().expect("name").to_owned())
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// An image whose default command serves HTTP on port 80 (busybox httpd,
/// from the local test image: no registry is reachable here), standing in
/// for the README's `nginx:latest`.
fn httpd_image() -> String {
    static MADE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    MADE.get_or_init(|| {
        let image = "hyperfleet-test/httpd:latest".to_owned();
        let have = std::process::Command::new("docker")
            .args(["image", "inspect", &image])
            .output()
            .is_ok_and(|o| o.status.success());
        if !have {
            let name = format!("hf-httpd-build-{}", std::process::id());
            common::docker(&[
                "create",
                "--name",
                &name,
                &common::image(),
                "sh",
                "-c",
                "mkdir -p /www && echo hello from hyperfleet > /www/index.html",
            ]);
            common::docker(&["start", "-a", &name]);
            common::docker(&[
                "commit",
                "--change",
                r#"CMD ["httpd","-f","-p","80","-h","/www"]"#,
                &name,
                &image,
            ]);
            common::docker(&["rm", &name]);
        }
        image
    })
    .clone()
}

// ----- the seed README's examples, character for character -----

const README_CREATE_FIRECRACKER: &str = r#"curl -X POST http://localhost:3000/machines \
  -H "Content-Type: application/json" \
  -d '{
    "name": "my-firecracker-vm",
    "runtime_type": "firecracker",
    "vcpu_count": 2,
    "mem_size_mib": 512,
    "kernel_image_path": "/path/to/vmlinux",
    "rootfs_path": "/path/to/rootfs.ext4"
  }'"#;

const README_CREATE_CLOUD_HYPERVISOR: &str = r#"curl -X POST http://localhost:3000/machines \
  -H "Content-Type: application/json" \
  -d '{
    "name": "my-ch-vm",
    "runtime_type": "cloud-hypervisor",
    "vcpu_count": 4,
    "mem_size_mib": 1024,
    "kernel_image_path": "/path/to/vmlinux",
    "rootfs_path": "/path/to/rootfs.ext4"
  }'"#;

const README_CREATE_DOCKER: &str = r#"curl -X POST http://localhost:3000/machines \
  -H "Content-Type: application/json" \
  -d '{
    "name": "my-container",
    "runtime_type": "docker",
    "vcpu_count": 2,
    "mem_size_mib": 512,
    "image": "nginx:latest",
    "ports": [{"host_port": 8080, "container_port": 80}],
    "env": {"NODE_ENV": "production"}
  }'"#;

const README_LIST_ALL: &str = "curl http://localhost:3000/machines";
const README_LIST_DOCKER: &str = "curl http://localhost:3000/machines?runtime_type=docker";
const README_LIST_RUNNING: &str = "curl http://localhost:3000/machines?status=running";
const README_START: &str = "curl -X POST http://localhost:3000/machines/{id}/start";
const README_STOP: &str = "curl -X POST http://localhost:3000/machines/{id}/stop";
const README_RESTART: &str = "curl -X POST http://localhost:3000/machines/{id}/restart";
const README_DELETE: &str = "curl -X DELETE http://localhost:3000/machines/{id}";
const README_EXEC: &str = r#"curl -X POST http://localhost:3000/machines/{id}/exec \
  -H "Content-Type: application/json" \
  -d '{
    "cmd": ["ls", "-la"],
    "timeout": 30
  }'"#;

/// Runs one example through `sh` as a user would paste it. A curl config
/// (not the command) makes curl also print the status on a last line.
fn example(d: &Daemon, curlrc: &std::path::Path, command: &str) -> (u16, Value) {
    let out = d.sh(&format!(
        "CURL_HOME='{}' && export CURL_HOME && {command}",
        curlrc.display()
    ));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{command}\nfailed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (body, code) = stdout
        .trim_end()
        .rsplit_once('\n')
        .unwrap_or(("", stdout.trim()));
    let code = code
        .parse()
        .unwrap_or_else(|_| panic!("{command}: no status in {stdout:?}"));
    (code, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[test]
fn the_seed_readmes_curl_examples_work_as_written() {
    require_docker();
    let image = httpd_image();
    // The examples name localhost:3000.
    let (d, _) = rest_daemon_with_env(&[("HYPERFLEET_LISTEN", "127.0.0.1:3000")]);
    let rc = tempfile::tempdir().unwrap();
    std::fs::write(rc.path().join(".curlrc"), "-w \"\\n%{http_code}\\n\"\n").unwrap();
    let run = |cmd: &str| example(&d, rc.path(), cmd);

    let (code, fc) = run(README_CREATE_FIRECRACKER);
    assert_eq!(code, 201, "{fc}");
    assert_eq!(fc["runtime_type"], "firecracker");
    assert_eq!(fc["kernel_image_path"], "/path/to/vmlinux");
    assert_eq!(fc["rootfs_path"], "/path/to/rootfs.ext4");
    assert_eq!(
        (fc["vcpu_count"].as_u64(), fc["mem_size_mib"].as_u64()),
        (Some(2), Some(512))
    );
    let (code, ch) = run(README_CREATE_CLOUD_HYPERVISOR);
    assert_eq!(code, 201, "{ch}");
    assert_eq!(ch["runtime_type"], "cloud-hypervisor");
    assert_eq!(ch["vcpu_count"], 4);
    // The only change to an example: nginx:latest cannot be pulled here.
    let (code, web) = run(&README_CREATE_DOCKER.replace("nginx:latest", &image));
    assert_eq!(code, 201, "{web}");
    assert_eq!(
        (web["status"].as_str(), web["image"].as_str()),
        (Some("pending"), Some(image.as_str()))
    );
    assert_eq!(web["config"]["env"]["NODE_ENV"], "production");
    assert_eq!(
        d.ok("ls machines"),
        "my-ch-vm\nmy-container\nmy-firecracker-vm\n"
    );

    let (code, all) = run(README_LIST_ALL);
    assert_eq!(code, 200);
    assert_eq!(all.as_array().map(Vec::len), Some(3), "{all}");
    let (code, docker) = run(README_LIST_DOCKER);
    assert_eq!(code, 200);
    assert_eq!(docker.as_array().map(Vec::len), Some(1), "{docker}");
    assert_eq!(docker[0]["name"], "my-container");
    assert_eq!(run(README_LIST_RUNNING), (200, json!([])));

    let id = web["id"].as_str().expect("id").to_owned();
    let with_id = |cmd: &str| cmd.replace("{id}", &id);
    let (code, started) = run(&with_id(README_START));
    assert_eq!(code, 200, "{started}");
    assert_eq!(started["status"], "running");
    let container = started["container_id"]
        .as_str()
        .expect("container_id after start");
    assert_eq!(
        common::docker(&["inspect", "-f", "{{.State.Running}}", container]),
        "true"
    );
    assert!(started["pid"].as_u64().is_some_and(|p| p > 1), "{started}");
    // The port mapping of the example serves.
    d.until(
        "curl -sf http://127.0.0.1:8080/ | grep -q 'hello from hyperfleet'",
        20,
        "the example's published port never answered",
    );
    let (_, running) = run(README_LIST_RUNNING);
    assert_eq!(running.as_array().map(Vec::len), Some(1), "{running}");

    let (code, stopped) = run(&with_id(README_STOP));
    assert_eq!(
        (code, stopped["status"].as_str()),
        (200, Some("stopped")),
        "{stopped}"
    );
    assert_eq!(d.read("machines/my-container/status"), "stopped\n");
    let (code, restarted) = run(&with_id(README_RESTART));
    assert_eq!(
        (code, restarted["status"].as_str()),
        (200, Some("running")),
        "{restarted}"
    );

    let (code, out) = run(&with_id(README_EXEC));
    assert_eq!(code, 200, "{out}");
    assert_eq!(out["exit_code"], 0, "{out}");
    assert!(
        out["stdout"].as_str().is_some_and(|s| s.contains("www")),
        "{out}"
    );
    assert_eq!(out["stderr"], "");

    // A running machine: stopped first, then deleted.
    let (code, body) = run(&with_id(README_DELETE));
    assert_eq!((code, body), (204, Value::Null));
    assert_eq!(d.ok("ls machines"), "my-ch-vm\nmy-firecracker-vm\n");
    assert!(
        d.containers().is_empty(),
        "the container outlived its machine"
    );
    for vm in [&fc, &ch] {
        let (code, _) = run(&README_DELETE.replace("{id}", vm["id"].as_str().unwrap()));
        assert_eq!(code, 204);
    }
    assert_eq!(run(README_LIST_ALL), (200, json!([])));
}

// ----- the original's fields -----

/// The original's fields, each with the JSON types it may have.
const ORIGINAL_FIELDS: &[(&str, &[&str])] = &[
    ("id", &["string"]),
    ("name", &["string"]),
    ("status", &["string"]),
    ("runtime_type", &["string"]),
    ("vcpu_count", &["number"]),
    ("mem_size_mib", &["number"]),
    ("kernel_image_path", &["string", "null"]),
    ("kernel_args", &["string", "null"]),
    ("rootfs_path", &["string", "null"]),
    ("network", &["object", "null"]),
    ("image", &["string", "null"]),
    ("container_id", &["string", "null"]),
    ("pid", &["number", "null"]),
    ("created_at", &["string"]),
    ("updated_at", &["string"]),
    ("error_message", &["string", "null"]),
];

/// Ours, which follow them.
const OUR_FIELDS: &[(&str, &[&str])] = &[
    ("config", &["object"]),
    ("error", &["string"]),
    ("exit_code", &["number", "null"]),
    ("exit", &["string", "null"]),
    ("created_at_ms", &["number"]),
    ("updated_at_ms", &["number"]),
    ("started_at_ms", &["number", "null"]),
    ("started_at", &["string", "null"]),
];

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, as JavaScript's toISOString writes it.
fn is_iso8601(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 24
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            23 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

fn check_shape(m: &Value) {
    let obj = m
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {m}"));
    for (field, types) in ORIGINAL_FIELDS.iter().chain(OUR_FIELDS) {
        let v = obj
            .get(*field)
            .unwrap_or_else(|| panic!("{field} missing from {m}"));
        assert!(
            types.contains(&json_type(v)),
            "{field} is {} ({v}), expected {types:?}",
            json_type(v)
        );
    }
    for field in ["created_at", "updated_at"] {
        assert!(
            is_iso8601(m[field].as_str().unwrap()),
            "{field}: {}",
            m[field]
        );
    }
    if let Some(s) = m["started_at"].as_str() {
        assert!(is_iso8601(s), "started_at: {s}");
    }
}

#[test]
fn machines_have_the_originals_fields_with_their_json_types() {
    require_docker();
    let (d, api) = rest_daemon();
    let c = Client::new(&api);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;

    let web = create(&c, "web", json!({}));
    assert_eq!(web.status, 201, "{}", web.text);
    check_shape(&web.json);
    let created_ms = web.json["created_at_ms"].as_i64().unwrap();
    assert!(
        created_ms >= before - 1000 && created_ms <= before + 60_000,
        "{}",
        web.text
    );
    assert_eq!(
        (web.json["container_id"].clone(), web.json["pid"].clone()),
        (Value::Null, Value::Null),
        "pending: nothing runs"
    );
    let vm = c.post(
        "/machines",
        &json!({"name": "vm", "runtime_type": "firecracker", "vcpu_count": 2, "mem_size_mib": 256,
                "kernel_image_path": "/k/vmlinux", "kernel_args": "console=ttyS0",
                "network": {"tap_device": "tap0", "tap_ip": "172.16.0.1",
                            "guest_ip": "172.16.0.2", "guest_mac": "02:00:00:00:00:01"}})
        .to_string(),
    );
    assert_eq!(vm.status, 201, "{}", vm.text);
    check_shape(&vm.json);
    assert_eq!(vm.json["network"]["guest_mac"], "02:00:00:00:00:01");
    assert_eq!(vm.json["kernel_args"], "console=ttyS0");
    assert_eq!(vm.json["image"], Value::Null);

    // Running: a single machine carries the runtime's container and pid...
    let started = c.post_empty("/machines/web/start");
    assert_eq!(started.status, 200, "{}", started.text);
    let one = c.get("/machines/web");
    check_shape(&one.json);
    let handle = d.info("web")["runtime_info"]["handle"].clone();
    assert_eq!(one.json["container_id"], handle);
    assert!(one.json["pid"].as_u64().is_some(), "{}", one.text);
    assert!(one.json["started_at"].is_string());
    // ...a list does not ask the runtime: it shows the container the
    // daemon made, and no pid (only Docker knows it).
    let list = c.get("/machines");
    for m in list.json.as_array().unwrap() {
        check_shape(m);
        let container = if m["name"] == "web" {
            handle.clone()
        } else {
            Value::Null
        };
        assert_eq!(
            (m["container_id"].clone(), m["pid"].clone()),
            (container, Value::Null),
            "{m}"
        );
    }
    // The machine is the filesystem's, field for field.
    let config: Value = serde_json::from_str(&d.read("machines/web/config")).unwrap();
    assert_eq!(one.json["config"], config);
    assert_eq!(one.json["id"], d.read("machines/web/id").trim());

    // A run that fails leaves error_message, as the original did.
    let bad = c.post(
        "/machines",
        &json!({"name": "bad", "image": common::image(), "cmd": ["sh", "-c", "exit 3"]})
            .to_string(),
    );
    assert_eq!(bad.status, 201);
    c.post_empty("/machines/bad/start");
    let failed = c.get("/machines/bad/wait?status=failed&timeout=30");
    assert_eq!(failed.status, 200, "{}", failed.text);
    let failed = c.get("/machines/bad");
    check_shape(&failed.json);
    assert_eq!(failed.json["status"], "failed");
    assert_eq!(failed.json["exit_code"], 3);
    let message = failed.json["error_message"]
        .as_str()
        .expect("error_message");
    assert!(message.contains("code 3"), "{message}");
    assert_eq!(message, d.read("machines/bad/error").trim_end());
    assert_eq!(web.json["error_message"], Value::Null);
    c.post_empty("/machines/web/kill");
}

// ----- every route, both prefixes -----

#[test]
fn every_documented_route_answers_under_both_prefixes() {
    require_docker();
    let (d, api) = rest_daemon();
    let c = Client::new(&api);
    let doc = c.get("/openapi.json").json;
    assert_eq!(doc["openapi"], "3.1.0");
    let documented: BTreeSet<String> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .map(|op| op["operationId"].as_str().unwrap().to_owned())
        .collect();
    for (i, prefix) in ["", "/api/v1"].into_iter().enumerate() {
        let mut covered = BTreeSet::new();
        let mut call =
            |op: &str, method: &str, path: &str, body: Option<&str>, want: u16| -> Resp {
                let r = c.send(method, &format!("{prefix}{path}"), body.map(str::as_bytes));
                assert_eq!(r.status, want, "{op}: {method} {prefix}{path}: {}", r.text);
                covered.insert(op.to_owned());
                r
            };
        let w = format!("w{i}");
        let m = |rest: &str| format!("/machines/{w}{rest}");
        assert_eq!(
            call("health", "GET", "/health", None, 200).json["status"],
            "ok"
        );
        assert_eq!(call("openapi", "GET", "/openapi.json", None, 200).json, doc);
        let page = call("swagger", "GET", "/swagger", None, 200);
        assert!(page
            .header("content-type")
            .unwrap()
            .starts_with("text/html"));
        assert!(page.text.contains("/machines/{id}/logs"));
        let body = json!({"name": w, "image": common::image(), "cmd": idle_cmd()}).to_string();
        call("createMachine", "POST", "/machines", Some(&body), 201);
        // Streams of this machine's events, which end with it.
        let addr = api.trim_start_matches("http://");
        let events = Streamed::get(addr, &format!("{prefix}/events?machine={w}"), &[]);
        let machine_events = Streamed::get(addr, &format!("{prefix}{}", m("/events")), &[]);
        assert_eq!((events.status, machine_events.status), (200, 200));
        assert!(names(&call("listMachines", "GET", "/machines", None, 200)).contains(&w));
        assert_eq!(
            call("getMachine", "GET", &m(""), None, 200).json["name"],
            w.as_str()
        );
        let config = json!({"image": common::image(), "cmd": idle_cmd(), "env": {"X": "1"}});
        call(
            "setMachineConfig",
            "PUT",
            &m("/config"),
            Some(&config.to_string()),
            200,
        );
        assert_eq!(
            call("getMachineConfig", "GET", &m("/config"), None, 200).json["env"]["X"],
            "1"
        );
        assert_eq!(
            call("startMachine", "POST", &m("/start"), None, 200).json["status"],
            "running"
        );
        assert_eq!(
            call("pauseMachine", "POST", &m("/pause"), None, 200).json["status"],
            "paused"
        );
        assert_eq!(
            call("resumeMachine", "POST", &m("/resume"), None, 200).json["status"],
            "running"
        );
        call(
            "waitMachine",
            "GET",
            &m("/wait?status=running&timeout=5"),
            None,
            200,
        );
        call(
            "waitMachinePost",
            "POST",
            &m("/wait?status=running"),
            None,
            200,
        );
        let exec = call(
            "execInMachine",
            "POST",
            &m("/exec"),
            Some(r#"{"cmd":["sh","-c","echo $X"]}"#),
            200,
        );
        assert_eq!(exec.json["stdout"], "1\n");
        let logs = call("machineLogs", "GET", &m("/logs?tail=5"), None, 200);
        assert!(logs
            .header("content-type")
            .unwrap()
            .starts_with("text/plain"));
        assert_eq!(
            call("restartMachine", "POST", &m("/restart"), None, 200).json["status"],
            "running"
        );
        assert_eq!(
            call("stopMachine", "POST", &m("/stop"), None, 200).json["status"],
            "stopped"
        );
        call("startMachine", "POST", &m("/start"), None, 200);
        assert_eq!(
            call("killMachine", "POST", &m("/kill"), None, 200).json["status"],
            "stopped"
        );
        call("startMachine", "POST", &m("/start"), None, 200);
        let down = call(
            "shutdownMachine",
            "POST",
            &m("/shutdown?timeout=1"),
            None,
            200,
        );
        assert_eq!(down.json["status"], "stopped");
        call("deleteMachine", "DELETE", &m(""), None, 204);
        for (op, stream) in [("events", events), ("machineEvents", machine_events)] {
            let mut stream = stream;
            let text = stream.rest();
            let last = text.lines().last().unwrap_or_default();
            assert!(last.contains(r#""type":"deleted""#), "{op}: {text}");
            covered.insert(op.to_owned());
        }
        assert_eq!(
            covered, documented,
            "routes the test did not call, under {prefix:?}"
        );
    }
    assert_eq!(d.ok("ls machines"), "");
    assert!(d.containers().is_empty());
}

// ----- filters -----

#[test]
fn lists_filter_by_runtime_and_status() {
    require_docker();
    let (d, api) = rest_daemon();
    let c = Client::new(&api);
    assert_eq!(create(&c, "d1", json!({})).status, 201);
    assert_eq!(create(&c, "d2", json!({})).status, 201);
    // Listed once as pending, then listed again as what it has become.
    assert_eq!(
        names(&c.get("/machines?status=pending")),
        set(&["d1", "d2"])
    );
    assert_eq!(c.post_empty("/machines/d2/start").status, 200);
    let fc = c.post(
        "/machines",
        r#"{"name":"f1","runtime_type":"firecracker","kernel_image_path":"/k"}"#,
    );
    assert_eq!(fc.status, 201, "{}", fc.text);
    // One made through the filesystem is listed like the others.
    d.ok(r#"mkdir machines/c1 && echo '{"runtime_type":"cloud-hypervisor"}' > machines/c1/config"#);
    for prefix in ["", "/api/v1"] {
        // The names listed; every item says what the filter asked for.
        let list = |q: &str| {
            let r = c.get(&format!("{prefix}/machines{q}"));
            for pair in q
                .trim_start_matches('?')
                .split('&')
                .filter(|p| !p.is_empty())
            {
                let (k, v) = pair.split_once('=').unwrap();
                for m in r.json.as_array().unwrap() {
                    assert_eq!(m[k], v, "{q}: {m}");
                }
            }
            names(&r)
        };
        assert_eq!(list(""), set(&["c1", "d1", "d2", "f1"]));
        assert_eq!(list("?runtime_type=docker"), set(&["d1", "d2"]));
        assert_eq!(list("?runtime_type=cloud-hypervisor"), set(&["c1"]));
        assert_eq!(list("?status=running"), set(&["d2"]));
        assert_eq!(list("?status=pending"), set(&["c1", "d1", "f1"]));
        assert_eq!(list("?runtime_type=docker&status=pending"), set(&["d1"]));
        assert_eq!(list("?status=running&runtime_type=firecracker"), set(&[]));
        assert_eq!(list("?status=failed"), set(&[]));
        for (q, names) in [
            ("?status=runing", "runing"),
            ("?runtime_type=qemu", "qemu"),
            ("?limit=5", "limit"),
            ("?status=running&status=pending", "twice"),
        ] {
            let r = c.get(&format!("{prefix}/machines{q}"));
            assert_eq!(r.status, 400, "{q}: {}", r.text);
            assert_eq!(r.error_code(), "invalid_command");
            assert!(
                r.json["message"].as_str().unwrap().contains(names),
                "{q}: {}",
                r.text
            );
        }
    }
    c.post_empty("/machines/d2/kill");
}

// ----- refused requests -----

#[test]
fn bad_requests_are_refused_with_the_originals_codes_and_change_nothing() {
    require_docker();
    let (d, api) = rest_daemon();
    let c = Client::new(&api);
    for (body, code, names) in [
        ("not json", "validation_error", "expected"),
        (
            r#"{"name":"w","vcpu_count":"two"}"#,
            "validation_error",
            "vcpu_count",
        ),
        (
            r#"{"name":"w","ports":[{"host_port":"80","container_port":80}]}"#,
            "validation_error",
            "ports[0].host_port",
        ),
        (
            r#"{"name":"w","ports":[{"host_port":80,"container_port":80,"protocol":"icmp"}]}"#,
            "validation_error",
            "protocol",
        ),
        (r#"[1]"#, "validation_error", "object"),
        (r#"{"name":7}"#, "validation_error", "name"),
        (r#"{}"#, "invalid_name", "name"),
        (r#"{"name":"../x"}"#, "invalid_name", "../x"),
        (
            r#"{"name":"w","runtime_type":"qemu"}"#,
            "validation_error",
            "qemu",
        ),
        (r#"{"name":"w","imgae":"x"}"#, "validation_error", "imgae"),
        (
            r#"{"name":"w","image":"x","kernel_image_path":"/k"}"#,
            "validation_error",
            "kernel_image_path",
        ),
        (
            r#"{"name":"w","volumes":[{"host_path":"rel","container_path":"/d"}]}"#,
            "validation_error",
            "volumes[0].host_path",
        ),
    ] {
        let r = c.post("/machines", body);
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert_eq!(r.error_code(), code, "{body}");
        assert!(
            r.json["message"].as_str().unwrap().contains(names),
            "{body}: {}",
            r.text
        );
    }
    // Oversized bodies, announced or streamed.
    let big = vec![b' '; (1 << 20) + 100];
    let r = c.send("POST", "/machines", Some(&big));
    assert_eq!((r.status, r.error_code()), (413, "too_large".to_owned()));
    let chunked = curl(
        &[
            "-X".into(),
            "POST".into(),
            "-H".into(),
            "Transfer-Encoding: chunked".into(),
            "--data-binary".into(),
            "@-".into(),
            format!("{api}/machines"),
        ],
        &big,
    );
    assert_eq!(chunked.status, 413, "{}", chunked.text);
    assert_eq!(
        d.ok("ls machines"),
        "",
        "a refused create created something"
    );

    // What clients of the original send is accepted.
    for body in [
        json!({"name": "blanks", "runtime_type": "docker", "image": "x", "kernel_image_path": "",
               "kernel_args": null, "rootfs_path": "", "network": null}),
        json!({"name": "extras", "image": "x", "privileged": false, "entrypoint": "/bin/sh",
               "ports": [{"host_port": 5353, "container_port": 53, "protocol": "udp"}]}),
        json!({"name": "vmblanks", "runtime_type": "firecracker", "kernel_image_path": "/k",
               "image": "", "env": {}, "ports": [], "privileged": false, "entrypoint": ""}),
    ] {
        let r = c.post("/machines", &body.to_string());
        assert_eq!(r.status, 201, "{body}: {}", r.text);
    }
    let extras = c.get("/machines/extras/config").json;
    assert_eq!(extras["entrypoint"], json!(["/bin/sh"]));
    assert_eq!(extras["ports"][0]["protocol"], "udp");

    // Conflicts, missing pieces, wrong states, timeouts.
    let r = c.post("/machines", r#"{"name":"blanks","image":"x"}"#);
    assert_eq!(
        (r.status, r.error_code()),
        (409, "already_exists".to_owned())
    );
    d.ok("mkdir machines/empty");
    let r = c.post_empty("/machines/empty/start");
    assert_eq!(
        (r.status, r.error_code()),
        (422, "incomplete_config".to_owned())
    );
    assert!(d.read("machines/empty/error").contains("needs image"));
    let r = c.post("/machines/empty/exec", r#"{"cmd":["true"]}"#);
    assert_eq!(
        (r.status, r.error_code()),
        (409, "invalid_state".to_owned()),
        "exec when not running"
    );
    for (body, names) in [
        ("ls -la", "JSON object"),
        (r#"{"cmd":"ls"}"#, "expected a sequence"),
        (r#"{"cmd":["ls"],"timeout":"30"}"#, "expected f64"),
        (r#"{"cmd":["ls"]"#, "JSON"),
    ] {
        let r = c.post("/machines/empty/exec", body);
        assert_eq!(
            (r.status, r.error_code()),
            (400, "invalid_command".to_owned()),
            "{body}"
        );
        assert!(
            r.json["message"].as_str().unwrap().contains(names),
            "{body}: {}",
            r.text
        );
    }
    let r = c.put("/machines/empty/config", r#"{"vcpu_count":0}"#);
    assert_eq!(
        (r.status, r.error_code()),
        (400, "validation_error".to_owned())
    );
    let r = c.post_empty("/machines/empty/stop");
    assert_eq!(
        (r.status, r.error_code()),
        (409, "invalid_state".to_owned())
    );
    let r = c.post_empty("/machines/empty/wait?status=running&timeout=0.2");
    assert_eq!((r.status, r.error_code()), (504, "timeout".to_owned()));
    let r = c.post_empty("/machines/empty/wait");
    assert_eq!(
        (r.status, r.error_code()),
        (400, "invalid_command".to_owned())
    );
    let r = c.get("/machines/empty/logs?tail=-1");
    assert_eq!(r.status, 400);

    // Routes and methods that do not exist.
    let r = c.get("/machines/empty/explode");
    assert_eq!((r.status, r.error_code()), (404, "no_route".to_owned()));
    assert!(r.json["message"]
        .as_str()
        .unwrap()
        .contains("GET /machines/empty/explode"));
    let r = c.send("PATCH", "/machines/empty", None);
    assert_eq!(
        (r.status, r.error_code()),
        (405, "method_not_allowed".to_owned())
    );
    assert_eq!(r.header("allow"), Some("GET, DELETE"));
    let r = c.get("/machines/empty?verbose=1");
    assert_eq!(
        (r.status, r.error_code()),
        (400, "invalid_command".to_owned())
    );

    // Unknown ids, on every route that takes one.
    let doc = c.get("/openapi.json").json;
    let mut tried = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        if !path.contains("{id}") {
            continue;
        }
        for method in item.as_object().unwrap().keys() {
            let query = if path.ends_with("/wait") {
                "?status=running"
            } else {
                ""
            };
            let url = format!("{}{query}", path.replace("{id}", "no-such-machine"));
            let body = match (method.as_str(), path.as_str()) {
                ("put", _) => Some(&br#"{"image":"x"}"#[..]),
                (_, p) if p.ends_with("/exec") => Some(&br#"{"cmd":["true"]}"#[..]),
                _ => None,
            };
            let r = c.send(&method.to_uppercase(), &url, body);
            assert_eq!(
                (r.status, r.error_code()),
                (404, "not_found".to_owned()),
                "{method} {url}"
            );
            tried += 1;
        }
    }
    assert!(tried >= 15, "only {tried} routes take an id?");
    assert_eq!(
        d.ok("ls machines"),
        "blanks\nempty\nextras\nvmblanks\n",
        "a refused request changed something"
    );
}

// ----- the filesystem and REST, both ways -----

#[test]
fn rest_and_the_filesystem_see_each_others_changes_at_once() {
    require_docker();
    let (d, api) = rest_daemon();
    let c = Client::new(&api);
    // REST → filesystem: no wait, no poll.
    assert_eq!(create(&c, "a", json!({"env": {"K": "v"}})).status, 201);
    assert_eq!(d.read("machines/a/status"), "pending\n");
    assert_eq!(d.ok("ls by-runtime/docker"), "a\n");
    let config: Value = serde_json::from_str(&d.read("machines/a/config")).unwrap();
    assert_eq!(config["env"]["K"], "v");
    let r = c.put(
        "/machines/a/config",
        &json!({"image": common::image(), "cmd": idle_cmd(), "env": {"K": "w"}}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let config: Value = serde_json::from_str(&d.read("machines/a/config")).unwrap();
    assert_eq!(config["env"]["K"], "w");
    assert_eq!(c.post_empty("/machines/a/start").status, 200);
    assert_eq!(d.read("machines/a/status"), "running\n");
    assert_eq!(d.ok("ls by-status/running"), "a\n");
    assert_eq!(c.post_empty("/machines/a/stop").status, 200);
    assert_eq!(d.read("machines/a/status"), "stopped\n");
    assert_eq!(c.delete("/machines/a").status, 204);
    assert_eq!(d.ok("ls machines"), "");

    // Filesystem → REST.
    d.machine("b", IDLE);
    let b = c.get("/machines/b");
    assert_eq!(
        (b.status, b.json["status"].as_str()),
        (200, Some("pending"))
    );
    assert_eq!(b.json["id"], d.read("machines/b/id").trim());
    d.ok(r#"/bin/echo '{"image":"'"$IMAGE"'","cmd":["sleep","600"],"vcpu_count":2}' > machines/b/config"#);
    assert_eq!(c.get("/machines/b/config").json["vcpu_count"], 2);
    d.ok("echo start > machines/b/ctl");
    let b = c.get("/machines/b");
    assert_eq!(b.json["status"], "running");
    assert_eq!(
        b.json["container_id"],
        d.info("b")["runtime_info"]["handle"]
    );
    d.ok("echo kill > machines/b/ctl");
    assert_eq!(c.get("/machines/b").json["status"], "stopped");
    d.ok("rmdir machines/b");
    assert_eq!(c.get("/machines/b").status, 404);
    assert_eq!(c.get("/machines").text, "[]");
    assert!(d.containers().is_empty());
}

// ----- logs -----

#[test]
fn logs_follow_streams_until_the_run_ends() {
    require_docker();
    let (d, api) = rest_daemon_with_env(&[("HYPERFLEET_LOG", "info,hyperfleet::rest=debug")]);
    let c = Client::new(&api);
    let r = create(
        &c,
        "web",
        json!({"cmd": ["sh", "-c",
            "trap 'echo bye; exit 0' TERM; echo one; echo two; while [ ! -e /go ]; do sleep 0.05; done; echo three; sleep 600 & wait"]}),
    );
    assert_eq!(r.status, 201);
    assert_eq!(c.post_empty("/machines/web/start").status, 200);
    d.until(
        "grep -qx two machines/web/logs",
        30,
        "the workload's first lines",
    );

    // A follower gets the tail, then what comes, and ends with the run.
    let out = d.state.join("follow.out");
    d.ok(&format!(
        "(curl -sN '{api}/machines/web/logs?follow=true&tail=1' > '{o}'; echo \"exit $?\" >> '{o}') >/dev/null 2>&1 &",
        o = out.display()
    ));
    d.until(&format!("grep -qx two '{}'", out.display()), 10, "the tail");
    common::docker(&[
        "exec",
        d.info("web")["runtime_info"]["handle"].as_str().unwrap(),
        "touch",
        "/go",
    ]);
    d.until(
        &format!("grep -qx three '{}'", out.display()),
        10,
        "output written after the follow began",
    );
    assert_eq!(c.post_empty("/machines/web/stop").status, 200);
    d.until(
        &format!("grep -q '^exit' '{}'", out.display()),
        10,
        "the follow ending with the run",
    );
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "two\nthree\nbye\nexit 0\n"
    );

    // On a machine that is not running, follow returns what there is and ends.
    let r = c.get("/machines/web/logs?follow=true");
    assert_eq!(r.status, 200);
    assert_eq!(r.text, "one\ntwo\nthree\nbye\n");

    // A follower whose client goes away is dropped, not left polling.
    assert_eq!(c.post_empty("/machines/web/start").status, 200);
    let before = d.log().matches("log follower done").count();
    let gone = d.sh(&format!(
        "curl -sN -m 1 '{api}/machines/web/logs?follow=true' >/dev/null"
    ));
    assert!(
        !gone.status.success(),
        "curl should have been cut off by -m 1"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.log().matches("log follower done").count() == before {
        assert!(
            Instant::now() < deadline,
            "the follower outlived its client:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        d.read("machines/web/status"),
        "running\n",
        "the client's going stopped nothing"
    );
    c.post_empty("/machines/web/kill");
}

// ----- wait -----

#[test]
fn wait_by_get_or_post_sees_a_status_reached_meanwhile() {
    require_docker();
    let (d, api) = rest_daemon();
    let c = Client::new(&api);
    assert_eq!(create(&c, "web", json!({})).status, 201);
    // The original's clients wait with GET; ours may POST.
    let waiter = std::thread::spawn({
        let c = c.clone();
        move || c.get("/api/v1/machines/web/wait?status=running&timeout=60")
    });
    // The waiter is registered once its request is in; a start through the
    // filesystem then releases it.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !waiter.is_finished(),
        "the wait returned before the machine ran"
    );
    d.ok("echo start > machines/web/ctl");
    let r = waiter.join().unwrap();
    assert_eq!(
        (r.status, r.json["status"].as_str()),
        (200, Some("running")),
        "{}",
        r.text
    );
    let r = c.post_empty("/machines/web/wait?status=stopped&timeout=0.3");
    assert_eq!((r.status, r.error_code()), (504, "timeout".to_owned()));
    assert!(
        r.json["message"]
            .as_str()
            .unwrap()
            .contains("it is running"),
        "{}",
        r.text
    );
    c.post_empty("/machines/web/kill");
}

// ----- hang-ups and slow clients -----

#[test]
fn a_delete_whose_client_hangs_up_still_stops_and_deletes() {
    require_docker();
    let (d, api) = rest_daemon();
    // `sleep` ignores SIGTERM: the stop takes its 10 s grace; the client gives up after 1 s.
    d.running("web", r#"["sleep","600"]"#);
    let out = d.sh(&format!("curl -s -m 1 -X DELETE {api}/machines/web"));
    assert!(!out.status.success(), "curl should have timed out");
    d.until(
        "! test -e machines/web",
        30,
        "the machine deleted after the client left",
    );
    assert!(
        d.containers().is_empty(),
        "half-deleted: its container is left"
    );
}

/// Sends `req` raw and returns what comes back until the server closes
/// (or `limit` passes), and how long that took.
fn raw(addr: &str, req: &[u8], limit: Duration) -> (String, Duration) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(limit)).unwrap();
    s.write_all(req).unwrap();
    let t = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("the server kept the connection past {limit:?}: {e}; got {got:?}"),
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), t.elapsed())
}

#[test]
fn slow_and_idle_clients_are_cut_off() {
    let (d, api) = rest_daemon_with_env(&[("HYPERFLEET_REST_TIMEOUT_SECS", "1")]);
    let addr = api.trim_start_matches("http://").to_owned();
    let limit = Duration::from_secs(5);
    // Connected, silent.
    let (got, took) = raw(&addr, b"", limit);
    assert_eq!(got, "");
    assert!(took < Duration::from_secs(3), "{took:?}");
    // Headers that never finish.
    let (got, _) = raw(&addr, b"GET /health HTTP/1.1\r\nHost: x\r\n", limit);
    assert_eq!(got, "");
    // A body that never finishes: 408 with the JSON error.
    let (got, _) = raw(
        &addr,
        b"POST /machines HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"na",
        limit,
    );
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains(r#"{"error":"request_timeout""#), "{got}");
    // A kept-alive connection left idle after a request.
    let (got, _) = raw(&addr, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", limit);
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert_eq!(d.ok("ls machines"), "");
}
