//! The core's behaviour with the fake runtime and a fault-injecting store:
//! no Docker, no FUSE, seconds in all.

use std::sync::Arc;
use std::time::Duration;

use super::{Core, Machine, Settings};
use crate::error::Error;
use crate::model::{Action, Exit, Status, WaitTarget};
use crate::runtime::fake::{FakeDriver, Knobs, OpKnob};
use crate::runtime::Driver;
use crate::store::{Faults, SqliteStore};

struct Rig {
    core: Arc<Core>,
    fake: FakeDriver,
    store: Arc<Faults<SqliteStore>>,
    dir: tempfile::TempDir,
}

fn settings() -> Settings {
    Settings {
        busy_wait: Duration::from_millis(200),
        config_wait: Duration::from_millis(200),
        cancel_wait: Duration::from_secs(5),
        start_deadline: Duration::from_secs(5),
        call_deadline: Duration::from_secs(5),
        transitional_patience: Duration::from_secs(1),
    }
}

fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let engine = dir.path().join("engine");
    std::fs::create_dir_all(&engine).unwrap();
    let fake = FakeDriver::new(crate::model::RuntimeKind::Firecracker, &engine);
    let (core, store) = open(dir.path(), &fake);
    Rig {
        core,
        fake,
        store,
        dir,
    }
}

fn open(state: &std::path::Path, fake: &FakeDriver) -> (Arc<Core>, Arc<Faults<SqliteStore>>) {
    let store = Faults::new(SqliteStore::open(&state.join("state.db")).unwrap());
    let drivers: Vec<Arc<dyn Driver>> = vec![Arc::new(fake.clone())];
    let core = Core::open_with(state, Arc::new(store.clone()), drivers, settings()).unwrap();
    (core, store)
}

impl Rig {
    async fn machine(&self, name: &str) -> Arc<Machine> {
        self.machine_with(name, "").await
    }

    async fn machine_with(&self, name: &str, extra: &str) -> Arc<Machine> {
        self.core.probe_health().await;
        let m = self
            .core
            .create(name.as_bytes(), Default::default())
            .await
            .unwrap();
        // The kernel must exist when the machine starts.
        let kernel = self.dir.path().join("vmlinux");
        std::fs::write(&kernel, b"fake kernel").unwrap();
        let config = format!(
            r#"{{"runtime_type":"firecracker","kernel_image_path":"{}"{extra}}}"#,
            kernel.display()
        );
        self.core.set_config(&m, config.as_bytes()).await.unwrap();
        m
    }

    fn knobs(&self, k: Knobs) {
        self.fake.set_knobs(&k).unwrap();
    }

    fn engine_state(&self, m: &Machine) -> Option<String> {
        self.fake.state(&m.id()).map(|s| s.state)
    }
}

fn hang(op: &str) -> Knobs {
    let mut k = Knobs::default();
    k.ops.insert(
        op.into(),
        OpKnob {
            hang: true,
            ..Default::default()
        },
    );
    k
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_runs_through_every_status() {
    let r = rig();
    let m = r.machine("vm").await;
    assert_eq!(m.status(), Status::Pending);
    r.core.act(&m, Action::Start).await.unwrap();
    assert_eq!(m.status(), Status::Running);
    assert_eq!(r.engine_state(&m).as_deref(), Some("running"));
    r.core.act(&m, Action::Pause).await.unwrap();
    assert_eq!(m.status(), Status::Paused);
    let err = r.core.act(&m, Action::Pause).await.unwrap_err();
    assert_eq!(err.errno(), libc::EALREADY);
    r.core.act(&m, Action::Resume).await.unwrap();
    assert_eq!(m.status(), Status::Running);
    r.core.act(&m, Action::Stop).await.unwrap();
    assert_eq!(m.status(), Status::Stopped);
    assert_eq!(m.snapshot().exit, Some(Exit::Code(0)));
    r.core.act(&m, Action::Restart).await.unwrap();
    assert_eq!(m.status(), Status::Running);
    r.core.act(&m, Action::Kill).await.unwrap();
    r.core.delete(&m).await.unwrap();
    assert!(r.core.get("vm").is_err());
    assert_eq!(r.engine_state(&m), None, "engine state left behind");
    assert!(
        !r.dir.path().join("run").join(m.id()).exists(),
        "runtime dir left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_cancels_a_hanging_start_and_removes_what_it_made() {
    let r = rig();
    let m = r.machine("vm").await;
    let mut k = hang("start");
    k.finish_start_after_ms = Some(60_000);
    r.knobs(k);
    let core = r.core.clone();
    let starting = m.clone();
    let start = tokio::spawn(async move { core.act(&starting, Action::Start).await });
    eventually("starting", || m.status() == Status::Starting).await;
    r.core.act(&m, Action::Kill).await.unwrap();
    let err = start.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::Cancelled { .. }), "{}", err.report());
    assert_eq!(err.errno(), libc::ECANCELED);
    assert_eq!(m.status(), Status::Stopped);
    let error = m.snapshot().error;
    assert!(error.contains("start was cancelled by kill"), "{error}");
    assert_eq!(r.engine_state(&m), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_start_leaves_the_previous_run_alone() {
    let r = rig();
    let m = r.machine("vm").await;
    r.core.act(&m, Action::Start).await.unwrap();
    r.core.act(&m, Action::Stop).await.unwrap();
    // The engine has begun the new run (its workload is `created`) when the
    // stop comes: cancelling must restore the last run's workload.
    r.knobs(Knobs {
        finish_start_after_ms: Some(60_000),
        ..Default::default()
    });
    let (core, starting) = (r.core.clone(), m.clone());
    let start = tokio::spawn(async move { core.act(&starting, Action::Start).await });
    eventually("the engine creating the new run", || {
        r.engine_state(&m).as_deref() == Some("created")
    })
    .await;
    r.core.act(&m, Action::Stop).await.unwrap();
    assert!(start.await.unwrap().is_err());
    // The last run's workload is still there, exited.
    assert_eq!(r.engine_state(&m).as_deref(), Some("exited"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmdir_cancels_a_start_and_deletes() {
    let r = rig();
    let m = r.machine("vm").await;
    r.knobs(hang("start"));
    let (core, starting) = (r.core.clone(), m.clone());
    let start = tokio::spawn(async move { core.act(&starting, Action::Start).await });
    eventually("starting", || m.status() == Status::Starting).await;
    r.core.delete(&m).await.unwrap();
    assert!(start.await.unwrap().is_err());
    assert!(m.is_deleted());
    assert!(r.core.get("vm").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_machine_answers_ebusy_naming_the_operation() {
    let r = rig();
    let m = r.machine("vm").await;
    r.core.act(&m, Action::Start).await.unwrap();
    r.knobs(hang("pause"));
    let (core, pausing) = (r.core.clone(), m.clone());
    let pause = tokio::spawn(async move { core.act(&pausing, Action::Pause).await });
    eventually("pause in progress", || m.operation().is_some()).await;
    let info = r.core.info(&m).await;
    // info reaches the fake, which is not hanging for info.
    assert_eq!(info.unwrap()["operation"]["name"], "pause");
    let err = r.core.act(&m, Action::Resume).await.unwrap_err();
    assert_eq!(err.errno(), libc::EBUSY);
    let text = err.report().to_string();
    assert!(text.contains("pause has been in progress"), "{text}");
    assert!(m.snapshot().error.contains("pause has been in progress"));
    r.knobs(Knobs::default());
    pause.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_sees_a_status_the_machine_only_passed_through() {
    let r = rig();
    let m = r.machine("vm").await;
    r.knobs(Knobs {
        exit_after_ms: Some(0),
        exit_code: 0,
        ..Default::default()
    });
    let (core, waiting) = (r.core.clone(), m.clone());
    let wait = tokio::spawn(async move {
        core.act(
            &waiting,
            Action::Wait {
                target: WaitTarget::Status(Status::Running),
                timeout: Duration::from_secs(5),
            },
        )
        .await
    });
    // Let the wait subscribe before anything happens.
    tokio::time::sleep(Duration::from_millis(50)).await;
    r.core.act(&m, Action::Start).await.unwrap();
    eventually("exited", || m.status() == Status::Stopped).await;
    wait.await
        .unwrap()
        .expect("wait running must see the brief running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_sees_a_status_that_came_and_went_before_it_woke() {
    let r = rig();
    let m = r.machine("vm").await;
    let (core, waiting) = (r.core.clone(), m.clone());
    let wait = tokio::spawn(async move {
        core.wait_for(
            &waiting,
            WaitTarget::Status(Status::Running),
            Duration::from_secs(5),
        )
        .await
    });
    eventually("the waiter subscribed", || m.changed.receiver_count() > 0).await;
    // Two changes with no chance for the waiter to run in between: a
    // waiter that only looks at the latest status would miss `running`.
    let mut rec = m.snapshot();
    rec.status = Status::Running;
    m.publish(rec.clone());
    rec.status = Status::Stopped;
    m.publish(rec);
    m.announce_transitions();
    wait.await.unwrap().expect("wait running missed it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_leaves_the_error_history_and_the_store_alone() {
    let r = rig();
    let m = r.machine("vm").await;
    let mut k = Knobs::default();
    k.ops.insert(
        "start".into(),
        OpKnob {
            fail: Some("port 8080 is already allocated".into()),
            ..Default::default()
        },
    );
    r.knobs(k);
    r.core.act(&m, Action::Start).await.unwrap_err();
    let before = m.snapshot();
    assert!(before.error.contains("port 8080"), "{}", before.error);
    let err = r
        .core
        .act(
            &m,
            Action::Wait {
                target: WaitTarget::Status(Status::Running),
                timeout: Duration::from_millis(50),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.errno(), libc::ETIMEDOUT);
    // The caller heard the timeout; the machine's history did not change.
    assert_eq!(m.snapshot(), before);
    let stored = restart(&r).await.get("vm").unwrap().snapshot();
    assert_eq!(stored.error, before.error);
    assert_eq!(stored.errors, before.errors);
    assert_eq!(stored.updated_ms, before.updated_ms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_info_taken_across_a_change_is_not_kept() {
    let r = rig();
    let m = r.machine("vm").await;
    r.core.act(&m, Action::Start).await.unwrap();
    let fresh = Duration::from_secs(60);
    r.knobs(hang("info"));
    let reading = r.core.info_text(&m, fresh);
    tokio::pin!(reading);
    // Polled once: it has taken the machine as it is (running) and now
    // waits on the runtime.
    tokio::select! {
        biased;
        _ = &mut reading => panic!("info did not wait for the runtime"),
        _ = std::future::ready(()) => {}
    }
    r.core.act(&m, Action::Stop).await.unwrap();
    r.knobs(Knobs::default());
    let stale = reading.await.unwrap();
    assert!(String::from_utf8_lossy(&stale).contains(r#""status": "running""#));
    // The next reader sees the change, not what was rendered before it.
    let text = r.core.info_text(&m, fresh).await.unwrap();
    let text = String::from_utf8_lossy(&text);
    assert!(text.contains(r#""status": "stopped""#), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_finds_its_machine_even_when_another_is_named_after_it() {
    let r = rig();
    let victim = r.machine("victim").await;
    let id = victim.id();
    let namesake = r
        .core
        .create(id.as_bytes(), Default::default())
        .await
        .unwrap();
    assert_eq!(r.core.find(&id).unwrap().name(), victim.name());
    // The namesake is still found by its own id, and by name where no id
    // is meant (the filesystem).
    assert_eq!(r.core.find(&namesake.id()).unwrap().name(), namesake.name());
    assert_eq!(r.core.get(&id).unwrap().id(), namesake.id());
    assert_eq!(r.core.find("victim").unwrap().id(), id);
    assert_eq!(r.core.find("nobody").unwrap_err().errno(), libc::ENOENT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_restart_policy_restarts_a_failing_run_but_never_undoes_a_stop() {
    // `always`: were the stop's own exit taken for the run ending, the
    // policy would start it again. (A stop during the back-off between two
    // runs is a_stop_during_restart_backoff_leaves_the_machine_stopped.)
    let r = rig();
    let m = r.machine_with("vm", r#","restart":"always""#).await;
    r.knobs(Knobs {
        exit_after_ms: Some(50),
        exit_code: 3,
        ..Default::default()
    });
    r.core.act(&m, Action::Start).await.unwrap();
    eventually("restarted twice", || {
        r.fake.state(&m.id()).is_some_and(|s| s.starts >= 3)
    })
    .await;
    assert!(m
        .log()
        .tail(None)
        .unwrap()
        .windows(10)
        .any(|w| w == b"restarting"));
    r.knobs(Knobs::default());
    eventually("running again", || m.status() == Status::Running).await;
    let run = m.live().unwrap();
    r.core.act(&m, Action::Stop).await.unwrap();
    let starts = r.fake.state(&m.id()).unwrap().starts;
    // Once the stopped run's watcher (and output follower) let go of its
    // runtime, it has decided about the exit it saw. The machine keeps the
    // runtime for what is left to remove.
    eventually("the stopped run's watcher ended", || {
        let kept = usize::from(m.live().is_some_and(|l| Arc::ptr_eq(&l, &run)));
        Arc::strong_count(&run) == 1 + kept
    })
    .await;
    assert_eq!(m.status(), Status::Stopped);
    assert!(
        super::machine::lock(&m.restart_pending).is_none(),
        "a restart is scheduled after the stop"
    );
    assert_eq!(r.fake.state(&m.id()).unwrap().starts, starts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_failure_does_not_restart_a_clean_exit() {
    let r = rig();
    let m = r.machine_with("vm", r#","restart":"on-failure""#).await;
    r.knobs(Knobs {
        exit_after_ms: Some(20),
        ..Default::default()
    });
    r.core.act(&m, Action::Start).await.unwrap();
    eventually("stopped", || m.status() == Status::Stopped).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(r.fake.state(&m.id()).unwrap().starts, 1);
    assert_eq!(m.snapshot().exit, Some(Exit::Code(0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_changes_nothing() {
    let r = rig();
    let m = r.machine("vm").await;
    r.store.set_failing(true);
    let err = r.core.act(&m, Action::Start).await.unwrap_err();
    assert_eq!(err.errno(), libc::EIO);
    assert_eq!(m.status(), Status::Pending);
    assert_eq!(
        r.engine_state(&m),
        None,
        "a start the store refused ran anyway"
    );
    let err = r
        .core
        .create(b"other", Default::default())
        .await
        .unwrap_err();
    assert_eq!(err.errno(), libc::EIO);
    assert!(r.core.get("other").is_err());
    // The name is free again once the failure passed.
    r.store.set_failing(false);
    r.core.create(b"other", Default::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_never_wait_for_a_hanging_store() {
    let r = rig();
    let m = r.machine("vm").await;
    r.store.set_hanging(true);
    let (core, starting) = (r.core.clone(), m.clone());
    let start = tokio::spawn(async move { core.act(&starting, Action::Start).await });
    let (core2,) = (r.core.clone(),);
    let create = tokio::spawn(async move { core2.create(b"new", Default::default()).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Both writers are stuck on the disk; readers are not.
    for _ in 0..100 {
        assert_eq!(r.core.list().len(), 1);
        assert_eq!(r.core.get("vm").unwrap().status(), Status::Pending);
    }
    // The name being created is taken already.
    let err = r.core.create(b"new", Default::default()).await.unwrap_err();
    assert_eq!(err.errno(), libc::EEXIST);
    r.store.set_hanging(false);
    start.await.unwrap().unwrap();
    create.await.unwrap().unwrap();
    assert_eq!(r.core.list().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_runs_exit_never_touches_a_new_run() {
    let r = rig();
    let m = r.machine("vm").await;
    r.core.act(&m, Action::Start).await.unwrap();
    let first = m.live().unwrap();
    r.core.act(&m, Action::Restart).await.unwrap();
    let second = m.live().unwrap();
    assert!(!Arc::ptr_eq(&first, &second), "the restart made no new run");
    // To the first run's runtime, its workload has exited (a later run
    // replaced it): its watcher, now stale, sees that exit and must let it
    // go rather than record it over the new run.
    assert!(matches!(
        first.observe().await.unwrap(),
        crate::runtime::Observed::Exited { .. }
    ));
    // The watcher (and the output follower) hold the first runtime until
    // they are done with it.
    eventually("the first run's watcher ended", || {
        Arc::strong_count(&first) == 1
    })
    .await;
    assert_eq!(m.status(), Status::Running);
    assert_eq!(m.snapshot().error, "");
    assert_eq!(m.snapshot().exit, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_verbs_are_refused_and_recorded() {
    let r = rig();
    let docker_only = {
        let dir = r.dir.path().join("d");
        std::fs::create_dir_all(&dir).unwrap();
        crate::runtime::docker::DockerDriver::with_host("unix:///nonexistent.sock")
    };
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    let state = r.dir.path().join("s2");
    let core = Core::open_with(&state, store, vec![Arc::new(docker_only)], settings()).unwrap();
    let m = core.create(b"web", Default::default()).await.unwrap();
    let err = core
        .act(
            &m,
            Action::Resize {
                vcpus: Some(2),
                mem_mib: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.errno(), libc::EOPNOTSUPP);
    assert!(m
        .snapshot()
        .error
        .contains("docker does not support resize"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_powers_reach_the_runtime_and_need_a_running_vm() {
    let r = rig();
    let m = r.machine("vm").await;
    let resize = Action::Resize {
        vcpus: Some(2),
        mem_mib: None,
    };
    let err = r.core.act(&m, resize.clone()).await.unwrap_err();
    assert_eq!(err.errno(), libc::EINVAL);
    r.core.act(&m, Action::Start).await.unwrap();
    r.core.act(&m, resize).await.unwrap();
    assert_eq!(r.fake.state(&m.id()).unwrap().vcpus, Some(2));
    r.core
        .act(
            &m,
            Action::AddDisk {
                path: "/tmp/d.img".into(),
                id: Some("data".into()),
                read_only: false,
            },
        )
        .await
        .unwrap();
    r.core
        .act(&m, Action::RemoveDevice { id: "data".into() })
        .await
        .unwrap();
    let err = r
        .core
        .act(&m, Action::RemoveDevice { id: "data".into() })
        .await
        .unwrap_err();
    assert!(
        err.report().to_string().starts_with("remove-device: "),
        "{}",
        err.report()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_kernel_fails_start_naming_the_field() {
    let r = rig();
    let m = r.machine("vm").await;
    r.core
        .set_config(
            &m,
            br#"{"runtime_type":"firecracker","kernel_image_path":"/nonexistent/vmlinux"}"#,
        )
        .await
        .unwrap();
    let err = r.core.act(&m, Action::Start).await.unwrap_err();
    assert_eq!(err.errno(), libc::ENOENT);
    assert!(
        m.snapshot().error.starts_with("kernel_image_path"),
        "{}",
        m.snapshot().error
    );
    assert_eq!(m.status(), Status::Pending);
}

// ----- reconcile -----

/// Reopens the core on the same state and engine, as a restarted daemon.
async fn restart(r: &Rig) -> Arc<Core> {
    let (core, _) = open(r.dir.path(), &r.fake);
    core.probe_health().await;
    core
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_readopts_running_and_records_deaths() {
    let r = rig();
    let a = r.machine("a").await;
    let b = r.machine("b").await;
    r.core.act(&a, Action::Start).await.unwrap();
    r.core.act(&b, Action::Start).await.unwrap();
    let (a_id, b_id) = (a.id(), b.id());
    // b's workload dies while no daemon watches.
    std::fs::remove_file(r.fake.dir().join(format!("{b_id}.json"))).unwrap();
    let core = restart(&r).await;
    assert!(core.reconcile(true).await);
    let a2 = core.get("a").unwrap();
    assert_eq!(a2.status(), Status::Running);
    assert_eq!(r.fake.state(&a_id).unwrap().starts, 1, "started twice");
    let b2 = core.get("b").unwrap();
    assert_eq!(b2.status(), Status::Failed);
    assert!(
        b2.snapshot().error.contains("disappeared"),
        "{}",
        b2.snapshot().error
    );
    // The re-adopted run is followed: a stop works.
    core.act(&a2, Action::Stop).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_waits_for_a_start_the_engine_finishes_after_the_daemon_died() {
    let r = rig();
    let m = r.machine("vm").await;
    r.knobs(Knobs {
        finish_start_after_ms: Some(400),
        ..Default::default()
    });
    // The daemon "dies" with the machine starting and the engine mid-start.
    r.core
        .commit(&m, |rec| rec.status = Status::Starting)
        .await
        .unwrap();
    let rt = r.core.new_runtime(&m, &m.snapshot()).unwrap();
    // The daemon dies while the engine is still starting it.
    assert!(tokio::time::timeout(Duration::from_millis(50), rt.start())
        .await
        .is_err());
    let core = restart(&r).await;
    assert!(
        !core.reconcile(false).await,
        "a created workload is not yet known"
    );
    assert_eq!(core.get("vm").unwrap().status(), Status::Starting);
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(core.reconcile(false).await);
    assert_eq!(core.get("vm").unwrap().status(), Status::Running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_finishes_a_stop_it_finds_interrupted() {
    let r = rig();
    let m = r.machine("vm").await;
    r.core.act(&m, Action::Start).await.unwrap();
    r.core
        .commit(&m, |rec| rec.status = Status::Stopping)
        .await
        .unwrap();
    let core = restart(&r).await;
    core.reconcile(false).await;
    let m2 = core.get("vm").unwrap();
    assert_eq!(m2.status(), Status::Stopped);
    assert!(
        m2.snapshot().error.contains("stop was completed"),
        "{}",
        m2.snapshot().error
    );
    assert_eq!(
        r.engine_state(&m2).as_deref(),
        Some("exited"),
        "still running"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_puts_down_a_workload_that_never_settles() {
    let r = rig();
    let m = r.machine("vm").await;
    r.knobs(Knobs {
        finish_start_after_ms: Some(600_000),
        ..Default::default()
    });
    r.core
        .commit(&m, |rec| rec.status = Status::Running)
        .await
        .unwrap();
    let rt = r.core.new_runtime(&m, &m.snapshot()).unwrap();
    // The daemon dies while the engine is still starting it.
    assert!(tokio::time::timeout(Duration::from_millis(50), rt.start())
        .await
        .is_err());
    let core = restart(&r).await;
    assert!(!core.reconcile(false).await);
    tokio::time::sleep(settings().transitional_patience).await;
    assert!(core.reconcile(false).await);
    let m2 = core.get("vm").unwrap();
    assert_eq!(m2.status(), Status::Failed);
    assert_eq!(m2.snapshot().exit, Some(Exit::Unknown));
    // A kill cannot end a workload that was never started: it is removed.
    assert_eq!(r.engine_state(&m2), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_adopts_a_workload_its_runtimes_restart_policy_is_restarting() {
    let r = rig();
    let m = r.machine("vm").await;
    r.core.act(&m, Action::Start).await.unwrap();
    let id = m.id();
    // While no daemon watches, the workload crash-loops under the engine's
    // own restart policy, which keeps it `restarting` most of the time.
    let set_state = |state: &str, code: i64| {
        let mut s = r.fake.state(&id).unwrap();
        s.state = state.into();
        s.exit_code = code;
        let path = r.fake.dir().join(format!("{id}.json"));
        std::fs::write(path, serde_json::to_vec(&s).unwrap()).unwrap();
    };
    set_state("restarting", 1);
    let core = restart(&r).await;
    // Settled at the first look: it is the policy's, and runs as far as
    // anyone is concerned; nothing waits for it to settle or puts it down.
    assert!(core.reconcile(false).await);
    let m2 = core.get("vm").unwrap();
    assert_eq!(m2.status(), Status::Running);
    assert!(m2.live().is_some(), "the run is not followed");
    assert_eq!(r.engine_state(&m2).as_deref(), Some("restarting"));
    assert_eq!(r.fake.state(&id).unwrap().starts, 1, "started by reconcile");
    // Its exit watcher follows it: when it ends for good, that is recorded.
    set_state("exited", 3);
    eventually("the exit recorded", || m2.status() == Status::Failed).await;
    assert_eq!(m2.snapshot().exit, Some(Exit::Code(3)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_removes_orphans_and_never_starts_anything() {
    let r = rig();
    let m = r.machine("vm").await;
    r.core.act(&m, Action::Start).await.unwrap();
    r.core.act(&m, Action::Stop).await.unwrap();
    let orphan = r.fake.dir().join("orphan-id.json");
    std::fs::write(&orphan, br#"{"state":"running"}"#).unwrap();
    let core = restart(&r).await;
    core.reconcile(true).await;
    assert!(!orphan.exists());
    assert_eq!(core.get("vm").unwrap().status(), Status::Stopped);
    assert_eq!(r.engine_state(&m).as_deref(), Some("exited"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handle_never_reaches_a_machine_recreated_under_its_name() {
    let r = rig();
    let old = r.machine("vm").await;
    r.core.delete(&old).await.unwrap();
    let new = r.machine("vm").await;
    assert_ne!(old.id(), new.id());
    // An action aimed at the deleted machine does not land on its namesake.
    let err = r.core.act(&old, Action::Start).await.unwrap_err();
    assert_eq!(err.errno(), libc::ENOENT);
    let err = r.core.delete(&old).await.unwrap_err();
    assert_eq!(err.errno(), libc::ENOENT);
    assert_eq!(new.status(), Status::Pending);
    assert!(!new.is_deleted());
    assert_eq!(r.core.get("vm").unwrap().id(), new.id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_streams_stdin_to_stdout_and_ends_with_its_exit_code() {
    use crate::core::Stream;
    use crate::model::{SessionCommand, StreamControl, StreamRequest};
    let r = rig();
    let m = r.machine("vm").await;
    let s = r.core.open_session(&m).unwrap();
    let cat = SessionCommand::Run(StreamRequest::parse(b"cat").unwrap());
    // Not running yet: no session command.
    let err = r.core.start_session(&m, &s, cat.clone()).await.unwrap_err();
    assert_eq!(err.errno(), libc::EINVAL);
    r.core.act(&m, Action::Start).await.unwrap();
    r.core.start_session(&m, &s, cat.clone()).await.unwrap();
    assert!(
        r.core.start_session(&m, &s, cat).await.is_err(),
        "started twice"
    );
    s.write_stdin(b"hello ").await.unwrap();
    s.write_stdin(b"world").await.unwrap();
    let mut got = Vec::new();
    while got.len() < 11 {
        got.extend(s.read(Stream::Stdout, 4).await);
    }
    assert_eq!(got, b"hello world");
    s.control(StreamControl::CloseStdin).await.unwrap();
    assert_eq!(s.wait_exit().await, 0);
    assert!(
        s.read(Stream::Stdout, 100).await.is_empty(),
        "no EOF after exit"
    );
    assert!(s.write_stdin(b"late").await.is_err());
    assert_eq!(r.core.sessions(&m), vec![s.id]);
    r.core.release_session(&m, &s);
    assert!(r.core.sessions(&m).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_holder_letting_go_kills_the_sessions_command() {
    use crate::model::{SessionCommand, StreamControl, StreamRequest};
    let r = rig();
    let m = r.machine("vm").await;
    r.core.act(&m, Action::Start).await.unwrap();
    let s = r.core.open_session(&m).unwrap();
    r.core.hold_session(&s);
    r.core
        .start_session(
            &m,
            &s,
            SessionCommand::Run(StreamRequest::parse(b"cat").unwrap()),
        )
        .await
        .unwrap();
    r.core.release_session(&m, &s);
    assert_eq!(r.core.sessions(&m), vec![s.id], "one holder is left");
    s.control(StreamControl::Signal(libc::SIGINT))
        .await
        .unwrap();
    assert_eq!(s.wait_exit().await, 128 + i64::from(libc::SIGINT));
    r.core.release_session(&m, &s);
    assert!(r.core.sessions(&m).is_empty());
    for _ in 0..crate::core::MAX_SESSIONS {
        r.core.open_session(&m).unwrap();
    }
    assert_eq!(r.core.open_session(&m).unwrap_err().errno(), libc::EBUSY);
}

/// Fills a `hold` session's stdin (the command never reads it) until the
/// next write has to wait.
async fn backed_up_session(r: &Rig, m: &Arc<Machine>) -> Arc<super::Session> {
    use crate::model::{SessionCommand, StreamRequest};
    use futures_util::FutureExt;
    let s = r.core.open_session(m).unwrap();
    r.core
        .start_session(
            m,
            &s,
            SessionCommand::Run(StreamRequest::parse(b"hold").unwrap()),
        )
        .await
        .unwrap();
    for _ in 0..=crate::runtime::STREAM_DEPTH {
        if s.write_stdin(b"x").now_or_never().is_none() {
            return s;
        }
    }
    panic!("stdin never backed up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_reaches_a_command_whose_stdin_is_backed_up() {
    use crate::model::StreamControl;
    let r = rig();
    let m = r.machine("vm").await;
    r.core.act(&m, Action::Start).await.unwrap();
    let s = backed_up_session(&r, &m).await;
    tokio::time::timeout(
        Duration::from_secs(10),
        s.control(StreamControl::Signal(libc::SIGINT)),
    )
    .await
    .expect("the signal waited behind stdin")
    .unwrap();
    assert_eq!(s.wait_exit().await, 128 + i64::from(libc::SIGINT));
    r.core.release_session(&m, &s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releasing_a_session_kills_its_command_even_with_stdin_backed_up() {
    let r = rig();
    let m = r.machine("vm").await;
    r.core.act(&m, Action::Start).await.unwrap();
    let s = backed_up_session(&r, &m).await;
    r.core.release_session(&m, &s);
    let code = tokio::time::timeout(Duration::from_secs(10), s.wait_exit())
        .await
        .expect("the command outlived its session");
    assert_eq!(code, 128 + i64::from(libc::SIGKILL));
}

// ----- regressions found in review -----

fn rig_with(s: Settings) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let engine = dir.path().join("engine");
    std::fs::create_dir_all(&engine).unwrap();
    let fake = FakeDriver::new(crate::model::RuntimeKind::Firecracker, &engine);
    let store = Faults::new(SqliteStore::open(&dir.path().join("state.db")).unwrap());
    let drivers: Vec<Arc<dyn Driver>> = vec![Arc::new(fake.clone())];
    let core = Core::open_with(dir.path(), Arc::new(store.clone()), drivers, s).unwrap();
    Rig {
        core,
        fake,
        store,
        dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_past_its_deadline_leaves_nothing_running() {
    let r = rig_with(Settings {
        start_deadline: Duration::from_millis(300),
        ..settings()
    });
    let m = r.machine("vm").await;
    r.knobs(Knobs {
        finish_start_after_ms: Some(800),
        ..Default::default()
    });
    let err = r.core.act(&m, Action::Start).await.unwrap_err();
    assert_eq!(err.errno(), libc::ETIMEDOUT, "{}", err.report());
    tokio::time::sleep(Duration::from_millis(900)).await;
    eprintln!("status={} engine={:?}", m.status(), r.engine_state(&m));
    assert!(
        !(m.status() != Status::Running && r.engine_state(&m).as_deref() == Some("running")),
        "status {} while the engine runs the workload",
        m.status()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_stop_reconcile_cannot_finish_is_followed_as_running() {
    let r = rig();
    let m = r.machine("vm").await;
    r.core.act(&m, Action::Start).await.unwrap();
    r.core
        .commit(&m, |rec| rec.status = Status::Stopping)
        .await
        .unwrap();
    let mut k = Knobs::default();
    k.ops.insert(
        "stop".into(),
        OpKnob {
            fail: Some("engine hiccup".into()),
            ..Default::default()
        },
    );
    r.knobs(k);
    let core = restart(&r).await;
    core.reconcile(false).await;
    let m2 = core.get("vm").unwrap();
    assert_eq!(m2.status(), Status::Running);
    r.knobs(Knobs::default());
    // The workload now ends by itself (engine-side).
    let rt = core.new_runtime(&m2, &m2.snapshot()).unwrap();
    rt.kill().await.unwrap();
    assert_eq!(r.engine_state(&m2).as_deref(), Some("exited"));
    for _ in 0..10 {
        core.reconcile(false).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        m2.status() != Status::Running,
        "status stays {} although the workload exited (nobody watches it)",
        m2.status()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_puts_down_a_workload_a_kill_cannot_end() {
    let r = rig();
    let m = r.machine("vm").await;
    let mut k = Knobs {
        finish_start_after_ms: Some(1500),
        ..Default::default()
    };
    k.ops.insert(
        "kill".into(),
        OpKnob {
            fail: Some("not running".into()),
            ..Default::default()
        },
    );
    r.knobs(k);
    r.core
        .commit(&m, |rec| rec.status = Status::Starting)
        .await
        .unwrap();
    let rt = r.core.new_runtime(&m, &m.snapshot()).unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(50), rt.start())
        .await
        .is_err());
    let core = restart(&r).await;
    assert!(!core.reconcile(false).await);
    tokio::time::sleep(settings().transitional_patience).await;
    core.reconcile(false).await;
    let m2 = core.get("vm").unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    core.reconcile(false).await;
    eprintln!(
        "status={} engine={:?} error={}",
        m2.status(),
        r.engine_state(&m2),
        m2.snapshot().error
    );
    assert!(
        !(m2.status() == Status::Failed && r.engine_state(&m2).as_deref() == Some("running")),
        "recorded failed while its workload runs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_pause_leaves_the_restart_policy_alone() {
    let r = rig();
    let m = r.machine_with("vm", r#","restart":"on-failure""#).await;
    r.knobs(Knobs {
        exit_after_ms: Some(50),
        exit_code: 3,
        ..Default::default()
    });
    r.core.act(&m, Action::Start).await.unwrap();
    eventually("failed", || m.status() == Status::Failed).await;
    let err = r.core.act(&m, Action::Pause).await.unwrap_err();
    assert_eq!(err.errno(), libc::EINVAL);
    r.knobs(Knobs::default());
    tokio::time::sleep(Duration::from_millis(600)).await;
    let starts = r.fake.state(&m.id()).unwrap().starts;
    assert!(
        starts >= 2,
        "a refused `pause` silently cancelled the on-failure restart (starts={starts}, status={})",
        m.status()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_landing_as_the_engine_finishes_the_start_leaves_nothing_running() {
    let mut bad = 0;
    for i in 0..6 {
        let r = rig();
        let m = r.machine(&format!("vm{i}")).await;
        r.knobs(Knobs {
            finish_start_after_ms: Some(150),
            ..Default::default()
        });
        let (core, starting) = (r.core.clone(), m.clone());
        let start = tokio::spawn(async move { core.act(&starting, Action::Start).await });
        // The moment the engine has finished the start (it settles lazily).
        loop {
            if r.engine_state(&m).as_deref() == Some("running") {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let kill = r.core.act(&m, Action::Kill).await;
        let started = start.await.unwrap();
        let st = m.status();
        let eng = r.engine_state(&m);
        eprintln!(
            "run {i}: start={:?} kill={:?} status={st} engine={eng:?}",
            started.as_ref().err().map(|e| e.report().to_string()),
            kill.as_ref().err().map(|e| e.report().to_string())
        );
        if st != Status::Running && eng.as_deref() == Some("running") {
            bad += 1;
        }
    }
    assert_eq!(
        bad, 0,
        "{bad}/6 runs left the machine not running while the engine runs it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_overtakes_a_slow_shutdown() {
    let r = rig();
    let m = r.machine("vm").await;
    r.core.act(&m, Action::Start).await.unwrap();
    r.knobs(hang("stop"));
    let (core, stopping) = (r.core.clone(), m.clone());
    let _stop = tokio::spawn(async move {
        core.act(
            &stopping,
            Action::Shutdown {
                grace: Duration::from_secs(3600),
            },
        )
        .await
    });
    eventually("stopping", || m.status() == Status::Stopping).await;
    // The kill does not wait out the hour: it ends the workload now.
    r.core.act(&m, Action::Kill).await.unwrap();
    assert_eq!(m.status(), Status::Stopped);
    assert_eq!(r.engine_state(&m).as_deref(), Some("exited"));
    assert!(
        _stop.await.unwrap().is_ok(),
        "the overtaken shutdown failed"
    );
    r.knobs(Knobs::default());
    // The same for a delete.
    r.core.act(&m, Action::Start).await.unwrap();
    r.knobs(hang("stop"));
    let (core, stopping) = (r.core.clone(), m.clone());
    let stop = tokio::spawn(async move { core.act(&stopping, Action::Stop).await });
    eventually("stopping", || m.status() == Status::Stopping).await;
    r.core.delete(&m).await.unwrap();
    assert!(m.is_deleted());
    let _ = stop.await.unwrap();
    assert_eq!(r.engine_state(&m), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_during_restart_backoff_leaves_the_machine_stopped() {
    let r = rig();
    let m = r.machine_with("vm", r#","restart":"on-failure""#).await;
    r.knobs(Knobs {
        exit_after_ms: Some(50),
        exit_code: 3,
        ..Default::default()
    });
    r.core.act(&m, Action::Start).await.unwrap();
    eventually("failed", || m.status() == Status::Failed).await;
    r.core.act(&m, Action::Stop).await.unwrap();
    eprintln!("after a successful stop: status={}", m.status());
    assert_eq!(
        m.status(),
        Status::Stopped,
        "`stop` succeeded but the machine is {}",
        m.status()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmdir_after_a_timed_out_first_start_leaves_nothing() {
    let r = rig_with(Settings {
        start_deadline: Duration::from_millis(300),
        ..settings()
    });
    let m = r.machine("vm").await;
    r.knobs(Knobs {
        finish_start_after_ms: Some(800),
        ..Default::default()
    });
    let _ = r.core.act(&m, Action::Start).await.unwrap_err();
    assert_eq!(m.status(), Status::Pending);
    r.core.delete(&m).await.unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(
        r.engine_state(&m),
        None,
        "machine deleted, its workload is {:?}",
        r.engine_state(&m)
    );
}

/// Every change reaches a subscriber, in order, with the observer hearing
/// of it first; records that change nothing visible stay quiet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_tell_every_change_in_order() {
    use crate::model::{Happening, RuntimeKind};
    let r = rig();
    r.core.probe_health().await;
    /// Notes what it hears, and checks every change is announced first.
    #[derive(Default)]
    struct Ear {
        heard: std::sync::Mutex<Vec<Happening>>,
        open: std::sync::atomic::AtomicI32,
    }
    impl super::Observer for Ear {
        fn changing(&self, _: &crate::model::Subject) {
            self.open.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        fn changed(&self, s: &crate::model::Subject, what: &[Happening]) {
            if !matches!(what, [Happening::Created]) {
                let before = self.open.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                assert!(before > 0, "{s:?} {what:?} changed without changing");
            }
            self.heard.lock().unwrap().extend(what.iter().cloned());
        }
    }
    let ear = Arc::new(Ear::default());
    struct Shared(Arc<Ear>);
    impl super::Observer for Shared {
        fn changing(&self, s: &crate::model::Subject) {
            self.0.changing(s)
        }
        fn changed(&self, s: &crate::model::Subject, what: &[Happening]) {
            self.0.changed(s, what)
        }
    }
    assert!(r.core.set_observer(Box::new(Shared(ear.clone()))));
    assert!(
        !r.core.set_observer(Box::new(Shared(ear.clone()))),
        "a second observer"
    );
    let mut sub = r.core.subscribe();
    let m = r.machine("vm").await;
    r.core.act(&m, Action::Start).await.unwrap();
    let err = r.core.act(&m, Action::Pause).await;
    assert!(err.is_ok());
    r.core.act(&m, Action::Resume).await.unwrap();
    r.core.act(&m, Action::Stop).await.unwrap();
    let bogus = r.core.act(&m, Action::Resume).await.unwrap_err();
    r.core.delete(&m).await.unwrap();
    let mut got = Vec::new();
    while let Some(e) = sub.try_next() {
        assert_eq!(e.machine_seq(), Some(m.seq()), "{e:?}");
        got.push(e.what.clone());
    }
    let status = |from, to| Happening::Status { from, to };
    assert_eq!(
        got,
        vec![
            Happening::Created,
            Happening::Config {
                from: RuntimeKind::Docker,
                to: RuntimeKind::Firecracker
            },
            status(Status::Pending, Status::Starting),
            status(Status::Starting, Status::Running),
            status(Status::Running, Status::Paused),
            status(Status::Paused, Status::Running),
            status(Status::Running, Status::Stopping),
            status(Status::Stopping, Status::Stopped),
            Happening::Error(bogus.report().to_string()),
            Happening::Deleted {
                status: Status::Stopped,
                runtime: RuntimeKind::Firecracker
            },
        ]
    );
    // The observer heard the same, plus an update per commit.
    let heard = ear.heard.lock().unwrap().clone();
    let observed: Vec<_> = heard
        .iter()
        .filter(|w| **w != Happening::Updated)
        .cloned()
        .collect();
    assert_eq!(observed, got);
    assert!(heard.contains(&Happening::Updated));
    assert_eq!(ear.open.load(std::sync::atomic::Ordering::SeqCst), 0);
}

/// A subscriber that does not read loses the oldest events, never blocks
/// the core, and is told how many it lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_loses_the_oldest_and_is_told() {
    use crate::model::Happening;
    let r = rig();
    r.core.probe_health().await;
    let mut slow = r.core.subscribe();
    let m = r.machine("vm").await;
    let extra = super::BACKLOG + 10;
    for i in 0..extra {
        let line = format!("bogus {i}");
        r.core.report(&m, Error::InvalidCommand(line)).await;
    }
    let first = slow.try_next().expect("marker");
    let Happening::Dropped(n) = first.what else {
        panic!("expected the marker, got {first:?}");
    };
    // Created + config + every error, less what the backlog kept.
    assert_eq!(n as usize, 2 + extra - super::BACKLOG);
    let mut rest = 0;
    let mut last = None;
    while let Some(e) = slow.try_next() {
        rest += 1;
        last = Some(e);
    }
    assert_eq!(rest, super::BACKLOG);
    let last = last.expect("events");
    assert!(
        matches!(&last.what, Happening::Error(l) if l.contains(&format!("bogus {}", extra - 1))),
        "{last:?}"
    );
}
