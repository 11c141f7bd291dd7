//! `GET /machines` shows the live facts the daemon holds without asking a
//! runtime: the container of a Docker machine's run, as a single machine's
//! GET does. Machines run on the fake engine, so no Docker is needed.
mod common;

use serde_json::json;

use common::rest::{rest_daemon_with_env, Client};

#[test]
fn a_list_shows_the_container_of_each_run() {
    let engine = tempfile::tempdir().unwrap();
    let fake = format!("docker:{}", engine.path().display());
    let (_d, api) = rest_daemon_with_env(&[("HYPERFLEET_FAKE_RUNTIME", fake.as_str())]);
    let c = Client::new(&api);
    for name in ["web", "idle"] {
        let body = json!({"name": name, "runtime_type": "docker", "image": "busybox"});
        let r = c.post("/machines", &body.to_string());
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let r = c.post_empty("/machines/web/start");
    assert_eq!(r.status, 200, "{}", r.text);
    let one = c.get("/machines/web");
    let container = one.json["container_id"].clone();
    assert!(container.is_string(), "{}", one.text);

    let list = c.get("/machines");
    assert_eq!(list.status, 200, "{}", list.text);
    let item = |name: &str| {
        list.json
            .as_array()
            .and_then(|a| a.iter().find(|m| m["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("{name} not listed: {}", list.text))
    };
    assert_eq!(item("web")["container_id"], container, "{}", list.text);
    // Never started: no container.
    assert!(item("idle")["container_id"].is_null(), "{}", list.text);
    // Stopped, the machine keeps its last run's container, as GET says.
    let r = c.post_empty("/machines/web/stop");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(c.get("/machines/web").json["container_id"], container);
    let list = c.get("/machines?status=stopped");
    assert_eq!(list.json[0]["container_id"], container, "{}", list.text);
}
