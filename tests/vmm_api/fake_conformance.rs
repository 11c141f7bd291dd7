//! The fakes are only worth testing against if they answer as the real VMMs
//! do. The same script of requests, mistakes included, is sent to the real
//! binary and to its fake; every status and the opening words of every error
//! message must agree.

use std::path::Path;

use hyper::Method;
use hyperfleet::runtime::http::{HttpError, UnixHttp};
use serde_json::{json, Value};

use crate::common::fake_vmm::{FakeVmm, Flavor};
use crate::common::kernel::test_kernel;
use crate::common::vmm::{
    cloud_hypervisor_bin, firecracker_bin, raw_disk, runtime_dir, start_cloud_hypervisor,
    start_firecracker,
};

/// One request: method, path, JSON body (`None`: no body at all).
type Step = (Method, String, Option<Value>);

/// Status and the first clause of the message (up to the first ':') of
/// each step's answer.
async fn replay(http: &UnixHttp, steps: &[Step]) -> Vec<(u16, String)> {
    let mut answers = Vec::new();
    for (method, path, body) in steps {
        let result = http.request(method.clone(), path, body.as_ref()).await;
        answers.push(match result {
            Ok(r) => (r.status.as_u16(), String::new()),
            Err(HttpError::Status {
                status, message, ..
            }) => (
                status.as_u16(),
                message.split(':').next().unwrap_or_default().to_owned(),
            ),
            Err(other) => panic!("{method} {path}: {other}"),
        });
    }
    answers
}

fn compare(steps: &[Step], real: &[(u16, String)], fake: &[(u16, String)]) {
    assert_eq!(real.len(), fake.len());
    for ((step, real), fake) in steps.iter().zip(real).zip(fake) {
        assert_eq!(
            real, fake,
            "{} {} {:?}: real VMM and fake disagree",
            step.0, step.1, step.2
        );
    }
}

fn step(method: Method, path: &str, body: Option<Value>) -> Step {
    (method, path.to_owned(), body)
}

fn firecracker_script(dir: &Path) -> Vec<Step> {
    let kernel = test_kernel();
    let put = |path: &str, body: Value| step(Method::PUT, path, Some(body));
    vec![
        step(Method::GET, "/", None),
        put(
            "/machine-config",
            json!({"vcpu_count": 0, "mem_size_mib": 128}),
        ),
        put(
            "/machine-config",
            json!({"vcpu_count": 1, "mem_size_mib": 128, "bogus": 1}),
        ),
        put("/machine-config", json!({"vcpu_count": 1})),
        step(Method::PUT, "/machine-config", None),
        // Bytes where MiB are wanted: accepted here, fatal at the start.
        put(
            "/machine-config",
            json!({"vcpu_count": 1, "mem_size_mib": 134217728}),
        ),
        put(
            "/boot-source",
            json!({"kernel_image_path": dir.join("missing")}),
        ),
        put("/boot-source", json!({"kernel_image_path": kernel})),
        put(
            "/drives/a",
            json!({"drive_id": "b", "is_root_device": false, "path_on_host": kernel}),
        ),
        put(
            "/drives/c",
            json!({"drive_id": "c", "is_root_device": false, "is_read_only": true, "path_on_host": dir.join("missing")}),
        ),
        put("/actions", json!({"action_type": "Bogus"})),
        put("/actions", json!({"action_type": "SendCtrlAltDel"})),
        step(Method::PATCH, "/vm", Some(json!({"state": "Paused"}))),
        step(Method::GET, "/nope", None),
        step(Method::DELETE, "/", None),
        put("/actions", json!({"action_type": "InstanceStart"})),
        put(
            "/machine-config",
            json!({"vcpu_count": 1, "mem_size_mib": 64}),
        ),
        put("/actions", json!({"action_type": "InstanceStart"})),
        put(
            "/snapshot/create",
            json!({"snapshot_path": dir.join("s"), "mem_file_path": dir.join("m")}),
        ),
        put(
            "/machine-config",
            json!({"vcpu_count": 1, "mem_size_mib": 64}),
        ),
        step(Method::PATCH, "/vm", Some(json!({"state": "Paused"}))),
        step(Method::PATCH, "/vm", Some(json!({"state": "Resumed"}))),
        step(Method::GET, "/vm/config", None),
    ]
}

#[tokio::test]
async fn firecracker_fake_answers_as_the_real_one() {
    let Some(bin) = firecracker_bin() else { return };
    let real_dir = runtime_dir();
    let fake_dir = runtime_dir();
    let (mut fc, api) = start_firecracker(&bin, real_dir.path()).await;
    let fake = FakeVmm::start(Flavor::Firecracker, &fake_dir.path().join("api.sock"));

    let real_steps = firecracker_script(real_dir.path());
    let real = replay(api.http(), &real_steps).await;
    let fake_steps = firecracker_script(fake_dir.path());
    let faked = replay(&UnixHttp::new(fake.socket()), &fake_steps).await;
    compare(&real_steps, &real, &faked);
    fc.vmm
        .terminate(std::time::Duration::from_secs(5))
        .await
        .unwrap();
}

fn cloud_hypervisor_script(dir: &Path) -> Vec<Step> {
    let kernel = test_kernel();
    let disk = raw_disk(dir, "disk.img", 1);
    let put = |endpoint: &str, body: Option<Value>| {
        step(Method::PUT, &format!("/api/v1/{endpoint}"), body)
    };
    let vm = |extra: Value| {
        let mut config = json!({
            "cpus": {"boot_vcpus": 1, "max_vcpus": 2},
            "memory": {"size": 128u64 << 20},
            "payload": {"kernel": kernel},
            "serial": {"mode": "Null"},
            "console": {"mode": "Off"},
        });
        for (k, v) in extra.as_object().unwrap() {
            config[k] = v.clone();
        }
        Some(config)
    };
    vec![
        step(Method::GET, "/api/v1/vmm.ping", None),
        step(Method::GET, "/api/v1/vm.info", None),
        put("vm.boot", None),
        put("vm.create", None),
        put("vm.create", vm(json!({"memory": {"size": "128M"}}))),
        put("vm.create", vm(json!({"serial": {"mode": "Bogus"}}))),
        // Unknown fields pass; a size in bytes that is not page-aligned
        // passes create and fails the boot.
        put(
            "vm.create",
            vm(json!({"bogus": 1, "memory": {"size": (128u64 << 20) + 1}})),
        ),
        put("vm.create", vm(json!({}))),
        put("vm.boot", None),
        put("vm.delete", None),
        put(
            "vm.create",
            vm(json!({"cpus": {"boot_vcpus": 3, "max_vcpus": 2}})),
        ),
        put("vm.boot", None),
        put("vm.delete", None),
        put("vm.create", vm(json!({}))),
        put("vm.pause", None),
        put("vm.add-disk", Some(json!({"path": disk, "id": "d0"}))),
        put("vm.boot", None),
        put("vm.add-disk", Some(json!({"path": disk, "id": "d0"}))),
        put("vm.remove-device", Some(json!({"id": "nope"}))),
        put("vm.remove-device", Some(json!({"id": "d0"}))),
        put("vm.resize", Some(json!({"desired_vcpus": 3}))),
        put(
            "vm.snapshot",
            Some(json!({"destination_url": format!("file://{}", dir.display())})),
        ),
        put("vm.resume", None),
        step(Method::GET, "/api/v1/vm.boot", None),
        step(Method::GET, "/api/v1/nope", None),
        step(Method::GET, "/nope", None),
        put("vm.shutdown", None),
        put("vm.shutdown", None),
        put("vm.power-button", None),
        put("vmm.shutdown", None),
    ]
}

#[tokio::test]
async fn cloud_hypervisor_fake_answers_as_the_real_one() {
    let Some(bin) = cloud_hypervisor_bin() else {
        return;
    };
    let real_dir = runtime_dir();
    let fake_dir = runtime_dir();
    let (mut ch, api) = start_cloud_hypervisor(&bin, real_dir.path()).await;
    let fake = FakeVmm::start(Flavor::CloudHypervisor, &fake_dir.path().join("api.sock"));

    let real_steps = cloud_hypervisor_script(real_dir.path());
    let real = replay(api.http(), &real_steps).await;
    let fake_steps = cloud_hypervisor_script(fake_dir.path());
    let faked = replay(&UnixHttp::new(fake.socket()), &fake_steps).await;
    compare(&real_steps, &real, &faked);
    // Both went away on vmm.shutdown.
    ch.vmm.wait().await.unwrap();
    drop(fake);
}
