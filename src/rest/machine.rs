//! What REST says about a machine: the original Hyperfleet's fields at the
//! top level (`id` ... `updated_at`, `error_message`), then ours (`config`,
//! `error`, `exit_code`, the `*_ms` times). The same types give the OpenAPI
//! schemas, so the document describes exactly what is sent.
//!
//! `container_id` and `pid` are live facts only the runtime knows. A single
//! machine (GET, and the reply of every action) asks the runtime for them,
//! within [`LIVE_FACTS_DEADLINE`]; a list never does (one engine call per
//! machine would make a list of 1,000 cost seconds): it shows what the
//! runtime already holds (the container it made, the VMM it supervises),
//! null where that is nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use utoipa::ToSchema;

use crate::core::{Core, Machine};
use crate::model::spec::{NetworkSpec, PortMapping, VolumeMount};
use crate::model::{MachineRecord, MachineSpec, RuntimeKind, Status};

/// How long a single machine's reply waits for the runtime's live facts
/// before it goes without them.
pub const LIVE_FACTS_DEADLINE: Duration = Duration::from_secs(2);

/// Live facts of the runtime, when asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Live {
    pub container_id: Option<String>,
    pub pid: Option<u32>,
}

impl Live {
    /// What a list shows: the facts the machine's runtime holds already.
    pub fn known(known: crate::runtime::Known, rec: &MachineRecord) -> Live {
        Live {
            container_id: known
                .container_id
                .filter(|_| rec.spec.runtime_type() == RuntimeKind::Docker),
            pid: known.pid,
        }
    }
}

/// A machine as REST returns it.
#[derive(Serialize, ToSchema)]
#[schema(as = Machine)]
pub struct MachineJson<'a> {
    /// Stable id (a UUID); routes accept it or the name.
    pub id: &'a str,
    pub name: &'a str,
    #[schema(value_type = StatusName)]
    pub status: &'static str,
    #[schema(value_type = RuntimeType)]
    pub runtime_type: &'static str,
    pub vcpu_count: u32,
    pub mem_size_mib: u64,
    /// VMs only; null for containers.
    pub kernel_image_path: Option<&'a str>,
    pub kernel_args: Option<&'a str>,
    pub rootfs_path: Option<&'a str>,
    #[schema(value_type = Option<NetworkJson>)]
    pub network: Option<&'a NetworkSpec>,
    /// Containers only; null for VMs.
    pub image: Option<&'a str>,
    /// The Docker container of the current or last run.
    pub container_id: Option<String>,
    /// The workload's (or VMM's) pid while it runs. In lists, a
    /// container's is null (only Docker knows it).
    pub pid: Option<u32>,
    /// ISO-8601, UTC.
    #[schema(value_type = String)]
    pub created_at: Iso,
    #[schema(value_type = String)]
    pub updated_at: Iso,
    /// The last failure, when the machine is `failed`; null otherwise.
    pub error_message: Option<&'a str>,
    /// The whole spec, as the `config` file shows it.
    #[schema(value_type = MachineConfig)]
    pub config: &'a MachineSpec,
    /// The last failure of any operation, one line; empty when none.
    pub error: &'a str,
    /// Exit code of the last run, if it ended with one.
    pub exit_code: Option<i64>,
    /// How the last run ended, in words.
    #[schema(value_type = Option<String>)]
    pub exit: Option<InWords>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub started_at_ms: Option<i64>,
    /// ISO-8601, UTC: when the current or last run started.
    #[schema(value_type = Option<String>)]
    pub started_at: Option<Iso>,
}

impl<'a> MachineJson<'a> {
    pub fn new(rec: &'a MachineRecord, live: Live) -> MachineJson<'a> {
        let vm = rec.spec.vm_spec();
        let path = |p: Option<&'a std::path::PathBuf>| p.and_then(|p| p.to_str());
        MachineJson {
            id: &rec.id,
            name: rec.name.as_str(),
            status: rec.status.as_str(),
            runtime_type: rec.spec.runtime_type().as_str(),
            vcpu_count: rec.spec.vcpu_count,
            mem_size_mib: rec.spec.mem_size_mib,
            kernel_image_path: path(vm.and_then(|v| v.kernel_image_path.as_ref())),
            kernel_args: vm.and_then(|v| v.kernel_args.as_deref()),
            rootfs_path: path(vm.and_then(|v| v.rootfs_path.as_ref())),
            network: vm.and_then(|v| v.network.as_ref()),
            image: rec.spec.container_spec().and_then(|c| c.image.as_deref()),
            container_id: live.container_id,
            pid: live.pid,
            created_at: Iso(rec.created_ms),
            updated_at: Iso(rec.updated_ms),
            error_message: (rec.status == Status::Failed && !rec.error.is_empty())
                .then_some(rec.error.as_str()),
            config: &rec.spec,
            error: &rec.error,
            exit_code: rec.exit.and_then(|e| e.code()),
            exit: rec.exit.map(InWords),
            created_at_ms: rec.created_ms,
            updated_at_ms: rec.updated_ms,
            started_at_ms: rec.started_ms,
            started_at: rec.started_ms.map(Iso),
        }
    }
}

/// Asks the runtime for a machine's container id and pid, giving up
/// quietly (nulls) on a runtime that is slow, down or has nothing.
pub async fn live_facts(core: &Arc<Core>, m: &Arc<Machine>) -> Live {
    if m.status() == Status::Pending {
        return Live::default();
    }
    let info = match tokio::time::timeout(LIVE_FACTS_DEADLINE, core.info(m)).await {
        Ok(Ok(info)) => info,
        Ok(Err(e)) => {
            tracing::debug!(machine = %m.name(), "rest: no live facts: {}", e.report());
            return Live::default();
        }
        Err(_) => return Live::default(),
    };
    let rt = &info["runtime_info"];
    let docker = m.with_record(|r| r.spec.runtime_type()) == RuntimeKind::Docker;
    Live {
        container_id: rt["handle"].as_str().filter(|_| docker).map(str::to_owned),
        pid: rt["pid"].as_u64().and_then(|p| u32::try_from(p).ok()),
    }
}

/// One machine, with its live facts, as JSON bytes.
pub async fn render_one(core: &Arc<Core>, m: &Arc<Machine>) -> Vec<u8> {
    let live = live_facts(core, m).await;
    m.with_record(|rec| serde_json::to_vec(&MachineJson::new(rec, live)))
        .unwrap_or_default()
}

/// List items already rendered, by machine: a machine whose record is
/// equal to the one its item was rendered from is copied, not serialized
/// again (a list of 1,000 is mostly copies). Exact, since it compares whole
/// records; only lists use it, as their items carry no live facts.
#[derive(Default)]
pub struct ListCache {
    /// By machine seq: the record an item was rendered from, and the item.
    items: Mutex<HashMap<u64, Rendered>>,
}

type Rendered = (MachineRecord, Live, Box<[u8]>);

impl ListCache {
    /// Appends the list item of each of `machines` whose record `keep`
    /// accepts to `out`, comma-separated. `total` is how many machines
    /// exist: past that many items, those of deleted machines are dropped.
    pub fn render<'m>(
        &self,
        machines: impl Iterator<Item = &'m Arc<Machine>>,
        keep: impl Fn(&MachineRecord) -> bool,
        total: usize,
        out: &mut Vec<u8>,
    ) {
        let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        let mut first = true;
        let mut listed = Vec::new();
        for m in machines {
            // Taken before the record is: no lock is held across the two.
            let known = m.known();
            m.with_record(|rec| {
                if !keep(rec) {
                    return;
                }
                listed.push(rec.seq);
                if !first {
                    out.push(b',');
                }
                first = false;
                let live = Live::known(known, rec);
                match items.get(&rec.seq) {
                    Some((was, had, json)) if was == rec && *had == live => {
                        out.extend_from_slice(json)
                    }
                    _ => {
                        let json = serde_json::to_vec(&MachineJson::new(rec, live.clone()))
                            .unwrap_or_default();
                        out.extend_from_slice(&json);
                        items.insert(rec.seq, (rec.clone(), live, json.into_boxed_slice()));
                    }
                }
            });
        }
        if items.len() > total {
            // Some machines are gone; keep what this list showed.
            let listed: HashSet<u64> = listed.into_iter().collect();
            items.retain(|seq, _| listed.contains(seq));
        }
    }
}

/// A time rendered as ISO-8601 when serialized, without allocating: a list
/// of 1,000 machines has 2,000 of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Iso(pub i64);

impl Serialize for Iso {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let buf = crate::model::time::iso_bytes(self.0);
        s.serialize_str(std::str::from_utf8(&buf).unwrap_or_default())
    }
}

/// How a run ended, serialized as its description.
#[derive(Debug, Clone, Copy)]
pub struct InWords(pub crate::model::Exit);

impl Serialize for InWords {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

// ----- types that exist for the OpenAPI document only -----

/// A machine's status.
#[derive(ToSchema)]
#[schema(as = StatusName)]
#[allow(dead_code)]
pub enum StatusName {
    #[schema(rename = "pending")]
    Pending,
    #[schema(rename = "starting")]
    Starting,
    #[schema(rename = "running")]
    Running,
    #[schema(rename = "paused")]
    Paused,
    #[schema(rename = "stopping")]
    Stopping,
    #[schema(rename = "stopped")]
    Stopped,
    #[schema(rename = "failed")]
    Failed,
}

/// The isolation technology a machine runs under.
#[derive(ToSchema)]
#[allow(dead_code)]
pub enum RuntimeType {
    #[schema(rename = "docker")]
    Docker,
    #[schema(rename = "firecracker")]
    Firecracker,
    #[schema(rename = "cloud-hypervisor")]
    CloudHypervisor,
}

/// A VM's network: an existing TAP device on the host and the guest's side.
#[derive(ToSchema)]
#[schema(as = Network)]
#[allow(dead_code)]
pub struct NetworkJson {
    tap_device: String,
    tap_ip: Option<String>,
    guest_ip: Option<String>,
    guest_mac: Option<String>,
}

/// A machine's spec: the original's create body less `name`. Fields of the
/// other kind of runtime are refused unless blank (`""`, null, `[]`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct MachineConfig {
    /// Default `docker`.
    runtime_type: Option<RuntimeType>,
    /// 1..=256; default 1.
    vcpu_count: Option<u32>,
    /// 6..=4194304; default 512.
    mem_size_mib: Option<u64>,
    /// `no`, `always`, `on-failure` or `unless-stopped`.
    restart: Option<String>,
    /// Docker: the image; required to start.
    image: Option<String>,
    cmd: Option<Vec<String>>,
    /// An array of strings, or one string.
    entrypoint: Option<Vec<String>>,
    env: Option<BTreeMap<String, String>>,
    #[schema(value_type = Option<Vec<PortJson>>)]
    ports: Option<Vec<PortMapping>>,
    #[schema(value_type = Option<Vec<VolumeJson>>)]
    volumes: Option<Vec<VolumeMount>>,
    working_dir: Option<String>,
    user: Option<String>,
    privileged: Option<bool>,
    /// VMs: an uncompressed ELF kernel with a PVH entry; required to start.
    kernel_image_path: Option<String>,
    kernel_args: Option<String>,
    initrd_path: Option<String>,
    rootfs_path: Option<String>,
    disks: Option<Vec<DiskJson>>,
    network: Option<NetworkJson>,
    /// Cloud Hypervisor only.
    max_vcpus: Option<u32>,
    /// Cloud Hypervisor only.
    hotplug_mem_mib: Option<u64>,
    vmm_binary: Option<String>,
    agent_port: Option<u32>,
}

/// The create body: a spec and the machine's name.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CreateMachine {
    /// 1-63 of `A-Z a-z 0-9 - _ .`, starting with a letter or digit.
    name: String,
    #[serde(flatten)]
    config: MachineConfig,
}

#[derive(ToSchema)]
#[schema(as = Port)]
#[allow(dead_code)]
pub struct PortJson {
    host_port: u16,
    container_port: u16,
    /// `tcp` (default), `udp` or `sctp`.
    protocol: Option<String>,
}

#[derive(ToSchema)]
#[schema(as = Volume)]
#[allow(dead_code)]
pub struct VolumeJson {
    host_path: String,
    container_path: String,
    read_only: Option<bool>,
}

#[derive(ToSchema)]
#[schema(as = Disk)]
#[allow(dead_code)]
pub struct DiskJson {
    path: String,
    read_only: Option<bool>,
    id: Option<String>,
}

/// A command to run in a running machine.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ExecBody {
    cmd: Vec<String>,
    /// Seconds; default 30.
    timeout: Option<f64>,
    env: Option<BTreeMap<String, String>>,
    working_dir: Option<String>,
    user: Option<String>,
}

/// What a finished command left.
#[derive(Serialize, ToSchema)]
pub struct ExecResult<'a> {
    pub exit_code: i64,
    pub stdout: std::borrow::Cow<'a, str>,
    pub stderr: std::borrow::Cow<'a, str>,
    /// More than 16 MiB was printed; the rest was dropped.
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
}

/// Whether each runtime can be used on this host.
#[derive(Serialize, ToSchema)]
#[schema(as = Health)]
pub struct HealthJson {
    /// Always `ok` when the daemon answers.
    pub status: &'static str,
    pub runtimes: BTreeMap<&'static str, RuntimeHealth>,
}

#[derive(Serialize, ToSchema)]
pub struct RuntimeHealth {
    pub available: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What kind of change an event tells of.
#[derive(ToSchema)]
#[allow(dead_code)]
pub enum EventType {
    #[schema(rename = "created")]
    Created,
    #[schema(rename = "status")]
    Status,
    #[schema(rename = "error")]
    Error,
    #[schema(rename = "config")]
    Config,
    #[schema(rename = "exec")]
    Exec,
    #[schema(rename = "deleted")]
    Deleted,
    #[schema(rename = "runtime")]
    Runtime,
    #[schema(rename = "dropped")]
    Dropped,
}

/// One change (`GET /events`, one a line). `type` says which; the other
/// fields are those of its type. Events of a machine name it (`machine`,
/// `id`); `runtime` events name their runtime; a `dropped` marker, sent
/// to a reader that fell behind in place of what it lost, names nothing.
#[derive(ToSchema)]
#[schema(as = Event)]
#[allow(dead_code)]
pub struct EventJson {
    #[serde(rename = "type")]
    kind: EventType,
    /// ISO-8601, UTC, milliseconds.
    time: String,
    /// The machine's name.
    machine: Option<String>,
    /// The machine's id.
    id: Option<String>,
    /// `status`: the status before...
    from: Option<StatusName>,
    /// ...and after.
    to: Option<StatusName>,
    /// `error`: the failure, one line, as the machine's `error` has it.
    message: Option<String>,
    /// `config`: the runtime before the change (`runtime` is after).
    runtime_from: Option<RuntimeType>,
    /// `config`: the runtime after the change; `deleted`: the machine's
    /// runtime; `runtime`: the runtime the event is about.
    runtime: Option<RuntimeType>,
    /// `exec`: the command's exit code...
    exit_code: Option<i64>,
    /// ...and whether it was killed at its timeout.
    timed_out: Option<bool>,
    /// `deleted`: the status the machine had.
    status: Option<StatusName>,
    /// `runtime`: whether it can be used now...
    available: Option<bool>,
    /// ...and what it says of itself, or why not.
    detail: Option<String>,
    /// `dropped`: how many events this reader lost.
    count: Option<u64>,
}

/// Every error: a stable code and the whole chain of causes.
#[derive(Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorJson<'a> {
    /// `not_found`, `validation_error`, `unauthorized`...
    pub error: &'a str,
    pub message: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Exit, MachineName};
    use serde_json::{json, Value};

    #[test]
    fn timestamps_are_iso8601_utc() {
        use crate::model::time::iso8601;
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(iso8601(1_795_597_199_999), "2026-11-25T08:59:59.999Z");
        assert_eq!(iso8601(-1), "1969-12-31T23:59:59.999Z");
    }

    fn record(spec: &str, status: Status) -> MachineRecord {
        MachineRecord {
            seq: 1,
            id: "8d0c7c5e-0000-4000-8000-000000000000".into(),
            name: MachineName::parse(b"web").unwrap(),
            spec: MachineSpec::parse(spec.as_bytes()).unwrap(),
            status,
            error: "start: boom".into(),
            errors: Vec::new(),
            exit: Some(Exit::Code(3)),
            created_ms: 0,
            updated_ms: 1000,
            started_ms: None,
        }
    }

    #[test]
    fn a_machine_has_the_originals_fields_and_ours() {
        let rec = record(r#"{"image":"nginx","vcpu_count":2}"#, Status::Failed);
        let live = Live {
            container_id: Some("abc".into()),
            pid: None,
        };
        let v = serde_json::to_value(MachineJson::new(&rec, live)).unwrap();
        assert_eq!(v["runtime_type"], "docker");
        assert_eq!(v["vcpu_count"], 2);
        assert_eq!(v["image"], "nginx");
        assert_eq!(v["kernel_image_path"], serde_json::Value::Null);
        assert_eq!(v["network"], serde_json::Value::Null);
        assert_eq!(v["container_id"], "abc");
        assert_eq!(v["updated_at"], "1970-01-01T00:00:01.000Z");
        assert_eq!(v["error_message"], "start: boom");
        assert_eq!(v["exit_code"], 3);
        assert_eq!(v["config"]["image"], "nginx");

        let vm = record(
            r#"{"runtime_type":"firecracker","kernel_image_path":"/k","kernel_args":"console=ttyS0","network":{"tap_device":"tap0","guest_mac":"02:00:00:00:00:01"}}"#,
            Status::Stopped,
        );
        let v = serde_json::to_value(MachineJson::new(&vm, Live::default())).unwrap();
        assert_eq!(v["kernel_image_path"], "/k");
        assert_eq!(v["kernel_args"], "console=ttyS0");
        assert_eq!(v["network"]["tap_device"], "tap0");
        assert_eq!(v["image"], serde_json::Value::Null);
        assert_eq!(v["error_message"], serde_json::Value::Null, "not failed");
    }

    #[test]
    fn every_documented_exec_field_is_accepted() {
        let schema = serde_json::to_value(<ExecBody as utoipa::PartialSchema>::schema()).unwrap();
        let sample = |ty: &Value| match ty {
            t if t.to_string().contains("array") => json!(["true"]),
            t if t.to_string().contains("number") => json!(5),
            t if t.to_string().contains("object") => json!({"A": "1"}),
            _ => json!("x"),
        };
        let mut body = serde_json::Map::new();
        for (name, prop) in schema["properties"].as_object().unwrap() {
            let v = if name == "working_dir" {
                json!("/")
            } else {
                sample(&prop["type"])
            };
            body.insert(name.clone(), v);
        }
        assert!(body.len() >= 5);
        crate::model::ExecCommand::parse(Value::Object(body.clone()).to_string().as_bytes())
            .unwrap_or_else(|e| panic!("{body:?}: {e}"));
    }

    #[test]
    fn schema_enums_name_every_status_and_runtime() {
        let names = |schema: utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>| {
            let v = serde_json::to_value(schema).unwrap();
            v["enum"].clone()
        };
        let statuses: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names(<StatusName as utoipa::PartialSchema>::schema()),
            serde_json::json!(statuses)
        );
        let kinds: Vec<&str> = RuntimeKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            names(<RuntimeType as utoipa::PartialSchema>::schema()),
            serde_json::json!(kinds)
        );
        assert_eq!(
            names(<EventType as utoipa::PartialSchema>::schema()),
            serde_json::json!(crate::model::Happening::KINDS)
        );
    }
}
