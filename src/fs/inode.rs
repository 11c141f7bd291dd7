//! Inode numbers are computed, not allocated: every node of the tree maps to
//! one number and back. Machine inodes derive from the machine's store
//! sequence number, which is never reused, so a number never changes meaning.

use crate::model::{RuntimeKind, Status};

/// Files inside a machine directory, in listing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    Id,
    Config,
    Status,
    Ctl,
    Exec,
    ExecStderr,
    ExecExit,
    Info,
    Logs,
    Error,
    Errors,
    ExecNew,
    Events,
}

impl FileKind {
    pub const ALL: [FileKind; 13] = [
        FileKind::Id,
        FileKind::Config,
        FileKind::Status,
        FileKind::Ctl,
        FileKind::Exec,
        FileKind::ExecStderr,
        FileKind::ExecExit,
        FileKind::Info,
        FileKind::Logs,
        FileKind::Error,
        FileKind::Errors,
        FileKind::ExecNew,
        FileKind::Events,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FileKind::Id => "id",
            FileKind::Config => "config",
            FileKind::Status => "status",
            FileKind::Ctl => "ctl",
            FileKind::Exec => "exec",
            FileKind::ExecStderr => "exec.stderr",
            FileKind::ExecExit => "exec.exit",
            FileKind::Info => "info",
            FileKind::Logs => "logs",
            FileKind::Error => "error",
            FileKind::Errors => "errors",
            FileKind::ExecNew => "exec.new",
            FileKind::Events => "events",
        }
    }

    pub fn from_name(name: &str) -> Option<FileKind> {
        FileKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Mode bits. What may carry secrets (the spec's env, command output,
    /// logs) is for the owner only, since a root daemon's mount is visible
    /// to every user.
    pub fn perm(self) -> u16 {
        match self {
            FileKind::Config | FileKind::Exec => 0o600,
            FileKind::ExecStderr | FileKind::ExecExit | FileKind::Info | FileKind::Logs => 0o400,
            // Opening it makes a session, which runs commands: the owner's.
            FileKind::ExecNew => 0o400,
            FileKind::Ctl => 0o644,
            FileKind::Id
            | FileKind::Status
            | FileKind::Error
            | FileKind::Errors
            | FileKind::Events => 0o444,
        }
    }

    pub fn writable(self) -> bool {
        matches!(self, FileKind::Config | FileKind::Ctl | FileKind::Exec)
    }

    /// Small files the kernel serves from its page cache: they change only
    /// with the machine's record (or its last exec), and every such change
    /// invalidates them (see `cache`).
    pub const CACHED: [FileKind; 7] = [
        FileKind::Id,
        FileKind::Config,
        FileKind::Status,
        FileKind::ExecStderr,
        FileKind::ExecExit,
        FileKind::Error,
        FileKind::Errors,
    ];

    pub fn cached(self) -> bool {
        FileKind::CACHED.contains(&self)
    }

    fn slot(self) -> u64 {
        FileKind::ALL.iter().position(|k| *k == self).unwrap_or(0) as u64 + 1
    }
}

/// Files of an exec session directory (`sessions/<n>/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionFile {
    Ctl,
    Stdin,
    Stdout,
    Stderr,
    Exit,
}

impl SessionFile {
    pub const ALL: [SessionFile; 5] = [
        SessionFile::Ctl,
        SessionFile::Stdin,
        SessionFile::Stdout,
        SessionFile::Stderr,
        SessionFile::Exit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SessionFile::Ctl => "ctl",
            SessionFile::Stdin => "stdin",
            SessionFile::Stdout => "stdout",
            SessionFile::Stderr => "stderr",
            SessionFile::Exit => "exit",
        }
    }

    pub fn from_name(name: &str) -> Option<SessionFile> {
        SessionFile::ALL.into_iter().find(|k| k.name() == name)
    }

    pub fn perm(self) -> u16 {
        match self {
            SessionFile::Ctl | SessionFile::Stdin => 0o600,
            SessionFile::Stdout | SessionFile::Stderr | SessionFile::Exit => 0o400,
        }
    }

    pub fn writable(self) -> bool {
        matches!(self, SessionFile::Ctl | SessionFile::Stdin)
    }

    fn slot(self) -> u64 {
        SessionFile::ALL
            .iter()
            .position(|k| *k == self)
            .unwrap_or(0) as u64
            + 1
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Node {
    Root,
    Readme,
    /// The fleet's `events`.
    Events,
    MachinesDir,
    ByStatusDir,
    ByRuntimeDir,
    RuntimesDir,
    StatusDir(Status),
    RuntimeLinksDir(RuntimeKind),
    RuntimeDir(RuntimeKind),
    RuntimeStatus(RuntimeKind),
    Machine(u64),
    File(u64, FileKind),
    StatusLink(u64),
    RuntimeLink(u64),
    /// `machines/<m>/sessions/`
    SessionsDir(u64),
    /// `machines/<m>/sessions/<n>/`: (machine seq, session number)
    Session(u64, u64),
    SessionFile(u64, u64, SessionFile),
}

const STATUS_DIRS: u64 = 0x100;
const RUNTIME_LINK_DIRS: u64 = 0x200;
const RUNTIME_DIRS: u64 = 0x300;
const RUNTIME_STATUS: u64 = 0x400;
const MACHINES: u64 = 1 << 20;
const SLOTS: u64 = 64;
const SLOT_STATUS_LINK: u64 = 32;
const SLOT_RUNTIME_LINK: u64 = 33;
const SLOT_SESSIONS: u64 = 34;
/// Session nodes live above every other number: (seq << 24) | (n << 4) | file.
pub const SESSIONS: u64 = 1 << 60;
const SESSION_SHIFT: u64 = 4;
const SEQ_SHIFT: u64 = 24;

fn status_index(s: Status) -> u64 {
    Status::ALL.iter().position(|x| *x == s).unwrap_or(0) as u64
}
fn runtime_index(k: RuntimeKind) -> u64 {
    RuntimeKind::ALL.iter().position(|x| *x == k).unwrap_or(0) as u64
}

impl Node {
    pub fn ino(self) -> u64 {
        match self {
            Node::Root => 1,
            Node::Readme => 2,
            Node::MachinesDir => 3,
            Node::ByStatusDir => 4,
            Node::ByRuntimeDir => 5,
            Node::RuntimesDir => 6,
            Node::Events => 7,
            Node::StatusDir(s) => STATUS_DIRS + status_index(s),
            Node::RuntimeLinksDir(k) => RUNTIME_LINK_DIRS + runtime_index(k),
            Node::RuntimeDir(k) => RUNTIME_DIRS + runtime_index(k),
            Node::RuntimeStatus(k) => RUNTIME_STATUS + runtime_index(k),
            Node::Machine(seq) => MACHINES + seq * SLOTS,
            Node::File(seq, kind) => MACHINES + seq * SLOTS + kind.slot(),
            Node::StatusLink(seq) => MACHINES + seq * SLOTS + SLOT_STATUS_LINK,
            Node::RuntimeLink(seq) => MACHINES + seq * SLOTS + SLOT_RUNTIME_LINK,
            Node::SessionsDir(seq) => MACHINES + seq * SLOTS + SLOT_SESSIONS,
            Node::Session(seq, n) => SESSIONS | (seq << SEQ_SHIFT) | (n << SESSION_SHIFT),
            Node::SessionFile(seq, n, f) => {
                SESSIONS | (seq << SEQ_SHIFT) | (n << SESSION_SHIFT) | f.slot()
            }
        }
    }

    pub fn from_ino(ino: u64) -> Option<Node> {
        let indexed = |base: u64, len: usize| {
            (base..base + len as u64)
                .contains(&ino)
                .then(|| (ino - base) as usize)
        };
        if ino >= SESSIONS {
            let rest = ino - SESSIONS;
            let (seq, n, slot) = (
                rest >> SEQ_SHIFT,
                (rest >> SESSION_SHIFT) & ((1 << (SEQ_SHIFT - SESSION_SHIFT)) - 1),
                rest & ((1 << SESSION_SHIFT) - 1),
            );
            return Some(match slot {
                0 => Node::Session(seq, n),
                s => Node::SessionFile(seq, n, *SessionFile::ALL.get(s as usize - 1)?),
            });
        }
        Some(match ino {
            1 => Node::Root,
            2 => Node::Readme,
            3 => Node::MachinesDir,
            4 => Node::ByStatusDir,
            5 => Node::ByRuntimeDir,
            6 => Node::RuntimesDir,
            7 => Node::Events,
            _ if ino >= MACHINES => {
                let seq = (ino - MACHINES) / SLOTS;
                match (ino - MACHINES) % SLOTS {
                    0 => Node::Machine(seq),
                    SLOT_STATUS_LINK => Node::StatusLink(seq),
                    SLOT_RUNTIME_LINK => Node::RuntimeLink(seq),
                    SLOT_SESSIONS => Node::SessionsDir(seq),
                    slot => Node::File(seq, *FileKind::ALL.get(slot as usize - 1)?),
                }
            }
            _ => {
                if let Some(i) = indexed(STATUS_DIRS, Status::ALL.len()) {
                    Node::StatusDir(Status::ALL[i])
                } else if let Some(i) = indexed(RUNTIME_LINK_DIRS, RuntimeKind::ALL.len()) {
                    Node::RuntimeLinksDir(RuntimeKind::ALL[i])
                } else if let Some(i) = indexed(RUNTIME_DIRS, RuntimeKind::ALL.len()) {
                    Node::RuntimeDir(RuntimeKind::ALL[i])
                } else if let Some(i) = indexed(RUNTIME_STATUS, RuntimeKind::ALL.len()) {
                    Node::RuntimeStatus(RuntimeKind::ALL[i])
                } else {
                    return None;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_round_trips() {
        let mut nodes = vec![
            Node::Root,
            Node::Readme,
            Node::MachinesDir,
            Node::ByStatusDir,
            Node::ByRuntimeDir,
            Node::RuntimesDir,
            Node::Events,
        ];
        nodes.extend(Status::ALL.map(Node::StatusDir));
        for k in RuntimeKind::ALL {
            nodes.extend([
                Node::RuntimeLinksDir(k),
                Node::RuntimeDir(k),
                Node::RuntimeStatus(k),
            ]);
        }
        for seq in [1, 2, 999_999] {
            nodes.extend([
                Node::Machine(seq),
                Node::StatusLink(seq),
                Node::RuntimeLink(seq),
                Node::SessionsDir(seq),
            ]);
            nodes.extend(FileKind::ALL.map(|k| Node::File(seq, k)));
            for n in [1, 7, (1 << 20) - 1] {
                nodes.push(Node::Session(seq, n));
                nodes.extend(SessionFile::ALL.map(|f| Node::SessionFile(seq, n, f)));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for n in nodes {
            assert!(seen.insert(n.ino()), "duplicate ino for {n:?}");
            assert_eq!(Node::from_ino(n.ino()), Some(n));
        }
        assert_eq!(Node::from_ino(0), None);
        assert_eq!(Node::from_ino(8), None);
    }
}
