//! Who a command runs as: `name`, `name:group`, `uid` or `uid:gid`, resolved
//! against the guest's /etc/passwd and /etc/group.
//!
//! The files are parsed here rather than through libc's getpwnam, which in
//! a static glibc binary needs NSS modules a bare guest does not have.

/// The identity a command takes before exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the primary one included).
    pub groups: Vec<u32>,
    /// From passwd, when the user is listed there.
    pub home: Option<String>,
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

fn passwd_entries(passwd: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    passwd.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 {
            return None;
        }
        Some(PasswdEntry {
            name: f[0],
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f[5],
        })
    })
}

/// (name, gid, members) of each /etc/group line.
fn group_entries(group: &str) -> impl Iterator<Item = (&str, u32, Vec<&str>)> {
    group.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 {
            return None;
        }
        let members = f[3].split(',').filter(|m| !m.is_empty()).collect();
        Some((f[0], f[2].parse().ok()?, members))
    })
}

/// Resolves `spec` against the contents of /etc/passwd and /etc/group.
///
/// A numeric uid need not be listed; its group is then the same number. A
/// name must be listed. Without an explicit group the user gets its
/// passwd group and the groups that list it as a member.
pub fn resolve(spec: &str, passwd: &str, group: &str) -> Result<Credentials, String> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user_part.is_empty() {
        return Err(format!("user {spec:?}: no user given"));
    }
    let entry = match user_part.parse::<u32>() {
        Ok(uid) => passwd_entries(passwd).find(|e| e.uid == uid),
        Err(_) => Some(
            passwd_entries(passwd)
                .find(|e| e.name == user_part)
                .ok_or_else(|| format!("no user named {user_part:?} in /etc/passwd"))?,
        ),
    };
    let uid = match &entry {
        Some(e) => e.uid,
        // Only a number reaches here without an entry.
        None => user_part
            .parse()
            .map_err(|_| format!("bad user {user_part:?}"))?,
    };
    let primary = entry.as_ref().map_or(uid, |e| e.gid);
    let home = entry.as_ref().map(|e| e.home.to_string());

    let (gid, groups) = match group_part {
        Some(g) => {
            let gid = match g.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => group_entries(group)
                    .find(|(name, _, _)| *name == g)
                    .map(|(_, gid, _)| gid)
                    .ok_or_else(|| format!("no group named {g:?} in /etc/group"))?,
            };
            (gid, vec![gid])
        }
        None => {
            let mut groups = vec![primary];
            if let Some(e) = &entry {
                for (_, gid, members) in group_entries(group) {
                    if members.contains(&e.name) && !groups.contains(&gid) {
                        groups.push(gid);
                    }
                }
            }
            (primary, groups)
        }
    };
    Ok(Credentials {
        uid,
        gid,
        groups,
        home,
    })
}

/// Resolves `spec` against the guest's files (missing files are empty).
pub fn lookup(spec: &str) -> Result<Credentials, String> {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    resolve(spec, &passwd, &group)
}

/// The home directory passwd gives `uid`, if any.
pub fn home_of(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let home = passwd_entries(&passwd)
        .find(|e| e.uid == uid)?
        .home
        .to_string();
    Some(home)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
        alice:x:1000:1000::/home/alice:/bin/sh\n\
        broken line\n";
    const GROUP: &str = "root:x:0:\nnogroup:x:65534:\nalice:x:1000:\nwheel:x:10:bob,alice\n";

    #[test]
    fn names_take_their_passwd_group_and_memberships() {
        let c = resolve("alice", PASSWD, GROUP).expect("alice");
        assert_eq!((c.uid, c.gid), (1000, 1000));
        assert_eq!(c.groups, [1000, 10]);
        assert_eq!(c.home.as_deref(), Some("/home/alice"));
        let c = resolve("nobody", PASSWD, GROUP).expect("nobody");
        assert_eq!(
            (c.uid, c.gid, c.groups.clone()),
            (65534, 65534, vec![65534])
        );
    }

    #[test]
    fn numbers_need_no_entry_and_explicit_groups_replace_memberships() {
        let c = resolve("4242", PASSWD, GROUP).expect("4242");
        assert_eq!(
            (c.uid, c.gid, c.groups, c.home),
            (4242, 4242, vec![4242], None)
        );
        let c = resolve("1000:10", PASSWD, GROUP).expect("1000:10");
        assert_eq!((c.uid, c.gid, c.groups), (1000, 10, vec![10]));
        let c = resolve("alice:nogroup", PASSWD, GROUP).expect("alice:nogroup");
        assert_eq!((c.uid, c.gid), (1000, 65534));
    }

    #[test]
    fn unknown_names_are_refused_with_the_name() {
        let e = resolve("mallory", PASSWD, GROUP).expect_err("unknown");
        assert!(e.contains("mallory"), "{e}");
        let e = resolve("alice:staff", PASSWD, GROUP).expect_err("unknown group");
        assert!(e.contains("staff"), "{e}");
        assert!(resolve("", PASSWD, GROUP).is_err());
        assert!(resolve(":0", PASSWD, GROUP).is_err());
    }
}
