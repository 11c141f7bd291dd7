//! Who gets in: API keys (made with `hyperfleet apikey` while the daemon
//! runs or not), scopes, revocation, rate limiting of failures, the refusal
//! to serve a non-loopback address without a key, and the Unix socket.
mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;
use std::time::{Duration, Instant};

use common::rest::{apikey, make_key, rest_addr, rest_daemon, Client};
use common::{Daemon, BIN};

#[test]
fn loopback_is_open_until_the_first_key_and_a_new_key_counts_at_once() {
    let (d, api) = rest_daemon();
    let open = Client::new(&api);
    assert_eq!(open.get("/machines").status, 200, "no key made yet: open");
    assert_eq!(open.post("/machines", r#"{"name":"before"}"#).status, 201);

    // Made by the CLI while the daemon runs: no restart needed.
    let key = make_key(&d.state, "ci", &[]);
    let r = open.get("/machines");
    assert_eq!((r.status, r.error_code()), (401, "unauthorized".to_owned()));
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert!(
        r.json["message"].as_str().unwrap().contains("Bearer"),
        "{}",
        r.text
    );
    for path in ["/health", "/openapi.json", "/swagger", "/api/v1/health"] {
        assert_eq!(open.get(path).status, 200, "{path} stays public");
    }
    let c = open.with_key(&key);
    let r = c.get("/api/v1/machines");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json[0]["name"], "before");
    assert_eq!(c.post("/machines", r#"{"name":"after"}"#).status, 201);
    assert_eq!(d.ok("ls machines"), "after\nbefore\n");

    let wrong = open.with_key(&format!("{}x", &key[..key.len() - 1]));
    let r = wrong.post("/machines", r#"{"name":"intruder"}"#);
    assert_eq!((r.status, r.error_code()), (401, "unauthorized".to_owned()));
    for bad in ["Basic Zm9vOmJhcg==", "Bearer", "Bearer hf_", "hf_nonsense"] {
        let r = common::rest::curl(
            &[
                "-H".into(),
                format!("Authorization: {bad}"),
                format!("{api}/machines"),
            ],
            b"",
        );
        assert_eq!(r.status, 401, "{bad}: {}", r.text);
    }
    assert_eq!(
        d.ok("ls machines"),
        "after\nbefore\n",
        "a refused request created something"
    );
    // Use is recorded, for `apikey list`.
    let (ok, list, _) = apikey(&d.state, &["list"]);
    assert!(ok);
    let row = list
        .lines()
        .find(|l| l.starts_with("ci "))
        .expect("ci listed");
    assert!(!row.contains(&key), "list shows the key itself: {row}");
    assert!(row.contains(&key[..11]), "list shows the prefix: {row}");
}

#[test]
fn scopes_limit_what_a_key_does_and_revoked_keys_are_refused() {
    let (d, api) = rest_daemon();
    let reader = Client::new(&api).with_key(&make_key(&d.state, "reader", &["machines:read"]));
    let writer = Client::new(&api).with_key(&make_key(&d.state, "writer", &["machines:write"]));
    let both = Client::new(&api).with_key(&make_key(
        &d.state,
        "both",
        &["machines:read", "machines:write"],
    ));

    let r = reader.post("/machines", r#"{"name":"w"}"#);
    assert_eq!((r.status, r.error_code()), (403, "forbidden".to_owned()));
    assert!(
        r.json["message"]
            .as_str()
            .unwrap()
            .contains("machines:write"),
        "{}",
        r.text
    );
    assert_eq!(writer.post("/machines", r#"{"name":"w"}"#).status, 201);
    assert_eq!(reader.get("/machines/w").status, 200);
    assert_eq!(reader.get("/machines/w/logs").status, 200);
    assert_eq!(
        reader.post_empty("/machines/w/wait?status=pending").status,
        200
    );
    let r = writer.get("/machines");
    assert_eq!((r.status, r.error_code()), (403, "forbidden".to_owned()));
    for (method, path) in [
        ("POST", "/machines/w/start"),
        ("DELETE", "/machines/w"),
        ("PUT", "/machines/w/config"),
    ] {
        let r = reader.send(method, path, Some(b"{}"));
        assert_eq!(
            r.status, 403,
            "{method} {path} with a read-only key: {}",
            r.text
        );
    }
    assert_eq!(both.get("/machines/w").status, 200);

    let (ok, out, _) = apikey(&d.state, &["revoke", "reader"]);
    assert!(ok, "{out}");
    let r = reader.get("/machines");
    assert_eq!((r.status, r.error_code()), (401, "unauthorized".to_owned()));
    assert!(
        r.json["message"].as_str().unwrap().contains("revoked"),
        "{}",
        r.text
    );
    assert_eq!(both.get("/machines").status, 200, "other keys still work");
    // Revoking every key does not reopen the door.
    for name in ["writer", "both"] {
        assert!(apikey(&d.state, &["revoke", name]).0);
    }
    assert_eq!(Client::new(&api).get("/machines").status, 401);
    let (ok, _, err) = apikey(&d.state, &["revoke", "reader"]);
    assert!(!ok && err.contains("no live key"), "{err}");
}

#[test]
fn failed_attempts_are_rate_limited_per_peer() {
    let (d, api) = rest_daemon();
    let key = make_key(&d.state, "ci", &[]);
    let good = Client::new(&api).with_key(&key);
    let wrong = Client::new(&api).with_key("hf_0000000000000000000000000000000000000000000");
    for i in 0..10 {
        assert_eq!(wrong.get("/machines").status, 401, "attempt {i}");
    }
    let r = wrong.get("/machines");
    assert_eq!((r.status, r.error_code()), (429, "rate_limited".to_owned()));
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=10).contains(&retry), "{retry}");
    // The peer is limited whatever key it sends now...
    assert_eq!(good.get("/machines").status, 429);
    // ...another peer is not (127.0.0.2 reaches the loopback listener too).
    let mut elsewhere = good.clone();
    elsewhere.extra = vec!["--interface".into(), "127.0.0.2".into()];
    assert_eq!(elsewhere.get("/machines").status, 200);
    // Public routes are never limited.
    assert_eq!(Client::new(&api).get("/health").status, 200);
    // Once the bucket refills, the good key works again.
    let deadline = Instant::now() + Duration::from_secs(retry + 5);
    std::thread::sleep(Duration::from_secs(retry));
    loop {
        let r = good.get("/machines");
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 429);
        assert!(Instant::now() < deadline, "still limited after Retry-After");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `hyperfleet daemon --foreground` on our own mount and state directories.
fn daemon_cmd(mount: &std::path::Path, state: &std::path::Path, listen: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["daemon", "--foreground", "--mount"])
        .arg(mount)
        .arg("--state-dir")
        .arg(state)
        .args(["--listen", listen]);
    cmd
}

#[test]
fn a_non_loopback_address_needs_a_live_key_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let (mount, state) = (dir.path().join("mnt"), dir.path().join("state"));
    std::fs::create_dir_all(&mount).unwrap();
    let refused = |why: &str| {
        let out = daemon_cmd(&mount, &state, "0.0.0.0:0").output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{why}: the daemon served 0.0.0.0 without a key"
        );
        assert!(
            stderr.contains("hyperfleet apikey create"),
            "{why}: {stderr}"
        );
        assert!(!common::is_mounted(&mount), "{why}: mounted anyway");
        assert!(!state.join("rest.addr").exists());
    };
    refused("no key");
    // Made while no daemon runs; a revoked one does not count.
    make_key(&state, "old", &[]);
    assert!(apikey(&state, &["revoke", "old"]).0);
    refused("only a revoked key");
    let key = make_key(&state, "ops", &[]);

    let child = daemon_cmd(&mount, &state, "0.0.0.0:0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn daemon");
    let d = Raw(child, mount.clone());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(state.join("rest.addr").exists() && common::is_mounted(&mount)) {
        assert!(
            Instant::now() < deadline,
            "the daemon did not start with a key"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let addr = std::fs::read_to_string(state.join("rest.addr")).unwrap();
    assert!(addr.starts_with("0.0.0.0:"), "{addr}");
    let port = addr.trim().rsplit(':').next().unwrap().to_owned();
    let api = format!("http://127.0.0.1:{port}");
    let r = Client::new(&api).get("/machines");
    assert_eq!((r.status, r.error_code()), (401, "unauthorized".to_owned()));
    assert_eq!(
        Client::new(&api).with_key(&key).get("/machines").status,
        200
    );
    drop(d);
}

/// A daemon started by hand, stopped (and its mount cleared) however the test ends.
struct Raw(std::process::Child, std::path::PathBuf);

impl Drop for Raw {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
        if common::is_mounted(&self.1) {
            let _ = Command::new("umount").arg("-l").arg(&self.1).status();
        }
    }
}

#[test]
fn a_unix_socket_is_owner_only_and_follows_the_loopback_rules() {
    let dir = tempfile::tempdir().unwrap();
    // Others may traverse to the socket: only its own mode keeps them out.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = dir.path().join("api.sock");
    let listen = format!("unix:{}", sock.display());
    let mut d = Daemon::start_with_env(&[("HYPERFLEET_LISTEN", &listen)]);
    assert_eq!(rest_addr(&d), listen);
    let md = std::fs::metadata(&sock).unwrap();
    assert_eq!(md.permissions().mode() & 0o777, 0o600, "socket mode");
    assert_eq!(md.uid(), unsafe { libc::geteuid() });

    let mut c = Client::new("http://localhost");
    c.unix = Some(sock.clone());
    assert_eq!(c.post("/machines", r#"{"name":"s"}"#).status, 201);
    assert_eq!(d.ok("ls machines"), "s\n");
    // Another user cannot even connect.
    let other = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--unix-socket",
        ])
        .arg(&sock)
        .arg("http://localhost/health")
        .output()
        .expect("setpriv");
    assert_eq!(
        String::from_utf8_lossy(&other.stdout),
        "000",
        "another user got an answer"
    );
    assert!(!other.status.success());
    // Keys apply here as on loopback: once one exists, it is needed.
    let key = make_key(&d.state, "local", &[]);
    assert_eq!(c.get("/machines").status, 401);
    assert_eq!(c.with_key(&key).get("/machines").status, 200);
    // The socket goes with the daemon.
    d.stop();
    assert!(!sock.exists(), "socket left behind");
}

#[test]
fn keys_are_stored_only_as_digests_and_shown_once() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path();
    let (ok, stdout, stderr) = apikey(state, &["create", "ci", "--scope", "machines:read"]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.lines().count(), 1, "{stdout:?}");
    let key = stdout.trim_end();
    assert!(key.starts_with("hf_") && key.len() == 46, "{key}");
    assert!(stderr.contains("only this once"), "{stderr}");
    let second = make_key(state, "other", &[]);
    assert_ne!(second, key);
    // Nowhere in the database, its WAL or its journal is the key itself.
    for entry in std::fs::read_dir(state).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap_or_default();
        for k in [key, second.as_str()] {
            assert!(
                !bytes.windows(k.len()).any(|w| w == k.as_bytes()),
                "a key is stored in clear"
            );
        }
    }
    let (ok, list, _) = apikey(state, &["list"]);
    assert!(ok);
    assert!(
        list.contains("machines:read") && list.contains(&key[..11]),
        "{list}"
    );
    assert!(!list.contains(key));
    let (ok, _, err) = apikey(state, &["create", "ci"]);
    assert!(!ok && err.contains("already named"), "{err}");
    let (ok, _, err) = apikey(state, &["create", "x", "--scope", "machines:admin"]);
    assert!(!ok && err.contains("unknown scope"), "{err}");
}

#[test]
fn allow_host_paths_confines_what_rest_clients_may_name() {
    common::require_docker();
    let allowed = tempfile::tempdir().unwrap();
    let a = allowed.path().to_str().unwrap().to_owned();
    std::os::unix::fs::symlink("/", allowed.path().join("root")).unwrap();
    std::fs::create_dir(allowed.path().join("data")).unwrap();
    let (d, api) = common::rest::rest_daemon_with_env(&[("HYPERFLEET_ALLOW_HOST_PATHS", &a)]);
    let c = Client::new(&api);
    let image = common::image();
    let volume = |host: &str| {
        serde_json::json!({"name": "web", "image": image, "cmd": ["sleep", "600"],
                           "volumes": [{"host_path": host, "container_path": "/d"}]})
        .to_string()
    };
    for (body, field) in [
        (volume("/etc"), "volumes[0].host_path"),
        (volume(&format!("{a}/root/etc")), "volumes[0].host_path"),
        (volume(&format!("{a}/../../etc")), "volumes[0].host_path"),
        (
            serde_json::json!({"name": "web", "image": image, "privileged": true}).to_string(),
            "privileged",
        ),
        (
            serde_json::json!({"name": "vm", "runtime_type": "firecracker",
                               "kernel_image_path": format!("{a}/vmlinux"),
                               "disks": [{"path": "/dev/sda"}]})
            .to_string(),
            "disks[0].path",
        ),
        (
            serde_json::json!({"name": "vm", "runtime_type": "cloud-hypervisor",
                               "kernel_image_path": "/boot/vmlinuz"})
            .to_string(),
            "kernel_image_path",
        ),
    ] {
        let r = c.post("/machines", &body);
        assert_eq!(
            (r.status, r.error_code()),
            (400, "validation_error".to_owned()),
            "{body}"
        );
        assert!(
            r.json["message"].as_str().unwrap().contains(field),
            "{body}: {}",
            r.text
        );
    }
    assert_eq!(d.ok("ls machines"), "");

    // Under the prefix: created, started, and the mount is the host directory.
    let r = c.post("/machines", &volume(&format!("{a}/data")));
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(c.post_empty("/machines/web/start").status, 200);
    let r = c.post(
        "/machines/web/exec",
        r#"{"cmd":["sh","-c","echo hi > /d/mark"]}"#,
    );
    assert_eq!(r.json["exit_code"], 0, "{}", r.text);
    assert_eq!(
        std::fs::read_to_string(allowed.path().join("data/mark")).unwrap(),
        "hi\n"
    );
    assert_eq!(c.post_empty("/machines/web/kill").status, 200);

    // Reconfiguring over REST is confined too, and leaves the old spec.
    let r = c.put(
        "/machines/web/config",
        &serde_json::json!({"image": image, "volumes": [{"host_path": "/", "container_path": "/d"}]})
            .to_string(),
    );
    assert_eq!(
        (r.status, r.error_code()),
        (400, "validation_error".to_owned())
    );
    let config = c.get("/machines/web/config").json;
    assert_eq!(config["volumes"][0]["host_path"], format!("{a}/data"));
    assert!(d.read("machines/web/error").contains("outside"));

    // The filesystem is the host owner's own interface: not confined.
    d.ok(r#"mkdir machines/local && /bin/echo '{"image":"x","volumes":[{"host_path":"/etc","container_path":"/e"}]}' > machines/local/config"#);
}
