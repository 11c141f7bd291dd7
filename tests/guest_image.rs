//! The guest image script (contrib/guest/build.sh), run for real into a temp
//! dir: a vmlinux both VMMs can boot (an ELF with a PVH entry note), an
//! initramfs with busybox, the vsock modules and the agent as /init, a
//! static agent, and a machine config that points at them.
//!
//! Booting the image needs KVM, which this host lacks; see
//! contrib/guest/README.md.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hyperfleet::agent::{AgentClient, ExecRequest, ExitStatus};

const PT_NOTE: u32 = 4;
/// XEN_ELFNOTE_PHYS32_ENTRY: the 32-bit PVH entry point.
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The PVH entry address from an ELF64's notes, if it has one.
fn pvh_entry(elf: &[u8]) -> Option<u64> {
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF");
    assert_eq!(elf[4], 2, "not a 64-bit ELF");
    let (phoff, phentsize, phnum) = (
        u64_at(elf, 0x20) as usize,
        u16_at(elf, 0x36) as usize,
        u16_at(elf, 0x38) as usize,
    );
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if u32_at(elf, ph) != PT_NOTE {
            continue;
        }
        let (offset, size) = (u64_at(elf, ph + 8) as usize, u64_at(elf, ph + 32) as usize);
        let notes = &elf[offset..offset + size];
        let mut at = 0;
        let pad = |n: usize| n.div_ceil(4) * 4;
        while at + 12 <= notes.len() {
            let (namesz, descsz, kind) = (
                u32_at(notes, at) as usize,
                u32_at(notes, at + 4) as usize,
                u32_at(notes, at + 8),
            );
            let name = &notes[at + 12..at + 12 + namesz];
            let desc_at = at + 12 + pad(namesz);
            let desc = &notes[desc_at..desc_at + descsz];
            if name == b"Xen\0" && kind == XEN_ELFNOTE_PHYS32_ENTRY {
                return Some(match descsz {
                    4 => u32_at(desc, 0) as u64,
                    8 => u64_at(desc, 0),
                    n => panic!("PVH note with a {n}-byte descriptor"),
                });
            }
            at = desc_at + pad(descsz);
        }
    }
    None
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn cpio(initramfs: &Path, args: &str) -> Vec<u8> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "gzip -dc '{}' | cpio {args} --quiet",
            initramfs.display()
        ))
        .output()
        .expect("cpio");
    assert!(
        out.status.success(),
        "cpio {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The image, built once per test process into the target dir; (dir,
/// printed config). Each process has its own directory, since test runners
/// run these tests in parallel processes; those of processes gone are
/// removed, so reruns do not pile up copies.
fn built() -> &'static (PathBuf, String) {
    static BUILT: OnceLock<(PathBuf, String)> = OnceLock::new();
    BUILT.get_or_init(|| {
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        for entry in std::fs::read_dir(tmp).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("guest-image-") {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let dir = tmp.join(format!("guest-image-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/guest/build.sh");
        let config = run(Command::new(script).arg(&dir));
        (dir, config)
    })
}

#[test]
fn the_guest_image_has_a_pvh_kernel_the_vsock_modules_and_a_static_agent() {
    let (dir, config) = built();

    // The kernel: an uncompressed ELF that enters through PVH.
    let vmlinux = std::fs::read(dir.join("vmlinux")).expect("vmlinux");
    let entry = pvh_entry(&vmlinux).expect("vmlinux has no PVH entry note");
    assert_ne!(entry, 0);

    // The initramfs: init, busybox, and the vsock modules in load order.
    let initramfs = dir.join("initramfs.cpio.gz");
    let listing = String::from_utf8(cpio(&initramfs, "-t")).expect("utf-8");
    let files: Vec<&str> = listing.lines().collect();
    for needed in [
        "init",
        "bin/busybox",
        "bin/sh",
        "dev/console",
        "etc/passwd",
        "etc/hyperfleet/modules",
    ] {
        assert!(files.contains(&needed), "initramfs lacks {needed}");
    }
    let list = String::from_utf8(cpio(&initramfs, "-i --to-stdout etc/hyperfleet/modules"))
        .expect("utf-8");
    let modules: Vec<&str> = list.lines().filter(|l| !l.starts_with('#')).collect();
    let position = |name: &str| {
        modules
            .iter()
            .position(|m| m.ends_with(&format!("/{name}.ko")))
            .unwrap_or_else(|| panic!("{name} is not in the module list {modules:?}"))
    };
    let order = [
        "virtio",
        "vsock",
        "vmw_vsock_virtio_transport_common",
        "vmw_vsock_virtio_transport",
    ];
    let positions: Vec<usize> = order.iter().map(|m| position(m)).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "dependencies must load first: {modules:?}"
    );
    for m in &modules {
        assert!(
            files.contains(&m.trim_start_matches('/')),
            "{m} is listed but not in the initramfs"
        );
    }

    // The agent: static, and the very binary the initramfs runs as init.
    let agent = dir.join("hyperfleet-agent");
    let ldd = Command::new("ldd").arg(&agent).output().expect("ldd");
    let said = String::from_utf8_lossy(&ldd.stdout) + String::from_utf8_lossy(&ldd.stderr);
    assert!(
        said.contains("not a dynamic executable"),
        "the agent is dynamic: {said}"
    );
    let init = cpio(&initramfs, "-i --to-stdout init");
    assert!(
        init == std::fs::read(&agent).expect("agent"),
        "/init is not the agent"
    );

    // The config points at what was built.
    let config: serde_json::Value = serde_json::from_str(config.trim()).expect("config JSON");
    assert_eq!(config["runtime_type"], "firecracker");
    for key in ["kernel_image_path", "initrd_path"] {
        let path = config[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key} missing"));
        assert!(Path::new(path).is_file(), "{key} {path} does not exist");
    }
    assert!(config["kernel_args"]
        .as_str()
        .is_some_and(|a| a.contains("console=ttyS0")));
}

/// The image's tree, booted as far as this host allows: no KVM, so no
/// kernel, but its /init (the static agent) as PID 1 of fresh PID and mount
/// namespaces chrooted into the unpacked initramfs, where it mounts /proc,
/// /dev, /dev/pts, /tmp and /run itself and runs the image's busybox.
#[tokio::test]
async fn the_initramfs_init_serves_commands_as_pid_1_in_its_own_tree() {
    let (dir, _) = built();
    let root = tempfile::Builder::new()
        .prefix("hf-initramfs-")
        .tempdir()
        .expect("tempdir");
    let unpack = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "gzip -dc '{}' | cpio -id --quiet",
            dir.join("initramfs.cpio.gz").display()
        ))
        .current_dir(root.path())
        .status()
        .expect("cpio");
    assert!(unpack.success());
    // The modules are for the guest kernel: never offer them to this host's.
    std::fs::remove_file(root.path().join("etc/hyperfleet/modules")).expect("module list");

    let mut init = Command::new("unshare")
        .args(["--pid", "--fork", "--mount", "--kill-child", "chroot"])
        .arg(root.path())
        .args(["/init", "--listen", "unix:/agent.sock"])
        .stdin(Stdio::null())
        .spawn()
        .expect("unshare");
    let socket = root.path().join("agent.sock");
    let deadline = Instant::now() + Duration::from_secs(20);
    let stream = loop {
        if let Ok(s) = tokio::net::UnixStream::connect(&socket).await {
            break s;
        }
        assert!(Instant::now() < deadline, "the image's init never listened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let ping = AgentClient::handshake(stream)
        .await
        .expect("hello")
        .ping()
        .await
        .expect("ping");
    assert!(ping.pid1);

    let connect = || async {
        let s = tokio::net::UnixStream::connect(&socket)
            .await
            .expect("connect");
        AgentClient::handshake(s).await.expect("hello")
    };
    let script = "readlink /bin/sh; grep -c ' /dev/pts devpts ' /proc/mounts; \
        grep -c ' /tmp tmpfs ' /proc/mounts; test -c /dev/null && echo null; echo $$";
    let r = connect()
        .await
        .exec(ExecRequest::new(["sh", "-c", script]))
        .await
        .expect("exec");
    assert_eq!(
        r.status,
        ExitStatus::Code(0),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    let out = String::from_utf8(r.stdout).expect("utf-8");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..4], ["/bin/busybox", "1", "1", "null"], "{out}");
    assert_ne!(lines[4], "1", "the command is not init");

    let mut nobody = ExecRequest::new(["id", "-u"]);
    nobody.user = Some("nobody".into());
    let r = connect().await.exec(nobody).await.expect("exec as nobody");
    assert_eq!(r.stdout, b"65534\n");

    connect().await.power_off().await.expect("power off");
    let deadline = Instant::now() + Duration::from_secs(10);
    while init.try_wait().expect("wait").is_none() {
        assert!(
            Instant::now() < deadline,
            "power off did not end the guest's namespace"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
