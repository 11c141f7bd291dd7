//! A guest kernel for VMM tests that boots on any KVM, nested ones included.
//!
//! This host's nested KVM cannot boot Linux, but both Firecracker and Cloud
//! Hypervisor boot an ELF through its PVH entry point: an ELF note of type 18
//! (XEN_ELFNOTE_PHYS32_ENTRY, owner "Xen") holding the 32-bit physical entry
//! address. The kernel below is that and nothing else: loaded at 16 MiB, it
//! disables interrupts and halts forever, which is enough for a VM to go
//! through every lifecycle state (boot, pause, resume, snapshot, resize, disk
//! hot-plug). It halts rather than spins so that an idle test VM costs no
//! host CPU (the machine has two cores, shared).
//!
//! [`greeting_kernel`] is the same, but first writes a line to the serial
//! port (COM1, I/O port 0x3f8), so that a test can see the console reach a
//! machine's `logs`.
//!
//! It is assembled with gcc and ld once per content, cached under the
//! target's temp dir (the system's when built outside the tests, as by the
//! examples), and published by rename so concurrent test binaries never see
//! a half-written file.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const ASSEMBLY: &str = r#"
    # PVH entry note: namesz, descsz, type, name "Xen\0", then the entry.
    .section .note.Xen, "a", @note
    .balign 4
    .long 4
    .long 4
    .long 18
    .asciz "Xen"
    .balign 4
    .long _start

    .text
    .code32
    .globl _start
_start:
    cli
1:  hlt
    jmp 1b
"#;

/// What [`greeting_kernel`] writes to its serial console.
pub const GREETING: &str = "hyperfleet test kernel: booted";

const GREETING_ASSEMBLY: &str = r#"
    .section .note.Xen, "a", @note
    .balign 4
    .long 4
    .long 4
    .long 18
    .asciz "Xen"
    .balign 4
    .long _start

    .text
    .code32
    .globl _start
_start:
    cli
    mov $message, %esi
    mov $0x3f8, %dx
1:  movb (%esi), %al
    test %al, %al
    jz 2f
    outb %al, %dx
    inc %esi
    jmp 1b
2:  hlt
    jmp 2b
message:
    .asciz "hyperfleet test kernel: booted\n"
"#;

const LINKER_SCRIPT: &str = r#"
ENTRY(_start)
SECTIONS {
    . = 0x1000000;
    .text : { *(.text) }
    .note.Xen : { *(.note.Xen) }
    /DISCARD/ : { *(.note.gnu.*) *(.comment) }
}
"#;

/// Path of the test kernel, built on first use in this process.
pub fn test_kernel() -> PathBuf {
    static KERNEL: OnceLock<PathBuf> = OnceLock::new();
    KERNEL.get_or_init(|| build("pvh-halt", ASSEMBLY)).clone()
}

/// Path of the kernel that says [`GREETING`] on its serial console, then
/// halts.
pub fn greeting_kernel() -> PathBuf {
    static KERNEL: OnceLock<PathBuf> = OnceLock::new();
    KERNEL
        .get_or_init(|| build("pvh-greeting", GREETING_ASSEMBLY))
        .clone()
}

fn build(name: &str, assembly: &str) -> PathBuf {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (assembly, LINKER_SCRIPT).hash(&mut hasher);
    let base = option_env!("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join("test-kernel");
    let kernel = dir.join(format!("{name}-{:016x}.elf", hasher.finish()));
    if kernel.exists() {
        return kernel;
    }
    std::fs::create_dir_all(&dir).expect("create test kernel dir");
    let work = tempfile::tempdir_in(&dir).expect("test kernel work dir");
    let source = work.path().join("kernel.s");
    let script = work.path().join("kernel.ld");
    let object = work.path().join("kernel.o");
    let built = work.path().join("kernel.elf");
    std::fs::write(&source, assembly).unwrap();
    std::fs::write(&script, LINKER_SCRIPT).unwrap();
    run(Command::new("gcc")
        .args(["-c", "-x", "assembler"])
        .arg(&source)
        .arg("-o")
        .arg(&object));
    run(Command::new("ld")
        .args([
            "-m",
            "elf_x86_64",
            "-nostdlib",
            "-static",
            "--build-id=none",
            "-z",
            "noexecstack",
            "-T",
        ])
        .arg(&script)
        .arg(&object)
        .arg("-o")
        .arg(&built));
    let bytes = std::fs::read(&built).unwrap();
    assert_eq!(&bytes[..4], b"\x7fELF", "ld did not produce an ELF file");
    // Rename is atomic: a racing process either finds no file or a whole
    // one, and the loser's identical file simply replaces the winner's.
    std::fs::rename(&built, &kernel).expect("publish test kernel");
    kernel
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} ({e}); install gcc and binutils"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A file in `dir` that is no kernel at all (neither ELF nor bzImage).
pub fn not_an_elf(dir: &Path) -> PathBuf {
    let path = dir.join("not-a-kernel.bin");
    std::fs::write(&path, b"this is not a kernel image\n".repeat(100)).unwrap();
    path
}
