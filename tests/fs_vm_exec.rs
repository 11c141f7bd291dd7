//! exec in a microVM goes through its guest agent, over the VMM's hybrid
//! vsock socket, and behaves as in a container: `exec`, `exec.stderr`,
//! `exec.exit`, the JSON form, timeouts, `hyperfleet exec` and its exit
//! codes, streams with stdin. The host's KVM cannot boot a guest with an
//! agent in it, so a real VMM runs the spinning test kernel and its vsock
//! socket is served by a stand-in that speaks the VMM's `CONNECT`/`OK`
//! handshake and relays to the agent running on the host. Against the real
//! VMMs alone, no agent answers: exec fails within its deadline, clearly,
//! and the VM stays healthy.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::kernel::test_kernel;
use common::vm::{self, Vmm};
use common::vsock_relay::{RelayMode, VsockRelay};
use common::{expect_errno, Daemon};

const AGENT: &str = env!("CARGO_BIN_EXE_hyperfleet-agent");

/// The agent on the host, on a Unix socket; killed on drop.
struct HostAgent {
    socket: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl HostAgent {
    fn start() -> HostAgent {
        let dir = tempfile::Builder::new()
            .prefix("hf-agent-")
            .tempdir()
            .unwrap();
        let socket = dir.path().join("agent.sock");
        let child = Command::new(AGENT)
            .arg("--listen")
            .arg(format!("unix:{}", socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn hyperfleet-agent");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "the agent never listened");
            std::thread::sleep(Duration::from_millis(10));
        }
        HostAgent {
            socket,
            child,
            _dir: dir,
        }
    }
}

impl Drop for HostAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn running_vm(d: &Daemon, kind: Vmm, name: &str) {
    vm::create(d, name, &vm::config(kind, &test_kernel(), ""));
    d.ok(&format!("echo start > machines/{name}/ctl"));
    assert_eq!(vm::status(d, name), "running");
}

/// Puts the stand-in on the machine's vsock socket, in place of the VMM's.
fn relay_to(d: &Daemon, name: &str, target: &Path, rt: &tokio::runtime::Runtime) -> VsockRelay {
    let _in_rt = rt.enter();
    let socket = vm::run_dir(d, name).join("vsock.sock");
    VsockRelay::start(
        &socket,
        RelayMode::Relay {
            target: target.to_owned(),
            port: 52,
        },
    )
}

#[test]
fn exec_in_a_vm_behaves_as_in_a_container() {
    let Some(d) = vm::daemon(Vmm::Firecracker) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let agent = HostAgent::start();
    running_vm(&d, Vmm::Firecracker, "vm");
    let _relay = relay_to(&d, "vm", &agent.socket, &rt);

    d.ok("/bin/echo 'wait agent 20' > machines/vm/ctl");
    assert_eq!(vm::info(&d, "vm")["agent"], "ready");

    // The plain file, its stderr and exit files.
    let out = d.ok(
        "echo 'sh -c \"echo out; echo err >&2; exit 3\"' > machines/vm/exec && \
         cat machines/vm/exec machines/vm/exec.stderr machines/vm/exec.exit",
    );
    assert_eq!(out, "out\nerr\n3\n");
    // The JSON form, on one open file, with env and a working dir.
    let out = d.ok(
        r#"exec 3<>machines/vm/exec
           echo '{"cmd":["sh","-c","echo $GREETING $(pwd)"],"env":{"GREETING":"hi"},"working_dir":"/tmp","result":"json"}' >&3
           cat <&3"#,
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["stdout"], "hi /tmp\n");
    assert_eq!(v["exit_code"], 0);
    // A timeout: ETIMEDOUT, what was printed kept, the command gone.
    let stderr = d.fails(
        r#"/bin/echo '{"cmd":["sh","-c","echo partial; sleep 300"],"timeout":1}' > machines/vm/exec"#,
    );
    expect_errno(&stderr, "Connection timed out");
    assert_eq!(d.read("machines/vm/exec"), "partial\n");
    assert!(d
        .read("machines/vm/error")
        .contains("did not finish within 1s"));

    // `hyperfleet exec`, with its exit codes and stdin.
    let code = |s: &str| d.sh(s).status.code();
    assert_eq!(code("$HF exec vm sh -c 'exit 7'"), Some(7));
    assert_eq!(code("$HF exec --timeout 1 vm sleep 300"), Some(124));
    // As in a shell: no such command is 127, the same as `exec` reports.
    assert_eq!(code("$HF exec vm no-such-command"), Some(127));
    assert_eq!(d.ok("printf 'a\\nb\\n' | $HF exec vm wc -l").trim(), "2");
    let out = d.sh("$HF exec vm sh -c 'echo o; echo e >&2'");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "o\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "e\n");

    // Files in and out through the agent's own transfer (no cat in the guest).
    let out = d.ok(
        "t=$(mktemp -d) && head -c 3000000 /dev/urandom > $t/a && chmod 751 $t/a && \
         $HF cp $t/a vm:$t/in && $HF cp vm:$t/in $t/b && cmp $t/a $t/b && \
         stat -c %a $t/in && rm -rf $t",
    );
    assert_eq!(out, "751\n");
    let out = d.sh("$HF cp vm:/nonexistent/file /tmp/x");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("No such file"),
        "{out:?}"
    );

    d.ok("echo kill > machines/vm/ctl");
    assert_eq!(code("$HF exec vm true"), Some(125));
    let stderr = d.fails("/bin/echo 'true' > machines/vm/exec");
    expect_errno(&stderr, "Invalid argument");
    d.ok("rmdir machines/vm");
}

/// No agent in the guest: the failure is quick, names the port, and leaves
/// the VM as it was.
fn no_agent(kind: Vmm) {
    let Some(d) = vm::daemon(kind) else {
        return;
    };
    running_vm(&d, kind, "vm");
    let pid = vm::vmm_pid(&d, "vm");
    let began = Instant::now();
    let stderr = d.fails("/bin/echo uname > machines/vm/exec");
    expect_errno(&stderr, "No route to host");
    let error = vm::error(&d, "vm");
    assert!(error.contains("did not answer on vsock port 52"), "{error}");
    // Within the agent's deadline (10 s), with room for a loaded host.
    assert!(
        began.elapsed() < Duration::from_secs(30),
        "{:?}",
        began.elapsed()
    );
    let stderr = d.fails("/bin/echo 'wait agent 1' > machines/vm/ctl");
    expect_errno(&stderr, "No route to host");
    assert_eq!(d.sh("$HF exec vm true").status.code(), Some(125));
    // The VM is untouched.
    assert_eq!(vm::status(&d, "vm"), "running");
    assert_eq!(vm::vmm_pid(&d, "vm"), pid);
    assert!(vm::alive(pid));
    assert_ne!(vm::info(&d, "vm")["agent"], "ready");
    d.ok("echo kill > machines/vm/ctl && rmdir machines/vm");
}

#[test]
fn without_an_agent_exec_in_firecracker_fails_quickly_and_clearly() {
    no_agent(Vmm::Firecracker);
}

#[test]
fn without_an_agent_exec_in_cloud_hypervisor_fails_quickly_and_clearly() {
    no_agent(Vmm::CloudHypervisor);
}
