//! Local stand-ins for the two VMM APIs, for the error paths the real
//! binaries cannot be made to take on demand (a hung call, a 500 at a chosen
//! step, a socket nobody answers on).
//!
//! Each serves the subset of its API that our clients call, on a Unix
//! socket, with its own request schemas written from the API definitions
//! (not shared with the client, so a client that misnames a field is caught)
//! and the status codes and messages the real v1.17 Firecracker and v53
//! Cloud Hypervisor gave for the same mistakes: Firecracker refuses unknown
//! fields, a wrong method or path with 400 and a `fault_message`; Cloud
//! Hypervisor ignores unknown fields, answers 404 for an unknown path and 400
//! for a wrong method, and checks most of a configuration only at boot.
//!
//! Knobs: [`FakeVmm::fail`] answers one call with a chosen status and body,
//! [`FakeVmm::hang`] never answers it; [`silent_socket`] is a socket that
//! accepts and never answers; [`no_socket_command`] is a "VMM" that never
//! creates its socket.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyperfleet::runtime::vmm_process::VmmCommand;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Firecracker,
    CloudHypervisor,
}

type Call = (Method, String);

#[derive(Default)]
struct Knobs {
    fail: HashMap<Call, (StatusCode, String)>,
    hang: HashSet<Call>,
    seen: Vec<Call>,
}

struct Shared {
    flavor: Flavor,
    knobs: Mutex<Knobs>,
    fc: Mutex<FcState>,
    ch: Mutex<ChState>,
    /// Tells the accept loop to stop (Cloud Hypervisor's `vmm.shutdown`).
    shutdown: tokio::sync::Notify,
}

/// A fake VMM API server; stops and removes its socket when dropped.
pub struct FakeVmm {
    shared: Arc<Shared>,
    socket: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl FakeVmm {
    /// Binds `socket` and serves the `flavor` API on it until dropped.
    pub fn start(flavor: Flavor, socket: &Path) -> FakeVmm {
        let listener = tokio::net::UnixListener::bind(socket).expect("bind fake VMM socket");
        let shared = Arc::new(Shared {
            flavor,
            knobs: Mutex::default(),
            fc: Mutex::default(),
            ch: Mutex::default(),
            shutdown: tokio::sync::Notify::new(),
        });
        let serving = shared.clone();
        let path = socket.to_owned();
        let task = tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => break,
                    },
                    _ = serving.shutdown.notified() => break,
                };
                let shared = serving.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(handle(&shared, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
            let _ = std::fs::remove_file(&path);
        });
        FakeVmm {
            shared,
            socket: socket.to_owned(),
            task,
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Answers `method path` with `status` and `body` from now on.
    pub fn fail(&self, method: Method, path: &str, status: u16, body: &str) {
        let status = StatusCode::from_u16(status).expect("valid status");
        self.shared
            .knobs
            .lock()
            .unwrap()
            .fail
            .insert((method, path.to_owned()), (status, body.to_owned()));
    }

    /// Never answers `method path` from now on (the connection stays open).
    pub fn hang(&self, method: Method, path: &str) {
        self.shared
            .knobs
            .lock()
            .unwrap()
            .hang
            .insert((method, path.to_owned()));
    }

    /// Every call received so far, in order.
    pub fn calls(&self) -> Vec<(Method, String)> {
        self.shared.knobs.lock().unwrap().seen.clone()
    }
}

impl Drop for FakeVmm {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// A socket that accepts connections (the kernel queues them) and never
/// answers: a VMM that hangs.
pub fn silent_socket(path: &Path) -> std::os::unix::net::UnixListener {
    std::os::unix::net::UnixListener::bind(path).expect("bind silent socket")
}

/// A "VMM" that runs but never creates its API socket.
pub fn no_socket_command(dir: &Path) -> VmmCommand {
    VmmCommand::new("/bin/sleep", dir)
        .arg("60")
        .socket(dir.join("api.sock"))
}

type Answer = (StatusCode, Option<Value>);

async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let call = (method.clone(), path.clone());
    let (hang, fail) = {
        let mut knobs = shared.knobs.lock().unwrap();
        knobs.seen.push(call.clone());
        (knobs.hang.contains(&call), knobs.fail.get(&call).cloned())
    };
    if hang {
        std::future::pending::<()>().await;
    }
    if let Some((status, text)) = fail {
        return Response::builder()
            .status(status)
            .body(Full::new(Bytes::from(text)))
            .unwrap();
    }
    let (status, value) = match shared.flavor {
        Flavor::Firecracker => shared.fc.lock().unwrap().route(&method, &path, &body),
        Flavor::CloudHypervisor => {
            let answer = shared.ch.lock().unwrap().route(&method, &path, &body);
            if path == "/api/v1/vmm.shutdown" && answer.0.is_success() {
                shared.shutdown.notify_one();
            }
            answer
        }
    };
    let mut response = Response::builder().status(status);
    let body = match value {
        Some(v) => {
            response = response.header("content-type", "application/json");
            Bytes::from(v.to_string())
        }
        None => Bytes::new(),
    };
    response.body(Full::new(body)).unwrap()
}

fn is_elf(path: &str) -> bool {
    std::fs::read(path).is_ok_and(|b| b.starts_with(b"\x7fELF"))
}

// ---------------------------------------------------------------- Firecracker

const FC_BEFORE: &str = "The requested operation is not supported before starting the microVM.";
const FC_AFTER: &str = "The requested operation is not supported after starting the microVM.";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FcMachineConfig {
    vcpu_count: u32,
    mem_size_mib: u64,
    #[serde(default)]
    smt: bool,
    track_dirty_pages: Option<bool>,
    huge_pages: Option<FcHugePages>,
    cpu_template: Option<String>,
}

#[derive(Deserialize)]
enum FcHugePages {
    None,
    Transparent,
    #[serde(rename = "2M")]
    Hugetlbfs,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FcBootSource {
    kernel_image_path: String,
    boot_args: Option<String>,
    initrd_path: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FcDrive {
    drive_id: String,
    is_root_device: bool,
    path_on_host: Option<String>,
    is_read_only: Option<bool>,
    partuuid: Option<String>,
    cache_type: Option<String>,
    io_engine: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FcNet {
    iface_id: String,
    host_dev_name: String,
    guest_mac: Option<String>,
    mtu: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FcVsock {
    guest_cid: u32,
    uds_path: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FcLogger {
    log_path: Option<String>,
    level: Option<String>,
    show_level: Option<bool>,
    show_log_origin: Option<bool>,
    module: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FcMetrics {
    metrics_path: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FcAction {
    action_type: FcActionType,
}

#[derive(Deserialize)]
enum FcActionType {
    FlushMetrics,
    InstanceStart,
    SendCtrlAltDel,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FcVm {
    state: FcVmState,
}

#[derive(Deserialize, PartialEq)]
enum FcVmState {
    Paused,
    Resumed,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FcSnapshotCreate {
    snapshot_path: String,
    mem_file_path: String,
    snapshot_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FcSnapshotLoad {
    snapshot_path: String,
    mem_backend: Option<FcMemBackend>,
    mem_file_path: Option<String>,
    resume_vm: Option<bool>,
    track_dirty_pages: Option<bool>,
    network_overrides: Option<Vec<Value>>,
    vsock_override: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FcMemBackend {
    backend_type: String,
    backend_path: String,
}

#[derive(Default)]
struct FcState {
    started: bool,
    paused: bool,
    machine: Option<(u32, u64)>,
    kernel: Option<String>,
    /// Something other than logger/metrics was configured: no snapshot load.
    configured: bool,
    metrics: bool,
}

fn fault(message: impl Into<String>) -> Answer {
    (
        StatusCode::BAD_REQUEST,
        Some(json!({ "fault_message": message.into() })),
    )
}

const NO_CONTENT: Answer = (StatusCode::NO_CONTENT, None);

/// Parses a Firecracker request body as the API server does.
fn fc_body<T: for<'de> Deserialize<'de>>(method: &Method, body: &[u8]) -> Result<T, Answer> {
    if body.is_empty() {
        let verb = if *method == Method::PATCH {
            "PATCH"
        } else {
            "PUT"
        };
        return Err(fault(format!("Empty {verb} request.")));
    }
    serde_json::from_slice(body).map_err(|e| {
        fault(format!(
            "An error occurred when deserializing the json body of a request: {e}."
        ))
    })
}

impl FcState {
    fn route(&mut self, method: &Method, path: &str, body: &[u8]) -> Answer {
        match self.dispatch(method, path, body) {
            Ok(answer) | Err(answer) => answer,
        }
    }

    fn pre_boot(&self) -> Result<(), Answer> {
        if self.started {
            Err(fault(FC_AFTER))
        } else {
            Ok(())
        }
    }

    fn post_boot(&self) -> Result<(), Answer> {
        if self.started {
            Ok(())
        } else {
            Err(fault(FC_BEFORE))
        }
    }

    fn dispatch(&mut self, method: &Method, path: &str, body: &[u8]) -> Result<Answer, Answer> {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (method.clone(), segments.as_slice()) {
            (Method::GET, [""]) => {
                let state = match (self.started, self.paused) {
                    (false, _) => "Not started",
                    (true, false) => "Running",
                    (true, true) => "Paused",
                };
                Ok((
                    StatusCode::OK,
                    Some(
                        json!({"id": "fake", "state": state, "vmm_version": "1.17.0-fake", "app_name": "Firecracker"}),
                    ),
                ))
            }
            (Method::GET, ["version"]) => Ok((
                StatusCode::OK,
                Some(json!({"firecracker_version": "1.17.0-fake"})),
            )),
            (Method::GET, ["vm", "config"]) => {
                let machine = self.machine.unwrap_or((1, 128));
                let boot = self.kernel.as_ref().map(
                    |k| json!({"kernel_image_path": k, "initrd_path": null, "boot_args": null}),
                );
                Ok((
                    StatusCode::OK,
                    Some(json!({
                        "balloon": null, "drives": [], "boot-source": boot,
                        "machine-config": {"vcpu_count": machine.0, "mem_size_mib": machine.1, "smt": false, "track_dirty_pages": false, "huge_pages": "None"},
                        "network-interfaces": [], "vsock": null, "logger": null, "metrics": null,
                    })),
                ))
            }
            (Method::PUT, ["machine-config"]) => {
                self.pre_boot()?;
                let mc: FcMachineConfig = fc_body(method, body)?;
                let odd = mc.vcpu_count > 1 && mc.vcpu_count % 2 == 1;
                if mc.vcpu_count == 0 || mc.vcpu_count > 32 || (mc.smt && odd) {
                    return Err(fault("Machine config error: The number of vCPUs must be greater than 0, less than 32 and must be 1 or an even number if SMT is enabled."));
                }
                if mc.mem_size_mib == 0 {
                    return Err(fault("Machine config error: The memory size (MiB) is either 0, or not a multiple of the configured page size."));
                }
                self.machine = Some((mc.vcpu_count, mc.mem_size_mib));
                self.configured = true;
                Ok(NO_CONTENT)
            }
            (Method::PUT, ["boot-source"]) => {
                self.pre_boot()?;
                let boot: FcBootSource = fc_body(method, body)?;
                if !Path::new(&boot.kernel_image_path).is_file() {
                    return Err(fault("Boot source error: The kernel file cannot be opened: No such file or directory (os error 2)"));
                }
                self.kernel = Some(boot.kernel_image_path);
                self.configured = true;
                Ok(NO_CONTENT)
            }
            (Method::PUT, ["drives", id]) => {
                self.pre_boot()?;
                let drive: FcDrive = fc_body(method, body)?;
                if drive.drive_id != *id {
                    return Err(fault(
                        "The id from the path does not match the id from the body!",
                    ));
                }
                let path = drive.path_on_host.unwrap_or_default();
                if !Path::new(&path).exists() {
                    return Err(fault(format!("Drive config error: Unable to create the virtio block device: Virtio backend error: Error manipulating the backing file: No such file or directory (os error 2) {path}")));
                }
                self.configured = true;
                Ok(NO_CONTENT)
            }
            (Method::PUT, ["network-interfaces", id]) => {
                self.pre_boot()?;
                let net: FcNet = fc_body(method, body)?;
                if net.iface_id != *id {
                    return Err(fault(
                        "The id from the path does not match the id from the body!",
                    ));
                }
                self.configured = true;
                Ok(NO_CONTENT)
            }
            (Method::PUT, ["vsock"]) => {
                self.pre_boot()?;
                let vsock: FcVsock = fc_body(method, body)?;
                if vsock.guest_cid < 3 {
                    return Err(fault("Vsock config error: Invalid guest CID"));
                }
                if Path::new(&vsock.uds_path).exists() {
                    return Err(fault("Vsock config error: Cannot create backend for vsock device: Error binding to the host-side Unix socket: Address already in use (os error 98)"));
                }
                self.configured = true;
                Ok(NO_CONTENT)
            }
            (Method::PUT, ["logger"]) => {
                let _: FcLogger = fc_body(method, body)?;
                Ok(NO_CONTENT)
            }
            (Method::PUT, ["metrics"]) => {
                let _: FcMetrics = fc_body(method, body)?;
                if self.metrics {
                    return Err(fault("Metrics error: Cannot initialize the metrics system due to bad user input: Reinitialization of metrics not allowed."));
                }
                self.metrics = true;
                Ok(NO_CONTENT)
            }
            (Method::PUT, ["actions"]) => {
                let action: FcAction = fc_body(method, body)?;
                match action.action_type {
                    FcActionType::InstanceStart => {
                        self.pre_boot()?;
                        let Some(kernel) = &self.kernel else {
                            return Err(fault("Start microvm error: Cannot start microvm without kernel configuration."));
                        };
                        if !is_elf(kernel) {
                            return Err(fault("Start microvm error: System configuration error: Cannot load kernel due to invalid memory configuration or invalid kernel image: Kernel Loader: failed to load bzImage kernel image: Kernel Loader: Invalid bzImage"));
                        }
                        // Bytes passed as MiB: the real one fails to mmap it.
                        if self.machine.is_some_and(|(_, mib)| mib > 1 << 20) {
                            return Err(fault("Start microvm error: Invalid Memory Configuration: Cannot create mmap region: Cannot allocate memory (os error 12)"));
                        }
                        self.started = true;
                    }
                    FcActionType::SendCtrlAltDel | FcActionType::FlushMetrics => {
                        self.post_boot()?
                    }
                }
                Ok(NO_CONTENT)
            }
            (Method::PATCH, ["vm"]) => {
                self.post_boot()?;
                let vm: FcVm = fc_body(method, body)?;
                self.paused = vm.state == FcVmState::Paused;
                Ok(NO_CONTENT)
            }
            (Method::PUT, ["snapshot", "create"]) => {
                self.post_boot()?;
                let snap: FcSnapshotCreate = fc_body(method, body)?;
                if !self.paused {
                    return Err(fault("Create snapshot error: Cannot save the microVM state: Operation not allowed: save/restore unavailable while running"));
                }
                for file in [&snap.snapshot_path, &snap.mem_file_path] {
                    std::fs::write(file, b"fake snapshot").map_err(|e| {
                        fault(format!("Create snapshot error: Cannot perform open on the snapshot backing file: {e}"))
                    })?;
                }
                Ok(NO_CONTENT)
            }
            (Method::PUT, ["snapshot", "load"]) => {
                self.pre_boot()?;
                let load: FcSnapshotLoad = fc_body(method, body)?;
                if self.configured {
                    return Err(fault("Load snapshot error: Loading a microVM snapshot not allowed after configuring boot-specific resources."));
                }
                if !Path::new(&load.snapshot_path).is_file() {
                    return Err(fault("Load snapshot error: Failed to restore from snapshot: Failed to get snapshot state from file: Failed to open snapshot file: No such file or directory (os error 2)"));
                }
                self.started = true;
                self.paused = !load.resume_vm.unwrap_or(false);
                Ok(NO_CONTENT)
            }
            _ => Err(fault(format!(
                "Invalid request method and/or path: {method} {}.",
                path.trim_start_matches('/')
            ))),
        }
    }
}

// ----------------------------------------------------------- Cloud Hypervisor

/// The VM configuration as Cloud Hypervisor parses it: unknown fields are
/// ignored, wrong types and unknown enum values are not.
#[derive(Deserialize)]
struct ChVmConfig {
    cpus: Option<ChCpus>,
    memory: Option<ChMemory>,
    payload: Option<ChPayload>,
    disks: Option<Vec<ChDisk>>,
    vsock: Option<ChVsock>,
    serial: Option<ChConsole>,
    console: Option<ChConsole>,
}

#[derive(Deserialize, Clone, Copy)]
struct ChCpus {
    boot_vcpus: u32,
    max_vcpus: u32,
}

#[derive(Deserialize)]
struct ChMemory {
    size: u64,
    hotplug_size: Option<u64>,
}

#[derive(Deserialize)]
struct ChPayload {
    kernel: Option<String>,
    firmware: Option<String>,
}

#[derive(Deserialize)]
struct ChDisk {
    path: Option<String>,
    id: Option<String>,
}

#[derive(Deserialize)]
struct ChVsock {
    cid: u64,
    socket: String,
}

#[derive(Deserialize)]
struct ChConsole {
    mode: ChMode,
    file: Option<String>,
}

#[derive(Deserialize, PartialEq)]
enum ChMode {
    Off,
    Pty,
    Tty,
    File,
    Socket,
    Null,
}

#[derive(Deserialize)]
struct ChResize {
    desired_vcpus: Option<u32>,
    desired_ram: Option<u64>,
}

#[derive(Deserialize)]
struct ChRemove {
    id: String,
}

#[derive(Deserialize)]
struct ChSnapshot {
    destination_url: String,
}

#[derive(Deserialize)]
struct ChRestore {
    source_url: String,
}

#[derive(Clone, Copy, PartialEq)]
enum ChVm {
    Created,
    Running,
    Paused,
}

#[derive(Default)]
struct ChState {
    /// The VM: its configuration as received (updated by resize and
    /// hot-plug) and its state.
    vm: Option<(Value, ChVm)>,
}

fn ch_error(status: StatusCode, parts: &[&str]) -> Answer {
    let mut all = vec!["Error from API"];
    all.extend_from_slice(parts);
    (status, Some(json!(all)))
}

const PAGE_SIZE: u64 = 4096;
const CH_PUT: &[&str] = &[
    "vmm.shutdown",
    "vm.create",
    "vm.boot",
    "vm.delete",
    "vm.pause",
    "vm.resume",
    "vm.shutdown",
    "vm.reboot",
    "vm.power-button",
    "vm.resize",
    "vm.add-disk",
    "vm.remove-device",
    "vm.snapshot",
    "vm.restore",
];
const CH_GET: &[&str] = &["vmm.ping", "vm.info", "vm.counters"];

/// Parses a Cloud Hypervisor request body as its API server does.
fn ch_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, Answer> {
    if body.is_empty() {
        return Err((StatusCode::BAD_REQUEST, None));
    }
    serde_json::from_slice(body).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            Some(json!(["Failed to deserialize JSON", e.to_string()])),
        )
    })
}

impl ChState {
    fn route(&mut self, method: &Method, path: &str, body: &[u8]) -> Answer {
        let Some(endpoint) = path.strip_prefix("/api/v1/") else {
            return (StatusCode::NOT_FOUND, Some(json!(["Not Found"])));
        };
        let known_put = CH_PUT.contains(&endpoint);
        let known_get = CH_GET.contains(&endpoint);
        if !known_put && !known_get {
            return (StatusCode::NOT_FOUND, Some(json!(["Not Found"])));
        }
        if (known_put && *method != Method::PUT) || (known_get && *method != Method::GET) {
            return (StatusCode::BAD_REQUEST, Some(json!(["Bad Request"])));
        }
        match self.dispatch(endpoint, body) {
            Ok(answer) | Err(answer) => answer,
        }
    }

    fn created(&mut self, context: &str) -> Result<&mut (Value, ChVm), Answer> {
        self.vm
            .as_mut()
            .ok_or_else(|| ch_error(StatusCode::NOT_FOUND, &[context, "VM is not created"]))
    }

    fn dispatch(&mut self, endpoint: &str, body: &[u8]) -> Result<Answer, Answer> {
        let not_running = |context: &str| {
            ch_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &[context, "VM is not running"],
            )
        };
        match endpoint {
            "vmm.ping" => Ok((
                StatusCode::OK,
                Some(
                    json!({"version": "53.0-fake", "pid": std::process::id(), "features": ["kvm"]}),
                ),
            )),
            "vmm.shutdown" => {
                self.vm = None;
                Ok((StatusCode::OK, None))
            }
            "vm.create" => {
                let _: ChVmConfig = ch_body(body)?;
                if self.vm.is_some() {
                    return Err(ch_error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &["The VM could not be created", "VM is already created"],
                    ));
                }
                let config: Value = serde_json::from_slice(body).expect("parsed above");
                self.vm = Some((config, ChVm::Created));
                Ok(NO_CONTENT)
            }
            "vm.info" => {
                let (config, state) = self.vm.as_ref().ok_or_else(|| {
                    ch_error(
                        StatusCode::NOT_FOUND,
                        &["The VM info is not available", "VM is not created"],
                    )
                })?;
                let state = match state {
                    ChVm::Created => "Created",
                    ChVm::Running => "Running",
                    ChVm::Paused => "Paused",
                };
                Ok((
                    StatusCode::OK,
                    Some(json!({"config": config, "state": state})),
                ))
            }
            "vm.boot" => {
                let ctx = "The VM could not boot";
                let Some((config, state)) = self.vm.as_mut() else {
                    return Err(ch_error(
                        StatusCode::NOT_FOUND,
                        &[ctx, "VM config is missing"],
                    ));
                };
                if *state != ChVm::Created {
                    return Err(ch_error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &[ctx, "VM is already booted"],
                    ));
                }
                let parsed: ChVmConfig =
                    serde_json::from_value(config.clone()).expect("checked at create");
                boot_check(&parsed)?;
                *state = ChVm::Running;
                Ok(NO_CONTENT)
            }
            "vm.pause" => {
                let (_, state) = self.created("The VM could not be paused")?;
                if *state != ChVm::Running {
                    return Err(not_running("The VM could not be paused"));
                }
                *state = ChVm::Paused;
                Ok(NO_CONTENT)
            }
            "vm.resume" => {
                let (_, state) = self.created("The VM could not resume")?;
                if *state != ChVm::Paused {
                    return Err(not_running("The VM could not resume"));
                }
                *state = ChVm::Running;
                Ok(NO_CONTENT)
            }
            "vm.shutdown" | "vm.power-button" | "vm.reboot" => {
                let ctx = match endpoint {
                    "vm.shutdown" => "The VM could not shutdown",
                    "vm.reboot" => "The VM could not reboot",
                    _ => "Error triggering power button",
                };
                let (_, state) = self.created(ctx)?;
                if *state == ChVm::Created {
                    return Err(not_running(ctx));
                }
                if endpoint == "vm.shutdown" {
                    *state = ChVm::Created;
                }
                Ok(NO_CONTENT)
            }
            "vm.resize" => {
                let resize: ChResize = ch_body(body)?;
                let ctx = "The VM could not be resized";
                let (config, _) = self.created(ctx)?;
                if let Some(vcpus) = resize.desired_vcpus {
                    let max = config["cpus"]["max_vcpus"].as_u64().unwrap_or(1);
                    if u64::from(vcpus) > max {
                        return Err(ch_error(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            &[
                                ctx,
                                "Error from CPU manager",
                                "Requested vCPUs exceed maximum",
                            ],
                        ));
                    }
                    config["cpus"]["boot_vcpus"] = json!(vcpus);
                }
                if let Some(ram) = resize.desired_ram {
                    if ram % PAGE_SIZE != 0 {
                        return Err(ch_error(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            &[ctx, "Memory manager error", "Memory size is misaligned with default page size or its hugepage size"],
                        ));
                    }
                }
                Ok(NO_CONTENT)
            }
            "vm.add-disk" => {
                let disk: ChDisk = ch_body(body)?;
                let ctx = "The disk could not be added to the VM";
                let (config, state) = self.created(ctx)?;
                let disks = config
                    .as_object_mut()
                    .expect("config is an object")
                    .entry("disks")
                    .or_insert_with(|| json!([]));
                let id = disk
                    .id
                    .clone()
                    .unwrap_or_else(|| format!("_disk{}", disks.as_array().map_or(0, Vec::len)));
                if disks
                    .as_array()
                    .is_some_and(|d| d.iter().any(|d| d["id"] == json!(id)))
                {
                    return Err(ch_error(
                        StatusCode::CONFLICT,
                        &[
                            ctx,
                            "Failed to validate config",
                            &format!("Identifier {id} is not unique"),
                        ],
                    ));
                }
                if !disk.path.as_deref().is_some_and(|p| Path::new(p).exists()) {
                    return Err(ch_error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &[ctx, "Error from device manager", "Cannot open disk path"],
                    ));
                }
                let mut entry: Value = serde_json::from_slice(body).expect("parsed above");
                entry["id"] = json!(id);
                disks.as_array_mut().expect("disks is an array").push(entry);
                if *state == ChVm::Created {
                    Ok(NO_CONTENT)
                } else {
                    Ok((
                        StatusCode::OK,
                        Some(json!({"id": id, "bdf": "0000:00:03.0"})),
                    ))
                }
            }
            "vm.remove-device" => {
                let remove: ChRemove = ch_body(body)?;
                let ctx = "The device could not be removed from the VM";
                let (config, _) = self.created(ctx)?;
                let disks = config["disks"].as_array_mut();
                let Some(disks) = disks.filter(|d| d.iter().any(|d| d["id"] == json!(remove.id)))
                else {
                    return Err(ch_error(
                        StatusCode::NOT_FOUND,
                        &[
                            ctx,
                            "Error from device manager",
                            &format!(
                                "Failed to find device corresponding to the given identifier: {}",
                                remove.id
                            ),
                        ],
                    ));
                };
                disks.retain(|d| d["id"] != json!(remove.id));
                Ok(NO_CONTENT)
            }
            "vm.snapshot" => {
                let snap: ChSnapshot = ch_body(body)?;
                let ctx = "The VM could not be snapshotted";
                let (config, state) = self.created(ctx)?;
                match state {
                    ChVm::Created => return Err(not_running(ctx)),
                    ChVm::Running => {
                        return Err(ch_error(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            &[
                                ctx,
                                "Cannot snapshot VM",
                                "Failed to snapshot migratable component",
                                "Trying to snapshot while VM is running",
                            ],
                        ))
                    }
                    ChVm::Paused => {}
                }
                let dir = snap
                    .destination_url
                    .strip_prefix("file://")
                    .unwrap_or_default();
                std::fs::write(Path::new(dir).join("config.json"), config.to_string()).map_err(
                    |e| {
                        ch_error(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            &[ctx, "Cannot snapshot VM", &e.to_string()],
                        )
                    },
                )?;
                Ok(NO_CONTENT)
            }
            "vm.restore" => {
                let restore: ChRestore = ch_body(body)?;
                let ctx = "The VM could not be restored";
                if self.vm.is_some() {
                    return Err(ch_error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &[ctx, "VM is already created"],
                    ));
                }
                let dir = restore
                    .source_url
                    .strip_prefix("file://")
                    .unwrap_or_default();
                let config = std::fs::read_to_string(Path::new(dir).join("config.json"))
                    .ok()
                    .and_then(|t| serde_json::from_str(&t).ok())
                    .ok_or_else(|| {
                        ch_error(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            &[
                                ctx,
                                "Cannot restore VM",
                                "Failed to receive migratable component snapshot",
                            ],
                        )
                    })?;
                self.vm = Some((config, ChVm::Paused));
                Ok(NO_CONTENT)
            }
            "vm.delete" => {
                self.vm = None;
                Ok(NO_CONTENT)
            }
            _ => Err((StatusCode::NOT_FOUND, Some(json!(["Not Found"])))),
        }
    }
}

/// What `vm.boot` checks, in the order v53 does.
fn boot_check(config: &ChVmConfig) -> Result<(), Answer> {
    let ctx = "The VM could not boot";
    let invalid = |why: &str| {
        ch_error(
            StatusCode::BAD_REQUEST,
            &[ctx, "Failed to validate config", why],
        )
    };
    let payload = config.payload.as_ref();
    if !payload.is_some_and(|p| p.kernel.is_some() || p.firmware.is_some()) {
        return Err(invalid("Payload configuration is not bootable"));
    }
    if let Some(cpus) = config.cpus {
        if cpus.max_vcpus < cpus.boot_vcpus {
            return Err(invalid(&format!(
                "Max CPUs ({}) lower than boot CPUs ({})",
                cpus.max_vcpus, cpus.boot_vcpus
            )));
        }
    }
    if let Some(vsock) = &config.vsock {
        if vsock.cid < 3 {
            return Err(invalid(&format!("{} is a special VSOCK CID", vsock.cid)));
        }
    }
    for console in [&config.serial, &config.console].into_iter().flatten() {
        if console.mode == ChMode::File && console.file.is_none() {
            // v53 panics here and the process exits; a 500 is as close as a
            // server that stays up can get.
            return Err(ch_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &[
                    "API response receive error",
                    "receiving on a closed channel",
                ],
            ));
        }
    }
    let fail = |parts: &[&str]| {
        let mut all = vec![ctx];
        all.extend_from_slice(parts);
        ch_error(StatusCode::INTERNAL_SERVER_ERROR, &all)
    };
    if let Some(memory) = &config.memory {
        let misaligned =
            memory.size % PAGE_SIZE != 0 || memory.hotplug_size.is_some_and(|h| h % PAGE_SIZE != 0);
        if misaligned {
            return Err(fail(&[
                "Memory manager error",
                "Memory size is misaligned with default page size or its hugepage size",
            ]));
        }
    }
    for disk in config.disks.iter().flatten() {
        if !disk.path.as_deref().is_some_and(|p| Path::new(p).exists()) {
            return Err(fail(&[
                "Error from device manager",
                "Cannot open disk path",
            ]));
        }
    }
    if let Some(kernel) = payload.and_then(|p| p.kernel.as_deref()) {
        if !Path::new(kernel).is_file() {
            return Err(fail(&[
                "Cannot open kernel file",
                "No such file or directory (os error 2)",
            ]));
        }
        if !is_elf(kernel) {
            return Err(fail(&[
                "Cannot load the kernel into memory",
                "Kernel Loader: failed to load bzImage kernel image: Kernel Loader: Invalid bzImage",
            ]));
        }
    }
    Ok(())
}
