//! The shape of the tree: what each directory holds, and names to nodes.

use fuser::{Errno, FileType};

use super::handles::DirEntries;
use super::inode::{FileKind, Node, SessionFile};
use super::MachineFs;
use crate::core::Machine;
use crate::model::{RuntimeKind, Status};

pub(super) fn runtime_named(name: &str) -> Result<RuntimeKind, Errno> {
    RuntimeKind::ALL
        .into_iter()
        .find(|k| k.as_str() == name)
        .ok_or(Errno::ENOENT)
}

pub(super) fn link_target(m: &Machine) -> String {
    format!("../../machines/{}", m.name())
}

impl MachineFs {
    /// Resolves `name` inside directory `parent`.
    pub(super) fn child(&self, parent: Node, name: &str) -> Result<Node, Errno> {
        let by_name = |name: &str| self.core.get(name).map_err(|_| Errno::ENOENT);
        let found = match parent {
            Node::Root => match name {
                "README" => Node::Readme,
                "events" => Node::Events,
                "machines" => Node::MachinesDir,
                "by-status" => Node::ByStatusDir,
                "by-runtime" => Node::ByRuntimeDir,
                "runtimes" => Node::RuntimesDir,
                _ => return Err(Errno::ENOENT),
            },
            Node::MachinesDir => Node::Machine(by_name(name)?.seq()),
            Node::Machine(seq) => {
                self.machine(seq)?;
                if name == "sessions" {
                    Node::SessionsDir(seq)
                } else {
                    Node::File(seq, FileKind::from_name(name).ok_or(Errno::ENOENT)?)
                }
            }
            Node::SessionsDir(seq) => {
                let m = self.machine(seq)?;
                let n: u64 = name.parse().map_err(|_| Errno::ENOENT)?;
                self.core.session(&m, n).ok_or(Errno::ENOENT)?;
                Node::Session(seq, n)
            }
            Node::Session(seq, n) => {
                let m = self.machine(seq)?;
                self.core.session(&m, n).ok_or(Errno::ENOENT)?;
                Node::SessionFile(seq, n, SessionFile::from_name(name).ok_or(Errno::ENOENT)?)
            }
            Node::ByStatusDir => {
                Node::StatusDir(name.parse::<Status>().map_err(|_| Errno::ENOENT)?)
            }
            Node::ByRuntimeDir => Node::RuntimeLinksDir(runtime_named(name)?),
            Node::RuntimesDir => Node::RuntimeDir(runtime_named(name)?),
            Node::RuntimeDir(k) if name == "status" => Node::RuntimeStatus(k),
            Node::StatusDir(st) => {
                let m = by_name(name)?;
                if m.status() != st {
                    return Err(Errno::ENOENT);
                }
                Node::StatusLink(m.seq())
            }
            Node::RuntimeLinksDir(k) => {
                let m = by_name(name)?;
                if m.with_record(|r| r.spec.runtime_type()) != k {
                    return Err(Errno::ENOENT);
                }
                Node::RuntimeLink(m.seq())
            }
            _ => return Err(Errno::ENOENT),
        };
        Ok(found)
    }

    pub(super) fn list(&self, dir: Node) -> Result<DirEntries, Errno> {
        let d = FileType::Directory;
        let mut out = vec![
            (dir.ino(), d, ".".to_owned()),
            (Node::Root.ino(), d, "..".to_owned()),
        ];
        let mut push =
            |node: Node, kind: FileType, name: &str| out.push((node.ino(), kind, name.to_owned()));
        match dir {
            Node::Root => {
                push(Node::Readme, FileType::RegularFile, "README");
                push(Node::Events, FileType::RegularFile, "events");
                push(Node::MachinesDir, d, "machines");
                push(Node::ByStatusDir, d, "by-status");
                push(Node::ByRuntimeDir, d, "by-runtime");
                push(Node::RuntimesDir, d, "runtimes");
            }
            Node::MachinesDir => {
                for e in self.core.list() {
                    push(Node::Machine(e.seq), d, e.name.as_str());
                }
            }
            Node::Machine(seq) => {
                self.machine(seq)?;
                // `events` answers a lookup but is not listed: it never ends,
                // and `cp -r`, `grep -r` and `rsync` of a machine directory
                // read every file they list to its end.
                for k in FileKind::ALL.into_iter().filter(|k| *k != FileKind::Events) {
                    push(Node::File(seq, k), FileType::RegularFile, k.name());
                }
                push(Node::SessionsDir(seq), d, "sessions");
            }
            Node::SessionsDir(seq) => {
                let m = self.machine(seq)?;
                for n in self.core.sessions(&m) {
                    push(Node::Session(seq, n), d, &n.to_string());
                }
            }
            Node::Session(seq, n) => {
                let m = self.machine(seq)?;
                self.core.session(&m, n).ok_or(Errno::ENOENT)?;
                for f in SessionFile::ALL {
                    push(
                        Node::SessionFile(seq, n, f),
                        FileType::RegularFile,
                        f.name(),
                    );
                }
            }
            Node::ByStatusDir => {
                for s in Status::ALL {
                    push(Node::StatusDir(s), d, s.as_str());
                }
            }
            Node::ByRuntimeDir | Node::RuntimesDir => {
                for k in RuntimeKind::ALL {
                    let node = if dir == Node::ByRuntimeDir {
                        Node::RuntimeLinksDir(k)
                    } else {
                        Node::RuntimeDir(k)
                    };
                    push(node, d, k.as_str());
                }
            }
            Node::RuntimeDir(k) => push(Node::RuntimeStatus(k), FileType::RegularFile, "status"),
            Node::StatusDir(st) => {
                for e in self.core.list().into_iter().filter(|e| e.status == st) {
                    push(Node::StatusLink(e.seq), FileType::Symlink, e.name.as_str());
                }
            }
            Node::RuntimeLinksDir(k) => {
                for e in self.core.list().into_iter().filter(|e| e.runtime == k) {
                    push(Node::RuntimeLink(e.seq), FileType::Symlink, e.name.as_str());
                }
            }
            _ => return Err(Errno::ENOTDIR),
        }
        Ok(out)
    }
}
