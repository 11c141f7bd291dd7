//! What a container is created from: names, labels and the create body.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, HostConfig, PortBinding, RestartPolicy as DockerRestartPolicy,
    RestartPolicyNameEnum,
};

use super::{LABEL_INSTANCE, LABEL_MACHINE_ID, LABEL_MACHINE_NAME, NAME_PREFIX};
use crate::error::{Error, Result};
use crate::model::spec::ContainerSpec;
use crate::model::{MachineSpec, RestartPolicy};
use crate::runtime::MachineRef;

const MAX_ID_LEN: usize = 128;

pub(super) fn container_name(id: &str) -> String {
    format!("{NAME_PREFIX}{id}")
}

/// Docker names allow `[a-zA-Z0-9][a-zA-Z0-9_.-]*`; the prefix supplies the
/// first character.
pub(super) fn check_id(id: &str) -> Result<()> {
    let invalid = |reason| Error::InvalidName {
        name: id.to_owned(),
        reason,
    };
    if id.is_empty() {
        return Err(invalid("machine id is empty"));
    }
    if id.len() > MAX_ID_LEN {
        return Err(invalid("machine id is longer than 128 bytes"));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(invalid(
            "machine id may only hold letters, digits, '-', '_' and '.'",
        ));
    }
    Ok(())
}

fn restart_policy(p: RestartPolicy) -> RestartPolicyNameEnum {
    match p {
        RestartPolicy::No => RestartPolicyNameEnum::NO,
        RestartPolicy::Always => RestartPolicyNameEnum::ALWAYS,
        RestartPolicy::OnFailure => RestartPolicyNameEnum::ON_FAILURE,
        RestartPolicy::UnlessStopped => RestartPolicyNameEnum::UNLESS_STOPPED,
    }
}

pub(super) fn labels(machine: &MachineRef) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_MACHINE_ID.to_owned(), machine.id.clone()),
        (LABEL_MACHINE_NAME.to_owned(), machine.name.clone()),
        (LABEL_INSTANCE.to_owned(), machine.instance.clone()),
    ])
}

pub(super) fn body(
    machine: &MachineRef,
    spec: &MachineSpec,
    c: &ContainerSpec,
    image: &str,
) -> Result<ContainerCreateBody> {
    let mut exposed = Vec::new();
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for p in &c.ports {
        let key = format!("{}/{}", p.container_port, p.protocol.as_str());
        if !exposed.contains(&key) {
            exposed.push(key.clone());
        }
        bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: None,
                host_port: Some(p.host_port.to_string()),
            });
    }
    let mut binds = Vec::new();
    for v in &c.volumes {
        let host = v.host_path.to_string_lossy();
        let guest = v.container_path.to_string_lossy();
        // The bind syntax is colon-separated; a colon in a path would
        // silently change its meaning.
        if host.contains(':') || guest.contains(':') {
            return Err(Error::InvalidConfig(format!(
                "volume paths must not contain ':' ({host} -> {guest})"
            )));
        }
        let mut bind = format!("{host}:{guest}");
        if v.read_only {
            bind.push_str(":ro");
        }
        binds.push(bind);
    }
    let memory = i64::try_from(spec.mem_size_mib)
        .ok()
        .and_then(|m| m.checked_mul(1 << 20))
        .ok_or_else(|| Error::InvalidConfig("mem_size_mib is too large".into()))?;
    let nano_cpus = i64::from(spec.vcpu_count) * 1_000_000_000;
    Ok(ContainerCreateBody {
        image: Some(image.to_owned()),
        cmd: c.cmd.clone(),
        entrypoint: c.entrypoint.clone(),
        env: (!c.env.is_empty()).then(|| c.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        working_dir: c.working_dir.clone(),
        user: c.user.clone(),
        labels: Some(labels(machine)),
        host_config: Some(HostConfig {
            binds: (!binds.is_empty()).then_some(binds),
            port_bindings: (!bindings.is_empty()).then_some(bindings),
            restart_policy: Some(DockerRestartPolicy {
                name: Some(restart_policy(spec.restart)),
                maximum_retry_count: None,
            }),
            nano_cpus: Some(nano_cpus),
            memory: Some(memory),
            // A machine of N MiB has N MiB, not N more in swap.
            memory_swap: Some(memory),
            privileged: c.privileged.then_some(true),
            ..Default::default()
        }),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_ids_must_make_valid_container_names() {
        check_id("3f1c2a9e-0b7d-4c1e-9a53-1d2f3e4a5b6c").unwrap();
        check_id("web.1_a").unwrap();
        for bad in ["", "a/b", "a b", "ä", "a:b", &"x".repeat(MAX_ID_LEN + 1)] {
            assert!(
                matches!(check_id(bad), Err(Error::InvalidName { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn create_body_carries_the_spec() {
        let spec = MachineSpec::parse(
            br#"{"image":"img","vcpu_count":2,"mem_size_mib":64,
                 "ports":[{"host_port":8080,"container_port":80},
                          {"host_port":8081,"container_port":80},
                          {"host_port":5353,"container_port":53,"protocol":"udp"}],
                 "volumes":[{"host_path":"/srv","container_path":"/data","read_only":true}],
                 "env":{"A":"1"},"restart":"on-failure","user":"nobody","working_dir":"/tmp",
                 "privileged":true}"#,
        )
        .unwrap();
        let machine = MachineRef {
            id: "m1".into(),
            name: "web".into(),
            instance: "i1".into(),
            runtime_dir: "/nonexistent".into(),
        };
        let c = spec.container_spec().unwrap();
        let body = body(&machine, &spec, c, "img").unwrap();
        let host = body.host_config.unwrap();
        assert_eq!(host.nano_cpus, Some(2_000_000_000));
        assert_eq!(host.memory, Some(64 << 20));
        assert_eq!(host.privileged, Some(true));
        assert_eq!(host.binds, Some(vec!["/srv:/data:ro".to_owned()]));
        let bindings = host.port_bindings.unwrap();
        assert_eq!(bindings["80/tcp"].as_ref().unwrap().len(), 2);
        assert_eq!(
            bindings["53/udp"].as_ref().unwrap()[0].host_port.as_deref(),
            Some("5353")
        );
        assert_eq!(
            host.restart_policy.unwrap().name,
            Some(RestartPolicyNameEnum::ON_FAILURE)
        );
        assert_eq!(body.env, Some(vec!["A=1".to_owned()]));
        let labels = body.labels.unwrap();
        assert_eq!(labels[LABEL_MACHINE_ID], "m1");
        assert_eq!(labels[LABEL_MACHINE_NAME], "web");
        assert_eq!(labels[LABEL_INSTANCE], "i1");
        let mut exposed = body.exposed_ports.unwrap();
        exposed.sort();
        assert_eq!(exposed, vec!["53/udp".to_owned(), "80/tcp".to_owned()]);
    }
}
