//! The one mapping from what goes wrong with a VMM ([`VmmError`] from the
//! process layer, [`HttpError`] from its API) to the crate's [`Error`], so
//! both runtimes fail the same way for the same reason:
//!
//! | what | errno |
//! |---|---|
//! | no VMM binary configured at all | ECONNREFUSED |
//! | the binary (or a file the spec names) does not exist | ENOENT |
//! | the binary cannot be executed | EACCES |
//! | a VMM already runs for the machine | EBUSY |
//! | the VMM exits at once, or dies during a call | EIO, with its exit and last log line |
//! | the API answers 4xx/5xx | EIO, with the VMM's own message |
//! | the API socket never answers, or a call hangs | ETIMEDOUT |
//! | anything else (I/O on the runtime dir, a broken connection) | EIO |

use std::error::Error as StdError;
use std::path::Path;
use std::time::Duration;

use super::binary::VmmBinary;
use super::supervisor::Ended;
use crate::error::Error;
use crate::runtime::http::HttpError;
use crate::runtime::vmm_process::VmmError;

/// An error of the process layer.
pub fn vmm(err: VmmError, binary: &VmmBinary) -> Error {
    let text = chain(&err);
    match err {
        VmmError::BinaryMissing { .. } => Error::MissingFile {
            field: binary.setting().to_owned(),
            reason: text,
        },
        VmmError::BinaryNotExecutable { .. } => {
            Error::AccessDenied(format!("{}: {text}", binary.setting()))
        }
        VmmError::AlreadyRunning { .. } => Error::Busy(text),
        VmmError::NotReady { .. } => Error::Timeout(text),
        _ => Error::Runtime(text),
    }
}

/// An error of the VMM's API.
pub fn http(err: HttpError) -> Error {
    let text = chain(&err);
    match err {
        HttpError::Timeout { .. } => Error::Timeout(text),
        _ => Error::Runtime(text),
    }
}

/// The VMM exited while it was being started or configured.
pub fn exited(binary: &VmmBinary, ended: &Ended, when: &str) -> Error {
    Error::Runtime(format!(
        "{} (pid {}) exited {when} ({}){}",
        binary.display(),
        ended.pid,
        ended.exit(),
        ended.said()
    ))
}

/// The API socket did not answer within `after`.
pub fn not_ready(socket: &Path, after: Duration, last: Option<&HttpError>) -> Error {
    let last = last
        .map(|e| format!(" (last attempt: {})", chain(e)))
        .unwrap_or_default();
    Error::Timeout(format!(
        "the VMM's API socket {} did not answer within {:.0}s{last}",
        socket.display(),
        after.as_secs_f64()
    ))
}

/// The machine has no VMM running to ask.
pub fn not_running(binary: &VmmBinary) -> Error {
    Error::Runtime(format!(
        "no {} process runs for this machine",
        binary.display()
    ))
}

/// An error and its sources on one line, each said once.
pub fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let s = cause.to_string();
        if !s.is_empty() && !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        source = cause.source();
    }
    text.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RuntimeKind;
    use hyper::{Method, StatusCode};
    use std::path::PathBuf;

    fn binary() -> VmmBinary {
        VmmBinary::resolve(
            RuntimeKind::Firecracker,
            None,
            Some(Path::new("/opt/fc")),
            "HYPERFLEET_FIRECRACKER_BIN",
        )
    }

    #[test]
    fn each_kind_of_failure_has_one_errno() {
        let io = |code| std::io::Error::from_raw_os_error(code);
        let path = PathBuf::from("/opt/fc");
        let cases: Vec<(Error, i32)> = vec![
            (
                vmm(
                    VmmError::BinaryMissing {
                        path: path.clone(),
                        source: io(libc::ENOENT),
                    },
                    &binary(),
                ),
                libc::ENOENT,
            ),
            (
                vmm(
                    VmmError::BinaryNotExecutable {
                        path: path.clone(),
                        source: io(libc::EACCES),
                    },
                    &binary(),
                ),
                libc::EACCES,
            ),
            (
                vmm(
                    VmmError::AlreadyRunning {
                        pid: 1,
                        pid_file: path.clone(),
                    },
                    &binary(),
                ),
                libc::EBUSY,
            ),
            (
                http(HttpError::Status {
                    method: Method::PUT,
                    path: "/drives/rootfs".into(),
                    status: StatusCode::BAD_REQUEST,
                    message: "Drive config error".into(),
                }),
                libc::EIO,
            ),
            (
                http(HttpError::Timeout {
                    what: "GET /".into(),
                    after: Duration::from_secs(1),
                }),
                libc::ETIMEDOUT,
            ),
            (
                not_ready(Path::new("/r/api.sock"), Duration::from_secs(10), None),
                libc::ETIMEDOUT,
            ),
        ];
        for (err, errno) in cases {
            assert_eq!(err.errno(), errno, "{}", err.report());
        }
    }

    #[test]
    fn messages_name_the_setting_and_keep_the_vmm_s_words() {
        let err = vmm(
            VmmError::BinaryMissing {
                path: "/opt/fc".into(),
                source: std::io::Error::from_raw_os_error(libc::ENOENT),
            },
            &binary(),
        );
        let text = err.report().to_string();
        assert!(text.starts_with("HYPERFLEET_FIRECRACKER_BIN: "), "{text}");
        assert!(text.contains("/opt/fc"), "{text}");
        let err = http(HttpError::Status {
            method: Method::PUT,
            path: "/actions".into(),
            status: StatusCode::BAD_REQUEST,
            message: "Invalid bzImage".into(),
        });
        assert_eq!(
            err.report().to_string(),
            "PUT /actions: 400 Bad Request: Invalid bzImage"
        );
    }
}
