//! The guest's side of a VM's network, said on the kernel command line.
//!
//! A spec's `network` names an existing TAP device on the host (`tap_device`,
//! with `tap_ip` on it) and the guest's address (`guest_ip`, `guest_mac`).
//! Neither VMM configures the guest's IP: the Linux kernel does, from an
//! `ip=` argument (as firecracker-go-sdk's static IP configuration does), so
//! one is added when the spec has a guest IP and the arguments have none.

use crate::model::spec::NetworkSpec;

/// The netmask of the link between TAP and guest.
pub const NETMASK: &str = "255.255.255.0";

/// `ip=<guest>::<gateway>:<mask>::<iface>:off` for `net`, if it has a guest IP.
pub fn ip_arg(net: &NetworkSpec, iface: &str) -> Option<String> {
    let guest = net.guest_ip.as_deref().filter(|s| !s.is_empty())?;
    let gateway = net.tap_ip.as_deref().unwrap_or_default();
    Some(format!("ip={guest}::{gateway}:{NETMASK}::{iface}:off"))
}

/// `args` with the `ip=` argument for `net` appended, unless it has one.
pub fn kernel_args(args: &str, net: Option<&NetworkSpec>, iface: &str) -> String {
    let has_ip = args.split_whitespace().any(|a| a.starts_with("ip="));
    match net.and_then(|n| ip_arg(n, iface)) {
        Some(ip) if !has_ip => format!("{args} {ip}").trim().to_owned(),
        _ => args.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(guest: Option<&str>, tap: Option<&str>) -> NetworkSpec {
        NetworkSpec {
            tap_device: "tap0".into(),
            tap_ip: tap.map(Into::into),
            guest_ip: guest.map(Into::into),
            guest_mac: None,
        }
    }

    #[test]
    fn the_guest_ip_goes_on_the_command_line_once() {
        let n = net(Some("172.16.0.2"), Some("172.16.0.1"));
        assert_eq!(
            kernel_args("console=ttyS0", Some(&n), "eth0"),
            "console=ttyS0 ip=172.16.0.2::172.16.0.1:255.255.255.0::eth0:off"
        );
        assert_eq!(
            kernel_args("console=ttyS0 ip=dhcp", Some(&n), "eth0"),
            "console=ttyS0 ip=dhcp"
        );
        assert_eq!(
            kernel_args("console=ttyS0", Some(&net(None, Some("1.2.3.4"))), "eth0"),
            "console=ttyS0"
        );
        assert_eq!(kernel_args("a", None, "eth0"), "a");
        assert_eq!(
            ip_arg(&net(Some("10.0.0.2"), None), "eth0").unwrap(),
            "ip=10.0.0.2:::255.255.255.0::eth0:off"
        );
    }
}
