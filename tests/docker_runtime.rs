//! The Docker runtime against a real Docker Engine.
//!
//! Needs a running dockerd and the image named by `HYPERFLEET_TEST_IMAGE`
//! (default `hyperfleet-test/busybox:latest`, built offline by
//! `contrib/make-test-image.sh`). Without them every test fails and says so:
//! a skipped test would look like a passing one.
//!
//! Each test labels its containers with an instance of its own, uses fresh
//! machine ids, and removes its containers even when it fails.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};
use bollard::Docker;
use futures_util::FutureExt;
use hyperfleet::model::spec::{ContainerSpec, PortMapping};
use hyperfleet::model::{ExecRequest, Exit, MachineSpec, Workload};
use hyperfleet::runtime::docker::{
    Container, DockerConnection, DockerDriver, LABEL_INSTANCE, LABEL_MACHINE_ID,
};
use hyperfleet::runtime::{null_sink, Driver, Health, LogSink, MachineRef, Observed, Runtime};
use hyperfleet::Error;

mod common;

const DEFAULT_IMAGE: &str = "hyperfleet-test/busybox:latest";

fn image() -> String {
    std::env::var("HYPERFLEET_TEST_IMAGE")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_IMAGE.to_owned())
}

/// A running workload that leaves promptly on SIGTERM (a plain `sleep` as
/// PID 1 ignores it and would cost the whole stop grace period).
fn idle_cmd() -> Vec<String> {
    ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"]
        .map(String::from)
        .to_vec()
}

fn spec(cmd: Vec<String>) -> MachineSpec {
    let mut s = MachineSpec::container(image());
    s.mem_size_mib = 64;
    container_of(&mut s).cmd = Some(cmd);
    s
}

fn container_of(s: &mut MachineSpec) -> &mut ContainerSpec {
    match &mut s.workload {
        Workload::Container(c) => c,
        other => panic!("not a container spec: {other:?}"),
    }
}

/// Collects the progress lines a runtime writes.
#[derive(Default)]
struct Notes(Mutex<Vec<String>>);

impl LogSink for Notes {
    fn output(&self, _: &[u8]) {}
    fn note(&self, line: &str) {
        if let Ok(mut lines) = self.0.lock() {
            lines.push(line.to_owned());
        }
    }
    fn restart(&self) {}
}

#[derive(Clone)]
struct Fixture {
    docker: Docker,
    driver: DockerDriver,
    instance: String,
    progress: Arc<Notes>,
}

impl Fixture {
    /// Fails the test, with what to do about it, if the engine or the
    /// image is missing.
    async fn new(test: &str) -> Fixture {
        let conn = DockerConnection::local();
        let docker = match conn.client().await {
            Ok(d) => d,
            Err(e) => panic!(
                "Docker Engine not reachable at {} ({e}); start it, e.g. \
                 `nohup dockerd >/tmp/dockerd.log 2>&1 &`",
                conn.host()
            ),
        };
        let image = image();
        if let Err(e) = docker.inspect_image(&image).await {
            panic!(
                "test image {image} is not available ({e}); build it with \
                 contrib/make-test-image.sh (nothing can be pulled here)"
            );
        }
        Fixture {
            docker,
            driver: DockerDriver::with_connection(conn),
            instance: format!("test-{test}-{}", uuid::Uuid::new_v4()),
            progress: Arc::default(),
        }
    }

    fn machine(&self) -> MachineRef {
        let id = uuid::Uuid::new_v4().to_string();
        MachineRef {
            name: format!("m-{}", &id[..8]),
            id,
            instance: self.instance.clone(),
            runtime_dir: std::env::temp_dir(),
        }
    }

    fn container(&self, spec: &MachineSpec) -> Arc<Container> {
        self.driver
            .container(&self.machine(), spec, self.progress.clone())
            .expect("container for a valid machine id")
    }

    async fn containers_named(&self, name: &str) -> Vec<String> {
        // Docker's name filter is a substring match; compare exactly.
        let filters = HashMap::from([("name", vec![name.to_owned()])]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        self.docker
            .list_containers(Some(options))
            .await
            .expect("list containers")
            .into_iter()
            .flat_map(|c| c.names.unwrap_or_default())
            .filter(|n| n.trim_start_matches('/') == name)
            .collect()
    }

    async fn cleanup(&self) {
        let filters =
            HashMap::from([("label", vec![format!("{LABEL_INSTANCE}={}", self.instance)])]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let Ok(containers) = self.docker.list_containers(Some(options)).await else {
            return;
        };
        for c in containers {
            if let Some(id) = c.id {
                let options = RemoveContainerOptionsBuilder::default()
                    .force(true)
                    .v(true)
                    .build();
                let _ = self.docker.remove_container(&id, Some(options)).await;
            }
        }
    }
}

/// Runs a test body, then removes its containers whether it passed or not.
async fn with_fixture<F, Fut>(test: &str, body: F)
where
    F: FnOnce(Fixture) -> Fut,
    Fut: Future<Output = ()>,
{
    let fx = Fixture::new(test).await;
    let outcome = AssertUnwindSafe(body(fx.clone())).catch_unwind().await;
    fx.cleanup().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

fn req(cmd: &[&str]) -> ExecRequest {
    let mut r = ExecRequest::new(cmd.iter().copied());
    r.timeout = Duration::from_secs(20);
    r
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("utf-8 output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_collects_stdout_stderr_and_exit_code() {
    with_fixture("exec", |fx| async move {
        let c = fx.container(&spec(idle_cmd()));
        c.start().await.expect("start");
        assert!(c.is_running().await.unwrap());

        let out = c
            .exec(&req(&["sh", "-c", "echo out; echo err >&2; exit 3"]))
            .await
            .expect("exec");
        assert_eq!(text(&out.stdout), "out\n");
        assert_eq!(text(&out.stderr), "err\n");
        assert_eq!(out.exit_code, 3);

        let out = c.exec(&req(&["true"])).await.expect("exec true");
        assert_eq!(out.exit_code, 0);
        assert!(out.stdout.is_empty() && out.stderr.is_empty());

        let err = c.exec(&req(&[])).await.unwrap_err();
        assert!(matches!(err, Error::InvalidCommand(_)), "{err}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_passes_env() {
    with_fixture("exec-env", |fx| async move {
        let c = fx.container(&spec(idle_cmd()));
        c.start().await.expect("start");
        let mut r = req(&["sh", "-c", "echo \"$GREETING/$OTHER\""]);
        r.env.insert("GREETING".into(), "hello world".into());
        r.env.insert("OTHER".into(), "x=y".into());
        let out = c.exec(&r).await.expect("exec");
        assert_eq!(text(&out.stdout), "hello world/x=y\n");
        assert_eq!(out.exit_code, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_timeout_kills_the_process() {
    with_fixture("exec-timeout", |fx| async move {
        let c = fx.container(&spec(idle_cmd()));
        c.start().await.expect("start");

        // The shell forks `sleep` (a command follows it), so this also checks
        // that the child dies with its parent.
        let mut r = req(&["sh", "-c", "echo before; sleep 1234; echo never"]);
        r.timeout = Duration::from_secs(1);
        let out = c.exec(&r).await.expect("a timeout is a result");
        assert!(out.timed_out);
        // What it printed before the kill is kept.
        assert_eq!(text(&out.stdout), "before\n");

        let ps = c.exec(&req(&["ps"])).await.expect("ps");
        let listing = text(&ps.stdout);
        assert!(
            !listing.contains("1234"),
            "the timed-out command still runs:\n{listing}"
        );
        // The container itself is untouched.
        assert_eq!(c.observe().await.unwrap(), Observed::Running);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_in_a_stopped_container_is_a_clear_error() {
    with_fixture("exec-stopped", |fx| async move {
        let c = fx.container(&spec(idle_cmd()));
        let err = c.exec(&req(&["true"])).await.unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");

        c.start().await.expect("start");
        c.kill().await.expect("kill");
        let err = c.exec(&req(&["true"])).await.unwrap_err();
        assert!(matches!(err, Error::Runtime(_)), "{err}");
        assert!(err.to_string().contains("not running"), "{err}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume_are_observed() {
    with_fixture("pause", |fx| async move {
        let c = fx.container(&spec(idle_cmd()));
        c.start().await.expect("start");
        c.pause().await.expect("pause");
        assert_eq!(c.observe().await.unwrap(), Observed::Paused);
        assert!(!c.is_running().await.unwrap());
        assert_eq!(c.info().await.unwrap().state, "paused");
        c.resume().await.expect("resume");
        assert_eq!(c.observe().await.unwrap(), Observed::Running);
        assert!(c.is_running().await.unwrap());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_then_observe_exited() {
    with_fixture("stop", |fx| async move {
        let c = fx.container(&spec(idle_cmd()));
        c.start().await.expect("start");
        let pid = c.pid().await.unwrap();
        assert!(pid.is_some_and(|p| p > 1), "{pid:?}");

        c.stop().await.expect("stop");
        // The workload honours SIGTERM, so no grace period was used up: it
        // left by its own `exit 0`, not by the SIGKILL (137) after the grace.
        match c.observe().await.unwrap() {
            Observed::Exited { exit, reason } => {
                assert_eq!(exit, Exit::Code(0));
                assert_eq!(reason, None);
            }
            other => panic!("expected Exited, got {other:?}"),
        }
        let info = c.info().await.unwrap();
        assert_eq!(info.state, "exited");
        assert_eq!(info.exit_code, Some(0));
        assert_eq!(info.pid, None);
        assert!(info.finished_at.is_some());
        assert_eq!(c.pid().await.unwrap(), None);

        // Stopping what is stopped is fine, in every flavour.
        c.stop().await.expect("second stop");
        c.shutdown(Duration::from_millis(1500))
            .await
            .expect("shutdown");
        c.kill().await.expect("kill");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_reports_sigkill() {
    with_fixture("kill", |fx| async move {
        let c = fx.container(&spec(vec!["sleep".into(), "300".into()]));
        c.start().await.expect("start");
        c.kill().await.expect("kill");
        assert_eq!(c.wait().await.unwrap(), Exit::Code(137));
        assert!(matches!(
            c.observe().await.unwrap(),
            Observed::Exited {
                exit: Exit::Code(137),
                ..
            }
        ));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_leaves_no_container() {
    with_fixture("remove", |fx| async move {
        let c = fx.container(&spec(idle_cmd()));
        c.start().await.expect("start");
        assert_eq!(fx.containers_named(c.name()).await.len(), 1);
        c.remove().await.expect("remove");
        assert!(fx.containers_named(c.name()).await.is_empty());
        c.remove().await.expect("second remove");
        assert_eq!(c.observe().await.unwrap(), Observed::Missing);
        assert_eq!(c.info().await.unwrap().state, "missing");
        assert!(!c.is_running().await.unwrap());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_replaces_a_leftover_container() {
    with_fixture("restart", |fx| async move {
        let c = fx.container(&spec(idle_cmd()));
        c.start().await.expect("start");
        let first = c.info().await.unwrap().handle;
        c.start().await.expect("second start");
        let second = c.info().await.unwrap().handle;
        assert_ne!(first, second);
        assert_eq!(fx.containers_named(c.name()).await.len(), 1);
    })
    .await;
}

/// Starts a container from an image on a local stand-in registry and
/// returns the error, after checking nothing was left and progress was noted.
async fn pull_failure(fx: &Fixture, registry: &common::registry::Registry) -> Error {
    let mut s = spec(idle_cmd());
    container_of(&mut s).image = Some(registry.image("no-such-image"));
    let c = fx.container(&s);
    let err = c.start().await.unwrap_err();
    assert!(fx.containers_named(c.name()).await.is_empty());
    assert!(fx
        .containers_named(&format!("{}-next", c.name()))
        .await
        .is_empty());
    let progress = fx.progress.0.lock().unwrap().clone();
    assert!(
        progress.iter().any(|l| l.contains("pulling")),
        "no pull progress: {progress:?}"
    );
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_failures_say_what_went_wrong() {
    use common::registry::{Behaviour, Registry};
    with_fixture("pull", |fx| async move {
        let missing = Registry::start(Behaviour::NotFound);
        let err = pull_failure(&fx, &missing).await;
        assert!(
            matches!(err.root(), Error::ImageNotFound { .. }),
            "{}",
            err.report()
        );
        assert_eq!(err.errno(), libc::ENOENT);

        let locked = Registry::start(Behaviour::Unauthorized);
        let err = pull_failure(&fx, &locked).await;
        assert_eq!(err.errno(), libc::EACCES, "{}", err.report());

        let gone = Registry::closed();
        let err = pull_failure(&fx, &gone).await;
        assert_eq!(err.errno(), libc::EHOSTUNREACH, "{}", err.report());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incomplete_spec_is_refused_before_touching_docker() {
    let c = DockerDriver::with_host("unix:///nonexistent.sock")
        .container(
            &MachineRef {
                id: uuid::Uuid::new_v4().to_string(),
                name: String::new(),
                instance: "test-incomplete".into(),
                runtime_dir: std::env::temp_dir(),
            },
            &MachineSpec::default(),
            null_sink(),
        )
        .unwrap();
    let err = c.start().await.unwrap_err();
    assert!(matches!(err, Error::IncompleteConfig(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_down_is_runtime_unavailable_quickly() {
    // An address with no socket at all, and a socket nobody listens on.
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    for host in [
        "unix:///nonexistent.sock".to_owned(),
        format!("unix://{}", stale.display()),
    ] {
        let began = Instant::now();
        let driver = DockerDriver::with_host(&host);
        match driver.health().await {
            Health::Unavailable { reason } => {
                assert!(!reason.is_empty());
                assert!(!reason.contains("did not answer"), "{host}: {reason}");
            }
            other => panic!("{host}: expected Unavailable, got {other:?}"),
        }
        let machine = MachineRef {
            id: uuid::Uuid::new_v4().to_string(),
            name: "down".into(),
            instance: "test-down".into(),
            runtime_dir: std::env::temp_dir(),
        };
        // Building the runtime touches nothing, so it succeeds.
        let rt = driver
            .runtime(&machine, &spec(idle_cmd()), null_sink())
            .unwrap();
        for err in [
            rt.start().await.unwrap_err(),
            rt.observe().await.unwrap_err(),
            rt.remove().await.unwrap_err(),
            driver.owned_machine_ids("x").await.unwrap_err(),
        ] {
            match err {
                Error::RuntimeUnavailable { runtime, reason } => {
                    assert_eq!(runtime, "docker");
                    // Refused at once, not given up on after a timeout.
                    assert!(!reason.contains("did not answer"), "{host}: {reason}");
                }
                other => panic!("{host}: expected RuntimeUnavailable, got {other:?}"),
            }
        }
        assert!(
            began.elapsed() < Duration::from_secs(3),
            "{host}: took {:?}",
            began.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_the_engine_version() {
    let driver = DockerDriver::new();
    match driver.health().await {
        Health::Available { detail } => assert!(detail.contains("Docker Engine"), "{detail}"),
        Health::Unavailable { reason } => panic!(
            "Docker Engine not reachable ({reason}); start it, e.g. \
             `nohup dockerd >/tmp/dockerd.log 2>&1 &`"
        ),
    }
    // Every lifecycle verb, no VM powers.
    assert!(driver.verbs().contains(&hyperfleet::model::Verb::Pause));
    assert!(!driver.verbs().contains(&hyperfleet::model::Verb::Resize));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owned_machine_ids_finds_containers_by_instance() {
    with_fixture("owned", |fx| async move {
        let running = fx.container(&spec(idle_cmd()));
        let exited = fx.container(&spec(vec!["true".into()]));
        running.start().await.expect("start");
        exited.start().await.expect("start");
        assert_eq!(exited.wait().await.unwrap(), Exit::Code(0));

        let mut expected = vec![running.machine().id.clone(), exited.machine().id.clone()];
        expected.sort();
        assert_eq!(
            fx.driver.owned_machine_ids(&fx.instance).await.unwrap(),
            expected
        );
        let other = format!("{}-other", fx.instance);
        assert!(fx
            .driver
            .owned_machine_ids(&other)
            .await
            .unwrap()
            .is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_limits_and_labels_follow_the_spec() {
    with_fixture("limits", |fx| async move {
        let mut s = spec(idle_cmd());
        s.vcpu_count = 1;
        s.mem_size_mib = 96;
        container_of(&mut s)
            .env
            .insert("MODE".into(), "test".into());
        container_of(&mut s).working_dir = Some("/tmp".into());
        let c = fx.container(&s);
        c.start().await.expect("start");
        let inspected = c.inspect().await.unwrap().expect("container exists");
        let host = inspected.host_config.expect("host config");
        assert_eq!(host.nano_cpus, Some(1_000_000_000));
        assert_eq!(host.memory, Some(96 << 20));
        let config = inspected.config.expect("config");
        let labels = config.labels.expect("labels");
        assert_eq!(labels[LABEL_MACHINE_ID], c.machine().id);
        assert_eq!(labels[LABEL_INSTANCE], fx.instance);
        assert!(config
            .env
            .unwrap_or_default()
            .contains(&"MODE=test".to_owned()));
        assert_eq!(config.working_dir.as_deref(), Some("/tmp"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_shows_addresses_and_published_ports() {
    with_fixture("info", |fx| async move {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut s = spec(idle_cmd());
        container_of(&mut s).ports.push(PortMapping {
            host_port: port,
            container_port: 80,
            protocol: Default::default(),
        });
        let c = fx.container(&s);
        c.start().await.expect("start");
        let info = c.info().await.unwrap();
        assert_eq!(info.state, "running");
        assert!(info.pid.is_some());
        assert!(info.handle.as_deref().is_some_and(|h| h.len() == 64));
        assert!(info.started_at.is_some());
        assert_eq!(info.finished_at, None);
        assert_eq!(info.exit_code, None);
        assert_eq!(info.ports, vec![format!("{port}->80/tcp")]);
        assert!(!info.addresses.is_empty(), "{info:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_and_wait() {
    with_fixture("logs", |fx| async move {
        let c = fx.container(&spec(vec!["echo".into(), "hello".into()]));
        c.start().await.expect("start");
        assert_eq!(c.wait().await.unwrap(), Exit::Code(0));
        assert!(c.logs_text(None).await.unwrap().contains("hello"));

        let c = fx.container(&spec(
            [
                "sh",
                "-c",
                "echo one; sleep 0.2; echo two >&2; sleep 0.2; echo three; exit 7",
            ]
            .map(String::from)
            .to_vec(),
        ));
        c.start().await.expect("start");
        assert_eq!(c.wait().await.unwrap(), Exit::Code(7));
        let all = c.logs_text(None).await.unwrap();
        assert_eq!(all, "one\ntwo\nthree\n");
        assert_eq!(c.logs_text(Some(1)).await.unwrap(), "three\n");
        assert!(matches!(
            c.observe().await.unwrap(),
            Observed::Exited {
                exit: Exit::Code(7),
                ..
            }
        ));
    })
    .await;
}
