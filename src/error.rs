//! One error type for the whole crate. Each variant maps to exactly one errno
//! (what the filesystem returns) and one HTTP status (what REST returns), so
//! every front end reports the same failure the same way.
//!
//! Errors keep their cause: [`Error::Context`] wraps an inner error with what
//! was being done ("start", "create container"), and the errno and status
//! are those of the innermost cause. [`Error::report`] renders the whole
//! chain on one line, which is what a machine's `error` file shows:
//! `start: create container: port 8080 is already allocated`.
//!
//! This module sits at the bottom of the crate: it names no other module,
//! so every layer can use it without an import cycle.

use std::fmt;
use std::sync::Arc;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("invalid machine name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("machine name is longer than {max} bytes")]
    NameTooLong { max: usize },
    #[error("no machine named {0:?}")]
    NotFound(String),
    #[error("no route {0}")]
    NoRoute(String),
    #[error("a machine named {0:?} already exists")]
    AlreadyExists(String),
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    #[error("config is incomplete: {0}")]
    IncompleteConfig(String),
    /// A path the spec names does not exist (or is not what it must be) on
    /// this host when the machine starts.
    #[error("{field}: {reason}")]
    MissingFile { field: String, reason: String },
    #[error("invalid command: {0}")]
    InvalidCommand(String),
    #[error("cannot {action} a machine that is {status}")]
    InvalidState {
        action: &'static str,
        status: &'static str,
    },
    #[error("machine is already {0}")]
    AlreadyInState(&'static str),
    #[error("{0}")]
    Busy(String),
    /// The operation was cancelled by another one (a `kill` during `start`).
    #[error("{operation} was cancelled by {by}")]
    Cancelled { operation: String, by: String },
    #[error("write too large: at most {limit} bytes are accepted")]
    TooLarge { limit: usize },
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("{runtime} does not support {operation}")]
    Unsupported { runtime: String, operation: String },
    #[error("image {image:?} is not available: {reason}")]
    ImageNotFound { image: String, reason: String },
    #[error("{runtime} is unavailable: {reason}")]
    RuntimeUnavailable { runtime: String, reason: String },
    /// Something the runtime needs answered nothing (a registry, a guest agent).
    #[error("{0}")]
    Unreachable(String),
    #[error("access denied: {0}")]
    AccessDenied(String),
    #[error("no space left: {0}")]
    NoSpace(String),
    #[error("{0}")]
    Runtime(String),
    #[error("state store: {0}")]
    Store(String),
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: Arc<std::io::Error>,
    },
    /// What was being done when `source` happened. Takes the errno and status
    /// of its source.
    #[error("{context}")]
    Context {
        context: String,
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    /// Wraps `self` with what was being done.
    pub fn context(self, context: impl Into<String>) -> Error {
        Error::Context {
            context: context.into(),
            source: Box::new(self),
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source: Arc::new(source),
        }
    }

    /// The innermost error of the chain, whose kind decides errno and status.
    pub fn root(&self) -> &Error {
        let mut e = self;
        while let Error::Context { source, .. } = e {
            e = source;
        }
        e
    }

    /// The whole chain on one line: `start: create container: port in use`.
    pub fn report(&self) -> Report<'_> {
        Report(self)
    }

    /// The errno a filesystem call fails with.
    pub fn errno(&self) -> i32 {
        match self.root() {
            Error::InvalidName { .. } => libc::EINVAL,
            Error::NameTooLong { .. } => libc::ENAMETOOLONG,
            Error::NotFound(_) | Error::NoRoute(_) => libc::ENOENT,
            Error::AlreadyExists(_) => libc::EEXIST,
            Error::InvalidConfig(_) => libc::EINVAL,
            Error::IncompleteConfig(_) => libc::EINVAL,
            Error::MissingFile { .. } => libc::ENOENT,
            Error::InvalidCommand(_) => libc::EINVAL,
            Error::InvalidState { .. } => libc::EINVAL,
            Error::AlreadyInState(_) => libc::EALREADY,
            Error::Busy(_) => libc::EBUSY,
            Error::Cancelled { .. } => libc::ECANCELED,
            Error::TooLarge { .. } => libc::EFBIG,
            Error::Timeout(_) => libc::ETIMEDOUT,
            Error::Unsupported { .. } => libc::EOPNOTSUPP,
            Error::ImageNotFound { .. } => libc::ENOENT,
            Error::RuntimeUnavailable { .. } => libc::ECONNREFUSED,
            Error::Unreachable(_) => libc::EHOSTUNREACH,
            Error::AccessDenied(_) => libc::EACCES,
            Error::NoSpace(_) => libc::ENOSPC,
            Error::Runtime(_) => libc::EIO,
            Error::Store(_) => libc::EIO,
            // The system's own word for it (ENOSPC, EACCES...) is kept.
            Error::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            Error::Context { .. } => libc::EIO,
        }
    }

    /// The HTTP status a REST call fails with.
    pub fn http_status(&self) -> u16 {
        match self.root() {
            Error::InvalidName { .. } | Error::NameTooLong { .. } => 400,
            Error::NotFound(_) | Error::NoRoute(_) => 404,
            Error::AlreadyExists(_) => 409,
            Error::InvalidConfig(_) | Error::InvalidCommand(_) => 400,
            Error::IncompleteConfig(_) | Error::MissingFile { .. } => 422,
            Error::InvalidState { .. }
            | Error::AlreadyInState(_)
            | Error::Busy(_)
            | Error::Cancelled { .. } => 409,
            Error::TooLarge { .. } => 413,
            Error::Timeout(_) => 504,
            Error::Unsupported { .. } => 501,
            Error::ImageNotFound { .. } => 424,
            Error::RuntimeUnavailable { .. } => 503,
            Error::Unreachable(_) => 504,
            Error::AccessDenied(_) => 502,
            Error::NoSpace(_) => 507,
            Error::Runtime(_) => 502,
            Error::Store(_) | Error::Io { .. } | Error::Context { .. } => 500,
        }
    }

    /// A stable machine-readable code for JSON bodies.
    pub fn code(&self) -> &'static str {
        match self.root() {
            Error::InvalidName { .. } => "invalid_name",
            Error::NameTooLong { .. } => "name_too_long",
            Error::NotFound(_) => "not_found",
            Error::NoRoute(_) => "no_route",
            Error::AlreadyExists(_) => "already_exists",
            Error::InvalidConfig(_) => "validation_error",
            Error::IncompleteConfig(_) => "incomplete_config",
            Error::MissingFile { .. } => "missing_file",
            Error::InvalidCommand(_) => "invalid_command",
            Error::InvalidState { .. } => "invalid_state",
            Error::AlreadyInState(_) => "already_in_state",
            Error::Busy(_) => "busy",
            Error::Cancelled { .. } => "cancelled",
            Error::TooLarge { .. } => "too_large",
            Error::Timeout(_) => "timeout",
            Error::Unsupported { .. } => "unsupported",
            Error::ImageNotFound { .. } => "image_not_found",
            Error::RuntimeUnavailable { .. } => "runtime_unavailable",
            Error::Unreachable(_) => "unreachable",
            Error::AccessDenied(_) => "access_denied",
            Error::NoSpace(_) => "no_space",
            Error::Runtime(_) => "runtime_error",
            Error::Store(_) => "store_error",
            Error::Io { .. } | Error::Context { .. } => "internal_error",
        }
    }
}

/// Renders an error and all its causes on one line, each cause once.
pub struct Report<'a>(&'a Error);

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = self.0.to_string();
        let mut source = std::error::Error::source(self.0);
        while let Some(cause) = source {
            let s = cause.to_string();
            // A wrapper that already quotes its cause adds nothing by repeating it.
            if !s.is_empty() && !text.ends_with(&s) {
                text.push_str(": ");
                text.push_str(&s);
            }
            source = cause.source();
        }
        // One line, always: the `error` file and log lines are line-oriented.
        f.write_str(&text.replace(['\n', '\r'], " "))
    }
}

/// Adds context to a fallible result, as `anyhow::Context` does.
pub trait ResultExt<T> {
    fn context(self, context: impl Into<String>) -> Result<T>;
    fn with_context<C: Into<String>>(self, f: impl FnOnce() -> C) -> Result<T>;
}

impl<T> ResultExt<T> for Result<T> {
    fn context(self, context: impl Into<String>) -> Result<T> {
        self.map_err(|e| e.context(context))
    }
    fn with_context<C: Into<String>>(self, f: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|e| e.context(f()))
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Store(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_keeps_the_root_cause_kind_and_reports_one_line() {
        let e = Error::Runtime("port 8080 is already allocated".into())
            .context("create container")
            .context("start");
        assert_eq!(e.errno(), libc::EIO);
        assert_eq!(e.to_string(), "start");
        assert_eq!(
            e.report().to_string(),
            "start: create container: port 8080 is already allocated"
        );
        let e = Error::Busy("x\ny".into()).context("stop");
        assert_eq!(e.errno(), libc::EBUSY);
        assert_eq!(e.http_status(), 409);
        assert_eq!(e.report().to_string(), "stop: x y");
        let io = Error::io(
            "reading /x",
            std::io::Error::from_raw_os_error(libc::ENOENT),
        );
        assert!(io.report().to_string().starts_with("reading /x: "));
    }
}
