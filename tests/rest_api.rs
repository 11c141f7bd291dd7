//! The REST front end, driven with curl like the original Hyperfleet's README.
mod common;

use common::rest::{rest_daemon, rest_daemon_with_env, Client};
use common::{require_docker, Daemon};

/// `curl` with `args`: the HTTP status, then the body (parsed as JSON when
/// it is JSON, else as a string).
fn call(d: &Daemon, args: &str) -> (u16, serde_json::Value) {
    let out = d.ok(&format!(
        "b=$(mktemp) && curl -s -o $b -w '%{{http_code}}\\n' {args} && cat $b && rm $b"
    ));
    let (code, body) = out.split_once('\n').unwrap_or((&out, ""));
    let code = code
        .parse()
        .unwrap_or_else(|_| panic!("no status from curl {args}: {out}"));
    let body =
        serde_json::from_str(body).unwrap_or_else(|_| serde_json::Value::String(body.into()));
    (code, body)
}

/// Leaves promptly on SIGTERM, so stops and restarts cost no grace period.
const IDLE: &str = r#"["sh","-c","trap \"exit 0\" TERM; sleep 600 & wait"]"#;

#[test]
fn rest_and_filesystem_share_one_core() {
    require_docker();
    let (d, api) = rest_daemon();
    let c = Client::new(&api);
    let body = serde_json::json!({
        "name": "my-container", "runtime_type": "docker", "vcpu_count": 1, "mem_size_mib": 64,
        "image": common::image(), "cmd": ["sh", "-c", "trap 'exit 0' TERM; sleep 600 & wait"],
        "env": {"NODE_ENV": "production"},
    });
    let r = c.post("/machines", &body.to_string());
    assert_eq!(r.status, 201, "{}", r.text);
    // Created over REST: the filesystem shows it at once, the same machine.
    assert_eq!(d.read("machines/my-container/status"), "pending\n");
    let id = d.read("machines/my-container/id");
    assert_eq!(r.json["id"], id.trim());

    let r = c.post_empty(&format!("/machines/{}/start", id.trim()));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(d.read("machines/my-container/status"), "running\n");
    let running = c.get("/machines?status=running");
    assert_eq!(
        running.json.as_array().map(Vec::len),
        Some(1),
        "{}",
        running.text
    );
    assert_eq!(running.json[0]["name"], "my-container");
    assert_eq!(c.get("/machines?runtime_type=firecracker").text, "[]");

    let r = c.post(
        "/machines/my-container/exec",
        r#"{"cmd":["sh","-c","echo $NODE_ENV; exit 3"],"timeout":5}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.json,
        serde_json::json!({"exit_code": 3, "stdout": "production\n", "stderr": "",
                           "stdout_truncated": false, "stderr_truncated": false})
    );

    // Created through the filesystem: REST finds it at once.
    d.ok("mkdir machines/from-fs");
    assert_eq!(c.get("/machines/from-fs").json["status"], "pending");

    // DELETE of a running machine stops it first, as the original did.
    let r = c.delete(&format!("/machines/{}", id.trim()));
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(r.text, "");
    assert_eq!(d.ok("ls machines"), "from-fs\n");
    assert!(d.containers().is_empty(), "container left behind");
}

#[test]
fn rest_errors_have_status_and_json_body_and_change_nothing() {
    require_docker();
    let (d, api) = rest_daemon();
    let code = |args: &str| -> String {
        d.ok(&format!(
            "b=$(mktemp) && curl -s -o $b -w '%{{http_code}}' {args} && echo && cat $b && echo && rm $b"
        ))
    };
    assert_eq!(
        code(&format!("-X POST {api}/machines -d 'not json'"))
            .lines()
            .next(),
        Some("400")
    );
    let out = code(&format!(
        "-X POST {api}/machines -d '{{\"name\":\"w\",\"imgae\":\"x\"}}'"
    ));
    assert!(
        out.starts_with("400\n{\"error\":\"validation_error\""),
        "{out}"
    );
    let out = code(&format!(
        "-X POST {api}/machines -d '{{\"name\":\"../x\"}}'"
    ));
    assert!(out.starts_with("400\n{\"error\":\"invalid_name\""), "{out}");
    assert_eq!(
        d.ok("ls machines"),
        "",
        "a rejected create created something"
    );

    d.ok("mkdir machines/w");
    let out = code(&format!("-X POST {api}/machines -d '{{\"name\":\"w\"}}'"));
    assert!(
        out.starts_with("409\n{\"error\":\"already_exists\""),
        "{out}"
    );
    let out = code(&format!("-X POST {api}/machines/w/start"));
    assert!(
        out.starts_with("422\n{\"error\":\"incomplete_config\""),
        "{out}"
    );
    assert!(d.read("machines/w/error").contains("needs image"));
    let out = code(&format!("-X POST {api}/machines/w/explode"));
    assert!(out.starts_with("404\n{\"error\":\"no_route\""), "{out}");
    assert!(out.contains("POST /machines/w/explode"), "{out}");
    let out = code(&format!("{api}/machines/nope"));
    assert!(out.starts_with("404\n{\"error\":\"not_found\""), "{out}");
    let out = code(&format!(
        "-X POST '{api}/machines/w/wait?status=running&timeout=0.2'"
    ));
    assert!(out.starts_with("504\n{\"error\":\"timeout\""), "{out}");
    let out = d.ok(&format!(
        "big=$(mktemp) && head -c 1100000 /dev/zero | tr '\\0' ' ' > $big && curl -s -o /dev/null -w '%{{http_code}}' -X POST {api}/machines --data-binary @$big; rm $big"
    ));
    assert_eq!(out, "413");
    assert_eq!(d.read("machines/w/status"), "pending\n");
    let health = d.ok(&format!("curl -sf {api}/health"));
    assert!(
        health.contains("\"docker\":{\"available\":true"),
        "{health}"
    );
}

#[test]
fn a_client_that_hangs_up_does_not_leave_a_machine_half_stopped() {
    require_docker();
    let (d, api) = rest_daemon();
    d.machine("web", r#"["sleep","600"]"#);
    d.ok("echo start > machines/web/ctl");
    // `sleep` ignores SIGTERM, so stop takes its 10 s grace; the client gives up after 1 s.
    let out = d.sh(&format!("curl -s -m 1 -X POST {api}/machines/web/stop"));
    assert!(!out.status.success(), "curl should have timed out");
    d.ok("/bin/echo 'wait stopped 30' > machines/web/ctl");
    d.ok("echo start > machines/web/ctl && echo kill > machines/web/ctl");
}

#[test]
fn rest_logs_tail_returns_exactly_the_last_lines() {
    require_docker();
    let (d, api) = rest_daemon();
    d.running(
        "web",
        r#"["sh","-c","i=1; while [ $i -le 50 ]; do echo line $i; i=$((i+1)); done; echo done; sleep 600"]"#,
    );
    d.until(
        "grep -qx done machines/web/logs",
        30,
        "the workload's output never reached logs",
    );
    let logs = d.read("machines/web/logs");
    let get = |query: &str| {
        let (code, body) = call(&d, &format!("'{api}/machines/web/logs{query}'"));
        assert_eq!(code, 200, "{query}: {body}");
        body.as_str()
            .unwrap_or_else(|| panic!("{query}: not text: {body}"))
            .to_owned()
    };

    assert_eq!(get("?tail=5"), "line 47\nline 48\nline 49\nline 50\ndone\n");
    assert_eq!(get("?tail=1"), "done\n");
    assert_eq!(get("?tail=0"), "");
    // No tail, or more lines than there are: the whole log, as `cat` has it.
    assert_eq!(get(""), logs);
    assert_eq!(get("?tail=1000"), logs);
    // The same as tail(1) of the file, by id as by name.
    let id = d.read("machines/web/id");
    let (code, body) = call(&d, &format!("'{api}/machines/{}/logs?tail=12'", id.trim()));
    assert_eq!(code, 200);
    assert_eq!(
        body.as_str(),
        Some(d.ok("tail -n 12 machines/web/logs").as_str())
    );

    let (code, body) = call(&d, &format!("'{api}/machines/web/logs?tail=many'"));
    assert_eq!(code, 400, "{body}");
    assert_eq!(body["error"], "invalid_command", "{body}");
    d.ok("echo kill > machines/web/ctl");
}

#[test]
fn rest_lifecycle_routes_change_the_status_the_filesystem_shows() {
    require_docker();
    let (d, api) = rest_daemon();
    d.machine("web", IDLE);
    let container = |d: &Daemon| -> String {
        d.info("web")["runtime_info"]["handle"]
            .as_str()
            .expect("a container")
            .to_owned()
    };
    let docker_state = |id: &str| common::docker(&["inspect", "-f", "{{.State.Status}}", id]);
    // Each route answers with the machine as it is once the verb is done,
    // and the filesystem and Docker agree.
    let act = |verb: &str, want: &str| {
        let (code, body) = call(&d, &format!("-X POST {api}/machines/web/{verb}"));
        assert_eq!(code, 200, "{verb}: {body}");
        assert_eq!(body["status"], want, "{verb}: {body}");
        assert_eq!(body["name"], "web", "{verb}: {body}");
        assert_eq!(
            d.read("machines/web/status"),
            format!("{want}\n"),
            "after {verb}"
        );
        // The reply carries the runtime's facts: the container of this run,
        // and its pid while it runs.
        assert_eq!(
            body["container_id"].as_str(),
            Some(container(&d).as_str()),
            "{verb}"
        );
        let pid = body["pid"].as_u64();
        if want == "stopped" {
            assert_eq!(pid, None, "{verb}: {body}");
        } else {
            let docker_pid = common::docker(&["inspect", "-f", "{{.State.Pid}}", &container(&d)]);
            assert_eq!(
                pid.map(|p| p.to_string()),
                Some(docker_pid),
                "{verb}: {body}"
            );
        }
    };

    act("start", "running");
    let first = container(&d);
    act("pause", "paused");
    assert_eq!(docker_state(&first), "paused");
    act("resume", "running");
    assert_eq!(docker_state(&first), "running");
    act("restart", "running");
    let second = container(&d);
    assert_ne!(second, first, "restart made no new run");
    assert_eq!(docker_state(&second), "running");
    assert_eq!(d.containers(), vec![second.clone()]);
    act("kill", "stopped");
    assert_eq!(docker_state(&second), "exited");
    assert_eq!(d.info("web")["exit_code"], 137);
    assert_eq!(d.ok("ls by-status/stopped"), "web\n");
    act("restart", "running");
    act("stop", "stopped");
    assert_eq!(d.info("web")["exit_code"], 0);

    // A verb with nothing to do: 409, and the filesystem's error says why.
    let (code, body) = call(&d, &format!("-X POST {api}/machines/web/stop"));
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["error"], "already_in_state", "{body}");
    assert!(d.read("machines/web/error").contains("already stopped"));
}

#[test]
fn rest_maps_missing_images_and_unsupported_verbs_to_424_and_501() {
    require_docker();
    let (d, api) = rest_daemon();
    let registry = common::registry::Registry::start(common::registry::Behaviour::NotFound);
    let image = registry.image("x");
    let (code, body) = call(
        &d,
        &format!(
            r#"-X POST {api}/machines -d '{{"name":"web","image":"{image}","cmd":["sleep","600"]}}'"#
        ),
    );
    assert_eq!(code, 201, "{body}");

    let (code, body) = call(&d, &format!("-X POST {api}/machines/web/start"));
    assert_eq!(code, 424, "{body}");
    assert_eq!(body["error"], "image_not_found", "{body}");
    assert!(body["message"].is_string(), "{body}");
    assert_eq!(d.read("machines/web/status"), "pending\n");
    assert!(d.read("machines/web/error").contains(&image));
    assert!(d.containers().is_empty());

    // What Docker machines cannot do: of the REST routes, only `wait` for a
    // guest agent reaches a verb the runtime lacks (`resize`, `snapshot`...
    // have no route yet).
    d.ok(r#"/bin/echo '{"image":"'"$IMAGE"'","cmd":["sleep","600"]}' > machines/web/config"#);
    d.ok("echo start > machines/web/ctl");
    let (code, body) = call(
        &d,
        &format!("-X POST '{api}/machines/web/wait?status=agent&timeout=1'"),
    );
    assert_eq!(code, 501, "{body}");
    assert_eq!(body["error"], "unsupported", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("docker"),
        "{body}"
    );
    // The same verb through ctl is EOPNOTSUPP.
    let stderr = d.fails("/bin/echo 'wait agent 1' > machines/web/ctl");
    common::expect_errno(&stderr, "Operation not supported");
    assert_eq!(d.read("machines/web/status"), "running\n");
    d.ok("echo kill > machines/web/ctl");
}

#[test]
fn rest_start_with_the_engine_down_is_503() {
    let (d, api) = rest_daemon_with_env(&[("DOCKER_HOST", "unix:///nonexistent.sock")]);
    let (code, body) = call(
        &d,
        &format!(r#"-X POST {api}/machines -d '{{"name":"web","image":"busybox"}}'"#),
    );
    assert_eq!(code, 201, "{body}");
    let (code, body) = call(&d, &format!("-X POST {api}/machines/web/start"));
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["error"], "runtime_unavailable", "{body}");
    assert!(body["message"].is_string(), "{body}");
    assert_eq!(d.read("machines/web/status"), "pending\n");
    assert!(d.containers().is_empty());
    let (code, health) = call(&d, &format!("{api}/health"));
    assert_eq!(code, 200);
    assert_eq!(health["runtimes"]["docker"]["available"], false, "{health}");
}

#[test]
fn rest_error_messages_give_the_cause_the_error_file_gives() {
    require_docker();
    // An image that does not exist...
    let (d, api) = rest_daemon();
    let registry = common::registry::Registry::start(common::registry::Behaviour::NotFound);
    let image = registry.image("x");
    d.ok(&format!(
        r#"mkdir machines/web && /bin/echo '{{"image":"{image}"}}' > machines/web/config"#
    ));
    let (code, body) = call(&d, &format!("-X POST {api}/machines/web/start"));
    assert_eq!(code, 424, "{body}");
    let error = d.read("machines/web/error");
    assert!(error.contains(&image), "{error}");
    assert_eq!(
        body["message"].as_str(),
        Some(error.trim_end()),
        "REST says less than the error file"
    );

    // ...and an engine that is not there.
    let (down, api) = rest_daemon_with_env(&[("DOCKER_HOST", "unix:///nonexistent.sock")]);
    down.ok(r#"mkdir machines/web && /bin/echo '{"image":"busybox"}' > machines/web/config"#);
    let (code, body) = call(&down, &format!("-X POST {api}/machines/web/start"));
    assert_eq!(code, 503, "{body}");
    let error = down.read("machines/web/error");
    assert!(error.contains("/nonexistent.sock"), "{error}");
    assert_eq!(
        body["message"].as_str(),
        Some(error.trim_end()),
        "REST says less than the error file"
    );
}
