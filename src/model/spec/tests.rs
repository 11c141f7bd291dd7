use super::*;

fn parse(s: &str) -> Result<MachineSpec> {
    MachineSpec::parse(s.as_bytes())
}

#[test]
fn minimal_docker_spec_takes_defaults() {
    let s = parse(r#"{"runtime_type":"docker","image":"busybox"}"#).unwrap();
    assert_eq!(s.vcpu_count, 1);
    assert_eq!(s.mem_size_mib, 512);
    assert_eq!(
        s.container_spec().unwrap().image.as_deref(),
        Some("busybox")
    );
    s.check_complete().unwrap();
    assert_eq!(parse("{}").unwrap(), MachineSpec::default());
}

#[test]
fn pretty_output_round_trips_for_every_kind() {
    for text in [
        r#"{"image":"x","ports":[{"host_port":8080,"container_port":80}],"env":{"A":"1"},"restart":"on-failure","privileged":true}"#,
        r#"{"runtime_type":"firecracker","kernel_image_path":"/k","kernel_args":"console=ttyS0","disks":[{"path":"/d","read_only":true}],"network":{"tap_device":"tap0","guest_mac":"aa:bb:cc:dd:ee:ff"}}"#,
        r#"{"runtime_type":"cloud-hypervisor","kernel_image_path":"/k","vcpu_count":1,"max_vcpus":4,"hotplug_mem_mib":256}"#,
    ] {
        let s = parse(text).unwrap();
        let again = MachineSpec::parse(s.to_json_pretty().as_bytes()).unwrap();
        assert_eq!(s, again, "{}", s.to_json_pretty());
    }
}

#[test]
fn config_shows_only_the_fields_of_its_kind() {
    let vm = parse(r#"{"runtime_type":"firecracker","kernel_image_path":"/k"}"#).unwrap();
    let shown = vm.to_json_pretty();
    assert!(shown.contains("kernel_image_path"), "{shown}");
    assert!(!shown.contains("image\""), "{shown}");
    assert!(!shown.contains("max_vcpus"), "{shown}");
    let docker = parse(r#"{"image":"x"}"#).unwrap().to_json_pretty();
    assert!(!docker.contains("kernel"), "{docker}");
}

#[test]
fn fields_of_the_other_kind_are_refused_and_named() {
    for (text, field) in [
        (
            r#"{"image":"x","kernel_image_path":"/k"}"#,
            "kernel_image_path",
        ),
        (r#"{"image":"x","disks":[{"path":"/d"}]}"#, "disks"),
        (r#"{"runtime_type":"firecracker","image":"x"}"#, "image"),
        (
            r#"{"runtime_type":"firecracker","ports":[{"host_port":1,"container_port":1}]}"#,
            "ports",
        ),
        (
            r#"{"runtime_type":"firecracker","max_vcpus":2}"#,
            "max_vcpus",
        ),
        (
            r#"{"runtime_type":"cloud-hypervisor","privileged":true}"#,
            "privileged",
        ),
    ] {
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains(field), "{text}: {err}");
    }
}

#[test]
fn blanks_of_the_other_kind_are_ignored() {
    let s = parse(r#"{"image":"x","kernel_image_path":"","kernel_args":null,"rootfs_path":"","disks":[],"network":null}"#).unwrap();
    assert_eq!(s.runtime_type(), RuntimeKind::Docker);
    let vm = parse(r#"{"runtime_type":"firecracker","kernel_image_path":"/k","image":"","cmd":null,"env":{},"ports":[],"privileged":false,"entrypoint":""}"#).unwrap();
    assert_eq!(vm.runtime_type(), RuntimeKind::Firecracker);
}

#[test]
fn entrypoint_may_be_a_string() {
    let s = parse(r#"{"image":"x","entrypoint":"/bin/sh"}"#).unwrap();
    assert_eq!(
        s.container_spec().unwrap().entrypoint,
        Some(vec!["/bin/sh".to_owned()])
    );
    assert!(parse(r#"{"image":"x","entrypoint":3}"#).is_err());
}

#[test]
fn rejects_unknown_and_ill_typed_fields() {
    for bad in [
        &br#"{"imgae":"x"}"#[..],
        br#"{"vcpu_count":"two"}"#,
        br#"{"vcpu_count":0}"#,
        br#"{"runtime_type":"qemu"}"#,
        br#"{"ports":[{"host_port":70000,"container_port":1}]}"#,
        br#"{"restart":"sometimes"}"#,
        br#"not json"#,
        b"{\"image\":\"\xff\"}",
        br#"{"runtime_type":"cloud-hypervisor","max_vcpus":0}"#,
        br#"{"runtime_type":"firecracker","network":{"tap_device":"tap0","guest_mac":"zz"}}"#,
        br#"{"runtime_type":"firecracker","network":{"tap_device":"a-very-long-tap-name"}}"#,
        br#"{"runtime_type":"firecracker","network":{"tap_device":"t","guest_ip":"1.2.3"}}"#,
        br#"{"runtime_type":"firecracker","disks":[{"path":"/a","id":"x"},{"path":"/b","id":"x"}]}"#,
        br#"{"runtime_type":"firecracker","disks":[{"path":"/a","id":"rootfs"}]}"#,
        br#"{"runtime_type":"firecracker","agent_port":0}"#,
    ] {
        assert!(
            MachineSpec::parse(bad).is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn errors_name_the_field_at_fault() {
    let err = parse(r#"{"ports":[{"host_port":"x","container_port":1}]}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("ports[0].host_port"), "{err}");
    let err = parse(r#"{"image":"x"} trailing"#).unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)));
    let err = parse(r#"{"runtime_type":"firecracker","disks":[{"path":"rel"}]}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("disks[0].path"), "{err}");
}

#[test]
fn rejects_relative_and_climbing_paths() {
    for bad in [
        r#"{"volumes":[{"host_path":"data","container_path":"/d"}]}"#,
        r#"{"volumes":[{"host_path":"/srv/../etc","container_path":"/d"}]}"#,
        r#"{"runtime_type":"firecracker","kernel_image_path":"../vmlinux"}"#,
        r#"{"runtime_type":"firecracker","rootfs_path":"/a/../../b"}"#,
        r#"{"runtime_type":"firecracker","vmm_binary":"firecracker"}"#,
        r#"{"volumes":[{"host_path":"/a:b","container_path":"/d"}]}"#,
    ] {
        let err = parse(bad).unwrap_err();
        assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
    }
}

#[test]
fn completeness_depends_on_runtime() {
    assert!(MachineSpec::default().check_complete().is_err());
    let vm = parse(r#"{"runtime_type":"firecracker","kernel_image_path":"/k"}"#).unwrap();
    vm.check_complete().unwrap();
    assert!(parse(r#"{"runtime_type":"firecracker"}"#)
        .unwrap()
        .check_complete()
        .is_err());
}

#[test]
fn host_files_must_exist_and_be_files_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("vmlinux");
    std::fs::write(&kernel, b"x").unwrap();
    let spec = |extra: &str| {
        parse(&format!(
            r#"{{"runtime_type":"firecracker","kernel_image_path":"{}"{extra}}}"#,
            kernel.display()
        ))
        .unwrap()
    };
    spec("").vm_spec().unwrap().check_host_files().unwrap();
    let dirpath = dir.path().display().to_string();
    let err = spec(&format!(r#","rootfs_path":"{dirpath}""#))
        .vm_spec()
        .unwrap()
        .check_host_files()
        .unwrap_err();
    assert!(err.to_string().starts_with("rootfs_path"), "{err}");
    assert_eq!(err.errno(), libc::ENOENT);
    let err = spec(r#","initrd_path":"/nonexistent/initrd""#)
        .vm_spec()
        .unwrap()
        .check_host_files()
        .unwrap_err();
    assert!(err.to_string().starts_with("initrd_path"), "{err}");
}

#[test]
fn memory_sizes_that_overflow_are_refused_naming_the_field() {
    for hotplug in [u64::MAX, u64::MAX - 100, (1 << 22) - 511] {
        let text = format!(
            r#"{{"runtime_type":"cloud-hypervisor","kernel_image_path":"/k","hotplug_mem_mib":{hotplug}}}"#
        );
        let err = parse(&text).unwrap_err();
        assert!(matches!(err, Error::InvalidConfig(_)), "{err:?}");
        assert!(err.to_string().contains("hotplug_mem_mib"), "{err}");
    }
    // Right up to the limit is fine.
    parse(
        r#"{"runtime_type":"cloud-hypervisor","kernel_image_path":"/k","hotplug_mem_mib":4193792}"#,
    )
    .unwrap();
}
